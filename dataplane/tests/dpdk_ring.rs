//! The DPDK data plane in process, over a `net_ring` pair and without
//! hugepages (`--no-huge`): a client smoltcp stack on one ring port talks
//! to the gateway's stack on the other, with no kernel between them; the
//! gateway fetches from a real origin over a kernel socket on loopback.

#![cfg(feature = "dpdk")]

use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use ultragate_dataplane::admin::{AdminRequest, AdminResponse, AdminService};
use ultragate_dataplane::cache::{Cache, CacheConfig};
use ultragate_dataplane::driver::dpdk::client::RingClient;
use ultragate_dataplane::driver::dpdk::{eal, DpdkConfig, DpdkDataplane};
use ultragate_dataplane::driver::{DriverConfig, Shared};
use ultragate_dataplane::http::request::RequestLimits;
use ultragate_dataplane::proxy::EngineConfig;
use ultragate_dataplane::status::{Backend, DataplaneStatus};
use ultragate_dataplane::upstream::health::GroupHealth;

/// The data port's admin calls have no control plane in this test.
struct NoAdmin;

impl AdminService for NoAdmin {
    fn call(&self, _: AdminRequest) -> Pin<Box<dyn Future<Output = AdminResponse> + Send>> {
        Box::pin(async {
            AdminResponse {
                status: 404,
                content_type: "text/plain",
                body: "no admin here\n".into(),
            }
        })
    }
}

/// An origin on loopback: each answer says how many requests it has seen,
/// and may be cached for a minute.
fn origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let count = count.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut have = Vec::new();
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => have.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                        have.drain(..end + 4);
                        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                        let body = format!("origin answer {n}\n");
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[test]
fn miss_then_hit_through_the_ring_pair_without_hugepages() {
    let eal_args: Vec<String> = ["--no-huge", "--no-pci", "-m", "512"]
        .map(String::from)
        .to_vec();
    eal::init(&eal_args).expect("EAL in --no-huge mode");
    let (gw_port, client_port) = eal::ring_pair("ugtest").unwrap();
    let (origin, seen) = origin();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = Arc::new(DataplaneStatus::default());
    let (stats, _stats_rx) = std::sync::mpsc::channel();
    let shared = Shared {
        status: status.clone(),
        cache: Some(Arc::new(Cache::new(CacheConfig {
            max_bytes: 64 << 20,
            max_object_bytes: 1 << 20,
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
            max_body_bytes: 1 << 20,
        },
        max_response_head_bytes: 65536,
        client_timeout: Duration::from_secs(10),
        keepalive_timeout: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(5),
        connect_attempts: 1,
        default_host: origin.to_string(),
        coalesce_wait: Duration::from_secs(1),
        epoch: (Instant::now(), SystemTime::now()),
    });
    let driver = DriverConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cores: vec![],
        upstreams: vec![origin],
        fallback: vec![],
        upstream_idle_timeout: Duration::from_secs(30),
        upstream_max_idle: 8,
        drain_timeout: Duration::from_secs(2),
        stats_interval: Duration::from_millis(100),
        max_connections_per_core: 1024,
    };
    let dpdk = DpdkConfig {
        eal_args,
        port: gw_port,
        address: Ipv4Addr::new(10, 99, 0, 2),
        prefix_len: 24,
        gateway: None,
        listen_port: 80,
    };
    let dp = DpdkDataplane::start(&dpdk, driver, engine, shared).unwrap();
    assert_eq!(status.backend(), Backend::Dpdk);
    let health = dp.health();
    assert!(health.link_up, "{health:?}");
    assert!(health.mempool_free > 0);

    let pool = eal::Mempool::create("ugtest_client", 4095, client_port).unwrap();
    let (mac, _) = eal::start_port(client_port, 1, pool).unwrap();
    let mut client = RingClient::new(client_port, pool, mac, Ipv4Addr::new(10, 99, 0, 1), 24);
    let server = Ipv4Addr::new(10, 99, 0, 2);

    let first = client.run(server, 80, "/page", 1, 1, Duration::from_secs(10));
    assert_eq!(first.len(), 1, "no answer through the ring");
    let text = String::from_utf8_lossy(&first[0].bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("X-Cache: MISS"), "{text}");
    assert!(text.ends_with("origin answer 1\n"), "{text}");

    // Then 50 more over 4 connections: every one a hit, the origin not asked.
    let hits = client.run(server, 80, "/page", 4, 50, Duration::from_secs(10));
    assert_eq!(hits.len(), 50);
    for a in &hits {
        let text = String::from_utf8_lossy(&a.bytes);
        assert!(text.contains("X-Cache: HIT"), "{text}");
        assert!(text.ends_with("origin answer 1\n"), "{text}");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    let after = dp.health();
    assert!(
        after.rx_packets > health.rx_packets && after.tx_packets > 0,
        "{after:?}"
    );
    dp.shutdown();
}
