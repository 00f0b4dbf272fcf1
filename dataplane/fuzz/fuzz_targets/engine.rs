//! The engine (`Conn`) driven by an arbitrary script of events, as a
//! driver would drive it: client bytes in arbitrary splits (raw, or whole
//! requests built from parts), upstream bytes (raw, or responses built from
//! parts), EOFs, resets, connect failures, time passing, admin answers,
//! drain, resumes and ended fetches: every `ConnEvent`, through
//! `Conn::handle`, the engine's one input. After every step:
//! - what the client received reads as well-framed HTTP/1.1 responses
//!   (checked by `ultragate_fuzz`, not by the engine's parser);
//! - no request gets more than one response;
//! - nothing is written after the engine decided to close;
//! - what went to each upstream connection reads as well-framed requests,
//!   complete whenever the connection is handed back for reuse.
//!
//! Script format (so seeds can be written by hand): byte 0 picks the
//! setup (cache or not); then events, each an opcode byte and, for the
//! data events, a length byte and that many bytes.

#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use ultragate_dataplane::admin::AdminResponse;
use ultragate_dataplane::cache::{Cache, CacheConfig};
use ultragate_dataplane::http::request::RequestLimits;
use ultragate_dataplane::proxy::{Action, Conn, ConnEvent, EngineConfig};
use ultragate_dataplane::route::{HostMatch, RouteSpec, Routes};
use ultragate_dataplane::status::DataplaneStatus;
use ultragate_fuzz::{scan_requests, scan_responses};

#[derive(PartialEq)]
enum Upstream {
    None,
    Connecting,
    Connected,
}

struct Harness {
    conn: Conn,
    /// The cache, to release the claim of a background refresh as the
    /// per-core layer does.
    cache: Option<Arc<Cache>>,
    now: Instant,
    upstream: Upstream,
    admin_pending: bool,
    client_in: Vec<u8>,
    client_out: Vec<u8>,
    /// Bytes written to the current upstream connection.
    upstream_out: Vec<u8>,
    /// An idle pooled connection's bytes, for a `Connect` that reuses it.
    pooled: Option<Vec<u8>>,
    closed: bool,
    /// Where the scans of each stream resume (everything before was read
    /// and judged already): the checks after every step stay linear.
    scan: Scan,
}

/// Progress of the incremental scans of the three streams.
#[derive(Default)]
struct Scan {
    /// Client input: bytes and HEAD flags of the complete requests.
    requests_at: usize,
    head_methods: Vec<bool>,
    /// The client input could not be read past `requests_at`.
    unreadable: bool,
    /// Client output: bytes and count of complete responses, and whether
    /// the last of them closes the connection.
    responses_at: usize,
    responses: usize,
    closes: bool,
    /// The current upstream connection's output.
    upstream_at: usize,
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "M-SEARCH",
];
const PATHS: &[&str] = &[
    "/",
    "/a",
    "/a?x=1",
    "/admin/cache",
    "/health/ready",
    "/b/é",
    "*",
    "http://h/a",
    "/n/1",
    "/x",
    "http://a.example.com/a",
];
/// `Host` values: plain, with ports, wildcard matches, odd ones.
const HOSTS: &[&str] = &[
    "h",
    "origin",
    "ORIGIN:80",
    "www.example.com",
    "example.com.",
    "[::1]:8080",
    "[",
    ":",
    "\u{e9}.example.com",
];
const EXTRA: &[&str] = &[
    "",
    "Accept: text/html\r\n",
    "If-None-Match: \"v1\"\r\n",
    "Cache-Control: no-cache\r\n",
    "Connection: close\r\n",
    "Connection: X-A\r\nX-A: 1\r\n",
    "Expect: 100-continue\r\n",
    "Authorization: Bearer x\r\n",
    "Accept-Encoding: gzip\r\n",
    "Connection: Accept\r\nAccept: a\r\n",
    "Range: bytes=0-3\r\n",
    "Range: bytes=0-1, 5-\r\nIf-Range: \"v1\"\r\n",
    "Range: bytes=900-\r\n",
];
const STATUSES: &[u16] = &[200, 200, 304, 404, 500, 503, 204, 206, 100, 103, 101, 302];
const CACHING: &[&str] = &[
    "",
    "CDN-Cache-Control: max-age=60\r\nCache-Control: no-store\r\n",
    "Cache-Control: max-age=60\r\n",
    "Cache-Control: max-age=1, stale-while-revalidate=30, stale-if-error=30\r\n",
    "Cache-Control: no-store\r\n",
    "Cache-Control: public, max-age=60\r\nSet-Cookie: a=b\r\n",
    "Cache-Control: max-age=60\r\nVary: Accept\r\n",
    "Cache-Control: max-age=60\r\nETag: \"v1\"\r\n",
    "Cache-Control: private\r\n",
    "Cache-Control: max-age=60\r\nVary: *\r\n",
    "Cache-Control: no-cache\r\nETag: \"v1\"\r\n",
];

