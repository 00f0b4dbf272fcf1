//! The per-core layer: everything a data core decides, once for every
//! driver.
//!
//! An [`Endpoint`] owns one core's client connections (each a sans-IO
//! [`Conn`]), their timers, the upstream connections and their pools, the
//! peer selector (route → pool → server, retries, divert to the fallback),
//! drain, the panic boundary and the per-core statistics. A driver
//! (io_uring, epoll, DPDK) only moves bytes: it reports what happened on
//! its transport with [`Endpoint::handle`], carries out what
//! [`Endpoint::poll_command`] asks for, and calls [`Endpoint::handle`] with
//! [`Event::Timer`] at [`Endpoint::poll_timeout`]. Nothing in here reads a
//! clock, opens a socket or starts a thread, so the simulation test drives
//! it with an in-memory transport and a virtual clock.
//!
//! Handles ([`ClientId`], [`UpstreamId`]) stay valid until the driver
//! reports the socket gone ([`Event::ClientClosed`],
//! [`Event::UpstreamClosed`]), so a driver may index its own socket tables
//! by [`ClientId::index`] and close a socket only once its operations in
//! flight have ended.

#![forbid(unsafe_code)]

mod background;
mod completions;
mod drain;
mod panic;
mod peers;
mod slab;
mod timers;
mod transport;
mod upstreams;

use crate::access::AccessLog;
use crate::admin::{AdminRequest, AdminResponse};
use crate::cache::{url_parts, Bell, Cache, Scheme};
use crate::live::Live;
use crate::proxy::{Action, Conn, ConnEvent};
use crate::stats::{Completion, CoreStats};
use crate::status::DataplaneStatus;
use crate::tls::sni::ServedNames;
use crate::tls::{ClientSession, Failure, TlsServer, TlsSession};
use crate::upstream::pool::Checkout;
use bytes::Bytes;
use completions::record;
pub use drain::DRAIN_GRACE;
use peers::{Target, Upstreams, Wanted};
use slab::Slab;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use transport::Tls;
use upstreams::{UpState, Upstream};

/// Most connections over a limit one core holds at once while their `503`
/// is written (each for at most the send or TLS handshake timeout); past
/// it, a connection over the limit is closed unanswered.
pub const REFUSING_MAX: usize = 64;

/// How long a gracefully closed client connection may take to finish its
/// close (the peer's FIN) before the driver is told to reset it: a kernel
/// driver reports the socket gone at once, a user-space stack (DPDK) when
/// the peer has answered.
pub const CLOSE_LINGER: Duration = Duration::from_secs(10);

/// A client connection of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId {
    idx: u32,
    gen: u32,
}

impl ClientId {
    /// A small index, unique among the endpoint's client connections
    /// until [`Event::ClientClosed`]: for the driver's own tables.
    pub fn index(self) -> usize {
        self.idx as usize
    }
}

/// An upstream connection of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpstreamId {
    idx: u32,
    gen: u32,
}

impl UpstreamId {
    /// A small index, unique among the endpoint's upstream connections
    /// until [`Event::UpstreamClosed`]: for the driver's own tables.
    pub fn index(self) -> usize {
        self.idx as usize
    }
}

