//! One data core's event loop on its ring.
//!
//! Each client connection has a slot; every operation carries the slot and
//! a generation in its `user_data` ([`Op`]). A slot is freed only when no
//! client operation is in flight, so the kernel never writes into or reads
//! from memory that is gone. An abandoned upstream socket is shut down and
//! closed at once: its late completions are recognised by their generation
//! and dropped (a send's bytes stay alive in `retired` until then).
//!
//! Back-pressure: a client's multishot receive is cancelled while the
//! engine does not want bytes (its queues are full) and armed again after;
//! the upstream is read one buffer at a time, only while the engine wants
//! more, so a slow reader stops the upstream instead of filling memory.

use super::bufring::BufRing;
use super::op::{Kind, Op};
use super::{new_ring, refused, Refused, Waker};
use crate::admin::{AdminRequest, AdminResponse};
use crate::driver::upstreams::{Target, Upstreams};
use crate::driver::{refuse, DriverConfig, Shared};
use crate::proxy::{Action, Conn};
use crate::stats::CoreStats;
use crate::upstream::pool::Checkout;
use bytes::{Buf, Bytes};
use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::IoSlice;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
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
    pub(super) listener: TcpListener,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) waker: Arc<Waker>,
}

/// An upstream connection of a slot.
struct Upstream {
    /// Generation of the operations on this socket.
    gen: u32,
    target: Target,
    stream: TcpStream,
    /// The address a connect in flight points to.
    addr: Option<Box<SockAddr>>,
    connected: bool,
    recv_armed: bool,
    /// Bytes taken from the engine and not yet all written.
    sending: Option<Bytes>,
    /// A send of `sending` is in flight.
    send_inflight: bool,
}

/// A client connection.
struct Slot {
    gen: u32,
    stream: TcpStream,
    peer: SocketAddr,
    conn: Conn,
    /// Client operations in flight (receive, send, cancel).
    inflight: u32,
    recv_armed: bool,
    cancel_sent: bool,
    sending: bool,
    /// Closing: no more reads or sends; freed when `inflight` is zero.
    closing: bool,
    /// The engine panicked on this connection: it is never called again,
    /// and the slot only waits for its operations to end.
    poisoned: bool,
    iov: [libc::iovec; MAX_IOV],
    msg: libc::msghdr,
    up: Option<Upstream>,
    /// The server of the latest exchange, to credit its answer to.
    last_target: Option<Target>,
    /// The earliest timer queued for this slot.
    timer_at: Option<Instant>,
}

