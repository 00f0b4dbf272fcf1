//! smoltcp's view of one queue pair of a DPDK port: frames come from
//! `rte_eth_rx_burst` in bursts and go out through `rte_eth_tx_burst` in
//! bursts, each in its own mbuf.
//!
//! With several queues, each core runs its own stack, and RSS steers a TCP
//! flow to one queue; but ARP is not a flow: a reply to one core's request
//! may land on another core's queue. So every ARP frame a queue receives is
//! also handed to the other cores' stacks ([`ArpShare`]), and each core's
//! neighbour cache learns every address.

use super::eal::Mempool;
use dpdk_sys as sys;
use smoltcp::phy::{self, Checksum, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use std::sync::mpsc::{Receiver, Sender};

/// EtherType of ARP.
const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];

/// A core's share of the ARP traffic of a multi-queue port: frames other
/// queues received, and where to copy the ones this queue receives.
pub struct ArpShare {
    /// ARP frames other cores received.
    pub from_peers: Receiver<Vec<u8>>,
    /// The other cores.
    pub to_peers: Vec<Sender<Vec<u8>>>,
}

/// Frames taken from or handed to the port at once.
const BURST: usize = 32;

/// A queue pair of a port, as a smoltcp device.
pub struct PortQueue {
    port: u16,
    queue: u16,
    pool: Mempool,
    rx: [*mut sys::RteMbuf; BURST],
    rx_len: usize,
    rx_pos: usize,
    tx: [*mut sys::RteMbuf; BURST],
    tx_len: usize,
    /// Frames dropped because no mbuf was free or the port refused them.
    pub tx_dropped: u64,
    /// Scratch space for a frame that has no mbuf.
    scratch: Vec<u8>,
    arp: Option<ArpShare>,
}

impl PortQueue {
    /// Queue `queue` of a started `port`, sending from `pool`; `arp` when
    /// the port has other queues served by other cores.
    pub fn new(port: u16, queue: u16, pool: Mempool, arp: Option<ArpShare>) -> Self {
        Self {
            port,
            queue,
            pool,
            rx: [std::ptr::null_mut(); BURST],
            rx_len: 0,
            rx_pos: 0,
            tx: [std::ptr::null_mut(); BURST],
            tx_len: 0,
            tx_dropped: 0,
            scratch: vec![0; 1514],
            arp,
        }
    }

    /// Whether received frames wait in the burst.
    pub fn has_rx(&self) -> bool {
        self.rx_pos < self.rx_len
    }

    /// Hands the queued frames to the port; frees what it refuses.
    pub fn flush(&mut self) {
        let mut sent = 0;
        while sent < self.tx_len {
            // SAFETY: `tx[sent..tx_len]` are mbufs we own.
            let n = unsafe {
                sys::ug_tx_burst(
                    self.port,
                    self.queue,
                    self.tx[sent..].as_mut_ptr(),
                    (self.tx_len - sent) as u16,
                )
            };
            if n == 0 {
                break;
            }
            sent += usize::from(n);
        }
        for m in &self.tx[sent..self.tx_len] {
            // SAFETY: refused mbufs are still ours.
            unsafe { sys::ug_mbuf_free(*m) };
            self.tx_dropped += 1;
        }
        self.tx_len = 0;
    }

    fn refill(&mut self) {
        if self.rx_pos < self.rx_len {
            return;
        }
        // SAFETY: room for BURST mbuf pointers.
        let n =
            unsafe { sys::ug_rx_burst(self.port, self.queue, self.rx.as_mut_ptr(), BURST as u16) };
        self.rx_len = usize::from(n);
        self.rx_pos = 0;
    }
}

impl Drop for PortQueue {
    fn drop(&mut self) {
        self.flush();
        for m in &self.rx[self.rx_pos..self.rx_len] {
            // SAFETY: received mbufs not yet handed out are ours.
            unsafe { sys::ug_mbuf_free(*m) };
        }
    }
}

/// A received frame: an mbuf (freed once read), or an ARP frame another
/// core received.
pub enum Rx {
    /// From this queue.
    Mbuf(*mut sys::RteMbuf),
    /// From another core's queue.
    Shared(Vec<u8>),
}

impl Drop for Rx {
    fn drop(&mut self) {
        if let Rx::Mbuf(m) = self {
            // SAFETY: the token owns its mbuf.
            unsafe { sys::ug_mbuf_free(*m) };
        }
    }
}

