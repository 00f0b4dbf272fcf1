//! The runbook's one executor: every row's decisions are applied here,
//! counted in `ultragate_decisions_total{decision}` and written to the
//! timeline, in the order the rows gave them. Everything else the
//! timeline records goes through [`events::record`]: this module is its
//! only writer.

pub mod events;

use crate::policy::{CacheCommand, Command, Decision, Verified};
use crate::supervisor::{lock, Recovery, Supervisor};
use std::sync::atomic::Ordering;
use ultragate_dataplane::cache::{snapshot, Cache};

/// Moves serving from the DPDK port to kernel networking; answers what
/// serves afterwards. Registered by the process that owns the port.
pub type KernelSwitch = Box<dyn Fn() -> Result<String, crate::admin::SwitchError> + Send + Sync>;

/// What applying a command did.
#[derive(Debug)]
struct Applied {
    /// For the timeline.
    result: String,
    /// Entries a snapshot restore loaded.
    restored: Option<u64>,
}

impl From<String> for Applied {
    fn from(result: String) -> Self {
        Self {
            result,
            restored: None,
        }
    }
}

impl Supervisor {
    /// Records an event no row decided (an operator call, a check, a
    /// reload), counting it where the metrics do.
    pub fn record(&self, event: events::Event<'_>) {
        events::record(&self.timeline, Some(&self.metrics), event);
    }

    /// Applies one decision, counts it and writes its timeline line;
    /// returns the result as written.
    pub fn execute(&self, d: &Decision) -> String {
        self.carry_out(d).result
    }

    fn carry_out(&self, d: &Decision) -> Applied {
        let applied = self.apply(d.command);
        self.metrics.decision(d.kind);
        self.timeline
            .push(d.trigger, &d.value, d.action(), &applied.result);
        applied
    }

    fn apply(&self, command: Command) -> Applied {
        match command {
            Command::Route { pool, to } => self.apply_route(pool, to).into(),
            Command::Report => String::from("nothing changed").into(),
            Command::Eject { pool, server } => {
                let pools = self.live.load();
                let g = pools.pool(pool);
                match g.and_then(|g| g.servers.get(server).map(|a| (g, a))) {
                    Some((g, addr)) if g.health.set(server, false) => format!("ejected {addr}"),
                    Some((_, addr)) => format!("{addr} was out already"),
                    None => "the server left the pool".into(),
                }
                .into()
            }
            Command::KernelNetworking => match self.kernel_switch.get() {
                Some(switch) => switch().unwrap_or_else(|e| format!("failed: {e}")),
                None => "failed: no DPDK data plane".into(),
            }
            .into(),
            Command::Isolate(on) => {
                self.isolated.store(on, Ordering::Relaxed);
                self.status.set_log_requests(on);
                self.metrics.set_isolated(on);
                String::from(if on { "isolated" } else { "normal" }).into()
            }
            Command::Cache(c) => match self.cache.as_deref() {
                Some(cache) => self.apply_to_cache(c, cache),
                None => String::from("no cache").into(),
            },
        }
    }

    fn apply_to_cache(&self, command: CacheCommand, cache: &Cache) -> Applied {
        let mut cfg = cache.config();
        match command {
            CacheCommand::Shrink => {
                // The configured budget is kept to come back to; the
                // effective one is half of what the cache holds now.
                let _ = self.cache_budget.compare_exchange(
                    0,
                    cfg.max_bytes,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                cfg.max_bytes = cache.bytes().min(cfg.max_bytes) / 2;
                let freed = cache.set_config(cfg);
                format!(
                    "freed {freed} bytes; budget {} bytes until memory is under 70%",
                    cfg.max_bytes
                )
                .into()
            }
            CacheCommand::Clear => {
                let n = cache.clear();
                cache.set_inserts(false);
                // SAFETY: asks mimalloc (the global allocator) to return
                // freed memory to the OS; no other effect.
                unsafe { libmimalloc_sys::mi_collect(true) };
                format!("cleared {n} entries").into()
            }
            CacheCommand::Restore => {
                cache.set_inserts(true);
                let budget = self.cache_budget.swap(0, Ordering::Relaxed);
                if budget > 0 {
                    cfg.max_bytes = budget;
                    cache.set_config(cfg);
                }
                format!("budget {} bytes", cfg.max_bytes).into()
            }
            CacheCommand::Bypass => {
                cache.set_bypass(true);
                String::from("bypassed; bad entries evicted").into()
            }
            CacheCommand::RestoreSnapshot => match snapshot::restore(cache, &self.cfg.snapshot_dir)
            {
                Ok(r) => Applied {
                    result: format!("restored {} entries from {}", r.restored, r.file.display()),
                    restored: Some(r.restored),
                },
                Err(e) => format!("no restore: {e}").into(),
            },
            CacheCommand::ServeAgain => {
                cache.set_bypass(false);
                String::from("ok").into()
            }
        }
    }

    /// The corruption row, for the background verify and `POST
    /// /admin/cache/verify` alike: verify, and feed the counts to the
    /// policy until it asks for nothing more (a restore is verified
    /// again).
    pub fn verify_and_recover(&self, cache: &Cache) -> Recovery {
        let first = cache.verify();
        let mut out = Recovery {
            checked: first.checked,
            corrupt: first.corrupt,
            restored: None,
            bypassed: cache.bypassed(),
        };
        let mut seen = first;
        loop {
            let decisions = lock(&self.corruption).observe(Verified {
                checked: seen.checked,
                corrupt: seen.corrupt,
                bypassed: cache.bypassed(),
            });
            let mut again = false;
            for d in &decisions {
                let applied = self.carry_out(d);
                if d.command == Command::Cache(CacheCommand::RestoreSnapshot) {
                    out.restored = out.restored.or(applied.restored);
                    again = true;
                }
            }
            out.bypassed = cache.bypassed();
            if !again {
                return out;
            }
            seen = cache.verify();
        }
    }
}
