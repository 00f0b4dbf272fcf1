//! The admin call router: one place that answers `/admin/*`, whether the
//! call came in on the admin port or on the data port from loopback. The
//! runbook's cache commands live here: clear, verify, snapshot, restore,
//! purge, and data verify against the origin.

use crate::audit::Audit;
use crate::executor::events::Event;
use crate::policy::Mode;
use crate::revalidate;
use crate::supervisor::Supervisor;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use ultragate_dataplane::admin::{AdminRequest, AdminResponse, AdminService};
use ultragate_dataplane::cache::{snapshot, Cache, Pattern};
use ultragate_dataplane::status::DataplaneStatus;
use ultragate_dataplane::status::Route;

/// Re-reads and applies the configuration file; the answer says what
/// changed or why nothing did.
pub type Reload = Box<dyn Fn() -> Result<ReloadReport, String> + Send + Sync>;

/// What a config reload did: the keys whose change took effect, and the
/// changed keys that take effect only after a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReloadReport {
    /// Changed keys applied now (`upstream.primary.servers`, ...).
    pub applied: Vec<String>,
    /// Changed keys that need a restart (listeners, cores, DPDK EAL).
    pub needs_restart: Vec<String>,
}

/// The admin settings a config reload replaces.
pub struct AdminSettings {
    /// `[admin] token`: a bearer token that allows `/admin/*` calls from
    /// non-loopback peers.
    pub token: Mutex<Option<String>>,
    /// The running configuration as TOML (secrets redacted), for
    /// `GET /admin/config`.
    pub config_toml: Mutex<String>,
    /// The primary upstream servers, for data verify.
    pub origins: Mutex<Vec<SocketAddr>>,
    /// `[admin] hosts`: names `/admin/*` answers to besides IP literals
    /// and `localhost`, lowercase.
    pub hosts: Mutex<Vec<String>>,
    /// `[admin] loopback_trust`: loopback peers change things without the
    /// token.
    pub loopback_trust: Mutex<bool>,
}

