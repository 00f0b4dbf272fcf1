//! Live configuration: the running settings (built from the file by
//! [`crate::build`], the one path start-up uses too), and their reload
//! (SIGHUP, `POST /admin/config/reload`, or the file changing on disk, as
//! a ConfigMap update does). A reload applies every key that can
//! change while the gateway runs — upstream pools and their servers,
//! timeouts and limits, the cache budget, the runbook thresholds, the
//! admin token, the audit log, the log level — and names the changed keys
//! that need a restart (listeners, cores, the DPDK EAL, ...), which keep
//! their running values. A file that fails to load changes nothing.

use crate::build::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use toml::Value;
use ultragate::config::{ms, Config};
use ultragate::resolve;
use ultragate_control::admin::{AdminSettings, ReloadReport};
use ultragate_control::audit::Audit;
use ultragate_control::checks::{self, CheckConfig};
use ultragate_control::executor::events::Event;
use ultragate_control::metrics::ReloadResult;
use ultragate_control::notify::Notifier;
use ultragate_control::supervisor::Supervisor;
use ultragate_control::timeline::Timeline;
use ultragate_control::tls::TlsControl;
use ultragate_dataplane::access::AccessLog;
use ultragate_dataplane::cache::{Cache, CacheConfig};
use ultragate_dataplane::live::Live;

