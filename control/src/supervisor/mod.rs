//! The control loop: every interval it merges the data cores' statistics
//! into a sliding window, feeds the runbook's policies, carries out their
//! decisions (route, cache shrink/clear, bypass and restore after a failed
//! verify), and refreshes `/metrics` and `/health`.

mod health;
mod rounds;

use crate::executor::KernelSwitch;
use crate::memory;
use crate::metrics::Metrics;
use crate::policy::{
    self, CorruptionPolicy, MemoryPolicy, Mode, Observation, RoutePolicy, SecurityPolicy,
    Thresholds,
};
use crate::snapshot::{CacheNumbers, Snapshot, View};
use crate::timeline::Timeline;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ultragate_dataplane::access::AccessLog;
use ultragate_dataplane::cache::Cache;
use ultragate_dataplane::live::{Live, PoolSpec, Settings};
use ultragate_dataplane::stats::CoreStats;
use ultragate_dataplane::status::{Backend, DataplaneStatus, Route};

/// Statistics older than this leave the window P99 and the error rate are
/// judged on.
const EVAL_WINDOW: Duration = Duration::from_secs(1);

/// Settings of the control loop.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Time between rounds.
    pub interval: Duration,
    /// The critical-failure thresholds.
    pub thresholds: Thresholds,
    /// Those of the named pools that have their own, by pool name.
    pub pool_thresholds: BTreeMap<String, Thresholds>,
    /// Memory limit in bytes; 0 reads the cgroup's.
    pub memory_limit_bytes: u64,
    /// Time between background cache verifies.
    pub verify_interval: Duration,
    /// Where the last good snapshot is restored from.
    pub snapshot_dir: PathBuf,
    /// The data cores, for `/health`.
    pub cores: Vec<usize>,
    /// Where their choice came from (configured, or affinity and quota).
    pub cores_from: String,
    /// How long a data core may go without handing over its numbers
    /// before it counts as stalled.
    pub core_stall: Duration,
}

/// What one pass of the data-corruption runbook found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Entries checked.
    pub checked: u64,
    /// Entries whose checksum failed (evicted).
    pub corrupt: u64,
    /// Entries restored from the last good snapshot, when one was loaded.
    pub restored: Option<u64>,
    /// Whether the cache is still bypassed (a verify after the restore
    /// was not clean).
    pub bypassed: bool,
}

/// The control plane's state and loop.
pub struct Supervisor {
    /// Readiness and route, shared with the data cores.
    pub status: Arc<DataplaneStatus>,
    /// The shared cache.
    pub cache: Option<Arc<Cache>>,
    /// The upstream pools (and engine settings) a reload replaces.
    pub live: Arc<Live>,
    /// Decisions.
    pub timeline: Arc<Timeline>,
    /// Prometheus registry and series.
    pub metrics: Metrics,
    /// The access log, for its counters.
    access: std::sync::OnceLock<Arc<AccessLog>>,
    route: Mutex<RoutePolicy>,
    /// The critical-failure rows of the named pools with a fallback, by
    /// pool name.
    pool_routes: Mutex<BTreeMap<Arc<str>, RoutePolicy>>,
    /// The named pools' thresholds (`[control]`'s unless their own).
    pool_thresholds: Mutex<BTreeMap<String, Thresholds>>,
    memory: Mutex<MemoryPolicy>,
    pub(crate) corruption: Mutex<CorruptionPolicy>,
    security: Mutex<SecurityPolicy>,
    /// Security isolation: mutating admin calls from loopback only.
    pub(crate) isolated: AtomicBool,
    /// The DPDK port's move to kernel networking, when a port serves.
    pub(crate) kernel_switch: std::sync::OnceLock<KernelSwitch>,
    /// The TLS listener's certificates, when `[tls]` is on.
    tls: std::sync::OnceLock<Arc<crate::tls::TlsControl>>,
    view: Mutex<View>,
    memory_limit: AtomicU64,
    /// The configured cache budget while memory relief has lowered it.
    pub(crate) cache_budget: AtomicU64,
    /// When each data core (in `cfg.cores` order) last handed over its
    /// numbers: its heartbeat.
    beats: Mutex<Vec<Instant>>,
    pub(crate) cfg: SupervisorConfig,
}

