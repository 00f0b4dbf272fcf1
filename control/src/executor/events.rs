//! What the timeline records besides the runbook rows' decisions, as one
//! table: every operator call, check result, reload and port switch is a
//! typed [`Event`] here, and [`record`] is the one place that turns it
//! into a timeline line (and so a webhook message). Nothing else in the
//! process writes the timeline: `Timeline::push` is this crate's own.

use crate::metrics::{Metrics, ReloadResult};
use crate::policy::DecisionKind;
use crate::timeline::Timeline;
use std::net::SocketAddr;

/// Something the timeline records that no runbook row decided.
#[derive(Debug)]
pub enum Event<'a> {
    /// An active health check moved a server in or out of its pool.
    Check {
        /// The pool's name.
        pool: &'a str,
        /// The server.
        server: SocketAddr,
        /// Passed (re-admitted) or failed (ejected).
        healthy: bool,
        /// Consecutive checks that agreed.
        checks: u32,
    },
    /// Certificates were loaded, or refused with the running ones kept.
    TlsReload {
        /// What asked (a file change, SIGHUP, the admin API).
        cause: &'a str,
        /// The subjects now served, or why the new ones were refused.
        outcome: Result<Vec<&'a str>, &'a str>,
    },
    /// The configuration was reloaded (or refused, the running one kept).
    ConfigReload {
        /// What asked.
        trigger: &'a str,
        /// How it ended, for `ultragate_config_reloads_total`.
        outcome: ReloadResult,
        /// What was done.
        action: &'a str,
        /// The keys applied and those waiting for a restart, or the error.
        detail: &'a str,
    },
    /// A pool's servers, resolved again, changed.
    DnsChange {
        /// The pool's name.
        pool: &'a str,
        /// Its servers now.
        servers: &'a [SocketAddr],
    },
    /// A pool's names did not (all) resolve; what did is kept.
    DnsUnresolved {
        /// The pool's name.
        pool: &'a str,
        /// The resolver's reason.
        why: &'a str,
        /// The servers it has.
        servers: usize,
    },
    /// DPDK did not start; kernel networking serves.
    DpdkStartFailed {
        /// Why.
        why: &'a str,
        /// The kernel listener serving instead.
        listen: &'a str,
        /// The backend serving now.
        serving: &'a str,
    },
    /// An operator's call on the admin API and how it ended: `call` is
    /// the call (`cache/clear`, `dataplane dpdk`, `route api fallback`),
    /// `value` what it asked for.
    AdminCall {
        /// What was asked for.
        value: &'a str,
        /// The call, in the timeline's words.
        call: &'a str,
        /// How it went.
        result: &'a str,
    },
    /// A decision webhook could not be delivered (recorded without
    /// notifying, so a dead webhook cannot loop).
    NotifyFailed {
        /// The event's action that was not delivered.
        action: &'a str,
        /// Why.
        why: &'a str,
    },
}

/// Writes `event` to the timeline (and so the webhook), counting what the
/// metrics count of it.
pub fn record(timeline: &Timeline, metrics: Option<&Metrics>, event: Event<'_>) {
    match event {
        Event::Check {
            pool,
            server,
            healthy,
            checks,
        } => {
            let (trigger, verdict, action) = match healthy {
                true => ("health_check_passed", "passed", "re-admit"),
                false => ("health_check_failed", "failed", "eject"),
            };
            timeline.push(
                trigger,
                &format!("{checks} checks {verdict}"),
                &format!("{action} {pool} server {server}"),
                "ok",
            );
        }
        Event::TlsReload { cause, outcome } => {
            if let Some(m) = metrics {
                m.tls_reload(outcome.is_ok());
            }
            let result = match outcome {
                Ok(names) => format!("serving {}", names.join(", ")),
                Err(why) => format!("refused, the running certificates stay: {why}"),
            };
            timeline.push("tls_reload", cause, "load the TLS certificates", &result);
        }
        Event::ConfigReload {
            trigger,
            outcome,
            action,
            detail,
        } => {
            if let Some(m) = metrics {
                m.reload(outcome);
                m.decision(match outcome {
                    ReloadResult::Rejected => DecisionKind::ConfigRejected,
                    _ => DecisionKind::ConfigReload,
                });
            }
            timeline.push("config_reload", trigger, action, detail);
        }
        Event::DnsChange { pool, servers } => {
            let list: Vec<String> = servers.iter().map(|a| a.to_string()).collect();
            timeline.push(
                "dns_change",
                &format!("pool {pool}: {}", list.join(", ")),
                "update pool servers",
                &format!("{} servers", servers.len()),
            );
        }
        Event::DnsUnresolved { pool, why, servers } => timeline.push(
            "dns_unresolved",
            &format!("pool {pool}: {why}"),
            "keep the addresses that resolved; retry",
            &format!("{servers} servers"),
        ),
        Event::DpdkStartFailed {
            why,
            listen,
            serving,
        } => timeline.push(
            "dpdk_start_failed",
            why,
            &format!("serve on kernel networking at {listen}"),
            &format!("serving on {serving}"),
        ),
        Event::AdminCall {
            value,
            call,
            result,
        } => timeline.push("admin_call", value, call, result),
        Event::NotifyFailed { action, why } => {
            timeline.push_quiet("notify_failed", why, action, "not delivered")
        }
    }
}
