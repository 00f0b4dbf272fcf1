//! The one path from a configuration to the running state: start-up and
//! reload build the engine's settings, the pools, the routes, the access
//! and audit sinks and the runbook's thresholds with these functions, so a
//! key cannot be read on one path and ignored on the other. A key this
//! file translates is live (a reload applies it) unless it is listed in
//! [`RESTART_KEYS`], which a reload names and leaves running as it was.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use ultragate::config::{
    ms, Config, ConfigError, ControlSection, NotifyFormat, SecuritySection, UpstreamGroup,
};
use ultragate::resolve;
use ultragate_control::audit::AuditSink;
use ultragate_control::notify::{Format, NotifyConfig};
use ultragate_control::policy::Thresholds;
use ultragate_dataplane::access::{AccessLog, AccessSink};
use ultragate_dataplane::http::path::{EscapedSlashes, PathRules};
use ultragate_dataplane::http::request::RequestLimits;
use ultragate_dataplane::live::{PoolSpec, Settings};
use ultragate_dataplane::proxy::EngineConfig;
use ultragate_dataplane::route::{HostMatch, RouteSpec, Routes, TtlOverride};
use ultragate_dataplane::tls::UpstreamTls;

/// Changed keys under these prefixes take effect only after a restart.
pub const RESTART_KEYS: &[&str] = &[
    "api_gateway.listen",
    "api_gateway.cores",
    "api_gateway.enable_dpdk",
    "api_gateway.io_backend",
    "api_gateway.max_connections_per_core",
    "api_gateway.max_connections_per_client",
    "api_gateway.drain_timeout_ms",
    "admin.listen",
    "tls.listen",
    "cache.enabled",
    "cache.snapshot_dir",
    "cache.restore_on_start",
    "cache.test_hooks",
    "cache.targeted_fields",
    "control.interval_ms",
    "control.verify_interval_ms",
    "control.core_stall_ms",
    "log.format",
    "dpdk.",
];

/// Whether a change of `key` needs a restart.
pub fn needs_restart(key: &str) -> bool {
    RESTART_KEYS
        .iter()
        .any(|k| key == *k || (k.ends_with('.') && key.starts_with(k)))
}

/// Where `[log] access` sends the access log.
pub fn access_sink(access: &str) -> AccessSink {
    match access {
        "off" => AccessSink::Off,
        "stdout" => AccessSink::Stdout,
        path => AccessSink::File(path.into()),
    }
}

/// The webhook from `[notify]`, resolved; `None` when none is set.
pub fn notify_config(cfg: &Config) -> Result<Option<NotifyConfig>, ConfigError> {
    use std::net::ToSocketAddrs;
    let Some((addr, host, path)) = cfg.notify.target()? else {
        return Ok(None);
    };
    let server = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ConfigError::Invalid {
            key: "notify.webhook_url".into(),
            message: format!("cannot resolve {addr}"),
        })?;
    Ok(Some(NotifyConfig {
        server,
        host,
        path,
        format: match cfg.notify.format {
            NotifyFormat::Json => Format::Json,
            NotifyFormat::Slack => Format::Slack,
        },
        timeout: ms(cfg.notify.timeout_ms),
        min_interval: ms(cfg.notify.min_interval_ms),
        pod: std::env::var("HOSTNAME").unwrap_or_default(),
    }))
}

/// Points the access log where the config says.
pub fn configure_access(log: &AccessLog, cfg: &Config) {
    log.configure(access_sink(&cfg.log.access), cfg.log.access_sample);
    log.set_audit(cfg.security.log_all_requests);
}