impl Supervisor {
    /// A supervisor over the shared state.
    pub fn new(
        cfg: SupervisorConfig,
        status: Arc<DataplaneStatus>,
        cache: Option<Arc<Cache>>,
        live: Arc<Live>,
        timeline: Arc<Timeline>,
    ) -> Self {
        Self {
            status,
            cache,
            live,
            timeline,
            metrics: Metrics::new(),
            access: std::sync::OnceLock::new(),
            route: Mutex::new(RoutePolicy::new(cfg.thresholds)),
            pool_routes: Mutex::new(BTreeMap::new()),
            pool_thresholds: Mutex::new(cfg.pool_thresholds.clone()),
            memory: Mutex::new(MemoryPolicy::default()),
            corruption: Mutex::new(CorruptionPolicy::default()),
            security: Mutex::new(SecurityPolicy::default()),
            isolated: AtomicBool::new(false),
            kernel_switch: std::sync::OnceLock::new(),
            tls: std::sync::OnceLock::new(),
            view: Mutex::new(View::default()),
            memory_limit: AtomicU64::new(cfg.memory_limit_bytes),
            cache_budget: AtomicU64::new(0),
            beats: Mutex::new(vec![Instant::now(); cfg.cores.len()]),
            cfg,
        }
    }

    /// Runs the TLS listener's certificates from now on: `/health`,
    /// `POST /admin/tls/reload`, the expiry metric.
    pub fn set_tls(&self, tls: Arc<crate::tls::TlsControl>) {
        tls.export(self);
        let _ = self.tls.set(tls);
    }

    /// The TLS listener's certificates, when `[tls]` is on.
    pub fn tls(&self) -> Option<&Arc<crate::tls::TlsControl>> {
        self.tls.get()
    }

    /// Exports the access log's counters from now on.
    pub fn watch_access_log(&self, log: Arc<AccessLog>) {
        let _ = self.access.set(log);
    }

    /// The access log, once watched.
    pub(crate) fn access_log(&self) -> Option<&Arc<AccessLog>> {
        self.access.get()
    }

    /// Applies reloadable settings: thresholds and the memory limit.
    pub fn reload(&self, thresholds: Thresholds, memory_limit_bytes: u64) {
        lock(&self.route).set_thresholds(thresholds);
        let old = self
            .memory_limit
            .swap(memory_limit_bytes, Ordering::Relaxed);
        if old != memory_limit_bytes {
            self.memory_limit_changed();
        }
    }

    /// A reload changed the memory limit: a relieved cache may get its
    /// inserts back at once rather than when RSS falls.
    fn memory_limit_changed(&self) {
        if self.cache.is_none() {
            return;
        }
        let limit = memory::limit_bytes(self.memory_limit.load(Ordering::Relaxed));
        let rss = memory::rss_bytes().unwrap_or(0);
        let ratio = limit.map(|l| rss as f64 / l as f64);
        let decision = lock(&self.memory).limit_changed(ratio);
        if let Some(d) = decision {
            self.execute(&d);
        }
    }

    /// Replaces the named pools' thresholds (config reload); the next
    /// round applies them.
    pub fn set_pool_thresholds(&self, t: BTreeMap<String, Thresholds>) {
        *lock(&self.pool_thresholds) = t;
    }

    /// An operator's route for the default pool: `primary`, `fallback`
    /// or `auto`; `None` when the primary has no fallback
    /// (`fallback = ""`).
    pub fn set_route_mode(&self, mode: Mode) -> Option<Route> {
        let pools = self.live.load();
        pools.pool(pools.primary().fallback?)?;
        let route = {
            let mut p = lock(&self.route);
            p.set_mode(mode);
            p.route()
        };
        self.apply_route(0, route);
        Some(route)
    }

