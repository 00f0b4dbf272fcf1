//! `bench compare --tls`: HTTPS on ultragate against nginx and HAProxy
//! with OpenSSL (Debian's), each with one worker on the same pinned core
//! and the same ECDSA P-256 certificate made here: 1 KiB cache hits over
//! keep-alive connections (req/s and server CPU per request), and new
//! connections with a full handshake each (handshakes/s and server CPU per
//! handshake). Replaces the HTTPS section of `bench/RESULTS.md`.

use crate::compare::{rate, KEEP_MARKER};
use crate::load::{run_load, LoadArgs, Report};
use crate::peers::{self, cpu_ticks, wait_port, Server};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `bench compare` passes on.
pub struct TlsCompareArgs {
    pub gateway: PathBuf,
    pub server_core: usize,
    pub client_core: usize,
    pub duration: Duration,
    pub connections: usize,
    pub out: PathBuf,
}

/// The targets and their TLS ports.
const TARGETS: [(&str, u16); 3] = [
    ("ultragate", 28443),
    ("nginx_cache", 28490),
    ("haproxy", 28492),
];

/// The section this writes in the report.
const HEADING: &str = "## HTTPS (issue 18): ultragate against nginx and HAProxy with OpenSSL";

/// A CA and a leaf for `bench.test`, both ECDSA P-256, as PEM files in
/// `dir`: `ca.pem`, `tls.crt` (leaf then CA), `tls.key`, `haproxy.pem`
/// (chain and key in one file, as HAProxy takes it).
fn certificates(dir: &Path) -> anyhow::Result<()> {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "bench CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut leaf = CertificateParams::new(vec!["bench.test".to_string()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "bench.test");
    let cert = leaf.signed_by(&key, &issuer)?;
    let chain = cert.pem() + &ca_cert.pem();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    std::fs::write(dir.join("tls.crt"), &chain)?;
    std::fs::write(dir.join("tls.key"), key.serialize_pem())?;
    std::fs::write(dir.join("haproxy.pem"), chain + &key.serialize_pem())?;
    Ok(())
}

struct Row {
    target: &'static str,
    rps: f64,
    cpu_us: f64,
    run: Report,
}

/// Runs the HTTPS comparison and writes its section of the report.
pub fn run(args: &TlsCompareArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.gateway.exists(),
        "no gateway binary at {} (cargo build --release -p ultragate)",
        args.gateway.display()
    );
    let work = std::env::temp_dir().join(format!("ultragate-compare-tls-{}", std::process::id()));
    std::fs::create_dir_all(work.join("ngx-cache"))?;
    std::process::Command::new("chmod")
        .args(["-R", "755"])
        .arg(&work)
        .status()?;
    certificates(&work)?;
    let w = work.display();
    let core = args.server_core;
    let gw_conf = format!(
            "[api_gateway]\nlisten = \"\"\ncores = [{core}]\n[admin]\nlisten = \"127.0.0.1:28481\"\n[upstream.primary]\nservers = [\"127.0.0.1:28400\"]\n\
             [tls]\nlisten = \"127.0.0.1:28443\"\n[[tls.certificate]]\ncert_file = \"{w}/tls.crt\"\nkey_file = \"{w}/tls.key\"\n"
    );
    // Session caches and tickets on everywhere; keep-alive without a
    // request limit, like ultragate's.
    let nginx_conf = format!(
            "worker_processes 1;\nworker_cpu_affinity {mask:b};\ndaemon off;\nerror_log {w}/nginx-error.log warn;\npid {w}/nginx.pid;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  keepalive_requests 10000000;\n  proxy_cache_path {w}/ngx-cache levels=1:2 keys_zone=c:10m max_size=100m inactive=60m use_temp_path=off;\n  upstream origin {{ server 127.0.0.1:28400; keepalive 64; }}\n  server {{\n    listen 127.0.0.1:28490 ssl;\n    ssl_certificate {w}/tls.crt;\n    ssl_certificate_key {w}/tls.key;\n    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_cache shared:S:10m;\n    ssl_session_tickets on;\n    location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_cache c; add_header X-Cache-Status $upstream_cache_status; }}\n  }}\n}}\n",
            mask = 1u64 << core,
    );
    let haproxy_cfg = format!("global\n  nbthread 1\n  cpu-map 1/1 {core}\n  tune.ssl.cachesize 20000\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\ncache c\n  total-max-size 256\n  max-object-size 100000\n  max-age 600\nfrontend f\n  bind 127.0.0.1:28492 ssl crt {w}/haproxy.pem alpn http/1.1\n  default_backend b\nbackend b\n  http-request cache-use c\n  http-response cache-store c\n  http-reuse always\n  server o 127.0.0.1:28400\n");
    let servers: Vec<Server> = vec![
        peers::origin(args.client_core, 28400, &work)?,
        peers::ultragate("ultragate", &args.gateway, core, &gw_conf, &work)?,
        peers::nginx("nginx_cache", core, &nginx_conf, &work)?,
        peers::haproxy(core, &haproxy_cfg, &work)?,
    ];
    for (name, port) in TARGETS {
        wait_port(port, name)?;
    }
    let pid_of = |target: &str| {
        servers
            .iter()
            .find(|s| s.name == target)
            .map_or(0, |s| s.child.id())
    };
    let ca = work.join("ca.pem");
    let path = "/hit1k?size=1024&cache=max-age%3D600";
    let measure = |target: &'static str, port: u16, new_connections: bool| -> anyhow::Result<Row> {
        let load = LoadArgs {
            url: format!("https://127.0.0.1:{port}{path}"),
            rate: 1.0,
            duration: args.duration,
            connections: args.connections,
            pin: Some(args.client_core),
            closed_loop: true,
            json: false,
            hgrm: None,
            timeout: Duration::from_secs(10),
            tls_ca: Some(ca.clone()),
            tls_name: "bench.test".into(),
            new_connections,
        };
        // Warm: the entry in each cache.
        run_load(&LoadArgs {
            duration: Duration::from_millis(300),
            connections: 1,
            ..load.clone()
        })?;
        let before = cpu_ticks(pid_of(target));
        let run = run_load(&load)?;
        let ticks = cpu_ticks(pid_of(target)).saturating_sub(before);
        // SAFETY: sysconf has no memory effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let cpu_us = ticks as f64 / hz * 1e6 / run.requests.max(1) as f64;
        let row = Row {
            target,
            rps: rate(&run),
            cpu_us,
            run,
        };
        eprintln!(
            "{}: {target}: {:.0}/s, {cpu_us:.1} µs CPU each, {} errors",
            if new_connections {
                "handshakes"
            } else {
                "keep-alive hits"
            },
            row.rps,
            row.run.errors_total()
        );
        Ok(row)
    };
    let mut keepalive = Vec::new();
    let mut handshakes = Vec::new();
    for (target, port) in TARGETS {
        keepalive.push(measure(target, port, false)?);
        handshakes.push(measure(target, port, true)?);
    }
    let ktls = ktls_available();
    drop(servers);
    let _ = std::fs::remove_dir_all(&work);
    let section = report(args, &keepalive, &handshakes, ktls);
    let old = std::fs::read_to_string(&args.out).unwrap_or_default();
    std::fs::write(&args.out, replace_section(&old, &section))?;
    println!("wrote the HTTPS section of {}", args.out.display());
    Ok(())
}

