//! `ultragate`: the gateway binary. Reads the TOML config, starts the
//! control plane (admin API) and the data plane, and drains on SIGTERM.

mod build;
mod dataplane;
mod prestop;
mod reload;

use anyhow::Context;
use clap::Parser;
use dataplane::{DpdkConfig, Serving};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use ultragate::config::{ms, Config, IoBackendName, LogFormat, LogSection};
use ultragate::cpus::CpuBudget;
use ultragate::netstatus;
use ultragate_control::admin::{Admin, AdminSettings, AdminState, DataplaneSwitch};
use ultragate_control::api::AdminServer;
use ultragate_control::audit::Audit;
use ultragate_control::executor::events::{self, Event};
use ultragate_control::notify::Notifier;
use ultragate_control::supervisor::{Supervisor, SupervisorConfig};
use ultragate_control::timeline::Timeline;
use ultragate_control::tls::TlsControl;
use ultragate_dataplane::access::AccessLog;
use ultragate_dataplane::cache::{snapshot, Cache, CacheConfig};
use ultragate_dataplane::driver::{DriverConfig, IoBackend, Shared};
use ultragate_dataplane::live::Live;
use ultragate_dataplane::status::DataplaneStatus;
use ultragate_dataplane::tls::TlsServer;

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
    // The config first, so that the log takes its format from it.
    let (cfg, provenance) = match &cli.config {
        Some(path) => match Config::load_files(path) {
            Ok(loaded) => (loaded.config.clone(), loaded.provenance()),
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return std::process::ExitCode::FAILURE;
            }
        },
        None => (Config::default(), String::new()),
    };
    let set_log_level = init_log(&cfg.log);
    match run(&cli, cfg, &provenance, set_log_level) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The process log on stderr: the filter reloadable (`[log] level`, which
/// `ULTRAGATE_LOG` overrides at start), JSON or text lines as `[log]
/// format` says, ANSI colours only on a terminal. Returns what sets the
/// level on a reload.
fn init_log(cfg: &LogSection) -> reload::SetLogLevel {
    use std::io::IsTerminal;
    let from_env = std::env::var("ULTRAGATE_LOG").ok();
    let (filter, filter_handle) = tracing_subscriber::reload::Layer::new(
        tracing_subscriber::EnvFilter::try_new(from_env.as_deref().unwrap_or(&cfg.level))
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    );
    let terminal = std::io::stderr().is_terminal();
    let json = match cfg.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !terminal,
    };
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(terminal);
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry.with(lines.json().flatten_event(true)).init();
    } else {
        registry.with(lines).init();
    }
    Box::new(move |level: &str| {
        let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        filter_handle.reload(filter).map_err(|e| e.to_string())
    })
}

/// The kernel data ports, for the log: the plain one and the TLS one.
fn data_ports(cfg: &Config) -> String {
    let plain = cfg.api_gateway.listen.map(|a| a.to_string());
    let tls = cfg.tls.listen.map(|a| format!("{a} (TLS)"));
    [plain, tls]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" and ")
}

