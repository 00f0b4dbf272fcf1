//! The critical-failure row: divert to the fallback and fail back on
//! P99, error rate and pool health; eject a server far slower than its
//! peers.

use super::{Command, Decision, DecisionKind};
use std::time::{Duration, Instant};
use ultragate_dataplane::status::Route;

/// Thresholds of the critical-failure policy (runbook defaults in
/// [`Thresholds::default`]).
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// P99 latency above which the primary counts as slow. Default 10 ms.
    pub p99: Duration,
    /// How long P99 must stay above it before a divert. Default 30 s.
    pub p99_window: Duration,
    /// Error share (0.0–1.0) above which the primary counts as failing.
    /// Default 0.10.
    pub error_rate: f64,
    /// How long the error rate must stay above it. Default 5 s.
    pub error_window: Duration,
    /// Fewer requests per observation than this say nothing about P99 or
    /// the error rate. Default 20.
    pub min_requests: u64,
    /// How long the primary must be healthy before a fail back. Default 30 s.
    pub failback_hold: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            p99: Duration::from_millis(10),
            p99_window: Duration::from_secs(30),
            error_rate: 0.10,
            error_window: Duration::from_secs(5),
            min_requests: 20,
            failback_hold: Duration::from_secs(30),
        }
    }
}

/// What the supervisor saw in one interval.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    /// When.
    pub now: Instant,
    /// Responses in the interval.
    pub requests: u64,
    /// Their P99 latency.
    pub p99: Duration,
    /// Their error share (5xx and upstream failures).
    pub error_rate: f64,
    /// Some primary server passes its checks.
    pub primary_healthy: bool,
    /// The primary answers its health checks faster than the P99 threshold.
    pub primary_fast: bool,
    /// Some fallback server passes its checks.
    pub fallback_healthy: bool,
}

/// Who decides the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The policy.
    Auto,
    /// An operator (`POST /admin/route`).
    Forced(Route),
}

/// The critical-failure policy: divert and fail back.
#[derive(Debug)]
pub struct RoutePolicy {
    /// The pool it diverts (0: the primary).
    pool: usize,
    t: Thresholds,
    route: Route,
    mode: Mode,
    slow_since: Option<Instant>,
    errors_since: Option<Instant>,
    good_since: Option<Instant>,
    blocked_reported: bool,
}

impl RoutePolicy {
    /// Starts on the primary, in auto mode.
    pub fn new(t: Thresholds) -> Self {
        Self::for_pool(t, 0)
    }

    /// The policy of pool `pool` (an index into the published pools):
    /// starts on the pool itself, in auto mode.
    pub fn for_pool(t: Thresholds, pool: usize) -> Self {
        Self {
            pool,
            t,
            route: Route::Primary,
            mode: Mode::Auto,
            slow_since: None,
            errors_since: None,
            good_since: None,
            blocked_reported: false,
        }
    }

    /// The route now.
    pub fn route(&self) -> Route {
        self.route
    }

    /// Who decides.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The thresholds in force.
    pub fn thresholds(&self) -> Thresholds {
        self.t
    }

    /// The pool's index after a reload moved it.
    pub fn set_pool(&mut self, pool: usize) {
        self.pool = pool;
    }

    /// Replaces the thresholds (config reload).
    pub fn set_thresholds(&mut self, t: Thresholds) {
        self.t = t;
    }