/// A core: its ring, buffers, connections and upstream pools. The ring is
/// the first field so it is dropped (and the kernel lets go of every
/// buffer) before the memory it points to.
struct Core {
    ring: IoUring,
    bufs: BufRing,
    listener: Option<TcpListener>,
    accepting: bool,
    slots: Vec<Option<Box<Slot>>>,
    free: Vec<u32>,
    live: usize,
    next_gen: u32,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    shared: Shared,
    upstreams: Upstreams<TcpStream>,
    stats: CoreStats,
    cfg: DriverConfig,
    waker: Arc<Waker>,
    wake_buf: Box<u64>,
    wake_armed: bool,
    admin_tx: mpsc::Sender<(u32, u32, AdminResponse)>,
    admin_rx: mpsc::Receiver<(u32, u32, AdminResponse)>,
    /// Sends in flight on abandoned upstream sockets, by generation.
    retired: Vec<(u32, Bytes)>,
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

/// Queues a submission, flushing the queue to the kernel when it is full.
///
/// # Safety
/// Every buffer `e` points to must stay valid until its completion.
unsafe fn push(ring: &mut IoUring, e: squeue::Entry) {
    // SAFETY: the caller's promise.
    while unsafe { ring.submission().push(&e) }.is_err() {
        if ring.submit().is_err() {
            break;
        }
    }
}

/// Whether a pooled connection is still open and clean: a peek finds
/// nothing to read.
fn idle_conn_alive(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: reads at most one byte into `b`.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

/// Shuts a socket down both ways, which ends the operations in flight on
/// it, so it can be closed at once.
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
            listener: Some(setup.listener),
            accepting: false,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            next_gen: 1,
            timers: BinaryHeap::new(),
            upstreams: Upstreams::new(&setup.shared.live),
            shared: setup.shared,
            stats: CoreStats::for_core(setup.core),
            cfg: setup.cfg,
            waker: setup.waker,
            wake_buf: Box::new(0),
            wake_armed: false,
            admin_tx,
            admin_rx,
            retired: Vec::new(),
            draining: false,
        };
        core.arm_accept();
        core.arm_wake();
        Ok(core)
    }

    fn gen(&mut self) -> u32 {
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        self.next_gen
    }

    fn arm_accept(&mut self) {
        let Some(l) = &self.listener else { return };
        if self.accepting || self.draining {
            return;
        }
        let e = opcode::AcceptMulti::new(Fd(l.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(Op::new(Kind::Accept, NO_SLOT, 0).encode());
        // SAFETY: accept points to no memory.
        unsafe { push(&mut self.ring, e) };
        self.accepting = true;
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
        unsafe { push(&mut self.ring, e) };
        self.wake_armed = true;
    }

    fn serve(&mut self, stop: &AtomicBool) {
        let interval = self.cfg.stats_interval.max(Duration::from_millis(10));
        let mut next_stats = Instant::now() + interval;
        let mut drain_until = None;
        loop {
            let now = Instant::now();
            if stop.load(Ordering::Acquire) && !self.draining {
                self.begin_drain(now);
                drain_until = Some(now + self.cfg.drain_timeout);
            }
            if let Some(until) = drain_until {
                if self.live == 0 {
                    break;
                }
                if now >= until {
                    tracing::warn!(
                        connections = self.live,
                        "drain timeout: closing connections still busy"
                    );
                    break;
                }
            }
            self.fire_timers(now);
            if now >= next_stats {
                self.upstreams.evict_expired(now);
                self.shared.hand_over(&mut self.stats, self.live);
                next_stats = now + interval;
            }
            self.arm_accept();
            self.arm_wake();
            let mut wake_at = next_stats.min(now + MAX_WAIT);
            if let Some(Reverse((t, _, _))) = self.timers.peek() {
                wake_at = wake_at.min(*t);
            }
            if let Some(until) = drain_until {
                wake_at = wake_at.min(until);
            }
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
            loop {
                let next = self.ring.completion().next();
                let Some(cqe) = next else { break };
                let slot = Op::decode(cqe.user_data()).map_or(NO_SLOT, |op| op.slot);
                self.contained(slot, |core| core.complete(cqe));
            }
        }
        // Dropping the ring cancels what is still in flight.
        self.shared.hand_over(&mut self.stats, self.live);
    }

    fn begin_drain(&mut self, now: Instant) {
        self.draining = true;
        if self.accepting {
            let e = opcode::AsyncCancel::new(Op::new(Kind::Accept, NO_SLOT, 0).encode())
                .build()
                .user_data(Op::new(Kind::Cancel, NO_SLOT, 0).encode());
            // SAFETY: cancel points to no memory.
            unsafe { push(&mut self.ring, e) };
        }
        self.listener = None;
        for i in 0..self.slots.len() {
            let idx = i as u32;
            self.contained(idx, |core| {
                if let Some(s) = core.slots[i].as_deref_mut().filter(|s| !s.poisoned) {
                    s.conn.drain(now);
                    core.update(idx, now);
                }
            });
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((t, idx, gen))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(s) = self.slot(idx, gen) else {
                continue;
            };
            if s.timer_at != Some(t) {
                continue;
            }
            s.timer_at = None;
            self.contained(idx, |core| {
                if let Some(s) = core.slot(idx, gen).filter(|s| !s.poisoned) {
                    if s.conn.timeout().is_some_and(|d| d <= now) {
                        s.conn.handle_timeout(now);
                    }
                }
                core.update(idx, now);
            });
        }
    }

    /// Runs `f`, which works on slot `idx`'s connection, inside a panic
    /// boundary: a panic closes that connection only (its slot is poisoned
    /// and freed once its operations end), is logged with the peer and
    /// counted, and the core goes on with every other connection.
    fn contained(&mut self, idx: u32, f: impl FnOnce(&mut Self)) {
        let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(self))) else {
            return;
        };
        let status = self.shared.status.clone();
        let Some(s) = self
            .slots
            .get_mut(idx as usize)
            .and_then(|s| s.as_deref_mut())
        else {
            crate::driver::contained_panic(&status, None, &*payload);
            return;
        };
        crate::driver::contained_panic(&status, Some(s.peer), &*payload);
        s.poisoned = true;
        s.closing = true;
        shut(s.stream.as_raw_fd());
        retire(&mut self.retired, s.up.take());
        self.free_if_idle(idx);
    }

    /// Frees a closing slot once no operation on it is in flight.
    fn free_if_idle(&mut self, idx: u32) {
        let idle = self
            .slots
            .get(idx as usize)
            .and_then(|s| s.as_deref())
            .is_some_and(|s| s.closing && s.inflight == 0);
        if idle {
            self.slots[idx as usize] = None;
            self.free.push(idx);
            self.live -= 1;
        }
    }

    fn slot(&mut self, idx: u32, gen: u32) -> Option<&mut Slot> {
        self.slots
            .get_mut(idx as usize)?
            .as_deref_mut()
            .filter(|s| s.gen == gen)
    }

    fn complete(&mut self, cqe: cqueue::Entry) {
        let Some(op) = Op::decode(cqe.user_data()) else {
            return;
        };
        let (res, flags) = (cqe.result(), cqe.flags());
        let now = Instant::now();
        if matches!(op.kind, Kind::Recv | Kind::Send | Kind::Cancel) {
            let poisoned = self
                .slot(op.slot, op.gen)
                .filter(|s| s.poisoned)
                .map(|s| {
                    if !cqueue::more(flags) {
                        s.inflight -= 1;
                    }
                })
                .is_some();
            if poisoned {
                if let Some(b) = cqueue::buffer_select(flags) {
                    self.bufs.recycle(b);
                }
                self.free_if_idle(op.slot);
                return;
            }
        }
        match op.kind {
            Kind::Accept => self.accepted(res, flags, now),
            Kind::Wake => self.woken(now),
            Kind::Recv => self.received(op, res, flags, now),
            Kind::Send => self.sent(op, res, now),
            Kind::Cancel => {
                if let Some(s) = self.slot(op.slot, op.gen) {
                    s.inflight -= 1;
                    self.update(op.slot, now);
                }
            }
            Kind::UpConnect => self.up_connected(op, res, now),
            Kind::UpSend => self.up_sent(op, res, now),
            Kind::UpRecv => self.up_received(op, res, flags, now),
        }
    }

    fn accepted(&mut self, res: i32, flags: u32, now: Instant) {
        if !cqueue::more(flags) {
            self.accepting = false;
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
        if self.live >= self.cfg.max_connections_per_core {
            refuse(stream.as_fd());
            return;
        }
        let _ = stream.set_nodelay(true);
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        self.upstreams.refresh(&self.shared.live);
        let conn = Conn::new(
            self.upstreams.engine().clone(),
            self.shared.status.clone(),
            self.shared.cache.clone(),
            peer.ip(),
            now,
        );
        let gen = self.gen();
        // SAFETY: an all-zero msghdr and iovec are valid empty values.
        let (msg, iov) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        let slot = Box::new(Slot {
            gen,
            stream,
            peer,
            conn,
            inflight: 0,
            recv_armed: false,
            cancel_sent: false,
            sending: false,
            closing: false,
            poisoned: false,
            iov,
            msg,
            up: None,
            last_target: None,
            timer_at: None,
        });
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        self.live += 1;
        self.update(idx, now);
    }

    fn woken(&mut self, now: Instant) {
        self.wake_armed = false;
        while let Ok((idx, gen, resp)) = self.admin_rx.try_recv() {
            self.contained(idx, |core| {
                if let Some(s) = core.slot(idx, gen).filter(|s| !s.poisoned) {
                    s.conn.admin_response(now, resp);
                    core.update(idx, now);
                }
            });
        }
    }

    fn received(&mut self, op: Op, res: i32, flags: u32, now: Instant) {
        let bid = cqueue::buffer_select(flags);
        let Some(s) = self
            .slots
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
        match res {
            n if n > 0 => {
                if let Some(b) = bid {
                    if !s.closing {
                        s.conn.recv_client(now, self.bufs.get(b, n as usize));
                    }
                    self.bufs.recycle(b);
                }
            }
            0 => s.conn.client_eof(now),
            e if e == -libc::ENOBUFS || e == -libc::ECANCELED => {}
            _ => s.closing = true,
        }
        self.update(op.slot, now);
    }

    fn sent(&mut self, op: Op, res: i32, now: Instant) {
        let Some(s) = self.slot(op.slot, op.gen) else {
            return;
        };
        s.inflight -= 1;
        s.sending = false;
        if res < 0 {
            s.closing = true;
        } else {
            s.conn.client_written(res as usize, now);
        }
        self.update(op.slot, now);
    }

    /// The slot whose current upstream has generation `gen`.
    fn up_slot(&mut self, op: Op) -> Option<(&mut Conn, &mut Upstream)> {
        let s = self.slots.get_mut(op.slot as usize)?.as_deref_mut()?;
        let up = s.up.as_mut().filter(|u| u.gen == op.gen)?;
        Some((&mut s.conn, up))
    }

    fn up_connected(&mut self, op: Op, res: i32, now: Instant) {
        let Some(s) = self
            .slots
            .get_mut(op.slot as usize)
            .and_then(|s| s.as_deref_mut())
        else {
            return;
        };
        let Some(up) = s.up.as_mut().filter(|u| u.gen == op.gen) else {
            return;
        };
        up.addr = None;
        if res == 0 {
            up.connected = true;
            self.upstreams.connected(up.target);
            s.last_target = Some(up.target);
            s.conn.upstream_connected(now, false);
        } else {
            self.upstreams.connect_failed(up.target);
            s.up = None;
            s.conn.upstream_connect_failed(now);
        }
        self.update(op.slot, now);
    }

    fn up_sent(&mut self, op: Op, res: i32, now: Instant) {
        let Some((conn, up)) = self.up_slot(op) else {
            self.retired.retain(|(g, _)| *g != op.gen);
            return;
        };
        up.send_inflight = false;
        let Some(mut b) = up.sending.take() else {
            return;
        };
        if res < 0 {
            conn.upstream_reset(now);
        } else if (res as usize) < b.len() {
            b.advance(res as usize);
            up.sending = Some(b);
        } else {
            conn.upstream_sent(now);
        }
        self.update(op.slot, now);
    }

    fn up_received(&mut self, op: Op, res: i32, flags: u32, now: Instant) {
        let bid = cqueue::buffer_select(flags);
        let bufs = &mut self.bufs;
        let Some(s) = self
            .slots
            .get_mut(op.slot as usize)
            .and_then(|s| s.as_deref_mut())
        else {
            if let Some(b) = bid {
                bufs.recycle(b);
            }
            return;
        };
        let Some(up) = s.up.as_mut().filter(|u| u.gen == op.gen) else {
            if let Some(b) = bid {
                bufs.recycle(b);
            }
            return;
        };
        up.recv_armed = false;
        match res {
            n if n > 0 => {
                if let Some(b) = bid {
                    s.conn.recv_upstream(now, bufs.get(b, n as usize));
                    bufs.recycle(b);
                }
            }
            e if e == -libc::ENOBUFS => {}
            0 => s.conn.upstream_eof(now),
            _ => s.conn.upstream_reset(now),
        }
        self.update(op.slot, now);
    }

    /// Carries out what the engine asks for and arms the operations the
    /// connection needs now; frees the slot once it is closed and idle.
    fn update(&mut self, idx: u32, now: Instant) {
        let Some(s) = self
            .slots
            .get_mut(idx as usize)
            .and_then(|s| s.as_deref_mut())
            .filter(|s| !s.poisoned)
        else {
            return self.free_if_idle(idx);
        };
        while let Some(action) = s.conn.poll_action() {
            match action {
                Action::Connect { fresh, attempt } => {
                    retire(&mut self.retired, s.up.take());
                    let (target, checkout) = self.upstreams.checkout(
                        &self.shared.live,
                        self.shared.status.route(),
                        attempt,
                        fresh,
                        now,
                        idle_conn_alive,
                    );
                    self.next_gen = self.next_gen.wrapping_add(1).max(1);
                    let gen = self.next_gen;
                    match checkout {
                        Checkout::Reused { conn, .. } => {
                            s.up = Some(Upstream {
                                gen,
                                target,
                                stream: conn,
                                addr: None,
                                connected: true,
                                recv_armed: false,
                                sending: None,
                                send_inflight: false,
                            });
                            s.last_target = Some(target);
                            s.conn.upstream_connected(now, true);
                        }
                        Checkout::Connect { addr, .. } => {
                            match start_connect(&mut self.ring, addr, idx, gen) {
                                Ok((stream, addr)) => {
                                    s.up = Some(Upstream {
                                        gen,
                                        target,
                                        stream,
                                        addr: Some(addr),
                                        connected: false,
                                        recv_armed: false,
                                        sending: None,
                                        send_inflight: false,
                                    });
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, %addr, "cannot open an upstream socket");
                                    self.upstreams.connect_failed(target);
                                    s.conn.upstream_connect_failed(now);
                                }
                            }
                        }
                    }
                }
                Action::Release { reuse } => {
                    if let Some(up) = s.up.take() {
                        if reuse && up.connected && up.sending.is_none() && !up.recv_armed {
                            self.upstreams.checkin(up.target, up.stream, now);
                        } else {
                            retire(&mut self.retired, Some(up));
                        }
                    }
                }
                Action::Admin(req) => {
                    spawn_admin(&self.shared, &self.admin_tx, &self.waker, idx, s.gen, req)
                }
            }
        }
        while let Some(done) = s.conn.poll_completion() {
            self.shared.record(
                &mut self.stats,
                done,
                &self.upstreams,
                s.last_target,
                s.peer,
            );
        }

        if let Some(up) = s.up.as_mut().filter(|u| u.connected) {
            let fd = Fd(up.stream.as_raw_fd());
            if up.sending.is_none()
                && s.conn.upstream_attached()
                && !s.conn.upstream_output().is_empty()
            {
                up.sending = Some(s.conn.take_upstream_output());
            }
            if let (Some(b), false) = (&up.sending, up.send_inflight) {
                let e = opcode::Send::new(fd, b.as_ptr(), b.len() as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(Op::new(Kind::UpSend, idx, up.gen).encode());
                // SAFETY: the bytes stay in `up.sending` (or `retired`)
                // until the send completes.
                unsafe { push(&mut self.ring, e) };
                up.send_inflight = true;
            }
            if !up.recv_armed && s.conn.wants_upstream_bytes() {
                // The answer cannot be there before the request went out:
                // wait for readiness instead of trying first.
                let e = opcode::Recv::new(fd, std::ptr::null_mut(), BUF_SIZE as u32)
                    .buf_group(BGID)
                    .ioprio(RECVSEND_POLL_FIRST)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT)
                    .user_data(Op::new(Kind::UpRecv, idx, up.gen).encode());
                // SAFETY: the buffer comes from the registered buffer ring.
                unsafe { push(&mut self.ring, e) };
                up.recv_armed = true;
            }
        }

        if !s.closing && s.conn.is_aborted() {
            // A client that stopped reading: shutting the socket ends the
            // send still in flight; the slot (and the bytes that send
            // points to) goes once it has completed.
            s.closing = true;
            crate::driver::reset_on_close(&s.stream);
            shut(s.stream.as_raw_fd());
        }
        let fd = Fd(s.stream.as_raw_fd());
        if !s.closing && !s.sending && s.conn.client_pending() > 0 {
            s.conn.pin_client_output();
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let n = s.conn.client_slices(&mut slices);
            for (iov, sl) in s.iov.iter_mut().zip(&slices[..n]) {
                *iov = libc::iovec {
                    iov_base: sl.as_ptr() as *mut _,
                    iov_len: sl.len(),
                };
            }
            let data = Op::new(Kind::Send, idx, s.gen).encode();
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
            // SAFETY: the chunks are pinned in the engine until
            // `client_written`; `iov` and `msg` live in the boxed slot,
            // which is not freed while a send is in flight.
            unsafe { push(&mut self.ring, e.user_data(data)) };
            s.sending = true;
            s.inflight += 1;
        }
        if !s.closing && !s.sending && s.conn.is_finished() {
            s.closing = true;
            // SAFETY: plain syscall: a FIN after the last response.
            unsafe { libc::shutdown(s.stream.as_raw_fd(), libc::SHUT_WR) };
        }
        if s.closing {
            retire(&mut self.retired, s.up.take());
        }

        let want = !s.closing && s.conn.wants_client_bytes();
        if want && !s.recv_armed {
            let e = opcode::RecvMulti::new(fd, BGID)
                .build()
                .user_data(Op::new(Kind::Recv, idx, s.gen).encode());
            // SAFETY: buffers come from the registered buffer ring.
            unsafe { push(&mut self.ring, e) };
            s.recv_armed = true;
            s.cancel_sent = false;
            s.inflight += 1;
        } else if !want && s.recv_armed && !s.cancel_sent {
            let e = opcode::AsyncCancel::new(Op::new(Kind::Recv, idx, s.gen).encode())
                .build()
                .user_data(Op::new(Kind::Cancel, idx, s.gen).encode());
            // SAFETY: cancel points to no memory.
            unsafe { push(&mut self.ring, e) };
            s.cancel_sent = true;
            s.inflight += 1;
        }

        if s.closing && s.inflight == 0 {
            self.free_if_idle(idx);
            return;
        }
        if let Some(t) = s.conn.timeout() {
            if s.timer_at.is_none_or(|at| t < at) {
                s.timer_at = Some(t);
                self.timers.push(Reverse((t, idx, s.gen)));
            }
        }
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
    // SAFETY: the address is boxed in the upstream until the connect
    // completes (the kernel copies it at submission anyway).
    unsafe { push(ring, e) };
    Ok((sock.into(), sa))
}

/// Lets go of an upstream socket: shut down (ending its operations in
/// flight) and closed; bytes the kernel may still be sending are kept in
/// `retired` until their completion arrives.
fn retire(retired: &mut Vec<(u32, Bytes)>, up: Option<Upstream>) {
    let Some(up) = up else { return };
    if !up.connected || up.recv_armed || up.send_inflight {
        shut(up.stream.as_raw_fd());
    }
    if let (Some(b), true) = (up.sending, up.send_inflight) {
        retired.push((up.gen, b));
    }
}

/// Runs an admin call on the control runtime; its answer comes back
/// through the core's channel and eventfd.
fn spawn_admin(
    shared: &Shared,
    tx: &mpsc::Sender<(u32, u32, AdminResponse)>,
    waker: &Arc<Waker>,
    idx: u32,
    gen: u32,
    req: AdminRequest,
) {
    let call = shared.admin.call(req);
    let (tx, waker) = (tx.clone(), waker.clone());
    shared.spawner.spawn(async move {
        let resp = call.await;
        if tx.send((idx, gen, resp)).is_ok() {
            waker.wake();
        }
    });
}
