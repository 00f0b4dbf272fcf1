//! What one control round saw, taken once: `/metrics` is rendered from
//! it, so the metrics need no access to the supervisor (which owns them).

use std::sync::Arc;
use std::time::Duration;
use ultragate_dataplane::live::Settings;
use ultragate_dataplane::status::{Backend, PortHealth, Route};

/// Numbers of the last round's window, for `/health` and `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct View {
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub error_rate: f64,
    pub rps: f64,
    pub rss: u64,
    pub limit: Option<u64>,
}

/// The cache's gauges.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheNumbers {
    pub bytes: u64,
    pub entries: usize,
    pub bypassed: bool,
    pub inserts: bool,
}

/// Everything the gauges show, as of one round.
pub(crate) struct Snapshot {
    pub view: View,
    /// The access log's lines dropped and written, when it is watched.
    pub access: Option<(u64, u64)>,
    pub panics: u64,
    pub route: Route,
    pub port: Option<PortHealth>,
    pub backend: Backend,
    /// Whether the config asks for DPDK.
    pub dpdk_wanted: bool,
    /// Each data core's index, time since its loop last turned, and
    /// whether it is stalled.
    pub cores: Vec<(usize, Duration, bool)>,
    pub pools: Arc<Settings>,
    pub cache: Option<CacheNumbers>,
    /// Every pool that takes traffic, and whether neither it nor its
    /// fallback has a server that answers.
    pub traffic: Vec<(String, bool)>,
    /// Every pool with a fallback: its name, whether it is diverted, and
    /// whether an operator forced its route.
    pub routes: Vec<(String, bool, bool)>,
}
