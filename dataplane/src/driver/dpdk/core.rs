//! The DPDK core's poll loop: the port through smoltcp for clients, a
//! non-blocking epoll set (polled with a zero timeout) for the kernel
//! sockets to the upstreams, and the [`Endpoint`] deciding everything.

use super::device::{ArpShare, PortQueue};
use super::eal::Mempool;
use super::DpdkConfig;
use crate::driver::put_slot;
use crate::driver::{DriverConfig, Shared};
use crate::endpoint::{ClientId, Command, Endpoint, Event, UpstreamId};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, Ipv4Address};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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

/// An upstream kernel socket.
struct UpSock {
    id: UpstreamId,
    stream: TcpStream,
    connected: bool,
    readable: bool,
    writable: bool,
}

/// A client connection on the stack.
struct ClientSock {
    id: ClientId,
    handle: SocketHandle,
    eof_seen: bool,
    /// The endpoint closed it.
    closing: bool,
    /// Aborted in this pass: kept until the interface has sent the reset
    /// (a socket removed first would take its reset with it).
    reset_pending: bool,
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

    /// Watches `s` (edge-triggered) under `key`.
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

/// A core's sockets and its endpoint, apart from the port and the
/// interface (which `run` owns, as smoltcp borrows them together).
struct Core {
    /// The ports served: plain HTTP and, when on, TLS (`true`).
    ports: Vec<(u16, bool)>,
    ep: Endpoint,
    sockets: SocketSet<'static>,
    /// Listening sockets, each with whether its port is TLS.
    listeners: Vec<(SocketHandle, bool)>,
    clients: Vec<Option<ClientSock>>,
    ups: Vec<Option<UpSock>>,
    poller: Poller,
    events: Vec<libc::epoll_event>,
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
        ports: std::iter::once((dpdk.listen_port, false))
            .chain(dpdk.tls_listen_port.map(|p| (p, true)))
            .collect(),
        // A peer on the port is never local, whatever its address.
        ep: shared.endpoint(core_id, &cfg, false),
        sockets: SocketSet::new(Vec::new()),
        listeners: Vec::new(),
        clients: Vec::new(),
        ups: Vec::new(),
        poller,
        events: vec![libc::epoll_event { events: 0, u64: 0 }; 64],
        buf: vec![0u8; 16 * 1024],
        draining: false,
    };
    core.fill_backlog();
    let mut idle = 0u32;
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Acquire) && !core.draining {
            core.begin_drain(now);
        }
        // The endpoint says when: every client closed, or its drain bound
        // passed (the same on every driver).
        if core.draining && core.ep.drain_over(now) {
            break;
        }
        let mut busy = dev.has_rx();
        iface.poll(clock(now), &mut dev, &mut core.sockets);
        busy |= core.accept(now);
        busy |= core.upstream_events();
        if now >= core.ep.poll_timeout() {
            core.ep.handle(now, Event::Timer);
        }
        busy |= core.pump(now);
        for i in 0..core.clients.len() {
            busy |= core.service_client(i, now);
        }
        for i in 0..core.ups.len() {
            busy |= core.service_up(i, now);
        }
        busy |= core.pump(now);
        // Send what the endpoint queued in this pass.
        iface.poll(clock(Instant::now()), &mut dev, &mut core.sockets);
        dev.flush();
        if busy {
            idle = 0;
        } else {
            idle = idle.saturating_add(1);
            if idle > IDLE_POLLS {
                std::thread::sleep(NAP);
            }
        }
    }
    core.ep.hand_over();
}

impl Core {
    /// Keeps [`BACKLOG`] sockets listening while the endpoint takes more
    /// (it answers those over the connection limit `503` itself); past
    /// that, SYNs find no listener and are reset.
    fn fill_backlog(&mut self) {
        for &(port, tls) in &self.ports {
            let listening =
                |l: &[(SocketHandle, bool)]| l.iter().filter(|(_, t)| *t == tls).count();
            while !self.draining
                && listening(&self.listeners) < BACKLOG
                && self.listeners.len() < self.ep.room()
            {
                let h = self.sockets.add(listener(port));
                self.listeners.push((h, tls));
            }
        }
    }

    /// Stops listening and asks every connection to finish.
    fn begin_drain(&mut self, now: Instant) {
        self.draining = true;
        for (h, _) in self.listeners.drain(..) {
            self.sockets.remove(h);
        }
        self.ep.handle(now, Event::Drain);
    }

    /// Turns listeners that left `Listen` into connections.
    fn accept(&mut self, now: Instant) -> bool {
        let mut accepted = false;
        let mut i = 0;
        while i < self.listeners.len() {
            let (h, tls) = self.listeners[i];
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
            let id = match tls {
                true => self.ep.accept_tls(now, peer),
                false => self.ep.accept(now, peer),
            };
            match id {
                Some(id) => put_slot(
                    &mut self.clients,
                    id.index(),
                    Some(ClientSock {
                        id,
                        handle: h,
                        eof_seen: false,
                        closing: false,
                        reset_pending: false,
                    }),
                ),
                None => {
                    sock.abort();
                    self.sockets.remove(h);
                }
            }
        }
        self.fill_backlog();
        accepted
    }

