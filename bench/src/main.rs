//! `bench`: ultragate's load generator, harnesses and test origin.
//!
//! An independent client and server: it parses HTTP itself and shares no
//! code with the gateway, so it can catch the gateway's bugs. Start with
//! `bench origin --help`.

mod compare;
mod compare_tls;
mod drill;
mod load;
mod origin;
mod peers;
#[cfg(feature = "dpdk")]
mod ring;
mod soak;
mod stream;

use clap::{Parser, Subcommand};

/// ultragate's benchmark tools.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve as a test origin: configurable body sizes, chunked or
    /// length-delimited bodies, Cache-Control, injected latency and errors.
    Origin(origin::OriginArgs),
    /// Offer HTTP load at a constant rate (open loop, corrected for
    /// coordinated omission) or as fast as possible (`--closed-loop`).
    Load(load::LoadArgs),
    /// Measure ultragate against nginx, HAProxy and Varnish on the same
    /// pinned core; writes bench/RESULTS.md and a percentile plot.
    Compare(compare::CompareArgs),
    /// The failover drill: faults under constant load; non-zero exit when
    /// one is not handled.
    Drill(drill::DrillArgs),
    /// A long fixed-rate mix of hits, misses, uncacheable URLs, pipelining,
    /// slow readers, slowloris heads and malformed requests, with the
    /// gateway's RSS sampled every second.
    Soak(soak::SoakArgs),
    /// The DPDK data plane over a net_ring pair on one core, driven by a
    /// userspace client stack: no kernel between client and gateway.
    #[cfg(feature = "dpdk")]
    Ring(ring::RingArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Origin(args) => origin::run(args),
        Command::Load(args) => load::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Drill(args) => drill::run(args),
        Command::Soak(args) => soak::run(args),
        #[cfg(feature = "dpdk")]
        Command::Ring(args) => ring::run(args),
    }
}
