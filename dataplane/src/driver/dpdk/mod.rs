//! The DPDK data plane: a poll-mode driver on a pinned core, smoltcp as
//! the TCP/IP stack on the port, and the same sans-IO engine and cache as
//! the kernel drivers. Upstream connections are kernel sockets polled from
//! the same core without blocking (the upstreams live on the cluster
//! network, not on the DPDK port).
//!
//! One queue pair and one core: smoltcp keeps its neighbour cache per
//! stack, and with RSS the ARP reply to one core's request may land on
//! another core's queue, so a multi-queue port needs a shared neighbour
//! table first.
//!
//! The gateway watches [`DpdkDataplane::health`] and moves to the kernel
//! data plane when the link stays down (see `gateway/src/dataplane.rs`).

pub mod client;
mod core;
mod device;
pub mod eal;

pub use super::DpdkConfig;
use super::{DriverConfig, Shared};
use crate::proxy::EngineConfig;
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
    /// The data thread could not be started.
    #[error("cannot start the DPDK thread: {0}")]
    Thread(std::io::Error),
}

/// Says so when no hugepages are reserved, the usual cause of EAL and
/// mempool failures.
fn hugepage_hint() -> &'static str {
    if eal::hugepages().0 == 0 {
        " (no hugepages are reserved: run hugepages-setup.sh, or pass --no-huge)"
    } else {
        ""
    }
}

/// The running DPDK data plane.
pub struct DpdkDataplane {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    port: u16,
    pool: Mempool,
}

impl DpdkDataplane {
    /// Initialises the EAL (once per process), creates the mbuf pool,
    /// starts the port and its polling core (the first of `cfg.cores`).
    pub fn start(
        dpdk: &DpdkConfig,
        cfg: DriverConfig,
        engine: Arc<EngineConfig>,
        shared: Shared,
    ) -> Result<Self, DpdkError> {
        eal::init(&dpdk.eal_args)?;
        let pool = Mempool::create(&format!("ug_mbufs_{}", dpdk.port), 8191, dpdk.port)?;
        let mac = eal::start_port(dpdk.port, 1, pool)?;
        let stop = Arc::new(AtomicBool::new(false));
        let setup = core::Setup {
            dpdk: dpdk.clone(),
            mac,
            pool,
            cfg: cfg.clone(),
            engine,
            shared: shared.clone(),
            stop: stop.clone(),
        };
        let pin = cfg.cores.first().copied();
        let thread = std::thread::Builder::new()
            .name("ug-dpdk-0".into())
            .spawn(move || {
                if let Some(id) = pin {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                        tracing::warn!(core = id, "could not pin the DPDK thread");
                    }
                }
                // SAFETY: plain call; gives this thread an lcore id.
                unsafe { sys::ug_thread_register() };
                core::run(setup)
            })
            .map_err(DpdkError::Thread)?;
        let me = Self {
            thread: Some(thread),
            stop,
            port: dpdk.port,
            pool,
        };
        shared.status.set_port(Some(me.health()));
        shared.status.set_backend(Backend::Dpdk);
        shared.status.set_serving(true);
        tracing::info!(
            backend = Backend::Dpdk.as_str(),
            port = dpdk.port,
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

    /// Stops the polling core after draining, and the port.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // SAFETY: plain call on our started port.
        unsafe { sys::ug_port_stop(self.port) };
    }
}
