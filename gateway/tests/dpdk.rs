//! The DPDK data plane end to end, inside a network namespace the test
//! creates: the gateway, the origin and the client all run in it; the
//! gateway's DPDK port is a `net_tap` vdev whose kernel side (10.213.0.1)
//! the client uses, so every request crosses DPDK and smoltcp (HTTPS too,
//! terminated in the per-core layer over smoltcp). Then the
//! runbook's "DPDK Network Failure": the tap link goes down, the gateway
//! moves to the kernel listener; `POST /admin/dataplane dpdk` after
//! link-up brings it back. Last, a start with no hugepages serves on
//! kernel networking and says why. Needs root and hugepages
//! (`hugepages-setup.sh`, run by the README's test command).

#![cfg(feature = "dpdk")]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// The per-core connection limit the over-limit step fills.
const LIMIT: usize = 500;

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["ip"];
        all.extend_from_slice(args);
        let ok = self.cmd(&all).status().unwrap().success();
        assert!(ok, "ip {args:?} failed");
    }

    /// curl in the namespace: the output.
    fn curl(&self, args: &[&str]) -> String {
        let out = self
            .cmd(&["curl", "-sS", "--max-time", "5"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn spawn(&self, name: &'static str, args: &[&str], log: Option<&std::path::Path>) -> Proc {
        let mut c = self.cmd(args);
        c.stdout(Stdio::null()).env("ULTRAGATE_LOG", "info");
        if let Some(log) = log {
            c.stderr(std::fs::File::create(log).unwrap());
        }
        Proc {
            child: c.spawn().unwrap(),
            name,
        }
    }
}

impl Netns {
    /// Runs `support/limit_client.py` in the namespace (see
    /// `tests/limits.rs`): the answers it got and the head of the answer
    /// to the connection over the limit.
    fn limit_client(&self, host: &str, port: &str, tls: Option<(&str, &str)>) -> serde_json::Value {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/limit_client.py");
        let count = LIMIT.to_string();
        let mut args = vec!["timeout", "120", "python3", script, host, port, &count];
        if let Some((ca, name)) = tls {
            args.extend([ca, name]);
        }
        let out = self.cmd(&args).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "limit client: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Holds a request to `url` (which the origin answers late), sends
    /// `gw` SIGTERM: how long until the held connection was cut, the
    /// gateway's exit code, and how long until it exited.
    fn held_request_cut_by(&self, gw: &mut Proc, url: &str) -> (Duration, Option<i32>, Duration) {
        let mut held = self
            .cmd(&["curl", "-sS", "--max-time", "20", url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let term = Instant::now();
        gw.signal(libc::SIGTERM);
        let mut cut = None;
        let end = term + Duration::from_secs(15);
        while cut.is_none() && Instant::now() < end {
            if let Ok(Some(_)) = held.try_wait() {
                cut = Some(term.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = held.kill();
        let _ = held.wait();
        let code = gw.wait_exit(Duration::from_secs(15));
        let exited = term.elapsed();
        (cut.unwrap_or(exited), code, exited)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(args: &[&str]) {
    let ok = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap()
        .success();
    assert!(ok, "{args:?} failed");
}

/// The dataplane component of `/health`.
fn dataplane(ns: &Netns, admin: &str) -> serde_json::Value {
    let h = ns.curl(&[&format!("http://{admin}/health")]);
    let h: serde_json::Value = serde_json::from_str(&h).unwrap_or_default();
    h["components"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "dataplane").cloned())
        .unwrap_or_default()
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Two data cores (two queue pairs on the tap, a stack on each) when the
/// machine has them; HTTPS on port 18443 (on the DPDK port and on the
/// kernel's fallback listener) with the certificate in `tls_dir`. The
/// port's address (10.213.0.2) comes as the DPDK overlay's pods get theirs:
/// from Multus' network-status annotation, a file in `tls_dir` here.
fn config(tap: &str, extra_eal: &str, tls_dir: &std::path::Path, keys: &str) -> String {
    let status = tls_dir.join("network-status");
    std::fs::write(
        &status,
        r#"[{"name":"k8s-pod-network","interface":"eth0","ips":["10.244.1.5"],"default":true},
           {"name":"ultragate/sriov-dpdk","interface":"net1","ips":["10.213.0.2"],"default":false}]"#,
    )
    .unwrap();
    let status = status.display();
    let n = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    let cores = match keys.contains("cores") {
        true => String::new(),
        false => {
            let list = (0..n).map(|c| c.to_string()).collect::<Vec<_>>();
            format!("cores = [{}]\n", list.join(", "))
        }
    };
    let t = tls_dir.display();
    format!(
        "[api_gateway]\nlisten = \"127.0.0.1:18080\"\nenable_dpdk = true\n{cores}drain_timeout_ms = 1000\n{keys}\n[admin]\nlisten = \"127.0.0.1:18081\"\n\n[upstream.primary]\nservers = [\"127.0.0.1:18000\"]\n\n[dpdk]\neal_args = [\"--vdev=net_tap0,iface={tap}\", \"--no-pci\"{extra_eal}]\naddress = \"10.213.0.0/24\"\naddress_file = \"{status}\"\nlisten_port = 8080\nlink_down_grace_ms = 500\n\n\
         [tls]\nlisten = \"127.0.0.1:18443\"\n[[tls.certificate]]\ncert_file = \"{t}/tls.crt\"\nkey_file = \"{t}/tls.key\"\n"
    )
}

/// A self-signed certificate for `dpdk.test` in `dir` (`tls.crt`,
/// `tls.key`), made here.
fn certificate(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["dpdk.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
}

#[test]
fn serves_through_dpdk_falls_back_to_the_kernel_and_returns() {
    let id = std::process::id() % 100_000;
    let ns = Netns::new(format!("ugdpdk{id}"));
    let tap = format!("ugt{id}");
    let dir = std::env::temp_dir();
    let cfg = dir.join(format!("ultragate-dpdk-{id}.toml"));
    let tls_dir = dir.join(format!("ultragate-dpdk-tls-{id}"));
    certificate(&tls_dir);
    std::fs::write(&cfg, config(&tap, "", &tls_dir, "")).unwrap();
    let cacert = tls_dir.join("tls.crt").display().to_string();
    // HTTPS to `addr:18443` as `dpdk.test`, trusting the certificate.
    let https = |addr: &str, path: &str| {
        ns.curl(&[
            "-i",
            "--cacert",
            &cacert,
            "--resolve",
            &format!("dpdk.test:18443:{addr}"),
            // The cache key the plain requests used.
            "-H",
            "Host: 10.213.0.2:8080",
            &format!("https://dpdk.test:18443{path}"),
        ])
    };
    let bench = bench_bin();
    let _origin = ns.spawn(
        "origin",
        &[
            bench.to_str().unwrap(),
            "origin",
            "--listen",
            "127.0.0.1:18000",
        ],
        None,
    );
    let log = dir.join(format!("ultragate-dpdk-{id}.log"));
    let _gw = ns.spawn(
        "ultragate",
        &[
            env!("CARGO_BIN_EXE_ultragate"),
            "--config",
            cfg.to_str().unwrap(),
        ],
        Some(&log),
    );
    let admin = "127.0.0.1:18081";
    assert!(
        wait_until(Duration::from_secs(20), || dataplane(&ns, admin)["backend"]
            == "dpdk"),
        "not serving on DPDK: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The tap's kernel side is the client's network.
    ns.ip(&["addr", "add", "10.213.0.1/24", "dev", &tap]);
    ns.ip(&["link", "set", &tap, "up"]);
    let url = "http://10.213.0.2:8080/page?cache=max-age%3D60";
    let miss = ns.curl(&["-i", url]);
    assert!(miss.starts_with("HTTP/1.1 200"), "{miss}");
    assert!(miss.contains("X-Cache: MISS"), "{miss}");
    assert!(miss.ends_with(&"x".repeat(64)), "the body arrives whole");
    // Fresh connections spread over the queues (RSS); every core's stack
    // answers, from the one cache.
    for _ in 0..12 {
        let hit = ns.curl(&["-i", url]);
        assert!(hit.contains("X-Cache: HIT"), "{hit}");
    }
    // HTTPS on the DPDK port: rustls in the per-core layer over smoltcp,
    // the same cache (the scheme is in the key: a miss, then hits).
    for i in 0..4 {
        let answer = https("10.213.0.2", "/page?cache=max-age%3D60");
        let want = if i == 0 {
            "X-Cache: MISS"
        } else {
            "X-Cache: HIT"
        };
        assert!(answer.contains(want), "{answer}");
    }
    // The port is sampled every 100 ms.
    assert!(wait_until(Duration::from_secs(2), || {
        dataplane(&ns, admin)["dpdk_port"]["rx_packets"].as_u64() > Some(0)
    }));
    let dp = dataplane(&ns, admin);
    assert_eq!(dp["dpdk_port"]["link_up"], true, "{dp}");
    assert!(
        dp["dpdk_port"]["hugepages_total"].as_u64().unwrap() > 0,
        "{dp}"
    );
    let metrics = ns.curl(&[&format!("http://{admin}/metrics")]);
    assert!(metrics.contains("ultragate_dpdk_port{port=\"0\",stat=\"link_up\"} 1"));
    assert!(metrics.contains("ultragate_dataplane_backend{backend=\"dpdk\"} 1"));

    // The port dies: kernel networking within the grace period + 1 s.
    let down = Instant::now();
    ns.ip(&["link", "set", &tap, "down"]);
    assert!(
        wait_until(Duration::from_millis(1500), || dataplane(&ns, admin)
            ["backend"]
            != "dpdk"),
        "still on DPDK {:?} after the link went down",
        down.elapsed()
    );
    let dp = dataplane(&ns, admin);
    assert!(
        matches!(dp["backend"].as_str(), Some("io_uring" | "epoll")),
        "{dp}"
    );
    assert_eq!(dp["ready"], true, "readiness stays green");
    assert_eq!(dp["dpdk_port"]["link_up"], false);
    // Same host, same key: the kernel path answers from the same cache.
    let kernel = ns.curl(&[
        "-i",
        "-H",
        "Host: 10.213.0.2:8080",
        "http://127.0.0.1:18080/page?cache=max-age%3D60",
    ]);
    assert!(kernel.starts_with("HTTP/1.1 200"), "{kernel}");
    assert!(
        kernel.contains("X-Cache: HIT"),
        "the cache is the same: {kernel}"
    );
    // HTTPS moved too: the kernel's TLS listener, the same certificate.
    let kernel_tls = https("127.0.0.1", "/page?cache=max-age%3D60");
    assert!(kernel_tls.contains("X-Cache: HIT"), "{kernel_tls}");
    let events = ns.curl(&[&format!("http://{admin}/admin/events")]);
    assert!(events.contains("dpdk_link_down"), "{events}");
    assert!(
        events.contains("serve on kernel networking") && events.contains(" at 127.0.0.1:18080"),
        "{events}"
    );

    // While the link is down, asking for DPDK is refused with the reason.
    let refused = ns.curl(&[
        "-X",
        "POST",
        "--json",
        "dpdk",
        &format!("http://{admin}/admin/dataplane"),
    ]);
    assert!(refused.contains("link is down"), "{refused}");
    // Link up, then back to DPDK by the runbook's command.
    ns.ip(&["link", "set", &tap, "up"]);
    assert!(wait_until(Duration::from_secs(5), || {
        dataplane(&ns, admin)["dpdk_port"]["link_up"] == true
    }));
    let back = ns.curl(&[
        "-X",
        "POST",
        "--json",
        "dpdk",
        &format!("http://{admin}/admin/dataplane"),
    ]);
    assert!(back.contains("\"dataplane\":\"dpdk\""), "{back}");
    let again = ns.curl(&["-i", url]);
    assert!(again.contains("X-Cache: HIT"), "{again}");
    assert_eq!(dataplane(&ns, admin)["backend"], "dpdk");
    drop(_gw);

    // One core with a limit of 500: over DPDK too, the 501st connection
    // gets the 503, plain and TLS; then a drain gives up at its bound.
    let keys = format!(
        "cores = [0]\nmax_connections_per_core = {LIMIT}\nmax_connections_per_client = {LIMIT}\n"
    );
    std::fs::write(&cfg, config(&tap, "", &tls_dir, &keys)).unwrap();
    let log1 = dir.join(format!("ultragate-dpdk-limit-{id}.log"));
    let mut gw = ns.spawn(
        "ultragate",
        &[
            env!("CARGO_BIN_EXE_ultragate"),
            "--config",
            cfg.to_str().unwrap(),
        ],
        Some(&log1),
    );
    assert!(
        wait_until(Duration::from_secs(20), || dataplane(&ns, admin)["backend"]
            == "dpdk"),
        "not serving on DPDK: {}",
        std::fs::read_to_string(&log1).unwrap_or_default()
    );
    // A new gateway, a new tap: its kernel side set up again.
    ns.ip(&["addr", "add", "10.213.0.1/24", "dev", &tap]);
    ns.ip(&["link", "set", &tap, "up"]);
    assert!(wait_until(Duration::from_secs(5), || ns.curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        url
    ]) == "200"));
    for (port, tls) in [("8080", false), ("18443", true)] {
        let got = ns.limit_client("10.213.0.2", port, tls.then_some((&cacert, "dpdk.test")));
        assert_eq!(got["served"], LIMIT, "DPDK {port}: {got}");
        let over = got["over"].as_str().unwrap_or("");
        assert!(over.starts_with("HTTP/1.1 503"), "DPDK {port}: {over}");
        assert!(over.contains("\r\nRetry-After: 1"), "{over}");
    }
    let cut = ns.held_request_cut_by(&mut gw, "http://10.213.0.2:8080/slow?delay_ms=30000");
    assert!(
        cut.0 >= Duration::from_millis(900),
        "DPDK: cut before the drain timeout: {cut:?}"
    );
    assert_eq!(cut.1, Some(0), "DPDK: a clean exit");
    assert!(
        cut.2 < Duration::from_secs(8),
        "DPDK: exited {:?} after SIGTERM",
        cut.2
    );
    drop(gw);

    // A start with no hugepages: kernel networking, and the log says why.
    let pages = "/proc/sys/vm/nr_hugepages";
    let reserved = std::fs::read_to_string(pages).unwrap();
    std::fs::write(pages, "0").unwrap();
    let log2 = dir.join(format!("ultragate-dpdk-nohuge-{id}.log"));
    let gw = ns.spawn(
        "ultragate",
        &[
            env!("CARGO_BIN_EXE_ultragate"),
            "--config",
            cfg.to_str().unwrap(),
        ],
        Some(&log2),
    );
    let served = wait_until(Duration::from_secs(20), || {
        ns.curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://127.0.0.1:18080/",
        ]) == "200"
    });
    let backend = dataplane(&ns, admin)["backend"].clone();
    drop(gw);
    std::fs::write(pages, reserved.trim()).unwrap();
    let text = std::fs::read_to_string(&log2).unwrap();
    assert!(served, "no kernel data plane without hugepages:\n{text}");
    assert!(
        matches!(backend.as_str(), Some("io_uring" | "epoll")),
        "{backend}"
    );
    let line = text
        .lines()
        .find(|l| l.contains("DPDK unavailable"))
        .unwrap_or_else(|| panic!("no reason in the log:\n{text}"));
    // "reserved" when the pages were gone at once, "free" while the first
    // gateway's pages were still being given back.
    assert!(
        line.contains("no hugepages are reserved") || line.contains("no hugepages are free"),
        "{line}"
    );
}
