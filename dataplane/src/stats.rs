//! Per-core request statistics: each data core records into its own
//! [`CoreStats`] (no sharing, no lock) and hands a filled one to the
//! control plane every interval, which merges them into a sliding window.

use hdrhistogram::Histogram;
use std::time::Duration;

/// How the cache took part in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// Served from the cache.
    Hit,
    /// Looked up, not found (or revalidated), fetched.
    Miss,
    /// Served stale (`stale-while-revalidate`, `stale-if-error`).
    Stale,
    /// The cache was not consulted.
    Bypass,
    /// No cache configured, or not a proxied request.
    None,
}

impl CacheResult {
    /// All results, in the order of [`CoreStats::cache`].
    pub const ALL: [CacheResult; 5] =
        [Self::Hit, Self::Miss, Self::Stale, Self::Bypass, Self::None];

    /// The label used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Stale => "stale",
            Self::Bypass => "bypass",
            Self::None => "none",
        }
    }
}

/// One answered request, as the engine reports it.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    /// First request byte in to response complete.
    pub latency: Duration,
    /// The status code sent.
    pub status: u16,
    /// The cache's part.
    pub cache: CacheResult,
    /// The upstream failed (connect, timeout, garbage, reset).
    pub upstream_error: bool,
    /// It failed after the connection was made (a reset, a response
    /// timeout, garbage): what passive health counts against the server
    /// that answered, as connect failures are counted when they happen.
    pub transport_error: bool,
    /// The answer came from (or failed at) the upstream, not the cache or
    /// the gateway itself.
    pub proxied: bool,
}

/// Counters and a latency histogram for one core and one interval.
#[derive(Debug, Clone)]
pub struct CoreStats {
    /// Latency in microseconds, 1 µs to 60 s, 3 significant digits.
    pub latency_us: Histogram<u64>,
    /// Responses.
    pub requests: u64,
    /// Responses by status class: index 0 for 1xx … 4 for 5xx.
    pub status_classes: [u64; 5],
    /// Responses by [`CacheResult`], in [`CacheResult::ALL`] order.
    pub cache: [u64; 5],
    /// Upstream failures.
    pub upstream_errors: u64,
}

impl Default for CoreStats {
    fn default() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("valid histogram bounds"),
            requests: 0,
            status_classes: [0; 5],
            cache: [0; 5],
            upstream_errors: 0,
        }
    }
}

impl CoreStats {
    /// Records one response.
    pub fn record(&mut self, c: &Completion) {
        self.latency_us
            .saturating_record((c.latency.as_micros() as u64).max(1));
        self.requests += 1;
        if (100..600).contains(&c.status) {
            self.status_classes[usize::from(c.status / 100 - 1)] += 1;
        }
        let i = CacheResult::ALL
            .iter()
            .position(|r| *r == c.cache)
            .unwrap_or(4);
        self.cache[i] += 1;
        self.upstream_errors += u64::from(c.upstream_error);
    }

    /// Adds another core's (or interval's) numbers to these.
    pub fn merge(&mut self, other: &CoreStats) {
        let _ = self.latency_us.add(&other.latency_us);
        self.requests += other.requests;
        for (a, b) in self.status_classes.iter_mut().zip(other.status_classes) {
            *a += b;
        }
        for (a, b) in self.cache.iter_mut().zip(other.cache) {
            *a += b;
        }
        self.upstream_errors += other.upstream_errors;
    }

    /// Hands the numbers so far over and starts afresh (the swap).
    pub fn take(&mut self) -> CoreStats {
        let fresh = CoreStats {
            latency_us: Histogram::new_from(&self.latency_us),
            ..CoreStats::default()
        };
        std::mem::replace(self, fresh)
    }

    /// Share of responses that are 5xx or upstream failures, 0.0 to 1.0.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        (self.status_classes[4].max(self.upstream_errors)) as f64 / self.requests as f64
    }

    /// Latency at quantile `q` (0.0 to 1.0).
    pub fn latency(&self, q: f64) -> Duration {
        Duration::from_micros(self.latency_us.value_at_quantile(q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(ms: u64, status: u16) -> Completion {
        Completion {
            latency: Duration::from_millis(ms),
            status,
            cache: CacheResult::Miss,
            upstream_error: false,
            transport_error: false,
            proxied: true,
        }
    }

    #[test]
    fn records_merges_and_swaps() {
        let mut a = CoreStats::default();
        let mut b = CoreStats::default();
        for _ in 0..98 {
            a.record(&done(1, 200));
        }
        b.record(&done(50, 502));
        b.record(&done(60, 503));
        a.merge(&b.take());
        assert_eq!(b.requests, 0, "taken");
        assert_eq!(a.requests, 100);
        assert_eq!(a.status_classes, [0, 98, 0, 0, 2]);
        assert!((a.error_rate() - 0.02).abs() < 1e-9);
        assert_eq!(a.latency(0.5), Duration::from_millis(1));
        assert!(a.latency(0.995) >= Duration::from_millis(49));
    }
}
