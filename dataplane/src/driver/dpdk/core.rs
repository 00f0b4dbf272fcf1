//! The DPDK core's poll loop: the port through smoltcp for clients, a
//! non-blocking epoll set (polled with a zero timeout) for the kernel
//! sockets to the upstreams, and the engine between them.

use super::device::{ArpShare, PortQueue};
use super::eal::Mempool;
use super::DpdkConfig;
use crate::driver::upstreams::{Target, Upstreams};
use crate::driver::{DriverConfig, Shared};
use crate::proxy::{Action, Conn};
use crate::stats::CoreStats;
use crate::upstream::pool::Checkout;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, Ipv4Address};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Listening sockets kept ready: the stack's accept backlog.
const BACKLOG: usize = 16;
/// Receive and send buffer of each smoltcp socket.
const SOCKET_BUF: usize = 64 * 1024;
/// Polls without work after which the core naps between polls, so an idle
/// gateway does not hold a CPU at 100 % (a busy one never naps).
const IDLE_POLLS: u32 = 2000;
/// How long a closed connection may wait for the peer's side of the close
/// before it is reset.
const CLOSE_LIMIT: Duration = Duration::from_secs(10);
/// How long an idle core naps.
const NAP: Duration = Duration::from_micros(50);

/// What the DPDK core is given at start.
pub(super) struct Setup {
    /// The core's id in the statistics.
    pub(super) core: usize,
    pub(super) dpdk: DpdkConfig,
    /// The queue pair this core polls.
    pub(super) queue: u16,
    /// ARP frames shared with the other queues' cores.
    pub(super) arp: Option<ArpShare>,
    pub(super) mac: [u8; 6],
    pub(super) pool: Mempool,
    pub(super) cfg: DriverConfig,
    pub(super) shared: Shared,
    pub(super) stop: Arc<AtomicBool>,
}

/// An upstream kernel socket of a client connection.
struct Upstream {
    stream: TcpStream,
    target: Target,
    connected: bool,
    readable: bool,
    writable: bool,
}

/// A client connection on the stack.
struct Slot {
    handle: SocketHandle,
    conn: Conn,
    peer: SocketAddr,
    up: Option<Upstream>,
    last_target: Option<Target>,
    eof_seen: bool,
    /// When the gateway closed its side.
    closing: Option<Instant>,
}

/// The epoll set of the upstream sockets, and how many it watches (none:
/// no syscall to ask).
struct Poller(OwnedFd, usize);

impl Poller {
    fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }, 0))
    }

    /// Watches `s` (edge-triggered) for slot `key`.
    fn add(&mut self, s: &TcpStream, key: u64) {
        self.1 += 1;
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: key,
        };
        // SAFETY: valid fds and event.
        unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                s.as_raw_fd(),
                &mut ev,
            )
        };
    }

    fn remove(&mut self, s: &TcpStream) {
        self.1 = self.1.saturating_sub(1);
        // SAFETY: valid fds; a null event is allowed for DEL.
        unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                s.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
    }

    /// The events ready now, without waiting.
    fn ready(&self, out: &mut [libc::epoll_event]) -> usize {
        if self.1 == 0 {
            return 0;
        }
        // SAFETY: `out` has room for its length of events.
        let n =
            unsafe { libc::epoll_wait(self.0.as_raw_fd(), out.as_mut_ptr(), out.len() as i32, 0) };
        n.max(0) as usize
    }
}

/// A fresh listening socket on `port`.
fn listener(port: u16) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; SOCKET_BUF]),
        tcp::SocketBuffer::new(vec![0; SOCKET_BUF]),
    );
    s.set_nagle_enabled(false);
    // A fresh socket always listens.
    let _ = s.listen(port);
    s
}

