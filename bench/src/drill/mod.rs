//! `bench drill`: the failover drill. Starts the gateway, the test origin
//! and the Node.js fallback, keeps a constant load on the gateway, and
//! injects faults in turn: primary killed, primary slowed, a cache entry
//! corrupted, memory pressure, and (as root, with a DPDK build of the
//! gateway) the DPDK port's link going down ([`dpdk`]). For each it reports
//! the time to detect and to act (from the gateway's own event timeline),
//! the requests that failed, the p99 during the fault, and the decisions
//! taken. Exits non-zero when a fault is not handled.

mod dpdk;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Options of `bench drill`.
#[derive(clap::Args, Debug, Clone)]
pub struct DrillArgs {
    /// The gateway binary.
    #[arg(long, default_value = "target/release/ultragate")]
    gateway: PathBuf,
    /// The Node.js fallback service.
    #[arg(long, default_value = "deploy/nodejs-api/server.js")]
    nodejs: PathBuf,
    /// First of the loopback ports the drill uses (four in a row); below
    /// the kernel's ephemeral range, so no outgoing connection holds them.
    #[arg(long, default_value_t = 21800)]
    base_port: u16,
    /// Requests per second of the background load.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Where the drill's gateways write their logs (default: a file in
    /// the temp dir, named at the end), so none interleave with the table.
    #[arg(long)]
    log: Option<PathBuf>,
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One answered (or failed) request of the background load.
struct Sample {
    at: Instant,
    latency: Duration,
    ok: bool,
}

fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Option<(u16, String)> {
    get_from(None, addr, path, timeout)
}

/// A GET from source address `from` (the kernel's choice when none).
fn get_from(
    from: Option<[u8; 4]>,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Option<(u16, String)> {
    let mut s = match from {
        None => TcpStream::connect_timeout(&addr, timeout).ok()?,
        Some(ip) => {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
            s.bind(&SocketAddr::from((ip, 0)).into()).ok()?;
            s.connect_timeout(&addr.into(), timeout).ok()?;
            s.into()
        }
    };
    s.set_read_timeout(Some(timeout)).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: drill\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

fn post(addr: SocketAddr, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!("POST {path} HTTP/1.1\r\nHost: drill\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    Some((
        text.get(9..12)?.parse().ok()?,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    ))
}

fn wait_port(addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..400 {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!("nothing listens on {addr}")
}

/// The events in the gateway's timeline, as JSON values.
fn events(admin: SocketAddr) -> Vec<serde_json::Value> {
    get(admin, "/admin/events", Duration::from_secs(2))
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
        .and_then(|v| v["events"].as_array().cloned())
        .unwrap_or_default()
}

/// Waits for an event with `action` after the first `skip` events; returns
/// when it was seen.
fn wait_event(admin: SocketAddr, skip: usize, action: &str, limit: Duration) -> Option<Instant> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if events(admin)
            .iter()
            .skip(skip)
            .any(|e| e["action"].as_str().is_some_and(|a| a.starts_with(action)))
        {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// What the background load saw during a fault.
struct Load {
    requests: usize,
    failed: usize,
    p99: Duration,
}

/// The requests started between `t0` and `t1`.
fn load_between(samples: &[Sample], t0: Instant, t1: Instant) -> Load {
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= t0 && s.at <= t1)
        .collect();
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    for s in &window {
        h.saturating_record(s.latency.as_micros() as u64);
    }
    Load {
        requests: window.len(),
        failed: window.iter().filter(|s| !s.ok).count(),
        p99: Duration::from_micros(h.value_at_quantile(0.99)),
    }
}

/// The actions the gateway took after its first `skip` events.
fn decisions_since(admin: SocketAddr, skip: usize) -> Vec<String> {
    events(admin)
        .iter()
        .skip(skip)
        .filter_map(|e| e["action"].as_str().map(str::to_owned))
        .collect()
}

/// One fault's outcome.
struct Outcome {
    fault: &'static str,
    detect: Option<Duration>,
    act: Option<Duration>,
    recovered: bool,
    failed: usize,
    requests: usize,
    p99: Duration,
    decisions: Vec<String>,
    /// What the times are made of (checks, windows, grace periods).
    why: &'static str,
}

/// Runs the drill; prints the table; fails when a fault is not handled.
pub fn run(args: DrillArgs) -> anyhow::Result<()> {
    let p = args.base_port;
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let (origin, node, data, admin) = (addr(p), addr(p + 1), addr(p + 2), addr(p + 3));
    let me = std::env::current_exe()?;
    let start_origin = |extra: &[&str]| -> anyhow::Result<Proc> {
        let child = Command::new(&me)
            .args(["origin", "--listen", &origin.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()?;
        wait_port(origin)?;
        Ok(Proc(child))
    };
    let origin_proc = std::cell::RefCell::new(Some(start_origin(&[])?));
    let _node = Proc(
        Command::new("node")
            .arg(&args.nodejs)
            .env("PORT", node.port().to_string())
            .env("HOST", "127.0.0.1")
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start node")?,
    );
    wait_port(node)?;
    let config_path =
        std::env::temp_dir().join(format!("ultragate-drill-{}.toml", std::process::id()));
    let config = |memory_limit: u64| {
        format!(
            "[api_gateway]\nlisten = \"{data}\"\n[admin]\nlisten = \"{admin}\"\n\
             [upstream.primary]\nservers = [\"{origin}\"]\nhealth_interval_ms = 100\nhealth_timeout_ms = 300\neject_after_failures = 1\nresponse_timeout_ms = 2000\n\
             [upstream.fallback]\nservers = [\"{node}\"]\nhealth_interval_ms = 100\n\
             [cache]\ntest_hooks = true\nsnapshot_dir = \"{}\"\n\
             [control]\ninterval_ms = 100\np99_threshold_ms = 20\np99_window_ms = 1000\nmin_requests = 10\nfailback_hold_ms = 1500\nverify_interval_ms = 250\nmemory_limit_bytes = {memory_limit}\n",
            std::env::temp_dir().join("ultragate-drill-snapshots").display()
        )
    };
    std::fs::write(&config_path, config(0))?;
    let log_path = args.log.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ultragate-drill-{}.log", std::process::id()))
    });
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot write {}", log_path.display()))?;
    let _gateway = Proc(
        Command::new(&args.gateway)
            .args(["--config", config_path.to_str().unwrap_or_default()])
            .env("ULTRAGATE_LOG", "warn")
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .spawn()
            .with_context(|| format!("cannot start {}", args.gateway.display()))?,
    );
    wait_port(data)?;
    wait_port(admin)?;

    // Background load, as many clients make it: four source addresses in
    // 127.0.0.0/8, each asking in turn for a cacheable page and one of
    // four uncacheable API paths (a failure of everyone's requests, not
    // one client's, is what the runbook acts on).
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let pause = Duration::from_secs_f64(4.0 / f64::from(args.rate.max(4)));
    let loaders: Vec<_> = (0..4u8)
        .map(|i| {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                let page = "/page?size=512&cache=max-age%3D600";
                let api = [
                    "/api/a?size=256",
                    "/api/b?size=256",
                    "/api/c?size=256",
                    "/api/d?size=256",
                ];
                let from = [127, 0, 0, 11 + i];
                let end = Instant::now() + Duration::from_secs(120);
                let mut k = usize::from(i);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    let t = Instant::now();
                    let path = if k % 2 == 0 { page } else { api[(k / 2) % 4] };
                    let ok = get_from(Some(from), data, path, Duration::from_secs(5))
                        .is_some_and(|(s, _)| s == 200);
                    samples
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Sample {
                            at: t,
                            latency: t.elapsed(),
                            ok,
                        });
                    k += 1;
                    std::thread::sleep(pause.saturating_sub(t.elapsed()));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));

    let mut outcomes = Vec::new();
    let limit = Duration::from_secs(10);
    let mut fault = |name: &'static str,
                     why: &'static str,
                     inject: &mut dyn FnMut() -> anyhow::Result<()>,
                     detect: &str,
                     act: &str,
                     recover: &mut dyn FnMut() -> anyhow::Result<()>,
                     recovered_by: &str|
     -> anyhow::Result<()> {
        let skip = events(admin).len();
        let t0 = Instant::now();
        inject()?;
        let detected = wait_event(admin, skip, detect, limit).map(|t| t - t0);
        let acted = wait_event(admin, skip, act, limit).map(|t| t - t0);
        recover()?;
        let recovered = wait_event(admin, skip, recovered_by, limit).is_some();
        std::thread::sleep(Duration::from_millis(300));
        let t1 = Instant::now();
        let load = load_between(&samples.lock().unwrap_or_else(|e| e.into_inner()), t0, t1);
        outcomes.push(Outcome {
            fault: name,
            detect: detected,
            act: acted,
            recovered,
            failed: load.failed,
            requests: load.requests,
            p99: load.p99,
            decisions: decisions_since(admin, skip),
            why,
        });
        Ok(())
    };

    fault(
        "primary killed",
        "connect failures eject the server at once (eject_after_failures = 1) and the next control round (interval_ms = 100) diverts; idempotent requests in flight are retried on the fallback",
        &mut || {
            origin_proc.replace(None);
            Ok(())
        },
        "divert to fallback",
        "divert to fallback",
        &mut || {
            std::thread::sleep(Duration::from_millis(500));
            origin_proc.replace(Some(start_origin(&[])?));
            Ok(())
        },
        "fail back to primary",
    )?;
    fault(
        "primary slowed (60 ms)",
        "P99 over p99_threshold_ms = 20 for p99_window_ms = 1000, from four clients over four API paths (or corroborated by the health probe's own latency), then the next control round",
        &mut || {
            get(origin, "/__origin/delay?ms=60", Duration::from_secs(2));
            Ok(())
        },
        "divert to fallback",
        "divert to fallback",
        &mut || {
            get(origin, "/__origin/delay?ms=0", Duration::from_secs(2));
            Ok(())
        },
        "fail back to primary",
    )?;
    fault(
        "cache entry corrupted",
        "the background verify runs every verify_interval_ms = 250: found on its next pass, then bypass, snapshot restore and a clean verify",
        &mut || {
            post(
                admin,
                "/admin/cache/corrupt",
                "/page?size=512&cache=max-age%3D600",
            );
            Ok(())
        },
        "bypass cache",
        "restore last good snapshot",
        &mut || Ok(()),
        "serve from cache again",
    )?;
    let rss = get(admin, "/health", Duration::from_secs(2))
        .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["components"][0]["rss_bytes"].as_u64())
        .unwrap_or(64 << 20);
    fault(
        "memory pressure",
        "the reload lowers the limit under the RSS; the next control round (100 ms) sees 97 %+ and clears; the reload that raises it resumes inserts at once",
        &mut || {
            // A limit just under what the process uses now, applied live.
            std::fs::write(&config_path, config(rss * 100 / 97))?;
            post(admin, "/admin/config/reload", "");
            Ok(())
        },
        "clear cache",
        "clear cache",
        &mut || {
            std::fs::write(&config_path, config(rss * 10))?;
            post(admin, "/admin/config/reload", "");
            Ok(())
        },
        "resume cache inserts",
    )?;
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        let _ = l.join();
    }
    let _ = std::fs::remove_file(&config_path);
    let dpdk_not_run = match dpdk::run(&args.gateway, &me, &log) {
        Ok(o) => {
            outcomes.push(o);
            None
        }
        Err(why) => Some(why),
    };

