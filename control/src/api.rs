//! The admin and health API on its own port (default `127.0.0.1:8081`),
//! served with hyper: probes, and `/admin/*` through the shared router.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use ultragate_dataplane::admin::{AdminRequest, AdminResponse, AdminService};
use ultragate_dataplane::status::DataplaneStatus;

/// Largest admin request body accepted, in bytes.
const MAX_BODY: usize = 64 * 1024;
/// Most admin connections served at once; more are closed on accept, so
/// anyone who reaches the port cannot exhaust the control plane.
pub const MAX_CONNECTIONS: usize = 256;
/// Longest time a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time a client may take to send a request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the admin server could not start.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The admin address could not be bound.
    #[error("cannot listen on {addr} for the admin API: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A bound admin server, ready to [`AdminServer::run`].
pub struct AdminServer {
    listener: std::net::TcpListener,
    status: Arc<DataplaneStatus>,
    admin: Arc<dyn AdminService>,
}

impl AdminServer {
    /// Binds the admin port now, so that a bad address fails start-up.
    pub fn bind(
        addr: SocketAddr,
        status: Arc<DataplaneStatus>,
        admin: Arc<dyn AdminService>,
    ) -> Result<Self, ApiError> {
        let listener =
            std::net::TcpListener::bind(addr).map_err(|source| ApiError::Bind { addr, source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ApiError::Bind { addr, source })?;
        Ok(Self {
            listener,
            status,
            admin,
        })
    }

    /// Serves until the task is dropped; must run inside a tokio runtime.
    pub async fn run(self) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "admin connection limit reached: closed");
                continue;
            };
            let status = self.status.clone();
            let admin = self.admin.clone();
            let svc = service_fn(move |req| handle(req, peer, status.clone(), admin.clone()));
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(e) = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    tracing::debug!(error = %e, %peer, "admin connection ended with an error");
                }
            });
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("content-type", "text/plain".parse().expect("static header"));
    resp
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    status: Arc<DataplaneStatus>,
    admin: Arc<dyn AdminService>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_owned();
    let probe = matches!(*req.method(), Method::GET | Method::HEAD);
    Ok(match path.as_str() {
        "/health/live" if probe => text(StatusCode::OK, "live\n"),
        "/health/ready" if probe && status.is_ready() => text(StatusCode::OK, "ready\n"),
        "/health/ready" if probe => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        p if p == "/admin" || p.starts_with("/admin/") || p == "/health" || p == "/metrics" => {
            let method = match *req.method() {
                Method::GET => "GET",
                Method::HEAD => "HEAD",
                Method::POST => "POST",
                Method::PUT => "PUT",
                Method::DELETE => "DELETE",
                Method::PATCH => "PATCH",
                _ => return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")),
            };
            let target = req
                .uri()
                .path_and_query()
                .map_or(path.clone(), |pq| pq.to_string());
            let field = |name: &str| {
                req.headers()
                    .get(name)
                    .map(|v| Bytes::copy_from_slice(v.as_bytes()))
            };
            let authorization = field("authorization");
            let host = field("host").or_else(|| {
                req.uri()
                    .authority()
                    .map(|a| Bytes::copy_from_slice(a.as_str().as_bytes()))
            });
            let from_browser = ultragate_dataplane::admin::from_browser(
                field("origin").as_deref(),
                field("sec-fetch-site").as_deref(),
            );
            let simple_body = ultragate_dataplane::admin::simple_body(
                field("content-type").as_deref(),
                field("x-ultragate-admin").as_deref(),
            );
            let collect = Limited::new(req.into_body(), MAX_BODY).collect();
            let body = match tokio::time::timeout(BODY_READ_TIMEOUT, collect).await {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(_)) => {
                    return Ok(text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "admin request body too large\n",
                    ))
                }
                Err(_) => {
                    return Ok(text(
                        StatusCode::REQUEST_TIMEOUT,
                        "admin request body not received in time\n",
                    ))
                }
            };
            let resp = admin
                .call(AdminRequest {
                    method,
                    target,
                    peer: peer.ip(),
                    authorization,
                    host,
                    from_browser,
                    simple_body,
                    body,
                })
                .await;
            encode(resp)
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    })
}

fn encode(resp: AdminResponse) -> Response<Full<Bytes>> {
    let mut out = Response::new(Full::new(resp.body));
    *out.status_mut() =
        StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = resp.content_type.parse() {
        out.headers_mut().insert("content-type", v);
    }
    if let Some(v) = resp.allow.and_then(|a| a.parse().ok()) {
        out.headers_mut().insert("allow", v);
    }
    out
}
