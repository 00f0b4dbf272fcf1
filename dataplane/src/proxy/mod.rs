//! The proxy engine: one [`Conn`] per client connection, driven by bytes.
//!
//! The caller feeds what arrives from the client ([`Conn::recv_client`])
//! and from the upstream ([`Conn::recv_upstream`]), writes out what the
//! engine queued ([`Conn::client_output`], [`Conn::upstream_output`]),
//! carries out its [`Action`]s, and calls [`Conn::handle_timeout`] at
//! [`Conn::timeout`]. The engine never touches a socket or a clock.

#![forbid(unsafe_code)]

mod body;
mod cached;
pub mod forward;
pub mod local;

mod rewrite;

use crate::access::{self, AccessLog, AccessRecord};
use crate::admin::{AdminRequest, AdminResponse};
use crate::cache::entry::Entry;
use crate::cache::range::{self, Ranges};
use crate::cache::verdict::CacheResult;
use crate::cache::verdict::{Forwarded, Served};
use crate::cache::{rules, Cache, Scheme, Waiting};
use crate::http::output::Output;
use crate::http::path::{self, PathBuf, PathRules};
use crate::http::request::{Method, RequestHead, RequestLimits};
use crate::http::response::ResponseHead;
use crate::http::{Framing, Version, MAX_HEADERS};
use crate::route::{RouteMatch, Routes};
use crate::stats::Completion;
use crate::status::DataplaneStatus;
use crate::tls::sni::ServedNames;
use body::BodyReader;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use cached::{CacheFetch, Decision};
use forward::ForwardRules;
use rewrite::ClientFraming;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Copies of a request kept for a retry on a fresh upstream connection
/// stop at this size, in bytes; larger requests are not retried.
const MAX_REPLAY_BYTES: usize = 64 * 1024;
/// Bytes queued for the upstream before the engine stops taking client
/// bytes.
const MAX_UPSTREAM_QUEUE: usize = 64 * 1024;
/// Largest body of an admin call on the data port, in bytes.
const MAX_ADMIN_BODY: u64 = 64 * 1024;
/// Longest wait for the control plane's answer to a data-port admin call
/// (a data verify re-fetches every entry): then 504 and close.
pub const ADMIN_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// With the `test-hooks` feature (test builds only), a request for this
/// path panics in the engine, to show that a driver contains it.
#[cfg(feature = "test-hooks")]
pub const TEST_PANIC_PATH: &str = "/__ultragate_test/panic";

/// A connection's client bytes: received, written, and what the last
/// completion reported of them.
#[derive(Debug, Default)]
struct Traffic {
    received: u64,
    written: u64,
    reported: (u64, u64),
}

impl Traffic {
    /// Bytes received and queued (written, plus `queued` still in the
    /// output) since the last call.
    fn take(&mut self, queued: usize) -> (u64, u64) {
        let out = self.written + queued as u64;
        let (seen_in, seen_out) = std::mem::replace(&mut self.reported, (self.received, out));
        (
            self.received.saturating_sub(seen_in),
            out.saturating_sub(seen_out),
        )
    }
}

/// Settings of the engine, shared by every connection of a process.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Request head and body limits.
    pub limits: RequestLimits,
    /// Largest response head accepted from an upstream, in bytes.
    pub max_response_head_bytes: usize,
    /// Longest wait for progress on a started request head or body.
    pub client_timeout: Duration,
    /// Longest idle time of a client keep-alive connection between requests.
    pub keepalive_timeout: Duration,
    /// Longest time queued client output may go without any of it being
    /// written (a client that stopped reading); then the connection closes.
    pub send_timeout: Duration,
    /// Longest wait for an upstream connection.
    pub connect_timeout: Duration,
    /// Longest wait for the next byte of an upstream response.
    pub response_timeout: Duration,
    /// How many upstream connects a request may try: one per primary
    /// server, and one more that the driver sends to the fallback group.
    pub connect_attempts: usize,
    /// `Host` sent upstream for HTTP/1.0 requests that carry none.
    pub default_host: String,
    /// Longest wait for another connection's fetch of the same missing
    /// key before going to the upstream too.
    pub coalesce_wait: Duration,
    /// A reading of both clocks taken together, so the engine can turn its
    /// monotonic `now` into wall time (for `Date` and `Age`) without
    /// asking the operating system.
    pub epoch: (Instant, SystemTime),
    /// The access log, when the process has one: requests it wants are
    /// recorded, with an `X-Request-Id` and a `traceparent`.
    pub access: Option<Arc<AccessLog>>,
    /// Which route (and so which upstream pool) takes a request.
    pub routes: Arc<Routes>,
    /// How request paths are normalised before anything reads them.
    pub paths: PathRules,
    /// Whose forwarding fields are kept, and which are removed.
    pub forwarding: ForwardRules,
    /// Bytes queued for a client past which its connection takes no
    /// more: no upstream bytes, no further pipelined request, no client
    /// bytes (the driver stops receiving), until the client reads
    /// (`[api_gateway] max_connection_buffer_bytes`). A connection holds
    /// at most this plus one request head and the one response being
    /// written.
    pub max_client_queue: usize,
    /// Whether the test hooks answer (`[cache] test_hooks`): a request for
    /// [`TEST_PANIC_PATH`] panics, and so does an upstream TLS answer
    /// naming `endpoint::TEST_UPSTREAM_TLS_PANIC`. Read only by builds
    /// with the `test-hooks` feature, which production builds never have.
    pub test_hooks: bool,
}

impl EngineConfig {
    /// The engine with the config's built-in defaults (those of
    /// `[api_gateway]`, `[upstream.primary]` and `[cache]`), sending
    /// `default_host` upstream for a request without `Host`, with its clock
    /// reading `epoch`: what a test, a benchmark or the ring harness starts
    /// from, naming only the fields it is about
    /// (`EngineConfig { connect_attempts: 2, ..EngineConfig::new(..) }`).
    /// The gateway builds its own from the config file.
    pub fn new(default_host: String, epoch: (Instant, SystemTime)) -> Self {
        Self {
            limits: RequestLimits {
                max_header_bytes: 16 * 1024,
                max_body_bytes: 10 << 20,
            },
            max_response_head_bytes: 64 * 1024,
            client_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(30),
            connect_attempts: 1,
            default_host,
            coalesce_wait: Duration::from_secs(2),
            epoch,
            access: None,
            routes: Default::default(),
            paths: Default::default(),
            forwarding: Default::default(),
            max_client_queue: 256 * 1024,
            test_hooks: false,
        }
    }

    /// Wall-clock time at monotonic `now`.
    fn wall(&self, now: Instant) -> SystemTime {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0)
    }
}

/// Something the driver must do for the engine, in the order given.
#[derive(Debug)]
pub enum Action {
    /// Attach an upstream connection, from the pool unless `fresh`, then
    /// report [`Conn::upstream_connected`] or
    /// [`Conn::upstream_connect_failed`].
    Connect {
        /// A new connection is required (a retry or a next server).
        fresh: bool,
        /// Which try of this request it is: 0 first; each failed server
        /// adds one (a retry after the keep-alive race does not).
        attempt: usize,
    },
    /// Detach the upstream connection: back to the pool when `reuse`,
    /// closed otherwise.
    Release {
        /// The connection is clean and may serve another request.
        reuse: bool,
    },
    /// Call the admin service and report [`Conn::admin_response`].
    Admin(AdminRequest),
    /// Refresh a stale entry in the background (stale-while-revalidate):
    /// the client was answered from the cache and goes on; `request` is
    /// the revalidation to send as a fetch of its own, and the fetch claim
    /// on `key` (taken by this connection) is the caller's to release when
    /// it is done.
    Refresh {
        /// A request head that revalidates the entry (`Cache-Control:
        /// max-age=0`, the client's varied fields kept).
        request: Bytes,
        /// The cache key whose fetch claim the refresh holds.
        key: Bytes,
    },
}

