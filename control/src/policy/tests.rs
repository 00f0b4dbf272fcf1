//! The runbook's rows on synthetic observations.

use super::*;
use std::time::{Duration, Instant};

fn ejected(latencies: &[(usize, u64)], floor_us: u64) -> Vec<usize> {
    outliers(0, latencies, floor_us)
        .into_iter()
        .map(|d| match d.command {
            Command::Eject { pool: 0, server } => server,
            other => panic!("{other:?}"),
        })
        .collect()
}

fn mem(m: &mut MemoryPolicy, ratio: f64) -> Option<Command> {
    m.observe(ratio).map(|d| d.command)
}

impl PortPolicy {
    fn observe_link(&mut self, now: Instant, up: bool) -> Option<Decision> {
        self.observe(now, 0, up)
    }
}

/// A pool failing for everyone: what fails is spread over clients and
/// URLs.
fn obs(now: Instant, p99_ms: u64, errors: f64, healthy: bool) -> Observation {
    let slow = p99_ms > Thresholds::default().p99.as_millis() as u64;
    Observation {
        now,
        requests: 100,
        error_rate: errors,
        slow_share: if slow { 0.5 } else { 0.0 },
        errors_spread: true,
        slow_spread: true,
        probe_failing: false,
        primary_healthy: healthy,
        primary_fast: healthy,
        fallback_healthy: true,
    }
}

/// What one client or one URL causes alone: not spread, the probe fine.
fn one_source(o: Observation) -> Observation {
    Observation {
        errors_spread: false,
        slow_spread: false,
        ..o
    }
}

#[test]
fn spread_caps_each_slot_at_its_share_of_what_the_trigger_needs() {
    let mut slots = [0u32; 64];
    slots[7] = 1_000;
    assert!(!spread(&slots, 10.0, 4), "one slot, however many");
    slots[8] = 1_000;
    slots[9] = 1_000;
    assert!(!spread(&slots, 10.0, 4), "three of four");
    slots[10] = 3;
    assert!(spread(&slots, 10.0, 4), "four slots at their cap (2.5)");
    assert!(spread(&slots[7..8], 10.0, 1), "min_spread 1: any");
    assert!(!spread(&[0; 64], 0.0, 4), "nothing needed, nothing shown");
    // Many slots each with a little: shared by many.
    assert!(spread(&[1; 64], 10.0, 4));
}

#[test]
fn a_failure_of_one_client_or_url_does_not_divert_unless_the_probe_corroborates() {
    let t0 = Instant::now();
    let mut p = RoutePolicy::new(Thresholds::default());
    for i in 0..120 {
        let o = one_source(obs(t0 + s(i), 60, 0.5, true));
        assert!(p.observe(&o).is_none(), "second {i}");
    }
    assert_eq!(p.route(), Route::Primary);
    // The same errors with a failing check of the health path: diverted
    // after the error window.
    let mut p = RoutePolicy::new(Thresholds::default());
    let failing = |i| Observation {
        probe_failing: true,
        ..one_source(obs(t0 + s(i), 1, 0.5, true))
    };
    assert!(p.observe(&failing(0)).is_none());
    assert_eq!(
        p.observe(&failing(5)).unwrap().trigger,
        "error_rate_over_threshold"
    );
    // Slow answers with a probe slower than the threshold: diverted after
    // the P99 window.
    let mut p = RoutePolicy::new(Thresholds::default());
    let slow = |i| Observation {
        primary_fast: false,
        ..one_source(obs(t0 + s(i), 60, 0.0, true))
    };
    assert!(p.observe(&slow(0)).is_none());
    assert_eq!(p.observe(&slow(30)).unwrap().trigger, "p99_over_threshold");
}

