//! The epoll driver: one tokio current-thread runtime per data core, each
//! thread pinned with `core_affinity`, each with its own `SO_REUSEPORT`
//! listener and upstream pool, so cores share nothing on the request path.
//!
//! The driver only moves bytes: every decision is the engine's
//! ([`crate::proxy::Conn`]).

use super::listen;
use super::upstreams::{Target, Upstreams};
use super::{DriverConfig, DriverError, Shared};
use crate::admin::AdminResponse;
use crate::proxy::{Action, Conn};
use crate::stats::CoreStats;
use crate::status::Backend;
use crate::upstream::pool::Checkout;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Size of the read buffer of each connection, in bytes.
const READ_BUF: usize = 16 * 1024;

/// The running epoll data plane.
pub struct EpollDataplane {
    threads: Vec<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
}

impl EpollDataplane {
    /// Binds one listener per core and starts the data threads.
    pub fn start(cfg: DriverConfig, shared: Shared) -> Result<Self, DriverError> {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let listeners = listen::bind_all(cfg.listen, cfg.cores.len())?;
        let local_addr = listeners[0].local_addr().ok();
        let mut threads = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let core = cfg
                .cores
                .get(i)
                .and_then(|id| cores.iter().find(|c| c.id == *id).copied());
            let setup = CoreSetup {
                core: cfg.cores.get(i).copied().unwrap_or(i),
                cfg: cfg.clone(),
                shared: shared.clone(),
                shutdown: shutdown_rx.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("ug-data-{i}"))
                .spawn(move || run_core(core, listener, setup))
                .map_err(DriverError::Thread)?;
            threads.push(thread);
        }
        shared.status.set_backend(Backend::Epoll);
        shared.status.set_serving(true);
        tracing::info!(backend = Backend::Epoll.as_str(), ?local_addr, cores = ?cfg.cores, "data plane serving");
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

/// What a data thread is given at start.
struct CoreSetup {
    /// The core's id in the statistics.
    core: usize,
    cfg: DriverConfig,
    shared: Shared,
    shutdown: watch::Receiver<bool>,
}

/// Per-core state shared by the connection tasks of one thread.
struct CoreCtx {
    shared: Shared,
    upstreams: RefCell<Upstreams<TcpStream>>,
    stats: RefCell<CoreStats>,
    active: Cell<usize>,
    max_active: usize,
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
        let CoreSetup {
            core,
            cfg,
            shared,
            mut shutdown,
        } = setup;
        let ctx = Rc::new(CoreCtx {
            upstreams: RefCell::new(Upstreams::new(&shared.live)),
            shared,
            stats: RefCell::new(CoreStats::for_core(core)),
            active: Cell::new(0),
            max_active: cfg.max_connections_per_core,
        });
        let housekeeping = {
            let ctx = ctx.clone();
            let interval = cfg.stats_interval;
            tokio::task::spawn_local(async move {
                let mut tick = tokio::time::interval(interval);
                loop {
                    tick.tick().await;
                    ctx.upstreams.borrow_mut().evict_expired(Instant::now());
                    ctx.shared
                        .hand_over(&mut ctx.stats.borrow_mut(), ctx.active.get());
                }
            })
        };
        while !*shutdown.borrow() {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) if ctx.active.get() >= ctx.max_active => {
                        use std::os::fd::AsFd;
                        super::refuse(stream.as_fd());
                    }
                    Ok((stream, peer)) => {
                        let status = ctx.shared.status.clone();
                        let task = serve(stream, peer, ctx.clone(), shutdown.clone());
                        tokio::task::spawn_local(Contained { task: Box::pin(task), status, peer });
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
            tracing::warn!(
                connections = ctx.active.get(),
                "drain timeout: closing connections still busy"
            );
        }
        housekeeping.abort();
    });
}

/// A connection's task polled inside a panic boundary: a panic in the
/// engine ends this task (dropping its sockets closes the connection), is
/// logged with the peer and counted, and the core goes on.
struct Contained<F> {
    task: Pin<Box<F>>,
    status: Arc<crate::status::DataplaneStatus>,
    peer: SocketAddr,
}

impl<F: Future<Output = ()>> Future for Contained<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let task = self.task.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => {
                super::contained_panic(&self.status, Some(self.peer), &*payload);
                std::task::Poll::Ready(())
            }
        }
    }
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
            Ok(n) => conn.client_written(n, Instant::now()),
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

/// Whether a pooled connection is still open and clean: a peek must find
/// nothing to read. Asked of the socket, not of tokio's cached readiness,
/// which lags behind bytes the reactor has not polled yet.
fn idle_conn_alive(s: &TcpStream) -> bool {
    let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    matches!(socket2::SockRef::from(s).peek(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
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
    let engine = {
        let mut upstreams = ctx.upstreams.borrow_mut();
        upstreams.refresh(&ctx.shared.live);
        upstreams.engine().clone()
    };
    let mut conn = Conn::new(
        engine,
        ctx.shared.status.clone(),
        ctx.shared.cache.clone(),
        peer.ip(),
        Instant::now(),
    );
    let mut upstream: Option<(Target, TcpStream)> = None;
    let mut connecting: Option<(Target, Connecting)> = None;
    // The server of the latest exchange, to credit its answer to.
    let mut last_target: Option<Target> = None;
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
                    let (target, checkout) = ctx.upstreams.borrow_mut().checkout(
                        &ctx.shared.live,
                        ctx.shared.status.route(),
                        attempt,
                        fresh,
                        now,
                        idle_conn_alive,
                    );
                    match checkout {
                        Checkout::Reused { conn: s, .. } => {
                            upstream = Some((target, s));
                            last_target = Some(target);
                            conn.upstream_connected(now, true);
                        }
                        Checkout::Connect { addr, .. } => {
                            connecting = Some((target, Box::pin(TcpStream::connect(addr))));
                        }
                    }
                }
                Action::Release { reuse } => {
                    connecting = None;
                    if let Some((target, s)) = upstream.take() {
                        if reuse {
                            ctx.upstreams
                                .borrow_mut()
                                .checkin(target, s, Instant::now());
                        }
                    }
                }
                Action::Admin(req) => admin_call = Some(ctx.shared.admin.call(req)),
            }
        }
        while let Some(done) = conn.poll_completion() {
            ctx.shared.record(
                &mut ctx.stats.borrow_mut(),
                done,
                &ctx.upstreams.borrow(),
                last_target,
                peer,
            );
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
                    Ok(n) => conn.client_written(n, Instant::now()),
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
                    Err(_) => conn.upstream_reset(now),
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
                    Err(_) => conn.upstream_reset(now),
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
                // The future ran, so `connecting` held it and its target.
                if let Some((target, _)) = connecting.take() {
                    match r {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            ctx.upstreams.borrow().connected(target);
                            upstream = Some((target, s));
                            last_target = Some(target);
                            conn.upstream_connected(now, false);
                        }
                        Err(_) => {
                            ctx.upstreams.borrow().connect_failed(target);
                            conn.upstream_connect_failed(now);
                        }
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
    if conn.is_aborted() {
        // Reset: the kernel drops what it still holds for this client
        // instead of trickling it out after the close.
        super::reset_on_close(&stream);
        return;
    }
    let mut stream = stream;
    let _ = stream.shutdown().await;
}
