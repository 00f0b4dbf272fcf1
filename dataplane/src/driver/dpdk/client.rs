//! An HTTP/1.1 client on its own smoltcp stack and DPDK port, for the
//! tests and the benchmark over a `net_ring` pair: requests reach the
//! gateway's stack with no kernel in the path.

use super::device::PortQueue;
use super::eal::Mempool;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, Ipv4Address};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One answer the client read.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The response head and body as received.
    pub bytes: Vec<u8>,
    /// From the request's first byte sent to the response's last byte read.
    pub latency: Duration,
}

struct Flow {
    handle: SocketHandle,
    got: Vec<u8>,
    sent_at: Option<Instant>,
    /// The flow's TLS client, when it speaks HTTPS, and the records it
    /// made that the socket has not taken yet.
    tls: Option<(rustls::ClientConnection, Vec<u8>)>,
}

/// A client stack on `port`.
pub struct RingClient {
    dev: PortQueue,
    iface: Interface,
    sockets: SocketSet<'static>,
    start: Instant,
    next_port: u16,
    /// HTTPS: the client settings and the name sent in SNI.
    tls: Option<(Arc<rustls::ClientConfig>, String)>,
    /// The connections [`RingClient::hold`] keeps open.
    held: Vec<SocketHandle>,
}

/// Receive and send buffers of a [`RingClient::hold`] connection: small,
/// so the client's own memory stays out of the gateway's figure.
pub const HOLD_RX: usize = 4 * 1024;
/// See [`HOLD_RX`].
pub const HOLD_TX: usize = 16 * 1024;

impl RingClient {
    /// A stack with `addr`/`prefix` on a started `port`, sending from `pool`.
    pub fn new(port: u16, pool: Mempool, mac: [u8; 6], addr: Ipv4Addr, prefix: u8) -> Self {
        let mut dev = PortQueue::new(port, 0, pool, None);
        let start = Instant::now();
        let mut cfg = Config::new(EthernetAddress(mac).into());
        cfg.random_seed = 0x5eed;
        let mut iface = Interface::new(cfg, &mut dev, smoltcp::time::Instant::from_micros(0));
        let a = addr.octets();
        iface.update_ip_addrs(|v| {
            let _ = v.push(IpCidr::new(IpAddress::v4(a[0], a[1], a[2], a[3]), prefix));
        });
        Self {
            dev,
            iface,
            sockets: SocketSet::new(Vec::new()),
            start,
            next_port: 40000,
            tls: None,
            held: Vec::new(),
        }
    }

    /// Speaks HTTPS from now on (`Some`: the client settings and the name
    /// sent in SNI), or plain HTTP (`None`).
    pub fn set_tls(&mut self, tls: Option<(Arc<rustls::ClientConfig>, String)>) {
        self.tls = tls;
    }

    fn poll(&mut self) {
        let now = smoltcp::time::Instant::from_micros(self.start.elapsed().as_micros() as i64);
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        self.dev.flush();
    }

