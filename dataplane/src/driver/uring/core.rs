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

mod clients;
mod upstreams;

use super::bufring::BufRing;
use super::op::{Kind, Op};
use super::{new_ring, refused, Refused, Waker};
use crate::admin::{AdminRequest, AdminResponse};
use crate::driver::{DriverConfig, Shared};
use crate::endpoint::{ClientId, Command, Endpoint, Event, UpstreamId};
use bytes::{Buf, Bytes};
use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::IoSlice;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
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
        loop {
            let now = Instant::now();
            if stop.load(Ordering::Acquire) && !self.draining {
                self.begin_drain(now);
            }
            // The endpoint says when: every client closed, or its drain
            // bound passed (the same on every driver).
            if self.draining && self.ep.drain_over(now) {
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

    fn woken(&mut self, now: Instant) {
        self.wake_armed = false;
        while let Ok((id, resp)) = self.admin_rx.try_recv() {
            self.ep.handle(now, Event::AdminAnswer(id, resp));
        }
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