/// What happened on the transport, as a driver reports it.
#[derive(Debug)]
pub enum Event<'a> {
    /// Bytes arrived from the client.
    ClientBytes(ClientId, &'a [u8]),
    /// The client closed its sending side.
    ClientEof(ClientId),
    /// `n` bytes of the client's output were written.
    ClientWritten(ClientId, usize),
    /// The client's socket failed (reset, broken pipe): it is gone.
    ClientError(ClientId),
    /// The client's socket is closed and no operation on it is in flight
    /// (after [`Command::CloseClient`]); its handle is free.
    ClientClosed(ClientId),
    /// A [`Command::Connect`] succeeded.
    Connected(UpstreamId),
    /// A [`Command::Connect`] failed.
    ConnectFailed(UpstreamId),
    /// Bytes arrived from an upstream.
    UpstreamBytes(UpstreamId, &'a [u8]),
    /// `n` bytes of [`Endpoint::upstream_output`] were written.
    UpstreamWritten(UpstreamId, usize),
    /// All of what [`Endpoint::take_upstream_output`] took was written.
    UpstreamSent(UpstreamId),
    /// The upstream closed its sending side.
    UpstreamEof(UpstreamId),
    /// The upstream socket failed.
    UpstreamError(UpstreamId),
    /// The upstream socket is closed and no operation on it is in flight
    /// (after [`Command::CloseUpstream`]); its handle is free.
    UpstreamClosed(UpstreamId),
    /// The answer to a [`Command::Admin`].
    AdminAnswer(ClientId, AdminResponse),
    /// The time [`Endpoint::poll_timeout`] named has come (early calls are
    /// harmless).
    Timer,
    /// Stop taking new requests: answer what is in flight, then close;
    /// whatever is still open after the drain timeout is reset.
    Drain,
}

/// What the driver must do, in the order given.
#[derive(Debug)]
pub enum Command {
    /// What the client connection wants may have changed: read
    /// [`Endpoint::client_interest`] and arm reads and writes to match.
    Client(ClientId),
    /// The same for an upstream connection
    /// ([`Endpoint::upstream_interest`]).
    Upstream(UpstreamId),
    /// Open a connection to `addr`; report [`Event::Connected`] or
    /// [`Event::ConnectFailed`].
    Connect {
        /// The connection's handle.
        up: UpstreamId,
        /// The server.
        addr: SocketAddr,
    },
    /// Call the admin service; report [`Event::AdminAnswer`].
    Admin {
        /// Whose call it is.
        client: ClientId,
        /// The call (boxed: it is rare, and commands stay small).
        request: Box<AdminRequest>,
    },
    /// Close the client connection — with a reset (unsent bytes dropped)
    /// when `reset`, else after a FIN — then report
    /// [`Event::ClientClosed`] once no operation on it is in flight.
    CloseClient {
        /// The connection.
        client: ClientId,
        /// Reset instead of a clean close.
        reset: bool,
    },
    /// Close the upstream connection, then report
    /// [`Event::UpstreamClosed`] once no operation on it is in flight.
    CloseUpstream(UpstreamId),
}

/// What a connection wants from the transport now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Interest {
    /// Read from it.
    pub read: bool,
    /// Write to it (bytes are queued).
    pub write: bool,
}

/// The limits and intervals of one core.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The core's id in the statistics.
    pub core: usize,
    /// Most client connections at once; [`Endpoint::accept`] refuses more.
    pub max_connections: usize,
    /// Most client connections from one address at once; more are
    /// refused too.
    pub max_connections_per_client: usize,
    /// How long in-flight requests may take to finish after a drain.
    pub drain_timeout: Duration,
    /// How often the core's statistics go to the control plane.
    pub stats_interval: Duration,
    /// Whether loopback peers may call `/admin/*` on the data port (not on
    /// a DPDK port, whose peers are never local).
    pub local_admin: bool,
}

/// What the endpoint shares with the rest of the process.
#[derive(Clone)]
pub struct Parts {
    /// Readiness, route and backend.
    pub status: Arc<DataplaneStatus>,
    /// The response cache, when enabled.
    pub cache: Option<Arc<Cache>>,
    /// The engine settings and upstream pools a reload replaces.
    pub live: Arc<Live>,
    /// Where access-log records go.
    pub access: Arc<AccessLog>,
    /// Where the core's statistics go every interval.
    pub stats: mpsc::Sender<CoreStats>,
    /// The TLS listener's certificates and settings, when `[tls]` is on.
    pub tls: Option<Arc<TlsServer>>,
}

/// Test builds: an upstream TLS response carrying this panics in the
/// endpoint's upstream TLS path (outside the engine), for the test that
/// the core's panic boundary holds there too.
#[cfg(feature = "test-hooks")]
pub const TEST_UPSTREAM_TLS_PANIC: &[u8] = b"/__ultragate_test/upstream-tls-panic";

/// One client connection.
struct Client {
    conn: Conn,
    peer: SocketAddr,
    /// The upstream connection attached or being connected.
    up: Option<UpstreamId>,
    /// The server of the latest exchange, to credit its answer to.
    last_target: Option<Target>,
    /// The earliest timer queued for it.
    timer_at: Option<Instant>,
    /// A [`Command::Client`] for it is queued.
    queued: bool,
    /// A [`Command::CloseClient`] was given: no more events reach it.
    closed: bool,
    /// A background refresh (no socket: its answer goes into the cache
    /// only) holding the fetch claim on this key.
    background: Option<Bytes>,
    /// In the endpoint's list of requests waiting for a fetch.
    listed: bool,
    /// Over a connection limit: answered `503` and closed.
    refused: bool,
    /// Closed gracefully: when it is reset if the driver has not reported
    /// the socket gone by then.
    linger_at: Option<Instant>,
    /// TLS between the socket and the engine (the TLS listener).
    tls: Option<Box<Tls>>,
}

