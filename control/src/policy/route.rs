//! The critical-failure row: divert to the fallback and fail back on
//! P99, error rate and pool health; eject a server far slower than its
//! peers.
//!
//! **Signals no client can forge.** A pool is judged by what its own
//! servers did, measured on the upstream's side: latency from the
//! request's last byte sent to the response head received (a client that
//! sends or reads slowly stretches neither), errors that the upstream
//! produced (connect failures, resets, timeouts, garbage, its 5xx). Cache
//! hits and the gateway's own answers are not the pool's. And a failure
//! one client or one URL causes alone is not a pool failure: the data
//! cores count each error and each slow answer by client address and by
//! URL path (hashed into slots, [`ultragate_dataplane::stats::Blame`]);
//! [`spread`] caps every slot at `1 / min_spread` of what the trigger
//! needs, so the P99 or error-rate trigger fires only when at least
//! `min_spread` clients *and* `min_spread` URL paths share the failure —
//! or when the gateway's own probe of the pool's health path corroborates
//! it (a failing check for errors, a check slower than the threshold for
//! P99). An unhealthy pool (no server passes its checks) diverts at once.
//!
//! **Fail-back on evidence.** While diverted, a canary share of the
//! pool's idempotent requests still goes to it (a failed canary is
//! retried on the fallback, unseen by its client); the pool fails back
//! only after `failback_hold` of good evidence: healthy, its probe fast,
//! and no canary slow or failing. A divert within the hold-down after a
//! fail-back is a flap: the hold-down doubles (up to `failback_hold_max`)
//! and goes back to `failback_hold` after that long on the pool.

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
    /// Most the hold-down grows to after flaps. Default 8× `failback_hold`.
    pub failback_hold_max: Duration,
    /// Distinct client addresses and URL paths that must share a failure
    /// before it is the pool's (1: any). Default 4.
    pub min_spread: u32,
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
            failback_hold_max: Duration::from_secs(240),
            min_spread: 4,
        }
    }
}

/// What the supervisor saw of one pool in one window.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    /// When.
    pub now: Instant,
    /// Answers the pool's servers gave (or failed to give) in the window;
    /// while it is diverted, its canaries'.
    pub requests: u64,
    /// Their error share (5xx and upstream failures).
    pub error_rate: f64,
    /// Share of them slower than the P99 threshold, on the upstream's
    /// side (each answer compared exactly: over 1 % is a P99 over it).
    pub slow_share: f64,
    /// The errors are spread over enough clients and URL paths
    /// ([`spread`]).
    pub errors_spread: bool,
    /// The slow answers are.
    pub slow_spread: bool,
    /// Some check of the pool's health path is failing now (not yet
    /// enough in a row to eject): the gateway's own corroboration.
    pub probe_failing: bool,
    /// Some primary server passes its checks.
    pub primary_healthy: bool,
    /// The primary answers its health checks faster than the P99 threshold.
    pub primary_fast: bool,
    /// Some fallback server passes its checks.
    pub fallback_healthy: bool,
}

/// Whether events counted by slot (errors or slow answers by client
/// address, or by URL path) reach `needed` once each slot is capped at
/// `needed / min_spread`: at least `min_spread` slots must share them, so
/// one client or one URL alone never does.
pub fn spread(slots: &[u32], needed: f64, min_spread: u32) -> bool {
    if needed <= 0.0 {
        return false;
    }
    let cap = needed / f64::from(min_spread.max(1));
    let capped: f64 = slots.iter().map(|&n| f64::from(n).min(cap)).sum();
    capped >= needed * (1.0 - 1e-9)
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
    /// The fail-back hold in force: `failback_hold`, doubled by flaps.
    hold: Duration,
    /// When the pool last failed back.
    failed_back: Option<Instant>,
    /// Diverts soon after a fail-back, since start.
    flaps: u64,
    /// The last divert was a flap, not yet told.
    flap_pending: Option<Decision>,
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
            hold: t.failback_hold,
            failed_back: None,
            flaps: 0,
            flap_pending: None,
        }
    }

    /// Diverts soon after a fail-back, since start.
    pub fn flaps(&self) -> u64 {
        self.flaps
    }

    /// The fail-back hold in force (doubled by flaps).
    pub fn hold(&self) -> Duration {
        self.hold
    }

    /// The flap the last divert was, once: its decision for the timeline.
    pub fn take_flap(&mut self) -> Option<Decision> {
        self.flap_pending.take()
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
        if t.failback_hold != self.t.failback_hold {
            self.hold = t.failback_hold;
        }
        self.hold = self
            .hold
            .clamp(t.failback_hold, t.failback_hold_max.max(t.failback_hold));
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
                if self
                    .failed_back
                    .is_some_and(|f| o.now.duration_since(f) >= t.failback_hold_max)
                {
                    // Quiet for long enough: the hold-down is forgiven.
                    self.hold = t.failback_hold;
                    self.failed_back = None;
                }
                let loaded = o.requests >= t.min_requests;
                // P99 over the threshold: more than 1 % of answers over it.
                let slow = o.slow_share > 0.01 && (o.slow_spread || !o.primary_fast);
                if loaded && slow {
                    self.slow_since.get_or_insert(o.now);
                } else {
                    self.slow_since = None;
                }
                let failing = o.error_rate > t.error_rate && (o.errors_spread || o.probe_failing);
                if loaded && failing {
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
                        format!(
                            "p99 > {:?} for {:?} ({:.1}% of answers slower)",
                            t.p99,
                            t.p99_window,
                            o.slow_share * 100.0
                        ),
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
                self.note_flap(o.now);
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
                // Canaries that were slow or failed: not yet.
                let canaries_bad =
                    o.requests > 0 && (o.slow_share > 0.01 || o.error_rate > t.error_rate);
                if !(o.primary_healthy && o.primary_fast) || canaries_bad {
                    self.good_since = None;
                    return None;
                }
                let since = *self.good_since.get_or_insert(o.now);
                if o.now.duration_since(since) < self.hold {
                    return None;
                }
                self.route = Route::Primary;
                self.good_since = None;
                self.failed_back = Some(o.now);
                Some(Decision {
                    kind: DecisionKind::FailBack,
                    trigger: "primary_recovered",
                    value: format!(
                        "primary healthy, its probe and canaries fast, for {:?}",
                        self.hold
                    ),
                    command: Command::Route {
                        pool: self.pool,
                        to: Route::Primary,
                    },
                })
            }
        }
    }
}

impl RoutePolicy {
    /// A divert at `now`: a flap when it comes within the hold-down of
    /// the last fail-back, which doubles the hold-down (up to its cap).
    fn note_flap(&mut self, now: Instant) {
        let Some(back) = self.failed_back else {
            return;
        };
        let after = now.duration_since(back);
        if after >= self.hold {
            return;
        }
        self.flaps += 1;
        let cap = self.t.failback_hold_max.max(self.t.failback_hold);
        self.hold = (self.hold * 2).min(cap);
        self.flap_pending = Some(Decision {
            kind: DecisionKind::Flap,
            trigger: "divert_soon_after_fail_back",
            value: format!(
                "diverted {after:?} after failing back (flap {}); hold-down now {:?}",
                self.flaps, self.hold
            ),
            command: Command::Report,
        });
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
