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

mod panic;
mod peers;
mod slab;

use crate::access::AccessLog;
use crate::admin::{AdminRequest, AdminResponse};
use crate::cache::{url_parts, Bell, Cache, Scheme};
use crate::live::Live;
use crate::proxy::{Action, Conn};
use crate::stats::{Completion, CoreStats};
use crate::status::DataplaneStatus;
use crate::tls::sni::ServedNames;
use crate::tls::{ClientSession, Failure, TlsServer, TlsSession};
use crate::upstream::pool::Checkout;
use bytes::Bytes;
use peers::{Target, Upstreams, Wanted};
use slab::Slab;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

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

/// Most background refreshes one core runs at once.
const MAX_BACKGROUND: usize = 64;

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

/// Most encrypted bytes a TLS connection queues before the engine's
/// output waits (so the engine's send timeout still sees a slow reader).
const TLS_QUEUE: usize = 64 * 1024;

/// Most plaintext sealed into one TLS record.
const TLS_RECORD: usize = 16 * 1024;

/// Test builds: an upstream TLS response carrying this panics in the
/// endpoint's upstream TLS path (outside the engine), for the test that
/// the core's panic boundary holds there too.
#[cfg(feature = "test-hooks")]
pub const TEST_UPSTREAM_TLS_PANIC: &[u8] = b"/__ultragate_test/upstream-tls-panic";

/// The answer to a plain HTTP request sent to the TLS port, in plain text.
const PLAIN_TO_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 51\r\nConnection: close\r\n\r\nThis port speaks HTTPS: send the request over TLS.\n";

/// A client connection's TLS layer.
struct Tls {
    session: TlsSession,
    /// The handshake's deadline, then (once closing) the last write's.
    deadline: Option<Instant>,
    /// The connection failed or ended: what is queued is written, then it
    /// closes.
    closing: bool,
}

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
        }
    }
}

/// Where an upstream connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpState {
    /// Connecting for a client.
    Connecting(ClientId),
    /// Connected, the TLS handshake with the server going on.
    Handshaking(ClientId),
    /// Serving a client's exchange.
    Attached(ClientId),
    /// In the pool since then; read, so a close or stray bytes retire it.
    Idle(Instant),
    /// Closing: waits for [`Event::UpstreamClosed`].
    Closed,
}

/// One upstream connection.
struct Upstream {
    target: Target,
    state: UpState,
    /// A [`Command::Upstream`] for it is queued.
    queued: bool,
    /// TLS to the server, for a pool with `tls = true`.
    tls: Option<Box<ClientSession>>,
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
    /// Open client connections by peer address (none kept at zero).
    per_client: std::collections::HashMap<std::net::IpAddr, usize>,
    /// Set by [`Event::Drain`]: when whatever is still open is reset.
    drain_deadline: Option<Instant>,
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
            clients: Slab::default(),
            ups: Slab::default(),
            timers: BinaryHeap::new(),
            commands: VecDeque::new(),
            drain_deadline: None,
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

    /// A new client connection from `peer`; `None` when the core is at its
    /// connection limit (the driver answers `503` and closes).
    pub fn accept(&mut self, now: Instant, peer: SocketAddr) -> Option<ClientId> {
        self.open(now, peer, None)
    }

