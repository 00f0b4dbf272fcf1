//! `ultragate`: the gateway binary. Reads the TOML config, starts the
//! control plane (admin API) and the data plane, and drains on SIGTERM.

mod dataplane;
mod prestop;

use anyhow::Context;
use clap::Parser;
use dataplane::{DpdkConfig, Serving};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use ultragate::config::{ms, Config, ControlSection, IoBackendName, UpstreamGroup};
use ultragate::cpus::CpuBudget;
use ultragate_control::admin::{Admin, AdminState, DataplaneSwitch};
use ultragate_control::api::AdminServer;
use ultragate_control::checks::{self, CheckConfig};
use ultragate_control::policy::Thresholds;
use ultragate_control::supervisor::{Group, Supervisor, SupervisorConfig};
use ultragate_control::timeline::{Audit, Timeline};
use ultragate_dataplane::cache::{snapshot, Cache, CacheConfig};
use ultragate_dataplane::driver::{DriverConfig, IoBackend, Shared};
use ultragate_dataplane::http::request::RequestLimits;
use ultragate_dataplane::proxy::EngineConfig;
use ultragate_dataplane::status::DataplaneStatus;
use ultragate_dataplane::upstream::health::GroupHealth;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An ultra-low-latency HTTP/1.1 gateway with a response cache and
/// built-in failover.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// The TOML configuration file; without it every key has its default.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Validate FILE and exit: 0 when valid, 1 with the offending key named.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "print_default_config"])]
    check_config: Option<PathBuf>,
    /// Print the default configuration as TOML and exit.
    #[arg(long)]
    print_default_config: bool,
    /// The preStop hook: tell the gateway running with this config to turn
    /// readiness red (it keeps serving), wait MS milliseconds, and exit.
    #[arg(long, value_name = "MS")]
    pre_stop: Option<u64>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{}", Config::default_toml());
        return std::process::ExitCode::SUCCESS;
    }
    if let Some(wait) = cli.pre_stop {
        let listen = match &cli.config {
            Some(path) => match Config::load(path) {
                Ok(cfg) => cfg.admin.listen,
                Err(e) => {
                    eprintln!("pre-stop: {}: {e}", path.display());
                    Config::default().admin.listen
                }
            },
            None => Config::default().admin.listen,
        };
        let target = prestop::admin_target(listen);
        return match prestop::run(target, Duration::from_millis(wait)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(_) => std::process::ExitCode::FAILURE,
        };
    }
    if let Some(path) = &cli.check_config {
        return match Config::load(path) {
            Ok(_) => {
                println!("{}: valid", path.display());
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                std::process::ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ULTRAGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(&cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let cfg = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let (primary, fallback) = (&cfg.upstream.primary, &cfg.upstream.fallback);
    let primary_addrs = Config::resolve(primary, "upstream.primary.servers")?;
    let fallback_addrs = Config::resolve(fallback, "upstream.fallback.servers")?;
    let engine = Arc::new(EngineConfig {
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
        // Every primary server once, then the fallback as the last resort.
        connect_attempts: primary_addrs.len() + 1,
        default_host: primary.servers[0].as_str().to_owned(),
        coalesce_wait: ms(cfg.cache.coalesce_wait_ms),
        epoch: (std::time::Instant::now(), std::time::SystemTime::now()),
    });
    let budget = CpuBudget::detect();
    let cores = cfg.data_cores(&budget);
    let cores_from = if cfg.api_gateway.cores.is_empty() {
        budget.describe()
    } else {
        format!(
            "api_gateway.cores {:?}; {}",
            cfg.api_gateway.cores,
            budget.describe()
        )
    };
    if cores.len() < cfg.api_gateway.cores.len() {
        tracing::warn!(configured = ?cfg.api_gateway.cores, ?cores, "api_gateway.cores asks for more data threads than the CPU quota pays for; cut to the quota");
    }
    tracing::info!(?cores, from = %cores_from, "data cores");
    let driver = DriverConfig {
        listen: cfg.api_gateway.listen,
        cores: cores.clone(),
        upstreams: primary_addrs.clone(),
        fallback: fallback_addrs.clone(),
        upstream_idle_timeout: ms(primary.idle_timeout_ms),
        upstream_max_idle: primary.max_idle_per_core,
        drain_timeout: ms(cfg.api_gateway.drain_timeout_ms),
        stats_interval: ms(cfg.control.interval_ms),
        max_connections_per_core: cfg.api_gateway.max_connections_per_core,
    };

    let status = Arc::new(DataplaneStatus::default());
    let cache = cfg.cache.enabled.then(|| {
        Arc::new(
            Cache::new(CacheConfig {
                max_bytes: cfg.cache.max_bytes,
                max_object_bytes: cfg.cache.max_object_bytes,
            })
            .with_targeted_fields(&cfg.cache.targeted_fields),
        )
    });
    if let (Some(cache), true) = (&cache, cfg.cache.restore_on_start) {
        match snapshot::restore(cache, &cfg.cache.snapshot_dir) {
            Ok(r) => {
                tracing::info!(file = %r.file.display(), restored = r.restored, skipped = r.skipped, "cache restored")
            }
            Err(e) => tracing::warn!(error = %e, "cache not restored; starting empty"),
        }
    }
    let group = |g: &UpstreamGroup, addrs: &[SocketAddr]| Group {
        servers: addrs.to_vec(),
        health: Arc::new(GroupHealth::new(addrs.len(), g.eject_after_failures)),
        fast: Arc::new(AtomicBool::new(true)),
    };
    let (primary_group, fallback_group) = (
        group(primary, &primary_addrs),
        group(fallback, &fallback_addrs),
    );
    let checks = [
        ("primary", primary, &primary_group),
        ("fallback", fallback, &fallback_group),
    ]
    .map(|(name, g, grp)| {
        let cfg = CheckConfig {
            group: name,
            servers: grp.servers.clone(),
            path: g.health_path.clone(),
            interval: ms(g.health_interval_ms),
            timeout: ms(g.health_timeout_ms),
            rise: g.rise,
            fall: g.fall,
            slow: ms(cfg.control.p99_threshold_ms),
        };
        (cfg, grp.health.clone(), grp.fast.clone())
    });
    let shared_health = (primary_group.health.clone(), fallback_group.health.clone());
    let timeline = Arc::new(Timeline::default());
    let supervisor = Arc::new(Supervisor::new(
        SupervisorConfig {
            interval: ms(cfg.control.interval_ms),
            thresholds: thresholds(&cfg.control),
            memory_limit_bytes: cfg.control.memory_limit_bytes,
            verify_interval: ms(cfg.control.verify_interval_ms),
            snapshot_dir: cfg.cache.snapshot_dir.clone(),
            cores,
            cores_from,
        },
        status.clone(),
        cache.clone(),
        primary_group,
        fallback_group,
        timeline.clone(),
    ));
    let serving = Serving::new(
        status.clone(),
        timeline.clone(),
        cfg.api_gateway.listen,
        ms(cfg.dpdk.link_down_grace_ms),
    );
    let dpdk = if cfg.api_gateway.enable_dpdk {
        let (address, prefix_len) = cfg.dpdk.cidr()?;
        Some(DpdkConfig {
            eal_args: cfg.dpdk.eal_args.clone(),
            port: cfg.dpdk.port,
            address,
            prefix_len,
            gateway: cfg.dpdk.next_hop()?,
            listen_port: cfg.dpdk.listen_port,
        })
    } else {
        None
    };
    let audit_path =
        (!cfg.security.audit_log.is_empty()).then(|| PathBuf::from(&cfg.security.audit_log));
    let audit = Audit::open(audit_path.as_deref())
        .with_context(|| format!("security.audit_log {:?}", cfg.security.audit_log))?;
    let reload = {
        let (path, running, sup) = (
            cli.config.clone(),
            Arc::new(Mutex::new(cfg.clone())),
            supervisor.clone(),
        );
        Arc::new(move || reload_config(path.as_deref(), &running, &sup))
    };
    let admin = Arc::new(Admin::new(AdminState {
        supervisor: supervisor.clone(),
        audit,
        token: cfg.admin.resolve_token()?,
        isolated: AtomicBool::new(false),
        reload: Box::new({
            let reload = reload.clone();
            move || reload()
        }),
        status: status.clone(),
        config_toml: toml::to_string_pretty(&cfg.redacted()).unwrap_or_default(),
        cache: cache.clone(),
        snapshot_dir: cfg.cache.snapshot_dir.clone(),
        origins: primary_addrs.clone(),
        test_hooks: cfg.cache.test_hooks,
        dataplane: dpdk
            .is_some()
            .then(|| serving.clone() as Arc<dyn DataplaneSwitch>),
    }));
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ug-control")
        .enable_all()
        .build()
        .context("cannot start the control runtime")?;
    let server = AdminServer::bind(cfg.admin.listen, status.clone(), admin.clone())?;
    tracing::info!(addr = %cfg.admin.listen, "admin API listening");
    let (stats_tx, stats_rx) = std::sync::mpsc::channel();
    let backend = match cfg.api_gateway.io_backend {
        IoBackendName::Auto => IoBackend::Auto,
        IoBackendName::Uring => IoBackend::Uring,
        IoBackendName::Epoll => IoBackend::Epoll,
    };
    serving.start(
        dpdk.as_ref(),
        backend,
        driver,
        engine,
        Shared {
            status: status.clone(),
            cache: cache.clone(),
            admin,
            spawner: control.handle().clone(),
            primary: shared_health.0,
            fallback: shared_health.1,
            stats: stats_tx,
        },
    )?;

    let sweeper = cache.clone();
    control.block_on(async move {
        tokio::spawn(server.run());
        tokio::spawn(supervisor.run(stats_rx));
        for (cfg, health, fast) in checks {
            tokio::spawn(checks::run(cfg, health, fast, timeline.clone()));
        }
        if let Some(cache) = sweeper {
            // Apply lazy purges in the background.
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let c = cache.clone();
                    let _ = tokio::task::spawn_blocking(move || c.sweep()).await;
                }
            });
        }
        wait_for_shutdown(&*reload).await
    })?;
    tracing::info!(
        drain_timeout_ms = cfg.api_gateway.drain_timeout_ms,
        "draining"
    );
    status.set_draining();
    serving.shutdown();
    if let (Some(cache), true) = (&cache, cfg.cache.snapshot_on_shutdown) {
        match snapshot::write(cache, &cfg.cache.snapshot_dir) {
            Ok(w) => {
                tracing::info!(file = %w.file.display(), entries = w.entries, "cache snapshot written")
            }
            Err(e) => tracing::error!(error = %e, "cache snapshot failed"),
        }
    }
    tracing::info!("stopped");
    Ok(())
}

