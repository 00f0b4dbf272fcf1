//! Active health checks: every interval, `GET health_path` on each server
//! of a group; `fall` failures in a row eject a server, `rise` successes
//! in a row re-admit it (also after a passive ejection by the data cores).

use crate::client;
use crate::timeline::Timeline;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
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

/// Runs the checks of one group forever. `fast` is set while some
/// server's last check passed within `slow`; it drops as soon as the
/// last such check overruns it, not when it answers.
pub async fn run(
    cfg: CheckConfig,
    health: Arc<GroupHealth>,
    fast: Arc<AtomicBool>,
    timeline: Arc<Timeline>,
) {
    let n = cfg.servers.len();
    let (mut ups, mut downs) = (vec![0u32; n], vec![0u32; n]);
    // Each server's last check answered within `slow`.
    let mut quick = vec![true; n];
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (i, server) in cfg.servers.iter().enumerate() {
            let started = Instant::now();
            let host = server.to_string();
            let check =
                tokio::time::timeout(cfg.timeout, client::get(*server, &host, &cfg.path, None));
            tokio::pin!(check);
            // A check still running at `slow` already says the server is
            // slow: the group's flag drops then, not when it answers.
            let answer = tokio::select! {
                a = &mut check => a,
                () = tokio::time::sleep(cfg.slow) => {
                    quick[i] = false;
                    fast.store(quick.iter().any(|q| *q), Ordering::Relaxed);
                    check.await
                }
            };
            let ok = matches!(answer, Ok(Ok(r)) if (200..400).contains(&r.status));
            let took = started.elapsed();
            health.checked(i, ok);
            quick[i] = ok && took <= cfg.slow;
            if ok {
                ups[i] += 1;
                downs[i] = 0;
                if !health.is_healthy(i) && ups[i] >= cfg.rise && health.set(i, true) {
                    let value = format!("{} checks passed", ups[i]);
                    timeline.push(
                        "health_check_passed",
                        &value,
                        &format!("re-admit {} server {server}", cfg.group),
                        "ok",
                    );
                }
            } else {
                downs[i] += 1;
                ups[i] = 0;
                if health.is_healthy(i) && downs[i] >= cfg.fall && health.set(i, false) {
                    let value = format!("{} checks failed", downs[i]);
                    timeline.push(
                        "health_check_failed",
                        &value,
                        &format!("eject {} server {server}", cfg.group),
                        "ok",
                    );
                }
            }
        }
        fast.store(quick.iter().any(|q| *q), Ordering::Relaxed);
    }
}
