//! Per-core request statistics: each data core records into its own
//! [`CoreStats`] (no sharing, no lock) and hands a filled one to the
//! control plane every interval, which merges them into a sliding window.

use crate::cache::verdict::CacheResult;
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds of the exported latency histograms' buckets, in
/// microseconds: 50 µs to 10 s (`+Inf` is the count).
pub const DURATION_BUCKETS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A Prometheus-style histogram's counts: one per bucket (not
/// cumulative), what is above the last bound, and the sum. Recording is a
/// short search and two additions: no allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Buckets {
    /// Observations up to each bound of [`DURATION_BUCKETS_US`] (and above
    /// the previous one).
    pub counts: [u64; DURATION_BUCKETS_US.len()],
    /// Observations above the last bound.
    pub over: u64,
    /// Sum of the observations, in microseconds.
    pub sum_us: u64,
}

impl Buckets {
    /// Counts one observation.
    pub fn record(&mut self, us: u64) {
        match DURATION_BUCKETS_US.iter().position(|&b| us <= b) {
            Some(i) => self.counts[i] += 1,
            None => self.over += 1,
        }
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Buckets) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.over += other.over;
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.over
    }

    /// The upper bound of the bucket holding the `q` quantile (0.0–1.0):
    /// coarse, and never below the true value; zero without
    /// observations, the last bound for those above it.
    pub fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (n, bound) in self.counts.iter().zip(DURATION_BUCKETS_US) {
            seen += n;
            if seen >= rank {
                return Duration::from_micros(bound);
            }
        }
        Duration::from_micros(DURATION_BUCKETS_US[DURATION_BUCKETS_US.len() - 1])
    }
}

/// One route's part of a core's interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteStats {
    /// Responses.
    pub requests: u64,
    /// Those that were 5xx or upstream failures.
    pub errors: u64,
    /// Their latency, by [`CacheResult`] in [`CacheResult::ALL`] order.
    pub duration: [Buckets; 5],
}

/// Slots a client address or a URL path is hashed into when a server's
/// failures and slow answers are attributed (see [`Blame`]).
pub const BLAME_SLOTS: usize = 64;

/// Who a server's failures and slow answers came to: counts by client
/// address and by URL path, each hashed into [`BLAME_SLOTS`] slots. The
/// runbook caps what one slot may contribute, so one client or one URL
/// cannot make a pool look failing (a collision only merges two keys,
/// which makes a divert harder, never easier).
#[derive(Debug, Clone, PartialEq)]
pub struct Blame {
    /// Errors by client slot.
    pub errors_by_client: [u32; BLAME_SLOTS],
    /// Errors by URL slot.
    pub errors_by_url: [u32; BLAME_SLOTS],
    /// Answers slower than the pool's P99 threshold, by client slot.
    pub slow_by_client: [u32; BLAME_SLOTS],
    /// The same, by URL slot.
    pub slow_by_url: [u32; BLAME_SLOTS],
}

impl Default for Blame {
    fn default() -> Self {
        Self {
            errors_by_client: [0; BLAME_SLOTS],
            errors_by_url: [0; BLAME_SLOTS],
            slow_by_client: [0; BLAME_SLOTS],
            slow_by_url: [0; BLAME_SLOTS],
        }
    }
}

impl Blame {
    /// Adds another interval's (or core's) counts.
    pub fn merge(&mut self, other: &Blame) {
        let pairs = [
            (&mut self.errors_by_client, &other.errors_by_client),
            (&mut self.errors_by_url, &other.errors_by_url),
            (&mut self.slow_by_client, &other.slow_by_client),
            (&mut self.slow_by_url, &other.slow_by_url),
        ];
        for (a, b) in pairs {
            for (x, y) in a.iter_mut().zip(b) {
                *x = x.saturating_add(*y);
            }
        }
    }
}

/// The slot of a key (a client address's or a URL path's bytes) in
/// [`Blame`]: FNV-1a, stable across cores and runs.
pub fn blame_slot(key: &[u8]) -> u8 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in key {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    // BLAME_SLOTS is a power of two below 256.
    (h ^ (h >> 16)) as u8 & (BLAME_SLOTS as u8 - 1)
}

