//! The runbook as one table: each row is a pure policy that turns what
//! the control plane observes into [`Decision`]s, each carrying one
//! [`Command`]. Time comes in with the observation, so every rule is
//! tested on synthetic input; one executor (`Supervisor::execute`)
//! applies the commands, counts them and writes the timeline.
//!
//! | row | observes | trigger | commands | recovery |
//! | --- | --- | --- | --- | --- |
//! | critical failure ([`RoutePolicy`], [`outliers`]) | the pool's own servers: upstream-side P99 and error rate, spread by client and URL ([`spread`]); its probes; per-server latency | no healthy primary; P99 or error rate over its threshold for its window, shared by several clients and URLs or corroborated by the probe; a server 3× slower than its peers | route to the fallback; eject the slow server | route back after the hold of good evidence (healthy, fast probe, good canaries), doubled by each flap; checks re-admit a server |
//! | memory ([`MemoryPolicy`]) | RSS against the limit | ≥ 85 % (once per crossing); ≥ 95 % | shrink the cache's budget; clear it and stop inserts | budget and inserts back under 70 % |
//! | DPDK port ([`PortPolicy`]) | link state | down past the grace time | serve on kernel networking | an operator's call |
//! | corruption ([`CorruptionPolicy`]) | a verify's counts (background or `POST /admin/cache/verify`) | a checksum failure | bypass the cache (bad entries evicted), restore the last good snapshot and verify again | serve from the cache after a clean verify |
//! | security ([`SecurityPolicy`]) | an operator's call | `POST /admin/security/isolate` | isolate: every request logged, admin from loopback only | `POST /admin/security/normal` |

mod cache;
mod memory;
mod port;
mod route;
mod security;

pub use cache::{CorruptionPolicy, Verified};
pub use memory::MemoryPolicy;
pub use port::PortPolicy;
pub use route::{outliers, spread, Mode, Observation, RoutePolicy, Thresholds};
pub use security::SecurityPolicy;
use ultragate_dataplane::status::Route;

/// A row's decision: what set it off, and the one command it asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Which decision, for the metrics and the timeline's action.
    pub kind: DecisionKind,
    /// What set it off, a stable snake_case name.
    pub trigger: &'static str,
    /// The measured value, readable.
    pub value: String,
    /// What the executor does.
    pub command: Command,
}

impl Decision {
    /// What was done, in the timeline's words.
    pub fn action(&self) -> &'static str {
        self.kind.action()
    }
}

/// What a row asks the executor to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Send the requests of pool `pool` (an index into the published
    /// pools) to it (`Route::Primary`) or to its fallback.
    Route {
        /// The pool whose requests move.
        pool: usize,
        /// Where they go.
        to: Route,
    },
    /// Nothing to change: the decision is told, not applied (a divert due
    /// while the fallback is down too; a restore that left the cache
    /// corrupt).
    Report,
    /// Mark server `server` of pool `pool` unhealthy; its active checks
    /// re-admit it.
    Eject {
        /// The pool (an index into the published pools).
        pool: usize,
        /// The server's index in it.
        server: usize,
    },
    /// Act on the shared cache.
    Cache(CacheCommand),
    /// Move serving from the DPDK port to kernel networking.
    KernelNetworking,
    /// Security isolation on or off.
    Isolate(bool),
}

/// What the memory and corruption rows ask of the shared cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheCommand {
    /// Halve the effective budget until memory is under 70 %.
    Shrink,
    /// Empty it, stop inserts, return memory to the OS.
    Clear,
    /// The configured budget back, inserts on.
    Restore,
    /// Serve without it (its bad entries were evicted by the verify).
    Bypass,
    /// Load the last good snapshot, then verify again.
    RestoreSnapshot,
    /// Serve from it again.
    ServeAgain,
}