/// How a request in flight is being handled.
#[derive(Debug)]
enum Phase {
    /// Waiting for the next request head.
    Idle,
    /// The request (still in the input) waits for another connection's
    /// fetch of the same key: looked at again when a fetch ends
    /// ([`Conn::retry_wait`]), or at `until` to go upstream itself.
    Wait {
        until: Instant,
        /// Counted among the cache's waiters while held.
        _waiting: Waiting,
    },
    /// Reading an admin call's body, then waiting for its answer.
    Admin {
        /// When the call's head arrived: its body must arrive within the
        /// client timeout, its answer within [`ADMIN_CALL_TIMEOUT`].
        started: Instant,
        req: Option<Box<AdminRequest>>,
        body: BytesMut,
        reader: BodyReader,
        head_only: bool,
        close: bool,
    },
    /// Forwarding a request upstream and its response back.
    Proxy(Box<Exchange>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpstreamState {
    Connecting,
    Connected,
    Released,
}

/// One request/response exchange with an upstream.
#[derive(Debug)]
struct Exchange {
    method: Method,
    client_version: Version,
    client_keep_alive: bool,
    request: BodyReader,
    replay: Option<BytesMut>,
    upstream: UpstreamState,
    reused: bool,
    connects: usize,
    connect_started: Instant,
    /// The chosen pool's connect and response timeouts, when it has its
    /// own (else the engine's).
    timeouts: Option<(Duration, Duration)>,
    upstream_progress: Instant,
    client_progress: Instant,
    head_buf: BytesMut,
    response_bytes_seen: bool,
    response: Option<ResponseBody>,
    cache: Option<Box<CacheFetch>>,
    /// What the client got (status, cache part), once it got a head; none
    /// for a background refresh, whose client was answered before.
    outcome: Option<(u16, CacheResult)>,
    /// When the request's last byte went upstream (this try's).
    sent_at: Option<Instant>,
    /// When the response head arrived.
    head_at: Option<Instant>,
    /// This try is a canary to a diverted pool: a failure (a 5xx, or no
    /// head within the deadline) is retried on the fallback, never shown
    /// to the client.
    canary: Option<Duration>,
}

impl Exchange {
    /// The upstream's part so far: last request byte sent to the response
    /// head (or `now`, for a failure before it).
    fn upstream_took(&self, now: Instant) -> Option<Duration> {
        let sent = self.sent_at?;
        Some(self.head_at.unwrap_or(now).saturating_duration_since(sent))
    }
}

impl std::fmt::Debug for CacheFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheFetch")
            .field("relay", &self.relay)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct ResponseBody {
    reader: BodyReader,
    framing: ClientFraming,
    reusable: bool,
}

/// The access-log record of the request being answered, while it fills.
#[derive(Debug)]
struct AccessDraft {
    record: AccessRecord,
    head_done: Instant,
    cache_done: Option<Instant>,
    first_byte: Option<Instant>,
    /// The id was made up here: sent upstream (instead of the client's).
    made_id: bool,
    /// The trace was made up here: sent upstream (instead of the client's).
    made_trace: bool,
}

impl AccessDraft {
    fn new(head: &RequestHead<'_, '_>, started: Instant, now: Instant, wall: SystemTime) -> Self {
        let field = |name| rules::field(head.headers, name);
        let sent_id =
            rewrite::lone(head.headers, "x-request-id").and_then(access::valid_request_id);
        let sent_trace =
            rewrite::lone(head.headers, "traceparent").and_then(access::valid_traceparent);
        // Made up only when not sent; hex digits, so valid text.
        let made_id = sent_id.is_none().then(access::new_request_id);
        let made_trace = sent_trace.is_none().then(access::new_traceparent);
        let id = sent_id
            .or_else(|| made_id.as_ref().and_then(|b| std::str::from_utf8(b).ok()))
            .unwrap_or("");
        let trace = sent_trace
            .or_else(|| {
                made_trace
                    .as_ref()
                    .and_then(|b| std::str::from_utf8(b).ok())
            })
            .unwrap_or("");
        let host = String::from_utf8_lossy(head.host);
        // Bounded: a client's long field costs the log no more.
        let bounded = |name| {
            let v = field(name).unwrap_or_default();
            String::from_utf8_lossy(v.get(..access::MAX_LOGGED_FIELD).unwrap_or(v))
        };
        let (agent, referer) = (bounded("user-agent"), bounded("referer"));
        let mut record = AccessRecord::new(
            wall,
            match head.version {
                Version::Http10 => "HTTP/1.0",
                Version::Http11 => "HTTP/1.1",
            },
            [
                head.method_name,
                &host,
                head.target,
                id,
                trace,
                &agent,
                &referer,
            ],
        );
        record.head_us = micros(now.saturating_duration_since(started));
        AccessDraft {
            record,
            head_done: now,
            cache_done: None,
            first_byte: None,
            made_id: made_id.is_some(),
            made_trace: made_trace.is_some(),
        }
    }

    /// Appends `X-Request-Id: <id>`.
    fn push_id(&self, f: &mut Fields) {
        f.push(&[
            b"X-Request-Id: ",
            self.record.request_id().as_bytes(),
            b"\r\n",
        ]);
    }

    /// Fields for the upstream request (what was made up here), and the
    /// names of the client's fields they replace.
    fn upstream_fields(&self) -> (Fields, &'static [&'static str]) {
        let mut f = Fields::default();
        if self.made_id {
            self.push_id(&mut f);
        }
        if self.made_trace {
            f.push(&[
                b"traceparent: ",
                self.record.traceparent().as_bytes(),
                b"\r\n",
            ]);
        }
        let replaced: &'static [&'static str] = match (self.made_id, self.made_trace) {
            (true, true) => &["x-request-id", "traceparent"],
            (true, false) => &["x-request-id"],
            (false, true) => &["traceparent"],
            (false, false) => &[],
        };
        (f, replaced)
    }

    /// The finished record.
    fn finish(
        mut self,
        started: Instant,
        now: Instant,
        status: u16,
        cache: CacheResult,
        bytes: (u64, u64),
    ) -> AccessRecord {
        let r = &mut self.record;
        r.status = status;
        r.cache = cache.label();
        (r.request_bytes, r.response_bytes) = bytes;
        r.cache_us = self
            .cache_done
            .map(|t| micros(t.saturating_duration_since(self.head_done)));
        r.upstream_first_byte_us = self
            .first_byte
            .map(|t| micros(t.saturating_duration_since(started)));
        r.total_us = micros(now.saturating_duration_since(started));
        self.record
    }
}

/// Sends the request of `ex` again, from its replay copy, on a fresh
/// connection (its `connects`-th attempt): the keep-alive race, or a
/// canary retried on the fallback.
fn resend(ex: &mut Exchange, out: &mut BytesMut, actions: &mut VecDeque<Action>, now: Instant) {
    ex.upstream = UpstreamState::Connecting;
    ex.connect_started = now;
    ex.sent_at = None;
    ex.head_at = None;
    ex.response_bytes_seen = false;
    ex.head_buf.clear();
    out.clear();
    if let Some(replay) = &ex.replay {
        out.extend_from_slice(replay);
    }
    actions.push_back(Action::Connect {
        fresh: true,
        attempt: ex.connects,
    });
}

/// A few header lines assembled on the stack (no allocation): the
/// connection field, `X-Request-Id` and `traceparent` at most.
struct Fields {
    buf: [u8; 256],
    len: usize,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            buf: [0; 256],
            len: 0,
        }
    }
}

impl Fields {
    /// Appends one line's parts; a line that does not fit is left out
    /// (ids are bounded well below the room).
    fn push(&mut self, parts: &[&[u8]]) {
        let n: usize = parts.iter().map(|p| p.len()).sum();
        let Some(dst) = self.buf.get_mut(self.len..self.len + n) else {
            return;
        };
        let mut at = 0;
        for p in parts {
            dst[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        self.len += n;
    }

    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// The fields a response gets besides its own: the connection field, and
/// the request's `X-Request-Id` while the access log records it.
// Lives on the stack for one call: boxing the large variant would
// allocate on every hit while the access log is on.
#[allow(clippy::large_enum_variant)]
enum ClientFields {
    /// The connection field alone (the log is off: nothing to build).
    Connection(&'static [u8]),
    /// With the request id.
    WithId(Fields),
}

impl ClientFields {
    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Connection(c) => c,
            Self::WithId(f) => f.as_slice(),
        }
    }
}

fn client_fields(access: &Option<AccessDraft>, close: bool, version: Version) -> ClientFields {
    let connection = connection_field(close, version);
    match access {
        None => ClientFields::Connection(connection),
        Some(d) => {
            let mut f = Fields::default();
            f.push(&[connection]);
            d.push_id(&mut f);
            ClientFields::WithId(f)
        }
    }
}

/// Where a parsed request head leaves the connection.
enum Next {
    /// Nothing more now (more bytes needed, a wait, or an error answered).
    Stop,
    /// Its handling started (an admin call, an exchange): the head is
    /// consumed.
    Started { head_len: usize },
    /// Answered here: the head and any body are consumed.
    Answered {
        head_len: usize,
        framing: Framing,
        close: bool,
    },
}

/// What the cache lookup decided.
enum Lookup {
    /// Answered from the store.
    Answered,
    /// Nothing more now: the request waits for another connection's
    /// fetch, or was refused with an error.
    Stop,
    /// Goes upstream, with what the exchange carries for the cache.
    Forward(Option<Box<CacheFetch>>),
}

/// The state of one client connection.
pub struct Conn {
    cfg: Arc<EngineConfig>,
    status: Arc<DataplaneStatus>,
    cache: Option<Arc<Cache>>,
    /// Scratch space for cache keys, reused across requests.
    key_buf: Vec<u8>,
    /// Scratch space for rewritten paths, reused across requests.
    paths: PathBuf,
    /// Until when the current request may wait for another fetch.
    coalesce_until: Option<Instant>,
    /// When the request being answered started (its first byte).
    req_started: Instant,
    /// When its head was complete: the gateway's service time starts.
    served_since: Instant,
    /// The upstream's part of the answer being completed.
    upstream_took: Option<Duration>,
    /// The answer being completed came from a canary.
    canary_answer: bool,
    /// The client address's and the request path's slots in the
    /// statistics' [`crate::stats::Blame`].
    slots: (u8, u8),
    /// Client bytes in and out, for the byte counters.
    traffic: Traffic,
    /// The access-log record of the request being answered.
    access: Option<AccessDraft>,
    /// Answered requests not yet collected by the driver.
    completions: VecDeque<Completion>,
    peer: IpAddr,
    /// How the client came: keys its cache entries and is told upstream
    /// (`X-Forwarded-Proto`).
    scheme: Scheme,
    /// The peer is a trusted proxy (`trusted_proxies`): its forwarding
    /// fields are kept.
    trusted: bool,
    /// The peer may call `/admin/*` on the data port (a loopback peer of a
    /// kernel data plane; never a DPDK peer).
    local_admin: bool,
    input: BytesMut,
    output: Output,
    upstream_output: BytesMut,
    actions: VecDeque<Action>,
    phase: Phase,
    idle_since: Instant,
    head_started: Option<Instant>,
    /// Since when queued client output has made no progress (queued on an
    /// empty queue, or last written): none for `send_timeout` closes.
    send_since: Instant,
    /// The request being answered is a HEAD.
    head_request: bool,
    /// The route of the request being answered (an index into the
    /// engine's routes); none for admin calls, probes and requests no
    /// route takes.
    route: Option<usize>,
    /// How far the connection is on its way to a close.
    closing: Closing,
    /// The client closed its sending side: nothing more to read.
    client_eof: bool,
    /// Pipelined requests wait for the client to read (see
    /// [`Conn::resume`]).
    held_back: bool,
    /// Over TLS: the names of the certificate the handshake got; a
    /// request for another host gets 421.
    served: Option<ServedNames>,
}

/// How far a connection is on its way to a close; it only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Closing {
    /// Keep-alive: more requests may follow.
    Open,
    /// Close once the current response is written (the request asked, the
    /// client half-closed, or the process drains).
    AfterResponse,
    /// Stop: write what is queued, then close.
    Finished,
    /// Given up on a client that stopped reading (send timeout): reset
    /// without writing the rest.
    Aborted,
}

impl Conn {
    /// A connection from `peer`, accepted at `now`, answering from `cache`
    /// when there is one.
    pub fn new(
        cfg: Arc<EngineConfig>,
        status: Arc<DataplaneStatus>,
        cache: Option<Arc<Cache>>,
        peer: IpAddr,
        now: Instant,
    ) -> Self {
        let trusted = cfg.forwarding.trusts(peer);
        Self {
            cfg,
            status,
            cache,
            key_buf: Vec::new(),
            paths: PathBuf::default(),
            coalesce_until: None,
            req_started: now,
            served_since: now,
            upstream_took: None,
            canary_answer: false,
            slots: (client_slot(peer), 0),
            traffic: Traffic::default(),
            access: None,
            completions: VecDeque::new(),
            peer,
            scheme: Scheme::Http,
            trusted,
            local_admin: peer.is_loopback(),
            input: BytesMut::with_capacity(4096),
            output: Output::with_capacity(4096),
            upstream_output: BytesMut::new(),
            actions: VecDeque::new(),
            phase: Phase::Idle,
            idle_since: now,
            head_started: None,
            send_since: now,
            head_request: false,
            route: None,
            closing: Closing::Open,
            client_eof: false,
            held_back: false,
            served: None,
        }
    }

