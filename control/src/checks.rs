//! Active health checks: every interval, `GET health_path` on each server
//! of a group; `fall` failures in a row eject a server, `rise` successes
//! in a row re-admit it (also after a passive ejection by the data cores).

use crate::client;
use crate::executor::events::{self, Event};
use crate::timeline::Timeline;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use ultragate_dataplane::upstream::health::GroupHealth;

/// How one group is checked.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// The pool's name in events.
    pub group: String,
    /// The servers.
    pub servers: Vec<SocketAddr>,
    /// Path requested, e.g. `/health`.
    pub path: String,
    /// Time between rounds.
    pub interval: Duration,
    /// Time allowed per check.
    pub timeout: Duration,
    /// Successes in a row that re-admit a server.
    pub rise: u32,
    /// Failures in a row that eject a server.
    pub fall: u32,
    /// A check slower than this marks the group as slow (the P99 threshold).
    pub slow: Duration,
}

/// The rise/fall rule of one group, apart from the network: each check
/// result goes in, and out comes a server's new state when enough checks
/// in a row agree.
#[derive(Debug, Clone)]
pub struct CheckPolicy {
    rise: u32,
    fall: u32,
    ups: Vec<u32>,
    downs: Vec<u32>,
}

impl CheckPolicy {
    /// The rule for `servers` servers: `rise` passes in a row re-admit,
    /// `fall` failures in a row eject.
    pub fn new(servers: usize, rise: u32, fall: u32) -> Self {
        Self {
            rise,
            fall,
            ups: vec![0; servers],
            downs: vec![0; servers],
        }
    }

    /// Server `i`'s check passed (`ok`) or failed while it is `healthy`:
    /// `Some((healthy, checks))` when its state should change, with how
    /// many checks in a row agreed.
    pub fn observe(&mut self, i: usize, ok: bool, healthy: bool) -> Option<(bool, u32)> {
        let (ups, downs) = (self.ups.get_mut(i)?, self.downs.get_mut(i)?);
        if ok {
            *ups += 1;
            *downs = 0;
            (!healthy && *ups >= self.rise).then_some((true, *ups))
        } else {
            *downs += 1;
            *ups = 0;
            (healthy && *downs >= self.fall).then_some((false, *downs))
        }
    }
}

/// Runs the checks of one group forever: every interval, every server is
/// probed at once (a slow server delays no other's check); the probes only
/// report, [`CheckPolicy`] decides, and a change is recorded. `fast` is set
/// while some server's last check passed within `slow`; it drops as soon
/// as the last such check overruns it, not when it answers.
pub async fn run(
    cfg: CheckConfig,
    health: Arc<GroupHealth>,
    fast: Arc<AtomicBool>,
    timeline: Arc<Timeline>,
) {
    let n = cfg.servers.len();
    let mut policy = CheckPolicy::new(n, cfg.rise, cfg.fall);
    // Each server's last check answered within `slow`.
    let mut quick = vec![true; n];
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = tokio::time::Instant::now();
        let mut probes = tokio::task::JoinSet::new();
        for (i, server) in cfg.servers.iter().enumerate() {
            let (server, path, timeout) = (*server, cfg.path.clone(), cfg.timeout);
            probes.spawn(async move {
                let host = server.to_string();
                let answer =
                    tokio::time::timeout(timeout, client::get(server, &host, &path, None)).await;
                let ok = matches!(answer, Ok(Ok(r)) if (200..400).contains(&r.status));
                (i, ok, started.elapsed())
            });
        }
        let mut pending = vec![true; n];
        let mut overran = false;
        loop {
            let joined = tokio::select! {
                j = probes.join_next() => j,
                // A check still running at `slow` already says the server
                // is slow: the group's flag drops then, not when it answers.
                () = tokio::time::sleep_until(started + cfg.slow), if !overran => {
                    overran = true;
                    for (q, p) in quick.iter_mut().zip(&pending) {
                        *q &= !p;
                    }
                    fast.store(quick.iter().any(|q| *q), Ordering::Relaxed);
                    continue;
                }
            };
            let Some(joined) = joined else { break };
            let Ok((i, ok, took)) = joined else { continue };
            if let Some(p) = pending.get_mut(i) {
                *p = false;
            }
            health.checked(i, ok);
            if let Some(q) = quick.get_mut(i) {
                *q = ok && took <= cfg.slow;
            }
            if let Some((healthy, checks)) = policy.observe(i, ok, health.is_healthy(i)) {
                if health.set(i, healthy) {
                    let server = cfg.servers.get(i).copied();
                    if let Some(server) = server {
                        events::record(
                            &timeline,
                            None,
                            Event::Check {
                                pool: &cfg.group,
                                server,
                                healthy,
                                checks,
                            },
                        );
                    }
                }
            }
        }
        fast.store(quick.iter().any(|q| *q), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::CheckPolicy;

    #[test]
    fn fall_failures_eject_and_rise_passes_re_admit_only_in_a_row() {
        let mut p = CheckPolicy::new(2, 2, 3);
        assert_eq!(p.observe(0, false, true), None);
        assert_eq!(p.observe(0, false, true), None);
        // A pass in between starts the count again.
        assert_eq!(p.observe(0, true, true), None);
        assert_eq!(p.observe(0, false, true), None);
        assert_eq!(p.observe(0, false, true), None);
        assert_eq!(p.observe(0, false, true), Some((false, 3)));
        // Ejected: two passes in a row re-admit.
        assert_eq!(p.observe(0, true, false), None);
        assert_eq!(p.observe(0, true, false), Some((true, 2)));
        // Another server's count is its own; an index past the group is
        // no decision.
        assert_eq!(p.observe(1, false, true), None);
        assert_eq!(p.observe(9, false, true), None);
    }
}
