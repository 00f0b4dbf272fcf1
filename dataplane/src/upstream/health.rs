//! Health of a group's servers, shared by the data cores (passive outlier
//! detection, and each server's latency) and the control plane's active
//! checks (which eject and re-admit). Atomics only.
//!
//! Passive ejection follows Envoy's outlier detection: a streak of
//! transport failures (connect failures, resets, timeouts, garbage) ejects a
//! server; 5xx answers count only as a ratio over a minimum volume, and
//! never eject the group's last healthy server, since a client can make any
//! URL answer 500 and must not divert the whole gateway with two requests.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

#[derive(Debug, Default)]
struct Server {
    healthy: AtomicBool,
    /// Transport failures in a row.
    failures: AtomicU32,
    /// Answers in the current 5xx window, and the 5xx among them.
    answers: AtomicU32,
    errors: AtomicU32,
    /// Moving average of response latency, in microseconds (0: no data).
    latency_us: AtomicU64,
    /// Its last active check failed.
    check_failed: AtomicBool,
}

/// Health of every server of one upstream group.
#[derive(Debug)]
pub struct GroupHealth {
    servers: Box<[Server]>,
    eject_after: u32,
}

/// Answers a server must have given in a window before its 5xx ratio
/// counts.
pub const ERROR_MIN_VOLUME: u32 = 20;
/// Share of 5xx among a window's answers that ejects a server, in percent.
pub const ERROR_EJECT_PERCENT: u32 = 50;

impl GroupHealth {
    /// Failures in a row that eject a server.
    pub fn eject_after(&self) -> u32 {
        self.eject_after
    }

    /// `n` servers, all healthy; a server is ejected after `eject_after`
    /// consecutive transport failures.
    pub fn new(n: usize, eject_after: u32) -> Self {
        let servers = (0..n)
            .map(|_| Server {
                healthy: AtomicBool::new(true),
                ..Server::default()
            })
            .collect();
        Self {
            servers,
            eject_after: eject_after.max(1),
        }
    }

    /// Number of servers.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether the group has no servers.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Whether server `i` takes traffic.
    pub fn is_healthy(&self, i: usize) -> bool {
        self.servers
            .get(i)
            .is_some_and(|s| s.healthy.load(Ordering::Relaxed))
    }

    /// Whether any server takes traffic.
    pub fn any_healthy(&self) -> bool {
        (0..self.servers.len()).any(|i| self.is_healthy(i))
    }

    /// Notes the result of server `i`'s last active check (before `rise`
    /// and `fall` count it).
    pub fn checked(&self, i: usize, ok: bool) {
        if let Some(s) = self.servers.get(i) {
            s.check_failed.store(!ok, Ordering::Relaxed);
        }
    }

    /// Whether the last check of some server failed: the gateway's own
    /// corroboration of errors its clients see.
    pub fn any_check_failing(&self) -> bool {
        self.servers
            .iter()
            .any(|s| s.check_failed.load(Ordering::Relaxed))
    }

    /// Sets a server's state (active checks). Returns whether it changed.
    pub fn set(&self, i: usize, healthy: bool) -> bool {
        let Some(s) = self.servers.get(i) else {
            return false;
        };
        if healthy {
            s.failures.store(0, Ordering::Relaxed);
            s.answers.store(0, Ordering::Relaxed);
            s.errors.store(0, Ordering::Relaxed);
            s.latency_us.store(0, Ordering::Relaxed);
        }
        s.healthy.swap(healthy, Ordering::Relaxed) != healthy
    }

