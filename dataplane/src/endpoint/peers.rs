//! The peer selector: a core's upstream pools, the choice among them
//! (route → pool, diverted or out of servers → the pool's fallback) and
//! of a server in the pool, and the servers' passive health, over the
//! settings a reload published last.

use crate::live::{Live, PoolSpec, Settings};
use crate::proxy::EngineConfig;
use crate::stats::Completion;
use crate::upstream::pool::{Checkout, Pool};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The server an upstream connection goes to: its pool (by index, and by
/// key across reloads) and the server's index in it. After a reload that
/// changed the pool (another key), the connection is neither pooled nor
/// credited to a server (its index may name another); a pool a reload
/// left alone keeps its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    pool: usize,
    server: usize,
    key: u64,
}

/// What a request asks of [`Upstreams::checkout`]: its pool, which
/// connect this is, whether it may be sent as a canary, and whether it
/// needs a new connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wanted {
    /// The pool its route names.
    pub home: usize,
    /// 0 for the first connect, then one more per retry.
    pub attempt: usize,
    /// It may go to a diverted pool's primary servers as a canary.
    pub may_canary: bool,
    /// An idle connection must not be reused.
    pub fresh: bool,
}

impl Wanted {
    /// The first connect of a request for pool `home`, no canary.
    #[cfg(test)]
    fn first(home: usize) -> Self {
        Wanted {
            home,
            attempt: 0,
            may_canary: false,
            fresh: false,
        }
    }
}

/// The pools of one core, over the driver's socket type `T`.
pub(crate) struct Upstreams<T> {
    settings: Arc<Settings>,
    pools: Vec<Pool<T>>,
    /// Requests that could have been canaries, counted to pick one in a
    /// pool's `canary_every`.
    canary_count: u32,
}

fn pool<T>(spec: &PoolSpec) -> Pool<T> {
    Pool::new(spec.servers.clone(), spec.idle_timeout, spec.max_idle).balanced(spec.balance)
}

impl<T> Upstreams<T> {
    /// Empty pools over the published settings.
    pub(crate) fn new(live: &Live) -> Self {
        Self::over(live.load())
    }

    fn over(settings: Arc<Settings>) -> Self {
        Self {
            pools: settings.pools().iter().map(pool).collect(),
            settings,
            canary_count: 0,
        }
    }

    /// Takes newer settings when a reload published them (one atomic load
    /// otherwise). A pool the reload left alone (the same key) keeps its
    /// idle connections and balancer state; those of the others are
    /// closed by the next sweep.
    pub(crate) fn refresh(&mut self, live: &Live) {
        if live.generation() == self.settings.generation {
            return;
        }
        let settings = live.load();
        let mut old: Vec<(u64, Pool<T>)> = self
            .settings
            .pools()
            .iter()
            .map(|s| s.key)
            .zip(std::mem::take(&mut self.pools))
            .collect();
        self.pools = settings
            .pools()
            .iter()
            .map(|spec| match old.iter().position(|(k, _)| *k == spec.key) {
                Some(i) => old.swap_remove(i).1,
                None => pool(spec),
            })
            .collect();
        self.settings = settings;
    }

    /// The index now of `target`'s pool, unless a reload changed it.
    fn locate(&self, target: Target) -> Option<usize> {
        let pools = self.settings.pools();
        if pools.get(target.pool).is_some_and(|p| p.key == target.key) {
            return Some(target.pool);
        }
        pools.iter().position(|p| p.key == target.key)
    }

    /// The engine settings for a new client connection.
    pub(crate) fn engine(&self) -> &Arc<EngineConfig> {
        &self.settings.engine
    }

    /// The pool of `route`, a route of a connection made under `engine`
    /// (by name when a reload published other routes since).
    pub(crate) fn route_pool(&self, engine: &Arc<EngineConfig>, route: usize) -> usize {
        let spec = engine.routes.get(route);
        if Arc::ptr_eq(engine, &self.settings.engine) {
            return spec.map_or(0, |r| r.pool);
        }
        spec.and_then(|r| self.settings.index_of(&r.upstream))
            .unwrap_or(0)
    }