/// One upstream server's part of a core's interval.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerStats {
    /// Its pool's name.
    pub pool: Arc<str>,
    /// The server.
    pub addr: SocketAddr,
    /// Answers it gave (or failed to give).
    pub requests: u64,
    /// Those that were 5xx or transport failures.
    pub errors: u64,
    /// Those slower than the pool's P99 threshold.
    pub slow: u64,
    /// Answers that were a canary: a request sent to the pool while it was
    /// diverted, to judge whether it may take traffic again.
    pub canaries: u64,
    /// Their latency on the upstream's side: from the request's last byte
    /// sent to the response head received (a failure: to the failure).
    pub duration: Buckets,
    /// Where the errors and slow answers came from.
    pub blame: Box<Blame>,
}

/// One answered request, as the engine reports it.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The gateway's service time: request head complete to response
    /// complete (the time a client takes to send its head is not in it).
    pub latency: Duration,
    /// The upstream's part, for a proxied answer: the request's last byte
    /// sent upstream to the response head received, or to the failure;
    /// none when no request reached a server (a connect failure). What
    /// the runbook judges a pool by: a client cannot stretch it.
    pub upstream_latency: Option<Duration>,
    /// The client address's slot in [`Blame`].
    pub client_slot: u8,
    /// The URL path's slot in [`Blame`].
    pub url_slot: u8,
    /// The request went to its pool while the pool was diverted (a
    /// canary, see [`ServerStats::canaries`]).
    pub canary: bool,
    /// Not an answer to the client: a canary's failed try, retried on the
    /// fallback; it counts for the server it failed at only.
    pub attempt_only: bool,
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
    /// A kubelet or load-balancer probe (`/health/live`, `/health/ready`)
    /// answered on the data port: counted apart from traffic.
    pub probe: bool,
    /// The route that took the request (an index into the engine's
    /// routes); none for admin calls, probes and requests no route took.
    pub route: Option<u16>,
    /// Bytes received from the client since the previous completion.
    pub bytes_in: u64,
    /// Bytes queued to the client since the previous completion.
    pub bytes_out: u64,
    /// The access-log record, while the access log wants this request.
    pub access: Option<Box<crate::access::AccessRecord>>,
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
    /// Latency of the responses no route took (admin calls, no route),
    /// by [`CacheResult`] in [`CacheResult::ALL`] order, for the exported
    /// histogram.
    pub duration: [Buckets; 5],
    /// The routed responses, by route index.
    pub routes: Vec<RouteStats>,
    /// Probes answered on the data port (not in `requests`).
    pub probes: u64,
    /// Connections refused: over the core's limit, over the per-client
    /// limit.
    pub refused: [u64; 2],
    /// Bytes received from clients.
    pub bytes_in: u64,
    /// Bytes queued to clients.
    pub bytes_out: u64,
    /// Upstream servers that answered in this interval.
    pub servers: Vec<ServerStats>,
    /// The data core these numbers come from (its index).
    pub core: usize,
    /// Client connections the core had open when it handed these over.
    pub open_connections: u64,
    /// TLS handshakes and failures.
    pub tls: crate::tls::TlsCounts,
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
            duration: [Buckets::default(); 5],
            routes: Vec::new(),
            probes: 0,
            refused: [0; 2],
            bytes_in: 0,
            bytes_out: 0,
            servers: Vec::new(),
            core: 0,
            open_connections: 0,
            tls: crate::tls::TlsCounts::default(),
        }
    }
}

impl CoreStats {
    /// Empty numbers of data core `core` (its CPU id, or thread index
    /// when unpinned).
    pub fn for_core(core: usize) -> CoreStats {
        CoreStats {
            core,
            ..CoreStats::default()
        }
    }

    /// Records one response.
    pub fn record(&mut self, c: &Completion) {
        self.bytes_in += c.bytes_in;
        self.bytes_out += c.bytes_out;
        if c.probe {
            self.probes += 1;
            return;
        }
        let us = (c.latency.as_micros() as u64).max(1);
        self.latency_us.saturating_record(us);
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
        let Some(route) = c.route.map(usize::from) else {
            self.duration[i].record(us);
            return;
        };
        if self.routes.len() <= route {
            self.routes.resize(route + 1, RouteStats::default());
        }
        if let Some(r) = self.routes.get_mut(route) {
            r.requests += 1;
            r.errors += u64::from(c.upstream_error || c.status >= 500);
            r.duration[i].record(us);
        }
    }