    /// An operator's route for the named pool `pool`; `None` when no
    /// named pool of that name has a fallback.
    pub fn set_pool_route_mode(&self, pool: &str, mode: Mode) -> Option<Route> {
        let pools = self.live.load();
        let i = pools.index_of(pool)?;
        if i < 2 || pools.pool(i)?.fallback.is_none() {
            return None;
        }
        let route = {
            let mut routes = lock(&self.pool_routes);
            let p = routes
                .entry(pools.pool(i)?.name.clone())
                .or_insert_with(|| RoutePolicy::for_pool(lock(&self.route).thresholds(), i));
            p.set_pool(i);
            p.set_mode(mode);
            p.route()
        };
        self.apply_route(i, route);
        Some(route)
    }

    /// Sends pool `pool`'s requests to it or to its fallback: the data
    /// cores read the pool's flag; the default pool's route is also the
    /// one `/health` and the metrics show.
    pub(crate) fn apply_route(&self, pool: usize, to: Route) -> String {
        let pools = self.live.load();
        let Some(spec) = pools.pool(pool) else {
            return "the pool left the config".into();
        };
        spec.diverted
            .store(to == Route::Fallback, Ordering::Relaxed);
        if pool == 0 {
            self.status.set_route(to);
            return format!("route {}", to.as_str());
        }
        format!("pool {}: route {}", spec.name, to.as_str())
    }

    /// The security row: an operator's isolate (`true`) or normal call.
    pub fn isolate(&self, on: bool) {
        let decision = lock(&self.security).observe(on);
        if let Some(d) = decision {
            self.execute(&d);
        }
    }

    /// Whether security isolation is on.
    pub fn isolated(&self) -> bool {
        self.isolated.load(Ordering::Relaxed)
    }

    /// Registers the move from the DPDK port to kernel networking that
    /// the port row's decision runs (once, by the owner of the port).
    pub fn set_kernel_switch(&self, switch: KernelSwitch) {
        let _ = self.kernel_switch.set(switch);
    }

    /// The route and who decides it.
    pub fn route(&self) -> (Route, Mode) {
        let p = lock(&self.route);
        (p.route(), p.mode())
    }