    /// Where the `attempt`-th connect of a request for pool `home` goes:
    /// its fallback while the pool is diverted or once every server of it
    /// was tried, else the pool itself. A fallback without servers is
    /// no fallback.
    ///
    /// A request that `may_canary` (its first try, replayable) goes to a
    /// diverted pool itself once in the pool's `canary_every`: the
    /// evidence a fail-back is judged on. Returns the pool and whether it
    /// is such a canary.
    fn choose(&mut self, home: usize, attempt: usize, may_canary: bool) -> (usize, bool) {
        let Some(spec) = self.settings.pool(home) else {
            return (0, false);
        };
        let fallback = spec
            .fallback
            .filter(|&f| self.settings.pool(f).is_some_and(|p| !p.servers.is_empty()));
        let Some(f) = fallback else {
            return (home, false);
        };
        let home_len = self.pools.get(home).map_or(0, Pool::len);
        if attempt >= home_len {
            return (f, false);
        }
        if !spec.diverted.load(Ordering::Relaxed) {
            return (home, false);
        }
        if may_canary && attempt == 0 && spec.canary_every > 0 && spec.health.any_healthy() {
            self.canary_count = self.canary_count.wrapping_add(1);
            if self.canary_count.is_multiple_of(spec.canary_every) {
                return (home, true);
            }
        }
        (f, false)
    }

    /// The spec of `target`'s pool, unless a reload changed the pool.
    fn spec_of(&self, target: Target) -> Option<&PoolSpec> {
        self.locate(target).and_then(|i| self.settings.pool(i))
    }

    /// `target`'s pool, unless a reload changed it.
    fn pool_of(&mut self, target: Target) -> Option<&mut Pool<T>> {
        let i = self.locate(target)?;
        self.pools.get_mut(i)
    }

    /// Picks the server for the `attempt`-th connect of a request for pool
    /// `home` (see [`Self::choose`]), passing over unhealthy servers, and
    /// an idle connection to it unless `fresh`; `alive` checks an idle
    /// connection before it is reused. `None` when the pool has no server
    /// (its names did not resolve): the connect fails at once. A canary
    /// comes with the deadline of its response head.
    pub(crate) fn checkout(
        &mut self,
        live: &Live,
        want: Wanted,
        now: Instant,
        alive: impl FnMut(&T) -> bool,
    ) -> Option<(Target, Checkout<T>, Option<Duration>)> {
        self.refresh(live);
        let (chosen, canary) = self.choose(want.home, want.attempt, want.may_canary);
        let fresh = want.fresh;
        let settings = &self.settings;
        let health = &settings.pool(chosen)?.health;
        let pool = self.pools.get_mut(chosen).filter(|p| !p.is_empty())?;
        let checkout = pool.checkout(now, fresh, alive, |i| health.is_healthy(i));
        let server = match &checkout {
            Checkout::Reused { server, .. } | Checkout::Connect { server, .. } => *server,
        };
        let spec = settings.pool(chosen)?;
        let target = Target {
            pool: chosen,
            server,
            key: spec.key,
        };
        Some((target, checkout, canary.then(|| spec.canary_deadline())))
    }

    /// Returns a clean connection for reuse; gives back the one to close
    /// instead: `conn` itself when a reload changed its pool, or the idle
    /// one it displaces.
    pub(crate) fn checkin(&mut self, target: Target, conn: T, now: Instant) -> Option<T> {
        match self.pool_of(target) {
            Some(pool) => pool.checkin(target.server, conn, now),
            None => Some(conn),
        }
    }

    /// How long an idle connection to `target` may wait for reuse; none
    /// when a reload changed its pool: it is not kept.
    pub(crate) fn idle_timeout(&self, target: Target) -> Option<std::time::Duration> {
        self.spec_of(target).map(|p| p.idle_timeout)
    }

    /// The pool name and address of `target`'s server, and the pool's
    /// P99 threshold, unless a reload changed its pool.
    pub(crate) fn server(
        &self,
        target: Target,
    ) -> Option<(&Arc<str>, std::net::SocketAddr, Duration)> {
        let spec = self.spec_of(target)?;
        spec.servers
            .get(target.server)
            .map(|a| (&spec.name, *a, spec.slow))
    }

    /// The TLS settings of `target`'s pool, when it speaks TLS.
    pub(crate) fn tls(&self, target: Target) -> Option<Arc<crate::tls::UpstreamTls>> {
        self.spec_of(target).and_then(|p| p.tls.clone())
    }

    /// The connect and response timeouts of `target`'s pool, when it has
    /// its own.
    pub(crate) fn timeouts(
        &self,
        target: Target,
    ) -> Option<(std::time::Duration, std::time::Duration)> {
        self.spec_of(target).and_then(|p| p.timeouts)
    }

    /// A connect to `target` succeeded.
    pub(crate) fn connected(&self, target: Target) {
        if let Some(p) = self.spec_of(target) {
            p.health.connected(target.server);
        }
    }

