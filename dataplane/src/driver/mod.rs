//! Data-plane drivers: each executes the per-core layer's commands
//! ([`crate::endpoint::Endpoint`]) on its transport and reports what
//! happened, one thread per pinned core.
//!
//! [`Dataplane::start`] picks the kernel backend as `[api_gateway]
//! io_backend` says: io_uring ([`uring`]) when the kernel and the sandbox
//! allow it, else epoll ([`epoll`]), and records the choice in
//! [`DataplaneStatus`] for `/health` and the metrics.

#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod epoll;
mod listen;
pub mod uring;

use crate::access::AccessLog;
use crate::admin::AdminService;
use crate::cache::Cache;
use crate::endpoint::{Endpoint, EndpointConfig, Parts};
use crate::live::Live;
use crate::stats::CoreStats;
use crate::status::{Backend, DataplaneStatus};
use crate::tls::TlsServer;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Where and how the kernel data plane serves.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The plain HTTP data port's address; `None` when only TLS serves.
    pub listen: Option<SocketAddr>,
    /// The TLS data port's address (`[tls] listen`), when TLS is on.
    pub tls_listen: Option<SocketAddr>,
    /// Cores to run one data thread each on (ids as `core_affinity` counts).
    pub cores: Vec<usize>,
    /// How long in-flight requests may take to finish after a shutdown.
    pub drain_timeout: Duration,
    /// How often each core hands its statistics to the control plane.
    pub stats_interval: Duration,
    /// Most client connections one core serves at once; the next ones get
    /// a `503` and are closed.
    pub max_connections_per_core: usize,
    /// Most client connections one address has open on one core; the
    /// next ones get a `503` and are closed.
    pub max_connections_per_client: usize,
}

/// `[dpdk]`: the port and the stack's address on it, for the DPDK driver
/// (built with the `dpdk` feature).
#[derive(Debug, Clone)]
pub struct DpdkConfig {
    /// EAL arguments, e.g. `["--vdev=net_tap0,iface=ugtap0", "--no-pci"]`.
    pub eal_args: Vec<String>,
    /// The DPDK port id to serve on.
    pub port: u16,
    /// The stack's own IPv4 address on the port.
    pub address: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The next hop for clients outside the prefix.
    pub gateway: Option<Ipv4Addr>,
    /// The TCP port clients connect to.
    pub listen_port: u16,
    /// The TCP port TLS clients connect to, when `[tls]` is on.
    pub tls_listen_port: Option<u16>,
}

/// Which kernel backend `[api_gateway] io_backend` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoBackend {
    /// io_uring when it can be set up, else epoll (the reason is logged).
    Auto,
    /// io_uring or fail to start.
    Uring,
    /// epoll.
    Epoll,
}

/// Why the data plane could not start.
#[derive(Debug, Error)]
pub enum DriverError {
    /// A listening socket could not be set up.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// A data thread could not be started.
    #[error("cannot start a data thread: {0}")]
    Thread(io::Error),
    /// io_uring was asked for and is not usable here.
    #[error("io_uring is not usable: {0}")]
    Uring(#[from] uring::Refused),
}

/// What the data cores share with the control plane.
#[derive(Clone)]
pub struct Shared {
    /// Readiness, route and backend.
    pub status: Arc<DataplaneStatus>,
    /// The response cache, when enabled.
    pub cache: Option<Arc<Cache>>,
    /// Answers `/admin/*` from loopback peers.
    pub admin: Arc<dyn AdminService>,
    /// Runs admin calls for drivers that have no async runtime (io_uring).
    pub spawner: tokio::runtime::Handle,
    /// The engine settings and upstream pools a reload replaces.
    pub live: Arc<Live>,
    /// Where each core queues its access-log records.
    pub access: Arc<AccessLog>,
    /// Where each core sends its statistics.
    pub stats: std::sync::mpsc::Sender<CoreStats>,
    /// The TLS listener's certificates and settings, when `[tls]` is on.
    pub tls: Option<Arc<TlsServer>>,
}

impl Shared {
    /// What a core's [`Endpoint`] is built with.
    fn endpoint(&self, core: usize, cfg: &DriverConfig, local_admin: bool) -> Endpoint {
        let parts = Parts {
            status: self.status.clone(),
            cache: self.cache.clone(),
            live: self.live.clone(),
            access: self.access.clone(),
            stats: self.stats.clone(),
            tls: self.tls.clone(),
        };
        let ecfg = EndpointConfig {
            core,
            max_connections: cfg.max_connections_per_core,
            max_connections_per_client: cfg.max_connections_per_client,
            drain_timeout: cfg.drain_timeout,
            stats_interval: cfg.stats_interval.max(Duration::from_millis(10)),
            local_admin,
        };
        Endpoint::new(ecfg, parts, std::time::Instant::now())
    }
}

/// The running kernel data plane, whichever backend serves.
pub enum Dataplane {
    /// Serving through epoll.
    Epoll(epoll::EpollDataplane),
    /// Serving through io_uring.
    Uring(uring::UringDataplane),
}

impl Dataplane {
    /// Starts the backend `[api_gateway] io_backend` asks for; `Auto` falls
    /// back to epoll when io_uring is refused, and logs why.
    pub fn start(
        backend: IoBackend,
        cfg: DriverConfig,
        shared: Shared,
    ) -> Result<Self, DriverError> {
        let status = shared.status.clone();
        let (running, why) = match backend {
            IoBackend::Epoll => (
                Self::Epoll(epoll::EpollDataplane::start(cfg, shared)?),
                "io_backend = \"epoll\"".to_owned(),
            ),
            IoBackend::Uring => (
                Self::Uring(uring::UringDataplane::start(cfg, shared)?),
                "io_backend = \"io_uring\"".to_owned(),
            ),
            IoBackend::Auto => match uring::UringDataplane::start(cfg.clone(), shared.clone()) {
                Ok(d) => (
                    Self::Uring(d),
                    "io_backend = \"auto\": io_uring works".to_owned(),
                ),
                Err(DriverError::Uring(why)) => {
                    tracing::warn!(reason = %why, "io_uring refused; serving on epoll");
                    (
                        Self::Epoll(epoll::EpollDataplane::start(cfg, shared)?),
                        format!("io_backend = \"auto\": io_uring refused ({why})"),
                    )
                }
                Err(e) => return Err(e),
            },
        };
        status.set_reason(why);
        Ok(running)
    }

    /// Which backend serves.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Epoll(_) => Backend::Epoll,
            Self::Uring(_) => Backend::Uring,
        }
    }

    /// Stops accepting, lets in-flight requests finish within the drain
    /// timeout, and waits for the data threads.
    pub fn shutdown(self) {
        match self {
            Self::Epoll(d) => d.shutdown(),
            Self::Uring(d) => d.shutdown(),
        }
    }
}

/// The drivers' one socket table: stores `v` at the endpoint's handle
/// index `index`, growing the table (indices are small and reused, see
/// [`crate::endpoint::ClientId::index`]).
pub(crate) fn put_slot<T>(table: &mut Vec<Option<T>>, index: usize, v: Option<T>) {
    if table.len() <= index {
        table.resize_with(index + 1, || None);
    }
    if let Some(slot) = table.get_mut(index) {
        *slot = v;
    }
}

/// Makes the socket's close a reset (`SO_LINGER` 0): for a client given
/// up on, whose unsent bytes the kernel would otherwise keep delivering
/// after the close.
pub(crate) fn reset_on_close(s: &impl std::os::fd::AsFd) {
    let _ = socket2::SockRef::from(s).set_linger(Some(std::time::Duration::ZERO));
}