/// 64 bits from `getrandom(2)`; falls back to the clock only if the call
/// fails (it does not on Linux 3.17 and later).
fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: writes at most 8 bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 8 {
        return u64::from_ne_bytes(b);
    }
    tracing::warn!("getrandom failed: TCP sequence numbers seeded from the clock");
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn idle_conn_alive(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.peek(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// A core's connections and everything they use, apart from the port and
/// the interface (which `run` owns, as smoltcp borrows them together).
struct Core {
    listen_port: u16,
    max_connections: usize,
    shared: Shared,
    sockets: SocketSet<'static>,
    listeners: Vec<SocketHandle>,
    /// Sockets reset after a contained panic: removed once the interface
    /// has sent their RST.
    aborted: Vec<SocketHandle>,
    slots: Vec<Option<Slot>>,
    /// Slots in use.
    live: usize,
    upstreams: Upstreams<TcpStream>,
    poller: Poller,
    events: Vec<libc::epoll_event>,
    stats: CoreStats,
    buf: Vec<u8>,
    draining: bool,
}

/// Runs the core until stopped and drained.
pub(super) fn run(setup: Setup) {
    let Setup {
        core: core_id,
        dpdk,
        queue,
        arp,
        mac,
        pool,
        cfg,
        shared,
        stop,
    } = setup;
    let poller = match Poller::new() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "DPDK core: cannot create its epoll set");
            return;
        }
    };
    let mut dev = PortQueue::new(dpdk.port, queue, pool, arp);
    let start = Instant::now();
    let clock = |t: Instant| {
        smoltcp::time::Instant::from_micros(t.duration_since(start).as_micros() as i64)
    };
    let mut iface_cfg = Config::new(EthernetAddress(mac).into());
    // The stack's TCP initial sequence numbers come from this seed: it must
    // not be guessable (RFC 6528), so it comes from the kernel's CSPRNG.
    iface_cfg.random_seed = random_seed();
    let mut iface = Interface::new(iface_cfg, &mut dev, clock(Instant::now()));
    let a = dpdk.address.octets();
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(
            IpAddress::v4(a[0], a[1], a[2], a[3]),
            dpdk.prefix_len,
        ));
    });
    if let Some(gw) = dpdk.gateway {
        let g = gw.octets();
        let _ = iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Address::new(g[0], g[1], g[2], g[3]));
    }
    let mut core = Core {
        listen_port: dpdk.listen_port,
        max_connections: cfg.max_connections_per_core,
        upstreams: Upstreams::new(&shared.live),
        shared,
        sockets: SocketSet::new(Vec::new()),
        listeners: Vec::new(),
        aborted: Vec::new(),
        slots: Vec::new(),
        live: 0,
        poller,
        events: vec![libc::epoll_event { events: 0, u64: 0 }; 64],
        stats: CoreStats::for_core(core_id),
        buf: vec![0u8; 16 * 1024],
        draining: false,
    };
    core.fill_backlog();
    let mut next_stats = Instant::now() + cfg.stats_interval;
    let mut drain_until: Option<Instant> = None;
    let mut idle = 0u32;
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Acquire) && drain_until.is_none() {
            drain_until = Some(now + cfg.drain_timeout);
            core.begin_drain(now);
        }
        if let Some(until) = drain_until {
            if core.live == 0 || now >= until {
                if core.live > 0 {
                    tracing::warn!(
                        connections = core.live,
                        "drain timeout: closing connections still busy"
                    );
                }
                break;
            }
        }
        let mut busy = dev.has_rx();
        iface.poll(clock(now), &mut dev, &mut core.sockets);
        busy |= core.accept(now);
        busy |= core.upstream_events();
        for key in 0..core.slots.len() {
            match catch_unwind(AssertUnwindSafe(|| core.service(key, now))) {
                Ok(b) => busy |= b,
                Err(payload) => core.contain_panic(key, &*payload),
            }
        }
        // Send what the engine queued in this pass.
        iface.poll(clock(Instant::now()), &mut dev, &mut core.sockets);
        for h in core.aborted.drain(..) {
            core.sockets.remove(h);
        }
        dev.flush();

        if now >= next_stats {
            core.upstreams.evict_expired(now);
            core.shared.hand_over(&mut core.stats, core.live);
            next_stats = now + cfg.stats_interval;
        }
        if busy {
            idle = 0;
        } else {
            idle = idle.saturating_add(1);
            if idle > IDLE_POLLS {
                std::thread::sleep(NAP);
            }
        }
    }
    core.shared.hand_over(&mut core.stats, core.live);
}

impl Core {
    /// Keeps [`BACKLOG`] sockets listening while under the connection
    /// limit; past it, SYNs find no listener and are reset.
    fn fill_backlog(&mut self) {
        while !self.draining
            && self.listeners.len() < BACKLOG
            && self.live + self.listeners.len() < self.max_connections
        {
            let h = self.sockets.add(listener(self.listen_port));
            self.listeners.push(h);
        }
    }

    /// Stops listening and asks every connection to finish.
    fn begin_drain(&mut self, now: Instant) {
        self.draining = true;
        for h in self.listeners.drain(..) {
            self.sockets.remove(h);
        }
        for s in self.slots.iter_mut().flatten() {
            s.conn.drain(now);
        }
    }