    println!("| fault | detected after | acted after | recovered | failed requests | p99 during the fault | decisions |");
    println!("| --- | ---: | ---: | --- | ---: | ---: | --- |");
    let ms =
        |d: Option<Duration>| d.map_or("never".to_owned(), |d| format!("{} ms", d.as_millis()));
    let mut handled = true;
    for o in &outcomes {
        let ok = o.act.is_some() && o.recovered && o.failed == 0;
        handled &= ok;
        println!(
            "| {} | {} | {} | {} | {} of {} | {:.1} ms | {} |",
            o.fault,
            ms(o.detect),
            ms(o.act),
            if o.recovered { "yes" } else { "no" },
            o.failed,
            o.requests,
            o.p99.as_secs_f64() * 1000.0,
            o.decisions.join("; ")
        );
    }
    if let Some(why) = dpdk_not_run {
        println!("| DPDK port down (tap link) | not run: {why} | | | | | |");
    }
    println!("\nWhat the times are made of:");
    for o in &outcomes {
        println!("- {}: {}", o.fault, o.why);
    }
    println!("gateway log: {}", log_path.display());
    if !handled {
        bail!("a fault was not handled (no action, no recovery, or failed requests)");
    }
    println!("\nevery fault handled: 0 failed requests");
    Ok(())
}