    /// Runs the loop until the task is dropped.
    pub async fn run(self: Arc<Self>, stats: Receiver<CoreStats>) {
        let mut window: VecDeque<(Instant, CoreStats)> = VecDeque::new();
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_verify = Instant::now() + self.cfg.verify_interval;
        loop {
            tick.tick().await;
            let now = Instant::now();
            let routes = route_labels(&self.live.load());
            while let Ok(s) = stats.try_recv() {
                self.beat(s.core, now);
                self.metrics.count(&s, &routes);
                window.push_back((now, s));
            }
            while window
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > EVAL_WINDOW)
            {
                window.pop_front();
            }
            let mut merged = CoreStats::default();
            for (_, s) in &window {
                merged.merge(s);
            }
            self.round(now, &merged);
            if now >= next_verify {
                next_verify = now + self.cfg.verify_interval;
                if let Some(cache) = self.cache.clone() {
                    let me = self.clone();
                    let _ =
                        tokio::task::spawn_blocking(move || me.verify_and_recover(&cache)).await;
                }
            }
        }
    }

    /// Each named pool with a fallback: its route now and who decides.
    pub fn pool_routes(&self) -> Vec<(Arc<str>, Route, Mode)> {
        lock(&self.pool_routes)
            .iter()
            .map(|(name, p)| (name.clone(), p.route(), p.mode()))
            .collect()
    }

    /// Every pool with a fallback: name, diverted, forced by an operator.
    fn route_modes(&self) -> Vec<(String, bool, bool)> {
        let pools = self.live.load();
        let forced = |m: Mode| matches!(m, Mode::Forced(_));
        let mut out = Vec::new();
        if pools.primary().fallback.is_some() {
            let mode = lock(&self.route).mode();
            let diverted = pools.primary().diverted.load(Ordering::Relaxed);
            out.push(("primary".to_owned(), diverted, forced(mode)));
        }
        let routes = lock(&self.pool_routes);
        for spec in pools
            .pools()
            .iter()
            .skip(2)
            .filter(|p| p.fallback.is_some())
        {
            let mode = routes.get(&spec.name).map_or(Mode::Auto, |p| p.mode());
            let diverted = spec.diverted.load(Ordering::Relaxed);
            out.push((spec.name.to_string(), diverted, forced(mode)));
        }
        out
    }

    /// What the gauges show after this round.
    fn snapshot(&self, view: View) -> Snapshot {
        Snapshot {
            view,
            access: self.access_log().map(|l| (l.dropped(), l.written())),
            panics: self.status.panics(),
            route: self.status.route(),
            port: self.status.port(),
            backend: self.status.backend(),
            dpdk_wanted: self.status.dpdk_wanted(),
            cores: self.core_beats(),
            routes: self.route_modes(),
            traffic: {
                let pools = self.live.load();
                traffic_pools(&pools)
                    .into_iter()
                    .map(|(i, name)| (name.to_string(), stranded(&pools, i).is_some()))
                    .collect()
            },
            pools: self.live.load(),
            cache: self.cache.as_ref().map(|c| CacheNumbers {
                bytes: c.bytes(),
                entries: c.len(),
                bypassed: c.bypassed(),
                inserts: c.inserts_enabled(),
            }),
        }
    }

    /// Data core `core` (its CPU) handed over its numbers at `now`.
    fn beat(&self, core: usize, now: Instant) {
        let Some(i) = self.cfg.cores.iter().position(|c| *c == core) else {
            return;
        };
        if let Some(t) = lock(&self.beats).get_mut(i) {
            *t = now;
        }
    }

    /// Each data core (its CPU), how long since its loop last turned, and
    /// whether that is over the stall threshold.
    pub(crate) fn core_beats(&self) -> Vec<(usize, Duration, bool)> {
        let now = Instant::now();
        lock(&self.beats)
            .iter()
            .zip(&self.cfg.cores)
            .map(|(t, core)| {
                let age = now.saturating_duration_since(*t);
                (*core, age, age > self.cfg.core_stall)
            })
            .collect()
    }
}

/// The pools that take traffic, by index and name: the primary when no
/// route is configured, else every pool a route names.
fn traffic_pools(pools: &Settings) -> Vec<(usize, Arc<str>)> {
    let mut out: Vec<(usize, Arc<str>)> = Vec::new();
    let wanted: Vec<usize> = if pools.engine.routes.is_implicit() {
        vec![0]
    } else {
        pools.engine.routes.iter().map(|r| r.pool).collect()
    };
    for i in wanted {
        if let Some(p) = pools.pool(i).filter(|_| !out.iter().any(|(j, _)| *j == i)) {
            out.push((i, p.name.clone()));
        }
    }
    out
}

/// Why pool `i` cannot be served: no server of it passes its checks, and
/// none of its fallback either (or it has none); `None` while it can.
fn stranded(pools: &Settings, i: usize) -> Option<String> {
    let spec = pools.pool(i)?;
    if spec.health.any_healthy() {
        return None;
    }
    match spec.fallback.and_then(|f| pools.pool(f)) {
        None => Some("no server passes its checks, and it has no fallback".into()),
        Some(f) if !f.health.any_healthy() => Some(format!(
            "no server passes its checks, nor any of its fallback {}",
            f.name
        )),
        Some(_) => None,
    }
}

/// Each route's name and its pool's, by route index: the metrics' labels
/// (configured names only, so the label values stay few).
fn route_labels(pools: &ultragate_dataplane::live::Settings) -> Vec<(String, String)> {
    pools
        .engine
        .routes
        .iter()
        .map(|r| (r.name.to_string(), r.upstream.to_string()))
        .collect()
}