    /// A connect to server `i` failed, or the exchange with it did (reset,
    /// timeout, garbage); ejects it after enough in a row.
    pub fn connect_failed(&self, i: usize) {
        if let Some(s) = self.servers.get(i) {
            if s.failures.fetch_add(1, Ordering::Relaxed) + 1 >= self.eject_after {
                s.healthy.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Server `i` answered `status` after `latency_us`, or failed in
    /// transport (`transport_error`: a reset or timeout after connecting,
    /// or garbage). A transport failure extends the failure streak; 5xx
    /// answers eject only at [`ERROR_EJECT_PERCENT`] of a window of
    /// [`ERROR_MIN_VOLUME`] answers, and never the last healthy server.
    /// The latency feeds the moving average (weight 1/8, racy across cores
    /// by design).
    pub fn responded(&self, i: usize, status: u16, transport_error: bool, latency_us: u64) {
        let Some(s) = self.servers.get(i) else { return };
        if transport_error {
            self.connect_failed(i);
            return;
        }
        let errors = if status >= 500 {
            s.errors.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            s.errors.load(Ordering::Relaxed)
        };
        let answers = s.answers.fetch_add(1, Ordering::Relaxed) + 1;
        if answers >= ERROR_MIN_VOLUME {
            s.answers.store(0, Ordering::Relaxed);
            s.errors.store(0, Ordering::Relaxed);
            let others = (0..self.servers.len()).any(|j| j != i && self.is_healthy(j));
            if errors * 100 >= ERROR_EJECT_PERCENT * answers && others {
                s.healthy.store(false, Ordering::Relaxed);
            }
        }
        let old = s.latency_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            latency_us
        } else {
            (old * 7 + latency_us) / 8
        };
        s.latency_us.store(new.max(1), Ordering::Relaxed);
    }

    /// Server `i`'s moving-average latency in microseconds; 0 without data.
    pub fn latency_us(&self, i: usize) -> u64 {
        self.servers
            .get(i)
            .map_or(0, |s| s.latency_us.load(Ordering::Relaxed))
    }

    /// A connect to server `i` succeeded: the failure streak ends.
    pub fn connected(&self, i: usize) {
        if let Some(s) = self.servers.get(i) {
            if s.failures.load(Ordering::Relaxed) != 0 {
                s.failures.store(0, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejects_after_a_streak_and_readmits() {
        let h = GroupHealth::new(2, 2);
        h.connect_failed(0);
        assert!(h.is_healthy(0));
        h.connected(0);
        h.connect_failed(0);
        assert!(h.is_healthy(0), "the streak was broken");
        h.connect_failed(0);
        assert!(!h.is_healthy(0) && h.any_healthy());
        assert!(h.set(0, true));
        assert!(h.is_healthy(0) && !h.set(0, true));
    }

    #[test]
    fn five_xx_ejects_only_as_a_ratio_and_never_the_last_server() {
        let h = GroupHealth::new(2, 3);
        // Two 500s from a URL a client chose: nothing happens.
        h.responded(0, 500, false, 100);
        h.responded(0, 500, false, 100);
        assert!(h.is_healthy(0));
        // A full window at 50 % 5xx ejects while another server serves.
        for k in 0..ERROR_MIN_VOLUME - 2 {
            h.responded(0, if k % 2 == 0 { 200 } else { 503 }, false, 100);
        }
        assert!(!h.is_healthy(0), "11 of 20 were 5xx");
        // The last healthy server is never ejected on 5xx alone.
        for _ in 0..3 * ERROR_MIN_VOLUME {
            h.responded(1, 500, false, 100);
        }
        assert!(h.is_healthy(1));
        // Transport failures still eject it, by streak.
        for _ in 0..3 {
            h.responded(1, 504, true, 100);
        }
        assert!(!h.is_healthy(1));
    }

    #[test]
    fn latency_is_averaged_and_reset_on_readmission() {
        let h = GroupHealth::new(1, 3);
        h.responded(0, 200, false, 100);
        h.responded(0, 200, false, 900);
        assert_eq!(h.latency_us(0), 200, "(7 x 100 + 900) / 8");
        h.set(0, true);
        assert_eq!(h.latency_us(0), 0, "re-admitted with a fresh average");
    }
}