    /// Turns listeners that left `Listen` into connections.
    fn accept(&mut self, now: Instant) -> bool {
        let mut accepted = false;
        let mut i = 0;
        while i < self.listeners.len() {
            let h = self.listeners[i];
            let sock = self.sockets.get_mut::<tcp::Socket>(h);
            if sock.state() == tcp::State::Listen {
                i += 1;
                continue;
            }
            accepted = true;
            self.listeners.swap_remove(i);
            let peer = sock
                .remote_endpoint()
                .map(|e| match e.addr {
                    IpAddress::Ipv4(v4) => SocketAddr::new(IpAddr::V4(v4), e.port),
                })
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            self.upstreams.refresh(&self.shared.live);
            let slot = Slot {
                handle: h,
                conn: Conn::new(
                    self.upstreams.engine().clone(),
                    self.shared.status.clone(),
                    self.shared.cache.clone(),
                    peer.ip(),
                    now,
                )
                // A peer on the port is never local, whatever its address.
                .without_local_admin(),
                peer,
                up: None,
                last_target: None,
                eof_seen: false,
                closing: None,
            };
            match self.slots.iter().position(Option::is_none) {
                Some(free) => self.slots[free] = Some(slot),
                None => self.slots.push(Some(slot)),
            }
            self.live += 1;
        }
        self.fill_backlog();
        accepted
    }

