//! A whole DPDK data plane in one process over a `net_ring` pair, without
//! hugepages: the gateway's stack on one ring port, a [`RingClient`] on the
//! other, a real origin behind the gateway. What the in-process test and
//! `bench ring` run.

use super::client::RingClient;
use super::{eal, DpdkConfig, DpdkDataplane, DpdkError};
use crate::admin::{AdminRequest, AdminResponse, AdminService};
use crate::cache::{Cache, CacheConfig};
use crate::driver::{DriverConfig, Shared};
use crate::live::{Live, PoolSpec};
use crate::proxy::EngineConfig;
use crate::status::DataplaneStatus;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The gateway's address on the ring.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// The TCP port the gateway listens on.
pub const PORT: u16 = 80;
/// The TCP port of the gateway's TLS listener, when it has one.
pub const TLS_PORT: u16 = 443;

/// No control plane runs in process: admin calls get a 404.
struct NoAdmin;

impl AdminService for NoAdmin {
    fn call(&self, _: AdminRequest) -> Pin<Box<dyn Future<Output = AdminResponse> + Send>> {
        Box::pin(async {
            AdminResponse {
                status: 404,
                content_type: "text/plain",
                body: "no admin API in an in-process data plane\n".into(),
                allow: None,
            }
        })
    }
}

/// A gateway and a client wired by a ring pair.
pub struct RingSetup {
    /// The gateway's data plane.
    pub gateway: DpdkDataplane,
    /// The client stack, at 10.99.0.1.
    pub client: RingClient,
    /// The gateway's status (backend, readiness).
    pub status: Arc<DataplaneStatus>,
    /// Runs admin calls; kept alive with the gateway.
    _runtime: tokio::runtime::Runtime,
}

/// Initialises the EAL with `--no-huge` (once per process), creates a ring
/// pair named `name`, and starts a gateway with a cache in front of
/// `origin`, polling on `gateway_core` when given, serving HTTPS on
/// [`TLS_PORT`] too with `tls`.
pub fn start(
    name: &str,
    origin: SocketAddr,
    gateway_core: Option<usize>,
    tls: Option<Arc<crate::tls::TlsServer>>,
) -> Result<RingSetup, DpdkError> {
    let eal_args: Vec<String> = ["--no-huge", "--no-pci", "-m", "512"]
        .map(String::from)
        .to_vec();
    eal::init(&eal_args)?;
    let (gw_port, client_port) = eal::ring_pair(name)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DpdkError::Thread)?;
    let status = Arc::new(DataplaneStatus::default());
    let (stats, _) = std::sync::mpsc::channel();
    let engine = Arc::new(EngineConfig {
        response_timeout: Duration::from_secs(5),
        // The harness serves the test hooks (in builds that have them).
        test_hooks: true,
        ..EngineConfig::new(origin.to_string(), (Instant::now(), SystemTime::now()))
    });
    let shared = Shared {
        status: status.clone(),
        cache: Some(Arc::new(Cache::new(CacheConfig {
            max_bytes: 256 << 20,
            max_object_bytes: 8 << 20,
        }))),
        admin: Arc::new(NoAdmin),
        spawner: runtime.handle().clone(),
        live: Arc::new(Live::new(
            engine,
            PoolSpec::new(vec![origin], Duration::from_secs(30), 64, 3),
            PoolSpec::new(Vec::new(), Duration::from_secs(30), 64, 3),
        )),
        stats,
        access: Arc::new(crate::access::AccessLog::new()),
        tls: tls.clone(),
    };
    let driver = DriverConfig {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        tls_listen: None,
        cores: gateway_core.into_iter().collect(),
        drain_timeout: Duration::from_secs(2),
        stats_interval: Duration::from_millis(250),
        max_connections_per_core: 4096,
        max_connections_per_client: 4096,
    };
    let dpdk = DpdkConfig {
        eal_args,
        port: gw_port,
        address: GATEWAY,
        prefix_len: 24,
        gateway: None,
        listen_port: PORT,
        tls_listen_port: tls.is_some().then_some(TLS_PORT),
    };
    let gateway = DpdkDataplane::start(&dpdk, driver, shared)?;
    let pool = eal::Mempool::create(&format!("{name}_client"), 16383, client_port)?;
    let (mac, _) = eal::start_port(client_port, 1, pool)?;
    let client = RingClient::new(client_port, pool, mac, Ipv4Addr::new(10, 99, 0, 1), 24);
    Ok(RingSetup {
        gateway,
        client,
        status,
        _runtime: runtime,
    })
}
