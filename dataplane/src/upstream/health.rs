//! Health of a group's servers, shared by the data cores (which eject a
//! server after consecutive connect failures or 5xx, and keep its latency) and the control plane's
//! active checks (which eject and re-admit). Atomics only.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

#[derive(Debug, Default)]
struct Server {
    healthy: AtomicBool,
    /// Connect failures in a row.
    failures: AtomicU32,
    /// 5xx responses in a row.
    errors: AtomicU32,
    /// Moving average of response latency, in microseconds (0: no data).
    latency_us: AtomicU64,
}

/// Health of every server of one upstream group.
#[derive(Debug)]
pub struct GroupHealth {
    servers: Box<[Server]>,
    eject_after: u32,
}

impl GroupHealth {
    /// `n` servers, all healthy; a server is ejected after `eject_after`
    /// consecutive connect failures.
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

    /// Sets a server's state (active checks). Returns whether it changed.
    pub fn set(&self, i: usize, healthy: bool) -> bool {
        let Some(s) = self.servers.get(i) else {
            return false;
        };
        if healthy {
            s.failures.store(0, Ordering::Relaxed);
            s.errors.store(0, Ordering::Relaxed);
            s.latency_us.store(0, Ordering::Relaxed);
        }
        s.healthy.swap(healthy, Ordering::Relaxed) != healthy
    }

    /// A connect to server `i` failed; ejects it after enough in a row.
    pub fn connect_failed(&self, i: usize) {
        if let Some(s) = self.servers.get(i) {
            if s.failures.fetch_add(1, Ordering::Relaxed) + 1 >= self.eject_after {
                s.healthy.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Server `i` answered `status` after `latency_us`: a streak of 5xx
    /// ejects it like connect failures do, and the latency feeds its
    /// moving average (weight 1/8, racy across cores by design).
    pub fn responded(&self, i: usize, status: u16, latency_us: u64) {
        let Some(s) = self.servers.get(i) else { return };
        if status >= 500 {
            if s.errors.fetch_add(1, Ordering::Relaxed) + 1 >= self.eject_after {
                s.healthy.store(false, Ordering::Relaxed);
            }
        } else if s.errors.load(Ordering::Relaxed) != 0 {
            s.errors.store(0, Ordering::Relaxed);
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
    fn a_streak_of_5xx_ejects_and_latency_is_averaged() {
        let h = GroupHealth::new(1, 3);
        h.responded(0, 502, 100);
        h.responded(0, 503, 100);
        h.responded(0, 200, 100);
        h.responded(0, 500, 100);
        h.responded(0, 500, 100);
        assert!(h.is_healthy(0), "a 200 broke the streak");
        h.responded(0, 500, 900);
        assert!(!h.is_healthy(0));
        assert_eq!(h.latency_us(0), 200, "(7 x 100 + 900) / 8");
        h.set(0, true);
        assert_eq!(h.latency_us(0), 0, "re-admitted with a fresh average");
    }
}