    /// An operator's override, or back to `Mode::Auto`.
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        if let Mode::Forced(r) = mode {
            self.route = r;
        }
        self.slow_since = None;
        self.errors_since = None;
        self.good_since = None;
    }

    /// Takes one observation; returns the decision, if any.
    pub fn observe(&mut self, o: &Observation) -> Option<Decision> {
        if self.mode != Mode::Auto {
            return None;
        }
        let t = self.t;
        match self.route {
            Route::Primary => {
                let loaded = o.requests >= t.min_requests;
                if loaded && o.p99 > t.p99 {
                    self.slow_since.get_or_insert(o.now);
                } else {
                    self.slow_since = None;
                }
                if loaded && o.error_rate > t.error_rate {
                    self.errors_since.get_or_insert(o.now);
                } else {
                    self.errors_since = None;
                }
                let lasted = |since: Option<Instant>, window| {
                    since.is_some_and(|s| o.now.duration_since(s) >= window)
                };
                let trigger = if !o.primary_healthy {
                    Some((
                        "primary_unhealthy",
                        "no primary server passes its checks".to_owned(),
                    ))
                } else if lasted(self.slow_since, t.p99_window) {
                    Some((
                        "p99_over_threshold",
                        format!("p99 {:?} > {:?} for {:?}", o.p99, t.p99, t.p99_window),
                    ))
                } else if lasted(self.errors_since, t.error_window) {
                    Some((
                        "error_rate_over_threshold",
                        format!(
                            "error rate {:.1}% > {:.1}% for {:?}",
                            o.error_rate * 100.0,
                            t.error_rate * 100.0,
                            t.error_window
                        ),
                    ))
                } else {
                    None
                };
                let (trigger, value) = trigger?;
                if !o.fallback_healthy {
                    if self.blocked_reported {
                        return None;
                    }
                    self.blocked_reported = true;
                    return Some(Decision {
                        kind: DecisionKind::StayOnPrimary,
                        trigger,
                        value,
                        command: Command::Report,
                    });
                }
                self.route = Route::Fallback;
                self.slow_since = None;
                self.errors_since = None;
                self.good_since = None;
                self.blocked_reported = false;
                Some(Decision {
                    kind: DecisionKind::Divert,
                    trigger,
                    value,
                    command: Command::Route {
                        pool: self.pool,
                        to: Route::Fallback,
                    },
                })
            }
            Route::Fallback => {
                if !(o.primary_healthy && o.primary_fast) {
                    self.good_since = None;
                    return None;
                }
                let since = *self.good_since.get_or_insert(o.now);
                if o.now.duration_since(since) < t.failback_hold {
                    return None;
                }
                self.route = Route::Primary;
                self.good_since = None;
                Some(Decision {
                    kind: DecisionKind::FailBack,
                    trigger: "primary_recovered",
                    value: format!("primary healthy for {:?}", t.failback_hold),
                    command: Command::Route {
                        pool: self.pool,
                        to: Route::Primary,
                    },
                })
            }
        }
    }
}

/// Latency-based ejection, the critical-failure row's per-server part:
/// the servers whose average latency (µs) stands far above their peers'
/// (more than 3× the median and above `floor_us`), each an
/// [`Command::Eject`] of pool `pool`. Needs two servers with data, and
/// always leaves one.
pub fn outliers(pool: usize, latencies: &[(usize, u64)], floor_us: u64) -> Vec<Decision> {
    slow_outliers(latencies, floor_us)
        .into_iter()
        .map(|i| Decision {
            kind: DecisionKind::EjectSlowServer,
            trigger: "latency_outlier",
            value: format!(
                "server {i} averages {} µs; peers: {latencies:?}",
                latencies
                    .iter()
                    .find(|(j, _)| *j == i)
                    .map_or(0, |(_, l)| *l)
            ),
            command: Command::Eject { pool, server: i },
        })
        .collect()
}

fn slow_outliers(latencies: &[(usize, u64)], floor_us: u64) -> Vec<usize> {
    if latencies.len() < 2 {
        return Vec::new();
    }
    let mut sorted: Vec<u64> = latencies.iter().map(|(_, l)| *l).collect();
    sorted.sort_unstable();
    let median = sorted[(sorted.len() - 1) / 2];
    let mut out: Vec<usize> = latencies
        .iter()
        .filter(|(_, l)| *l > floor_us && *l > median.saturating_mul(3))
        .map(|(i, _)| *i)
        .collect();
    if out.len() == latencies.len() {
        out.pop();
    }
    out
}