    /// Refuses `/admin/*` on this connection whatever the peer's address:
    /// for a transport whose peers are never local (a DPDK port).
    pub fn without_local_admin(mut self) -> Self {
        self.local_admin = false;
        self
    }

    /// The same connection, come by `scheme` (https: a TLS session in
    /// front of it).
    pub fn came_by(mut self, scheme: Scheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// Feeds bytes received from the client.
    pub fn recv_client(&mut self, now: Instant, data: &[u8]) {
        self.traffic.received += data.len() as u64;
        self.send_clock(now);
        if self.finished() {
            return;
        }
        if matches!(self.phase, Phase::Idle) && self.input.is_empty() {
            self.head_started = Some(now);
        }
        if let Phase::Proxy(ex) = &mut self.phase {
            ex.client_progress = now;
        }
        self.input.extend_from_slice(data);
        self.advance(now);
    }

    /// The client closed its sending side.
    pub fn client_eof(&mut self, now: Instant) {
        self.send_clock(now);
        self.client_eof = true;
        match &self.phase {
            Phase::Idle if self.input.is_empty() => self.close(Closing::Finished),
            Phase::Idle | Phase::Wait { .. } => self.close(Closing::AfterResponse),
            Phase::Proxy(ex) if !ex.request.is_done() => self.abort_exchange(),
            Phase::Admin { reader, .. } if !reader.is_done() => self.close(Closing::Finished),
            _ => self.close(Closing::AfterResponse),
        }
        self.advance(now);
    }

    /// The oldest bytes queued for the client; after
    /// [`Self::client_written`] the next ones.
    pub fn client_output(&self) -> &[u8] {
        self.output.first()
    }

    /// Every byte queued for the client, as slices for a vectored write;
    /// returns how many of `dst` it filled.
    pub fn client_slices<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        self.output.slices(dst)
    }

    /// How many bytes are queued for the client.
    pub fn client_pending(&self) -> usize {
        self.output.len()
    }

    /// Keeps the queued client bytes at their addresses until written, for a
    /// driver whose kernel reads them after the call returns (io_uring).
    pub fn pin_client_output(&mut self) {
        self.output.freeze();
    }

    /// Over TLS: holds every request to the names of the certificate the
    /// handshake got (set once the ClientHello was read).
    pub fn serve_names(&mut self, names: ServedNames) {
        self.served = Some(names);
    }

    /// Whether [`Self::serve_names`] was called.
    pub fn has_served_names(&self) -> bool {
        self.served.is_some()
    }

    /// Takes up pipelined requests held back while the client's output was
    /// over its bound, once it is under again; the endpoint calls it
    /// before it settles the connection.
    pub fn resume(&mut self, now: Instant) {
        if self.held_back && self.output.len() < self.cfg.max_client_queue {
            self.held_back = false;
            self.advance(now);
        }
    }

    /// `n` queued client bytes were written at `now`.
    pub fn client_written(&mut self, n: usize, now: Instant) {
        self.traffic.written += n as u64;
        self.output.advance(n);
        if n > 0 {
            self.send_since = now;
        }
    }

    /// Starts the send clock when output is about to be queued on an empty
    /// queue: every entry point that may queue output calls it first.
    fn send_clock(&mut self, now: Instant) {
        if self.output.is_empty() {
            self.send_since = now;
        }
    }

    /// When queued output must have made progress by, if any is queued.
    fn send_deadline(&self) -> Option<Instant> {
        (!self.output.is_empty()).then(|| self.send_since + self.cfg.send_timeout)
    }

    /// Bytes queued for the upstream connection.
    pub fn upstream_output(&self) -> &[u8] {
        &self.upstream_output
    }

    /// `n` bytes of [`Self::upstream_output`] were written.
    pub fn upstream_written(&mut self, n: usize, now: Instant) {
        self.send_clock(now);
        self.upstream_output.advance(n);
        // Room in the queue: take more of a request body.
        self.advance(now);
        self.note_sent(now);
    }

    /// Takes every byte queued for the upstream, for a driver whose kernel
    /// reads them after the call returns (io_uring); call
    /// [`Self::upstream_sent`] once they are written.
    pub fn take_upstream_output(&mut self) -> Bytes {
        self.upstream_output.split().freeze()
    }

    /// The bytes taken with [`Self::take_upstream_output`] were written.
    pub fn upstream_sent(&mut self, now: Instant) {
        self.send_clock(now);
        self.advance(now);
        self.note_sent(now);
    }

    /// The upstream's clock starts when the request's last byte is out.
    fn note_sent(&mut self, now: Instant) {
        let empty = self.upstream_output.is_empty();
        if let Phase::Proxy(ex) = &mut self.phase {
            if empty && ex.request.is_done() && ex.sent_at.is_none() {
                ex.sent_at = Some(now);
            }
        }
    }

    /// Whether the request in flight may be a canary to a diverted pool:
    /// its first try, idempotent, and replayable on the fallback.
    pub fn may_be_canary(&self) -> bool {
        matches!(&self.phase, Phase::Proxy(ex)
            if ex.connects == 0
                && ex.method.is_idempotent()
                && ex.replay.is_some()
                && ex.request.is_done()
                && ex.cache.as_ref().is_none_or(|f| f.relay))
    }

    /// The peer selector sent this try to its diverted pool as a canary:
    /// no response head within `deadline`, or a 5xx, and it is retried on
    /// the fallback.
    pub fn upstream_canary(&mut self, deadline: Duration) {
        if let Phase::Proxy(ex) = &mut self.phase {
            ex.canary = Some(deadline);
        }
    }

    /// The next answered request, for the per-core statistics.
    pub fn poll_completion(&mut self) -> Option<Completion> {
        self.completions.pop_front()
    }

    /// Notes an answered request.
    fn complete(
        &mut self,
        now: Instant,
        status: u16,
        cache: CacheResult,
        upstream_error: bool,
        proxied: bool,
    ) {
        let done = self.completion(now, status, cache, upstream_error, proxied);
        self.completions.push_back(done);
    }

