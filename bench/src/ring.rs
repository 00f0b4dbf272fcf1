//! `bench ring`: the DPDK data plane on one pinned core over a `net_ring`
//! pair, with a client smoltcp stack on another core driving it: the
//! gateway's request path with no kernel between client and gateway (the
//! origin behind it is a kernel socket on loopback, as in production).

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use ultragate_dataplane::driver::dpdk::ring;

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

/// Runs the benchmark and prints one line of results.
pub fn run(args: RingArgs) -> anyhow::Result<()> {
    let ring::RingSetup {
        gateway,
        mut client,
        ..
    } = ring::start("ugbench", args.origin, Some(args.gateway_core), None)?;
    core_affinity::set_for_current(core_affinity::CoreId {
        id: args.client_core,
    });
    let (server, port) = (ring::GATEWAY, ring::PORT);
    let limit = Duration::from_secs(120);
    let warm = client.run(server, port, &args.path, args.connections, 1000, limit);
    anyhow::ensure!(
        warm.len() == 1000,
        "warm-up: {} of 1000 answers",
        warm.len()
    );
    let start = Instant::now();
    let answers = client.run(
        server,
        port,
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
    gateway.shutdown();
    Ok(())
}