impl Client {
    fn new(conn: Conn, peer: SocketAddr, background: Option<Bytes>) -> Self {
        Self {
            tls: None,
            conn,
            peer,
            up: None,
            last_target: None,
            timer_at: None,
            queued: false,
            closed: false,
            background,
            listed: false,
            refused: false,
            linger_at: None,
        }
    }
}

/// One data core's connections, pools, timers and statistics; see the
/// module documentation.
pub struct Endpoint {
    cfg: EndpointConfig,
    parts: Parts,
    clients: Slab<Client>,
    ups: Slab<Upstream>,
    peers: Upstreams<UpstreamId>,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    commands: VecDeque<Command>,
    stats: CoreStats,
    next_stats: Instant,
    /// Open client connections by peer address (none kept at zero), not
    /// counting those answered `503`.
    per_client: std::collections::HashMap<std::net::IpAddr, usize>,
    /// Connections over a limit whose `503` is being written.
    refusing: usize,
    /// Set by [`Event::Drain`]: when whatever is still open is reset.
    drain_deadline: Option<Instant>,
    /// The drain deadline passed and reset what was open.
    drain_reset: bool,
    /// Reused list of handles for sweeps.
    scratch: Vec<(u32, u32)>,
    /// Background refreshes running.
    background: usize,
    /// Rung by the cache when a fetch ends while requests wait.
    bell: Option<Arc<Bell>>,
    /// Clients whose request waits for another connection's fetch.
    waiting: Vec<ClientId>,
    /// The time of the latest event.
    last_now: Instant,
    /// Plaintext gathered into one TLS record.
    seal_buf: Vec<u8>,
    /// Plaintext decrypted from an upstream's TLS records.
    plain_buf: Vec<u8>,
}

impl Endpoint {
    /// A core's endpoint, started at `now`.
    pub fn new(cfg: EndpointConfig, parts: Parts, now: Instant) -> Self {
        Self {
            peers: Upstreams::new(&parts.live),
            stats: CoreStats::for_core(cfg.core),
            next_stats: now + cfg.stats_interval,
            per_client: std::collections::HashMap::new(),
            refusing: 0,
            clients: Slab::default(),
            ups: Slab::default(),
            timers: BinaryHeap::new(),
            commands: VecDeque::new(),
            drain_deadline: None,
            drain_reset: false,
            scratch: Vec::new(),
            background: 0,
            bell: parts.cache.as_ref().map(|c| c.bell()),
            waiting: Vec::new(),
            last_now: now,
            seal_buf: Vec::new(),
            plain_buf: Vec::new(),
            cfg,
            parts,
        }
    }

    /// What wakes the driver from another thread when the core's bell
    /// rings (a fetch ended while requests wait): then [`Self::poll_timeout`]
    /// is due at once.
    pub fn on_wake(&self, wake: Box<dyn Fn() + Send + Sync>) {
        if let Some(bell) = &self.bell {
            bell.on_ring(wake);
        }
    }

    /// A new client connection from `peer`. Over the core's or the
    /// client's connection limit it is still taken, to be answered `503`
    /// with `Retry-After` through the normal write path (so TLS and DPDK
    /// answer it too) and closed; `None` only when [`REFUSING_MAX`] such
    /// answers are already being written: the driver closes the socket.
    pub fn accept(&mut self, now: Instant, peer: SocketAddr) -> Option<ClientId> {
        self.open(now, peer, None)
    }

    /// How many more sockets the core takes now, counting those it would
    /// answer `503`: for a driver that must keep its own listening
    /// sockets (DPDK) within what [`Self::accept`] takes.
    pub fn room(&self) -> usize {
        (self.cfg.max_connections + REFUSING_MAX).saturating_sub(self.clients.len())
    }

