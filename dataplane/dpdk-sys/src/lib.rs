//! FFI to the system's DPDK 22.11 (Debian `libdpdk-dev`).
//!
//! DPDK's fast-path calls (`rte_eth_rx_burst`, `rte_eth_tx_burst`,
//! `rte_pktmbuf_alloc`, mbuf data access) are `static inline`, and its
//! structs differ between releases; so Rust never sees a DPDK struct. It
//! calls the small C functions of `src/shim.c`, which are compiled against
//! the installed headers, and passes DPDK's objects as opaque pointers.
//! The two structs declared here are the shim's own.
//!
//! Built with the `link` feature only does the crate compile the shim and
//! link DPDK; without it the declarations are all there is, so a workspace
//! build needs no DPDK installed.

use std::os::raw::{c_char, c_int, c_uint};

/// An mbuf (opaque).
#[repr(C)]
pub struct RteMbuf {
    _private: [u8; 0],
}

/// A mempool (opaque).
#[repr(C)]
pub struct RteMempool {
    _private: [u8; 0],
}

/// A port's link, as the shim reports it.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UgLink {
    /// 1 when the link is up.
    pub up: u32,
    /// Link speed in Mbit/s (0 when unknown).
    pub speed_mbps: u32,
}

/// A port's counters, as the shim reports them.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UgPortStats {
    /// Packets received.
    pub ipackets: u64,
    /// Packets sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Packets dropped by the hardware (RX queue full).
    pub imissed: u64,
    /// Receive errors.
    pub ierrors: u64,
    /// Transmit errors.
    pub oerrors: u64,
    /// RX mbuf allocation failures (mempool exhausted).
    pub rx_nombuf: u64,
}

extern "C" {
    /// `rte_eal_init`: parsed argument count, or -1 with [`ug_errno`] set.
    pub fn ug_eal_init(argc: c_int, argv: *mut *mut c_char) -> c_int;
    /// `rte_errno` of the calling thread.
    pub fn ug_errno() -> c_int;
    /// `rte_strerror`.
    pub fn ug_strerror(err: c_int) -> *const c_char;
    /// `rte_thread_register`: gives the calling thread an lcore id, so its
    /// mempool accesses use a per-core cache.
    pub fn ug_thread_register();
    /// Ports available.
    pub fn ug_port_count() -> u16;
    /// `rte_pktmbuf_pool_create` with the default data room; null on failure.
    pub fn ug_pool_create(name: *const c_char, n: c_uint, socket: c_int) -> *mut RteMempool;
    /// NUMA socket of a port.
    pub fn ug_port_socket(port: u16) -> c_int;
    /// Configures and starts a port with up to `*queues` RX/TX queue pairs
    /// (`*queues` is set to how many it got); writes its MAC.
    pub fn ug_port_start(port: u16, queues: *mut u16, pool: *mut RteMempool, mac: *mut u8)
        -> c_int;
    /// `rte_eth_dev_stop`.
    pub fn ug_port_stop(port: u16) -> c_int;
    /// `rte_eth_rx_burst`.
    pub fn ug_rx_burst(port: u16, queue: u16, pkts: *mut *mut RteMbuf, n: u16) -> u16;
    /// `rte_eth_tx_burst`.
    pub fn ug_tx_burst(port: u16, queue: u16, pkts: *mut *mut RteMbuf, n: u16) -> u16;
    /// The data of a single-segment mbuf and its length.
    pub fn ug_mbuf_data(m: *const RteMbuf, len: *mut u16) -> *const u8;
    /// `rte_pktmbuf_alloc`; null when the pool is empty.
    pub fn ug_mbuf_alloc(pool: *mut RteMempool) -> *mut RteMbuf;
    /// `rte_pktmbuf_append`; null when the mbuf has no room.
    pub fn ug_mbuf_append(m: *mut RteMbuf, len: u16) -> *mut u8;
    /// `rte_pktmbuf_free`.
    pub fn ug_mbuf_free(m: *mut RteMbuf);
    /// `rte_eth_link_get_nowait`.
    pub fn ug_link_get(port: u16, out: *mut UgLink) -> c_int;
    /// `rte_eth_stats_get`.
    pub fn ug_stats_get(port: u16, out: *mut UgPortStats) -> c_int;
    /// Free mbufs in a pool.
    pub fn ug_pool_avail(pool: *const RteMempool) -> c_uint;
    /// Mbufs of a pool in use.
    pub fn ug_pool_in_use(pool: *const RteMempool) -> c_uint;
    /// Two ring-backed ports wired back to back; writes their ids.
    pub fn ug_ring_pair(name: *const c_char, a: *mut u16, b: *mut u16) -> c_int;
}