    /// The record of an answered request.
    fn completion(
        &mut self,
        now: Instant,
        status: u16,
        cache: CacheResult,
        upstream_error: bool,
        proxied: bool,
    ) -> Completion {
        let (bytes_in, bytes_out) = self.traffic.take(self.output.len());
        let access = self.access.take().map(|d| {
            Box::new(d.finish(self.req_started, now, status, cache, (bytes_in, bytes_out)))
        });
        Completion {
            latency: now.saturating_duration_since(self.served_since),
            upstream_latency: self.upstream_took.take(),
            client_slot: self.slots.0,
            url_slot: self.slots.1,
            canary: std::mem::take(&mut self.canary_answer),
            attempt_only: false,
            status,
            cache,
            upstream_error,
            transport_error: false,
            proxied,
            probe: false,
            route: self.route.and_then(|r| u16::try_from(r).ok()),
            bytes_in,
            bytes_out,
            access,
        }
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether the driver should read from the client now.
    pub fn wants_client_bytes(&self) -> bool {
        !self.finished()
            && !self.client_eof
            && self.input.len() < self.cfg.limits.max_header_bytes + 1
            && self.upstream_output.len() < MAX_UPSTREAM_QUEUE
            && self.output.len() < self.cfg.max_client_queue
    }

    /// Whether the driver should read from the upstream connection now.
    pub fn wants_upstream_bytes(&self) -> bool {
        matches!(&self.phase, Phase::Proxy(ex) if ex.upstream == UpstreamState::Connected)
            && self.output.len() < self.cfg.max_client_queue
    }

    /// Whether an upstream connection is attached and may be written to.
    pub fn upstream_attached(&self) -> bool {
        matches!(&self.phase, Phase::Proxy(ex) if ex.upstream == UpstreamState::Connected)
    }

    /// The connection is done: its output is written (or abandoned, see
    /// [`Self::is_aborted`]) and it should close.
    pub fn is_finished(&self) -> bool {
        self.finished() && (self.output.is_empty() || self.is_aborted())
    }

    /// The client took none of the queued output for the send timeout:
    /// the driver resets the connection without writing the rest. The
    /// queued bytes stay owned by the engine (a kernel may still read
    /// them) until the connection is dropped.
    pub fn is_aborted(&self) -> bool {
        self.closing == Closing::Aborted
    }

    /// Moves the connection towards its close (never back).
    fn close(&mut self, to: Closing) {
        self.closing = self.closing.max(to);
    }

    /// No request starts or continues: what is queued is written, then
    /// the connection closes.
    fn finished(&self) -> bool {
        self.closing >= Closing::Finished
    }

    /// The response being written (or the next one) is the last.
    fn closes(&self) -> bool {
        self.closing >= Closing::AfterResponse
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn timeout(&self) -> Option<Instant> {
        let send = self.send_deadline().filter(|_| !self.is_aborted());
        if self.finished() {
            return send;
        }
        let phase = self.phase_timeout();
        match (phase, send) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The deadline of the phase the connection is in.
    fn phase_timeout(&self) -> Option<Instant> {
        let cfg = &self.cfg;
        match &self.phase {
            Phase::Idle => Some(match self.head_started {
                Some(t) if !self.input.is_empty() => t + cfg.client_timeout,
                _ => self.idle_since + cfg.keepalive_timeout,
            }),
            Phase::Admin { started, req, .. } => Some(match req {
                Some(_) => *started + cfg.client_timeout,
                None => *started + ADMIN_CALL_TIMEOUT,
            }),
            Phase::Wait { until, .. } => Some(*until),
            Phase::Proxy(ex) => {
                let (connect, response) = ex
                    .timeouts
                    .unwrap_or((cfg.connect_timeout, cfg.response_timeout));
                let response = match ex.canary {
                    Some(deadline) if ex.response.is_none() => response.min(deadline),
                    _ => response,
                };
                Some(match ex.upstream {
                    UpstreamState::Connecting => ex.connect_started + connect,
                    _ if !ex.request.is_done() => ex.client_progress + cfg.client_timeout,
                    _ => ex.upstream_progress + response,
                })
            }
        }
    }

    /// Applies whatever timeout has passed at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.send_deadline().is_some_and(|t| t <= now) {
            // The client stopped reading: give up on it.
            self.abort_exchange();
            self.close(Closing::Aborted);
            return;
        }
        self.send_clock(now);
        if self.finished() || self.phase_timeout().is_none_or(|t| t > now) {
            return;
        }
        let phase = std::mem::replace(&mut self.phase, Phase::Idle);
        match phase {
            Phase::Idle if self.input.is_empty() => self.close(Closing::Finished),
            Phase::Idle => self.fail(now, 408, "request head not received in time"),
            Phase::Admin { req: Some(_), .. } => {
                self.fail(now, 408, "admin request body not received in time")
            }
            Phase::Admin { req: None, .. } => self.fail(now, 504, "admin call timed out"),
            // Look at the cache again: the request is still in the input.
            Phase::Wait { .. } => {}
            Phase::Proxy(mut ex) => match ex.upstream {
                UpstreamState::Connecting => {
                    ex.connects += 1;
                    if ex.connects < self.cfg.connect_attempts {
                        self.actions.push_back(Action::Release { reuse: false });
                        self.actions.push_back(Action::Connect {
                            fresh: true,
                            attempt: ex.connects,
                        });
                        ex.connect_started = now;
                        self.phase = Phase::Proxy(ex);
                    } else {
                        self.actions.push_back(Action::Release { reuse: false });
                        self.upstream_failed(now, &ex, 504, "upstream connect timeout");
                    }
                }
                _ if ex.response.is_some() => {
                    self.actions.push_back(Action::Release { reuse: false });
                    self.response_cut(now, &ex);
                }
                _ if !ex.request.is_done() => {
                    self.actions.push_back(Action::Release { reuse: false });
                    self.fail(now, 408, "request body not received in time");
                }
                _ if ex.canary.is_some() && !ex.response_bytes_seen => {
                    self.retry_canary(now, &mut ex, 504);
                    self.phase = Phase::Proxy(ex);
                }
                _ => {
                    self.actions.push_back(Action::Release { reuse: false });
                    self.upstream_failed(now, &ex, 504, "upstream response timeout");
                }
            },
        }
        self.advance(now);
    }

    /// The engine settings the connection runs under (its routes among
    /// them).
    pub fn engine(&self) -> &Arc<EngineConfig> {
        &self.cfg
    }

    /// The route of the request being answered (or the last one), an
    /// index into the engine's routes: the peer selector's input.
    pub fn route(&self) -> usize {
        self.route.unwrap_or(0)
    }

    /// Whether the request waits for another connection's fetch of the
    /// same key: [`Self::retry_wait`] once a fetch ended.
    pub fn is_waiting(&self) -> bool {
        matches!(self.phase, Phase::Wait { .. })
    }

    /// A fetch ended somewhere: a waiting request looks at the cache
    /// again (and waits on when its key's fetch still runs).
    pub fn retry_wait(&mut self, now: Instant) {
        if self.is_waiting() {
            self.send_clock(now);
            self.phase = Phase::Idle;
            self.advance(now);
        }
    }

    /// Stops taking new requests: the one in flight completes, then the
    /// connection closes.
    pub fn drain(&mut self, now: Instant) {
        self.send_clock(now);
        self.close(Closing::AfterResponse);
        if matches!(self.phase, Phase::Idle) && self.input.is_empty() {
            self.close(Closing::Finished);
        }
        self.advance(now);
    }

    /// The upstream connection asked for by [`Action::Connect`] is ready;
    /// `reused` when it came from the keep-alive pool.
    pub fn upstream_connected(&mut self, now: Instant, reused: bool) {
        if let Phase::Proxy(ex) = &mut self.phase {
            ex.upstream = UpstreamState::Connected;
            ex.reused = reused;
            ex.upstream_progress = now;
            if let Some(d) = &mut self.access {
                d.record.attempts += 1;
                d.record.connect_us =
                    Some(micros(now.saturating_duration_since(ex.connect_started)));
            }
        }
    }

    /// The peer selector chose a pool with its own connect and response
    /// timeouts for the exchange in flight (the fallback's keys).
    pub fn upstream_timeouts(&mut self, connect: Duration, response: Duration) {
        if let Phase::Proxy(ex) = &mut self.phase {
            ex.timeouts = Some((connect, response));
        }
    }

    /// The connect asked for by [`Action::Connect`] failed.
    pub fn upstream_connect_failed(&mut self, now: Instant) {
        self.send_clock(now);
        let Phase::Proxy(ex) = &mut self.phase else {
            return;
        };
        ex.connects += 1;
        ex.upstream = UpstreamState::Connecting;
        if let Some(d) = &mut self.access {
            d.record.attempts += 1;
        }
        if ex.connects < self.cfg.connect_attempts {
            ex.connect_started = now;
            self.actions.push_back(Action::Connect {
                fresh: true,
                attempt: ex.connects,
            });
            return;
        }
        if let Phase::Proxy(ex) = std::mem::replace(&mut self.phase, Phase::Idle) {
            ex_released(&mut self.actions, &ex);
            self.upstream_failed(now, &ex, 502, "upstream connect failed");
        }
        self.advance(now);
    }

    /// Feeds bytes received from the upstream connection.
    pub fn recv_upstream(&mut self, now: Instant, data: &[u8]) {
        self.send_clock(now);
        let Phase::Proxy(ex) = &mut self.phase else {
            return;
        };
        ex.upstream_progress = now;
        ex.response_bytes_seen = true;
        if let Some(d) = &mut self.access {
            d.first_byte.get_or_insert(now);
        }
        let result = if ex.response.is_some() {
            relay_body(ex, self.output.tail(), data)
        } else {
            ex.head_buf.extend_from_slice(data);
            self.response_head(now)
        };
        self.after_upstream(now, result);
    }

    /// The upstream closed the connection cleanly (a FIN).
    pub fn upstream_eof(&mut self, now: Instant) {
        self.upstream_closed(now, true);
    }

    /// The upstream connection failed (a reset, or a read or write error):
    /// like [`Self::upstream_eof`], except that a body delimited by the
    /// close is then known to be cut, so it is neither complete nor stored.
    pub fn upstream_reset(&mut self, now: Instant) {
        self.upstream_closed(now, false);
    }

    fn upstream_closed(&mut self, now: Instant, clean: bool) {
        self.send_clock(now);
        let Phase::Proxy(ex) = &mut self.phase else {
            return;
        };
        if ex.upstream != UpstreamState::Connected {
            return;
        }
        ex.upstream = UpstreamState::Released;
        self.actions.push_back(Action::Release { reuse: false });
        match &mut ex.response {
            None if !ex.response_bytes_seen
                && (ex.reused || ex.connects + 1 < self.cfg.connect_attempts)
                && ex.method.is_idempotent()
                && ex.replay.is_some() =>
            {
                // The keep-alive race (a pooled connection closed before it
                // saw the request), or an upstream that died holding it:
                // send it again on a fresh connection, the next server's
                // when it was a fresh one.
                if !ex.reused {
                    ex.connects += 1;
                }
                resend(ex, &mut self.upstream_output, &mut self.actions, now);
            }
            None => {
                if let Phase::Proxy(ex) = std::mem::replace(&mut self.phase, Phase::Idle) {
                    self.upstream_failed(
                        now,
                        &ex,
                        502,
                        "upstream closed the connection without a response",
                    );
                }
            }
            Some(body) if clean && body.reader.until_close() => {
                body.reader.closed();
                self.finish_exchange(now);
            }
            Some(_) => {
                if let Phase::Proxy(ex) = std::mem::replace(&mut self.phase, Phase::Idle) {
                    self.response_cut(now, &ex);
                }
            }
        }
        self.advance(now);
    }

    /// The admin service answered the call handed out by [`Action::Admin`].
    pub fn admin_response(&mut self, now: Instant, resp: AdminResponse) {
        self.send_clock(now);
        let Phase::Admin {
            head_only, close, ..
        } = self.phase
        else {
            return;
        };
        self.phase = Phase::Idle;
        let allow = resp
            .allow
            .map(|a| format!("Allow: {a}\r\n"))
            .unwrap_or_default();
        local::write_response(
            self.output.tail(),
            resp.status,
            resp.content_type,
            &resp.body,
            close,
            head_only,
            &allow,
        );
        self.complete(now, resp.status, CacheResult::None, false, false);
        self.end_of_response(now, close);
    }

    fn after_upstream(&mut self, now: Instant, result: Result<bool, &'static str>) {
        match result {
            Ok(true) => self.finish_exchange(now),
            Ok(false) => {}
            Err(msg) => {
                self.actions.push_back(Action::Release { reuse: false });
                if let Phase::Proxy(ex) = std::mem::replace(&mut self.phase, Phase::Idle) {
                    if ex.response.is_some() {
                        self.response_cut(now, &ex);
                    } else {
                        self.upstream_failed(now, &ex, 502, msg);
                    }
                }
            }
        }
        self.advance(now);
    }

    /// Parses the response head from `head_buf`; on success writes the
    /// client head and relays the bytes after it. `Ok(true)` when the whole
    /// response is complete.
    fn response_head(&mut self, now: Instant) -> Result<bool, &'static str> {
        // The exchange is lent out while the head is read; nothing below
        // looks at the phase.
        let Phase::Proxy(mut ex) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return Ok(false);
        };
        let result = self.read_response_head(now, &mut ex);
        self.phase = Phase::Proxy(ex);
        result
    }