/// The kinds of decision the control plane takes, with short stable
/// names for `ultragate_decisions_total{decision}` (prose goes to the
/// event timeline only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionKind {
    /// Traffic diverted to the fallback pool.
    Divert,
    /// Traffic back on the primary pool.
    FailBack,
    /// A divert was due but the fallback is unhealthy too.
    StayOnPrimary,
    /// A divert soon after a fail-back: the hold-down doubled.
    Flap,
    /// Serving on kernel networking after a DPDK port fault.
    KernelFallback,
    /// A primary server far slower than its peers ejected.
    EjectSlowServer,
    /// Memory pressure: the cache shrunk.
    CacheShrink,
    /// Memory pressure: the cache cleared, inserts stopped.
    CacheClear,
    /// Memory recovered: inserts resumed.
    CacheResumeInserts,
    /// Corrupt entries: the cache bypassed.
    CacheBypass,
    /// Corrupt entries: the last good snapshot restored.
    CacheRestore,
    /// Still corrupt after the restore: the cache stays bypassed.
    CacheStayBypassed,
    /// A clean verify: served from the cache again.
    CacheServeAgain,
    /// A config reload applied.
    ConfigReload,
    /// A config reload refused.
    ConfigRejected,
    /// Security isolation turned on.
    Isolation,
    /// Security isolation turned off.
    IsolationEnd,
}

impl DecisionKind {
    /// Every kind, for metrics present from the start.
    pub const ALL: [DecisionKind; 17] = [
        Self::Divert,
        Self::FailBack,
        Self::StayOnPrimary,
        Self::Flap,
        Self::KernelFallback,
        Self::EjectSlowServer,
        Self::CacheShrink,
        Self::CacheClear,
        Self::CacheResumeInserts,
        Self::CacheBypass,
        Self::CacheRestore,
        Self::CacheStayBypassed,
        Self::CacheServeAgain,
        Self::ConfigReload,
        Self::ConfigRejected,
        Self::Isolation,
        Self::IsolationEnd,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Divert => "divert",
            Self::FailBack => "fail_back",
            Self::StayOnPrimary => "stay_on_primary",
            Self::Flap => "flap",
            Self::KernelFallback => "kernel_fallback",
            Self::EjectSlowServer => "eject_slow_server",
            Self::CacheShrink => "cache_shrink",
            Self::CacheClear => "cache_clear",
            Self::CacheResumeInserts => "cache_resume_inserts",
            Self::CacheBypass => "cache_bypass",
            Self::CacheRestore => "cache_restore",
            Self::CacheStayBypassed => "cache_stay_bypassed",
            Self::CacheServeAgain => "cache_serve_again",
            Self::ConfigReload => "config_reload",
            Self::ConfigRejected => "config_rejected",
            Self::Isolation => "isolation",
            Self::IsolationEnd => "isolation_end",
        }
    }

    /// What is done, in the timeline's words.
    pub fn action(self) -> &'static str {
        match self {
            Self::Divert => "divert to fallback",
            Self::FailBack => "fail back to primary",
            Self::StayOnPrimary => "stay on primary: the fallback is unhealthy too",
            Self::Flap => "double the fail-back hold-down",
            Self::KernelFallback => "serve on kernel networking",
            Self::EjectSlowServer => "eject slow primary server",
            Self::CacheShrink => "shrink cache",
            Self::CacheClear => "clear cache, stop inserts",
            Self::CacheResumeInserts => "resume cache inserts",
            Self::CacheBypass => "bypass cache, evict bad entries",
            Self::CacheRestore => "restore last good snapshot",
            Self::CacheStayBypassed => "stay bypassed: corrupt after the restore",
            Self::CacheServeAgain => "serve from cache again",
            Self::ConfigReload => "apply new config",
            Self::ConfigRejected => "keep running config",
            Self::Isolation => "isolate: log every request, admin from loopback only",
            Self::IsolationEnd => "end isolation",
        }
    }
}

#[cfg(test)]
mod tests;
