//! How a pool picks a server: round robin, or the power of two choices
//! over a peak-EWMA of each server's latency weighted by its outstanding
//! requests (as Finagle's and Linkerd's balancers do), so a server that
//! became slower, or is busy, gets a small share at once instead of its
//! turn.

use std::time::{Duration, Instant};

/// A pool's balancing rule (`[upstream.NAME] balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Each server in turn.
    #[default]
    RoundRobin,
    /// Two servers at random, the one with the lower
    /// `latency × (outstanding + 1)`.
    P2cEwma,
}

/// How fast a latency estimate forgets: a slow server not picked for a
/// while is tried again.
const DECAY: Duration = Duration::from_secs(10);

/// One server's load as this core sees it.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    /// Peak-EWMA latency in microseconds (0: no sample yet).
    ewma_us: f64,
    /// When `ewma_us` was last updated.
    stamp: Option<Instant>,
    /// Requests this core has in flight to it.
    outstanding: u32,
}

impl Load {
    /// The estimate at `now`, decayed since the last sample.
    fn latency_us(&self, now: Instant) -> f64 {
        match self.stamp {
            Some(t) => {
                let age = now.saturating_duration_since(t).as_secs_f64();
                self.ewma_us * (-age / DECAY.as_secs_f64()).exp()
            }
            None => 0.0,
        }
    }

    fn cost(&self, now: Instant) -> f64 {
        self.latency_us(now) * f64::from(self.outstanding + 1)
    }
}

/// The per-server loads of one pool on one core, and its random source.
#[derive(Debug)]
pub(crate) struct Loads {
    loads: Vec<Load>,
    rng: u64,
}

impl Loads {
    /// Loads for `n` servers.
    pub(crate) fn new(n: usize) -> Self {
        Self {
            loads: vec![Load::default(); n],
            // Any odd seed: the picks need spread, not secrecy.
            rng: 0x9e37_79b9_7f4a_7c15 ^ n as u64,
        }
    }

    fn random(&mut self, n: usize) -> usize {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (r >> 32) as usize % n.max(1)
    }

    /// The power of two choices among the servers `usable` accepts: two
    /// distinct ones at random, the cheaper kept. None when fewer than two
    /// are usable (the caller's turn order decides then).
    pub(crate) fn pick(&mut self, now: Instant, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.loads.len();
        let count = (0..n).filter(|&i| usable(i)).count();
        if count < 2 {
            return None;
        }
        let nth = |k: usize| (0..n).filter(|&i| usable(i)).nth(k);
        let a = self.random(count);
        let b = (a + 1 + self.random(count - 1)) % count;
        let (a, b) = (nth(a)?, nth(b)?);
        let cost = |i: usize| self.loads.get(i).map_or(f64::MAX, |l| l.cost(now));
        Some(if cost(b) < cost(a) { b } else { a })
    }

    /// A request to server `i` started.
    pub(crate) fn begin(&mut self, i: usize) {
        if let Some(l) = self.loads.get_mut(i) {
            l.outstanding += 1;
        }
    }

    /// A request to server `i` ended (answered or not).
    pub(crate) fn end(&mut self, i: usize) {
        if let Some(l) = self.loads.get_mut(i) {
            l.outstanding = l.outstanding.saturating_sub(1);
        }
    }

    /// Server `i` answered after `latency`: a peak jumps the estimate up at
    /// once, a faster answer pulls it down with the time since the last.
    pub(crate) fn observe(&mut self, i: usize, latency: Duration, now: Instant) {
        let Some(l) = self.loads.get_mut(i) else {
            return;
        };
        let sample = latency.as_secs_f64() * 1e6;
        let current = l.latency_us(now);
        l.ewma_us = match l.stamp {
            None => sample,
            Some(t) if sample < current => {
                let age = now.saturating_duration_since(t).as_secs_f64();
                let w = (-age / DECAY.as_secs_f64()).exp();
                current * w + sample * (1.0 - w)
            }
            Some(_) => sample,
        };
        l.stamp = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `n` requests, each answered at once after the latency its
    /// server has; returns how many each server got.
    fn serve(loads: &mut Loads, latency_ms: &[u64], n: usize, start: Instant) -> Vec<usize> {
        let mut got = vec![0; latency_ms.len()];
        let mut now = start;
        for _ in 0..n {
            let i = loads.pick(now, |_| true).expect("two servers");
            loads.begin(i);
            got[i] += 1;
            now += Duration::from_millis(1);
            loads.observe(i, Duration::from_millis(latency_ms[i]), now);
            loads.end(i);
        }
        got
    }

    #[test]
    fn a_server_slower_by_20_ms_gets_a_small_share() {
        let mut loads = Loads::new(3);
        let got = serve(&mut loads, &[1, 1, 21], 3000, Instant::now());
        assert!(got[2] < 150, "the slow server got {got:?}");
        assert!(got[0] > 1000 && got[1] > 1000, "{got:?}");
    }

    #[test]
    fn an_idle_server_is_preferred_to_a_busy_one_as_fast() {
        let mut loads = Loads::new(2);
        let now = Instant::now();
        for i in 0..2 {
            loads.observe(i, Duration::from_millis(2), now);
        }
        for _ in 0..4 {
            loads.begin(0);
        }
        for _ in 0..20 {
            assert_eq!(loads.pick(now, |_| true), Some(1));
        }
    }

    #[test]
    fn a_server_not_yet_measured_is_tried_and_unusable_ones_never() {
        let mut loads = Loads::new(3);
        let now = Instant::now();
        loads.observe(0, Duration::from_millis(5), now);
        loads.observe(1, Duration::from_millis(5), now);
        let picks: Vec<_> = (0..50).filter_map(|_| loads.pick(now, |_| true)).collect();
        assert!(picks.contains(&2), "never measured: cost 0");
        for _ in 0..50 {
            assert_ne!(loads.pick(now, |i| i != 2), Some(2));
        }
        assert_eq!(loads.pick(now, |i| i == 0), None, "one usable: no choice");
    }

    #[test]
    fn a_slow_servers_estimate_decays_so_it_is_tried_again() {
        let mut loads = Loads::new(2);
        let t0 = Instant::now();
        loads.observe(0, Duration::from_millis(1), t0);
        loads.observe(1, Duration::from_millis(50), t0);
        let later = t0 + Duration::from_secs(60);
        loads.observe(0, Duration::from_millis(1), later);
        // A minute on, the slow server's estimate (never refreshed) is
        // below the fast one's fresh sample: it gets a request to measure.
        assert_eq!(loads.pick(later, |_| true), Some(1));
    }
}
