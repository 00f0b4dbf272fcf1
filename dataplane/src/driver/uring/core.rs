//! One data core's event loop on its ring: it executes the [`Endpoint`]'s
//! commands and reports completions back to it.
//!
//! Every operation carries its socket's table index and a generation in
//! its `user_data` ([`Op`]). A socket is closed, and its handle given back
//! to the endpoint, only once no operation on it is in flight, so the
//! kernel never writes into or reads from memory that is gone and an fd
//! number is never reused while an operation for the old socket is still
//! queued. A failed submission is an error for the socket it was for (the
//! endpoint closes it), never a silently dropped operation.
//!
//! Back-pressure: clients and upstreams are read one buffer at a time,
//! each receive armed only while the endpoint wants the bytes (and a
//! pending one cancelled when it stops wanting them), so a connection
//! holds at most one buffer more than the endpoint's bound, a client that
//! never reads stops being read, and a slow reader stops its upstream
//! instead of filling memory.

use super::bufring::BufRing;
use super::op::{Kind, Op};
use super::{new_ring, refused, Refused, Waker};
use crate::admin::{AdminRequest, AdminResponse};
use crate::driver::{refuse, DriverConfig, Shared};
use crate::endpoint::{ClientId, Command, Endpoint, Event, UpstreamId};
use bytes::{Buf, Bytes};
use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::IoSlice;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Submission queue size; the completion queue is four times larger.
const RING_ENTRIES: u32 = 1024;
/// Buffer group of the receive buffers.
const BGID: u16 = 0;
/// Receive buffers per core.
const BUFFERS: u16 = 1024;
/// Size of each receive buffer: a whole request or a 16 KiB body chunk.
const BUF_SIZE: usize = 16 * 1024;
/// Most chunks one client send carries.
const MAX_IOV: usize = 8;
/// The slot number of operations that belong to no connection.
const NO_SLOT: u32 = 0xff_ffff;
/// `IORING_RECVSEND_POLL_FIRST`: arm the poll without a first attempt.
const RECVSEND_POLL_FIRST: u16 = 1;
/// Longest single wait, so a stop request is seen even if a wake is lost.
const MAX_WAIT: Duration = Duration::from_millis(500);

/// What a core is given at start.
pub(super) struct Setup {
    /// The core's id in the statistics.
    pub(super) core: usize,
    pub(super) cfg: DriverConfig,
    pub(super) shared: Shared,
    pub(super) listeners: super::super::listen::CoreListeners,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) waker: Arc<Waker>,
}

/// A client socket.
struct ClientSock {
    gen: u32,
    id: ClientId,
    stream: TcpStream,
    /// Operations in flight (receive, send, cancel).
    inflight: u32,
    recv_armed: bool,
    cancel_sent: bool,
    sending: bool,
    /// Closing: no more reads or sends; freed when `inflight` is zero.
    closing: bool,
    iov: [libc::iovec; MAX_IOV],
    msg: libc::msghdr,
}

/// An upstream socket.
struct UpSock {
    gen: u32,
    id: UpstreamId,
    stream: TcpStream,
    /// The address a connect in flight points to.
    _connect_addr: Box<SockAddr>,
    /// Operations in flight (connect, send, receive, cancel).
    inflight: u32,
    connecting: bool,
    connected: bool,
    recv_armed: bool,
    /// Bytes taken from the endpoint and not yet all written.
    sending: Option<Bytes>,
    send_inflight: bool,
    /// Closing: shut down; freed when `inflight` is zero.
    closing: bool,
}

/// A core: its ring, buffers, sockets and endpoint. The ring is the first
/// field so it is dropped (and the kernel lets go of every buffer) before
/// the memory it points to.
struct Core {
    ring: IoUring,
    bufs: BufRing,
    /// The plain and the TLS listener (the accept's slot is the index).
    listeners: [Option<TcpListener>; 2],
    accepting: [bool; 2],
    clients: Vec<Option<Box<ClientSock>>>,
    ups: Vec<Option<Box<UpSock>>>,
    next_gen: u32,
    ep: Endpoint,
    shared: Shared,
    cfg: DriverConfig,
    waker: Arc<Waker>,
    wake_buf: Box<u64>,
    wake_armed: bool,
    admin_tx: mpsc::Sender<(ClientId, AdminResponse)>,
    admin_rx: mpsc::Receiver<(ClientId, AdminResponse)>,
    draining: bool,
}

