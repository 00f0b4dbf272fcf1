//! A per-core pool of upstream connections: the choice of a server (by
//! its [`Balance`]), and idle keep-alive connections reused
//! most-recent-first. Generic over
//! the connection type, so every driver keeps its own sockets in it; one
//! pool per core, so it needs no lock.

use super::balance::{Balance, Loads};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Idle<T> {
    conn: T,
    since: Instant,
}

/// What [`Pool::checkout`] gives the driver.
pub enum Checkout<T> {
    /// An idle keep-alive connection to `server`.
    Reused {
        /// Index of the server in the pool's list.
        server: usize,
        /// The connection.
        conn: T,
    },
    /// No idle connection: connect to `addr`.
    Connect {
        /// Index of the server in the pool's list.
        server: usize,
        /// The server's address.
        addr: SocketAddr,
    },
}

/// The choice of a server and idle connections for one group of upstream
/// servers.
pub struct Pool<T> {
    servers: Vec<SocketAddr>,
    balance: Balance,
    loads: Loads,
    next: usize,
    idle: Vec<Vec<Idle<T>>>,
    idle_timeout: Duration,
    max_idle_per_server: usize,
}

impl<T> Pool<T> {
    /// A pool over `servers` (at least one) that keeps up to
    /// `max_idle_per_server` idle connections each, for at most
    /// `idle_timeout`.
    pub fn new(
        servers: Vec<SocketAddr>,
        idle_timeout: Duration,
        max_idle_per_server: usize,
    ) -> Self {
        let idle = servers.iter().map(|_| Vec::new()).collect();
        Self {
            loads: Loads::new(servers.len()),
            servers,
            balance: Balance::RoundRobin,
            next: 0,
            idle,
            idle_timeout,
            max_idle_per_server,
        }
    }

    /// The same pool, balanced by `balance`.
    pub fn balanced(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// How many servers the pool spreads over.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether the pool has no servers.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Picks a server (the next in turn, or the cheaper of two by
    /// [`Balance::P2cEwma`]), counts a request to it as started, and
    /// returns an idle connection to it, unless `fresh` or none is idle.
    /// Servers for which `usable` says no are passed over while another is
    /// usable. `alive` checks every idle
    /// connection before it is handed out: one that became readable while
    /// idle (a close by the upstream, or late bytes such as a body after a
    /// HEAD or 304) is dropped, or those bytes would become the next
    /// request's response.
    pub fn checkout(
        &mut self,
        now: Instant,
        fresh: bool,
        mut alive: impl FnMut(&T) -> bool,
        usable: impl Fn(usize) -> bool,
    ) -> Checkout<T> {
        let n = self.servers.len();
        let p2c = match self.balance {
            Balance::P2cEwma => self.loads.pick(now, &usable),
            Balance::RoundRobin => None,
        };
        let server = p2c.unwrap_or_else(|| {
            (0..n)
                .map(|step| (self.next + step) % n)
                .find(|&i| usable(i))
                .unwrap_or(self.next % n)
        });
        self.next = server.wrapping_add(1);
        self.loads.begin(server);
        if !fresh {
            while let Some(idle) = self.idle[server].pop() {
                let idle_for = now.saturating_duration_since(idle.since);
                if idle_for < self.idle_timeout && alive(&idle.conn) {
                    return Checkout::Reused {
                        server,
                        conn: idle.conn,
                    };
                }
            }
        }
        Checkout::Connect {
            server,
            addr: self.servers[server],
        }
    }

    /// Returns a clean connection to `server` for reuse; gives back the
    /// one it displaces (the oldest, when the server's idle list is full,
    /// or `conn` itself for a server the pool does not have) for the
    /// caller to close.
    pub fn checkin(&mut self, server: usize, conn: T, now: Instant) -> Option<T> {
        let Some(list) = self.idle.get_mut(server) else {
            return Some(conn);
        };
        let displaced = (list.len() >= self.max_idle_per_server).then(|| list.remove(0).conn);
        list.push(Idle { conn, since: now });
        displaced
    }

    /// A request to `server` that [`Self::checkout`] started has ended.
    pub fn end(&mut self, server: usize) {
        self.loads.end(server);
    }

    /// `server` answered after `latency`, for the balancer's estimate.
    pub fn observe(&mut self, server: usize, latency: Duration, now: Instant) {
        self.loads.observe(server, latency, now);
    }

    /// How long an idle connection may wait for reuse.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Drops idle connections older than the idle timeout.
    pub fn evict_expired(&mut self, now: Instant) {
        let timeout = self.idle_timeout;
        for list in &mut self.idle {
            list.retain(|i| now.saturating_duration_since(i.since) < timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
            .collect()
    }

    fn picks(pool: &mut Pool<u32>, n: usize, usable: impl Fn(usize) -> bool + Copy) -> Vec<usize> {
        let now = Instant::now();
        (0..n)
            .map(|_| match pool.checkout(now, false, |_| true, usable) {
                Checkout::Connect { server, .. } => server,
                Checkout::Reused { server, .. } => server,
            })
            .collect()
    }

    #[test]
    fn round_robin_then_reuse() {
        let mut pool: Pool<u32> = Pool::new(addrs(2), Duration::from_secs(60), 4);
        assert_eq!(picks(&mut pool, 4, |_| true), [0, 1, 0, 1]);
        let now = Instant::now();
        pool.checkin(0, 7, now);
        assert!(matches!(
            pool.checkout(now, false, |_| true, |_| true),
            Checkout::Reused { server: 0, conn: 7 }
        ));
    }

    #[test]
    fn unusable_servers_are_passed_over() {
        let mut pool: Pool<u32> = Pool::new(addrs(3), Duration::from_secs(60), 4);
        assert_eq!(picks(&mut pool, 4, |i| i != 1), [0, 2, 0, 2]);
        assert_eq!(
            picks(&mut pool, 1, |_| false).len(),
            1,
            "none usable: still one"
        );
    }

    #[test]
    fn fresh_dead_and_expired_are_not_reused() {
        let mut pool: Pool<u32> = Pool::new(addrs(1), Duration::from_secs(5), 4);
        let now = Instant::now();
        pool.checkin(0, 1, now);
        assert!(matches!(
            pool.checkout(now, true, |_| true, |_| true),
            Checkout::Connect { .. }
        ));
        pool.checkin(0, 2, now);
        assert!(
            matches!(
                pool.checkout(now, false, |_| false, |_| true),
                Checkout::Connect { .. }
            ),
            "readable while idle, even just now: not reused"
        );
        pool.checkin(0, 4, now);
        let later = now + Duration::from_secs(6);
        assert!(matches!(
            pool.checkout(later, false, |_| true, |_| true),
            Checkout::Connect { .. }
        ));
    }

    #[test]
    fn idle_list_is_bounded() {
        let mut pool: Pool<u32> = Pool::new(addrs(1), Duration::from_secs(60), 2);
        let now = Instant::now();
        for c in 0..5 {
            pool.checkin(0, c, now);
        }
        assert_eq!(pool.idle[0].len(), 2);
        pool.evict_expired(now + Duration::from_secs(61));
        assert!(pool.idle[0].is_empty());
    }
}