    /// Opens `conns` connections to `server:port` that pipeline GETs for
    /// `path` and never read, for `limit`: what a client that stops reading
    /// costs the gateway (its window closes once the socket's small receive
    /// buffer is full). The connections stay open until [`Self::run`] or
    /// [`Self::release`]; returns the request bytes the gateway took.
    pub fn hold(
        &mut self,
        server: Ipv4Addr,
        port: u16,
        path: &str,
        conns: usize,
        limit: Duration,
    ) -> usize {
        let s = server.octets();
        let remote = (Ipv4Address::new(s[0], s[1], s[2], s[3]), port);
        let request = format!("GET {path} HTTP/1.1\r\nHost: gateway\r\n\r\n").repeat(64);
        for _ in 0..conns {
            let mut sock = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; HOLD_RX]),
                tcp::SocketBuffer::new(vec![0; HOLD_TX]),
            );
            self.next_port = self.next_port.wrapping_add(1).max(40000);
            let _ = sock.connect(self.iface.context(), remote, self.next_port);
            self.held.push(self.sockets.add(sock));
        }
        let mut sent = 0;
        let end = Instant::now() + limit;
        while Instant::now() < end {
            self.poll();
            for &h in &self.held {
                let sock = self.sockets.get_mut::<tcp::Socket>(h);
                if sock.may_send() {
                    sent += sock.send_slice(request.as_bytes()).unwrap_or(0);
                }
            }
        }
        sent
    }

    /// Closes what [`Self::hold`] opened.
    pub fn release(&mut self) {
        for h in std::mem::take(&mut self.held) {
            self.sockets.get_mut::<tcp::Socket>(h).abort();
            self.poll();
            self.sockets.remove(h);
        }
    }

    /// Sends `requests` GETs for `path` to `server:port` over `conns`
    /// keep-alive connections, one outstanding request per connection;
    /// gives up after `limit`. The answers, in completion order. Every
    /// connection speaks HTTPS after [`Self::set_tls`].
    pub fn run(
        &mut self,
        server: Ipv4Addr,
        port: u16,
        path: &str,
        conns: usize,
        requests: usize,
        limit: Duration,
    ) -> Vec<Answer> {
        let s = server.octets();
        let remote = (Ipv4Address::new(s[0], s[1], s[2], s[3]), port);
        // Over TLS the host is the name sent in SNI: the gateway holds a
        // request to its connection's certificate.
        let host = self
            .tls
            .as_ref()
            .map_or("gateway", |(_, name)| name.as_str());
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
        let mut flows: Vec<Flow> = (0..conns)
            .map(|_| {
                let mut sock = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; 64 * 1024]),
                    tcp::SocketBuffer::new(vec![0; 64 * 1024]),
                );
                sock.set_nagle_enabled(false);
                self.next_port = self.next_port.wrapping_add(1).max(40000);
                let _ = sock.connect(self.iface.context(), remote, self.next_port);
                let tls = self.tls.as_ref().and_then(|(cfg, name)| {
                    let name = rustls::pki_types::ServerName::try_from(name.to_string()).ok()?;
                    Some((
                        rustls::ClientConnection::new(cfg.clone(), name).ok()?,
                        Vec::new(),
                    ))
                });
                Flow {
                    handle: self.sockets.add(sock),
                    got: Vec::new(),
                    sent_at: None,
                    tls,
                }
            })
            .collect();
        let mut answers = Vec::with_capacity(requests);
        let mut issued = 0;
        let end = Instant::now() + limit;
        while answers.len() < requests && Instant::now() < end {
            self.poll();
            for f in &mut flows {
                let sock = self.sockets.get_mut::<tcp::Socket>(f.handle);
                let ready = f.sent_at.is_none() && issued < requests && sock.may_send();
                match &mut f.tls {
                    None => {
                        if ready
                            && sock.send_queue() == 0
                            && sock.send_slice(&request) == Ok(request.len())
                        {
                            f.sent_at = Some(Instant::now());
                            issued += 1;
                        }
                        while sock.can_recv() {
                            let got = &mut f.got;
                            let _ = sock.recv(|d| {
                                got.extend_from_slice(d);
                                (d.len(), ())
                            });
                        }
                    }
                    Some((conn, out)) => {
                        if ready && conn.writer().write_all(&request).is_ok() {
                            f.sent_at = Some(Instant::now());
                            issued += 1;
                        }
                        tls_exchange(sock, conn, out, &mut f.got);
                    }
                }
                if let (Some(at), Some(len)) = (f.sent_at, complete_len(&f.got)) {
                    let bytes: Vec<u8> = f.got.drain(..len).collect();
                    answers.push(Answer {
                        bytes,
                        latency: at.elapsed(),
                    });
                    f.sent_at = None;
                }
            }
        }
        for f in flows {
            self.sockets.get_mut::<tcp::Socket>(f.handle).abort();
            self.poll();
            self.sockets.remove(f.handle);
        }
        answers
    }
}

/// Moves one TLS flow's bytes: records in from the socket (plaintext
/// into `got`), records out (`out` holds what the socket could not take).
fn tls_exchange(
    sock: &mut tcp::Socket<'_>,
    conn: &mut rustls::ClientConnection,
    out: &mut Vec<u8>,
    got: &mut Vec<u8>,
) {
    while sock.can_recv() {
        let _ = sock.recv(|d| {
            let total = d.len();
            let mut rd: &[u8] = d;
            while !rd.is_empty() && conn.read_tls(&mut rd).is_ok_and(|n| n > 0) {}
            (total - rd.len(), ())
        });
        if conn.process_new_packets().is_err() {
            return;
        }
    }
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = conn.reader().read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    while conn.wants_write() {
        if conn.write_tls(out).is_err() {
            break;
        }
    }
    if let Ok(n) = sock.send_slice(out) {
        out.drain(..n);
    }
}

/// The length of the first complete response in `buf` (Content-Length
/// framing), if it is all there.
fn complete_len(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let body: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    (buf.len() >= head_end + body).then_some(head_end + body)
}
