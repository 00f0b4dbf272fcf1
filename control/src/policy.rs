//! The runbook as state machines: one policy per scenario, each turning
//! observations into decisions with hysteresis. Pure: time comes in with
//! the observation, so every rule is tested on synthetic input.
//!
//! | scenario | trigger | action | recovery |
//! | --- | --- | --- | --- |
//! | critical failure ([`RoutePolicy`]) | no healthy primary; P99 over threshold for a window; error rate over threshold for a window | divert to the fallback | fail back after the primary is healthy (and fast) for the hold time |
//! | memory exhaustion ([`MemoryPolicy`]) | ≥ 85 % of the limit; ≥ 95 % | shrink the cache; clear it and stop inserts | resume inserts below 70 % |
//! | DPDK network failure ([`PortPolicy`]) | port down past the grace time | demote to kernel networking | admin call only |

use std::time::{Duration, Instant};
use ultragate_dataplane::status::Route;

/// A decision worth a line in the event timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Which decision, for the metrics.
    pub kind: DecisionKind,
    /// What set it off.
    pub trigger: &'static str,
    /// The measured value, readable.
    pub value: String,
    /// What was done.
    pub action: &'static str,
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
    /// Corrupt entries: the cache bypassed, restored from a snapshot.
    CacheBypass,
    /// A clean verify: served from the cache again.
    CacheServeAgain,
    /// A config reload applied.
    ConfigReload,
    /// A config reload refused.
    ConfigRejected,
    /// Security isolation turned on or off.
    Isolation,
}

impl DecisionKind {
    /// Every kind, for metrics present from the start.
    pub const ALL: [DecisionKind; 13] = [
        Self::Divert,
        Self::FailBack,
        Self::StayOnPrimary,
        Self::KernelFallback,
        Self::EjectSlowServer,
        Self::CacheShrink,
        Self::CacheClear,
        Self::CacheResumeInserts,
        Self::CacheBypass,
        Self::CacheServeAgain,
        Self::ConfigReload,
        Self::ConfigRejected,
        Self::Isolation,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Divert => "divert",
            Self::FailBack => "fail_back",
            Self::StayOnPrimary => "stay_on_primary",
            Self::KernelFallback => "kernel_fallback",
            Self::EjectSlowServer => "eject_slow_server",
            Self::CacheShrink => "cache_shrink",
            Self::CacheClear => "cache_clear",
            Self::CacheResumeInserts => "cache_resume_inserts",
            Self::CacheBypass => "cache_bypass",
            Self::CacheServeAgain => "cache_serve_again",
            Self::ConfigReload => "config_reload",
            Self::ConfigRejected => "config_rejected",
            Self::Isolation => "isolation",
        }
    }
}

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
        Self {
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
                        action: "stay on primary: the fallback is unhealthy too",
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
                    action: "divert to fallback",
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
                    action: "fail back to primary",
                })
            }
        }
    }
}

/// Latency-based ejection: the servers whose average latency (µs) stands
/// far above their peers' (more than 3× the median and above `floor_us`).
/// Needs two servers with data, and always leaves one.
pub fn slow_outliers(latencies: &[(usize, u64)], floor_us: u64) -> Vec<usize> {
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

/// What the memory policy asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryAction {
    /// Halve the cache's effective budget (evicting down to it) and keep
    /// it lowered until memory is back under 70 %.
    Shrink,
    /// Empty the cache, stop inserting, return memory to the OS.
    ClearAndStopInserts,
    /// Memory is under 70 % again: the configured budget back, inserts on.
    Restore,
}

/// Where the memory policy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum MemoryState {
    /// Under the thresholds.
    #[default]
    Normal,
    /// Shrunk; `rearmed` once memory fell under 85 % since, so that a new
    /// crossing shrinks again (once).
    Shrunk { rearmed: bool },
    /// Cleared, inserts stopped.
    Cleared,
}

/// The memory-exhaustion policy: at 85 % shrink once per crossing (not
/// on every tick while memory stays high), at 95 % clear and stop
/// inserts, under 70 % restore.
#[derive(Debug, Default)]
pub struct MemoryPolicy {
    state: MemoryState,
}

impl MemoryPolicy {
    /// Takes the used share of the memory limit (0.0–1.0).
    pub fn observe(&mut self, ratio: f64) -> Option<MemoryAction> {
        use MemoryState::*;
        let (next, action) = match self.state {
            Cleared if ratio < 0.70 => (Normal, Some(MemoryAction::Restore)),
            Cleared => (Cleared, None),
            _ if ratio >= 0.95 => (Cleared, Some(MemoryAction::ClearAndStopInserts)),
            Normal if ratio >= 0.85 => (Shrunk { rearmed: false }, Some(MemoryAction::Shrink)),
            Shrunk { .. } if ratio < 0.70 => (Normal, Some(MemoryAction::Restore)),
            Shrunk { rearmed: true } if ratio >= 0.85 => {
                (Shrunk { rearmed: false }, Some(MemoryAction::Shrink))
            }
            Shrunk { rearmed } => (
                Shrunk {
                    rearmed: rearmed || ratio < 0.85,
                },
                None,
            ),
            Normal => (Normal, None),
        };
        self.state = next;
        action
    }
}