    fn open(&mut self, now: Instant, peer: SocketAddr, tls: Option<Box<Tls>>) -> Option<ClientId> {
        let served = self.clients.len() - self.refusing;
        let from_peer = self.per_client.get(&peer.ip()).copied().unwrap_or(0);
        let over = if served >= self.cfg.max_connections {
            Some(0)
        } else if from_peer >= self.cfg.max_connections_per_client {
            Some(1)
        } else {
            None
        };
        if let Some(limit) = over {
            self.stats.refused[limit] += 1;
            if self.refusing >= REFUSING_MAX {
                return None;
            }
        } else {
            *self.per_client.entry(peer.ip()).or_insert(0) += 1;
        }
        self.peers.refresh(&self.parts.live);
        let mut conn = Conn::new(
            self.peers.engine().clone(),
            self.parts.status.clone(),
            self.parts.cache.clone(),
            peer.ip(),
            now,
        );
        if !self.cfg.local_admin {
            conn = conn.without_local_admin();
        }
        if tls.is_some() {
            conn = conn.came_by(Scheme::Https);
        }
        let mut client = Client::new(conn, peer, None);
        client.tls = tls;
        client.refused = over.is_some();
        self.refusing += usize::from(client.refused);
        let (idx, gen) = self.clients.insert(client);
        let id = ClientId { idx, gen };
        let draining = self.drain_deadline.is_some();
        self.on_client(id, now, |conn| {
            if over.is_some() {
                conn.refuse_connection();
            } else if draining {
                conn.handle(now, ConnEvent::Drain);
            }
        });
        Some(id)
    }

    /// Takes what happened on the transport at `now`, inside the core's
    /// panic boundary: whatever runs for one connection (its engine, its
    /// TLS session, its upstream's) a panic closes that connection only,
    /// logged with the peer and counted; the core goes on.
    pub fn handle(&mut self, now: Instant, event: Event<'_>) {
        self.last_now = now;
        let (client, upstream) = self.owner(&event);
        self.contained(client, upstream, None, |ep| ep.dispatch(now, event));
    }

