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
    /// Its name: `[upstream.NAME]`.
    pub name: Arc<str>,
    /// The pool its requests divert to (`fallback = "NAME"`), by index.
    pub fallback: Option<usize>,
    /// Set while the runbook (or an operator) diverts its requests to its
    /// fallback; kept across a reload like the health.
    pub diverted: Arc<AtomicBool>,
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
    /// Server names that did not resolve, and why (for `/health`); they
    /// are tried again at the next resolution.
    pub unresolved: Option<String>,
    /// Which pool this is across reloads: kept while its servers and
    /// keep-alive settings stay the same, so the cores keep its idle
    /// connections and balancer state; new otherwise.
    pub key: u64,
    /// TLS to the servers (`tls = true`), verified.
    pub tls: Option<Arc<crate::tls::UpstreamTls>>,
    /// The pool's P99 threshold: an answer slower than this counts as
    /// slow in the statistics the runbook judges it by.
    pub slow: Duration,
    /// While diverted, one in this many of its idempotent requests per
    /// core goes to the pool itself as a canary (0: none).
    pub canary_every: u32,
}

/// One request in 50 (2 %) of a diverted pool is a canary by default.
pub const DEFAULT_CANARY_EVERY: u32 = 50;

/// Keys of pools, unique in the process.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

impl PoolSpec {
    /// The same pool named `name`, diverting to pool `fallback`.
    pub fn named(mut self, name: &str, fallback: Option<usize>) -> PoolSpec {
        self.name = Arc::from(name);
        self.fallback = fallback;
        self
    }

    /// The same pool, balanced by `balance`.
    pub fn with_balance(mut self, balance: Balance) -> PoolSpec {
        self.balance = balance;
        self
    }

    /// The same pool judged slow above `slow`, sending one in
    /// `canary_every` requests as a canary while diverted.
    pub fn with_runbook(mut self, slow: Duration, canary_every: u32) -> PoolSpec {
        self.slow = slow;
        self.canary_every = canary_every;
        self
    }

    /// How long a canary waits for its response head before it is retried
    /// on the fallback: ten times the P99 threshold, at least 100 ms.
    pub fn canary_deadline(&self) -> Duration {
        (self.slow * 10).max(Duration::from_millis(100))
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
            name: Arc::from(""),
            fallback: None,
            diverted: Arc::new(AtomicBool::new(false)),
            health: Arc::new(GroupHealth::new(servers.len(), eject_after_failures)),
            fast: Arc::new(AtomicBool::new(true)),
            servers,
            balance: Balance::RoundRobin,
            idle_timeout,
            max_idle,
            timeouts: None,
            unresolved: None,
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            tls: None,
            slow: Duration::from_millis(10),
            canary_every: DEFAULT_CANARY_EVERY,
        }
    }

    /// Whether `other` is the same pool for its connections: the same
    /// servers, balancing and keep-alive settings.
    pub fn same_connections(&self, other: &PoolSpec) -> bool {
        self.servers == other.servers
            && self.balance == other.balance
            && self.idle_timeout == other.idle_timeout
            && self.max_idle == other.max_idle
            && self.tls == other.tls
    }
}

/// Everything a core takes from a reload, at one generation.
#[derive(Debug)]
pub struct Settings {
    /// Counts publications; a core holding an older one refreshes.
    pub generation: u64,
    /// The engine's settings for new connections.
    pub engine: Arc<EngineConfig>,
    /// The pools: `[upstream.primary]` first, `[upstream.fallback]`
    /// second (empty servers there mean "the primaries"), then the other
    /// named pools.
    pools: Vec<PoolSpec>,
}

impl Settings {
    /// `[upstream.primary]`.
    pub fn primary(&self) -> &PoolSpec {
        &self.pools[0]
    }

    /// `[upstream.fallback]`.
    pub fn fallback(&self) -> &PoolSpec {
        &self.pools[1]
    }

    /// Pool `i`.
    pub fn pool(&self, i: usize) -> Option<&PoolSpec> {
        self.pools.get(i)
    }

    /// Every pool, primary and fallback first.
    pub fn pools(&self) -> &[PoolSpec] {
        &self.pools
    }

    /// The index of the pool named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| &*p.name == name)
    }
}

/// The published settings and their generation.
#[derive(Debug)]
pub struct Live {
    current: Mutex<Arc<Settings>>,
    generation: AtomicU64,
}

impl Live {
    /// Settings at generation 0 with the primary and fallback pools only,
    /// the primary diverting to the fallback unless it names its own.
    pub fn new(engine: Arc<EngineConfig>, mut primary: PoolSpec, fallback: PoolSpec) -> Live {
        primary.fallback = primary.fallback.or(Some(1));
        Live::with_pools(engine, vec![primary, fallback])
    }

    /// Settings at generation 0 over `pools`: primary and fallback first
    /// (named so when unnamed; missing ones are empty), then the others.
    /// Each pool diverts where its spec says: a primary without a
    /// fallback (`fallback = ""`) keeps its requests.
    pub fn with_pools(engine: Arc<EngineConfig>, pools: Vec<PoolSpec>) -> Live {
        Live {
            current: Mutex::new(Arc::new(Settings {
                generation: 0,
                engine,
                pools: standard(pools),
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
    pub fn publish(&self, engine: Arc<EngineConfig>, pools: Vec<PoolSpec>) -> u64 {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let generation = current.generation + 1;
        *current = Arc::new(Settings {
            generation,
            engine,
            pools: standard(pools),
        });
        self.generation.store(generation, Ordering::Release);
        generation
    }
}

/// `pools` with a primary and a fallback first, named so when unnamed.
fn standard(mut pools: Vec<PoolSpec>) -> Vec<PoolSpec> {
    while pools.len() < 2 {
        pools.push(PoolSpec::new(Vec::new(), Duration::from_secs(60), 1, 1));
    }
    for (i, name) in ["primary", "fallback"].into_iter().enumerate() {
        if pools[i].name.is_empty() {
            pools[i].name = Arc::from(name);
        }
    }
    pools
}
