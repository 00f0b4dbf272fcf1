//! The peer selector: a core's primary and fallback pools, the choice
//! between them (route, attempt) and the servers' passive health, over the
//! settings a reload published last.

use crate::live::{Live, PoolSpec, Settings};
use crate::proxy::EngineConfig;
use crate::stats::Completion;
use crate::status::Route;
use crate::upstream::health::GroupHealth;
use crate::upstream::pool::{Checkout, Pool};
use std::sync::Arc;
use std::time::Instant;

/// Which upstream group a connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    /// `[upstream.primary]`.
    Primary,
    /// `[upstream.fallback]`.
    Fallback,
}

/// The server an upstream connection goes to, under the settings of one
/// generation: after a reload, a connection of an older generation is
/// neither pooled nor credited to a server (its index may name another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    group: Group,
    server: usize,
    generation: u64,
}

/// The pools of one core, over the driver's socket type `T`.
pub(crate) struct Upstreams<T> {
    settings: Arc<Settings>,
    primary: Pool<T>,
    fallback: Pool<T>,
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
        // Without fallback servers the fallback pool is the primaries.
        let fallback = if settings.fallback.servers.is_empty() {
            &settings.primary
        } else {
            &settings.fallback
        };
        Self {
            primary: pool(&settings.primary),
            fallback: pool(fallback),
            settings,
        }
    }

    /// Takes newer settings when a reload published them (one atomic load
    /// otherwise). Idle connections of the old pools are closed.
    pub(crate) fn refresh(&mut self, live: &Live) {
        if live.generation() != self.settings.generation {
            *self = Self::over(live.load());
        }
    }

    /// The engine settings for a new client connection.
    pub(crate) fn engine(&self) -> &Arc<EngineConfig> {
        &self.settings.engine
    }

    fn health(&self, g: Group) -> &GroupHealth {
        match g {
            Group::Fallback if !self.settings.fallback.servers.is_empty() => {
                &self.settings.fallback.health
            }
            _ => &self.settings.primary.health,
        }
    }

    /// The health of `target`'s server, unless the target is of an older
    /// generation.
    fn health_of(&self, target: Target) -> Option<&GroupHealth> {
        (target.generation == self.settings.generation).then(|| self.health(target.group))
    }

    /// Picks the server for a request's `attempt`-th connect (the fallback
    /// when the route says so, or when every primary attempt is used up),
    /// passing over unhealthy servers, and an idle connection to it unless
    /// `fresh`; `alive` checks an idle connection before it is reused.
    pub(crate) fn checkout(
        &mut self,
        live: &Live,
        route: Route,
        attempt: usize,
        fresh: bool,
        now: Instant,
        alive: impl FnMut(&T) -> bool,
    ) -> (Target, Checkout<T>) {
        self.refresh(live);
        let has_fallback = !self.settings.fallback.servers.is_empty();
        let group = if has_fallback && (route == Route::Fallback || attempt >= self.primary.len()) {
            Group::Fallback
        } else {
            Group::Primary
        };
        let health = match group {
            Group::Primary => &self.settings.primary.health,
            Group::Fallback => &self.settings.fallback.health,
        };
        let pool = match group {
            Group::Primary => &mut self.primary,
            Group::Fallback => &mut self.fallback,
        };
        let checkout = pool.checkout(now, fresh, alive, |i| health.is_healthy(i));
        let server = match &checkout {
            Checkout::Reused { server, .. } | Checkout::Connect { server, .. } => *server,
        };
        let target = Target {
            group,
            server,
            generation: self.settings.generation,
        };
        (target, checkout)
    }

    /// Returns a clean connection for reuse; gives back the one to close
    /// instead: `conn` itself when it is of an older generation, or the
    /// idle one it displaces.
    pub(crate) fn checkin(&mut self, target: Target, conn: T, now: Instant) -> Option<T> {
        if target.generation != self.settings.generation {
            return Some(conn);
        }
        match target.group {
            Group::Primary => self.primary.checkin(target.server, conn, now),
            Group::Fallback => self.fallback.checkin(target.server, conn, now),
        }
    }

    /// How long an idle connection to `target` may wait for reuse; none
    /// for a target of an older generation, which is not kept.
    pub(crate) fn idle_timeout(&self, target: Target) -> Option<std::time::Duration> {
        if target.generation != self.settings.generation {
            return None;
        }
        Some(match target.group {
            Group::Primary => self.primary.idle_timeout(),
            Group::Fallback => self.fallback.idle_timeout(),
        })
    }

    /// The pool name and address of `target`'s server, unless the target
    /// is of an older generation.
    pub(crate) fn server(&self, target: Target) -> Option<(&'static str, std::net::SocketAddr)> {
        if target.generation != self.settings.generation {
            return None;
        }
        let (name, pool) = match target.group {
            Group::Fallback if !self.settings.fallback.servers.is_empty() => {
                ("fallback", &self.settings.fallback)
            }
            _ => ("primary", &self.settings.primary),
        };
        pool.servers.get(target.server).map(|a| (name, *a))
    }

    /// The connect and response timeouts of `target`'s pool, when it has
    /// its own.
    pub(crate) fn timeouts(
        &self,
        target: Target,
    ) -> Option<(std::time::Duration, std::time::Duration)> {
        if target.generation != self.settings.generation {
            return None;
        }
        match target.group {
            Group::Fallback if !self.settings.fallback.servers.is_empty() => {
                self.settings.fallback.timeouts
            }
            _ => self.settings.primary.timeouts,
        }
    }

    /// A connect to `target` succeeded.
    pub(crate) fn connected(&self, target: Target) {
        if let Some(h) = self.health_of(target) {
            h.connected(target.server);
        }
    }

    /// A connect to `target` failed.
    pub(crate) fn connect_failed(&self, target: Target) {
        if let Some(h) = self.health_of(target) {
            h.connect_failed(target.server);
        }
    }

    /// Credits a proxied answer to the server that gave it (passive
    /// health, and the balancer's latency estimate).
    pub(crate) fn responded(&mut self, target: Target, done: &Completion, now: Instant) {
        if let Some(h) = self.health_of(target) {
            h.responded(
                target.server,
                done.status,
                done.transport_error,
                done.latency.as_micros() as u64,
            );
        }
        if let Some(pool) = self.pool_of(target) {
            pool.observe(target.server, done.latency, now);
        }
    }

    /// A request to `target` that [`Self::checkout`] started has ended.
    pub(crate) fn end(&mut self, target: Target) {
        if let Some(pool) = self.pool_of(target) {
            pool.end(target.server);
        }
    }

    /// `target`'s pool, unless the target is of an older generation.
    fn pool_of(&mut self, target: Target) -> Option<&mut Pool<T>> {
        if target.generation != self.settings.generation {
            return None;
        }
        Some(match target.group {
            Group::Primary => &mut self.primary,
            Group::Fallback => &mut self.fallback,
        })
    }

    /// Forgets idle connections past the idle timeout.
    pub(crate) fn evict_expired(&mut self, now: Instant) {
        self.primary.evict_expired(now);
        self.fallback.evict_expired(now);
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
        u.checkout(live, Route::Primary, 0, false, Instant::now(), |_| true)
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
        live.publish(engine(), next, spec(&[]));
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
}