    /// The response filter: interim responses, then the final head through
    /// the cache and to the client.
    fn read_response_head(
        &mut self,
        now: Instant,
        ex: &mut Exchange,
    ) -> Result<bool, &'static str> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let parsed = ResponseHead::parse(
                &ex.head_buf,
                &mut headers,
                self.cfg.max_response_head_bytes,
                ex.method == Method::Head,
            )
            .map_err(|_| "upstream sent an invalid response")?;
            let Some(head) = parsed else { return Ok(false) };
            if head.status == 101 {
                return Err("upstream switched protocols, which the gateway does not relay");
            }
            if head.status < 200 {
                // Interim responses (102, 103 Early Hints, ...) go to an
                // HTTP/1.1 client that gets this response, before the final
                // one; never stored, their fields never merged. A 100 is
                // consumed: the gateway answered `Expect` itself.
                let relay = ex.cache.as_ref().is_none_or(|f| f.relay);
                if relay && head.status != 100 && ex.client_version == Version::Http11 {
                    rewrite::interim_response(self.output.tail(), &head);
                }
                let n = head.head_len;
                ex.head_buf.advance(n);
                continue;
            }
            ex.head_at.get_or_insert(now);
            if ex.canary.is_some() && head.status >= 500 {
                self.retry_canary(now, ex, head.status);
                return Ok(false);
            }
            let framing = rewrite::client_framing(&head, ex.client_version);
            let close = ex.cache.as_ref().is_none_or(|f| f.relay)
                && (!ex.client_keep_alive
                    || self.closes()
                    || framing != ClientFraming::Relay
                    || !ex.request.is_done());
            if close {
                self.close(Closing::AfterResponse);
            }
            let connection = client_fields(&self.access, close, ex.client_version);
            if let Some(fetch) = &mut ex.cache {
                let to_client = (connection.as_slice(), ex.method == Method::Head);
                if let Some(outcome) = self.cache_response(now, fetch, &head, to_client) {
                    ex.outcome = Some(outcome);
                }
            }
            if ex.cache.as_ref().is_none_or(|f| f.relay) {
                let version = ex.client_version;
                let part = self.relay_head(ex.cache.as_deref(), version, &head, framing, close);
                ex.outcome = Some((head.status, part));
            }
            ex.response = Some(ResponseBody {
                reader: BodyReader::response(head.framing),
                framing,
                reusable: head.reusable,
            });
            let n = head.head_len;
            let rest = ex.head_buf.split_off(n);
            ex.head_buf.clear();
            return relay_body(ex, self.output.tail(), &rest);
        }
    }

    /// A canary failed with `status` (a 5xx it answered, or 504 for no
    /// head in time): the failure is booked against the server it went to
    /// (an attempt-only completion, not an answer), and the request goes
    /// again, to the fallback, on a fresh connection.
    fn retry_canary(&mut self, now: Instant, ex: &mut Exchange, status: u16) {
        let took = ex.upstream_took(now);
        self.completions.push_back(Completion {
            latency: now.saturating_duration_since(self.served_since),
            upstream_latency: took,
            client_slot: self.slots.0,
            url_slot: self.slots.1,
            canary: true,
            attempt_only: true,
            status,
            cache: CacheResult::None,
            upstream_error: status == 504,
            transport_error: false,
            proxied: true,
            probe: false,
            route: self.route.and_then(|r| u16::try_from(r).ok()),
            bytes_in: 0,
            bytes_out: 0,
            access: None,
        });
        self.actions.push_back(Action::Release { reuse: false });
        ex.canary = None;
        ex.connects += 1;
        resend(ex, &mut self.upstream_output, &mut self.actions, now);
    }

    /// The cache's part of a final response head: a 304 refreshes the
    /// stored response and a 5xx may be answered by it (stale-if-error),
    /// either way written to the client here (the outcome returned); else
    /// the response may be stored. `to_client` is the connection fields
    /// and whether the request was a HEAD.
    fn cache_response(
        &mut self,
        now: Instant,
        fetch: &mut CacheFetch,
        head: &ResponseHead<'_, '_>,
        to_client: (&[u8], bool),
    ) -> Option<(u16, CacheResult)> {
        let wall = self.cfg.wall(now);
        fetch.invalidate_after(head);
        let from_store = if head.status == 304 {
            fetch
                .stale
                .clone()
                .map(|stale| (fetch.refresh(&stale, head, now, wall), Served::Revalidated))
        } else if head.status >= 500 {
            fetch
                .stale_for_error(now)
                .cloned()
                .map(|stale| (stale, Served::StaleIfError))
        } else {
            None
        };
        if let Some((entry, served)) = from_store {
            let relay = std::mem::replace(&mut fetch.relay, false);
            if relay {
                let (connection, head_only) = to_client;
                entry.write_response(&mut self.output, now, served, connection, head_only);
                return Some((entry.meta.status, served.result()));
            }
            return None;
        }
        if head.status == 304 {
            // Nothing stored to refresh: relayed as it came.
            return None;
        }
        // Any status may be stored with explicit freshness, 5xx included
        // (RFC 9111 §3); the rules say which may.
        fetch.begin_store(head, now, wall);
        // The whole object, known to fit: the client's range is cut from
        // it once complete, so nothing is relayed now.
        if fetch.range_wanted
            && fetch.store.is_some()
            && head.status == 200
            && matches!(head.framing, Framing::Length(_))
        {
            fetch.answer_range = true;
            fetch.relay = false;
        }
        None
    }

    /// Writes the client's response head for an upstream head; returns the
    /// cache's part in the answer.
    fn relay_head(
        &mut self,
        fetch: Option<&CacheFetch>,
        version: Version,
        head: &ResponseHead<'_, '_>,
        framing: ClientFraming,
        close: bool,
    ) -> CacheResult {
        let verdict = fetch.map(|f| (f.fwd, f.store.is_some(), f.not_stored));
        let id = self.access.as_ref().map(|d| {
            let mut f = Fields::default();
            d.push_id(&mut f);
            f
        });
        let extra = id.as_ref().map_or(&[][..], Fields::as_slice);
        rewrite::client_response(
            self.output.tail(),
            head,
            framing,
            version,
            close,
            verdict,
            extra,
        );
        fetch.map_or(CacheResult::None, |f| f.fwd.result())
    }

    /// The response is complete: release the upstream and get ready for the
    /// next request.
    fn finish_exchange(&mut self, now: Instant) {
        let Phase::Proxy(ex) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return;
        };
        if ex.upstream == UpstreamState::Connected {
            // Reused only when the whole request went out: bytes still
            // queued would start the next request on that connection.
            let reuse = ex.response.as_ref().is_some_and(|r| r.reusable)
                && ex.request.is_done()
                && self.upstream_output.is_empty();
            self.actions.push_back(Action::Release { reuse });
        }
        let mut outcome = ex.outcome;
        let (took, canary) = (ex.upstream_took(now), ex.canary.is_some());
        if let Some(mut fetch) = ex.cache {
            if let Some(whole) = fetch.finish_store(now) {
                // The client asked for a range of what just arrived whole.
                if !ex.client_keep_alive {
                    self.close(Closing::AfterResponse);
                }
                let close = self.closes();
                let connection = client_fields(&self.access, close, ex.client_version);
                let connection = connection.as_slice();
                let ranges = fetch.with_request(|h| range::requested(h, &whole));
                let status = write_stored(
                    &mut self.output,
                    &whole,
                    ranges,
                    false,
                    now,
                    Served::Hit,
                    connection,
                );
                outcome = Some((status, CacheResult::Miss));
            }
        }
        if let Some((status, part)) = outcome {
            let proxied = !matches!(part, CacheResult::Hit | CacheResult::Stale);
            if proxied {
                self.upstream_took = took;
                self.canary_answer = canary;
            }
            self.complete(now, status, part, false, proxied);
        }
        let close = self.closes();
        self.end_of_response(now, close);
    }

    fn end_of_response(&mut self, now: Instant, close: bool) {
        self.idle_since = now;
        self.head_started = if self.input.is_empty() {
            None
        } else {
            Some(now)
        };
        if close || self.closes() || (self.client_eof && self.input.is_empty()) {
            self.close(Closing::Finished);
        }
    }

    /// The exchange ended after the response head arrived but before the
    /// body was whole (a timeout, a reset, garbage). A client that got
    /// that head can only be told by a close, never by a second response;
    /// the partial response is not stored (its fetch is dropped). When the
    /// client's answer came from the cache instead (a background refresh,
    /// a 304 or a stale answer), the connection goes on.
    fn response_cut(&mut self, now: Instant, ex: &Exchange) {
        if ex.cache.as_ref().is_some_and(|f| f.answer_range) {
            // Nothing went to the client yet: it gets an answer, then the
            // connection closes.
            local::write_error(
                self.output.tail(),
                502,
                "upstream response cut short",
                true,
                false,
                "",
            );
            self.complete(now, 502, CacheResult::Miss, true, true);
            self.close(Closing::Finished);
            return;
        }
        if ex.cache.as_ref().is_none_or(|f| f.relay) {
            self.close(Closing::Finished);
        } else {
            self.end_of_response(now, self.closes());
        }
    }

    /// Answers an upstream failure with `status`, if the client has not
    /// seen a response head yet.
    fn upstream_failed(&mut self, now: Instant, ex: &Exchange, status: u16, message: &str) {
        if ex.response.is_some() {
            return self.response_cut(now, ex);
        }
        let close = !ex.client_keep_alive || !ex.request.is_done() || self.closes();
        let head_only = ex.method == Method::Head;
        let answered = self.completions.len();
        self.upstream_took = ex.upstream_took(now);
        self.canary_answer = ex.canary.is_some();
        match &ex.cache {
            // A background refresh failed: the client has its answer.
            Some(fetch) if !fetch.relay => {}
            Some(fetch) if fetch.stale_for_error(now).is_some() => {
                if let Some(stale) = fetch.stale_for_error(now) {
                    let connection = client_fields(&self.access, close, ex.client_version);
                    let connection = connection.as_slice();
                    stale.write_response(
                        &mut self.output,
                        now,
                        Served::StaleIfError,
                        connection,
                        head_only,
                    );
                    let served = stale.meta.status;
                    self.complete(now, served, CacheResult::Stale, true, false);
                }
            }
            fetch => {
                // With a cache, every proxied answer says its part, errors too.
                let mut fields = BytesMut::new();
                if let Some(f) = fetch {
                    f.fwd
                        .write(&mut fields, None, false, Some("upstream-failed"));
                }
                let extra = std::str::from_utf8(&fields).unwrap_or("");
                local::write_error(self.output.tail(), status, message, close, head_only, extra);
                let part = fetch.as_ref().map_or(CacheResult::None, |f| f.fwd.result());
                self.complete(now, status, part, true, true);
            }
        }
        if self.completions.len() > answered {
            if let Some(done) = self.completions.back_mut() {
                done.transport_error = ex.upstream != UpstreamState::Connecting;
            }
        }
        self.end_of_response(now, close);
    }

    /// Answers an error and closes the connection.
    fn fail(&mut self, now: Instant, status: u16, message: &str) {
        self.phase = Phase::Idle;
        let head_only = self.head_request;
        local::write_error(self.output.tail(), status, message, true, head_only, "");
        self.complete(now, status, CacheResult::None, false, false);
        self.close(Closing::Finished);
    }

    fn abort_exchange(&mut self) {
        if let Phase::Proxy(ex) = std::mem::replace(&mut self.phase, Phase::Idle) {
            ex_released(&mut self.actions, &ex);
        }
        self.close(Closing::Finished);
    }

    /// Makes all the progress possible with the bytes at hand.
    fn advance(&mut self, now: Instant) {
        while !self.finished() {
            match &mut self.phase {
                Phase::Wait { .. } => return,
                Phase::Idle => {
                    if self.input.is_empty() {
                        return;
                    }
                    // A client that pipelines without reading gets no more
                    // answers queued than the bound: the rest waits.
                    if self.output.len() >= self.cfg.max_client_queue {
                        self.held_back = true;
                        return;
                    }
                    if !self.start_request(now) {
                        return;
                    }
                }
                Phase::Proxy(ex) => {
                    if ex.request.is_done() || self.upstream_output.len() >= MAX_UPSTREAM_QUEUE {
                        return;
                    }
                    let max = self.cfg.limits.max_body_bytes;
                    let queued = self.upstream_output.len();
                    match ex
                        .request
                        .forward(&self.input, max, &mut self.upstream_output, |_| {})
                    {
                        Ok(0) => return,
                        Ok(n) => {
                            let chunk = &self.upstream_output[queued..];
                            if let Some(replay) = &mut ex.replay {
                                if replay.len() + chunk.len() <= MAX_REPLAY_BYTES {
                                    replay.extend_from_slice(chunk);
                                } else {
                                    ex.replay = None;
                                }
                            }
                            self.input.advance(n);
                        }
                        Err(e) => {
                            let started = ex.response.is_some();
                            self.actions.push_back(Action::Release { reuse: false });
                            if started {
                                self.phase = Phase::Idle;
                                self.close(Closing::Finished);
                            } else {
                                self.fail(now, e.status(), &e.to_string());
                            }
                        }
                    }
                }
                Phase::Admin {
                    req, body, reader, ..
                } => {
                    if req.is_none() {
                        return;
                    }
                    match reader.read(&self.input, MAX_ADMIN_BODY, |d| body.extend_from_slice(d)) {
                        Ok(n) => self.input.advance(n),
                        Err(e) => return self.fail(now, e.status(), &e.to_string()),
                    }
                    if !reader.is_done() {
                        return;
                    }
                    if let Some(mut req) = req.take() {
                        req.body = std::mem::take(body).freeze();
                        self.actions.push_back(Action::Admin(*req));
                    }
                    return;
                }
            }
        }
    }

    /// Parses the next request head and takes it through the phases:
    /// request filter, probe or admin call, cache lookup, upstream request.
    /// Returns false when the connection cannot go on now (more bytes
    /// needed, a wait, or an error answered).
    fn start_request(&mut self, now: Instant) -> bool {
        // Known before the head parses: an error answer to a HEAD (even a
        // malformed one) carries no body, or the client misreads the stream.
        self.head_request = self.input.starts_with(b"HEAD ");
        // The input is lent out while its head is borrowed: the phases
        // below never read it.
        let input = std::mem::take(&mut self.input);
        let mut paths = std::mem::take(&mut self.paths);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let next = match RequestHead::parse(&input, &mut headers, &self.cfg.limits) {
            Ok(Some(head)) => match path::normalize(head.target, &self.cfg.paths, &mut paths) {
                // From here on the request is its normalised form alone.
                Ok(target) => {
                    let head = RequestHead { target, ..head };
                    self.route_request(now, &head, &input[..head.head_len])
                }
                Err(e) => {
                    self.fail(now, 400, &e.to_string());
                    Next::Stop
                }
            },
            Ok(None) => Next::Stop,
            Err(e) => {
                self.fail(now, e.status(), &e.to_string());
                Next::Stop
            }
        };
        self.input = input;
        self.paths = paths;
        match next {
            Next::Stop => false,
            Next::Started { head_len } => {
                self.input.advance(head_len);
                true
            }
            Next::Answered {
                head_len,
                framing,
                close,
            } => self.answered_locally(now, head_len, framing, close),
        }
    }

    /// The phases of a parsed request, up to the upstream request.
    fn route_request(&mut self, now: Instant, head: &RequestHead<'_, '_>, raw: &[u8]) -> Next {
        self.req_started = self.head_started.unwrap_or(now);
        self.served_since = now;
        self.upstream_took = None;
        self.canary_answer = false;
        self.route = None;
        let close = !head.keep_alive() || self.closes();
        let path = head.target.split('?').next().unwrap_or("");
        self.slots.1 = crate::stats::blame_slot(path.as_bytes());

        #[cfg(feature = "test-hooks")]
        if self.cfg.test_hooks && path == TEST_PANIC_PATH {
            panic!("test hook: a request that panics");
        }
        if matches!(path, "/health/live" | "/health/ready")
            && matches!(head.method, Method::Get | Method::Head)
        {
            return self.answer_probe(now, head, path, close);
        }
        if self.served.as_ref().is_some_and(|s| !s.covers(head.host)) {
            let msg =
                "Misdirected Request: the Host is not a name of this connection's certificate";
            return self.refuse(now, head, (421, msg), "", close);
        }
        if path == "/admin" || path.starts_with("/admin/") {
            return self.start_admin(now, head, close);
        }
        self.open_access(now, head);
        let found = self.cfg.routes.find(head.host, path, head.method_name);
        let route = match found {
            RouteMatch::Route(route) => route,
            RouteMatch::MethodNotAllowed(allow) => {
                let msg = "the route does not take this method";
                let allow = format!("Allow: {allow}\r\n");
                return self.refuse(now, head, (405, msg), &allow, close);
            }
            RouteMatch::None => {
                let msg = "no route takes this request (host, path and method)";
                return self.refuse(now, head, (404, msg), "", close);
            }
        };
        self.route = Some(route);
        if let (Some(d), Some(r)) = (self.access.as_mut(), self.cfg.routes.get(route)) {
            d.record.route = Some(r.name.clone());
        }
        let cached = self.cfg.routes.get(route).is_none_or(|r| r.cache);
        let lookup = if cached {
            self.lookup(now, head, raw, close)
        } else {
            Lookup::Forward(None)
        };
        let fetch = match lookup {
            Lookup::Forward(fetch) => fetch,
            Lookup::Answered => {
                return Next::Answered {
                    head_len: head.head_len,
                    framing: head.framing,
                    close,
                }
            }
            Lookup::Stop => return Next::Stop,
        };
        self.coalesce_until = None;
        self.forward(now, head, fetch, close);
        Next::Started {
            head_len: head.head_len,
        }
    }

    /// Answers a request no route takes (404) or whose route refuses its
    /// method (405, `extra` carrying `Allow`).
    fn refuse(
        &mut self,
        now: Instant,
        head: &RequestHead<'_, '_>,
        (status, msg): (u16, &str),
        extra: &str,
        close: bool,
    ) -> Next {
        let head_only = head.method == Method::Head;
        local::write_error(self.output.tail(), status, msg, close, head_only, extra);
        self.complete(now, status, CacheResult::None, false, false);
        Next::Answered {
            head_len: head.head_len,
            framing: head.framing,
            close,
        }
    }

    /// `/health/live` and `/health/ready`, answered on the data port.
    fn answer_probe(
        &mut self,
        now: Instant,
        head: &RequestHead<'_, '_>,
        path: &str,
        close: bool,
    ) -> Next {
        let resp = match path {
            "/health/live" => local::probe::LIVE,
            _ if self.status.is_ready() => local::probe::READY,
            _ => local::probe::NOT_READY,
        };
        let resp = if head.method == Method::Head {
            &resp[..local::probe::head_len(resp)]
        } else {
            resp
        };
        let status = if resp.starts_with(b"HTTP/1.1 200") {
            200
        } else {
            503
        };
        self.output.tail().put_slice(resp);
        let mut probe = self.completion(now, status, CacheResult::None, false, false);
        probe.probe = true;
        self.completions.push_back(probe);
        Next::Answered {
            head_len: head.head_len,
            framing: head.framing,
            close,
        }
    }

    /// An `/admin/*` call on the data port: loopback peers only; its body
    /// is read, then it goes to the control plane as an action.
    fn start_admin(&mut self, now: Instant, head: &RequestHead<'_, '_>, close: bool) -> Next {
        if !self.local_admin {
            self.fail(
                now,
                403,
                "admin endpoints on the data port answer loopback peers only",
            );
            return Next::Stop;
        }
        if matches!(head.framing, Framing::Length(n) if n > MAX_ADMIN_BODY) {
            self.fail(now, 413, "admin request body too large");
            return Next::Stop;
        }
        let req = AdminRequest {
            method: head.method.as_str(),
            target: head.target.to_owned(),
            peer: self.peer,
            authorization: rules::field(head.headers, "authorization").map(Bytes::copy_from_slice),
            host: (!head.host.is_empty()).then(|| Bytes::copy_from_slice(head.host)),
            from_browser: crate::admin::from_browser(
                rules::field(head.headers, "origin"),
                rules::field(head.headers, "sec-fetch-site"),
            ),
            simple_body: crate::admin::simple_body(
                rules::field(head.headers, "content-type"),
                rules::field(head.headers, "x-ultragate-admin"),
            ),
            body: Bytes::new(),
        };
        let reader = BodyReader::request(head.framing);
        if head.expect_continue && !reader.is_done() {
            local::write_continue(self.output.tail());
        }
        if close {
            self.close(Closing::AfterResponse);
        }
        self.phase = Phase::Admin {
            started: now,
            req: Some(Box::new(req)),
            body: BytesMut::new(),
            reader,
            head_only: head.method == Method::Head,
            close,
        };
        Next::Started {
            head_len: head.head_len,
        }
    }

    /// Starts the access-log record when the log wants this request.
    fn open_access(&mut self, now: Instant, head: &RequestHead<'_, '_>) {
        let wanted = |log: &Arc<AccessLog>| log.wanted() || self.status.log_requests();
        if self.access.is_none() && self.cfg.access.as_ref().is_some_and(wanted) {
            let wall = self.cfg.wall(self.req_started);
            self.access = Some(AccessDraft::new(head, self.req_started, now, wall));
        }
    }

    /// The cache lookup: answers from the store, waits for another
    /// connection's fetch, or says what the upstream request carries for
    /// the cache.
    fn lookup(
        &mut self,
        now: Instant,
        head: &RequestHead<'_, '_>,
        raw: &[u8],
        close: bool,
    ) -> Lookup {
        let may_wait = self.coalesce_until.is_none_or(|t| now < t);
        let wait = self.cfg.coalesce_wait;
        let Some(cache) = &self.cache else {
            return Lookup::Forward(None);
        };
        let (decision, facts) = cached::decide(
            cache,
            &mut self.key_buf,
            (self.scheme, head),
            now,
            wait,
            may_wait,
        );
        if let Some(d) = &mut self.access {
            d.cache_done = Some(now);
        }
        let connection = client_fields(&self.access, close, head.version);
        let connection = connection.as_slice();
        let mut range_wanted = false;
        let (stale, claimed, fwd) = match decision {
            Decision::Hit(e) => {
                // A hit after waiting for another connection's fetch was
                // collapsed into it.
                let collapsed = self.coalesce_until.is_some();
                let served = if collapsed {
                    Served::Collapsed
                } else {
                    Served::Hit
                };
                self.serve_stored(now, head, &e, served, connection);
                return Lookup::Answered;
            }
            Decision::NotModified(e) => {
                e.write_not_modified(self.output.tail(), now, connection);
                self.complete(now, 304, CacheResult::Hit, false, false);
                return Lookup::Answered;
            }
            Decision::ConnectionNamesVary => {
                self.fail(now, 400, "Connection names a field the response varies on");
                return Lookup::Stop;
            }
            Decision::Wait(waiting) => {
                let until = *self.coalesce_until.get_or_insert(now + wait);
                self.phase = Phase::Wait {
                    until,
                    _waiting: waiting,
                };
                return Lookup::Stop;
            }
            Decision::Stale { entry, refresh } => {
                let served = Served::StaleWhileRevalidate;
                self.serve_stored(now, head, &entry, served, connection);
                if refresh {
                    self.actions.push_back(Action::Refresh {
                        request: refresh_request(head),
                        key: Bytes::copy_from_slice(&self.key_buf[..facts.url_len]),
                    });
                }
                return Lookup::Answered;
            }
            Decision::Revalidate(e, why) => (Some(e), false, why),
            Decision::Miss {
                claimed,
                uncacheable,
            } => {
                // A range of an object that may be stored: fetch it whole.
                range_wanted = head.method == Method::Get
                    && !uncacheable
                    && rules::field(head.headers, "range").is_some();
                (None, claimed, Forwarded::UriMiss)
            }
            Decision::Bypass(why) => (None, false, why),
        };
        let mut fetch = self.fetch(now, head.method, raw, facts);
        if let Some(f) = &mut fetch {
            f.claimed = claimed;
            f.stale = stale;
            f.fwd = fwd;
            f.range_wanted = range_wanted;
        }
        Lookup::Forward(fetch)
    }

    /// What an exchange for the request with head `raw` carries for the
    /// cache (the key in `key_buf`), with the route's TTL.
    fn fetch(
        &self,
        now: Instant,
        method: Method,
        raw: &[u8],
        facts: cached::RequestFacts,
    ) -> Option<Box<CacheFetch>> {
        let cache = self.cache.clone()?;
        let url = &self.key_buf[..facts.url_len];
        let mut fetch = CacheFetch::new(cache, url, raw, method, facts, self.cfg.wall(now));
        fetch.ttl_override = self
            .route
            .and_then(|r| self.cfg.routes.get(r))
            .and_then(|r| r.cache_ttl.clone());
        Some(Box::new(fetch))
    }

    /// Answers from a stored entry: a hit, or a stale one
    /// (stale-while-revalidate).
    fn serve_stored(
        &mut self,
        now: Instant,
        head: &RequestHead<'_, '_>,
        entry: &Entry,
        served: Served,
        connection: &[u8],
    ) {
        let status = write_stored(
            &mut self.output,
            entry,
            ranges_of(head, entry),
            head.method == Method::Head,
            now,
            served,
            connection,
        );
        self.complete(now, status, served.result(), false, false);
    }

    /// The upstream request: rewritten head queued, the exchange started,
    /// a connect asked for.
    fn forward(
        &mut self,
        now: Instant,
        head: &RequestHead<'_, '_>,
        fetch: Option<Box<CacheFetch>>,
        close: bool,
    ) {
        self.upstream_output.clear();
        let validators = fetch
            .as_ref()
            .and_then(|f| f.stale.as_ref())
            .map(|e| &e.meta);
        let whole = fetch.as_ref().is_some_and(|f| f.range_wanted);
        let fields = self.access.as_ref().map(AccessDraft::upstream_fields);
        let (extra, replaced) = fields
            .as_ref()
            .map_or((&[][..], &[][..]), |(f, r)| (f.as_slice(), *r));
        let client = rewrite::ClientSide {
            peer: self.peer,
            scheme: self.scheme,
            trusted: self.trusted,
            rules: &self.cfg.forwarding,
        };
        rewrite::upstream_request(
            &mut self.upstream_output,
            head,
            &client,
            &self.cfg.default_host,
            validators,
            whole,
            (extra, replaced),
        );
        let request = BodyReader::request(head.framing);
        if head.expect_continue && !request.is_done() {
            local::write_continue(self.output.tail());
        }
        let replay =
            (self.upstream_output.len() <= MAX_REPLAY_BYTES).then(|| self.upstream_output.clone());
        if close {
            self.close(Closing::AfterResponse);
        }
        self.phase = Phase::Proxy(Box::new(Exchange {
            method: head.method,
            client_version: head.version,
            client_keep_alive: !close,
            request,
            replay,
            upstream: UpstreamState::Connecting,
            reused: false,
            connects: 0,
            connect_started: now,
            timeouts: None,
            upstream_progress: now,
            client_progress: now,
            head_buf: BytesMut::new(),
            response_bytes_seen: false,
            response: None,
            cache: fetch,
            outcome: None,
            sent_at: None,
            head_at: None,
            canary: None,
        }));
        self.actions.push_back(Action::Connect {
            fresh: false,
            attempt: 0,
        });
    }

    /// The request was answered without the upstream: consume its head and
    /// any body, then go on with the next one.
    fn answered_locally(
        &mut self,
        now: Instant,
        head_len: usize,
        framing: Framing,
        close: bool,
    ) -> bool {
        self.input.advance(head_len);
        self.coalesce_until = None;
        self.skip_local_body(now, framing, close)
    }

    /// A locally answered request may still carry a body: skip it before
    /// the next request, or close when it is not all here.
    fn skip_local_body(&mut self, now: Instant, framing: Framing, close: bool) -> bool {
        let mut reader = BodyReader::request(framing);
        match reader.read(&self.input, self.cfg.limits.max_body_bytes, |_| {}) {
            Ok(n) => self.input.advance(n),
            Err(_) => {
                self.close(Closing::Finished);
                return false;
            }
        }
        let close = close || !reader.is_done();
        self.end_of_response(now, close);
        !self.finished()
    }
}