fn thresholds(c: &ControlSection) -> Thresholds {
    Thresholds {
        p99: ms(c.p99_threshold_ms),
        p99_window: ms(c.p99_window_ms),
        error_rate: c.error_rate_threshold,
        error_window: ms(c.error_window_ms),
        min_requests: c.min_requests,
        failback_hold: ms(c.failback_hold_ms),
    }
}

/// Reads the config file again; applies `[control]` at once, and names
/// the sections whose changes need a restart. A bad file changes nothing.
fn reload_config(
    path: Option<&Path>,
    running: &Mutex<Config>,
    sup: &Supervisor,
) -> Result<String, String> {
    let path = path.ok_or("started without a config file: nothing to reload")?;
    let new = Config::load(path).map_err(|e| e.to_string())?;
    let mut running = running.lock().unwrap_or_else(|e| e.into_inner());
    sup.reload(thresholds(&new.control), new.control.memory_limit_bytes);
    let old = running.clone();
    let mut restart = Vec::new();
    if new.api_gateway != old.api_gateway {
        restart.push("[api_gateway]");
    }
    if new.admin != old.admin {
        restart.push("[admin]");
    }
    if new.upstream != old.upstream {
        restart.push("[upstream]");
    }
    if new.cache != old.cache {
        restart.push("[cache]");
    }
    if new.security != old.security {
        restart.push("[security]");
    }
    running.control = new.control;
    Ok(if restart.is_empty() {
        "applied [control]".to_owned()
    } else {
        format!(
            "applied [control]; these need a restart: {}",
            restart.join(", ")
        )
    })
}

/// Resolves on SIGTERM or SIGINT; SIGHUP reloads the config.
async fn wait_for_shutdown(
    reload: &(dyn Fn() -> Result<String, String> + Send + Sync),
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received"); return Ok(()); }
            _ = int.recv() => { tracing::info!("SIGINT received"); return Ok(()); }
            _ = hup.recv() => match reload() {
                Ok(applied) => tracing::info!(applied, "SIGHUP: config reloaded"),
                Err(error) => tracing::error!(error, "SIGHUP: config not reloaded; the running config stays"),
            },
        }
    }
}