/// The engine's settings from the config; `pools` are the pools
/// [`pool_specs`] made of it.
pub fn engine_config(
    cfg: &Config,
    pools: &[PoolSpec],
    epoch: (Instant, SystemTime),
    access: &Arc<AccessLog>,
) -> EngineConfig {
    let primary = &cfg.upstream.primary;
    // Every server of the largest pool once, then its fallback.
    let most = pools.iter().map(|p| p.servers.len()).max().unwrap_or(1);
    EngineConfig {
        limits: RequestLimits {
            max_header_bytes: cfg.api_gateway.max_header_bytes,
            max_body_bytes: cfg.api_gateway.max_body_bytes,
        },
        max_response_head_bytes: 64 * 1024,
        client_timeout: ms(cfg.api_gateway.client_timeout_ms),
        keepalive_timeout: ms(cfg.api_gateway.keepalive_timeout_ms),
        send_timeout: ms(cfg.api_gateway.send_timeout_ms),
        connect_timeout: ms(primary.connect_timeout_ms),
        response_timeout: ms(primary.response_timeout_ms),
        connect_attempts: most + 1,
        default_host: primary.servers[0].as_str().to_owned(),
        coalesce_wait: ms(cfg.cache.coalesce_wait_ms),
        epoch,
        access: Some(access.clone()),
        routes: Arc::new(routes(cfg)),
        paths: path_rules(&cfg.api_gateway),
        // Checked when the config was validated.
        forwarding: cfg.api_gateway.forward_rules().unwrap_or_default(),
        max_client_queue: cfg.api_gateway.max_connection_buffer_bytes,
        test_hooks: cfg.cache.test_hooks == Some(true),
    }
}

/// How the data plane normalises paths under `[api_gateway]`.
pub fn path_rules(g: &ultragate::config::ApiGateway) -> PathRules {
    use ultragate::config::EscapedSlashesName as Name;
    PathRules {
        merge_slashes: g.merge_slashes,
        escaped_slashes: match g.escaped_slashes {
            Name::Reject => EscapedSlashes::Reject,
            Name::Keep => EscapedSlashes::Keep,
            Name::Decode => EscapedSlashes::Decode,
        },
    }
}

/// The routes of the config, their pools by index in the order of
/// [`crate::config::Upstreams::all`] (the order [`pool_specs`] gives).
pub fn routes(cfg: &Config) -> Routes {
    let names: Vec<&str> = cfg.upstream.all().into_iter().map(|(n, _)| n).collect();
    Routes::new(
        cfg.route
            .iter()
            .map(|r| RouteSpec {
                name: r.name.as_str().into(),
                host: r.host.as_deref().map_or(HostMatch::Any, HostMatch::parse),
                path_prefix: r.path_prefix.clone(),
                methods: r.methods.clone(),
                upstream: Arc::from(r.upstream.as_str()),
                pool: names.iter().position(|n| *n == r.upstream).unwrap_or(0),
                cache: r.cache,
                cache_ttl: r
                    .cache_ttl_override_s
                    .map(|s| TtlOverride::new(Duration::from_secs(s), &r.cache_ttl_override_types)),
            })
            .collect(),
    )
}

/// The pools from the config, servers resolved (see [`resolve`]):
/// primary, fallback, then the named ones. A name that does not resolve
/// leaves its pool with the other servers' addresses (none, maybe) and the
/// reason. A pool keeps its route (diverted or not) from `previous`, and
/// its health too when its servers and ejection rule did not change.
pub fn pool_specs(cfg: &Config, previous: Option<&Settings>) -> Result<Vec<PoolSpec>, String> {
    let all = cfg.upstream.all();
    let index = |name: &str| all.iter().position(|(n, _)| *n == name);
    let base = control_thresholds(&cfg.control);
    let every = canary_every(&cfg.control);
    all.iter()
        .map(|&(name, g)| {
            let resolved = resolve::resolve(&g.servers, &cfg.resolver);
            let mut spec = PoolSpec::new(
                resolved.addrs,
                ms(g.idle_timeout_ms),
                g.max_idle_per_core,
                g.eject_after_failures,
            )
            .with_timeouts(ms(g.connect_timeout_ms), ms(g.response_timeout_ms))
            .with_balance(g.balance.into())
            .with_runbook(own_thresholds(base, g).p99, every)
            .named(name, g.fallback.as_deref().and_then(index));
            spec.unresolved = resolved.failed;
            let old = previous.and_then(|p| p.index_of(name).and_then(|i| p.pool(i)));
            spec.tls = pool_tls(name, g, old)?;
            if let Some(old) = old {
                spec.diverted = old.diverted.clone();
                if old.same_connections(&spec) {
                    spec.key = old.key;
                }
                if old.servers == spec.servers
                    && old.health.eject_after() == g.eject_after_failures.max(1)
                {
                    spec.health = old.health.clone();
                    spec.fast = old.fast.clone();
                }
            }
            Ok(spec)
        })
        .collect()
}