/// Answers a request from a stored response: `ranges` when a GET asked
/// for some (RFC 9110 §14), else the whole response (or its head). Returns
/// the status sent.
fn write_stored(
    output: &mut Output,
    e: &Entry,
    ranges: Option<Ranges>,
    head_only: bool,
    now: Instant,
    served: Served,
    connection: &[u8],
) -> u16 {
    match ranges {
        Some(ranges) => {
            e.write_ranges(output, now, served, connection, ranges);
            match ranges {
                Ranges::Parts(..) => 206,
                _ => 416,
            }
        }
        None => {
            e.write_response(output, now, served, connection, head_only);
            e.meta.status
        }
    }
}

/// The ranges a request asks of a stored response, if it is a GET that
/// asks for some.
fn ranges_of(head: &RequestHead<'_, '_>, e: &Entry) -> Option<Ranges> {
    (head.method == Method::Get)
        .then(|| range::requested(head.headers, e))
        .flatten()
}

/// Queues the release of the exchange's upstream connection, if any.
fn ex_released(actions: &mut VecDeque<Action>, ex: &Exchange) {
    if ex.upstream != UpstreamState::Released {
        actions.push_back(Action::Release { reuse: false });
    }
}

/// The request of a background refresh: a bodiless GET of the client's
/// target and host with the client's fields (a varied response is stored
/// under the same variant), minus what would make it partial, give it a
/// body, make it conditional on the client's validators or tie it to the
/// client's connection (the fields its `Connection` named included), plus `Cache-Control: max-age=0` so the cache
/// revalidates instead of serving.
fn refresh_request(head: &RequestHead<'_, '_>) -> Bytes {
    const DROPPED: [&str; 12] = [
        "content-length",
        "transfer-encoding",
        "cache-control",
        "pragma",
        "range",
        "if-range",
        "if-none-match",
        "if-modified-since",
        "connection",
        "keep-alive",
        "expect",
        "te",
    ];
    let mut out = BytesMut::with_capacity(head.head_len + 32);
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    out.extend_from_slice(b"Host: ");
    out.extend_from_slice(head.host);
    out.extend_from_slice(b"\r\n");
    for h in head.headers {
        // Fields the client's `Connection` named were for the gateway.
        if DROPPED.iter().any(|d| h.name.eq_ignore_ascii_case(d))
            || head.connection.is_hop_by_hop(h.name)
            || h.name.eq_ignore_ascii_case("host")
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Cache-Control: max-age=0\r\nConnection: close\r\n\r\n");
    out.freeze()
}

/// Relays response body bytes to the client. `Ok(true)` when the body is
/// complete.
fn relay_body(ex: &mut Exchange, out: &mut BytesMut, data: &[u8]) -> Result<bool, &'static str> {
    let Exchange {
        response: Some(body),
        cache,
        ..
    } = ex
    else {
        return Ok(false);
    };
    let relay = cache.as_ref().is_none_or(|f| f.relay);
    let mut store = |d: &[u8]| {
        if let Some(f) = cache.as_mut() {
            f.store_body(d);
        }
    };
    // A chunked body goes to the client as it came unless it is dechunked
    // for an HTTP/1.0 client; anything else is its payload either way.
    let used = if relay && body.framing != ClientFraming::Dechunk {
        body.reader.forward(data, u64::MAX, out, store)
    } else {
        body.reader.read(data, u64::MAX, |d| {
            if relay {
                out.extend_from_slice(d);
            }
            store(d);
        })
    }
    .map_err(|_| "upstream sent an invalid chunked body")?;
    if used < data.len() {
        // Bytes after the end of the response: the connection is not clean.
        body.reusable = false;
    }
    Ok(body.reader.is_done())
}

/// The connection field of a response: `close`, or `keep-alive` for an
/// HTTP/1.0 client that keeps the connection.
/// The slot of a client address in the statistics' blame counts.
fn client_slot(peer: IpAddr) -> u8 {
    match peer {
        IpAddr::V4(a) => crate::stats::blame_slot(&a.octets()),
        IpAddr::V6(a) => crate::stats::blame_slot(&a.octets()),
    }
}

fn connection_field(close: bool, version: Version) -> &'static [u8] {
    match (close, version) {
        (true, _) => b"Connection: close\r\n",
        (false, Version::Http10) => b"Connection: keep-alive\r\n",
        (false, Version::Http11) => b"",
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cache_tests;
#[cfg(test)]
mod hardening_tests;
#[cfg(test)]
mod meaning_tests;
#[cfg(test)]
mod testkit;