    /// A connect to `target` failed.
    pub(crate) fn connect_failed(&self, target: Target) {
        if let Some(p) = self.spec_of(target) {
            p.health.connect_failed(target.server);
        }
    }

    /// Credits a proxied answer to the server that gave it (passive
    /// health, and the balancer's latency estimate).
    pub(crate) fn responded(&mut self, target: Target, done: &Completion, now: Instant) {
        if let Some(p) = self.spec_of(target) {
            p.health.responded(
                target.server,
                done.status,
                done.transport_error,
                done.upstream_latency.unwrap_or(done.latency).as_micros() as u64,
            );
        }
        if let Some(pool) = self.pool_of(target) {
            pool.observe(
                target.server,
                done.upstream_latency.unwrap_or(done.latency),
                now,
            );
        }
    }

    /// A request to `target` that [`Self::checkout`] started has ended.
    pub(crate) fn end(&mut self, target: Target) {
        if let Some(pool) = self.pool_of(target) {
            pool.end(target.server);
        }
    }

    /// Forgets idle connections past the idle timeout.
    pub(crate) fn evict_expired(&mut self, now: Instant) {
        for pool in &mut self.pools {
            pool.evict_expired(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    fn engine() -> Arc<EngineConfig> {
        crate::endpoint::tests::engine(Instant::now())
    }

    fn spec(ports: &[u16]) -> PoolSpec {
        let servers = ports
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect();
        PoolSpec::new(servers, Duration::from_secs(60), 4, 3)
    }

    fn pick(u: &mut Upstreams<u32>, live: &Live) -> (Target, Checkout<u32>) {
        let (t, c, _) = u
            .checkout(live, Wanted::first(0), Instant::now(), |_| true)
            .expect("servers");
        (t, c)
    }

    #[test]
    fn a_reload_reaches_the_next_pick_and_old_connections_are_not_reused() {
        let live = Live::new(engine(), spec(&[1, 2]), spec(&[]));
        let mut u: Upstreams<u32> = Upstreams::new(&live);
        let (old, c) = pick(&mut u, &live);
        assert!(matches!(c, Checkout::Connect { addr, .. } if addr.port() == 1));

        // The reload swaps the servers while `old` is in flight.
        let next = spec(&[3]);
        let health = next.health.clone();
        live.publish(engine(), vec![next, spec(&[])]);
        let (new, c) = pick(&mut u, &live);
        assert!(matches!(c, Checkout::Connect { addr, .. } if addr.port() == 3));

        // The old connection comes back: closed, not pooled under the new
        // server's index; nor is its answer credited there.
        assert_eq!(u.checkin(old, 7, Instant::now()), Some(7), "closed");
        for _ in 0..5 {
            u.connect_failed(old);
        }
        assert!(
            health.is_healthy(0),
            "old failures are not the new server's"
        );
        assert!(matches!(pick(&mut u, &live).1, Checkout::Connect { .. }));
        assert_eq!(u.checkin(new, 8, Instant::now()), None);
        assert!(matches!(
            pick(&mut u, &live).1,
            Checkout::Reused { conn: 8, .. }
        ));
    }

    #[test]
    fn a_reload_that_leaves_a_pool_alone_keeps_its_idle_connections() {
        let (primary, fallback) = (spec(&[1, 2]), spec(&[]));
        let api = spec(&[10]).named("api", None);
        let live = Live::with_pools(
            engine(),
            vec![primary.clone(), fallback.clone(), api.clone()],
        );
        let mut u: Upstreams<u32> = Upstreams::new(&live);
        let now = Instant::now();
        let (t, _, _) = u.checkout(&live, Wanted::first(2), now, |_| true).unwrap();
        assert_eq!(u.checkin(t, 7, now), None, "pooled");
        // A reload adds a pool before "api" (its index moves) and changes
        // the primary; "api" keeps its key.
        live.publish(
            engine(),
            vec![spec(&[3]), fallback, spec(&[20]).named("aaa", None), api],
        );
        let (_, c, _) = u.checkout(&live, Wanted::first(3), now, |_| true).unwrap();
        assert!(
            matches!(c, Checkout::Reused { conn: 7, .. }),
            "the idle connection survived the reload"
        );
        assert!(u.idle_timeout(t).is_some(), "its old target still counts");
    }

    fn port(c: &Checkout<u32>) -> u16 {
        match c {
            Checkout::Connect { addr, .. } => addr.port(),
            Checkout::Reused { .. } => 0,
        }
    }

    #[test]
    fn each_pool_diverts_to_its_own_fallback_alone() {
        // primary → fallback; api (2) → legacy (3); assets (4) without one.
        let live = Live::with_pools(
            engine(),
            vec![
                spec(&[1]).named("primary", Some(1)),
                spec(&[2]),
                spec(&[10, 11]).named("api", Some(3)),
                spec(&[30]).named("legacy", None),
                spec(&[40]).named("assets", None),
            ],
        );
        let mut u: Upstreams<u32> = Upstreams::new(&live);
        let at = |u: &mut Upstreams<u32>, home, attempt| {
            let want = Wanted {
                home,
                attempt,
                may_canary: false,
                fresh: true,
            };
            u.checkout(&live, want, Instant::now(), |_| true)
                .map_or(0, |(_, c, _)| port(&c))
        };
        assert_eq!(at(&mut u, 2, 0), 10);
        assert_eq!(at(&mut u, 2, 1), 11, "the next server of its pool");
        assert_eq!(at(&mut u, 2, 2), 30, "then its fallback");
        assert_eq!(at(&mut u, 4, 5), 40, "no fallback: its own pool");
        live.load().pools()[2]
            .diverted
            .store(true, Ordering::Relaxed);
        assert_eq!(at(&mut u, 2, 0), 30, "api diverted");
        assert_eq!(at(&mut u, 0, 0), 1, "the primary is not");
        assert_eq!(at(&mut u, 4, 0), 40, "nor assets");
        assert_eq!(at(&mut u, 0, 1), 2, "primary: out of servers → fallback");
        // A primary without one (`fallback = ""`) keeps its requests, even
        // out of servers: the default fallback may have nobody listening.
        let live = Live::with_pools(engine(), vec![spec(&[1]), spec(&[2])]);
        let mut u: Upstreams<u32> = Upstreams::new(&live);
        let port_of = |u: &mut Upstreams<u32>, attempt| {
            u.checkout(
                &live,
                Wanted {
                    home: 0,
                    attempt,
                    may_canary: false,
                    fresh: true,
                },
                Instant::now(),
                |_| true,
            )
            .map_or(0, |(_, c, _)| port(&c))
        };
        assert_eq!(port_of(&mut u, 1), 1, "no fallback: the primary again");
        live.load().pools()[0]
            .diverted
            .store(true, Ordering::Relaxed);
        assert_eq!(port_of(&mut u, 0), 1, "nowhere to divert to");
        // A pool whose names did not resolve: its fallback, or no server.
        let live = Live::with_pools(
            engine(),
            vec![spec(&[1]), spec(&[2]), spec(&[]).named("dark", None)],
        );
        let mut u: Upstreams<u32> = Upstreams::new(&live);
        assert!(u
            .checkout(
                &live,
                Wanted {
                    home: 2,
                    attempt: 0,
                    may_canary: false,
                    fresh: true
                },
                Instant::now(),
                |_| true
            )
            .is_none());
        assert!(u
            .checkout(
                &live,
                Wanted {
                    home: 0,
                    attempt: 0,
                    may_canary: false,
                    fresh: true
                },
                Instant::now(),
                |_| true
            )
            .is_some());
    }

    #[test]
    fn a_route_of_an_older_engine_finds_its_pool_by_name() {
        use crate::route::{HostMatch, RouteSpec, Routes};
        let with_route = |pool: usize| {
            let mut e = (*engine()).clone();
            e.routes = Arc::new(Routes::new(vec![RouteSpec {
                name: "api".into(),
                host: HostMatch::Any,
                path_prefix: "/".into(),
                methods: Vec::new(),
                upstream: Arc::from("api"),
                pool,
                cache: true,
                cache_ttl: None,
            }]));
            Arc::new(e)
        };
        let old = with_route(2);
        let live = Live::with_pools(
            old.clone(),
            vec![spec(&[1]), spec(&[2]), spec(&[10]).named("api", None)],
        );
        let mut u: Upstreams<u32> = Upstreams::new(&live);
        assert_eq!(u.route_pool(&old, 0), 2);
        // A reload puts another pool before "api".
        live.publish(
            with_route(3),
            vec![
                spec(&[1]),
                spec(&[2]),
                spec(&[20]).named("other", None),
                spec(&[10]).named("api", None),
            ],
        );
        u.refresh(&live);
        assert_eq!(u.route_pool(&old, 0), 3, "by name, not by the old index");
        assert_eq!(u.route_pool(&old, 9), 0, "an unknown route: the primary");
    }
}
