//! The epoll driver: one tokio current-thread runtime per data core, each
//! thread pinned with `core_affinity`, each with its own `SO_REUSEPORT`
//! listener and upstream pool, so cores share nothing on the request path.
//!
//! The driver only moves bytes: every decision is the engine's
//! ([`crate::proxy::Conn`]).

use crate::admin::{AdminResponse, AdminService};
use crate::cache::Cache;
use crate::proxy::{Action, Conn, EngineConfig};
use crate::stats::CoreStats;
use crate::status::{DataplaneStatus, Route, BACKEND_EPOLL};
use crate::upstream::health::GroupHealth;
use crate::upstream::pool::{Checkout, Pool};
use socket2::{Domain, Protocol, Socket, Type};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Size of the read buffer of each connection, in bytes.
const READ_BUF: usize = 16 * 1024;
/// Backlog of each listening socket.
const BACKLOG: i32 = 1024;

/// Where and how the kernel data plane serves.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The data port's address.
    pub listen: SocketAddr,
    /// Cores to run one data thread each on (ids as `core_affinity` counts).
    pub cores: Vec<usize>,
    /// The primary upstream servers, used round robin.
    pub upstreams: Vec<SocketAddr>,
    /// The fallback servers (the Node.js service), used when the route says
    /// so and as the last attempt of a request the primaries failed.
    pub fallback: Vec<SocketAddr>,
    /// How long an idle upstream keep-alive connection is kept.
    pub upstream_idle_timeout: Duration,
    /// Most idle upstream connections kept per server and core.
    pub upstream_max_idle: usize,
    /// How long in-flight requests may take to finish after a shutdown.
    pub drain_timeout: Duration,
    /// How often each core hands its statistics to the control plane.
    pub stats_interval: Duration,
}

/// Why the data plane could not start.
#[derive(Debug, Error)]
pub enum DriverError {
    /// A listening socket could not be set up.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// A data thread could not be started.
    #[error("cannot start a data thread: {0}")]
    Thread(io::Error),
}

/// What the data cores share with the control plane.
#[derive(Clone)]
pub struct Shared {
    /// Readiness and route.
    pub status: Arc<DataplaneStatus>,
    /// The response cache, when enabled.
    pub cache: Option<Arc<Cache>>,
    /// Answers `/admin/*` from loopback peers.
    pub admin: Arc<dyn AdminService>,
    /// Health of the primary servers.
    pub primary: Arc<GroupHealth>,
    /// Health of the fallback servers.
    pub fallback: Arc<GroupHealth>,
    /// Where each core sends its statistics.
    pub stats: std::sync::mpsc::Sender<CoreStats>,
}

/// The running epoll data plane.
pub struct Dataplane {
    threads: Vec<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
}

impl Dataplane {
    /// Binds one listener per core and starts the data threads.
    pub fn start(
        cfg: DriverConfig,
        engine: Arc<EngineConfig>,
        shared: Shared,
    ) -> Result<Self, DriverError> {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let first = bind_reuseport(cfg.listen)?;
        let local_addr = first.local_addr().map_err(|source| DriverError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let mut listeners = vec![first];
        for _ in 1..cfg.cores.len().max(1) {
            listeners.push(bind_reuseport(local_addr)?);
        }
        let mut threads = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let core = cfg
                .cores
                .get(i)
                .and_then(|id| cores.iter().find(|c| c.id == *id).copied());
            let setup = CoreSetup {
                cfg: cfg.clone(),
                engine: engine.clone(),
                shared: shared.clone(),
                shutdown: shutdown_rx.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("ug-data-{i}"))
                .spawn(move || run_core(core, listener, setup))
                .map_err(DriverError::Thread)?;
            threads.push(thread);
        }
        shared.status.set_serving(true);
        tracing::info!(backend = BACKEND_EPOLL, %local_addr, cores = ?cfg.cores, "data plane serving");
        Ok(Self { threads, shutdown })
    }

    /// Stops accepting, lets in-flight requests finish within the drain
    /// timeout, and waits for the data threads.
    pub fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn bind_reuseport(addr: SocketAddr) -> Result<std::net::TcpListener, DriverError> {
    let bind = || -> io::Result<std::net::TcpListener> {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        sock.listen(BACKLOG)?;
        Ok(sock.into())
    };
    bind().map_err(|source| DriverError::Bind { addr, source })
}

/// What a data thread is given at start.
struct CoreSetup {
    cfg: DriverConfig,
    engine: Arc<EngineConfig>,
    shared: Shared,
    shutdown: watch::Receiver<bool>,
}

/// Which upstream group a connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Primary,
    Fallback,
}

/// Per-core state shared by the connection tasks of one thread.
struct CoreCtx {
    engine: Arc<EngineConfig>,
    shared: Shared,
    primary: RefCell<Pool<TcpStream>>,
    fallback: RefCell<Pool<TcpStream>>,
    has_fallback: bool,
    stats: RefCell<CoreStats>,
    active: Cell<usize>,
}