    /// Marks the upstream sockets that became readable or writable.
    fn upstream_events(&mut self) -> bool {
        let n = self.poller.ready(&mut self.events);
        for ev in &self.events[..n] {
            let (key, bits) = (ev.u64 as usize, ev.events);
            if let Some(up) = self
                .slots
                .get_mut(key)
                .and_then(|s| s.as_mut())
                .and_then(|s| s.up.as_mut())
            {
                let (read, write) = (
                    (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32,
                    (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32,
                );
                up.readable |= bits & read != 0;
                up.writable |= bits & write != 0;
            }
        }
        n > 0
    }

    /// The engine panicked on connection `key`: it is reset and freed,
    /// the panic logged with its peer and counted; the core goes on.
    fn contain_panic(&mut self, key: usize, payload: &(dyn std::any::Any + Send)) {
        let Some(s) = self.slots.get_mut(key).and_then(Option::take) else {
            crate::driver::contained_panic(&self.shared.status, None, payload);
            return;
        };
        crate::driver::contained_panic(&self.shared.status, Some(s.peer), payload);
        if let Some(up) = &s.up {
            self.poller.remove(&up.stream);
        }
        self.sockets.get_mut::<tcp::Socket>(s.handle).abort();
        // The aborted socket sends its RST on the next poll, then goes.
        self.aborted.push(s.handle);
        self.live -= 1;
        self.fill_backlog();
    }

    /// Moves one connection's bytes between its socket, the engine and its
    /// upstream; frees it once closed. Whether anything happened.
    fn service(&mut self, key: usize, now: Instant) -> bool {
        let Core {
            sockets,
            slots,
            live,
            upstreams,
            poller,
            shared,
            stats,
            buf,
            ..
        } = self;
        let Some(s) = slots.get_mut(key).and_then(|s| s.as_mut()) else {
            return false;
        };
        let mut busy = false;
        let sock = sockets.get_mut::<tcp::Socket>(s.handle);
        // Client → engine.
        while s.conn.wants_client_bytes() && sock.can_recv() {
            let conn = &mut s.conn;
            let got = sock.recv(|data| {
                conn.recv_client(now, data);
                (data.len(), data.len())
            });
            busy = true;
            if !matches!(got, Ok(n) if n > 0) {
                break;
            }
        }
        if !s.eof_seen && !sock.may_recv() && sock.state() != tcp::State::SynReceived {
            s.eof_seen = true;
            s.conn.client_eof(now);
        }
        if s.conn.timeout().is_some_and(|t| t <= now) {
            s.conn.handle_timeout(now);
        }
        // Engine actions.
        while let Some(action) = s.conn.poll_action() {
            busy = true;
            match action {
                Action::Connect { fresh, attempt } => {
                    connect_upstream(s, key, fresh, attempt, poller, upstreams, shared, now)
                }
                Action::Release { reuse } => {
                    if let Some(up) = s.up.take() {
                        poller.remove(&up.stream);
                        if reuse && up.connected {
                            upstreams.checkin(up.target, up.stream, now);
                        }
                    }
                }
                // Never: a DPDK peer has no local admin, and the admin
                // API answers on its own port.
                Action::Admin(_) => {}
            }
        }
        busy |= upstream_io(s, poller, upstreams, buf, now);
        // Engine → client.
        while s.conn.client_pending() > 0 && sock.can_send() {
            match sock.send_slice(s.conn.client_output()) {
                Ok(n) if n > 0 => {
                    busy = true;
                    s.conn.client_written(n, now);
                }
                _ => break,
            }
        }
        while let Some(done) = s.conn.poll_completion() {
            shared.record(stats, done, upstreams, s.last_target, s.peer);
        }
        // Close and free.
        if s.closing.is_none() && s.conn.is_finished() {
            s.closing = Some(now);
            if s.conn.is_aborted() {
                // A client that stopped reading: reset, do not wait on it.
                sock.abort();
            } else {
                sock.close();
            }
        }
        let mut gone = matches!(sock.state(), tcp::State::Closed | tcp::State::TimeWait);
        if !gone
            && s.closing
                .is_some_and(|t| now.duration_since(t) > CLOSE_LIMIT)
        {
            // The peer never finished the close (FIN-WAIT-2 for ever).
            sock.abort();
            gone = true;
        }
        if (s.closing.is_some() || s.eof_seen) && gone {
            if let Some(up) = s.up.take() {
                poller.remove(&up.stream);
            }
            sockets.remove(s.handle);
            slots[key] = None;
            *live -= 1;
            self.fill_backlog();
        }
        busy
    }
}

/// Carries out the engine's `Connect`: a pooled connection or a new
/// non-blocking connect, watched by the core's epoll set.
#[allow(clippy::too_many_arguments)]
fn connect_upstream(
    s: &mut Slot,
    key: usize,
    fresh: bool,
    attempt: usize,
    poller: &mut Poller,
    upstreams: &mut Upstreams<TcpStream>,
    shared: &Shared,
    now: Instant,
) {
    if let Some(old) = s.up.take() {
        poller.remove(&old.stream);
    }
    let (target, checkout) = upstreams.checkout(
        &shared.live,
        shared.status.route(),
        attempt,
        fresh,
        now,
        idle_conn_alive,
    );
    let (stream, connected) = match checkout {
        Checkout::Reused { conn, .. } => (conn, true),
        Checkout::Connect { addr, .. } => match connect(addr) {
            Ok(stream) => (stream, false),
            Err(_) => {
                upstreams.connect_failed(target);
                s.conn.upstream_connect_failed(now);
                return;
            }
        },
    };
    poller.add(&stream, key as u64);
    s.up = Some(Upstream {
        stream,
        target,
        connected,
        readable: connected,
        writable: connected,
    });
    if connected {
        s.last_target = Some(target);
        s.conn.upstream_connected(now, true);
    }
}

/// Finishes a connect in progress, writes the request, reads the answer
/// while the engine wants it. Whether any bytes came in.
fn upstream_io(
    s: &mut Slot,
    poller: &mut Poller,
    upstreams: &Upstreams<TcpStream>,
    buf: &mut [u8],
    now: Instant,
) -> bool {
    let mut busy = false;
    if let Some(up) = s.up.as_mut().filter(|u| !u.connected && u.writable) {
        let target = up.target;
        if matches!(up.stream.take_error(), Ok(None)) {
            up.connected = true;
            upstreams.connected(target);
            s.last_target = Some(target);
            s.conn.upstream_connected(now, false);
        } else {
            upstreams.connect_failed(target);
            if let Some(up) = s.up.take() {
                poller.remove(&up.stream);
            }
            s.conn.upstream_connect_failed(now);
        }
    }
    let Some(up) = s.up.as_mut().filter(|u| u.connected) else {
        return busy;
    };
    while up.writable && s.conn.upstream_attached() && !s.conn.upstream_output().is_empty() {
        match up.stream.write(s.conn.upstream_output()) {
            Ok(n) => s.conn.upstream_written(n, now),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => up.writable = false,
            Err(_) => {
                up.writable = false;
                s.conn.upstream_reset(now);
            }
        }
    }
    while up.readable && s.conn.wants_upstream_bytes() {
        match up.stream.read(buf) {
            Ok(0) => {
                up.readable = false;
                s.conn.upstream_eof(now);
            }
            Ok(n) => {
                busy = true;
                s.conn.recv_upstream(now, &buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => up.readable = false,
            Err(_) => {
                up.readable = false;
                s.conn.upstream_reset(now);
            }
        }
    }
    busy
}

/// Starts a non-blocking connect to `addr`.
fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?;
    match s.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(s.into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sequence_number_seed_is_not_the_clock_or_the_pid() {
        let seeds: Vec<u64> = (0..8).map(|_| super::random_seed()).collect();
        for (i, a) in seeds.iter().enumerate() {
            assert!(seeds[i + 1..].iter().all(|b| b != a), "{seeds:x?}");
        }
        // pid ^ nanoseconds since start (the old seed) has its high bits
        // clear; eight kernel draws all below 2^40 would be a 2^-192 event.
        assert!(seeds.iter().any(|s| *s >> 40 != 0), "{seeds:x?}");
    }
}
