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
    /// Instead of the latency run: this many clients that pipeline and
    /// never read, held for 5 s; prints the process's RSS growth per
    /// client (the client's own socket buffers taken out).
    #[arg(long)]
    hold: Option<usize>,
}

/// The process's resident set, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
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
    if let Some(n) = args.hold {
        let before = rss();
        let sent = client.hold(server, port, &args.path, n, Duration::from_secs(5));
        let own = (n
            * (ultragate_dataplane::driver::dpdk::client::HOLD_RX
                + ultragate_dataplane::driver::dpdk::client::HOLD_TX)) as u64;
        let grown = rss().saturating_sub(before).saturating_sub(own);
        let after = client.run(server, port, &args.path, 1, 10, limit);
        client.release();
        println!(
            "{{\"held\":{n},\"request_bytes_taken\":{sent},\"rss_growth_bytes\":{grown},\"per_client_bytes\":{},\"served_after\":{}}}",
            grown / n.max(1) as u64,
            after.len()
        );
        gateway.shutdown();
        return Ok(());
    }
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
