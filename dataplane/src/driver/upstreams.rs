//! A core's upstream connections: the primary and fallback pools and the
//! choice between them, the same for every driver.

use super::DriverConfig;
use crate::status::Route;
use crate::upstream::pool::Pool;
use std::time::Instant;

/// Which upstream group a connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Group {
    /// `[upstream.primary]`.
    Primary,
    /// `[upstream.fallback]`.
    Fallback,
}

/// The pools of one core, over the driver's socket type `T`.
pub(super) struct Upstreams<T> {
    primary: Pool<T>,
    fallback: Pool<T>,
    has_fallback: bool,
}

impl<T> Upstreams<T> {
    /// Empty pools over the configured servers; without fallback servers
    /// the fallback pool is the primaries.
    pub(super) fn new(cfg: &DriverConfig) -> Self {
        let pool = |servers: &[std::net::SocketAddr]| {
            Pool::new(
                servers.to_vec(),
                cfg.upstream_idle_timeout,
                cfg.upstream_max_idle,
            )
        };
        let fallback = if cfg.fallback.is_empty() {
            &cfg.upstreams
        } else {
            &cfg.fallback
        };
        Self {
            primary: pool(&cfg.upstreams),
            fallback: pool(fallback),
            has_fallback: !cfg.fallback.is_empty(),
        }
    }

    /// The pool of group `g`.
    pub(super) fn pool(&mut self, g: Group) -> &mut Pool<T> {
        match g {
            Group::Primary => &mut self.primary,
            Group::Fallback => &mut self.fallback,
        }
    }

    /// The group for a request's `attempt`-th connect: the fallback when the
    /// route says so, or when every primary attempt is used up.
    pub(super) fn group(&self, attempt: usize, route: Route) -> Group {
        if self.has_fallback && (route == Route::Fallback || attempt >= self.primary.len()) {
            Group::Fallback
        } else {
            Group::Primary
        }
    }

    /// Drops idle connections past the idle timeout.
    pub(super) fn evict_expired(&mut self, now: Instant) {
        self.primary.evict_expired(now);
        self.fallback.evict_expired(now);
    }
}
