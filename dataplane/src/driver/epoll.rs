//! The epoll driver: one tokio current-thread runtime per data core, each
//! thread pinned with `core_affinity`, each with its own `SO_REUSEPORT`
//! listener and [`Endpoint`], so cores share nothing on the request path.
//!
//! The driver only moves bytes: one task per socket reads and writes what
//! the endpoint's interest says and reports what happened; every decision
//! is the endpoint's.

use super::listen;
use super::{DriverConfig, DriverError, Shared};
use crate::endpoint::{ClientId, Command, Endpoint, Event, UpstreamId};
use crate::status::Backend;
use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

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
        let (listeners, local_addr) = listen::bind_cores(&cfg)?;
        let mut threads = Vec::new();
        for (i, listeners) in listeners.into_iter().enumerate() {
            let pin = cfg
                .cores
                .get(i)
                .and_then(|id| cores.iter().find(|c| c.id == *id).copied());
            let core = cfg.cores.get(i).copied().unwrap_or(i);
            let (cfg, shared, shutdown) = (cfg.clone(), shared.clone(), shutdown_rx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("ug-data-{i}"))
                .spawn(move || run_core(pin, core, listeners, cfg, shared, shutdown))
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

/// A socket task's mailbox: woken when the endpoint has something for it.
#[derive(Default)]
struct Mailbox {
    wake: Notify,
    /// The endpoint asked for a close: with a reset when `Some(true)`.
    close: Cell<Option<bool>>,
}

impl Mailbox {
    fn close(&self, reset: bool) {
        self.close.set(Some(reset));
        self.wake.notify_one();
    }
}

/// One core: its endpoint and the mailboxes of its socket tasks.
struct Core {
    ep: RefCell<Endpoint>,
    shared: Shared,
    clients: RefCell<Vec<Option<Rc<Mailbox>>>>,
    ups: RefCell<Vec<Option<Rc<Mailbox>>>>,
    /// Wakes the timer task when an earlier timer was queued, or (from
    /// another thread) when the endpoint's bell rang.
    timer: Arc<Notify>,
    /// What the timer task sleeps until.
    timer_at: Cell<Instant>,
    /// Rung when a client socket task ends, for the drain's wait.
    drained: Notify,
}

/// Stores `mb` at `index`, growing the table.
fn put(table: &RefCell<Vec<Option<Rc<Mailbox>>>>, index: usize, mb: Option<Rc<Mailbox>>) {
    super::put_slot(&mut table.borrow_mut(), index, mb);
}

fn get(table: &RefCell<Vec<Option<Rc<Mailbox>>>>, index: usize) -> Option<Rc<Mailbox>> {
    table.borrow().get(index).cloned().flatten()
}

impl Core {
    /// Reports `event` and carries out what follows.
    fn handle(self: &Rc<Self>, event: Event<'_>) {
        self.ep.borrow_mut().handle(Instant::now(), event);
        self.pump();
    }

    /// Carries out the endpoint's commands.
    fn pump(self: &Rc<Self>) {
        loop {
            let Some(cmd) = self.ep.borrow_mut().poll_command() else {
                break;
            };
            match cmd {
                Command::Client(id) => {
                    if let Some(mb) = get(&self.clients, id.index()) {
                        mb.wake.notify_one();
                    }
                }
                Command::Upstream(u) => {
                    if let Some(mb) = get(&self.ups, u.index()) {
                        mb.wake.notify_one();
                    }
                }
                Command::Connect { up, addr } => {
                    let mb = Rc::new(Mailbox::default());
                    put(&self.ups, up.index(), Some(mb.clone()));
                    tokio::task::spawn_local(upstream(self.clone(), up, addr, mb));
                }
                Command::Admin { client, request } => {
                    let call = self.shared.admin.call(*request);
                    let core = self.clone();
                    tokio::task::spawn_local(async move {
                        let resp = call.await;
                        core.handle(Event::AdminAnswer(client, resp));
                    });
                }
                Command::CloseClient { client, reset } => {
                    if let Some(mb) = get(&self.clients, client.index()) {
                        mb.close(reset);
                    }
                }
                Command::CloseUpstream(u) => {
                    if let Some(mb) = get(&self.ups, u.index()) {
                        mb.close(true);
                    }
                }
            }
        }
        if self.ep.borrow().poll_timeout() < self.timer_at.get() {
            self.timer.notify_one();
        }
    }
}

fn run_core(
    pin: Option<core_affinity::CoreId>,
    core: usize,
    listeners: listen::CoreListeners,
    cfg: DriverConfig,
    shared: Shared,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Some(pin) = pin {
        if !core_affinity::set_for_current(pin) {
            tracing::warn!(core = pin.id, "could not pin data thread");
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
        let register = |l: Option<std::net::TcpListener>| match l.map(TcpListener::from_std) {
            Some(Ok(l)) => Some(l),
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot register listener");
                None
            }
            None => None,
        };
        let plain = register(listeners.plain);
        let tls = register(listeners.tls);
        let core = Rc::new(Core {
            ep: RefCell::new(shared.endpoint(core, &cfg, true)),
            shared,
            clients: RefCell::new(Vec::new()),
            ups: RefCell::new(Vec::new()),
            timer: Arc::new(Notify::new()),
            timer_at: Cell::new(Instant::now()),
            drained: Notify::new(),
        });
        let bell = core.timer.clone();
        core.ep
            .borrow()
            .on_wake(Box::new(move || bell.notify_one()));
        let timers = tokio::task::spawn_local(timer(core.clone()));
        while !*shutdown.borrow() {
            let accepted = tokio::select! {
                a = accept_on(&plain) => a.map(|a| (a, false)),
                a = accept_on(&tls) => a.map(|a| (a, true)),
                _ = shutdown.changed() => continue,
            };
            match accepted {
                Ok(((stream, peer), tls)) => accept(&core, stream, peer, tls),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        drop((plain, tls));
        core.handle(Event::Drain);
        // The endpoint says when: every client closed, or its drain bound
        // passed (the same on every driver). Each socket task's end and
        // the timer task wake this one.
        while !core.ep.borrow().drain_over(Instant::now()) {
            let at = core.ep.borrow().poll_timeout();
            tokio::select! {
                _ = core.drained.notified() => {}
                _ = tokio::time::sleep_until(at.into()) => {}
            }
        }
        timers.abort();
        core.ep.borrow_mut().hand_over();
    });
}

/// The next connection on `listener`; never, when it is off.
async fn accept_on(listener: &Option<TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

fn accept(core: &Rc<Core>, stream: TcpStream, peer: SocketAddr, tls: bool) {
    let id = match tls {
        true => core.ep.borrow_mut().accept_tls(Instant::now(), peer),
        false => core.ep.borrow_mut().accept(Instant::now(), peer),
    };
    let Some(id) = id else {
        // Over the limit with every 503 slot busy: refused at once.
        super::reset_on_close(&stream);
        return;
    };
    let _ = stream.set_nodelay(true);
    let mb = Rc::new(Mailbox::default());
    put(&core.clients, id.index(), Some(mb.clone()));
    tokio::task::spawn_local(client(core.clone(), id, stream, mb));
    core.pump();
}

/// Sleeps until the endpoint's next timer and reports it.
async fn timer(core: Rc<Core>) {
    loop {
        let at = core.ep.borrow().poll_timeout();
        core.timer_at.set(at);
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => core.handle(Event::Timer),
            _ = core.timer.notified() => {}
        }
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

/// One vectored write of the client's queued bytes (a cache hit's head
/// and shared body in one `writev`), reported to the endpoint.
fn write_client(core: &Rc<Core>, id: ClientId, stream: &TcpStream) {
    let written = {
        let ep = core.ep.borrow();
        let mut slices = [io::IoSlice::new(&[]); 8];
        let n = ep.client_slices(id, &mut slices);
        stream.try_write_vectored(&slices[..n])
    };
    match written {
        Ok(n) => core.handle(Event::ClientWritten(id, n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(_) => core.handle(Event::ClientError(id)),
    }
}

/// A client connection's task.
async fn client(core: Rc<Core>, id: ClientId, stream: TcpStream, mb: Rc<Mailbox>) {
    let mut buf = vec![0u8; READ_BUF];
    let reset = loop {
        if let Some(reset) = mb.close.get() {
            break reset;
        }
        let want = core.ep.borrow().client_interest(id);
        tokio::select! {
            biased;
            r = stream.writable(), if want.write => match r {
                Ok(()) => write_client(&core, id, &stream),
                Err(_) => core.handle(Event::ClientError(id)),
            },
            r = stream.readable(), if want.read => {
                match r.and_then(|()| read_drained(&stream, &mut buf)) {
                    Ok(0) => core.handle(Event::ClientEof(id)),
                    Ok(n) => {
                        core.handle(Event::ClientBytes(id, &buf[..n]));
                        // A cache hit or local answer goes out at once,
                        // without another trip through the select.
                        if mb.close.get().is_none() && core.ep.borrow().client_interest(id).write {
                            write_client(&core, id, &stream);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => core.handle(Event::ClientError(id)),
                }
            }
            _ = mb.wake.notified() => {}
        }
    };
    if reset {
        // The kernel drops what it still holds for this client instead of
        // trickling it out after the close.
        super::reset_on_close(&stream);
    } else {
        let mut stream = stream;
        let _ = stream.shutdown().await;
    }
    put(&core.clients, id.index(), None);
    core.handle(Event::ClientClosed(id));
    core.drained.notify_one();
}

/// An upstream connection's task: connects, then moves bytes until the
/// endpoint closes it (it may serve many requests from the pool).
async fn upstream(core: Rc<Core>, up: UpstreamId, addr: SocketAddr, mb: Rc<Mailbox>) {
    let stream = tokio::select! {
        r = TcpStream::connect(addr) => r.ok(),
        () = closed(&mb) => None,
    };
    match &stream {
        Some(s) => {
            let _ = s.set_nodelay(true);
            core.handle(Event::Connected(up));
        }
        None if mb.close.get().is_none() => core.handle(Event::ConnectFailed(up)),
        None => {}
    }
    let mut buf = vec![0u8; READ_BUF];
    while let (Some(s), None) = (&stream, mb.close.get()) {
        let want = core.ep.borrow().upstream_interest(up);
        tokio::select! {
            biased;
            r = s.writable(), if want.write => {
                let written = r.and_then(|()| s.try_write(core.ep.borrow().upstream_output(up)));
                match written {
                    Ok(n) => core.handle(Event::UpstreamWritten(up, n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => core.handle(Event::UpstreamError(up)),
                }
            }
            r = s.readable(), if want.read => {
                match r.and_then(|()| read_drained(s, &mut buf)) {
                    Ok(0) => core.handle(Event::UpstreamEof(up)),
                    Ok(n) => core.handle(Event::UpstreamBytes(up, &buf[..n])),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => core.handle(Event::UpstreamError(up)),
                }
            }
            _ = mb.wake.notified() => {}
        }
    }
    closed(&mb).await;
    drop(stream);
    put(&core.ups, up.index(), None);
    core.handle(Event::UpstreamClosed(up));
}

/// Waits until the endpoint asks the mailbox's socket to close.
async fn closed(mb: &Mailbox) {
    while mb.close.get().is_none() {
        mb.wake.notified().await;
    }
}