/// The bytes of a received single-segment mbuf.
///
/// # Safety
/// `m` must be a live mbuf this core owns.
unsafe fn mbuf_bytes<'a>(m: *mut sys::RteMbuf) -> &'a [u8] {
    let mut len = 0u16;
    // SAFETY: the caller's promise: `len` bytes at the pointer.
    unsafe {
        let p = sys::ug_mbuf_data(m, &mut len);
        std::slice::from_raw_parts(p, usize::from(len))
    }
}

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        match &self {
            // SAFETY: the token owns its mbuf until it drops.
            Rx::Mbuf(m) => f(unsafe { mbuf_bytes(*m) }),
            Rx::Shared(v) => f(v),
        }
    }
}

/// Room for one frame to send.
pub struct Tx<'a>(&'a mut PortQueue);

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let q = self.0;
        // SAFETY: a live pool; a fresh mbuf is ours.
        let m = unsafe { sys::ug_mbuf_alloc(q.pool.0) };
        let data = if m.is_null() {
            std::ptr::null_mut()
        } else {
            // SAFETY: appends `len` bytes to our empty mbuf.
            unsafe { sys::ug_mbuf_append(m, len as u16) }
        };
        if data.is_null() {
            if !m.is_null() {
                // SAFETY: ours, unused.
                unsafe { sys::ug_mbuf_free(m) };
            }
            q.tx_dropped += 1;
            q.scratch.resize(len, 0);
            return f(&mut q.scratch[..len]);
        }
        // SAFETY: `len` writable bytes inside the mbuf.
        let r = f(unsafe { std::slice::from_raw_parts_mut(data, len) });
        q.tx[q.tx_len] = m;
        q.tx_len += 1;
        if q.tx_len == BURST {
            q.flush();
        }
        r
    }
}

/// Whether a frame is an IPv4 packet from or to a loopback or unspecified
/// address: such packets never arrive on a real port, and one that does
/// would pass for a local peer. Dropped before the TCP stack sees it.
pub fn spoofed_local(frame: &[u8]) -> bool {
    if frame.get(12..14) != Some(&[0x08, 0x00][..]) {
        return false;
    }
    let local = |a: Option<&[u8]>| match a {
        Some(&[a, b, c, d]) => {
            let ip = std::net::Ipv4Addr::new(a, b, c, d);
            ip.is_loopback() || ip.is_unspecified()
        }
        _ => false,
    };
    local(frame.get(26..30)) || local(frame.get(30..34))
}

impl phy::Device for PortQueue {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx, Tx<'_>)> {
        if let Some(frame) = self.arp.as_ref().and_then(|a| a.from_peers.try_recv().ok()) {
            return Some((Rx::Shared(frame), Tx(self)));
        }
        let m = loop {
            self.refill();
            if self.rx_pos == self.rx_len {
                return None;
            }
            let m = self.rx[self.rx_pos];
            self.rx_pos += 1;
            // SAFETY: a received mbuf we own.
            if spoofed_local(unsafe { mbuf_bytes(m) }) {
                // SAFETY: ours, and not handed out.
                unsafe { sys::ug_mbuf_free(m) };
                continue;
            }
            break m;
        };
        if let Some(arp) = &self.arp {
            // SAFETY: a received mbuf we own.
            let frame = unsafe { mbuf_bytes(m) };
            if frame.get(12..14) == Some(&ETHERTYPE_ARP[..]) {
                for peer in &arp.to_peers {
                    let _ = peer.send(frame.to_vec());
                }
            }
        }
        Some((Rx::Mbuf(m), Tx(self)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        Some(Tx(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps.max_burst_size = Some(BURST);
        // The vdevs in use (tap, ring) offload nothing: checksums in software.
        caps.checksum.ipv4 = Checksum::Both;
        caps.checksum.tcp = Checksum::Both;
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::spoofed_local;

    /// An Ethernet frame carrying an IPv4 header from `src` to `dst`.
    fn frame(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 34];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f
    }

    #[test]
    fn loopback_and_unspecified_addresses_are_dropped_on_the_port() {
        let gw = [10, 99, 0, 2];
        assert!(spoofed_local(&frame([127, 0, 0, 1], gw)));
        assert!(spoofed_local(&frame([127, 9, 9, 9], gw)));
        assert!(spoofed_local(&frame([0, 0, 0, 0], gw)));
        assert!(spoofed_local(&frame([10, 99, 0, 1], [127, 0, 0, 1])));
        assert!(!spoofed_local(&frame([10, 99, 0, 1], gw)));
        let mut arp = frame([127, 0, 0, 1], gw);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!spoofed_local(&arp), "not IPv4: left to the stack");
        assert!(
            !spoofed_local(&[0u8; 10]),
            "short frames are not read past their end"
        );
    }
}