#[test]
fn a_diverted_pool_fails_back_only_on_good_canaries_and_a_flap_doubles_the_hold() {
    let t0 = Instant::now();
    let t = Thresholds {
        failback_hold: s(30),
        failback_hold_max: s(120),
        ..Thresholds::default()
    };
    let mut p = RoutePolicy::new(t);
    p.observe(&obs(t0, 1, 0.0, false)).unwrap();
    assert_eq!(p.route(), Route::Fallback);
    // Healthy and its probe fast, but its canaries are slow: it stays.
    let slow_canaries = |i| Observation {
        requests: 2,
        ..obs(t0 + s(i), 60, 0.0, true)
    };
    for i in 1..200 {
        assert!(p.observe(&slow_canaries(i)).is_none(), "second {i}");
    }
    // Fast canaries (or none) for the hold: back.
    for i in 200..230 {
        assert!(p.observe(&obs(t0 + s(i), 1, 0.0, true)).is_none());
    }
    assert_eq!(
        p.observe(&obs(t0 + s(230), 1, 0.0, true)).unwrap().action(),
        "fail back to primary"
    );
    assert!(p.take_flap().is_none());
    // Down again 10 s later: a flap; the hold doubles to 60 s.
    p.observe(&obs(t0 + s(240), 1, 0.0, false)).unwrap();
    assert_eq!(p.flaps(), 1);
    assert_eq!(p.hold(), s(60));
    assert_eq!(p.take_flap().unwrap().kind, DecisionKind::Flap);
    for i in 241..301 {
        assert!(p.observe(&obs(t0 + s(i), 1, 0.0, true)).is_none(), "{i}");
    }
    p.observe(&obs(t0 + s(301), 1, 0.0, true)).unwrap();
    // Twice more, each a second after failing back: capped at 120 s.
    let mut at = 302;
    for _ in 0..2 {
        p.observe(&obs(t0 + s(at), 1, 0.0, false)).unwrap();
        let hold = p.hold().as_secs();
        for i in 1..=hold + 1 {
            p.observe(&obs(t0 + s(at + i), 1, 0.0, true));
        }
        assert_eq!(p.route(), Route::Primary, "back after {hold} s");
        at += hold + 2;
    }
    assert_eq!((p.flaps(), p.hold()), (3, s(120)));
    // Quiet on the pool for the cap: forgiven.
    assert!(p.observe(&obs(t0 + s(at + 120), 1, 0.0, true)).is_none());
    assert_eq!(p.hold(), s(30));
}

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn unhealthy_primary_diverts_at_once_and_fails_back_after_the_hold() {
    let t0 = Instant::now();
    let mut p = RoutePolicy::new(Thresholds::default());
    assert_eq!(
        p.observe(&obs(t0, 1, 0.0, false)).unwrap().action(),
        "divert to fallback"
    );
    assert_eq!(p.route(), Route::Fallback);
    assert!(p.observe(&obs(t0 + s(1), 1, 0.0, true)).is_none());
    assert!(p.observe(&obs(t0 + s(30), 1, 0.0, true)).is_none());
    let d = p.observe(&obs(t0 + s(31), 1, 0.0, true)).unwrap();
    assert_eq!(
        (d.trigger, d.action()),
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
    assert!(p
        .observe(&o)
        .unwrap()
        .action()
        .starts_with("stay on primary"));
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
    assert_eq!(ejected(&[(0, 900), (1, 1000), (2, 45_000)], 10_000), [2]);
    assert!(
        ejected(&[(0, 900), (1, 1000), (2, 5_000)], 10_000).is_empty(),
        "under the floor"
    );
    assert!(ejected(&[(0, 45_000)], 10_000).is_empty(), "no peers");
    assert!(
        ejected(&[(0, 40_000), (1, 41_000)], 10_000).is_empty(),
        "all slow alike: no outlier"
    );
    assert_eq!(ejected(&[(0, 1_000), (1, 90_000)], 10_000), [1]);
}

#[test]
fn memory_thresholds_with_hysteresis() {
    let mut m = MemoryPolicy::default();
    assert_eq!(mem(&mut m, 0.5), None);
    assert_eq!(
        mem(&mut m, 0.86),
        Some(Command::Cache(CacheCommand::Shrink))
    );
    assert_eq!(mem(&mut m, 0.80), None, "between 70 and 85: hold");
    assert_eq!(mem(&mut m, 0.96), Some(Command::Cache(CacheCommand::Clear)));
    assert_eq!(mem(&mut m, 0.97), None, "cleared once");
    assert_eq!(mem(&mut m, 0.75), None);
    assert_eq!(
        mem(&mut m, 0.69),
        Some(Command::Cache(CacheCommand::Restore))
    );
    assert_eq!(mem(&mut m, 0.69), None);
}

#[test]
fn memory_that_stays_high_shrinks_once_per_crossing() {
    let mut m = MemoryPolicy::default();
    let shrinks = |m: &mut MemoryPolicy, ratio: f64, ticks: usize| {
        (0..ticks)
            .filter(|_| mem(m, ratio) == Some(Command::Cache(CacheCommand::Shrink)))
            .count()
    };
    assert_eq!(shrinks(&mut m, 0.90, 60), 1, "a minute at 90 %: once");
    assert_eq!(shrinks(&mut m, 0.80, 5), 0);
    assert_eq!(shrinks(&mut m, 0.88, 60), 1, "a new crossing: once more");
    assert_eq!(
        mem(&mut m, 0.60),
        Some(Command::Cache(CacheCommand::Restore))
    );
    assert_eq!(shrinks(&mut m, 0.86, 3), 1);
}

#[test]
fn a_reload_that_raises_or_removes_the_limit_resumes_inserts_at_once() {
    let restore = Some(Command::Cache(CacheCommand::Restore));
    let mut m = MemoryPolicy::default();
    assert!(m.limit_changed(None).is_none(), "nothing to resume");
    assert_eq!(mem(&mut m, 0.96), Some(Command::Cache(CacheCommand::Clear)));
    assert!(
        m.limit_changed(Some(0.90)).is_none(),
        "a new limit still under pressure: stay relieved"
    );
    assert_eq!(mem(&mut m, 0.80), None, "over 70 %: still paused");
    let d = m.limit_changed(Some(0.80)).expect("raised: resume");
    assert_eq!(Some(d.command), restore);
    assert!(d.value.contains("80.0%"), "{}", d.value);
    assert_eq!(mem(&mut m, 0.80), None, "resumed once");
    assert_eq!(mem(&mut m, 0.96), Some(Command::Cache(CacheCommand::Clear)));
    let d = m.limit_changed(None).expect("removed: resume");
    assert_eq!(Some(d.command), restore);
    assert_eq!(d.value, "memory limit removed by a reload");
}

#[test]
fn port_down_past_grace_demotes_once() {
    let t0 = Instant::now();
    let mut p = PortPolicy::new(Duration::from_millis(500));
    // A synthetic port: down, briefly up, down for good.
    assert!(p.observe_link(t0, false).is_none());
    assert!(p
        .observe_link(t0 + Duration::from_millis(300), true)
        .is_none());
    assert!(p
        .observe_link(t0 + Duration::from_millis(400), false)
        .is_none());
    assert!(
        p.observe_link(t0 + Duration::from_millis(800), false)
            .is_none(),
        "grace restarted"
    );
    let d = p
        .observe_link(t0 + Duration::from_millis(900), false)
        .unwrap();
    assert_eq!(d.command, Command::KernelNetworking);
    assert_eq!(d.value, "port 0 link down for 500 ms");
    assert!(p.demoted() && p.observe_link(t0 + s(5), false).is_none());
    assert!(
        !p.promote(false) && p.demoted(),
        "not while the link is down"
    );
    assert!(p.promote(true) && !p.demoted());
}

fn verified(corrupt: u64, bypassed: bool) -> Verified {
    Verified {
        checked: 10,
        corrupt,
        bypassed,
    }
}

fn commands(ds: Vec<Decision>) -> Vec<Command> {
    ds.into_iter().map(|d| d.command).collect()
}

#[test]
fn corruption_bypasses_restores_and_serves_again_after_a_clean_verify() {
    let mut p = CorruptionPolicy::default();
    assert!(p.observe(verified(0, false)).is_empty(), "clean: nothing");
    assert_eq!(
        commands(p.observe(verified(2, false))),
        [
            Command::Cache(CacheCommand::Bypass),
            Command::Cache(CacheCommand::RestoreSnapshot)
        ]
    );
    assert_eq!(
        commands(p.observe(verified(0, true))),
        [Command::Cache(CacheCommand::ServeAgain)],
        "the verify after the restore is clean"
    );
    // A restore that leaves corruption: stay bypassed, told once; the next
    // background verify tries the restore again.
    p.observe(verified(1, false));
    let stay = p.observe(verified(1, true));
    assert_eq!(stay[0].kind, DecisionKind::CacheStayBypassed);
    assert_eq!(commands(stay), [Command::Report]);
    assert_eq!(
        commands(p.observe(verified(1, true))),
        [Command::Cache(CacheCommand::RestoreSnapshot)]
    );
}

#[test]
fn isolation_is_decided_once_per_change() {
    let mut p = SecurityPolicy::default();
    assert!(p.observe(false).is_none());
    assert_eq!(p.observe(true).unwrap().command, Command::Isolate(true));
    assert!(p.observe(true).is_none(), "already isolated");
    assert_eq!(p.observe(false).unwrap().kind, DecisionKind::IsolationEnd);
}