/// The first line a program prints about its version (`nginx -v` writes
/// to stderr).
fn version(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| program.to_owned())
}

/// Whether this kernel offers the `tls` ULP (kTLS).
fn ktls_available() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .is_ok_and(|u| u.split_whitespace().any(|m| m == "tls"))
}

fn table(s: &mut String, unit: &str, rows: &[Row]) {
    let best = rows
        .iter()
        .filter(|r| r.target != "ultragate")
        .map(|r| r.rps)
        .fold(0.0, f64::max);
    let best_cpu = rows
        .iter()
        .filter(|r| r.target != "ultragate")
        .map(|r| r.cpu_us)
        .fold(f64::MAX, f64::min);
    let _ = writeln!(s, "| target | {unit}/s | vs best peer | server CPU µs each | vs best peer | server core busy | p50 µs | p99 µs | errors |");
    let _ = writeln!(
        s,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in rows {
        let h = &r.run.uncorrected;
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.2}× | {:.1} | {:.2}× | {:.0} % | {} | {} | {} |",
            r.target,
            r.rps,
            r.rps / best.max(1.0),
            r.cpu_us,
            r.cpu_us / best_cpu.max(0.001),
            r.rps * r.cpu_us / 1e4,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            r.run.errors_total()
        );
    }
}

fn report(args: &TlsCompareArgs, keepalive: &[Row], handshakes: &[Row], ktls: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{HEADING}\n");
    let _ = writeln!(
        s,
        "Command: `cargo build --release -p ultragate -p ultragate-bench && ./target/release/bench compare --tls --duration {}s --connections {}`; date {}. \
         Servers pinned to core {}, one worker each, the same ECDSA P-256 certificate (made by the run), TLS 1.3 negotiated, session caches and tickets on; `{}`, `{}`, `{}`; ultragate with rustls (aws-lc-rs). \
         The client (`bench load`, rustls, verifying the chain) pinned to core {}, closed loop over {} connections. Server CPU: user+system time of the server's processes per request (per handshake); server core busy: that times the rate, so a row well below 100 % was held back by the client, not by the server.\n",
        args.duration.as_secs(),
        args.connections,
        crate::load::today(),
        args.server_core,
        version("nginx", &["-v"]),
        version("haproxy", &["-v"]),
        version("openssl", &["version"]),
        args.client_core,
        args.connections,
    );
    let _ = writeln!(
        s,
        "### 1 KiB cache hits over keep-alive HTTPS connections\n"
    );
    table(&mut s, "req", keepalive);
    let _ = writeln!(
        s,
        "\n### New connections, a full handshake each (`Connection: close`, no resumption)\n"
    );
    table(&mut s, "handshakes", handshakes);
    let _ = writeln!(
        s,
        "\nkTLS: {}\n",
        if ktls {
            "the kernel offers the tls ULP."
        } else {
            "not measured: this kernel has no `tls` ULP (`/proc/sys/net/ipv4/tcp_available_ulp` lists none, and the module cannot be loaded), so every row is userspace TLS."
        }
    );
    s
}

/// `old` with its HTTPS section replaced by `section` (or `section` added
/// among the kept sections).
fn replace_section(old: &str, section: &str) -> String {
    if let Some(start) = old.find(HEADING) {
        let rest = &old[start + HEADING.len()..];
        let end = rest
            .find("\n## ")
            .map_or(old.len(), |i| start + HEADING.len() + i + 1);
        return format!("{}{section}{}", &old[..start], &old[end..]);
    }
    if old.contains(KEEP_MARKER) {
        return format!("{}\n{section}", old.trim_end());
    }
    format!("{old}\n{KEEP_MARKER}\n\n{section}")
}