/// Routes for half the runs: by exact and wildcard host, prefix and
/// method, one without the cache, one with a TTL of its own, and no
/// catch-all (so some requests get the 404 of no route).
fn routes() -> Routes {
    let route = |name: &str,
                 host: Option<&str>,
                 prefix: &str,
                 methods: &[&str],
                 cache,
                 ttl: Option<Duration>| RouteSpec {
        name: name.into(),
        host: host.map_or(HostMatch::Any, HostMatch::parse),
        path_prefix: prefix.into(),
        methods: methods.iter().map(|m| m.to_string()).collect(),
        upstream: Arc::from("primary"),
        pool: 0,
        cache,
        cache_ttl: ttl.map(|t| ultragate_dataplane::route::TtlOverride::new(t, &["text/*"])),
    };
    Routes::new(vec![
        route("exact", Some("origin"), "/", &[], true, None),
        route(
            "wild",
            Some("*.example.com"),
            "/a",
            &["GET", "HEAD"],
            true,
            Some(Duration::from_secs(30)),
        ),
        route("nocache", None, "/n", &[], false, None),
        route("any", None, "/x", &["POST"], true, None),
    ])
}

impl Harness {
    fn new(cache: bool, routed: bool) -> Self {
        let now = Instant::now();
        let cfg = Arc::new(EngineConfig {
            limits: RequestLimits {
                max_header_bytes: 2048,
                max_body_bytes: 4096,
            },
            max_response_head_bytes: 2048,
            response_timeout: Duration::from_secs(5),
            connect_attempts: 3,
            routes: Arc::new(if routed { routes() } else { Routes::default() }),
            ..EngineConfig::new("origin:80".into(), (now, SystemTime::now()))
        });
        let status = Arc::new(DataplaneStatus::default());
        status.set_serving(true);
        let cache = cache.then(|| {
            Arc::new(Cache::new(CacheConfig {
                max_bytes: 64 * 1024,
                max_object_bytes: 4096,
            }))
        });
        let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));
        Self {
            conn: Conn::new(cfg, status, cache.clone(), peer, now),
            cache,
            now,
            upstream: Upstream::None,
            admin_pending: false,
            client_in: Vec::new(),
            client_out: Vec::new(),
            upstream_out: Vec::new(),
            pooled: None,
            closed: false,
            scan: Scan::default(),
        }
    }

    /// Carries out the engine's actions as a driver would.
    fn actions(&mut self) {
        while let Some(action) = self.conn.poll_action() {
            match action {
                Action::Connect { .. } => {
                    self.upstream = Upstream::Connecting;
                    self.upstream_out.clear();
                    self.scan.upstream_at = 0;
                }
                Action::Release { reuse } => {
                    if self.upstream == Upstream::Connected && reuse {
                        let sent = scan_requests(&self.upstream_out, true);
                        assert!(
                            sent.readable && !sent.partial,
                            "a connection handed back for reuse carries a partial request: {:?}",
                            String::from_utf8_lossy(&self.upstream_out)
                        );
                        self.pooled = Some(std::mem::take(&mut self.upstream_out));
                        self.scan.upstream_at = 0;
                    }
                    self.upstream = Upstream::None;
                }
                Action::Admin(_) => self.admin_pending = true,
                Action::Refresh { request, key } => {
                    // The per-core layer sends it as a fetch of its own.
                    let sent = scan_requests(&request, true);
                    assert!(
                        sent.readable && !sent.partial,
                        "a background refresh that is not one whole request: {:?}",
                        String::from_utf8_lossy(&request)
                    );
                    if let Some(cache) = &self.cache {
                        cache.release_fetch(&key);
                    }
                }
            }
        }
        while self.conn.poll_completion().is_some() {}
    }

    fn write_client(&mut self, limit: usize) {
        if self.conn.is_aborted() {
            // The driver resets the connection instead.
            return;
        }
        let mut left = limit;
        while self.conn.client_pending() > 0 && left > 0 {
            let chunk = self.conn.client_output();
            let n = chunk.len().min(left);
            self.client_out.extend_from_slice(&chunk[..n]);
            self.conn.handle(self.now, ConnEvent::ClientWritten(n));
            left -= n;
        }
    }

    fn write_upstream(&mut self, limit: usize) {
        if self.upstream != Upstream::Connected || !self.conn.upstream_attached() {
            return;
        }
        let out = self.conn.upstream_output();
        let n = out.len().min(limit);
        self.upstream_out.extend_from_slice(&out[..n]);
        self.conn.handle(self.now, ConnEvent::UpstreamWritten(n));
    }

    fn check(&mut self) {
        if self.closed && !self.conn.is_aborted() {
            assert_eq!(
                self.conn.client_pending(),
                0,
                "bytes queued after the engine decided to close"
            );
        }
        if self.conn.is_finished() {
            self.closed = true;
        }
        // Client input: the requests as a client meant them.
        let mut partial = false;
        if !self.scan.unreadable {
            let r = scan_requests(&self.client_in[self.scan.requests_at..], false);
            self.scan.head_methods.extend(&r.head_methods[..r.complete]);
            self.scan.requests_at += r.consumed;
            self.scan.unreadable = !r.readable;
            partial = r.partial;
            if partial {
                if let Some(&head) = r.head_methods.last() {
                    self.scan.head_methods.push(head);
                }
            }
        }
        let out = &self.client_out[self.scan.responses_at..];
        if self.scan.closes && !out.is_empty() {
            panic!(
                "bytes after a response that closes: {:?}",
                String::from_utf8_lossy(out)
            );
        }
        let methods = self
            .scan
            .head_methods
            .get(self.scan.responses..)
            .unwrap_or_default();
        let scanned = scan_responses(out, methods);
        let requests_known = self.scan.head_methods.len();
        if partial {
            self.scan.head_methods.pop();
        }
        let responses = match scanned {
            Ok(r) => r,
            // Past what the scanner could read, the engine may disagree on
            // where requests end: judge only a stream read to its end.
            Err(e) if !self.scan.unreadable => panic!(
                "client output is not well-framed: {e}\n{:?}",
                String::from_utf8_lossy(&self.client_out)
            ),
            Err(_) => return,
        };
        let total = self.scan.responses + responses.statuses.len();
        self.scan.responses += responses.complete;
        self.scan.responses_at += responses.consumed;
        self.scan.closes = responses.last_closes && !responses.partial;
        if !self.scan.unreadable {
            assert!(
                total <= requests_known.max(1),
                "{total} responses to {requests_known} requests\nin: {:?}\nout: {:?}",
                String::from_utf8_lossy(&self.client_in),
                String::from_utf8_lossy(&self.client_out)
            );
        }
        let sent = scan_requests(&self.upstream_out[self.scan.upstream_at..], true);
        assert!(
            sent.readable,
            "upstream output is not well-framed requests: {:?}",
            String::from_utf8_lossy(&self.upstream_out)
        );
        self.scan.upstream_at += sent.consumed;
    }
}