/// The DPDK port policy: demote to kernel networking when the port stays
/// down past the grace time; back to DPDK only by an operator's call. The
/// gateway's port monitor feeds it the link state it samples.
#[derive(Debug)]
pub struct PortPolicy {
    grace: Duration,
    down_since: Option<Instant>,
    demoted: bool,
}

impl PortPolicy {
    /// A policy with `grace` for a flapping link.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            down_since: None,
            demoted: false,
        }
    }

    /// Whether the data plane was moved to kernel networking.
    pub fn demoted(&self) -> bool {
        self.demoted
    }

    /// Takes the link state at `now`.
    pub fn observe(&mut self, now: Instant, link_up: bool) -> Option<Decision> {
        if link_up || self.demoted {
            self.down_since = None;
            return None;
        }
        let since = *self.down_since.get_or_insert(now);
        if now.duration_since(since) < self.grace {
            return None;
        }
        self.demoted = true;
        Some(Decision {
            kind: DecisionKind::KernelFallback,
            trigger: "dpdk_link_down",
            value: format!("link down for {} ms", now.duration_since(since).as_millis()),
            action: "serve on kernel networking",
        })
    }

    /// An operator moves serving to kernel networking (`POST
    /// /admin/dataplane kernel`): the link no longer matters until a
    /// promotion.
    pub fn demote(&mut self) {
        self.demoted = true;
        self.down_since = None;
    }

    /// An operator asks to go back to DPDK (`POST /admin/dataplane dpdk`);
    /// allowed only while the link is up.
    pub fn promote(&mut self, link_up: bool) -> bool {
        if link_up {
            self.demoted = false;
        }
        link_up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(now: Instant, p99_ms: u64, errors: f64, healthy: bool) -> Observation {
        Observation {
            now,
            requests: 100,
            p99: Duration::from_millis(p99_ms),
            error_rate: errors,
            primary_healthy: healthy,
            primary_fast: healthy,
            fallback_healthy: true,
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn unhealthy_primary_diverts_at_once_and_fails_back_after_the_hold() {
        let t0 = Instant::now();
        let mut p = RoutePolicy::new(Thresholds::default());
        assert_eq!(
            p.observe(&obs(t0, 1, 0.0, false)).unwrap().action,
            "divert to fallback"
        );
        assert_eq!(p.route(), Route::Fallback);
        assert!(p.observe(&obs(t0 + s(1), 1, 0.0, true)).is_none());
        assert!(p.observe(&obs(t0 + s(30), 1, 0.0, true)).is_none());
        let d = p.observe(&obs(t0 + s(31), 1, 0.0, true)).unwrap();
        assert_eq!(
            (d.trigger, d.action),
            ("primary_recovered", "fail back to primary")
        );
        assert_eq!(p.route(), Route::Primary);
    }

    #[test]
    fn p99_must_stay_high_for_the_window() {
        let t0 = Instant::now();
        let mut p = RoutePolicy::new(Thresholds::default());
        for i in 0..30 {
            assert!(
                p.observe(&obs(t0 + s(i), 50, 0.0, true)).is_none(),
                "second {i}"
            );
        }
        let d = p.observe(&obs(t0 + s(30), 50, 0.0, true)).unwrap();
        assert_eq!(d.trigger, "p99_over_threshold");
        // A dip resets the window.
        let mut p = RoutePolicy::new(Thresholds::default());
        for i in 0..60 {
            let p99 = if i % 20 == 19 { 1 } else { 50 };
            assert!(p.observe(&obs(t0 + s(i), p99, 0.0, true)).is_none());
        }
    }

    #[test]
    fn error_rate_diverts_after_its_window_and_needs_traffic() {
        let t0 = Instant::now();
        let mut p = RoutePolicy::new(Thresholds::default());
        assert!(p.observe(&obs(t0, 1, 0.5, true)).is_none());
        assert!(p.observe(&obs(t0 + s(4), 1, 0.5, true)).is_none());
        assert_eq!(
            p.observe(&obs(t0 + s(5), 1, 0.5, true)).unwrap().trigger,
            "error_rate_over_threshold"
        );
        let mut p = RoutePolicy::new(Thresholds::default());
        let quiet = Observation {
            requests: 3,
            ..obs(t0, 500, 1.0, true)
        };
        for i in 0..100 {
            assert!(
                p.observe(&Observation {
                    now: t0 + s(i),
                    ..quiet
                })
                .is_none(),
                "3 requests prove nothing"
            );
        }
    }

    #[test]
    fn flapping_primary_does_not_flap_the_route() {
        let t0 = Instant::now();
        let mut p = RoutePolicy::new(Thresholds::default());
        let mut changes = 0;
        let mut last = p.route();
        for i in 0..600 {
            // Healthy and unhealthy in turn, every second, for ten minutes.
            p.observe(&obs(t0 + s(i), 1, 0.0, i % 2 == 0));
            if p.route() != last {
                changes += 1;
                last = p.route();
            }
        }
        assert_eq!(changes, 1, "one divert, no fail back while it flaps");
        assert_eq!(p.route(), Route::Fallback);
    }

    #[test]
    fn no_divert_to_an_unhealthy_fallback_and_one_event_for_it() {
        let t0 = Instant::now();
        let mut p = RoutePolicy::new(Thresholds::default());
        let o = Observation {
            fallback_healthy: false,
            ..obs(t0, 1, 0.0, false)
        };
        assert!(p.observe(&o).unwrap().action.starts_with("stay on primary"));
        assert!(p
            .observe(&Observation {
                now: t0 + s(1),
                ..o
            })
            .is_none());
        assert_eq!(p.route(), Route::Primary);
    }

    #[test]
    fn forced_route_holds_until_auto() {
        let t0 = Instant::now();
        let mut p = RoutePolicy::new(Thresholds::default());
        p.set_mode(Mode::Forced(Route::Fallback));
        assert!(p.observe(&obs(t0, 1, 0.0, true)).is_none());
        assert_eq!(p.route(), Route::Fallback);
        p.set_mode(Mode::Auto);
        assert!(
            p.observe(&obs(t0 + s(31), 1, 0.0, true)).is_none(),
            "the hold starts now"
        );
    }

    #[test]
    fn latency_outliers_among_peers() {
        assert_eq!(
            slow_outliers(&[(0, 900), (1, 1000), (2, 45_000)], 10_000),
            [2]
        );
        assert!(
            slow_outliers(&[(0, 900), (1, 1000), (2, 5_000)], 10_000).is_empty(),
            "under the floor"
        );
        assert!(slow_outliers(&[(0, 45_000)], 10_000).is_empty(), "no peers");
        assert!(
            slow_outliers(&[(0, 40_000), (1, 41_000)], 10_000).is_empty(),
            "all slow alike: no outlier"
        );
        assert_eq!(slow_outliers(&[(0, 1_000), (1, 90_000)], 10_000), [1]);
    }

    #[test]
    fn memory_thresholds_with_hysteresis() {
        let mut m = MemoryPolicy::default();
        assert_eq!(m.observe(0.5), None);
        assert_eq!(m.observe(0.86), Some(MemoryAction::Shrink));
        assert_eq!(m.observe(0.80), None, "between 70 and 85: hold");
        assert_eq!(m.observe(0.96), Some(MemoryAction::ClearAndStopInserts));
        assert_eq!(m.observe(0.97), None, "cleared once");
        assert_eq!(m.observe(0.75), None);
        assert_eq!(m.observe(0.69), Some(MemoryAction::Restore));
        assert_eq!(m.observe(0.69), None);
    }

    #[test]
    fn memory_that_stays_high_shrinks_once_per_crossing() {
        let mut m = MemoryPolicy::default();
        let shrinks = |m: &mut MemoryPolicy, ratio: f64, ticks: usize| {
            (0..ticks)
                .filter(|_| m.observe(ratio) == Some(MemoryAction::Shrink))
                .count()
        };
        assert_eq!(shrinks(&mut m, 0.90, 60), 1, "a minute at 90 %: once");
        assert_eq!(shrinks(&mut m, 0.80, 5), 0);
        assert_eq!(shrinks(&mut m, 0.88, 60), 1, "a new crossing: once more");
        assert_eq!(m.observe(0.60), Some(MemoryAction::Restore));
        assert_eq!(shrinks(&mut m, 0.86, 3), 1);
    }

    #[test]
    fn port_down_past_grace_demotes_once() {
        let t0 = Instant::now();
        let mut p = PortPolicy::new(Duration::from_millis(500));
        // A synthetic port: down, briefly up, down for good.
        assert!(p.observe(t0, false).is_none());
        assert!(p.observe(t0 + Duration::from_millis(300), true).is_none());
        assert!(p.observe(t0 + Duration::from_millis(400), false).is_none());
        assert!(
            p.observe(t0 + Duration::from_millis(800), false).is_none(),
            "grace restarted"
        );
        let d = p.observe(t0 + Duration::from_millis(900), false).unwrap();
        assert_eq!(d.action, "serve on kernel networking");
        assert!(p.demoted() && p.observe(t0 + s(5), false).is_none());
        assert!(
            !p.promote(false) && p.demoted(),
            "not while the link is down"
        );
        assert!(p.promote(true) && !p.demoted());
    }
}
