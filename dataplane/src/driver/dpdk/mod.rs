//! The DPDK data plane: a poll-mode driver on a pinned core, smoltcp as
//! the TCP/IP stack on the port, and the same sans-IO engine and cache as
//! the kernel drivers. Upstream connections are kernel sockets polled from
//! the same core without blocking (the upstreams live on the cluster
//! network, not on the DPDK port).
//!
//! One queue pair per data core, each core with its own smoltcp stack:
//! RSS keeps a TCP flow on one queue, and ARP frames are shared between
//! the cores (see `device`), so every stack knows every neighbour.
//!
//! The gateway watches [`DpdkDataplane::health`] and moves to the kernel
//! data plane when the link stays down (see `gateway/src/dataplane.rs`).

#[cfg(feature = "ring")]
pub mod client;
mod core;
mod device;
pub mod eal;
#[cfg(feature = "ring")]
pub mod ring;

pub use super::DpdkConfig;
use super::{DriverConfig, Shared};
use crate::status::{Backend, PortHealth};
use dpdk_sys as sys;
use eal::Mempool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use thiserror::Error;

/// Why the DPDK data plane could not start.
#[derive(Debug, Error)]
pub enum DpdkError {
    /// `rte_eal_init` failed (bad arguments, no hugepages, no device).
    #[error("EAL init failed: {reason}{}", hugepage_hint())]
    Eal {
        /// DPDK's error text.
        reason: String,
    },
    /// The mbuf pool could not be created (not enough hugepage memory).
    #[error("mbuf pool: {reason}{}", hugepage_hint())]
    Mempool {
        /// DPDK's error text.
        reason: String,
    },
    /// The port is missing or refused its configuration.
    #[error("port {port}: {reason}")]
    Port {
        /// The port id.
        port: u16,
        /// What went wrong.
        reason: String,
    },
    /// A polling thread (or, in process, the admin runtime's) could not be
    /// started.
    #[error("cannot start a DPDK thread: {0}")]
    Thread(std::io::Error),
}

/// Says so when no hugepages are free, the usual cause of EAL and mempool
/// failures.
fn hugepage_hint() -> String {
    match eal::hugepages() {
        (0, _) => " (no hugepages are reserved: run hugepages-setup.sh, or pass --no-huge)".into(),
        (total, 0) => format!(" (no hugepages are free: all {total} reserved are in use)"),
        _ => String::new(),
    }
}

/// The running DPDK data plane.
pub struct DpdkDataplane {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    port: u16,
    pool: Mempool,
}

impl DpdkDataplane {
    /// Initialises the EAL (once per process), creates the mbuf pool,
    /// starts the port with a queue pair per data core (as many as the
    /// device has) and a polling thread on each core.
    pub fn start(dpdk: &DpdkConfig, cfg: DriverConfig, shared: Shared) -> Result<Self, DpdkError> {
        eal::init(&dpdk.eal_args)?;
        let wanted = cfg.cores.len().clamp(1, 64) as u16;
        // Room for every queue's RX and TX rings and what is in flight.
        let mbufs = (u32::from(wanted) * 4096).next_power_of_two().max(8192) - 1;
        let pool = Mempool::create(&format!("ug_mbufs_{}", dpdk.port), mbufs, dpdk.port)?;
        let (mac, queues) = eal::start_port(dpdk.port, wanted, pool)?;
        if queues < wanted {
            tracing::warn!(
                wanted,
                queues,
                "the DPDK port has fewer queues than data cores"
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..queues).map(|_| std::sync::mpsc::channel()).unzip();
        let mut me = Self {
            threads: Vec::new(),
            stop: stop.clone(),
            port: dpdk.port,
            pool,
        };
        for (q, from_peers) in (0..queues).zip(receivers) {
            let arp = (queues > 1).then(|| device::ArpShare {
                from_peers,
                to_peers: senders
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != usize::from(q))
                    .map(|(_, s)| s.clone())
                    .collect(),
            });
            let setup = core::Setup {
                core: cfg
                    .cores
                    .get(usize::from(q))
                    .copied()
                    .unwrap_or(usize::from(q)),
                dpdk: dpdk.clone(),
                queue: q,
                arp,
                mac,
                pool,
                cfg: cfg.clone(),
                shared: shared.clone(),
                stop: stop.clone(),
            };
            let pin = cfg.cores.get(usize::from(q)).copied();
            let spawned = std::thread::Builder::new()
                .name(format!("ug-dpdk-{q}"))
                .spawn(move || {
                    if let Some(id) = pin {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                            tracing::warn!(core = id, "could not pin the DPDK thread");
                        }
                    }
                    // SAFETY: plain call; gives this thread an lcore id.
                    unsafe { sys::ug_thread_register() };
                    core::run(setup)
                });
            match spawned {
                Ok(t) => me.threads.push(t),
                Err(e) => {
                    me.shutdown();
                    return Err(DpdkError::Thread(e));
                }
            }
        }
        shared.status.set_port(Some(me.health()));
        shared.status.set_backend(Backend::Dpdk);
        shared.status.set_serving(true);
        tracing::info!(
            backend = Backend::Dpdk.as_str(),
            port = dpdk.port,
            queues,
            address = %dpdk.address,
            listen_port = dpdk.listen_port,
            "data plane serving"
        );
        Ok(me)
    }

    /// Samples the port: link, counters, mempool and hugepages.
    pub fn health(&self) -> PortHealth {
        let mut link = sys::UgLink::default();
        let mut st = sys::UgPortStats::default();
        // SAFETY: out pointers to our own structs; the port is started.
        let (l, s) = unsafe {
            (
                sys::ug_link_get(self.port, &mut link),
                sys::ug_stats_get(self.port, &mut st),
            )
        };
        let (hp_total, hp_free) = eal::hugepages();
        PortHealth {
            port: self.port,
            link_up: l == 0 && link.up == 1,
            speed_mbps: link.speed_mbps,
            rx_packets: if s == 0 { st.ipackets } else { 0 },
            tx_packets: st.opackets,
            rx_errors: st.ierrors,
            tx_errors: st.oerrors,
            rx_missed: st.imissed,
            rx_nombuf: st.rx_nombuf,
            mempool_free: self.pool.free(),
            mempool_in_use: self.pool.in_use(),
            hugepages_total: hp_total,
            hugepages_free: hp_free,
        }
    }

    /// Stops the polling cores after draining, and the port.
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            let _ = t.join();
        }
        // SAFETY: plain call on our started port.
        unsafe { sys::ug_port_stop(self.port) };
    }
}
