//! `bench ring`: the DPDK data plane on one pinned core over a `net_ring`
//! pair, with a client smoltcp stack on another core driving it: the
//! gateway's request path with no kernel between client and gateway (the
//! origin behind it is a kernel socket on loopback, as in production).

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use ultragate_dataplane::admin::{AdminRequest, AdminResponse, AdminService};
use ultragate_dataplane::cache::{Cache, CacheConfig};
use ultragate_dataplane::driver::dpdk::client::RingClient;
use ultragate_dataplane::driver::dpdk::{eal, DpdkConfig, DpdkDataplane};
use ultragate_dataplane::driver::{DriverConfig, Shared};
use ultragate_dataplane::http::request::RequestLimits;
use ultragate_dataplane::proxy::EngineConfig;
use ultragate_dataplane::status::DataplaneStatus;
use ultragate_dataplane::upstream::health::GroupHealth;

/// Options of `bench ring`.
#[derive(Args, Debug)]
pub struct RingArgs {
    /// The origin behind the gateway.
    #[arg(long, default_value = "127.0.0.1:28000")]
    origin: SocketAddr,
    /// Request path (add `cache=max-age=N` for the hit path).
    #[arg(long, default_value = "/x?size=1024&cache=max-age%3D600")]
    path: String,
    /// Requests to send (after 1,000 warm-up requests).
    #[arg(long, default_value_t = 200_000)]
    requests: usize,
    /// Keep-alive connections, one request outstanding on each.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Core of the gateway's DPDK thread.
    #[arg(long, default_value_t = 1)]
    gateway_core: usize,
    /// Core of the client stack.
    #[arg(long, default_value_t = 0)]
    client_core: usize,
}

/// The benchmark has no control plane: admin calls get a 404.
struct NoAdmin;

impl AdminService for NoAdmin {
    fn call(&self, _: AdminRequest) -> Pin<Box<dyn Future<Output = AdminResponse> + Send>> {
        Box::pin(async {
            AdminResponse {
                status: 404,
                content_type: "text/plain",
                body: "no admin API in bench ring\n".into(),
            }
        })
    }
}

/// Runs the benchmark and prints one line of results.
pub fn run(args: RingArgs) -> anyhow::Result<()> {
    let eal_args: Vec<String> = ["--no-huge", "--no-pci", "-m", "512"]
        .map(String::from)
        .to_vec();
    eal::init(&eal_args)?;
    let (gw_port, client_port) = eal::ring_pair("ugbench")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stats, _stats_rx) = std::sync::mpsc::channel();
    let shared = Shared {
        status: Arc::new(DataplaneStatus::default()),
        cache: Some(Arc::new(Cache::new(CacheConfig {
            max_bytes: 256 << 20,
            max_object_bytes: 8 << 20,
        }))),
        admin: Arc::new(NoAdmin),
        spawner: runtime.handle().clone(),
        primary: Arc::new(GroupHealth::new(1, 3)),
        fallback: Arc::new(GroupHealth::new(1, 3)),
        stats,
    };
    let engine = Arc::new(EngineConfig {
        limits: RequestLimits {
            max_header_bytes: 16384,
            max_body_bytes: 10 << 20,
        },
        max_response_head_bytes: 65536,
        client_timeout: Duration::from_secs(10),
        keepalive_timeout: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(5),
        connect_attempts: 1,
        default_host: args.origin.to_string(),
        coalesce_wait: Duration::from_secs(2),
        epoch: (Instant::now(), SystemTime::now()),
    });
    let driver = DriverConfig {
        listen: "127.0.0.1:0".parse()?,
        cores: vec![args.gateway_core],
        upstreams: vec![args.origin],
        fallback: vec![],
        upstream_idle_timeout: Duration::from_secs(30),
        upstream_max_idle: 64,
        drain_timeout: Duration::from_secs(2),
        stats_interval: Duration::from_millis(250),
        max_connections_per_core: 4096,
    };
    let dpdk = DpdkConfig {
        eal_args,
        port: gw_port,
        address: Ipv4Addr::new(10, 99, 0, 2),
        prefix_len: 24,
        gateway: None,
        listen_port: 80,
    };
    let dp = DpdkDataplane::start(&dpdk, driver, engine, shared)?;
    core_affinity::set_for_current(core_affinity::CoreId {
        id: args.client_core,
    });
    let pool = eal::Mempool::create("ugbench_client", 16383, client_port)?;
    let (mac, _) = eal::start_port(client_port, 1, pool)?;
    let mut client = RingClient::new(client_port, pool, mac, Ipv4Addr::new(10, 99, 0, 1), 24);
    let server = Ipv4Addr::new(10, 99, 0, 2);
    let limit = Duration::from_secs(120);
    let warm = client.run(server, 80, &args.path, args.connections, 1000, limit);
    anyhow::ensure!(
        warm.len() == 1000,
        "warm-up: {} of 1000 answers",
        warm.len()
    );
    let start = Instant::now();
    let answers = client.run(
        server,
        80,
        &args.path,
        args.connections,
        args.requests,
        limit,
    );
    let elapsed = start.elapsed();
    let mut h = Histogram::<u64>::new(3).context("histogram")?;
    let mut errors = 0;
    for a in &answers {
        h.record(a.latency.as_nanos() as u64)?;
        if !a.bytes.starts_with(b"HTTP/1.1 200") {
            errors += 1;
        }
    }
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{{\"requests\":{},\"errors\":{errors},\"req_per_s\":{:.0},\"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1}}}",
        answers.len(),
        answers.len() as f64 / elapsed.as_secs_f64(),
        us(0.5),
        us(0.99),
        us(0.999),
        h.max() as f64 / 1000.0
    );
    dp.shutdown();
    Ok(())
}
