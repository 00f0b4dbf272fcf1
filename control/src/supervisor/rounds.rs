//! One round of the loop: the merged window observed by each runbook row
//! (the primary route, each named pool, memory), and their decisions
//! carried out.

use super::*;

/// What pool `spec`'s own servers did in the window (its canaries, while
/// diverted), as its critical-failure row observes it: upstream-side P99,
/// error and slow shares, whether they are spread over enough clients and
/// URL paths, and what its checks say.
pub(super) fn pool_observation(
    now: Instant,
    merged: &CoreStats,
    spec: &PoolSpec,
    fallback: &PoolSpec,
    t: &Thresholds,
) -> Observation {
    let mut blame = ultragate_dataplane::stats::Blame::default();
    let (mut requests, mut errors, mut slow) = (0u64, 0u64, 0u64);
    for srv in merged.servers.iter().filter(|s| s.pool == spec.name) {
        requests += srv.requests;
        errors += srv.errors;
        slow += srv.slow;
        blame.merge(&srv.blame);
    }
    let share = |n: u64| {
        if requests == 0 {
            0.0
        } else {
            n as f64 / requests as f64
        }
    };
    // Errors over the threshold, and slow answers over 1 % (P99 over its
    // threshold), must each be shared by `min_spread` clients and paths.
    let error_limit = t.error_rate * requests as f64;
    let slow_limit = 0.01 * requests as f64;
    let by_both = |clients: &[u32], urls: &[u32], limit: f64| {
        policy::spread(clients, limit, t.min_spread) && policy::spread(urls, limit, t.min_spread)
    };
    Observation {
        now,
        requests,
        error_rate: share(errors),
        slow_share: share(slow),
        errors_spread: by_both(&blame.errors_by_client, &blame.errors_by_url, error_limit),
        slow_spread: by_both(&blame.slow_by_client, &blame.slow_by_url, slow_limit),
        probe_failing: spec.health.any_check_failing(),
        primary_healthy: spec.health.any_healthy(),
        primary_fast: spec.fast.load(Ordering::Relaxed),
        fallback_healthy: fallback.health.any_healthy(),
    }
}

impl Supervisor {
    pub(super) fn round(&self, now: Instant, merged: &CoreStats) {
        let pools = self.live.load();
        if let Some(fallback) = pools.primary().fallback.and_then(|f| pools.pool(f)) {
            self.primary_round(now, merged, &pools, fallback);
        }
        self.named_pool_rounds(now, merged);
        self.eject_slow_servers();
        let rss = memory::rss_bytes().unwrap_or(0);
        let limit = memory::limit_bytes(self.memory_limit.load(Ordering::Relaxed));
        if let Some(limit) = limit {
            self.memory_round(rss, limit);
        }
        let view = View {
            p50: merged.latency(0.5),
            p99: merged.latency(0.99),
            p999: merged.latency(0.999),
            error_rate: merged.error_rate(),
            rps: merged.requests as f64 / EVAL_WINDOW.as_secs_f64(),
            rss,
            limit,
        };
        *lock(&self.view) = view;
        self.metrics.refresh(&self.snapshot(view));
    }

    /// The critical-failure row of the default pool, on the whole data
    /// plane's numbers; only when the primary has a fallback to divert
    /// to.
    pub(super) fn primary_round(
        &self,
        now: Instant,
        merged: &CoreStats,
        pools: &Settings,
        fallback: &PoolSpec,
    ) {
        let (decision, flap) = {
            let mut route = lock(&self.route);
            let t = route.thresholds();
            let observation = pool_observation(now, merged, pools.primary(), fallback, &t);
            (route.observe(&observation), route.take_flap())
        };
        if let Some(flap) = flap {
            self.flapped(pools, 0, flap);
        }
        let Some(mut d) = decision else {
            return;
        };
        if !pools.engine.routes.is_implicit() {
            // Configured routes: say which of them moved.
            d.value = format!(
                "pool primary (routes {}): {}",
                route_names(pools, 0),
                d.value
            );
        }
        self.execute(&d);
    }

    /// The critical-failure row of every named pool with a fallback, on
    /// its own servers' numbers; a decision's value names the pool and the
    /// routes that use it.
    pub(super) fn named_pool_rounds(&self, now: Instant, merged: &CoreStats) {
        let pools = self.live.load();
        let default = lock(&self.route).thresholds();
        let own = lock(&self.pool_thresholds).clone();
        let mut decisions = Vec::new();
        let mut flaps = Vec::new();
        {
            let mut routes = lock(&self.pool_routes);
            routes.retain(|name, _| pools.index_of(name).is_some_and(|i| i >= 2));
            for (i, spec) in pools.pools().iter().enumerate().skip(2) {
                let Some(fallback) = spec.fallback.and_then(|f| pools.pool(f)) else {
                    continue;
                };
                let t = own.get(&*spec.name).copied().unwrap_or(default);
                let observation = pool_observation(now, merged, spec, fallback, &t);
                let policy = routes
                    .entry(spec.name.clone())
                    .or_insert_with(|| RoutePolicy::for_pool(t, i));
                policy.set_pool(i);
                policy.set_thresholds(t);
                let decision = policy.observe(&observation);
                if let Some(flap) = policy.take_flap() {
                    flaps.push((i, flap));
                }
                if let Some(mut d) = decision {
                    d.value = format!(
                        "pool {} (routes {}): {}",
                        spec.name,
                        route_names(&pools, i),
                        d.value
                    );
                    decisions.push(d);
                }
            }
        }
        for (i, flap) in flaps {
            self.flapped(&pools, i, flap);
        }
        for d in decisions {
            self.execute(&d);
        }
    }

    /// A pool diverted soon after it failed back: counted, told.
    pub(super) fn flapped(&self, pools: &Settings, pool: usize, mut flap: policy::Decision) {
        let name = pools.pool(pool).map_or("primary", |p| &*p.name);
        self.metrics.flap(name);
        flap.value = format!("pool {name}: {}", flap.value);
        self.execute(&flap);
    }

    /// Ejects servers far slower than their pool's others (every pool,
    /// whatever its balancing); the active checks re-admit them with a
    /// fresh average.
    pub(super) fn eject_slow_servers(&self) {
        let pools = self.live.load();
        let floor = lock(&self.route).thresholds().p99.as_micros() as u64;
        for (pool, g) in pools.pools().iter().enumerate() {
            let averages: Vec<(usize, u64)> = (0..g.servers.len())
                .filter(|&i| g.health.is_healthy(i))
                .map(|i| (i, g.health.latency_us(i)))
                .filter(|&(_, l)| l > 0)
                .collect();
            for mut d in policy::outliers(pool, &averages, floor) {
                if pool > 0 {
                    d.value = format!("pool {}: {}", g.name, d.value);
                }
                self.execute(&d);
            }
        }
    }

    /// The memory row of the runbook: the policy sees the used share of
    /// the limit, this applies what it asks for.
    pub(super) fn memory_round(&self, rss: u64, limit: u64) {
        if self.cache.is_none() {
            return;
        }
        let ratio = rss as f64 / limit as f64;
        let decision = lock(&self.memory).observe(ratio);
        if let Some(d) = decision {
            self.execute(&d);
        }
    }
}