    /// A new client connection from `peer` on the TLS listener: the same as
    /// [`Self::accept`], with a TLS session in front of the engine. `None`
    /// also when no TLS listener is configured.
    pub fn accept_tls(&mut self, now: Instant, peer: SocketAddr) -> Option<ClientId> {
        let server = self.parts.tls.as_ref()?;
        // The session's set-up is per-connection work too: a panic there
        // refuses this connection only.
        let session = match catch_unwind(AssertUnwindSafe(|| server.session())) {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot start a TLS session");
                return None;
            }
            Err(payload) => {
                panic::contained_panic(&self.parts.status, Some(peer), &*payload);
                return None;
            }
        };
        let tls = Tls {
            session,
            deadline: Some(now + server.handshake_timeout()),
            closing: false,
        };
        self.open(now, peer, Some(Box::new(tls)))
    }

    fn open(&mut self, now: Instant, peer: SocketAddr, tls: Option<Box<Tls>>) -> Option<ClientId> {
        if self.clients.len() >= self.cfg.max_connections {
            self.stats.refused[0] += 1;
            return None;
        }
        let from_peer = self.per_client.entry(peer.ip()).or_insert(0);
        if *from_peer >= self.cfg.max_connections_per_client {
            self.stats.refused[1] += 1;
            return None;
        }
        *from_peer += 1;
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
        let (idx, gen) = self.clients.insert(client);
        let id = ClientId { idx, gen };
        let draining = self.drain_deadline.is_some();
        self.on_client(id, now, |conn| {
            if draining {
                conn.drain(now);
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
        let owner = self.owner(&event);
        let run = catch_unwind(AssertUnwindSafe(|| self.dispatch(now, event)));
        if let Err(payload) = run {
            let (client, upstream) = owner;
            let peer = client.and_then(|id| self.clients.get(id.idx, id.gen).map(|c| c.peer));
            panic::contained_panic(&self.parts.status, peer, &*payload);
            match (client, upstream) {
                (Some(id), _) => self.close_client(id, true),
                (None, Some(u)) => self.close_upstream(u),
                (None, None) => {}
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
            Event::ClientBytes(id, data) if self.is_tls(id) => self.tls_bytes(id, now, data),
            Event::ClientBytes(id, data) => self.on_client(id, now, |c| c.recv_client(now, data)),
            Event::ClientEof(id) => {
                if self.tls_handshaking(id) {
                    self.stats.tls.failure(Failure::Closed);
                }
                self.on_client(id, now, |c| c.client_eof(now))
            }
            Event::ClientWritten(id, n) if self.is_tls(id) => {
                if let Some(t) = self
                    .clients
                    .get_mut(id.idx, id.gen)
                    .and_then(|c| c.tls.as_mut())
                {
                    t.session.written(n);
                }
                self.on_client(id, now, |_| {})
            }
            Event::ClientWritten(id, n) => self.on_client(id, now, |c| c.client_written(n, now)),
            Event::ClientError(id) => self.close_client(id, false),
            Event::ClientClosed(id) => {
                if let Some(c) = self.clients.remove(id.idx, id.gen) {
                    let ip = c.peer.ip();
                    if let Some(n) = self.per_client.get_mut(&ip) {
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
            Event::UpstreamBytes(u, data) if self.up_tls(u) => {
                self.upstream_tls_bytes(now, u, data)
            }
            Event::UpstreamBytes(u, data) => {
                self.on_upstream(u, now, |c| c.recv_upstream(now, data))
            }
            Event::UpstreamWritten(u, n) if self.up_tls(u) => {
                if let Some(t) = self
                    .ups
                    .get_mut(u.idx, u.gen)
                    .and_then(|up| up.tls.as_mut())
                {
                    t.written(n);
                }
                self.touch_upstream(u);
            }
            Event::UpstreamWritten(u, n) => {
                self.on_upstream(u, now, |c| c.upstream_written(n, now))
            }
            // The engine was told when its bytes went into TLS records.
            Event::UpstreamSent(u) if self.up_tls(u) => self.touch_upstream(u),
            Event::UpstreamSent(u) => self.on_upstream(u, now, |c| c.upstream_sent(now)),
            Event::UpstreamEof(u) if matches!(self.up_state(u), Some(UpState::Handshaking(_))) => {
                self.connect_failed(now, u)
            }
            Event::UpstreamEof(u) => self.on_upstream(u, now, |c| c.upstream_eof(now)),
            Event::UpstreamError(u) => match self.up_state(u) {
                Some(UpState::Connecting(_) | UpState::Handshaking(_)) => {
                    self.connect_failed(now, u)
                }
                _ => self.on_upstream(u, now, |c| c.upstream_reset(now)),
            },
            Event::UpstreamClosed(u) => {
                self.ups.remove(u.idx, u.gen);
            }
            Event::AdminAnswer(id, resp) => {
                self.on_client(id, now, |c| c.admin_response(now, resp))
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
        if let Some(d) = self.drain_deadline {
            at = at.min(d);
        }
        at
    }

    /// Whether a drain has ended: every client connection is closed.
    pub fn is_drained(&self) -> bool {
        self.drain_deadline.is_some() && self.clients.len() == 0
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

    /// What the upstream connection wants from the transport now: an idle
    /// pooled connection is read, so its close (or stray bytes, which
    /// make it unusable) retires it at once.
    pub fn upstream_interest(&self, u: UpstreamId) -> Interest {
        let Some(up) = self.ups.get(u.idx, u.gen) else {
            return Interest::default();
        };
        let tls_pending = up.tls.as_ref().map(|t| t.pending() > 0);
        match up.state {
            UpState::Idle(_) => Interest {
                read: true,
                write: false,
            },
            UpState::Handshaking(_) => Interest {
                read: true,
                write: tls_pending == Some(true),
            },
            UpState::Attached(id) => match self.clients.get(id.idx, id.gen) {
                Some(c) if !c.closed => Interest {
                    read: c.conn.wants_upstream_bytes(),
                    write: tls_pending.unwrap_or_else(|| {
                        c.conn.upstream_attached() && !c.conn.upstream_output().is_empty()
                    }),
                },
                _ => Interest::default(),
            },
            _ => Interest::default(),
        }
    }

    /// The bytes queued for the upstream connection.
    pub fn upstream_output(&self, u: UpstreamId) -> &[u8] {
        let Some(up) = self.ups.get(u.idx, u.gen) else {
            return &[];
        };
        if let Some(t) = &up.tls {
            return t.first();
        }
        let UpState::Attached(id) = up.state else {
            return &[];
        };
        match self.clients.get(id.idx, id.gen) {
            Some(c) if !c.closed && c.conn.upstream_attached() => c.conn.upstream_output(),
            _ => &[],
        }
    }

    /// Takes the bytes queued for the upstream connection, for a kernel
    /// that reads them after the call returns (io_uring); report
    /// [`Event::UpstreamSent`] once all are written.
    pub fn take_upstream_output(&mut self, u: UpstreamId) -> Bytes {
        let Some(up) = self.ups.get_mut(u.idx, u.gen) else {
            return Bytes::new();
        };
        if let Some(t) = &mut up.tls {
            return t.take_first();
        }
        let UpState::Attached(id) = up.state else {
            return Bytes::new();
        };
        match self.clients.get_mut(id.idx, id.gen) {
            Some(c) if !c.closed && c.conn.upstream_attached() => c.conn.take_upstream_output(),
            _ => Bytes::new(),
        }
    }

    /// Hands the core's numbers to the control plane now (at the end of a
    /// driver's run; otherwise every stats interval).
    pub fn hand_over(&mut self) {
        #[cfg(feature = "test-hooks")]
        self.parts.status.stall_if_asked(self.stats.core);
        self.stats.open_connections = self.clients.len() as u64;
        let _ = self.parts.stats.send(self.stats.take());
    }

    fn up_state(&self, u: UpstreamId) -> Option<UpState> {
        self.ups.get(u.idx, u.gen).map(|up| up.state)
    }

    /// Runs an event on upstream `u`'s client; an idle pooled connection
    /// that reports anything (bytes, a close, an error) is retired.
    fn on_upstream(&mut self, u: UpstreamId, now: Instant, f: impl FnOnce(&mut Conn)) {
        match self.up_state(u) {
            Some(UpState::Attached(id)) => self.on_client(id, now, f),
            Some(UpState::Idle(_)) => self.close_upstream(u),
            _ => {}
        }
    }

    fn connected(&mut self, now: Instant, u: UpstreamId) {
        let Some(up) = self.ups.get(u.idx, u.gen) else {
            return;
        };
        let UpState::Connecting(id) = up.state else {
            return;
        };
        let Some(tls) = self.peers.tls(up.target) else {
            return self.attach(now, u, id);
        };
        match ClientSession::client(tls.config.clone(), tls.server_name.clone()) {
            Ok(session) => {
                if let Some(up) = self.ups.get_mut(u.idx, u.gen) {
                    up.tls = Some(Box::new(session));
                    up.state = UpState::Handshaking(id);
                }
                self.touch_upstream(u);
            }
            Err(_) => self.connect_failed(now, u),
        }
    }

    /// Whether upstream `u` speaks TLS.
    fn up_tls(&self, u: UpstreamId) -> bool {
        self.ups
            .get(u.idx, u.gen)
            .is_some_and(|up| up.tls.is_some())
    }

    /// TLS bytes from upstream `u`: its handshake, or records whose
    /// plaintext goes to the attached client's engine. A failed handshake
    /// is a failed connect (another server is tried); a failure after it,
    /// an upstream reset.
    fn upstream_tls_bytes(&mut self, now: Instant, u: UpstreamId, data: &[u8]) {
        let mut plain = std::mem::take(&mut self.plain_buf);
        plain.clear();
        let Some(up) = self.ups.get_mut(u.idx, u.gen) else {
            return;
        };
        let (state, Some(session)) = (up.state, up.tls.as_mut()) else {
            return;
        };
        let got = session.recv(data, &mut |p| plain.extend_from_slice(p));
        #[cfg(feature = "test-hooks")]
        if self.peers.engine().test_hooks
            && plain
                .windows(TEST_UPSTREAM_TLS_PANIC.len())
                .any(|w| w == TEST_UPSTREAM_TLS_PANIC)
        {
            panic!("test hook: a panic in the upstream TLS path");
        }
        match (state, got) {
            (UpState::Handshaking(id), Ok(Some(_))) => {
                self.attach(now, u, id);
                if !plain.is_empty() {
                    self.on_client(id, now, |c| c.recv_upstream(now, &plain));
                }
            }
            (UpState::Handshaking(_), Ok(None)) => self.touch_upstream(u),
            (UpState::Handshaking(_), Err(_)) => self.connect_failed(now, u),
            (UpState::Attached(id), Ok(_)) if !plain.is_empty() => {
                self.on_client(id, now, |c| c.recv_upstream(now, &plain))
            }
            (UpState::Attached(_), Ok(_)) => self.touch_upstream(u),
            (UpState::Attached(id), Err(_)) => self.on_client(id, now, |c| c.upstream_reset(now)),
            // A session ticket while pooled keeps it; anything else
            // retires it.
            (UpState::Idle(_), Ok(_)) if plain.is_empty() => self.touch_upstream(u),
            (UpState::Idle(_), _) => self.close_upstream(u),
            _ => {}
        }
        self.plain_buf = plain;
    }

    /// For client `id` with a TLS upstream attached: encrypts what its
    /// engine queued for the server. Returns whether it failed (the engine
    /// was told of an upstream reset).
    fn seal_upstream(&mut self, id: ClientId, now: Instant) -> bool {
        let Some(c) = self.clients.get_mut(id.idx, id.gen) else {
            return false;
        };
        let Some(u) = c.up else {
            return false;
        };
        let Some(up) = self.ups.get_mut(u.idx, u.gen) else {
            return false;
        };
        let (UpState::Attached(_), Some(session)) = (up.state, up.tls.as_mut()) else {
            return false;
        };
        let out = c.conn.take_upstream_output();
        if out.is_empty() {
            return false;
        }
        match session.encrypt(&out) {
            Ok(true) => {
                c.conn.upstream_sent(now);
                false
            }
            _ => {
                c.conn.upstream_reset(now);
                true
            }
        }
    }

    /// Hands the connected (and, with TLS, handshaken) upstream `u` to
    /// client `id`'s engine.
    fn attach(&mut self, now: Instant, u: UpstreamId, id: ClientId) {
        let Some(up) = self.ups.get_mut(u.idx, u.gen) else {
            return;
        };
        up.state = UpState::Attached(id);
        let target = up.target;
        self.peers.connected(target);
        if let Some(c) = self.clients.get_mut(id.idx, id.gen) {
            c.last_target = Some(target);
        }
        self.on_client(id, now, |c| c.upstream_connected(now, false));
    }

    fn connect_failed(&mut self, now: Instant, u: UpstreamId) {
        let (Some(UpState::Connecting(id)) | Some(UpState::Handshaking(id))) = self.up_state(u)
        else {
            return;
        };
        if let Some(up) = self.ups.get(u.idx, u.gen) {
            self.peers.connect_failed(up.target);
        }
        self.close_upstream(u);
        if let Some(c) = self.clients.get_mut(id.idx, id.gen) {
            if c.up == Some(u) {
                c.up = None;
            }
        }
        self.on_client(id, now, |c| c.upstream_connect_failed(now));
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
        let run = catch_unwind(AssertUnwindSafe(|| {
            if let Some(c) = self.clients.get_mut(id.idx, id.gen) {
                f(&mut c.conn);
            }
            self.settle(id, now);
        }));
        if let Err(payload) = run {
            let peer = self.clients.get(id.idx, id.gen).map(|c| c.peer);
            panic::contained_panic(&self.parts.status, peer, &*payload);
            self.close_client(id, true);
        }
    }

    /// Carries out the engine's actions for client `id`, books its answered
    /// requests, queues its timer and tells the driver what it wants.
    fn settle(&mut self, id: ClientId, now: Instant) {
        if let Some(c) = self.clients.get_mut(id.idx, id.gen) {
            c.conn.resume(now);
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

    /// Whether client `id` came through the TLS listener.
    fn is_tls(&self, id: ClientId) -> bool {
        self.clients
            .get(id.idx, id.gen)
            .is_some_and(|c| c.tls.is_some())
    }

    /// Whether client `id`'s TLS handshake is still going on.
    fn tls_handshaking(&self, id: ClientId) -> bool {
        self.clients
            .get(id.idx, id.gen)
            .and_then(|c| c.tls.as_ref())
            .is_some_and(|t| t.session.is_handshaking())
    }

    /// TLS bytes from client `id`: decrypted into its engine (inside the
    /// panic boundary); a failed handshake is counted by reason and closes
    /// the connection once what is queued (an HTTP `400` for a plain
    /// request) is written.
    fn tls_bytes(&mut self, id: ClientId, now: Instant, data: &[u8]) {
        let Self {
            clients,
            stats,
            parts,
            ..
        } = self;
        let Some(c) = clients.get_mut(id.idx, id.gen).filter(|c| !c.closed) else {
            return;
        };
        let Client {
            tls: Some(t), conn, ..
        } = c
        else {
            return;
        };
        if t.closing {
            return;
        }
        let run = catch_unwind(AssertUnwindSafe(|| {
            t.session
                .recv(data, &mut |plain| conn.recv_client(now, plain))
        }));
        // The ClientHello is read in an earlier call than any request
        // (the client needs the server's flight first).
        if !conn.has_served_names() {
            if let (Some(sni), Some(server)) = (t.session.client_hello_name(), &parts.tls) {
                conn.serve_names(ServedNames::for_hello(server.certificates(), sni));
            }
        }
        match run {
            Ok(Ok(Some(handshake))) => {
                stats.tls.handshake(handshake);
                t.deadline = None;
            }
            Ok(Ok(None)) => {}
            Ok(Err(failure)) => {
                stats.tls.failure(failure);
                if failure == Failure::PlaintextHttp {
                    t.session.queue_plain(PLAIN_TO_TLS);
                }
                t.closing = true;
                t.deadline = Some(now + self.peers.engine().send_timeout);
            }
            Err(payload) => {
                panic::contained_panic(&self.parts.status, Some(c.peer), &*payload);
                return self.close_client(id, true);
            }
        }
        self.on_client(id, now, |_| {});
    }

    /// For a TLS client: encrypts what its engine queued (up to
    /// [`TLS_QUEUE`] ahead of the socket), and once the engine is done
    /// queues `close_notify` and closes when all is written. Returns
    /// whether it closed the client.
    fn seal(&mut self, id: ClientId, now: Instant) -> bool {
        let send_timeout = self.peers.engine().send_timeout;
        let Self {
            clients,
            seal_buf,
            stats,
            ..
        } = self;
        let Some(Client {
            tls: Some(t), conn, ..
        }) = clients.get_mut(id.idx, id.gen)
        else {
            return false;
        };
        while !t.closing && t.session.pending() < TLS_QUEUE && conn.client_pending() > 0 {
            seal_buf.clear();
            let mut slices = [std::io::IoSlice::new(&[]); 8];
            let n = conn.client_slices(&mut slices);
            for s in &slices[..n] {
                let room = TLS_RECORD - seal_buf.len();
                seal_buf.extend_from_slice(&s[..s.len().min(room)]);
            }
            match t.session.encrypt(seal_buf) {
                Ok(true) => conn.client_written(seal_buf.len(), now),
                Ok(false) => break,
                Err(failure) => {
                    stats.tls.failure(failure);
                    t.closing = true;
                    t.deadline = Some(now + send_timeout);
                }
            }
        }
        if conn.is_finished() && !conn.is_aborted() && !t.closing {
            t.session.queue_close();
            t.closing = true;
            t.deadline = Some(now + send_timeout);
        }
        if t.closing && t.session.pending() == 0 {
            self.close_client(id, false);
            return true;
        }
        false
    }

    /// Closes client `id` when its TLS deadline (handshake, or the last
    /// write after the end) has passed; a handshake that timed out is
    /// counted. Returns whether it closed it.
    fn tls_expired(&mut self, id: ClientId, now: Instant) -> bool {
        let Some(t) = self
            .clients
            .get(id.idx, id.gen)
            .and_then(|c| c.tls.as_ref())
        else {
            return false;
        };
        if t.deadline.is_none_or(|d| d > now) {
            return false;
        }
        if t.session.is_handshaking() && !t.closing {
            self.stats.tls.failure(Failure::Timeout);
        }
        self.close_client(id, true);
        true
    }

    /// Starts a background refresh (stale-while-revalidate): a connection
    /// of its own, with no socket, whose request revalidates the entry and
    /// whose answer only goes into the cache; the client that asked for it
    /// was answered and goes on. At most [`MAX_BACKGROUND`] at once per
    /// core (past it, or while draining, the refresh is left to a later
    /// request). The origin is told the address of `peer`, the client
    /// whose request found the entry stale.
    fn start_refresh(&mut self, now: Instant, request: &[u8], key: Bytes, peer: Option<IpAddr>) {
        let Some(cache) = self.parts.cache.clone() else {
            return;
        };
        if self.background >= MAX_BACKGROUND || self.drain_deadline.is_some() {
            cache.release_fetch(&key);
            return;
        }
        let conn = Conn::new(
            self.peers.engine().clone(),
            self.parts.status.clone(),
            Some(cache),
            peer.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()),
            now,
        )
        .without_local_admin()
        .came_by(url_parts(&key).0);
        let peer = SocketAddr::from(([0, 0, 0, 0], 0));
        let (idx, gen) = self.clients.insert(Client::new(conn, peer, Some(key)));
        self.background += 1;
        self.on_client(ClientId { idx, gen }, now, |c| c.recv_client(now, request));
    }

    /// A background refresh after an event: its answer is dropped (it is
    /// in the cache), its result counts for the server's passive health
    /// only (not as client traffic), and it ends with its exchange.
    fn settle_background(&mut self, id: ClientId, now: Instant) {
        let Some(c) = self.clients.get_mut(id.idx, id.gen) else {
            return;
        };
        let pending = c.conn.client_pending();
        if pending > 0 {
            c.conn.client_written(pending, now);
        }
        while let Some(done) = c.conn.poll_completion() {
            if let (true, Some(target)) = (done.proxied, c.last_target) {
                self.peers.responded(target, &done, now);
            }
        }
        if c.conn.is_finished() || c.conn.is_aborted() {
            return self.end_background(id);
        }
        if let Some(t) = c.conn.timeout() {
            if c.timer_at.is_none_or(|at| t < at) {
                c.timer_at = Some(t);
                self.timers.push(Reverse((t, id.idx, id.gen)));
            }
        }
        if let Some(u) = c.up {
            self.touch_upstream(u);
        }
    }

    /// Ends a background refresh: its upstream closed unless pooled, its
    /// fetch claim released.
    fn end_background(&mut self, id: ClientId) {
        let Some(c) = self.clients.remove(id.idx, id.gen) else {
            return;
        };
        self.background -= 1;
        if let Some(u) = c.up {
            self.close_upstream(u);
        }
        if let (Some(cache), Some(key)) = (&self.parts.cache, &c.background) {
            cache.release_fetch(key);
        }
    }

    /// Attaches an upstream connection to client `id` for its request's
    /// `attempt`-th try: an idle pooled one to the chosen server unless
    /// `fresh`, else a new one.
    fn checkout(&mut self, id: ClientId, now: Instant, fresh: bool, attempt: usize) {
        if let Some(old) = self
            .clients
            .get_mut(id.idx, id.gen)
            .and_then(|c| c.up.take())
        {
            self.close_upstream(old);
        }
        let (home, may_canary) = match self.clients.get(id.idx, id.gen) {
            Some(c) => (
                self.peers.route_pool(c.conn.engine(), c.conn.route()),
                c.background.is_none() && c.conn.may_be_canary(),
            ),
            None => return,
        };
        let ups = &self.ups;
        let picked = self.peers.checkout(
            &self.parts.live,
            Wanted {
                home,
                attempt,
                may_canary,
                fresh,
            },
            now,
            |u| matches!(ups.get(u.idx, u.gen), Some(up) if matches!(up.state, UpState::Idle(_))),
        );
        let Some(c) = self.clients.get_mut(id.idx, id.gen) else {
            return;
        };
        let Some((target, checkout, canary)) = picked else {
            // No server to try (the pool's names did not resolve).
            return c.conn.upstream_connect_failed(now);
        };
        if let Some((connect, response)) = self.peers.timeouts(target) {
            c.conn.upstream_timeouts(connect, response);
        }
        if let Some(deadline) = canary {
            c.conn.upstream_canary(deadline);
        }
        match checkout {
            Checkout::Reused { conn: u, .. } => {
                if let Some(up) = self.ups.get_mut(u.idx, u.gen) {
                    up.state = UpState::Attached(id);
                }
                c.up = Some(u);
                c.last_target = Some(target);
                c.conn.upstream_connected(now, true);
                self.touch_upstream(u);
            }
            Checkout::Connect { addr, .. } => {
                let (idx, gen) = self.ups.insert(Upstream {
                    target,
                    state: UpState::Connecting(id),
                    queued: false,
                    tls: None,
                });
                let up = UpstreamId { idx, gen };
                c.up = Some(up);
                self.commands.push_back(Command::Connect { up, addr });
            }
        }
    }

    /// Detaches client `id`'s upstream connection: into the pool when the
    /// engine calls it clean, closed otherwise.
    fn release(&mut self, id: ClientId, now: Instant, reuse: bool) {
        let Some(u) = self
            .clients
            .get_mut(id.idx, id.gen)
            .and_then(|c| c.up.take())
        else {
            return;
        };
        let Some(up) = self.ups.get_mut(u.idx, u.gen) else {
            return;
        };
        if !(reuse && up.state == UpState::Attached(id)) {
            return self.close_upstream(u);
        }
        up.state = UpState::Idle(now);
        let target = up.target;
        self.peers.end(target);
        if let Some(displaced) = self.peers.checkin(target, u, now) {
            self.close_upstream(displaced);
        }
        self.touch_upstream(u);
    }

    /// Tells the driver to look at upstream `u` again.
    fn touch_upstream(&mut self, u: UpstreamId) {
        if let Some(up) = self.ups.get_mut(u.idx, u.gen) {
            if !up.queued && up.state != UpState::Closed {
                up.queued = true;
                self.commands.push_back(Command::Upstream(u));
            }
        }
    }

    fn close_upstream(&mut self, u: UpstreamId) {
        if let Some(up) = self.ups.get_mut(u.idx, u.gen) {
            if matches!(
                up.state,
                UpState::Connecting(_) | UpState::Handshaking(_) | UpState::Attached(_)
            ) {
                self.peers.end(up.target);
            }
            if up.state != UpState::Closed {
                up.state = UpState::Closed;
                self.commands.push_back(Command::CloseUpstream(u));
            }
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
        let up = c.up.take();
        self.commands
            .push_back(Command::CloseClient { client: id, reset });
        if let Some(u) = up {
            self.close_upstream(u);
        }
    }

    fn on_timer(&mut self, now: Instant) {
        if self.bell.as_ref().is_some_and(|b| b.answer()) {
            self.wake_waiters(now);
        }
        while let Some(&Reverse((t, idx, gen))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let id = ClientId { idx, gen };
            match self.clients.get_mut(idx, gen) {
                Some(c) if !c.closed && c.timer_at == Some(t) => c.timer_at = None,
                _ => continue,
            }
            if self.tls_expired(id, now) {
                continue;
            }
            self.on_client(id, now, |c| {
                if c.timeout().is_some_and(|d| d <= now) {
                    c.handle_timeout(now);
                }
            });
        }
        if now >= self.next_stats {
            self.sweep_idle(now);
            self.sweep_waiting();
            self.hand_over();
            self.next_stats = now + self.cfg.stats_interval;
        }
        if self.drain_deadline.is_some_and(|d| now >= d) {
            self.scratch.clear();
            self.scratch.extend(self.clients.handles());
            let open: Vec<_> = self.scratch.drain(..).collect();
            if !open.is_empty() {
                tracing::warn!(
                    connections = open.len(),
                    "drain timeout: closing connections still busy"
                );
            }
            for (idx, gen) in open {
                self.close_client(ClientId { idx, gen }, true);
            }
        }
    }

    /// A fetch ended: every waiting request looks at the cache again (and
    /// is listed again if its key's fetch still runs).
    fn wake_waiters(&mut self, now: Instant) {
        let mut list = std::mem::take(&mut self.waiting);
        for id in list.drain(..) {
            if let Some(c) = self.clients.get_mut(id.idx, id.gen) {
                c.listed = false;
                self.on_client(id, now, |c| c.retry_wait(now));
            }
        }
        list.append(&mut self.waiting);
        self.waiting = list;
    }

    /// Forgets listed waiters that are gone or no longer wait (gave up at
    /// their deadline), so the list stays as long as the waiters.
    fn sweep_waiting(&mut self) {
        let clients = &mut self.clients;
        self.waiting
            .retain(|id| match clients.get_mut(id.idx, id.gen) {
                Some(c) if c.conn.is_waiting() => true,
                Some(c) => {
                    c.listed = false;
                    false
                }
                None => false,
            });
    }

    /// Closes pooled connections past their idle timeout, and those of
    /// pools a reload replaced.
    fn sweep_idle(&mut self, now: Instant) {
        self.peers.refresh(&self.parts.live);
        self.peers.evict_expired(now);
        self.scratch.clear();
        self.scratch.extend(self.ups.handles());
        let handles = std::mem::take(&mut self.scratch);
        for &(idx, gen) in &handles {
            let Some(up) = self.ups.get(idx, gen) else {
                continue;
            };
            let UpState::Idle(since) = up.state else {
                continue;
            };
            let keep = self
                .peers
                .idle_timeout(up.target)
                .is_some_and(|t| now.saturating_duration_since(since) < t);
            if !keep {
                self.close_upstream(UpstreamId { idx, gen });
            }
        }
        self.scratch = handles;
    }

    fn drain(&mut self, now: Instant) {
        if self.drain_deadline.is_some() {
            return;
        }
        self.drain_deadline = Some(now + self.cfg.drain_timeout);
        self.scratch.clear();
        self.scratch.extend(self.clients.handles());
        let open = std::mem::take(&mut self.scratch);
        for &(idx, gen) in &open {
            self.on_client(ClientId { idx, gen }, now, |c| c.drain(now));
        }
        self.scratch = open;
    }
}

/// Books an answered request: the core's statistics, the server's passive
/// health, and its access-log record (the client's address and the
/// upstream server filled in here, where they are known).
fn record(
    parts: &Parts,
    stats: &mut CoreStats,
    peers: &mut Upstreams<UpstreamId>,
    mut done: Completion,
    target: Option<Target>,
    peer: SocketAddr,
    now: Instant,
) {
    if !done.attempt_only {
        stats.record(&done);
    }
    let server = match (done.proxied, target) {
        (true, Some(target)) => {
            peers.responded(target, &done, now);
            peers.server(target)
        }
        _ => None,
    };
    if let Some((pool, addr, slow)) = server {
        stats.record_server(pool, addr, slow, &done);
    }
    if let Some(mut rec) = done.access.take() {
        rec.client = Some(peer);
        rec.upstream = server.map(|(_, addr, _)| addr);
        rec.pool = server.map(|(pool, _, _)| pool.clone());
        rec.audit = parts.status.log_requests();
        parts.access.push(*rec);
    }
}

#[cfg(test)]
mod sim;

#[cfg(test)]
mod tests;