fn request(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    let method = *u.choose(METHODS)?;
    let path = *u.choose(PATHS)?;
    let extra = *u.choose(EXTRA)?;
    let version = if u.ratio(1, 8)? {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    let body_len = usize::from(u.arbitrary::<u8>()? % 16);
    let host = *u.choose(HOSTS)?;
    let mut r = format!("{method} {path} {version}\r\nHost: {host}\r\n{extra}");
    match u.arbitrary::<u8>()? % 3 {
        0 => r.push_str("\r\n"),
        1 => {
            r.push_str(&format!("Content-Length: {body_len}\r\n\r\n"));
            r.push_str(&"b".repeat(body_len));
        }
        _ => {
            r.push_str("Transfer-Encoding: chunked\r\n\r\n");
            if body_len > 0 {
                r.push_str(&format!("{body_len:x}\r\n{}\r\n", "c".repeat(body_len)));
            }
            r.push_str("0\r\nX-T: 1\r\n\r\n");
        }
    }
    Ok(r.into_bytes())
}

fn response(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    let status = *u.choose(STATUSES)?;
    let caching = *u.choose(CACHING)?;
    let body_len = usize::from(u.arbitrary::<u8>()?) * 40;
    let mut r = format!("HTTP/1.1 {status} X\r\n{caching}");
    match u.arbitrary::<u8>()? % 4 {
        0 => {
            r.push_str(&format!("Content-Length: {body_len}\r\n\r\n"));
            r.push_str(&"r".repeat(body_len));
        }
        1 => {
            r.push_str("Transfer-Encoding: chunked\r\n\r\n");
            if body_len > 0 {
                r.push_str(&format!("{body_len:x}\r\n{}\r\n", "k".repeat(body_len)));
            }
            r.push_str("0\r\nX-Sum: 2\r\nContent-Length: 9\r\n\r\n");
        }
        2 => {
            r.push_str("\r\n");
            r.push_str(&"u".repeat(body_len));
        }
        _ => r.push_str("Content-Length: 0\r\n\r\n"),
    }
    Ok(r.into_bytes())
}

fn run(data: &[u8]) -> arbitrary::Result<()> {
    let mut u = Unstructured::new(data);
    let flags = u.arbitrary::<u8>()?;
    let mut h = Harness::new(flags & 1 == 1, flags & 2 == 2);
    let mut steps = 0;
    while !u.is_empty() && steps < 256 {
        steps += 1;
        let op = u.arbitrary::<u8>()?;
        match op % 16 {
            0 | 1 => {
                let bytes = if op % 16 == 0 {
                    let n = usize::from(u.arbitrary::<u8>()?);
                    u.bytes(n)?.to_vec()
                } else {
                    request(&mut u)?
                };
                // The driver reads only while the engine wants bytes, in
                // pieces of any size.
                let mut rest = &bytes[..];
                while !rest.is_empty() && h.conn.wants_client_bytes() {
                    let n = rest.len().min(usize::from(u.arbitrary::<u8>()?).max(1));
                    h.client_in.extend_from_slice(&rest[..n]);
                    h.conn.handle(h.now, ConnEvent::ClientBytes(&rest[..n]));
                    rest = &rest[n..];
                    h.actions();
                }
            }
            2 => {
                if !h.closed {
                    h.conn.handle(h.now, ConnEvent::ClientEof);
                }
            }
            3 => {
                let n = usize::from(u.arbitrary::<u8>()?);
                h.write_client(if n == 0 { usize::MAX } else { n * 16 });
            }
            4 if h.upstream == Upstream::Connecting => {
                let reused = u.arbitrary::<bool>()? && h.pooled.is_some();
                if reused {
                    h.upstream_out = h.pooled.take().unwrap_or_default();
                } else {
                    h.upstream_out.clear();
                }
                h.scan.upstream_at = 0;
                h.upstream = Upstream::Connected;
                h.conn
                    .handle(h.now, ConnEvent::UpstreamConnected { reused: reused });
            }
            5 if h.upstream == Upstream::Connecting => {
                h.upstream = Upstream::None;
                h.conn.handle(h.now, ConnEvent::UpstreamConnectFailed);
            }
            6 | 7 if h.upstream == Upstream::Connected => {
                let bytes = if op % 14 == 6 {
                    let n = usize::from(u.arbitrary::<u8>()?);
                    u.bytes(n)?.to_vec()
                } else {
                    response(&mut u)?
                };
                let mut rest = &bytes[..];
                while !rest.is_empty()
                    && h.upstream == Upstream::Connected
                    && h.conn.wants_upstream_bytes()
                {
                    let n = rest.len().min(usize::from(u.arbitrary::<u8>()?).max(1) * 8);
                    h.conn.handle(h.now, ConnEvent::UpstreamBytes(&rest[..n]));
                    rest = &rest[n..];
                    h.actions();
                }
            }
            8 if h.upstream == Upstream::Connected => h.conn.handle(h.now, ConnEvent::UpstreamEof),
            9 if h.upstream == Upstream::Connected => {
                h.conn.handle(h.now, ConnEvent::UpstreamReset)
            }
            10 => {
                let n = usize::from(u.arbitrary::<u8>()?);
                h.write_upstream(if n == 0 { usize::MAX } else { n * 8 });
            }
            11 if h.admin_pending => {
                h.admin_pending = false;
                let status = *u.choose(&[200u16, 403, 404, 500])?;
                h.conn.handle(
                    h.now,
                    ConnEvent::Admin(AdminResponse {
                        status,
                        content_type: "application/json",
                        body: bytes::Bytes::from_static(b"{}"),
                        allow: None,
                    }),
                );
            }
            12 => {
                let ms = u64::from(u.arbitrary::<u8>()?) * 250;
                h.now += Duration::from_millis(ms);
                if h.conn.timeout().is_some_and(|t| t <= h.now) {
                    h.conn.handle(h.now, ConnEvent::Timeout);
                }
            }
            13 => h.conn.handle(h.now, ConnEvent::Drain),
            14 => h.conn.handle(h.now, ConnEvent::Resume),
            15 => h.conn.handle(h.now, ConnEvent::FetchEnded),
            _ => {}
        }
        h.actions();
        h.check();
    }
    // The end: the driver writes everything out.
    h.write_client(usize::MAX);
    h.check();
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