impl CoreCtx {
    fn pool(&self, g: Group) -> &RefCell<Pool<TcpStream>> {
        match g {
            Group::Primary => &self.primary,
            Group::Fallback => &self.fallback,
        }
    }

    fn health(&self, g: Group) -> &GroupHealth {
        match g {
            Group::Primary => &self.shared.primary,
            Group::Fallback => &self.shared.fallback,
        }
    }

    /// The group for a request's `attempt`-th connect: the fallback when the
    /// route says so, or when every primary attempt is used up.
    fn group(&self, attempt: usize) -> Group {
        let primaries = self.primary.borrow().len();
        if self.has_fallback
            && (self.shared.status.route() == Route::Fallback || attempt >= primaries)
        {
            Group::Fallback
        } else {
            Group::Primary
        }
    }
}

fn run_core(
    core: Option<core_affinity::CoreId>,
    listener: std::net::TcpListener,
    setup: CoreSetup,
) {
    if let Some(core) = core {
        if !core_affinity::set_for_current(core) {
            tracing::warn!(core = core.id, "could not pin data thread");
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the data thread's runtime");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot register listener");
                return;
            }
        };
        let CoreSetup { cfg, engine, shared, mut shutdown } = setup;
        let pool = |servers: &[SocketAddr]| {
            RefCell::new(Pool::new(servers.to_vec(), cfg.upstream_idle_timeout, cfg.upstream_max_idle))
        };
        let ctx = Rc::new(CoreCtx {
            engine,
            primary: pool(&cfg.upstreams),
            fallback: pool(if cfg.fallback.is_empty() { &cfg.upstreams } else { &cfg.fallback }),
            has_fallback: !cfg.fallback.is_empty(),
            shared,
            stats: RefCell::new(CoreStats::default()),
            active: Cell::new(0),
        });
        let housekeeping = {
            let ctx = ctx.clone();
            let interval = cfg.stats_interval;
            tokio::task::spawn_local(async move {
                let mut tick = tokio::time::interval(interval);
                loop {
                    tick.tick().await;
                    let now = Instant::now();
                    ctx.primary.borrow_mut().evict_expired(now);
                    ctx.fallback.borrow_mut().evict_expired(now);
                    let taken = ctx.stats.borrow_mut().take();
                    let _ = ctx.shared.stats.send(taken);
                }
            })
        };
        while !*shutdown.borrow() {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        tokio::task::spawn_local(serve(stream, peer, ctx.clone(), shutdown.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = shutdown.changed() => {}
            }
        }
        drop(listener);
        let deadline = tokio::time::Instant::now() + cfg.drain_timeout;
        while ctx.active.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if ctx.active.get() > 0 {
            tracing::warn!(connections = ctx.active.get(), "drain timeout: closing connections still busy");
        }
        housekeeping.abort();
    });
}

/// Counts a connection task as active for as long as it lives.
struct ActiveGuard(Rc<CoreCtx>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get() - 1);
    }
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>>>>;
type AdminCall = Pin<Box<dyn Future<Output = AdminResponse> + Send>>;