/// The names of the routes that use pool `pool`, comma-separated.
fn route_names(pools: &ultragate_dataplane::live::Settings, pool: usize) -> String {
    let names: Vec<&str> = pools
        .engine
        .routes
        .iter()
        .filter(|r| r.pool == pool)
        .map(|r| &*r.name)
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::SystemTime;
    use ultragate_dataplane::cache::entry::Meta;
    use ultragate_dataplane::cache::{url_key, CacheConfig, Scheme, Stored};
    use ultragate_dataplane::proxy::EngineConfig;

    fn supervisor(cache: Arc<Cache>) -> Supervisor {
        let engine = Arc::new(EngineConfig {
            limits: ultragate_dataplane::http::request::RequestLimits {
                max_header_bytes: 8192,
                max_body_bytes: 1 << 20,
            },
            max_response_head_bytes: 8192,
            response_timeout: Duration::from_secs(5),
            connect_attempts: 2,
            coalesce_wait: Duration::from_secs(1),
            ..EngineConfig::new("a".into(), (Instant::now(), SystemTime::now()))
        });
        let pool = |p: u16| {
            PoolSpec::new(
                vec![std::net::SocketAddr::from(([127, 0, 0, 1], p))],
                Duration::from_secs(60),
                4,
                3,
            )
        };
        let cfg = SupervisorConfig {
            interval: Duration::from_secs(1),
            thresholds: Thresholds::default(),
            pool_thresholds: BTreeMap::new(),
            memory_limit_bytes: 0,
            verify_interval: Duration::from_secs(3600),
            snapshot_dir: std::env::temp_dir(),
            cores: vec![0],
            cores_from: "test".into(),
            core_stall: Duration::from_secs(10),
        };
        Supervisor::new(
            cfg,
            Arc::new(DataplaneStatus::default()),
            Some(cache),
            Arc::new(Live::new(engine, pool(1), pool(2))),
            Arc::new(Timeline::default()),
        )
    }

    #[test]
    fn memory_high_for_a_minute_shrinks_the_cache_once_not_to_nothing() {
        let cache = Arc::new(Cache::new(CacheConfig {
            max_bytes: 64 << 20,
            max_object_bytes: 1 << 20,
        }));
        let meta = || Meta {
            status: 200,
            stored_wall: SystemTime::now(),
            initial_age: 0,
            lifetime: 600,
            must_revalidate: false,
            no_cache: false,
            auth_ok: false,
            stale_while_revalidate: 0,
            stale_if_error: 0,
            etag: None,
            last_modified: None,
            vary_id: 0,
        };
        for i in 0..256 {
            let mut key = Vec::new();
            url_key(
                &mut key,
                Scheme::Http,
                b"example.com",
                format!("/{i}").as_bytes(),
            );
            let stored = Stored {
                head: Bytes::from_static(b"HTTP/1.1 200 OK\r\n"),
                body: Bytes::from(vec![b'x'; 16 * 1024]),
                meta: meta(),
            };
            assert!(cache.insert(&key, None, &[], stored, Instant::now()));
        }
        let full = cache.bytes();
        let sup = supervisor(cache.clone());
        let limit = 1 << 30;
        // A minute of one-second rounds with RSS at 90 % of the limit (it
        // does not fall: the pressure is not the cache's).
        for _ in 0..60 {
            sup.memory_round(limit / 10 * 9, limit);
        }
        let shrinks = sup
            .timeline
            .list()
            .iter()
            .filter(|e| e["action"] == "shrink cache")
            .count();
        assert_eq!(shrinks, 1, "{:?}", sup.timeline.list());
        let left = cache.bytes();
        assert!(
            left > full / 4 && left <= full / 2,
            "{left} of {full} bytes"
        );
        assert_eq!(cache.config().max_bytes, full / 2, "lowered budget");
        // Under 70 %: the configured budget is back.
        sup.memory_round(limit / 2, limit);
        assert_eq!(cache.config().max_bytes, 64 << 20);
        assert!(cache.inserts_enabled());
    }
}