    /// Credits a proxied answer to the upstream server `addr` of `pool`,
    /// whose answers count as slow above `slow`.
    pub fn record_server(
        &mut self,
        pool: &Arc<str>,
        addr: SocketAddr,
        slow: Duration,
        c: &Completion,
    ) {
        let i = match self
            .servers
            .iter()
            .position(|s| s.addr == addr && s.pool == *pool)
        {
            Some(i) => i,
            None => {
                self.servers.push(ServerStats {
                    pool: pool.clone(),
                    addr,
                    requests: 0,
                    errors: 0,
                    slow: 0,
                    canaries: 0,
                    duration: Buckets::default(),
                    blame: Box::default(),
                });
                self.servers.len() - 1
            }
        };
        let s = &mut self.servers[i];
        s.requests += 1;
        s.canaries += u64::from(c.canary);
        let (client, url) = (usize::from(c.client_slot), usize::from(c.url_slot));
        if c.upstream_error || c.status >= 500 {
            s.errors += 1;
            add_at(&mut s.blame.errors_by_client, client);
            add_at(&mut s.blame.errors_by_url, url);
        }
        if let Some(took) = c.upstream_latency {
            s.duration.record((took.as_micros() as u64).max(1));
            if took > slow {
                s.slow += 1;
                add_at(&mut s.blame.slow_by_client, client);
                add_at(&mut s.blame.slow_by_url, url);
            }
        }
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
        for (a, b) in self.duration.iter_mut().zip(&other.duration) {
            a.merge(b);
        }
        if self.routes.len() < other.routes.len() {
            self.routes
                .resize(other.routes.len(), RouteStats::default());
        }
        for (a, b) in self.routes.iter_mut().zip(&other.routes) {
            a.requests += b.requests;
            a.errors += b.errors;
            for (x, y) in a.duration.iter_mut().zip(&b.duration) {
                x.merge(y);
            }
        }
        self.probes += other.probes;
        self.refused[0] += other.refused[0];
        self.refused[1] += other.refused[1];
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.open_connections += other.open_connections;
        self.tls.merge(&other.tls);
        for s in &other.servers {
            match self
                .servers
                .iter_mut()
                .find(|m| m.addr == s.addr && m.pool == s.pool)
            {
                Some(m) => {
                    m.requests += s.requests;
                    m.errors += s.errors;
                    m.slow += s.slow;
                    m.canaries += s.canaries;
                    m.duration.merge(&s.duration);
                    m.blame.merge(&s.blame);
                }
                None => self.servers.push(s.clone()),
            }
        }
    }

    /// Hands the numbers so far over and starts afresh (the swap).
    pub fn take(&mut self) -> CoreStats {
        // The routes seen stay allocated: no request pays for it.
        let fresh = CoreStats {
            latency_us: Histogram::new_from(&self.latency_us),
            core: self.core,
            routes: vec![RouteStats::default(); self.routes.len()],
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

/// One more in slot `i` (a slot index is below [`BLAME_SLOTS`]).
fn add_at(slots: &mut [u32; BLAME_SLOTS], i: usize) {
    if let Some(n) = slots.get_mut(i) {
        *n = n.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(ms: u64, status: u16) -> Completion {
        Completion {
            latency: Duration::from_millis(ms),
            upstream_latency: Some(Duration::from_millis(ms)),
            client_slot: 0,
            url_slot: 0,
            canary: false,
            attempt_only: false,
            status,
            cache: CacheResult::Miss,
            upstream_error: false,
            transport_error: false,
            proxied: true,
            probe: false,
            route: None,
            bytes_in: 0,
            bytes_out: 0,
            access: None,
        }
    }

    #[test]
    fn a_bucket_quantile_is_the_bound_that_holds_it() {
        let mut b = Buckets::default();
        assert_eq!(b.quantile(0.99), Duration::ZERO);
        for _ in 0..98 {
            b.record(80);
        }
        b.record(20_000);
        b.record(20_000_000);
        assert_eq!(b.quantile(0.5), Duration::from_micros(100));
        assert_eq!(b.quantile(0.99), Duration::from_micros(25_000));
        assert_eq!(
            b.quantile(1.0),
            Duration::from_secs(10),
            "above: the last bound"
        );
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
