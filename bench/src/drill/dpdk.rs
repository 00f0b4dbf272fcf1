//! The drill's DPDK port fault: the runbook's "DPDK Network Failure". A
//! gateway serves on a `net_tap` DPDK port (`--no-huge`, so no hugepages
//! are needed) inside a network namespace of its own, with the origin
//! beside it; the load and the admin calls run on a thread that joins the
//! namespace. The tap link goes down: the gateway must move to its kernel
//! listener; clients, like a load balancer, try the DPDK address, then the
//! kernel one, for up to three seconds per request. Link up again,
//! `POST /admin/dataplane dpdk` brings it back.

use super::{
    decisions_since, events, get, load_between, post, wait_event, wait_port, Outcome, Proc, Sample,
};
use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DPDK: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 213, 0, 2)),
    8080,
);
const KERNEL: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 18080);
const ADMIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 18081);
const PAGE: &str = "/page?size=512&cache=max-age%3D600";

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn create(name: String) -> Result<Self, String> {
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        let ns = Self(name);
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["netns", "exec", &self.0, "ip"];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Starts `program` in the namespace, its output to `log` (or none).
    fn spawn(&self, program: &Path, args: &[&str], log: Option<&File>) -> Result<Proc, String> {
        let out = |f: Option<&File>| {
            f.and_then(|f| f.try_clone().ok())
                .map_or_else(Stdio::null, Stdio::from)
        };
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .arg(program)
            .args(args)
            .env("ULTRAGATE_LOG", "warn")
            .stdout(out(log))
            .stderr(out(log))
            .spawn()
            .map(Proc)
            .map_err(|e| format!("cannot start {}: {e}", program.display()))
    }

    /// Moves the calling thread (and the threads it starts) into the
    /// namespace.
    fn enter(&self) -> Result<(), String> {
        let f =
            std::fs::File::open(format!("/var/run/netns/{}", self.0)).map_err(|e| e.to_string())?;
        // SAFETY: a valid namespace fd; affects the calling thread only.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let ok = Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("ip: {e}"))?
        .success();
    ok.then_some(())
        .ok_or_else(|| format!("ip {} failed", args.join(" ")))
}

/// The backend `/health` names, and whether the DPDK link is up.
fn dataplane() -> (String, bool) {
    let h = get(ADMIN, "/health", Duration::from_secs(2))
        .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
        .unwrap_or_default();
    let dp = h["components"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "dataplane").cloned())
        .unwrap_or_default();
    (
        dp["backend"].as_str().unwrap_or_default().to_owned(),
        dp["dpdk_port"]["link_up"] == true,
    )
}

/// One client request as a load balancer would send it: the DPDK address,
/// else the kernel listener, retried for up to three seconds.
fn request() -> bool {
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        for addr in [DPDK, KERNEL] {
            if get(addr, PAGE, Duration::from_millis(300)).is_some_and(|(s, _)| s == 200) {
                return true;
            }
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Runs the fault with `gateway` (it needs the `dpdk` feature) and this
/// bench binary `me` as the origin; `Err` says why it could not run.
pub(super) fn run(gateway: &Path, me: &Path, log: &File) -> Result<Outcome, String> {
    // SAFETY: plain call.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root for its network namespace".into());
    }
    let id = std::process::id() % 100_000;
    let ns = Netns::create(format!("ugdrill{id}"))?;
    let tap = format!("ugd{id}");
    let config = std::env::temp_dir().join(format!("ultragate-drill-dpdk-{id}.toml"));
    std::fs::write(
        &config,
        format!(
            "[api_gateway]\nlisten = \"{KERNEL}\"\nenable_dpdk = true\n[admin]\nlisten = \"{ADMIN}\"\n\
             [upstream.primary]\nservers = [\"127.0.0.1:18000\"]\n[upstream.fallback]\nservers = [\"127.0.0.1:18000\"]\n\
             [dpdk]\neal_args = [\"--vdev=net_tap0,iface={tap}\", \"--no-pci\", \"--no-huge\", \"-m\", \"256\"]\naddress = \"10.213.0.2/24\"\nlisten_port = 8080\nlink_down_grace_ms = 500\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let _origin = ns.spawn(me, &["origin", "--listen", "127.0.0.1:18000"], None)?;
    let _gateway = ns.spawn(gateway, &["--config", &config.to_string_lossy()], Some(log))?;
    let outcome = std::thread::scope(|s| {
        s.spawn(|| -> Result<Outcome, String> {
            ns.enter()?;
            wait_port(ADMIN).map_err(|e| e.to_string())?;
            if !wait(Duration::from_secs(10), || dataplane().0 == "dpdk") {
                let why = events(ADMIN)
                    .iter()
                    .find(|e| e["trigger"] == "dpdk_start_failed")
                    .and_then(|e| e["value"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "the gateway did not serve on DPDK".into());
                return Err(why);
            }
            ns.ip(&["addr", "add", "10.213.0.1/24", "dev", &tap])?;
            ns.ip(&["link", "set", &tap, "up"])?;
            if !wait(Duration::from_secs(5), || {
                get(DPDK, PAGE, Duration::from_millis(500)).is_some()
            }) {
                return Err("no answer through the DPDK port".into());
            }
            fault(&ns, &tap)
        })
        .join()
        .unwrap_or_else(|_| Err("the drill thread panicked".into()))
    });
    let _ = std::fs::remove_file(&config);
    outcome
}

/// The fault itself, on a thread inside the namespace.
fn fault(ns: &Netns, tap: &str) -> Result<Outcome, String> {
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..2)
        .map(|_| {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    let at = Instant::now();
                    let ok = request();
                    samples
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Sample {
                            at,
                            latency: at.elapsed(),
                            ok,
                        });
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let skip = events(ADMIN).len();
    let t0 = Instant::now();
    ns.ip(&["link", "set", tap, "down"])?;
    let limit = Duration::from_secs(5);
    let acted = wait_event(ADMIN, skip, "serve on kernel networking", limit).map(|t| t - t0);
    std::thread::sleep(Duration::from_millis(500));
    ns.ip(&["link", "set", tap, "up"])?;
    wait(limit, || dataplane().1);
    post(ADMIN, "/admin/dataplane", "dpdk");
    let recovered = wait_event(ADMIN, skip, "dataplane dpdk", limit).is_some()
        && wait(limit, || dataplane().0 == "dpdk");
    std::thread::sleep(Duration::from_millis(300));
    let t1 = Instant::now();
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        let _ = l.join();
    }
    let load = load_between(&samples.lock().unwrap_or_else(|e| e.into_inner()), t0, t1);
    Ok(Outcome {
        fault: "DPDK port down (tap link)",
        detect: acted,
        act: acted,
        recovered,
        failed: load.failed,
        requests: load.requests,
        p99: load.p99,
        decisions: decisions_since(ADMIN, skip),
        why: "link_down_grace_ms = 500: the link may come back within that grace before the switch to kernel networking (no restart); back on DPDK by an operator's POST /admin/dataplane dpdk",
    })
}