/// A pool's TLS to its servers: the running one while its name and CA
/// file stay the same (no file read), else loaded anew.
pub fn pool_tls(
    name: &str,
    g: &UpstreamGroup,
    old: Option<&PoolSpec>,
) -> Result<Option<Arc<UpstreamTls>>, String> {
    if !g.tls {
        return Ok(None);
    }
    let server_name = g.tls_name();
    let ca = g.tls_ca_file.as_deref();
    if let Some(t) = old
        .and_then(|o| o.tls.as_ref())
        .filter(|t| t.is_built_from(server_name, ca))
    {
        return Ok(Some(t.clone()));
    }
    UpstreamTls::new(&format!("upstream.{name}"), server_name, ca)
        .map(|t| Some(Arc::new(t)))
        .map_err(|e| e.to_string())
}

/// Where `[security]` sends the audit log.
pub fn audit_sink(s: &SecuritySection) -> AuditSink {
    match (s.enable_audit_logging, s.audit_log.as_str()) {
        (false, _) => AuditSink::Off,
        (true, "" | "stdout") => AuditSink::Stdout,
        (true, path) => AuditSink::File {
            path: path.into(),
            max_bytes: s.audit_log_max_bytes,
        },
    }
}

/// The runbook thresholds of `[control]`.
pub fn control_thresholds(c: &ControlSection) -> Thresholds {
    Thresholds {
        p99: ms(c.p99_threshold_ms),
        p99_window: ms(c.p99_window_ms),
        error_rate: c.error_rate_threshold,
        error_window: ms(c.error_window_ms),
        min_requests: c.min_requests,
        failback_hold: ms(c.failback_hold_ms),
        failback_hold_max: match c.failback_hold_max_ms {
            0 => ms(c.failback_hold_ms) * 8,
            n => ms(n),
        },
        min_spread: c.min_spread.max(1),
    }
}

/// One canary in how many requests of a diverted pool (0: none).
pub fn canary_every(c: &ControlSection) -> u32 {
    if c.canary_share <= 0.0 {
        return 0;
    }
    (1.0 / c.canary_share.min(1.0))
        .round()
        .clamp(1.0, f64::from(u32::MAX)) as u32
}

/// `base` with the threshold keys pool `u` writes itself.
pub fn own_thresholds(base: Thresholds, u: &UpstreamGroup) -> Thresholds {
    Thresholds {
        p99: u.p99_threshold_ms.map_or(base.p99, ms),
        p99_window: u.p99_window_ms.map_or(base.p99_window, ms),
        error_rate: u.error_rate_threshold.unwrap_or(base.error_rate),
        error_window: u.error_window_ms.map_or(base.error_window, ms),
        ..base
    }
}

/// The primary's runbook thresholds: `[control]`'s, with the keys
/// `[upstream.primary]` writes itself.
pub fn primary_thresholds(cfg: &Config) -> Thresholds {
    own_thresholds(control_thresholds(&cfg.control), &cfg.upstream.primary)
}

/// Each named pool's runbook thresholds: `[control]`'s, with the keys the
/// pool writes itself.
pub fn pool_thresholds(cfg: &Config) -> BTreeMap<String, Thresholds> {
    let base = control_thresholds(&cfg.control);
    cfg.upstream
        .named
        .iter()
        .map(|(name, u)| (name.clone(), own_thresholds(base, u)))
        .collect()
}