    /// The core's one panic boundary, around all per-connection work: runs
    /// `f`; if it panics, the panic is logged with the peer and counted,
    /// and the connection it was for is reset (the client, else the
    /// upstream; `peer` names a connection not yet in the table). Nested
    /// uses contain a panic at the innermost, which knows its connection
    /// best (a timer runs many clients' work).
    fn contained<R>(
        &mut self,
        client: Option<ClientId>,
        upstream: Option<UpstreamId>,
        peer: Option<SocketAddr>,
        f: impl FnOnce(&mut Self) -> R,
    ) -> Option<R> {
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(r) => Some(r),
            Err(payload) => {
                let known = client.and_then(|id| self.clients.get(id.idx, id.gen).map(|c| c.peer));
                panic::contained_panic(&self.parts.status, known.or(peer), &*payload);
                match (client, upstream) {
                    (Some(id), _) => self.close_client(id, true),
                    (None, Some(u)) => self.close_upstream(u),
                    (None, None) => {}
                }
                None
            }
        }
    }

    /// The client connection an event is for (an upstream's: the client it
    /// serves), and the upstream connection when it is one's.
    fn owner(&self, event: &Event<'_>) -> (Option<ClientId>, Option<UpstreamId>) {
        let up = match event {
            Event::ClientBytes(id, _)
            | Event::ClientEof(id)
            | Event::ClientWritten(id, _)
            | Event::ClientError(id)
            | Event::ClientClosed(id)
            | Event::AdminAnswer(id, _) => return (Some(*id), None),
            Event::Connected(u)
            | Event::ConnectFailed(u)
            | Event::UpstreamBytes(u, _)
            | Event::UpstreamWritten(u, _)
            | Event::UpstreamSent(u)
            | Event::UpstreamEof(u)
            | Event::UpstreamError(u)
            | Event::UpstreamClosed(u) => *u,
            Event::Timer | Event::Drain => return (None, None),
        };
        let client = match self.up_state(up) {
            Some(UpState::Connecting(id) | UpState::Handshaking(id) | UpState::Attached(id)) => {
                Some(id)
            }
            _ => None,
        };
        (client, Some(up))
    }

    fn dispatch(&mut self, now: Instant, event: Event<'_>) {
        match event {
            Event::ClientBytes(id, data) => self.client_bytes(id, now, data),
            Event::ClientEof(id) => {
                if self.tls_handshaking(id) {
                    self.stats.tls.failure(Failure::Closed);
                }
                self.on_client(id, now, |c| c.handle(now, ConnEvent::ClientEof))
            }
            Event::ClientWritten(id, n) => self.client_written(id, now, n),
            Event::ClientError(id) => self.close_client(id, false),
            Event::ClientClosed(id) => {
                if let Some(c) = self.clients.remove(id.idx, id.gen) {
                    let ip = c.peer.ip();
                    if c.refused {
                        self.refusing -= 1;
                    } else if let Some(n) = self.per_client.get_mut(&ip) {
                        *n -= 1;
                        if *n == 0 {
                            self.per_client.remove(&ip);
                        }
                    }
                    if let Some(u) = c.up {
                        self.close_upstream(u);
                    }
                }
            }
            Event::Connected(u) => self.connected(now, u),
            Event::ConnectFailed(u) => self.connect_failed(now, u),
            Event::UpstreamBytes(u, data) => self.upstream_bytes(u, now, data),
            Event::UpstreamWritten(u, n) => self.upstream_written(u, now, n),
            Event::UpstreamSent(u) => self.upstream_sent(u, now),
            Event::UpstreamEof(u) if matches!(self.up_state(u), Some(UpState::Handshaking(_))) => {
                self.connect_failed(now, u)
            }
            Event::UpstreamEof(u) => {
                self.on_upstream(u, now, |c| c.handle(now, ConnEvent::UpstreamEof))
            }
            Event::UpstreamError(u) => match self.up_state(u) {
                Some(UpState::Connecting(_) | UpState::Handshaking(_)) => {
                    self.connect_failed(now, u)
                }
                _ => self.on_upstream(u, now, |c| c.handle(now, ConnEvent::UpstreamReset)),
            },
            Event::UpstreamClosed(u) => {
                self.ups.remove(u.idx, u.gen);
            }
            Event::AdminAnswer(id, resp) => {
                self.on_client(id, now, |c| c.handle(now, ConnEvent::Admin(resp)))
            }
            Event::Timer => self.on_timer(now),
            Event::Drain => self.drain(now),
        }
    }

    /// The next thing the driver must do.
    pub fn poll_command(&mut self) -> Option<Command> {
        let cmd = self.commands.pop_front()?;
        match &cmd {
            Command::Client(id) => {
                if let Some(c) = self.clients.get_mut(id.idx, id.gen) {
                    c.queued = false;
                }
            }
            Command::Upstream(u) => {
                if let Some(up) = self.ups.get_mut(u.idx, u.gen) {
                    up.queued = false;
                }
            }
            _ => {}
        }
        Some(cmd)
    }

    /// When [`Event::Timer`] is due next.
    pub fn poll_timeout(&self) -> Instant {
        if self.bell.as_ref().is_some_and(|b| b.is_rung()) {
            return self.last_now;
        }
        let mut at = self.next_stats;
        if let Some(Reverse((t, _, _))) = self.timers.peek() {
            at = at.min(*t);
        }
        if let Some(d) = self.drain_timer() {
            at = at.min(d);
        }
        at
    }

    /// How many client connections are open (closing ones included).
    pub fn open_connections(&self) -> usize {
        self.clients.len()
    }

    /// What the client connection wants from the transport now.
    pub fn client_interest(&self, id: ClientId) -> Interest {
        match self.clients.get(id.idx, id.gen) {
            Some(c) if c.closed || c.background.is_some() => Interest::default(),
            Some(Client {
                tls: Some(t), conn, ..
            }) => Interest {
                read: !t.closing && (t.session.is_handshaking() || conn.wants_client_bytes()),
                write: t.session.pending() > 0,
            },
            Some(c) => Interest {
                read: c.conn.wants_client_bytes(),
                write: c.conn.client_pending() > 0,
            },
            None => Interest::default(),
        }
    }

    /// The client's queued output as slices for a vectored write; returns
    /// how many of `dst` it filled.
    pub fn client_slices<'a>(&'a self, id: ClientId, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        match self.clients.get(id.idx, id.gen) {
            Some(c) if c.closed => 0,
            Some(Client { tls: Some(t), .. }) => t.session.slices(dst),
            Some(c) => c.conn.client_slices(dst),
            None => 0,
        }
    }

    /// Keeps the client's queued output at its addresses until written,
    /// for a kernel that reads it after the call returns (io_uring). The
    /// bytes live until [`Event::ClientClosed`] at the latest.
    pub fn pin_client_output(&mut self, id: ClientId) {
        match self.clients.get_mut(id.idx, id.gen) {
            Some(Client { tls: Some(t), .. }) => t.session.pin(),
            Some(c) => c.conn.pin_client_output(),
            None => {}
        }
    }

    /// Runs `f` on client `id`'s engine, then carries out what the engine
    /// asks for, inside a panic boundary: a panic closes that connection
    /// only (reset), is logged with the peer and counted, and the core goes
    /// on with every other connection.
    fn on_client(&mut self, id: ClientId, now: Instant, f: impl FnOnce(&mut Conn)) {
        match self.clients.get_mut(id.idx, id.gen) {
            Some(c) if !c.closed => {}
            _ => return,
        }
        self.contained(Some(id), None, None, |ep| {
            if let Some(c) = ep.clients.get_mut(id.idx, id.gen) {
                f(&mut c.conn);
            }
            ep.settle(id, now);
        });
    }

    /// Carries out the engine's actions for client `id`, books its answered
    /// requests, queues its timer and tells the driver what it wants.
    fn settle(&mut self, id: ClientId, now: Instant) {
        if let Some(c) = self.clients.get_mut(id.idx, id.gen) {
            c.conn.handle(now, ConnEvent::Resume);
        }
        while let Some(action) = self
            .clients
            .get_mut(id.idx, id.gen)
            .and_then(|c| c.conn.poll_action())
        {
            match action {
                Action::Connect { fresh, attempt } => self.checkout(id, now, fresh, attempt),
                Action::Release { reuse } => self.release(id, now, reuse),
                Action::Admin(request) => self.commands.push_back(Command::Admin {
                    client: id,
                    request: Box::new(request),
                }),
                Action::Refresh { request, key } => {
                    let peer = self.clients.get(id.idx, id.gen).map(|c| c.peer.ip());
                    self.start_refresh(now, &request, key, peer)
                }
            }
        }
        // One look decides whether TLS has work here (a plain client with
        // a plain upstream, the hot path, pays for nothing more).
        let (tls, up) = match self.clients.get(id.idx, id.gen) {
            Some(c) => (c.tls.is_some(), c.up),
            None => return,
        };
        if tls && self.seal(id, now) {
            return;
        }
        if up.is_some_and(|u| self.up_tls(u)) && self.seal_upstream(id, now) {
            return self.settle(id, now);
        }
        let Self {
            clients,
            peers,
            stats,
            parts,
            timers,
            commands,
            waiting,
            ..
        } = self;
        let Some(c) = clients.get_mut(id.idx, id.gen) else {
            return;
        };
        if c.background.is_some() {
            return self.settle_background(id, now);
        }
        while let Some(done) = c.conn.poll_completion() {
            record(parts, stats, peers, done, c.last_target, c.peer, now);
        }
        if c.conn.is_aborted() {
            return self.close_client(id, true);
        }
        if c.conn.is_finished() && c.tls.is_none() {
            return self.close_client(id, false);
        }
        let tls_deadline = c.tls.as_ref().and_then(|t| t.deadline);
        let timeout = match (c.conn.timeout(), tls_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(t) = timeout {
            if c.timer_at.is_none_or(|at| t < at) {
                c.timer_at = Some(t);
                timers.push(Reverse((t, id.idx, id.gen)));
            }
        }
        if c.conn.is_waiting() && !c.listed {
            c.listed = true;
            waiting.push(id);
        }
        if !c.queued {
            c.queued = true;
            commands.push_back(Command::Client(id));
        }
        if let Some(u) = c.up {
            self.touch_upstream(u);
        }
    }

    fn close_client(&mut self, id: ClientId, reset: bool) {
        let Some(c) = self.clients.get_mut(id.idx, id.gen) else {
            return;
        };
        if c.background.is_some() {
            return self.end_background(id);
        }
        if c.closed {
            return;
        }
        c.closed = true;
        if !reset {
            // A peer that never finishes the close is reset at the linger
            // limit, on every driver that has not reported it gone.
            let at = self.last_now + CLOSE_LINGER;
            c.linger_at = Some(at);
            self.timers.push(Reverse((at, id.idx, id.gen)));
        }
        let up = c.up.take();
        self.commands
            .push_back(Command::CloseClient { client: id, reset });
        if let Some(u) = up {
            self.close_upstream(u);
        }
    }
}

#[cfg(test)]
mod sim;

#[cfg(test)]
mod tests;