/// `provenance`: which drop-in set which value, for `GET /admin/config`.
fn run(
    cli: &Cli,
    cfg: Config,
    provenance: &str,
    set_log_level: reload::SetLogLevel,
) -> anyhow::Result<()> {
    let epoch = (std::time::Instant::now(), std::time::SystemTime::now());
    let pools = build::pool_specs(&cfg, None).map_err(anyhow::Error::msg)?;
    let primary_addrs = pools[0].servers.clone();
    let access = Arc::new(AccessLog::new());
    build::configure_access(&access, &cfg);
    let engine = Arc::new(build::engine_config(&cfg, &pools, epoch, &access));
    let live = Arc::new(Live::with_pools(engine, pools));
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
        tls_listen: cfg.tls.listen,
        cores: cores.clone(),
        drain_timeout: ms(cfg.api_gateway.drain_timeout_ms),
        stats_interval: ms(cfg.control.interval_ms),
        max_connections_per_core: cfg.api_gateway.max_connections_per_core,
        max_connections_per_client: cfg.api_gateway.max_connections_per_client,
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
    let timeline = Arc::new(Timeline::default());
    let supervisor = Arc::new(Supervisor::new(
        SupervisorConfig {
            interval: ms(cfg.control.interval_ms),
            thresholds: build::primary_thresholds(&cfg),
            pool_thresholds: build::pool_thresholds(&cfg),
            memory_limit_bytes: cfg.control.memory_limit_bytes,
            verify_interval: ms(cfg.control.verify_interval_ms),
            snapshot_dir: cfg.cache.snapshot_dir.clone(),
            cores,
            cores_from,
            core_stall: ms(cfg.control.core_stall_ms.max(1)),
        },
        status.clone(),
        cache.clone(),
        live.clone(),
        timeline.clone(),
    ));
    supervisor
        .metrics
        .set_build_info(env!("CARGO_PKG_VERSION"), cfg!(feature = "dpdk"));
    supervisor.watch_access_log(access.clone());
    // Decisions to the webhook: queued by the timeline, sent by a task of
    // the control runtime (started below).
    let (notifier, notify_task) = Notifier::new(
        supervisor.metrics.webhook_counts(),
        Box::new({
            let timeline = timeline.clone();
            move |action: &str, why: &str| {
                events::record(&timeline, None, Event::NotifyFailed { action, why })
            }
        }),
    );
    notifier.configure(build::notify_config(&cfg)?);
    timeline.notify_to(notifier.clone());
    for pool in live.load().pools() {
        if let Some(why) = &pool.unresolved {
            tracing::warn!(pool = %pool.name, reason = %why, "server names did not resolve; retrying");
            supervisor.record(Event::DnsUnresolved {
                pool: &pool.name,
                why,
                servers: pool.servers.len(),
            });
        }
    }
    let tls = match cfg.tls.listen {
        Some(addr) => {
            let server = Arc::new(TlsServer::new(&cfg.tls.settings())?);
            tracing::info!(%addr, certificates = server.certificates().len(), "TLS listener configured");
            let tls = Arc::new(TlsControl::new(server.clone()));
            supervisor.set_tls(tls.clone());
            Some((server, tls))
        }
        None => None,
    };
    let serving = Serving::new(
        supervisor.clone(),
        data_ports(&cfg),
        ms(cfg.dpdk.link_down_grace_ms),
    );
    // The DPDK port's config, or why it cannot have one (the pod's own
    // address unreadable: serve on the kernel and say so).
    let dpdk = if cfg.api_gateway.enable_dpdk {
        // `address`, or with `address_file` the subnet the pod's own lies in.
        let (configured, prefix_len) = cfg.dpdk.cidr()?;
        let gateway = cfg.dpdk.next_hop()?;
        let address = if cfg.dpdk.address_file.is_empty() {
            Ok(configured)
        } else {
            netstatus::own_address(
                Path::new(&cfg.dpdk.address_file),
                &cfg.dpdk.network,
                configured,
                prefix_len,
            )
            .map_err(|e| format!("the pod's own address (dpdk.address_file): {e}"))
        };
        Some(address.map(|address| {
            tracing::info!(%address, prefix_len, "DPDK address");
            DpdkConfig {
                eal_args: cfg.dpdk.eal_args.clone(),
                port: cfg.dpdk.port,
                address,
                prefix_len,
                gateway,
                listen_port: cfg.dpdk.listen_port,
                tls_listen_port: cfg.tls.listen.map(|a| a.port()),
            }
        }))
    } else {
        None
    };
    let audit = Arc::new(
        Audit::open(&build::audit_sink(&cfg.security))
            .with_context(|| format!("security.audit_log {:?}", cfg.security.audit_log))?,
    );
    let admin_settings = Arc::new(AdminSettings::new(
        cfg.admin.resolve_token()?,
        format!(
            "{provenance}{}",
            toml::to_string_pretty(&cfg.redacted()).unwrap_or_default()
        ),
        primary_addrs,
    ));
    *admin_settings
        .hosts
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = cfg.admin.host_names();
    *admin_settings
        .loopback_trust
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = cfg.admin.loopback_trust;
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ug-control")
        .enable_all()
        .build()
        .context("cannot start the control runtime")?;
    let reloader = Arc::new(reload::Reloader::new(
        cli.config.clone(),
        cfg.clone(),
        epoch,
        reload::Targets {
            live: live.clone(),
            cache: cache.clone(),
            supervisor: supervisor.clone(),
            admin: admin_settings.clone(),
            audit: audit.clone(),
            timeline: timeline.clone(),
            set_log_level,
            access: access.clone(),
            notifier,
            runtime: control.handle().clone(),
            tls: tls.as_ref().map(|(_, t)| t.clone()),
        },
    ));
    let admin = Arc::new(Admin::new(AdminState {
        supervisor: supervisor.clone(),
        audit: audit.clone(),
        settings: admin_settings,
        reload: Box::new({
            let reloader = reloader.clone();
            move || reloader.reload("admin call")
        }),
        status: status.clone(),
        cache: cache.clone(),
        snapshot_dir: cfg.cache.snapshot_dir.clone(),
        test_hooks: cfg.cache.test_hooks == Some(true),
        dataplane: dpdk
            .is_some()
            .then(|| serving.clone() as Arc<dyn DataplaneSwitch>),
    }));
    let signals = {
        let _in_runtime = control.enter();
        Signals::install()?
    };
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
        Shared {
            status: status.clone(),
            cache: cache.clone(),
            admin,
            spawner: control.handle().clone(),
            live,
            stats: stats_tx,
            access: access.clone(),
            tls: tls.as_ref().map(|(s, _)| s.clone()),
        },
    )?;
    // The access log's writer: the file (or stdout), and the audit log
    // for every request while `[security] log_all_requests` or isolation
    // asks for it.
    let writer_stop = Arc::new(AtomicBool::new(false));
    let access_writer = access.spawn_writer(
        Box::new({
            let audit = audit.clone();
            move |line: &str| audit.write_line(line)
        }),
        writer_stop.clone(),
    )?;

    let sweeper = cache.clone();
    control.block_on(async {
        tokio::spawn(server.run());
        tokio::spawn(notify_task);
        tokio::spawn(supervisor.run(stats_rx));
        reloader.start_checks();
        tokio::spawn(reloader.clone().watch());
        tokio::spawn(reloader.clone().resolve_names());
        if let Some((_, tls)) = &tls {
            tokio::spawn(reloader.clone().watch_certificates(tls.clone()));
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
        wait_for_shutdown(signals, &reloader, &access).await
    })?;
    let running = reloader.config();
    tracing::info!(
        drain_timeout_ms = running.api_gateway.drain_timeout_ms,
        "draining"
    );
    status.set_stopping();
    serving.shutdown();
    writer_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = access_writer.join();
    if let (Some(cache), true) = (&cache, running.cache.snapshot_on_shutdown) {
        match snapshot::write(cache, &running.cache.snapshot_dir) {
            Ok(w) => {
                tracing::info!(file = %w.file.display(), entries = w.entries, "cache snapshot written")
            }
            Err(e) => tracing::error!(error = %e, "cache snapshot failed"),
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// The signals the gateway acts on, watched from before the data plane
/// starts (a SIGTERM right after the listeners open still drains).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; inside the control runtime's context.
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot watch SIGHUP")?,
            usr1: signal(SignalKind::user_defined1()).context("cannot watch SIGUSR1")?,
        })
    }
}

/// Resolves on SIGTERM or SIGINT; SIGHUP reloads the config, SIGUSR1
/// reopens the access log (after logrotate moved it).
async fn wait_for_shutdown(
    signals: Signals,
    reloader: &Arc<reload::Reloader>,
    access: &AccessLog,
) -> anyhow::Result<()> {
    let Signals {
        mut term,
        mut int,
        mut hup,
        mut usr1,
    } = signals;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received"); return Ok(()); }
            _ = int.recv() => { tracing::info!("SIGINT received"); return Ok(()); }
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1: reopening the access log");
                access.reopen();
            }
            _ = hup.recv() => match reloader.reload("SIGHUP") {
                Ok(r) => tracing::info!(applied = ?r.applied, needs_restart = ?r.needs_restart, "SIGHUP: config reloaded"),
                Err(error) => tracing::error!(error, "SIGHUP: config not reloaded; the running config stays"),
            },
        }
    }
}
