//! The proxy engine: one [`Conn`] per client connection, driven by bytes.
//!
//! The caller feeds what arrives from the client ([`Conn::recv_client`])
//! and from the upstream ([`Conn::recv_upstream`]), writes out what the
//! engine queued ([`Conn::client_output`], [`Conn::upstream_output`]),
//! carries out its [`Action`]s, and calls [`Conn::handle_timeout`] at
//! [`Conn::timeout`]. The engine never touches a socket or a clock.
//!
//! An exchange goes through the phases of a proxy, each in its own file
//! (Pingora's `ProxyHttp` names them the same way):
//!
//! - `request_filter`: route, refuse, answer a probe or an admin call;
//! - `cache_lookup`: answer from the store, wait for another fetch of
//!   the key, or go upstream;
//! - `upstream`: connect, send, retry, take the server's bytes;
//! - `response_filter`: read the head, store, rewrite, relay, end or fail;
//! - `logging`: the completion and the access-log record.
//!
//! This file holds the connection's state, the public surface the
//! per-core layer calls, and `Conn::advance`, which moves the input on
//! to the next request; `timers` holds its deadlines.

#![forbid(unsafe_code)]

mod body;
mod cache_lookup;
mod cached;
mod config;
pub mod forward;
pub mod local;
mod logging;
mod request_filter;
mod response_filter;
mod timers;
mod upstream;

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
use cache_lookup::{write_stored, Lookup};
use cached::{CacheFetch, Decision};
pub use config::EngineConfig;
use forward::ForwardRules;
use logging::{client_slot, micros, AccessDraft, Answer, Fields, Traffic};
use response_filter::{client_fields, relay_body};
use rewrite::ClientFraming;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use upstream::ex_released;

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

/// What happened to a connection, as [`Conn::handle`] takes it: the one
/// input the engine has besides the output it is asked for and its timer.
#[derive(Debug)]
pub enum ConnEvent<'a> {
    /// Bytes arrived from the client.
    ClientBytes(&'a [u8]),
    /// The client closed its sending side.
    ClientEof,
    /// This many bytes of [`Conn::client_output`] were written.
    ClientWritten(usize),
    /// The client read: requests held back for its output may go on.
    Resume,
    /// The upstream connection asked for by [`Action::Connect`] is ready;
    /// `reused` when it came from the pool.
    UpstreamConnected {
        /// It came from the pool.
        reused: bool,
    },
    /// That connect failed.
    UpstreamConnectFailed,
    /// Bytes arrived from the upstream.
    UpstreamBytes(&'a [u8]),
    /// This many bytes of [`Conn::upstream_output`] were written.
    UpstreamWritten(usize),
    /// All of [`Conn::take_upstream_output`] was sent (a TLS upstream).
    UpstreamSent,
    /// The upstream closed its sending side.
    UpstreamEof,
    /// The upstream connection was reset or failed.
    UpstreamReset,
    /// The control plane answered [`Action::Admin`].
    Admin(AdminResponse),
    /// [`Conn::timeout`] has passed.
    Timeout,
    /// Another connection's fetch ended: a request waiting for it looks
    /// at the cache again.
    FetchEnded,
    /// The process drains: finish the request in flight, then close.
    Drain,
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

    /// Takes what happened at `now`.
    pub fn handle(&mut self, now: Instant, event: ConnEvent<'_>) {
        match event {
            ConnEvent::ClientBytes(data) => self.recv_client(now, data),
            ConnEvent::ClientEof => self.client_eof(now),
            ConnEvent::ClientWritten(n) => self.client_written(n, now),
            ConnEvent::Resume => self.resume(now),
            ConnEvent::UpstreamConnected { reused } => self.upstream_connected(now, reused),
            ConnEvent::UpstreamConnectFailed => self.upstream_connect_failed(now),
            ConnEvent::UpstreamBytes(data) => self.recv_upstream(now, data),
            ConnEvent::UpstreamWritten(n) => self.upstream_written(n, now),
            ConnEvent::UpstreamSent => self.upstream_sent(now),
            ConnEvent::UpstreamEof => self.upstream_eof(now),
            ConnEvent::UpstreamReset => self.upstream_reset(now),
            ConnEvent::Admin(resp) => self.admin_response(now, resp),
            ConnEvent::Timeout => self.handle_timeout(now),
            ConnEvent::FetchEnded => self.retry_wait(now),
            ConnEvent::Drain => self.drain(now),
        }
    }

    /// Feeds bytes received from the client.
    pub(super) fn recv_client(&mut self, now: Instant, data: &[u8]) {
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
    pub(super) fn client_eof(&mut self, now: Instant) {
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
    pub(super) fn resume(&mut self, now: Instant) {
        if self.held_back && self.output.len() < self.cfg.max_client_queue {
            self.held_back = false;
            self.advance(now);
        }
    }

    /// `n` queued client bytes were written at `now`.
    pub(super) fn client_written(&mut self, n: usize, now: Instant) {
        self.traffic.written += n as u64;
        self.output.advance(n);
        if n > 0 {
            self.send_since = now;
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

    /// Stops taking new requests: the one in flight completes, then the
    /// connection closes.
    pub(super) fn drain(&mut self, now: Instant) {
        self.send_clock(now);
        self.close(Closing::AfterResponse);
        if matches!(self.phase, Phase::Idle) && self.input.is_empty() {
            self.close(Closing::Finished);
        }
        self.advance(now);
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