/// Runs a core until it is stopped and drained; reports on `ready`
/// whether its ring could be set up.
pub(super) fn run(setup: Setup, ready: mpsc::Sender<Result<(), Refused>>) {
    let stop = setup.stop.clone();
    let mut core = match Core::new(setup) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    core.serve(&stop);
}

/// Queues a submission, flushing the queue to the kernel when it is full;
/// an error when the kernel takes none (the operation was not queued).
///
/// # Safety
/// Every buffer `e` points to must stay valid until its completion.
unsafe fn push(ring: &mut IoUring, e: squeue::Entry) -> std::io::Result<()> {
    // SAFETY: the caller's promise.
    while unsafe { ring.submission().push(&e) }.is_err() {
        match ring.submit() {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Shuts a socket down both ways, which ends the operations in flight on
/// it.
fn shut(fd: RawFd) {
    // SAFETY: plain syscall on a socket we own.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// Stores `v` at `index`, growing the table.
fn put<T>(table: &mut Vec<Option<T>>, index: usize, v: T) {
    if table.len() <= index {
        table.resize_with(index + 1, || None);
    }
    table[index] = Some(v);
}

impl Core {
    fn new(setup: Setup) -> Result<Self, Refused> {
        let ring = new_ring(RING_ENTRIES)?;
        let bufs = BufRing::register(&ring, BGID, BUFFERS, BUF_SIZE)
            .map_err(refused("io_uring_register(PBUF_RING)"))?;
        let (admin_tx, admin_rx) = mpsc::channel();
        let mut core = Self {
            ring,
            bufs,
            listeners: [setup.listeners.plain, setup.listeners.tls],
            accepting: [false; 2],
            clients: Vec::new(),
            ups: Vec::new(),
            next_gen: 1,
            ep: setup.shared.endpoint(setup.core, &setup.cfg, true),
            shared: setup.shared,
            cfg: setup.cfg,
            waker: setup.waker,
            wake_buf: Box::new(0),
            wake_armed: false,
            admin_tx,
            admin_rx,
            draining: false,
        };
        let waker = core.waker.clone();
        core.ep.on_wake(Box::new(move || waker.wake()));
        core.arm_accept();
        core.arm_wake();
        Ok(core)
    }

    fn gen(&mut self) -> u32 {
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        self.next_gen
    }

    fn arm_accept(&mut self) {
        for (i, l) in self.listeners.iter().enumerate() {
            let Some(l) = l else { continue };
            if self.accepting[i] || self.draining {
                continue;
            }
            let e = opcode::AcceptMulti::new(Fd(l.as_raw_fd()))
                .flags(libc::SOCK_CLOEXEC)
                .build()
                .user_data(Op::new(Kind::Accept, i as u32, 0).encode());
            // SAFETY: accept points to no memory.
            match unsafe { push(&mut self.ring, e) } {
                Ok(()) => self.accepting[i] = true,
                Err(e) => tracing::warn!(error = %e, "cannot queue the accept; trying again"),
            }
        }
    }

    fn arm_wake(&mut self) {
        if self.wake_armed {
            return;
        }
        let buf: *mut u64 = &mut *self.wake_buf;
        let e = opcode::Read::new(Fd(self.waker.0.as_raw_fd()), buf.cast(), 8)
            .build()
            .user_data(Op::new(Kind::Wake, NO_SLOT, 0).encode());
        // SAFETY: `wake_buf` is boxed and lives as long as the ring.
        match unsafe { push(&mut self.ring, e) } {
            Ok(()) => self.wake_armed = true,
            Err(e) => tracing::warn!(error = %e, "cannot queue the wake read; trying again"),
        }
    }

    fn serve(&mut self, stop: &AtomicBool) {
        let mut drain_limit = None;
        loop {
            let now = Instant::now();
            if stop.load(Ordering::Acquire) && !self.draining {
                self.begin_drain(now);
                // The endpoint resets what is still open at the drain
                // timeout; this bound only guards against a lost completion.
                drain_limit = Some(now + self.cfg.drain_timeout + Duration::from_secs(1));
            }
            if self.ep.is_drained() || drain_limit.is_some_and(|l| now >= l) {
                break;
            }
            if now >= self.ep.poll_timeout() {
                self.ep.handle(now, Event::Timer);
            }
            self.pump(now);
            self.arm_accept();
            self.arm_wake();
            let wake_at = self.ep.poll_timeout().min(now + MAX_WAIT);
            let wait = wake_at.saturating_duration_since(now);
            let ts = Timespec::new()
                .sec(wait.as_secs())
                .nsec(wait.subsec_nanos());
            let args = SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                    ) => {}
                Err(e) => {
                    tracing::error!(error = %e, "io_uring_enter failed; this core stops");
                    break;
                }
            }
            let now = Instant::now();
            loop {
                let next = self.ring.completion().next();
                let Some(cqe) = next else { break };
                self.complete(cqe, now);
            }
            self.pump(now);
        }
        // Dropping the ring cancels what is still in flight.
        self.ep.hand_over();
    }

    fn begin_drain(&mut self, now: Instant) {
        self.draining = true;
        for (i, accepting) in self.accepting.iter().enumerate() {
            if !accepting {
                continue;
            }
            let e = opcode::AsyncCancel::new(Op::new(Kind::Accept, i as u32, 0).encode())
                .build()
                .user_data(Op::new(Kind::Cancel, NO_SLOT, 0).encode());
            // SAFETY: cancel points to no memory. Not queued: the listener
            // closes below anyway.
            let _ = unsafe { push(&mut self.ring, e) };
        }
        self.listeners = [None, None];
        self.ep.handle(now, Event::Drain);
    }

    /// Carries out the endpoint's commands.
    fn pump(&mut self, now: Instant) {
        while let Some(cmd) = self.ep.poll_command() {
            match cmd {
                Command::Client(id) => self.update_client(id, now),
                Command::Upstream(u) => self.update_up(u, now),
                Command::Connect { up, addr } => self.connect(up, addr, now),
                Command::Admin { client, request } => {
                    spawn_admin(&self.shared, &self.admin_tx, &self.waker, client, *request)
                }
                Command::CloseClient { client, reset } => self.close_client(client, reset, now),
                Command::CloseUpstream(u) => self.close_up(u, now),
            }
        }
    }

    fn client(&mut self, idx: u32, gen: u32) -> Option<&mut ClientSock> {
        self.clients
            .get_mut(idx as usize)?
            .as_deref_mut()
            .filter(|s| s.gen == gen)
    }

    fn up(&mut self, idx: u32, gen: u32) -> Option<&mut UpSock> {
        self.ups
            .get_mut(idx as usize)?
            .as_deref_mut()
            .filter(|s| s.gen == gen)
    }

    fn complete(&mut self, cqe: cqueue::Entry, now: Instant) {
        let Some(op) = Op::decode(cqe.user_data()) else {
            return;
        };
        let (res, flags) = (cqe.result(), cqe.flags());
        match op.kind {
            Kind::Accept => self.accepted(res, flags, op.slot == 1, now),
            Kind::Wake => self.woken(now),
            Kind::Recv => self.received(op, res, flags, now),
            Kind::Send => self.sent(op, res, now),
            Kind::Cancel => {
                if let Some(s) = self.client(op.slot, op.gen) {
                    s.inflight -= 1;
                    let id = s.id;
                    self.settle_client(id, now);
                }
            }
            Kind::UpConnect => self.up_connected(op, res, now),
            Kind::UpSend => self.up_sent(op, res, now),
            Kind::UpRecv => self.up_received(op, res, flags, now),
            Kind::UpCancel => {
                if let Some(u) = self.up(op.slot, op.gen) {
                    u.inflight -= 1;
                    let id = u.id;
                    self.settle_up(id, now);
                }
            }
        }
    }

    fn accepted(&mut self, res: i32, flags: u32, tls: bool, now: Instant) {
        if !cqueue::more(flags) {
            self.accepting[usize::from(tls)] = false;
        }
        if res < 0 {
            if res != -libc::ECANCELED {
                tracing::debug!(error = %std::io::Error::from_raw_os_error(-res), "accept failed");
            }
            return;
        }
        // SAFETY: the kernel gave us this new socket.
        let stream = unsafe { TcpStream::from_raw_fd(res) };
        if self.draining {
            return;
        }
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let id = match tls {
            true => self.ep.accept_tls(now, peer),
            false => self.ep.accept(now, peer),
        };
        let Some(id) = id else {
            if !tls {
                refuse(stream.as_fd());
            }
            return;
        };
        let _ = stream.set_nodelay(true);
        let gen = self.gen();
        // SAFETY: an all-zero msghdr and iovec are valid empty values.
        let (msg, iov) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        let sock = Box::new(ClientSock {
            gen,
            id,
            stream,
            inflight: 0,
            recv_armed: false,
            cancel_sent: false,
            sending: false,
            closing: false,
            iov,
            msg,
        });
        put(&mut self.clients, id.index(), sock);
    }

    fn woken(&mut self, now: Instant) {
        self.wake_armed = false;
        while let Ok((id, resp)) = self.admin_rx.try_recv() {
            self.ep.handle(now, Event::AdminAnswer(id, resp));
        }
    }

    fn received(&mut self, op: Op, res: i32, flags: u32, now: Instant) {
        let bid = cqueue::buffer_select(flags);
        let Some(s) = self
            .clients
            .get_mut(op.slot as usize)
            .and_then(|s| s.as_deref_mut())
            .filter(|s| s.gen == op.gen)
        else {
            if let Some(b) = bid {
                self.bufs.recycle(b);
            }
            return;
        };
        if !cqueue::more(flags) {
            s.recv_armed = false;
            s.inflight -= 1;
        }
        let (id, closing) = (s.id, s.closing);
        match res {
            n if n > 0 => {
                if let Some(b) = bid {
                    if !closing {
                        let data = self.bufs.get(b, n as usize);
                        self.ep.handle(now, Event::ClientBytes(id, data));
                    }
                    self.bufs.recycle(b);
                }
            }
            _ if closing => {}
            0 => self.ep.handle(now, Event::ClientEof(id)),
            e if e == -libc::ENOBUFS || e == -libc::ECANCELED => {}
            _ => self.ep.handle(now, Event::ClientError(id)),
        }
        self.settle_client(id, now);
    }

    fn sent(&mut self, op: Op, res: i32, now: Instant) {
        let Some(s) = self.client(op.slot, op.gen) else {
            return;
        };
        s.inflight -= 1;
        s.sending = false;
        let (id, closing) = (s.id, s.closing);
        if !closing {
            let event = match usize::try_from(res) {
                Ok(n) => Event::ClientWritten(id, n),
                Err(_) => Event::ClientError(id),
            };
            self.ep.handle(now, event);
        }
        self.settle_client(id, now);
    }

    /// Re-arms what the client still needs after a completion, or frees its
    /// socket once it is closing and idle.
    fn settle_client(&mut self, id: ClientId, now: Instant) {
        let Some(s) = self.clients.get(id.index()).and_then(|s| s.as_deref()) else {
            return;
        };
        if !s.closing {
            return self.update_client(id, now);
        }
        if s.inflight == 0 {
            // Dropping the socket closes it.
            self.clients[id.index()] = None;
            self.ep.handle(now, Event::ClientClosed(id));
        }
    }

    /// Arms the reads and writes the endpoint wants for client `id`.
    fn update_client(&mut self, id: ClientId, now: Instant) {
        let Some(s) = self
            .clients
            .get_mut(id.index())
            .and_then(|s| s.as_deref_mut())
            .filter(|s| s.id == id && !s.closing)
        else {
            return;
        };
        let want = self.ep.client_interest(id);
        let fd = Fd(s.stream.as_raw_fd());
        let mut failed = false;
        if want.write && !s.sending {
            self.ep.pin_client_output(id);
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let n = self.ep.client_slices(id, &mut slices);
            for (iov, sl) in s.iov.iter_mut().zip(&slices[..n]) {
                *iov = libc::iovec {
                    iov_base: sl.as_ptr() as *mut _,
                    iov_len: sl.len(),
                };
            }
            let data = Op::new(Kind::Send, id.index() as u32, s.gen).encode();
            let e = if n == 1 {
                opcode::Send::new(fd, s.iov[0].iov_base.cast(), s.iov[0].iov_len as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            } else {
                s.msg.msg_iov = s.iov.as_mut_ptr();
                s.msg.msg_iovlen = n as _;
                opcode::SendMsg::new(fd, &s.msg)
                    .flags(libc::MSG_NOSIGNAL as u32)
                    .build()
            };
            // SAFETY: the chunks are pinned in the endpoint until written
            // (its connection lives until `ClientClosed`, which waits for
            // this send); `iov` and `msg` live in the boxed socket.
            match unsafe { push(&mut self.ring, e.user_data(data)) } {
                Ok(()) => {
                    s.sending = true;
                    s.inflight += 1;
                }
                Err(_) => failed = true,
            }
        }
        if want.read && !s.recv_armed {
            // One buffer per receive, armed again only while the endpoint
            // wants bytes: a multishot receive goes on draining the socket
            // (up to 32 buffers a pass) after the bound is reached, and a
            // client that pipelines without reading would park them all
            // here.
            let e = opcode::Recv::new(fd, std::ptr::null_mut(), BUF_SIZE as u32)
                .buf_group(BGID)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
                .user_data(Op::new(Kind::Recv, id.index() as u32, s.gen).encode());
            // SAFETY: buffers come from the registered buffer ring.
            match unsafe { push(&mut self.ring, e) } {
                Ok(()) => {
                    s.recv_armed = true;
                    s.cancel_sent = false;
                    s.inflight += 1;
                }
                Err(_) => failed = true,
            }
        } else if !want.read && s.recv_armed && !s.cancel_sent {
            cancel_recv(&mut self.ring, s);
        }
        if failed {
            tracing::warn!("io_uring refused an operation; closing the client connection");
            self.ep.handle(now, Event::ClientError(id));
        }
    }

    /// Closes client `id`: a FIN, or a reset that drops what is unsent;
    /// the socket goes once its operations have ended.
    fn close_client(&mut self, id: ClientId, reset: bool, now: Instant) {
        let Some(s) = self
            .clients
            .get_mut(id.index())
            .and_then(|s| s.as_deref_mut())
            .filter(|s| s.id == id)
        else {
            return self.ep.handle(now, Event::ClientClosed(id));
        };
        s.closing = true;
        if reset {
            crate::driver::reset_on_close(&s.stream);
            shut(s.stream.as_raw_fd());
        } else {
            // SAFETY: plain syscall: a FIN after the last response.
            unsafe { libc::shutdown(s.stream.as_raw_fd(), libc::SHUT_WR) };
            if s.recv_armed && !s.cancel_sent {
                cancel_recv(&mut self.ring, s);
            }
        }
        self.settle_client(id, now);
    }

    fn connect(&mut self, up: UpstreamId, addr: SocketAddr, now: Instant) {
        let gen = self.gen();
        match start_connect(&mut self.ring, addr, up.index() as u32, gen) {
            Ok((stream, addr)) => {
                let sock = Box::new(UpSock {
                    gen,
                    id: up,
                    stream,
                    _connect_addr: addr,
                    inflight: 1,
                    connecting: true,
                    connected: false,
                    recv_armed: false,
                    sending: None,
                    send_inflight: false,
                    closing: false,
                });
                put(&mut self.ups, up.index(), sock);
            }
            Err(e) => {
                tracing::warn!(error = %e, %addr, "cannot open an upstream socket");
                self.ep.handle(now, Event::ConnectFailed(up));
            }
        }
    }

    fn up_connected(&mut self, op: Op, res: i32, now: Instant) {
        let Some(u) = self.up(op.slot, op.gen) else {
            return;
        };
        u.inflight -= 1;
        u.connecting = false;
        let (id, closing) = (u.id, u.closing);
        if !closing {
            if res == 0 {
                u.connected = true;
                self.ep.handle(now, Event::Connected(id));
            } else {
                self.ep.handle(now, Event::ConnectFailed(id));
            }
        }
        self.settle_up(id, now);
    }

    fn up_sent(&mut self, op: Op, res: i32, now: Instant) {
        let Some(u) = self.up(op.slot, op.gen) else {
            return;
        };
        u.inflight -= 1;
        u.send_inflight = false;
        let id = u.id;
        let sending = u.sending.take();
        if !u.closing {
            match (usize::try_from(res), sending) {
                (Err(_), _) => self.ep.handle(now, Event::UpstreamError(id)),
                (Ok(n), Some(mut b)) if n < b.len() => {
                    b.advance(n);
                    u.sending = Some(b);
                }
                (Ok(_), _) => self.ep.handle(now, Event::UpstreamSent(id)),
            }
        }
        self.settle_up(id, now);
    }

    fn up_received(&mut self, op: Op, res: i32, flags: u32, now: Instant) {
        let bid = cqueue::buffer_select(flags);
        let Some(u) = self
            .ups
            .get_mut(op.slot as usize)
            .and_then(|s| s.as_deref_mut())
            .filter(|s| s.gen == op.gen)
        else {
            if let Some(b) = bid {
                self.bufs.recycle(b);
            }
            return;
        };
        u.inflight -= 1;
        u.recv_armed = false;
        let (id, closing) = (u.id, u.closing);
        match res {
            n if n > 0 => {
                if let Some(b) = bid {
                    if !closing {
                        let data = self.bufs.get(b, n as usize);
                        self.ep.handle(now, Event::UpstreamBytes(id, data));
                    }
                    self.bufs.recycle(b);
                }
            }
            _ if closing => {}
            e if e == -libc::ENOBUFS => {}
            0 => self.ep.handle(now, Event::UpstreamEof(id)),
            _ => self.ep.handle(now, Event::UpstreamError(id)),
        }
        self.settle_up(id, now);
    }

    /// Re-arms what the upstream still needs after a completion, or frees
    /// its socket once it is closing and idle.
    fn settle_up(&mut self, id: UpstreamId, now: Instant) {
        let Some(u) = self.ups.get(id.index()).and_then(|s| s.as_deref()) else {
            return;
        };
        if !u.closing {
            return self.update_up(id, now);
        }
        if u.inflight == 0 {
            // Dropping the socket closes it: no operation on it is left,
            // so its fd number cannot be reused under one.
            self.ups[id.index()] = None;
            self.ep.handle(now, Event::UpstreamClosed(id));
        }
    }

    /// Arms the reads and writes the endpoint wants for upstream `id`.
    fn update_up(&mut self, id: UpstreamId, now: Instant) {
        let Some(u) = self
            .ups
            .get_mut(id.index())
            .and_then(|s| s.as_deref_mut())
            .filter(|s| s.id == id && s.connected && !s.closing)
        else {
            return;
        };
        let want = self.ep.upstream_interest(id);
        if want.write && u.sending.is_none() {
            let b = self.ep.take_upstream_output(id);
            u.sending = (!b.is_empty()).then_some(b);
        }
        let fd = Fd(u.stream.as_raw_fd());
        let mut failed = false;
        if let (Some(b), false) = (&u.sending, u.send_inflight) {
            let e = opcode::Send::new(fd, b.as_ptr(), b.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(Op::new(Kind::UpSend, id.index() as u32, u.gen).encode());
            // SAFETY: the bytes stay in `u.sending` until the send
            // completes; the socket is not freed while it is in flight.
            match unsafe { push(&mut self.ring, e) } {
                Ok(()) => {
                    u.send_inflight = true;
                    u.inflight += 1;
                }
                Err(_) => failed = true,
            }
        }
        if want.read && !u.recv_armed {
            // The answer cannot be there before the request went out:
            // wait for readiness instead of trying first.
            let e = opcode::Recv::new(fd, std::ptr::null_mut(), BUF_SIZE as u32)
                .buf_group(BGID)
                .ioprio(RECVSEND_POLL_FIRST)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
                .user_data(Op::new(Kind::UpRecv, id.index() as u32, u.gen).encode());
            // SAFETY: the buffer comes from the registered buffer ring.
            match unsafe { push(&mut self.ring, e) } {
                Ok(()) => {
                    u.recv_armed = true;
                    u.inflight += 1;
                }
                Err(_) => failed = true,
            }
        }
        if failed {
            tracing::warn!("io_uring refused an operation; closing the upstream connection");
            self.ep.handle(now, Event::UpstreamError(id));
        }
    }

    /// Closes upstream `id`: shut down (ending its receive and send) and a
    /// connect in flight cancelled; the socket goes once they have ended.
    fn close_up(&mut self, id: UpstreamId, now: Instant) {
        let Some(u) = self
            .ups
            .get_mut(id.index())
            .and_then(|s| s.as_deref_mut())
            .filter(|s| s.id == id)
        else {
            return self.ep.handle(now, Event::UpstreamClosed(id));
        };
        u.closing = true;
        if u.inflight > 0 {
            shut(u.stream.as_raw_fd());
        }
        if u.connecting {
            let target = Op::new(Kind::UpConnect, id.index() as u32, u.gen).encode();
            let e = opcode::AsyncCancel::new(target)
                .build()
                .user_data(Op::new(Kind::UpCancel, id.index() as u32, u.gen).encode());
            // SAFETY: cancel points to no memory. When it cannot be queued
            // the connect still ends by itself (refused or timed out).
            if unsafe { push(&mut self.ring, e) }.is_ok() {
                u.inflight += 1;
            }
        }
        self.settle_up(id, now);
    }
}

/// Cancels a client's pending receive.
fn cancel_recv(ring: &mut IoUring, s: &mut ClientSock) {
    let idx = s.id.index() as u32;
    let e = opcode::AsyncCancel::new(Op::new(Kind::Recv, idx, s.gen).encode())
        .build()
        .user_data(Op::new(Kind::Cancel, idx, s.gen).encode());
    // SAFETY: cancel points to no memory. When it cannot be queued the
    // receive ends with the socket's shutdown instead.
    if unsafe { push(ring, e) }.is_ok() {
        s.cancel_sent = true;
        s.inflight += 1;
    }
}

/// Opens a socket to `addr` and queues its connect.
fn start_connect(
    ring: &mut IoUring,
    addr: SocketAddr,
    idx: u32,
    gen: u32,
) -> std::io::Result<(TcpStream, Box<SockAddr>)> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nodelay(true)?;
    let sa = Box::new(SockAddr::from(addr));
    let e = opcode::Connect::new(Fd(sock.as_raw_fd()), sa.as_ptr().cast(), sa.len())
        .build()
        .user_data(Op::new(Kind::UpConnect, idx, gen).encode());
    // SAFETY: the address is boxed in the socket's entry until the connect
    // completes (the kernel copies it at submission anyway).
    unsafe { push(ring, e) }?;
    Ok((sock.into(), sa))
}

/// Runs an admin call on the control runtime; its answer comes back
/// through the core's channel and eventfd.
fn spawn_admin(
    shared: &Shared,
    tx: &mpsc::Sender<(ClientId, AdminResponse)>,
    waker: &Arc<Waker>,
    id: ClientId,
    req: AdminRequest,
) {
    let call = shared.admin.call(req);
    let (tx, waker) = (tx.clone(), waker.clone());
    shared.spawner.spawn(async move {
        let resp = call.await;
        if tx.send((id, resp)).is_ok() {
            waker.wake();
        }
    });
}
