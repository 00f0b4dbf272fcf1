//! `ultragate`: the gateway binary. Reads the TOML config, starts the
//! control plane (admin API) and the data plane, and drains on SIGTERM.

mod config;

use anyhow::Context;
use clap::Parser;
use config::{ms, Config};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use ultragate_control::admin::{Admin, AdminState};
use ultragate_control::api::AdminServer;
use ultragate_dataplane::cache::{snapshot, Cache, CacheConfig};
use ultragate_dataplane::driver::epoll::{Dataplane, DriverConfig};
use ultragate_dataplane::http::request::RequestLimits;
use ultragate_dataplane::proxy::EngineConfig;
use ultragate_dataplane::status::DataplaneStatus;

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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{}", Config::default_toml());
        return std::process::ExitCode::SUCCESS;
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
    if cfg.api_gateway.enable_dpdk {
        tracing::warn!(
            "api_gateway.enable_dpdk = true, but this build has no DPDK support; serving on kernel networking (epoll)"
        );
    }
    let primary = &cfg.upstream.primary;
    let engine = Arc::new(EngineConfig {
        limits: RequestLimits {
            max_header_bytes: cfg.api_gateway.max_header_bytes,
            max_body_bytes: cfg.api_gateway.max_body_bytes,
        },
        max_response_head_bytes: 64 * 1024,
        client_timeout: ms(cfg.api_gateway.client_timeout_ms),
        keepalive_timeout: ms(cfg.api_gateway.keepalive_timeout_ms),
        connect_timeout: ms(primary.connect_timeout_ms),
        response_timeout: ms(primary.response_timeout_ms),
        connect_attempts: primary.servers.len(),
        default_host: primary.servers[0].to_string(),
        coalesce_wait: ms(cfg.cache.coalesce_wait_ms),
        epoch: (std::time::Instant::now(), std::time::SystemTime::now()),
    });
    let driver = DriverConfig {
        listen: cfg.api_gateway.listen,
        cores: cfg.data_cores(),
        upstreams: primary.servers.clone(),
        upstream_idle_timeout: ms(primary.idle_timeout_ms),
        upstream_max_idle: primary.max_idle_per_core,
        drain_timeout: ms(cfg.api_gateway.drain_timeout_ms),
    };

    let status = Arc::new(DataplaneStatus::default());
    let cache = cfg.cache.enabled.then(|| {
        Arc::new(Cache::new(CacheConfig {
            max_bytes: cfg.cache.max_bytes,
            max_object_bytes: cfg.cache.max_object_bytes,
        }))
    });
    if let (Some(cache), true) = (&cache, cfg.cache.restore_on_start) {
        match snapshot::restore(cache, &cfg.cache.snapshot_dir) {
            Ok(r) => {
                tracing::info!(file = %r.file.display(), restored = r.restored, skipped = r.skipped, "cache restored")
            }
            Err(e) => tracing::warn!(error = %e, "cache not restored; starting empty"),
        }
    }
    let admin = Arc::new(Admin::new(AdminState {
        status: status.clone(),
        config_toml: toml::to_string_pretty(&cfg).unwrap_or_default(),
        cache: cache.clone(),
        snapshot_dir: cfg.cache.snapshot_dir.clone(),
        origins: primary.servers.clone(),
    }));
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ug-control")
        .enable_all()
        .build()
        .context("cannot start the control runtime")?;
    let server = AdminServer::bind(cfg.admin.listen, status.clone(), admin.clone())?;
    tracing::info!(addr = %cfg.admin.listen, "admin API listening");
    let dataplane = Dataplane::start(driver, engine, status.clone(), cache.clone(), admin)?;

    let sweeper = cache.clone();
    control.block_on(async move {
        tokio::spawn(server.run());
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
        wait_for_shutdown().await
    })?;
    tracing::info!(
        drain_timeout_ms = cfg.api_gateway.drain_timeout_ms,
        "draining"
    );
    status.set_draining();
    dataplane.shutdown();
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

/// Resolves on SIGTERM or SIGINT.
async fn wait_for_shutdown() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