    /// Marks the upstream sockets that became readable or writable.
    fn upstream_events(&mut self) -> bool {
        let n = self.poller.ready(&mut self.events);
        for ev in &self.events[..n] {
            let (key, bits) = (ev.u64 as usize, ev.events);
            if let Some(up) = self.ups.get_mut(key).and_then(|s| s.as_mut()) {
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

    /// Carries out the endpoint's commands; whether there were any.
    fn pump(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(cmd) = self.ep.poll_command() {
            any = true;
            match cmd {
                // Every socket is looked at on every pass.
                Command::Client(_) | Command::Upstream(_) => {}
                Command::Connect { up, addr } => match connect(addr) {
                    Ok(stream) => {
                        self.poller.add(&stream, up.index() as u64);
                        let sock = UpSock {
                            id: up,
                            stream,
                            connected: false,
                            readable: false,
                            writable: false,
                        };
                        put_slot(&mut self.ups, up.index(), Some(sock));
                    }
                    Err(_) => self.ep.handle(now, Event::ConnectFailed(up)),
                },
                // Never: a DPDK peer has no local admin, and the admin API
                // answers on its own port.
                Command::Admin { .. } => {}
                Command::CloseClient { client, reset } => {
                    let Some(c) = self
                        .clients
                        .get_mut(client.index())
                        .and_then(|c| c.as_mut())
                    else {
                        self.ep.handle(now, Event::ClientClosed(client));
                        continue;
                    };
                    c.closing = true;
                    let sock = self.sockets.get_mut::<tcp::Socket>(c.handle);
                    if reset {
                        // A client given up on: reset, do not wait on it.
                        sock.abort();
                        c.reset_pending = true;
                    } else {
                        sock.close();
                    }
                }
                Command::CloseUpstream(u) => {
                    if let Some(up) = self.ups.get_mut(u.index()).and_then(Option::take) {
                        self.poller.remove(&up.stream);
                    }
                    self.ep.handle(now, Event::UpstreamClosed(u));
                }
            }
        }
        any
    }

    /// Moves client `i`'s bytes between its socket and the endpoint; frees
    /// it once closed. Whether anything happened.
    fn service_client(&mut self, i: usize, now: Instant) -> bool {
        let Core {
            sockets,
            clients,
            ep,
            ..
        } = self;
        let Some(c) = clients.get_mut(i).and_then(|c| c.as_mut()) else {
            return false;
        };
        let (id, mut busy) = (c.id, false);
        let sock = sockets.get_mut::<tcp::Socket>(c.handle);
        if c.closing {
            if std::mem::take(&mut c.reset_pending) {
                return true;
            }
            // A peer that never finishes the close is the endpoint's to
            // give up on (its linger limit, a reset command).
            if matches!(sock.state(), tcp::State::Closed | tcp::State::TimeWait) {
                sockets.remove(c.handle);
                clients[i] = None;
                ep.handle(now, Event::ClientClosed(id));
                self.fill_backlog();
                return true;
            }
            return false;
        }
        while ep.client_interest(id).read && sock.can_recv() {
            let got = sock.recv(|data| {
                ep.handle(now, Event::ClientBytes(id, data));
                (data.len(), data.len())
            });
            busy = true;
            if !matches!(got, Ok(n) if n > 0) {
                break;
            }
        }
        if !c.eof_seen && !sock.may_recv() && sock.state() != tcp::State::SynReceived {
            c.eof_seen = true;
            ep.handle(now, Event::ClientEof(id));
        }
        while ep.client_interest(id).write && sock.can_send() {
            let mut slices = [std::io::IoSlice::new(&[]); 1];
            ep.client_slices(id, &mut slices);
            match sock.send_slice(&slices[0]) {
                Ok(n) if n > 0 => {
                    busy = true;
                    ep.handle(now, Event::ClientWritten(id, n));
                }
                _ => break,
            }
        }
        busy
    }

    /// Finishes a connect in progress, writes what is queued, reads while
    /// the endpoint wants it. Whether any bytes came in.
    fn service_up(&mut self, i: usize, now: Instant) -> bool {
        let Core { ups, ep, buf, .. } = self;
        let Some(up) = ups.get_mut(i).and_then(|u| u.as_mut()) else {
            return false;
        };
        let id = up.id;
        if !up.connected {
            if !up.writable {
                return false;
            }
            up.writable = false;
            if matches!(up.stream.take_error(), Ok(None)) {
                up.connected = true;
                up.writable = true;
                ep.handle(now, Event::Connected(id));
            } else {
                ep.handle(now, Event::ConnectFailed(id));
                return true;
            }
        }
        let mut busy = false;
        while up.writable && ep.upstream_interest(id).write {
            match up.stream.write(ep.upstream_output(id)) {
                Ok(n) => ep.handle(now, Event::UpstreamWritten(id, n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => up.writable = false,
                Err(_) => {
                    up.writable = false;
                    ep.handle(now, Event::UpstreamError(id));
                }
            }
        }
        while up.readable && ep.upstream_interest(id).read {
            match up.stream.read(buf) {
                Ok(0) => {
                    up.readable = false;
                    ep.handle(now, Event::UpstreamEof(id));
                }
                Ok(n) => {
                    busy = true;
                    ep.handle(now, Event::UpstreamBytes(id, &buf[..n]));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => up.readable = false,
                Err(_) => {
                    up.readable = false;
                    ep.handle(now, Event::UpstreamError(id));
                }
            }
        }
        busy
    }
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