/// The config as `key → value`, one entry per leaf (arrays are leaves).
fn flatten(cfg: &Config) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            leaf => {
                out.insert(prefix.to_owned(), leaf.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(v) = Value::try_from(cfg) {
        walk("", &v, &mut out);
    }
    out
}

/// The keys whose values differ between two configs.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (a, b) = (flatten(old), flatten(new));
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// `new` with the values of `keep` taken from `old`: the config in effect
/// after a reload that cannot apply those keys.
fn keep_running(old: &Config, new: &Config, keep: &[String]) -> Result<Config, String> {
    let old_v = Value::try_from(old).map_err(|e| e.to_string())?;
    let mut new_v = Value::try_from(new).map_err(|e| e.to_string())?;
    for key in keep {
        let path: Vec<&str> = key.split('.').collect();
        let Some((last, parents)) = path.split_last() else {
            continue;
        };
        let old_leaf = parents
            .iter()
            .try_fold(&old_v, |v, p| v.get(p))
            .and_then(|t| t.get(last))
            .cloned();
        let Some(table) = parents
            .iter()
            .try_fold(&mut new_v, |v, p| v.get_mut(p))
            .and_then(Value::as_table_mut)
        else {
            continue;
        };
        match old_leaf {
            Some(v) => {
                table.insert((*last).to_owned(), v);
            }
            None => {
                table.remove(*last);
            }
        }
    }
    new_v.try_into().map_err(|e: toml::de::Error| e.to_string())
}

/// Sets the process log's filter (the binary's reloadable subscriber).
pub type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the reloaded config is applied to.
pub struct Targets {
    /// The data plane's engine settings and pools.
    pub live: Arc<Live>,
    /// The shared cache, when enabled.
    pub cache: Option<Arc<Cache>>,
    /// Thresholds, memory limit, events and metrics.
    pub supervisor: Arc<Supervisor>,
    /// Admin token, shown config and origins.
    pub admin: Arc<AdminSettings>,
    /// The audit log.
    pub audit: Arc<Audit>,
    /// The event timeline the checks write to.
    pub timeline: Arc<Timeline>,
    /// The process log's level.
    pub set_log_level: SetLogLevel,
    /// The access log.
    pub access: Arc<AccessLog>,
    /// The decision webhook.
    pub notifier: Arc<Notifier>,
    /// Runs the active health checks.
    pub runtime: tokio::runtime::Handle,
    /// The TLS listener's certificates, when `[tls]` is on.
    pub tls: Option<Arc<TlsControl>>,
}

struct Running {
    config: Config,
    /// The file's bytes when last read, for the watch.
    file: Vec<u8>,
}

/// Reloads the config file and applies it.
pub struct Reloader {
    path: Option<PathBuf>,
    running: Mutex<Running>,
    epoch: (Instant, SystemTime),
    to: Targets,
    checks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Reloader {
    /// Over the config the gateway started with.
    pub fn new(
        path: Option<PathBuf>,
        config: Config,
        epoch: (Instant, SystemTime),
        to: Targets,
    ) -> Reloader {
        let file = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .unwrap_or_default();
        Reloader {
            path,
            running: Mutex::new(Running { config, file }),
            epoch,
            to,
            checks: Mutex::new(Vec::new()),
        }
    }

    /// The config in effect now.
    pub fn config(&self) -> Config {
        self.running().config.clone()
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves the running config's server names again; when a pool's
    /// addresses (or its unresolved names) changed, publishes the new
    /// pools (an address gone: its idle connections close, requests on it
    /// finish), restarts the checks and says so in the timeline. Blocking:
    /// run it off the async runtime.
    pub fn re_resolve(&self) {
        let running = self.running();
        let cfg = &running.config;
        if !cfg
            .upstream
            .all()
            .iter()
            .any(|(_, g)| resolve::has_names(&g.servers))
        {
            return;
        }
        let live = self.to.live.load();
        let pools = match pool_specs(cfg, Some(&live)) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot rebuild the pools after a name resolution");
                return;
            }
        };
        let mut changed = false;
        for new in &pools {
            let old = live.index_of(&new.name).and_then(|i| live.pool(i));
            let (servers, unresolved) =
                old.map_or((None, None), |o| (Some(&o.servers), o.unresolved.as_ref()));
            if servers != Some(&new.servers) {
                changed = true;
                self.to.supervisor.record(Event::DnsChange {
                    pool: &new.name,
                    servers: &new.servers,
                });
            }
            if unresolved != new.unresolved.as_ref() {
                changed = true;
                if let Some(why) = &new.unresolved {
                    self.to.supervisor.record(Event::DnsUnresolved {
                        pool: &new.name,
                        why,
                        servers: new.servers.len(),
                    });
                }
            }
        }
        if !changed {
            return;
        }
        let engine = engine_config(cfg, &pools, self.epoch, &self.to.access);
        *self
            .to
            .admin
            .origins
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = pools[0].servers.clone();
        self.to.live.publish(Arc::new(engine), pools);
        drop(running);
        self.start_checks();
    }

    /// Resolves names again every pool's `resolve_interval_ms` (the
    /// shortest), until the task is dropped.
    pub async fn resolve_names(self: Arc<Self>) {
        loop {
            let every = self
                .config()
                .upstream
                .all()
                .iter()
                .map(|(_, g)| g.resolve_interval_ms)
                .min()
                .unwrap_or(5000)
                .max(100);
            tokio::time::sleep(ms(every)).await;
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.re_resolve()).await;
        }
    }

    /// (Re)starts the active health checks of every pool.
    pub fn start_checks(&self) {
        let cfg = self.running().config.clone();
        let pools = self.to.live.load();
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        for old in checks.drain(..) {
            old.abort();
        }
        for ((name, g), spec) in cfg.upstream.all().into_iter().zip(pools.pools()) {
            let check = CheckConfig {
                group: name.to_owned(),
                servers: spec.servers.clone(),
                path: g.health_path.clone(),
                interval: ms(g.health_interval_ms),
                timeout: ms(g.health_timeout_ms),
                rise: g.rise,
                fall: g.fall,
                slow: ms(cfg.control.p99_threshold_ms),
            };
            checks.push(self.to.runtime.spawn(checks::run(
                check,
                spec.health.clone(),
                spec.fast.clone(),
                self.to.timeline.clone(),
            )));
        }
    }

    /// Reads the file again and applies it; `trigger` names what asked
    /// (SIGHUP, admin call, file change) in the event it writes.
    pub fn reload(&self, trigger: &str) -> Result<ReloadReport, String> {
        let sup = &self.to.supervisor;
        let result = self.apply();
        let (outcome, action, event) = match &result {
            Ok(r) if r.applied.is_empty() && r.needs_restart.is_empty() => (
                ReloadResult::Unchanged,
                "keep running config",
                "no change".to_owned(),
            ),
            Ok(r) if r.needs_restart.is_empty() => (
                ReloadResult::Applied,
                "apply new config",
                format!("applied {}", r.applied.join(", ")),
            ),
            Ok(r) => (
                ReloadResult::Partial,
                "apply new config",
                format!(
                    "applied {}; needs a restart: {}",
                    if r.applied.is_empty() {
                        "nothing".to_owned()
                    } else {
                        r.applied.join(", ")
                    },
                    r.needs_restart.join(", ")
                ),
            ),
            Err(e) => (ReloadResult::Rejected, "keep running config", e.clone()),
        };
        sup.record(Event::ConfigReload {
            trigger,
            outcome,
            action,
            detail: &event,
        });
        result
    }

    /// A pool diverted now must keep a fallback whose servers the new
    /// files write: a reload never strands the traffic it carries.
    fn refuse_stranding(&self, new: &ultragate::files::Loaded) -> Result<(), String> {
        let live = self.to.live.load();
        let pools = new.config.upstream.all();
        for spec in live.pools() {
            if !spec.diverted.load(std::sync::atomic::Ordering::Relaxed) {
                continue;
            }
            let target = pools
                .iter()
                .find(|(n, _)| *n == &*spec.name)
                .and_then(|(_, g)| g.fallback.as_deref());
            if let Some(to) = target.filter(|t| !new.servers_written.iter().any(|w| w == t)) {
                return Err(format!(
                    "config key `upstream.{to}.servers`: pool {} is diverted to {to}, and the new config does not name its servers",
                    spec.name
                ));
            }
        }
        Ok(())
    }

    fn apply(&self) -> Result<ReloadReport, String> {
        let path = self
            .path
            .as_deref()
            .ok_or("started without a config file: nothing to reload")?;
        let mut running = self.running();
        running.file = ultragate::files::fingerprint(path);
        let loaded = Config::load_files(path).map_err(|e| e.to_string())?;
        self.refuse_stranding(&loaded)?;
        let new = loaded.config.clone();
        let old = running.config.clone();
        let changed = changed_keys(&old, &new);
        let (restart, mut live): (Vec<String>, Vec<String>) =
            changed.into_iter().partition(|k| needs_restart(k));
        // A rotated token (the Secret's file rewritten under the same
        // name) is a change too.
        let token = new.admin.resolve_token().map_err(|e| e.to_string())?;
        let rotated = *self
            .to
            .admin
            .token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            != token;
        if rotated && !live.iter().any(|k| k.starts_with("admin.token")) {
            live.push(if new.admin.token_file.is_empty() {
                "admin.token".to_owned()
            } else {
                "admin.token_file".to_owned()
            });
        }
        // The certificates are read again at every reload (SIGHUP is how
        // operators ask for it), whether or not `[tls]` changed; turning
        // the listener off takes a restart (`tls.listen`).
        if let (Some(tls), Some(_)) = (&self.to.tls, new.tls.listen) {
            tls.reload(
                &self.to.supervisor,
                Some(&new.tls.settings()),
                "config reload",
            )?;
        }
        if live.is_empty() {
            return Ok(ReloadReport {
                applied: Vec::new(),
                needs_restart: restart,
            });
        }
        let cfg = keep_running(&old, &new, &restart)?;
        let touched = |prefix: &str| live.iter().any(|k| k.starts_with(prefix));

        // Everything that can fail, before anything is applied.
        let pools = pool_specs(&cfg, Some(&self.to.live.load()))?;
        let origins = pools[0].servers.clone();
        let notify = notify_config(&cfg).map_err(|e| e.to_string())?;
        if touched("security.audit_log") || touched("security.enable_audit_logging") {
            let audit = &cfg.security.audit_log;
            self.to
                .audit
                .reopen(&audit_sink(&cfg.security))
                .map_err(|e| format!("config key `security.audit_log`: {audit:?}: {e}"))?;
        }
        if touched("log.level") {
            (self.to.set_log_level)(&cfg.log.level)
                .map_err(|e| format!("config key `log.level`: {e}"))?;
        }

        // The pools carry the runbook's per-pool settings too (their P99
        // threshold, the canary share).
        if touched("api_gateway.")
            || touched("upstream.")
            || touched("route")
            || touched("cache.coalesce_wait_ms")
            || touched("control.")
        {
            let engine = engine_config(&cfg, &pools, self.epoch, &self.to.access);
            self.to.live.publish(Arc::new(engine), pools);
        }
        if let Some(cache) = &self.to.cache {
            if touched("cache.max_bytes") || touched("cache.max_object_bytes") {
                cache.set_config(CacheConfig {
                    max_bytes: cfg.cache.max_bytes,
                    max_object_bytes: cfg.cache.max_object_bytes,
                });
            }
        }
        if touched("notify.") {
            self.to.notifier.configure(notify);
        }
        if touched("log.access") || touched("security.log_all_requests") {
            configure_access(&self.to.access, &cfg);
        }
        if touched("control.") || touched("upstream.primary.") {
            self.to
                .supervisor
                .reload(primary_thresholds(&cfg), cfg.control.memory_limit_bytes);
        }
        if touched("control.") || touched("upstream.") {
            self.to
                .supervisor
                .set_pool_thresholds(pool_thresholds(&cfg));
        }
        let admin = &self.to.admin;
        *admin.token.lock().unwrap_or_else(|e| e.into_inner()) = token;
        *admin.hosts.lock().unwrap_or_else(|e| e.into_inner()) = cfg.admin.host_names();
        *admin
            .loopback_trust
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = cfg.admin.loopback_trust;
        *admin.origins.lock().unwrap_or_else(|e| e.into_inner()) = origins;
        *admin.config_toml.lock().unwrap_or_else(|e| e.into_inner()) = format!(
            "{}{}",
            loaded.provenance(),
            toml::to_string_pretty(&cfg.redacted()).unwrap_or_default()
        );
        running.config = cfg;
        drop(running);
        if touched("upstream.") || touched("control.p99_threshold_ms") {
            self.start_checks();
        }
        Ok(ReloadReport {
            applied: live,
            needs_restart: restart,
        })
    }

    /// Reloads the TLS certificates whenever their files change on disk
    /// (cert-manager renewing, a Secret update swapping the symlink),
    /// every `[tls] watch_interval_ms`.
    pub async fn watch_certificates(self: Arc<Self>, tls: Arc<TlsControl>) {
        loop {
            let every = self.running().config.tls.watch_interval_ms;
            if every == 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            tokio::time::sleep(Duration::from_millis(every)).await;
            let (tls, sup) = (tls.clone(), self.to.supervisor.clone());
            let _ = tokio::task::spawn_blocking(move || tls.check_files(&sup)).await;
        }
    }

    /// Reloads whenever the file's bytes change (a ConfigMap update swaps
    /// the `..data` symlink; the path stays), every `[control]
    /// config_watch_ms`.
    pub async fn watch(self: Arc<Self>) {
        let Some(path) = self.path.clone() else {
            return;
        };
        loop {
            let every = self.running().config.control.config_watch_ms;
            if every == 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            tokio::time::sleep(ms(every)).await;
            let bytes = ultragate::files::fingerprint(&path);
            if bytes == self.running().file {
                continue;
            }
            let me = self.clone();
            let done = tokio::task::spawn_blocking(move || me.reload("config file changed")).await;
            match done {
                Ok(Ok(r)) => {
                    tracing::info!(applied = ?r.applied, needs_restart = ?r.needs_restart, "config file changed: reloaded")
                }
                Ok(Err(error)) => {
                    tracing::error!(
                        error,
                        "config file changed: not reloaded; the running config stays"
                    )
                }
                Err(e) => tracing::error!(error = %e, "config reload did not finish"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text).unwrap()
    }

    #[test]
    fn a_pools_thresholds_default_to_control_key_by_key() {
        let cfg = parse(
            "[control]\np99_threshold_ms = 50\nerror_rate_threshold = 0.2\n\
             [upstream.api]\nservers = [\"127.0.0.1:1\"]\np99_threshold_ms = 5\n\
             [upstream.assets]\nservers = [\"127.0.0.1:2\"]\n",
        );
        let t = pool_thresholds(&cfg);
        assert_eq!(t["api"].p99, Duration::from_millis(5), "its own");
        assert_eq!(t["api"].error_rate, 0.2, "[control]'s");
        assert_eq!(t["assets"].p99, Duration::from_millis(50));
        assert!(!t.contains_key("primary"), "the primary's are apart");
        assert_eq!(primary_thresholds(&cfg).p99, Duration::from_millis(50));
        let own =
            parse("[control]\np99_threshold_ms = 50\n[upstream.primary]\np99_threshold_ms = 7\n");
        assert_eq!(primary_thresholds(&own).p99, Duration::from_millis(7));
        assert_eq!(
            primary_thresholds(&own).error_rate,
            0.1,
            "[control]'s default"
        );
    }

    #[test]
    fn routes_point_at_pools_in_the_data_planes_order() {
        let cfg = parse(
            "[upstream.zeta]\nservers = [\"127.0.0.1:1\"]\n[upstream.alpha]\nservers = [\"127.0.0.1:2\"]\n\
             [[route]]\nname = \"z\"\nupstream = \"zeta\"\n[[route]]\nname = \"f\"\nupstream = \"fallback\"\n",
        );
        let pools = pool_specs(&cfg, None).unwrap();
        let names: Vec<&str> = pools.iter().map(|p| &*p.name).collect();
        assert_eq!(names, ["primary", "fallback", "alpha", "zeta"]);
        let routes = routes(&cfg);
        let pool_of = |i: usize| routes.get(i).map(|r| &*pools[r.pool].name);
        assert_eq!(pool_of(0), Some("zeta"));
        assert_eq!(pool_of(1), Some("fallback"));
        assert_eq!(pools[0].fallback, Some(1), "primary → fallback");
        assert_eq!(pools[3].fallback, None);
    }

    #[test]
    fn changed_keys_are_leaves_and_split_by_restart() {
        let old = parse("[upstream.primary]\nservers = [\"127.0.0.1:1\"]\n");
        let new = parse(
            "[api_gateway]\nlisten = \"127.0.0.1:9\"\nsend_timeout_ms = 5\n[upstream.primary]\nservers = [\"127.0.0.1:2\"]\n[cache]\nmax_bytes = 134217728\n[dpdk]\nport = 1\n",
        );
        let keys = changed_keys(&old, &new);
        assert_eq!(
            keys,
            [
                "api_gateway.listen",
                "api_gateway.send_timeout_ms",
                "cache.max_bytes",
                "dpdk.port",
                "upstream.primary.servers"
            ]
        );
        let restart: Vec<&String> = keys.iter().filter(|k| needs_restart(k)).collect();
        assert_eq!(restart, ["api_gateway.listen", "dpdk.port"]);
    }

    #[test]
    fn keys_that_need_a_restart_keep_their_running_values() {
        let old = parse("[api_gateway]\nlisten = \"127.0.0.1:8\"\n");
        let new = parse("[api_gateway]\nlisten = \"127.0.0.1:9\"\nsend_timeout_ms = 5\n");
        let kept = keep_running(&old, &new, &["api_gateway.listen".to_owned()]).unwrap();
        assert_eq!(kept.api_gateway.listen, old.api_gateway.listen);
        assert_eq!(kept.api_gateway.send_timeout_ms, 5);
    }
}
