//! Settings a config reload replaces while the data plane runs: the
//! engine's limits and timeouts and the upstream pools. The control plane
//! publishes a new [`Settings`]; each core notices the new generation (one
//! atomic load where it accepts or connects) and takes it, so new
//! connections and new upstream picks use it while requests in flight
//! finish under the settings they started with.

use crate::proxy::EngineConfig;
use crate::upstream::balance::Balance;
use crate::upstream::health::GroupHealth;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One upstream pool as configured: servers, keep-alive pool and health.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    /// The servers.
    pub servers: Vec<SocketAddr>,
    /// How a server is picked among them.
    pub balance: Balance,
    /// How long an idle keep-alive connection is kept.
    pub idle_timeout: Duration,
    /// Most idle connections kept per server and core.
    pub max_idle: usize,
    /// The servers' health, shared by the cores, the checks and the
    /// supervisor; kept across a reload that leaves the servers alone.
    pub health: Arc<GroupHealth>,
    /// Set by the active checks while some server answers fast.
    pub fast: Arc<AtomicBool>,
    /// This pool's connect and response timeouts, when they differ from
    /// the engine's defaults (the fallback's own keys).
    pub timeouts: Option<(Duration, Duration)>,
}

impl PoolSpec {
    /// The same pool, balanced by `balance`.
    pub fn with_balance(mut self, balance: Balance) -> PoolSpec {
        self.balance = balance;
        self
    }

    /// The same pool with its own connect and response timeouts.
    pub fn with_timeouts(mut self, connect: Duration, response: Duration) -> PoolSpec {
        self.timeouts = Some((connect, response));
        self
    }

    /// A pool over `servers` with fresh health (every server up).
    pub fn new(
        servers: Vec<SocketAddr>,
        idle_timeout: Duration,
        max_idle: usize,
        eject_after_failures: u32,
    ) -> PoolSpec {
        PoolSpec {
            health: Arc::new(GroupHealth::new(servers.len(), eject_after_failures)),
            fast: Arc::new(AtomicBool::new(true)),
            servers,
            balance: Balance::RoundRobin,
            idle_timeout,
            max_idle,
            timeouts: None,
        }
    }
}

/// Everything a core takes from a reload, at one generation.
#[derive(Debug)]
pub struct Settings {
    /// Counts publications; a core holding an older one refreshes.
    pub generation: u64,
    /// The engine's settings for new connections.
    pub engine: Arc<EngineConfig>,
    /// `[upstream.primary]`.
    pub primary: PoolSpec,
    /// `[upstream.fallback]`; empty servers mean "the primaries".
    pub fallback: PoolSpec,
}

/// The published settings and their generation.
#[derive(Debug)]
pub struct Live {
    current: Mutex<Arc<Settings>>,
    generation: AtomicU64,
}

impl Live {
    /// Settings at generation 0.
    pub fn new(engine: Arc<EngineConfig>, primary: PoolSpec, fallback: PoolSpec) -> Live {
        Live {
            current: Mutex::new(Arc::new(Settings {
                generation: 0,
                engine,
                primary,
                fallback,
            })),
            generation: AtomicU64::new(0),
        }
    }

    /// The generation now published: one atomic load, for the cores'
    /// check.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The settings now published.
    pub fn load(&self) -> Arc<Settings> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Publishes new settings; the cores take them at their next accept or
    /// connect. Returns the new generation.
    pub fn publish(&self, engine: Arc<EngineConfig>, primary: PoolSpec, fallback: PoolSpec) -> u64 {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let generation = current.generation + 1;
        *current = Arc::new(Settings {
            generation,
            engine,
            primary,
            fallback,
        });
        self.generation.store(generation, Ordering::Release);
        generation
    }
}
