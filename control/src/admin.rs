//! The admin call router: one place that answers `/admin/*`, whether the
//! call came in on the admin port or on the data port from loopback. The
//! runbook's cache commands live here: clear, verify, snapshot, restore,
//! purge, and data verify against the origin.

use crate::revalidate;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use ultragate_dataplane::admin::{AdminRequest, AdminResponse, AdminService};
use ultragate_dataplane::cache::{snapshot, Cache, Pattern};
use ultragate_dataplane::status::DataplaneStatus;

/// What the admin router works on.
pub struct AdminState {
    /// The data plane's readiness.
    pub status: Arc<DataplaneStatus>,
    /// The running configuration as TOML, for `GET /admin/config`.
    pub config_toml: String,
    /// The shared cache, when enabled.
    pub cache: Option<Arc<Cache>>,
    /// Where snapshots go.
    pub snapshot_dir: PathBuf,
    /// The primary upstream servers, for data verify.
    pub origins: Vec<SocketAddr>,
}

/// Answers admin calls from the state the control plane holds.
#[derive(Clone)]
pub struct Admin {
    state: Arc<AdminState>,
}

impl Admin {
    /// A router over `state`.
    pub fn new(state: AdminState) -> Self {
        Self {
            state: Arc::new(state),
        }
    }

    async fn route(self, req: AdminRequest) -> AdminResponse {
        let path = req.target.split('?').next().unwrap_or("").to_owned();
        let st = &self.state;
        match (req.method, path.as_str()) {
            ("GET", "/admin/config") => AdminResponse {
                status: 200,
                content_type: "application/toml",
                body: Bytes::from(st.config_toml.clone()),
            },
            ("GET", "/admin/ready") => {
                json_response(200, &json!({ "ready": st.status.is_ready() }))
            }
            (method, p) if p.starts_with("/admin/cache") || p == "/admin/data/verify" => {
                let Some(cache) = st.cache.clone() else {
                    return json_response(
                        409,
                        &json!({ "error": "the cache is disabled ([cache] enabled = false)" }),
                    );
                };
                self.cache_call(method, p, cache, &req.body).await
            }
            _ => json_response(
                404,
                &json!({
                    "error": format!("no admin endpoint {} {path}", req.method),
                    "endpoints": ENDPOINTS,
                }),
            ),
        }
    }

    async fn cache_call(
        &self,
        method: &str,
        path: &str,
        cache: Arc<Cache>,
        body: &[u8],
    ) -> AdminResponse {
        let started = Instant::now();
        let ms = |v: &mut serde_json::Value| {
            v["duration_ms"] = json!(started.elapsed().as_secs_f64() * 1000.0);
        };
        let dir = self.state.snapshot_dir.clone();
        let (status, mut v) = match (method, path) {
            ("GET", "/admin/cache") => {
                let cfg = cache.config();
                (
                    200,
                    json!({ "entries": cache.len(), "bytes": cache.bytes(), "max_bytes": cfg.max_bytes, "max_object_bytes": cfg.max_object_bytes }),
                )
            }
            ("POST", "/admin/cache/clear") => {
                let bytes = cache.bytes();
                let cleared = blocking(move || {
                    let n = cache.clear();
                    // SAFETY: mi_collect only asks mimalloc, the global
                    // allocator, to return freed memory to the OS.
                    unsafe { libmimalloc_sys::mi_collect(true) };
                    n
                })
                .await;
                (
                    200,
                    json!({ "action": "clear", "cleared": cleared, "bytes_freed": bytes }),
                )
            }
            ("POST", "/admin/cache/verify") => {
                let r = blocking(move || cache.verify()).await;
                (
                    200,
                    json!({ "action": "verify", "checked": r.checked, "corrupt": r.corrupt, "evicted": r.corrupt }),
                )
            }
            ("POST", "/admin/cache/snapshot") => {
                match blocking(move || snapshot::write(&cache, &dir)).await {
                    Ok(w) => (
                        200,
                        json!({ "action": "snapshot", "file": w.file, "entries": w.entries, "bytes": w.bytes }),
                    ),
                    Err(e) => (500, json!({ "action": "snapshot", "error": e.to_string() })),
                }
            }
            ("POST", "/admin/cache/restore") => {
                match blocking(move || snapshot::restore(&cache, &dir)).await {
                    Ok(r) => (
                        200,
                        json!({ "action": "restore", "file": r.file, "restored": r.restored, "skipped": r.skipped, "rejected_files": r.rejected_files }),
                    ),
                    Err(e @ snapshot::SnapshotError::NoSnapshot(_)) => {
                        (404, json!({ "action": "restore", "error": e.to_string() }))
                    }
                    Err(e) => (500, json!({ "action": "restore", "error": e.to_string() })),
                }
            }
            ("POST", "/admin/cache/purge") => match serde_json::from_slice::<Purge>(body) {
                Ok(p) => match p.pattern() {
                    Some((what, pattern)) => {
                        cache.purge(p.host.as_deref().map(str::as_bytes), pattern);
                        (
                            202,
                            json!({ "action": "purge", "purged": what, "host": p.host, "mode": "lazy: entries go on their next lookup or the background sweep" }),
                        )
                    }
                    None => (
                        400,
                        json!({ "error": "give exactly one of url, prefix, pattern" }),
                    ),
                },
                Err(e) => (
                    400,
                    json!({ "error": format!("purge body: {e}"), "example": {"prefix": "/images/", "host": "example.com"} }),
                ),
            },
            ("POST", "/admin/data/verify") => {
                let r = revalidate::data_verify(&cache, &self.state.origins).await;
                (
                    200,
                    json!({ "action": "data_verify", "checked": r.checked, "changed": r.changed, "evicted": r.changed, "skipped": r.skipped, "errors": r.errors }),
                )
            }
            _ => (
                404,
                json!({ "error": format!("no admin endpoint {method} {path}"), "endpoints": ENDPOINTS }),
            ),
        };
        ms(&mut v);
        json_response(status, &v)
    }
}

const ENDPOINTS: &[&str] = &[
    "GET /admin/config",
    "GET /admin/ready",
    "GET /admin/cache",
    "POST /admin/cache/clear",
    "POST /admin/cache/verify",
    "POST /admin/cache/snapshot",
    "POST /admin/cache/restore",
    "POST /admin/cache/purge",
    "POST /admin/data/verify",
];

/// The body of `POST /admin/cache/purge`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Purge {
    url: Option<String>,
    prefix: Option<String>,
    pattern: Option<String>,
    host: Option<String>,
}

impl Purge {
    fn pattern(&self) -> Option<(String, Pattern)> {
        let bytes = |s: &String| s.as_bytes().to_vec().into_boxed_slice();
        match (&self.url, &self.prefix, &self.pattern) {
            (Some(u), None, None) => Some((format!("url {u}"), Pattern::Exact(bytes(u)))),
            (None, Some(p), None) => Some((format!("prefix {p}"), Pattern::Prefix(bytes(p)))),
            (None, None, Some(g)) => Some((format!("pattern {g}"), Pattern::Glob(bytes(g)))),
            _ => None,
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// A JSON admin answer.
pub fn json_response(status: u16, value: &serde_json::Value) -> AdminResponse {
    AdminResponse {
        status,
        content_type: "application/json",
        body: Bytes::from(value.to_string()),
    }
}

impl AdminService for Admin {
    fn call(&self, req: AdminRequest) -> Pin<Box<dyn Future<Output = AdminResponse> + Send>> {
        Box::pin(self.clone().route(req))
    }
}