impl AdminSettings {
    /// Settings from the config read at start.
    pub fn new(token: Option<String>, config_toml: String, origins: Vec<SocketAddr>) -> Self {
        Self {
            token: Mutex::new(token),
            config_toml: Mutex::new(config_toml),
            origins: Mutex::new(origins),
            hosts: Mutex::new(Vec::new()),
            loopback_trust: Mutex::new(false),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Moves the data plane between DPDK and kernel networking; the binary
/// implements it when it serves on DPDK.
pub trait DataplaneSwitch: Send + Sync {
    /// Serves on `to` (`dpdk`, `kernel` or `auto`); the backend serving
    /// after the switch, or why it cannot switch now.
    fn switch(&self, to: &str) -> Result<&'static str, SwitchError>;
}

/// Why the data plane did not move (an operator's call, or the runbook's
/// DPDK port row).
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// The DPDK port's link is down.
    #[error("the DPDK port's link is down; staying on kernel networking")]
    LinkDown,
    /// DPDK never started in this process.
    #[error("DPDK did not start (see /admin/events); serving on kernel networking")]
    NotStarted,
    /// Not `dpdk`, `kernel` or `auto`.
    #[error("unknown data plane {0:?}")]
    Unknown(String),
    /// The kernel listeners could not be started.
    #[error("kernel networking did not start: {0}")]
    Kernel(String),
    /// The process is stopping.
    #[error("shutting down")]
    ShuttingDown,
}

/// What the admin router works on.
pub struct AdminState {
    /// The control loop: health, metrics, events, route.
    pub supervisor: Arc<Supervisor>,
    /// Where mutating calls and refusals are recorded.
    pub audit: Arc<Audit>,
    /// Token, running config and origins, replaced by a reload.
    pub settings: Arc<AdminSettings>,
    /// Config reload (`POST /admin/config/reload`, SIGHUP).
    pub reload: Reload,
    /// The data plane's readiness.
    pub status: Arc<DataplaneStatus>,
    /// The shared cache, when enabled.
    pub cache: Option<Arc<Cache>>,
    /// Where snapshots go.
    pub snapshot_dir: PathBuf,
    /// Enables `POST /admin/cache/corrupt` (tests only).
    pub test_hooks: bool,
    /// The DPDK/kernel switch, when a DPDK data plane exists.
    pub dataplane: Option<Arc<dyn DataplaneSwitch>>,
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

    /// `/health` and `/metrics` are open to probes and scrapers; every
    /// `/admin/*` call, reads too, needs a loopback peer, or the bearer
    /// token (compared in constant time) outside isolation; with a token
    /// configured, a mutating call needs it from loopback too unless
    /// `[admin] loopback_trust`. Refusals are audited.
    fn authorized(&self, req: &AdminRequest, path: &str) -> bool {
        let read = matches!(req.method, "GET" | "HEAD");
        let open = read && matches!(path, "/health" | "/metrics");
        let st = &self.state;
        let token = lock(&st.settings.token);
        let token_ok = match (&*token, &req.authorization) {
            (Some(token), Some(given)) => given
                .strip_prefix(b"Bearer ")
                .is_some_and(|g| constant_time_eq(g, token.as_bytes())),
            _ => false,
        };
        // With a token, loopback peers read freely but change things
        // with it too (a sidecar or a browser on the node is loopback),
        // unless `[admin] loopback_trust` says loopback is the operator.
        // Isolation leaves loopback alone.
        let loopback_trusted = read || token.is_none() || *lock(&st.settings.loopback_trust);
        open || (req.peer.is_loopback() && (loopback_trusted || token_ok))
            || (token_ok && !st.supervisor.isolated())
    }

    async fn route(self, req: AdminRequest) -> AdminResponse {
        let path = req.target.split('?').next().unwrap_or("").to_owned();
        let st = &self.state;
        if let Some(refused) = self.on_purpose(&req, &path) {
            st.audit
                .record(req.peer, req.method, &req.target, refused.0);
            return json_response(refused.1, &json!({ "error": refused.0 }));
        }
        if !self.authorized(&req, &path) {
            st.audit
                .record(req.peer, req.method, &req.target, "refused: no valid token");
            return json_response(
                403,
                &json!({ "error": "admin calls need the admin token (or a loopback peer: reads, and changes without a token configured or with [admin] loopback_trust)" }),
            );
        }
        let resp = self.dispatch(&req, &path).await;
        if !matches!(req.method, "GET" | "HEAD") {
            st.audit.record(
                req.peer,
                req.method,
                &req.target,
                &format!("status {}", resp.status),
            );
        }
        resp
    }

    /// Refuses an `/admin/*` call nobody made on purpose: one whose
    /// `Host` is a name it was not given (a page that rebinds its own
    /// name to this address), or a mutating one sent by a web page (a
    /// cross-site form or fetch) or shaped as a page's "simple" request
    /// could be (a form's `Content-Type`). The reason and status when
    /// refused.
    fn on_purpose(&self, req: &AdminRequest, path: &str) -> Option<(&'static str, u16)> {
        if !path.starts_with("/admin") {
            return None;
        }
        let hosts = lock(&self.state.settings.hosts);
        if !req.host.as_deref().is_none_or(|h| admin_host(h, &hosts)) {
            return Some((
                "refused: admin calls take Host localhost, an IP address or a name in [admin] hosts",
                421,
            ));
        }
        if req.from_browser && !matches!(req.method, "GET" | "HEAD") {
            return Some((
                "refused: a mutating admin call from a web page (Origin or Sec-Fetch-Site)",
                403,
            ));
        }
        if req.simple_body && !matches!(req.method, "GET" | "HEAD") {
            return Some((
                "refused: a mutating admin call takes Content-Type application/json (curl --json), no body, or X-Ultragate-Admin",
                415,
            ));
        }
        None
    }

    async fn dispatch(&self, req: &AdminRequest, path: &str) -> AdminResponse {
        let st = &self.state;
        let sup = &st.supervisor;
        let body = std::str::from_utf8(&req.body)
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        let word = serde_json::from_slice::<serde_json::Value>(&req.body)
            .ok()
            .and_then(|v| {
                v.as_object().and_then(|o| {
                    o.values()
                        .next()
                        .and_then(|v| v.as_str().map(str::to_owned))
                })
            })
            .unwrap_or_else(|| body.to_owned());
        match (req.method, path) {
            ("GET", "/health") => json_response(200, &sup.health_json()),
            ("GET", "/metrics") => AdminResponse {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: Bytes::from(sup.metrics.render()),
                allow: None,
            },
            ("GET", "/admin/events") => {
                json_response(200, &json!({ "events": sup.timeline.list() }))
            }
            ("GET", "/admin/route") => {
                let (route, mode) = sup.route();
                let pools: Vec<_> = sup
                    .pool_routes()
                    .into_iter()
                    .map(|(pool, r, m)| json!({ "pool": &*pool, "route": r.as_str(), "mode": format!("{m:?}") }))
                    .collect();
                json_response(
                    200,
                    &json!({ "route": route.as_str(), "mode": format!("{mode:?}"), "pools": pools }),
                )
            }
            ("POST", "/admin/route") => route_call(sup, &req.body, &word),
            ("POST", "/admin/dataplane") => match (word.as_str(), &st.dataplane) {
                ("kernel" | "dpdk" | "auto", Some(switch)) => match switch.switch(&word) {
                    Ok(serving) => {
                        sup.record(Event::AdminCall {
                            value: &word,
                            call: &format!("dataplane {word}"),
                            result: &format!("serving on {serving}"),
                        });
                        json_response(200, &json!({ "dataplane": serving, "requested": word }))
                    }
                    Err(why) => json_response(
                        409,
                        &json!({ "error": why.to_string(), "dataplane": sup.status.backend().as_str() }),
                    ),
                },
                ("kernel" | "auto", None) => json_response(
                    200,
                    &json!({ "dataplane": sup.status.backend().as_str(), "requested": word }),
                ),
                ("dpdk", None) => json_response(
                    409,
                    &json!({ "error": "no DPDK data plane: api_gateway.enable_dpdk is false or this build lacks the dpdk feature; serving on kernel networking", "dataplane": sup.status.backend().as_str() }),
                ),
                (other, _) => json_response(
                    400,
                    &json!({ "error": format!("dataplane {other:?}: give kernel, dpdk or auto") }),
                ),
            },
            ("POST", "/admin/tls/reload") => match sup.tls() {
                Some(tls) => match tls.reload(sup, None, "POST /admin/tls/reload") {
                    Ok(certs) => {
                        let subjects: Vec<&str> =
                            certs.iter().map(|c| c.subject.as_str()).collect();
                        json_response(200, &json!({ "reloaded": true, "certificates": subjects }))
                    }
                    Err(e) => json_response(422, &json!({ "reloaded": false, "error": e })),
                },
                None => json_response(
                    409,
                    &json!({ "error": "no TLS listener: [tls] listen is not set" }),
                ),
            },
            ("POST", "/admin/config/reload") => match (st.reload)() {
                Ok(report) => json_response(
                    200,
                    &json!({ "reloaded": true, "applied": report.applied, "needs_restart": report.needs_restart }),
                ),
                Err(e) => json_response(422, &json!({ "reloaded": false, "error": e })),
            },
            ("POST", "/admin/drain") if drain_undo(&req.body) => {
                // An operator who drained the wrong pod.
                if !sup.status.undo_drain() {
                    return json_response(
                        409,
                        &json!({ "error": "the process is stopping (SIGTERM): its drain cannot be undone", "ready": false }),
                    );
                }
                sup.record(Event::AdminCall {
                    value: "drain undo",
                    call: "readiness green again",
                    result: "serving",
                });
                json_response(
                    200,
                    &json!({ "draining": false, "ready": sup.status.is_ready() }),
                )
            }
            ("POST", "/admin/drain") => {
                // The pod's preStop hook: readiness turns red while the
                // listeners still serve, so the pod leaves the Service's
                // endpoints before SIGTERM closes them.
                sup.status.set_draining();
                sup.record(Event::AdminCall {
                    value: "preStop",
                    call: "readiness red, still serving until SIGTERM",
                    result: "draining",
                });
                json_response(
                    200,
                    &json!({ "draining": true, "ready": sup.status.is_ready() }),
                )
            }
            #[cfg(feature = "test-hooks")]
            ("POST", "/admin/test/stall-core") if st.test_hooks => {
                let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
                let core = v["core"].as_u64().unwrap_or(0) as usize;
                let ms = v["ms"].as_u64().unwrap_or(1000);
                sup.status.stall_core_for_test(core, ms);
                json_response(200, &json!({ "stalling": core, "ms": ms }))
            }
            ("POST", "/admin/security/isolate") => {
                sup.isolate(true);
                json_response(200, &json!({ "isolated": true }))
            }
            ("POST", "/admin/security/normal") => {
                sup.isolate(false);
                json_response(200, &json!({ "isolated": false }))
            }
            _ => {
                self.clone()
                    .cache_and_config(req.clone(), path.to_owned())
                    .await
            }
        }
    }

    async fn cache_and_config(self, req: AdminRequest, path: String) -> AdminResponse {
        let st = &self.state;
        match (req.method, path.as_str()) {
            ("GET", "/admin/config") => AdminResponse {
                status: 200,
                content_type: "application/toml",
                body: Bytes::from(lock(&st.settings.config_toml).clone()),
                allow: None,
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
            _ => unknown_endpoint(req.method, &path),
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
                // The same runbook as the background verify: bypass, evict,
                // restore, serve again after a clean verify.
                let sup = self.state.supervisor.clone();
                let r = blocking(move || sup.verify_and_recover(&cache)).await;
                (
                    200,
                    json!({ "action": "verify", "checked": r.checked, "corrupt": r.corrupt, "evicted": r.corrupt, "restored": r.restored, "bypassed": r.bypassed }),
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
                Ok(p) if p.longest() > MAX_PURGE_PATTERN => (
                    400,
                    json!({ "error": format!("a purge's url, prefix, pattern or host is at most {MAX_PURGE_PATTERN} bytes") }),
                ),
                Ok(p) => match p.pattern() {
                    Some((what, pattern)) => {
                        if cache.purge(p.host.as_deref().map(str::as_bytes), pattern) {
                            (
                                202,
                                json!({ "action": "purge", "purged": what, "host": p.host, "mode": "lazy: entries go on their next lookup or the background sweep" }),
                            )
                        } else {
                            (
                                429,
                                json!({ "error": format!("{} purges wait for the background sweep (every second); try again", ultragate_dataplane::cache::MAX_PENDING_BANS), "retry_after_s": 1 }),
                            )
                        }
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
            #[cfg(feature = "test-hooks")]
            ("POST", "/admin/cache/corrupt") if self.state.test_hooks => {
                let target = String::from_utf8_lossy(body).trim().to_owned();
                let victim = cache
                    .entries()
                    .into_iter()
                    .find(|e| e.key.ends_with(target.as_bytes()));
                match victim {
                    Some(e) if cache.corrupt_for_test(&e.key) => (
                        200,
                        json!({ "action": "corrupt", "key": String::from_utf8_lossy(&e.key) }),
                    ),
                    _ => (
                        404,
                        json!({ "error": format!("no cached entry ends with {target:?}") }),
                    ),
                }
            }
            ("POST", "/admin/data/verify") => {
                let origins = lock(&self.state.settings.origins).clone();
                let r = revalidate::data_verify(&cache, &origins).await;
                (
                    200,
                    json!({ "action": "data_verify", "checked": r.checked, "changed": r.changed, "evicted": r.changed, "skipped": r.skipped, "errors": r.errors }),
                )
            }
            _ => return unknown_endpoint(method, path),
        };
        ms(&mut v);
        // An operator's cache operation is a decision too: in the timeline
        // (and so to the webhook).
        if method == "POST" && status != 404 {
            if let Some(op) = path.strip_prefix("/admin/") {
                let result = v["error"].as_str().map_or_else(
                    || format!("status {status}"),
                    |e| format!("status {status}: {e}"),
                );
                self.state.supervisor.record(Event::AdminCall {
                    value: op,
                    call: &op.replace('/', " "),
                    result: &result,
                });
            }
        }
        json_response(status, &v)
    }
}

/// Every admin endpoint and the methods it takes.
const ENDPOINTS: &[(&str, &str)] = &[
    ("/health", "GET"),
    ("/metrics", "GET"),
    ("/admin/events", "GET"),
    ("/admin/route", "GET, POST"),
    ("/admin/dataplane", "POST"),
    ("/admin/config/reload", "POST"),
    ("/admin/tls/reload", "POST"),
    ("/admin/drain", "POST"),
    ("/admin/security/isolate", "POST"),
    ("/admin/security/normal", "POST"),
    ("/admin/config", "GET"),
    ("/admin/ready", "GET"),
    ("/admin/cache", "GET"),
    ("/admin/cache/clear", "POST"),
    ("/admin/cache/verify", "POST"),
    ("/admin/cache/snapshot", "POST"),
    ("/admin/cache/restore", "POST"),
    ("/admin/cache/purge", "POST"),
    ("/admin/data/verify", "POST"),
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

/// Longest url, prefix, pattern or host a purge takes: every lookup on a
/// data core checks pending purges, so each costs a bounded time.
const MAX_PURGE_PATTERN: usize = 1024;

impl Purge {
    /// The length of its longest field.
    fn longest(&self) -> usize {
        [&self.url, &self.prefix, &self.pattern, &self.host]
            .iter()
            .filter_map(|f| f.as_ref().map(String::len))
            .max()
            .unwrap_or(0)
    }

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

/// No endpoint `method path`: 405 with `Allow` when the path takes other
/// methods, else 404; both list the endpoints.
fn unknown_endpoint(method: &str, path: &str) -> AdminResponse {
    let allow = ENDPOINTS
        .iter()
        .find_map(|(p, methods)| (*p == path).then_some(*methods));
    let status = if allow.is_some() { 405 } else { 404 };
    let endpoints: Vec<String> = ENDPOINTS
        .iter()
        .flat_map(|(p, methods)| methods.split(", ").map(move |m| format!("{m} {p}")))
        .collect();
    AdminResponse {
        allow,
        ..json_response(
            status,
            &json!({ "error": format!("no admin endpoint {method} {path}"), "endpoints": endpoints }),
        )
    }
}

/// Whether `host` (a `Host` value, port included) names this gateway on
/// purpose: an IP literal, `localhost`, or one of `names`.
fn admin_host(host: &[u8], names: &[String]) -> bool {
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let host = host.trim().to_ascii_lowercase();
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split_once(']').is_some_and(|(ip, port)| {
            ip.parse::<std::net::Ipv6Addr>().is_ok()
                && (port.is_empty()
                    || port
                        .strip_prefix(':')
                        .is_some_and(|p| p.parse::<u16>().is_ok()))
        });
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() => name,
        Some(_) => return false,
        None => host.as_str(),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || names.iter().any(|n| n == name)
}

/// `POST /admin/drain` with `{"undo": true}`.
fn drain_undo(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v["undo"] == serde_json::Value::Bool(true))
}

/// A JSON admin answer.
pub fn json_response(status: u16, value: &serde_json::Value) -> AdminResponse {
    AdminResponse {
        status,
        content_type: "application/json",
        body: Bytes::from(value.to_string()),
        allow: None,
    }
}

impl AdminService for Admin {
    fn call(&self, req: AdminRequest) -> Pin<Box<dyn Future<Output = AdminResponse> + Send>> {
        Box::pin(self.clone().route(req))
    }
}

/// Compares a presented secret with the expected one in time that depends
/// only on their lengths, not on where they first differ.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, &e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(!e);
    }
    diff == 0
}

/// `POST /admin/route`: `{"route": "NAME", "to": "primary" | "fallback" |
/// "auto"}` moves the pool of route NAME (the default route when no
/// `route` is given); the bare body `fallback` (or `{"mode": ...}`) moves
/// the default route, as before.
fn route_call(sup: &Supervisor, body: &[u8], word: &str) -> AdminResponse {
    let object = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .filter(|v| v.get("to").is_some());
    let (route, to) = match &object {
        Some(v) => (
            v.get("route").and_then(|r| r.as_str()),
            v.get("to").and_then(|t| t.as_str()).unwrap_or(""),
        ),
        None => (None, word),
    };
    let mode = match to {
        "primary" => Mode::Forced(Route::Primary),
        "fallback" => Mode::Forced(Route::Fallback),
        "auto" => Mode::Auto,
        other => {
            return json_response(
                400,
                &json!({ "error": format!("route {other:?}: give primary, fallback or auto") }),
            )
        }
    };
    let pools = sup.live.load();
    let pool = match route {
        None => Some(0),
        Some(name) => pools
            .engine
            .routes
            .iter()
            .find(|r| &*r.name == name)
            .map(|r| r.pool),
    };
    let Some(pool) = pool else {
        return json_response(
            404,
            &json!({ "error": format!("no route named {:?}", route.unwrap_or_default()) }),
        );
    };
    let name = route.unwrap_or("default");
    let moved = match pool {
        0 => sup.set_route_mode(mode),
        i => pools
            .pool(i)
            .and_then(|p| sup.set_pool_route_mode(&p.name, mode)),
    };
    let Some(now) = moved else {
        return json_response(
            409,
            &json!({ "error": format!("route {name:?}: its pool has no fallback") }),
        );
    };
    let action = match route {
        None => format!("route {to}"),
        Some(name) => format!("route {name} {to}"),
    };
    sup.record(Event::AdminCall {
        value: to,
        call: &action,
        result: &format!("route {}", now.as_str()),
    });
    json_response(
        200,
        &json!({ "route": now.as_str(), "mode": to, "name": name }),
    )
}

#[cfg(test)]
mod tests {
    use super::admin_host;

    #[test]
    fn admin_hosts_are_ip_literals_localhost_or_named() {
        let names = ["gw.internal".to_owned()];
        for (host, ok) in [
            ("127.0.0.1:8081", true),
            ("10.0.0.7", true),
            ("[::1]:8081", true),
            ("[::1]", true),
            ("localhost:8081", true),
            ("LOCALHOST.", true),
            ("gw.internal:8081", true),
            ("evil.example", false),
            ("evil.example:8081", false),
            ("127.0.0.1.evil.example", false),
            ("localhost:http", false),
            ("[::1]x", false),
            ("", false),
        ] {
            assert_eq!(admin_host(host.as_bytes(), &names), ok, "{host:?}");
        }
        assert!(!admin_host(b"\xff", &names));
    }
}