/// Awaits an optional future; pending forever when there is none.
async fn maybe<F: Future + Unpin>(f: &mut Option<F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Reads from a ready socket. A read that comes back shorter than the
/// buffer drained the socket, so its readiness is cleared at once (as
/// nginx does): the next wait goes to epoll instead of costing a `recv`
/// that returns `EAGAIN`, one syscall saved per request.
fn read_drained(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let mut got = None;
    let r = s.try_io(tokio::io::Interest::READABLE, || {
        let n = (&*socket2::SockRef::from(s)).read(buf)?;
        got = Some(n);
        if n > 0 && n < buf.len() {
            // Clears readiness; the bytes are returned below.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (r, got) {
        (_, Some(n)) => Ok(n),
        (r, None) => r,
    }
}

/// Writes what the engine queued for the client while the socket takes
/// it; stops at `WouldBlock` (the select's writable branch goes on).
fn flush_client(stream: &TcpStream, conn: &mut Conn) -> io::Result<()> {
    while conn.client_pending() > 0 {
        match write_client(stream, conn) {
            Ok(n) => conn.client_written(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One vectored write of the queued client bytes: a cache hit's head and
/// shared body go out in one `writev`.
fn write_client(stream: &TcpStream, conn: &Conn) -> io::Result<usize> {
    let mut slices = [io::IoSlice::new(&[]); 8];
    let n = conn.client_slices(&mut slices);
    stream.try_write_vectored(&slices[..n])
}

/// Whether a pooled connection is still open and clean: a read must find
/// nothing to read.
fn idle_conn_alive(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.try_read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Rc<CoreCtx>,
    mut shutdown: watch::Receiver<bool>,
) {
    ctx.active.set(ctx.active.get() + 1);
    let _guard = ActiveGuard(ctx.clone());
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::new(
        ctx.engine.clone(),
        ctx.shared.status.clone(),
        ctx.shared.cache.clone(),
        peer.ip(),
        Instant::now(),
    );
    let mut upstream: Option<((Group, usize), TcpStream)> = None;
    let mut connecting: Option<((Group, usize), Connecting)> = None;
    // The server of the latest exchange, to credit its answer to.
    let mut last_target: Option<(Group, usize)> = None;
    let mut admin_call: Option<AdminCall> = None;
    let mut buf = vec![0u8; READ_BUF];
    let mut draining = *shutdown.borrow();
    if draining {
        conn.drain(Instant::now());
    }
    loop {
        while let Some(action) = conn.poll_action() {
            match action {
                Action::Connect { fresh, attempt } => {
                    upstream = None;
                    connecting = None;
                    let now = Instant::now();
                    let group = ctx.group(attempt);
                    let health = ctx.health(group);
                    let checkout =
                        ctx.pool(group)
                            .borrow_mut()
                            .checkout(now, fresh, idle_conn_alive, |i| health.is_healthy(i));
                    match checkout {
                        Checkout::Reused { server, conn: s } => {
                            upstream = Some(((group, server), s));
                            last_target = Some((group, server));
                            conn.upstream_connected(now, true);
                        }
                        Checkout::Connect { server, addr } => {
                            connecting =
                                Some(((group, server), Box::pin(TcpStream::connect(addr))));
                        }
                    }
                }
                Action::Release { reuse } => {
                    connecting = None;
                    if let Some(((group, server), s)) = upstream.take() {
                        if reuse {
                            ctx.pool(group)
                                .borrow_mut()
                                .checkin(server, s, Instant::now());
                        }
                    }
                }
                Action::Admin(req) => admin_call = Some(ctx.shared.admin.call(req)),
            }
        }
        while let Some(done) = conn.poll_completion() {
            ctx.stats.borrow_mut().record(&done);
            if let (true, Some((group, server))) = (done.proxied, last_target) {
                ctx.health(group)
                    .responded(server, done.status, done.latency.as_micros() as u64);
            }
            if ctx.shared.status.log_requests() {
                tracing::info!(
                    target: "ultragate::access",
                    %peer,
                    status = done.status,
                    latency_us = done.latency.as_micros() as u64,
                    cache = done.cache.label(),
                    "request"
                );
            }
        }
        if conn.is_finished() {
            break;
        }
        let client_write = conn.client_pending() > 0;
        let client_read = conn.wants_client_bytes();
        let up_write =
            upstream.is_some() && conn.upstream_attached() && !conn.upstream_output().is_empty();
        let up_read = upstream.is_some() && conn.wants_upstream_bytes();
        let deadline = conn.timeout();
        let up = upstream.as_ref().map(|(_, s)| s);
        let sleep_until = deadline.map(tokio::time::Instant::from_std);
        let mut connect_fut = connecting.as_mut().map(|(_, f)| f);
        tokio::select! {
            biased;
            r = stream.writable(), if client_write => {
                if r.is_err() { break; }
                match write_client(&stream, &conn) {
                    Ok(n) => conn.client_written(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
            r = async { up.expect("guarded").writable().await }, if up_write => {
                let now = Instant::now();
                let s = up.expect("guarded");
                match r.and_then(|()| s.try_write(conn.upstream_output())) {
                    Ok(n) => conn.upstream_written(n, now),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => conn.upstream_eof(now),
                }
            }
            r = async { up.expect("guarded").readable().await }, if up_read => {
                let now = Instant::now();
                let s = up.expect("guarded");
                match r.and_then(|()| read_drained(s, &mut buf)) {
                    Ok(0) => conn.upstream_eof(now),
                    Ok(n) => {
                        conn.recv_upstream(now, &buf[..n]);
                        if flush_client(&stream, &mut conn).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => conn.upstream_eof(now),
                }
            }
            r = stream.readable(), if client_read => {
                let now = Instant::now();
                match r.and_then(|()| read_drained(&stream, &mut buf)) {
                    Ok(0) => conn.client_eof(now),
                    Ok(n) => {
                        conn.recv_client(now, &buf[..n]);
                        // A cache hit or local answer goes out at once,
                        // without another trip through the select.
                        if flush_client(&stream, &mut conn).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
            r = maybe(&mut connect_fut) => {
                let now = Instant::now();
                let target = connecting.take().map_or((Group::Primary, 0), |(target, _)| target);
                match r {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        ctx.health(target.0).connected(target.1);
                        upstream = Some((target, s));
                        last_target = Some(target);
                        conn.upstream_connected(now, false);
                    }
                    Err(_) => {
                        ctx.health(target.0).connect_failed(target.1);
                        conn.upstream_connect_failed(now);
                    }
                }
            }
            resp = maybe(&mut admin_call) => {
                admin_call = None;
                conn.admin_response(Instant::now(), resp);
            }
            _ = async { tokio::time::sleep_until(sleep_until.expect("guarded")).await }, if sleep_until.is_some() => {
                conn.handle_timeout(Instant::now());
            }
            _ = shutdown.changed(), if !draining => {
                draining = true;
                conn.drain(Instant::now());
            }
        }
    }
    let mut stream = stream;
    let _ = stream.shutdown().await;
}
