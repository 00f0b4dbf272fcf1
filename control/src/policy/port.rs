//! The DPDK port row: demote to kernel networking when the link stays
//! down.

use super::{Command, Decision, DecisionKind};
use std::time::{Duration, Instant};

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

    /// Takes the link state of `port` at `now`.
    pub fn observe(&mut self, now: Instant, port: u16, link_up: bool) -> Option<Decision> {
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
            value: format!(
                "port {port} link down for {} ms",
                now.duration_since(since).as_millis()
            ),
            command: Command::KernelNetworking,
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
