//! `bench compare`: ultragate against nginx `proxy_cache`, HAProxy's
//! `cache` and Varnish (from Debian's packages, installed when missing),
//! each with one worker on the same pinned core, plus nginx `return 200`
//! as the floor of server CPU per request. Every target is measured in the
//! same run at the same offered rates: cache hits of 1 KiB and 16 KiB and
//! the miss (proxy) path. Writes `bench/RESULTS.md` with ratios to the best
//! peer and a percentile plot, and stops everything it started.

use crate::load::{run_load, LoadArgs, Report};
use crate::peers::{self, cpu_ticks, ensure_packages, wait_port};
use anyhow::bail;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Options of `bench compare`.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// The gateway binary.
    #[arg(long, default_value = "target/release/ultragate")]
    gateway: PathBuf,
    /// Core the servers run on.
    #[arg(long, default_value_t = 1)]
    server_core: usize,
    /// Core the load generator runs on.
    #[arg(long, default_value_t = 0)]
    client_core: usize,
    /// Length of each measurement.
    #[arg(long, default_value = "5s", value_parser = crate::load::parse_duration)]
    duration: Duration,
    /// Offered rate of the open-loop (latency) runs, requests per second.
    #[arg(long, default_value_t = 15000.0)]
    rate: f64,
    /// Keep-alive connections of every run.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Where the report goes.
    #[arg(long, default_value = "bench/RESULTS.md")]
    out: PathBuf,
    /// Another gateway binary (e.g. built from the commit before a change)
    /// measured in the same run as `ultragate_baseline`, for a before/after
    /// within the same noise.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Measure HTTPS instead (ultragate, nginx and HAProxy with OpenSSL,
    /// the same ECDSA P-256 certificate): keep-alive cache hits and full
    /// handshakes; the report's HTTPS section is replaced.
    #[arg(long)]
    tls: bool,
}

/// One measured target in one scenario.
struct Row {
    target: &'static str,
    max_rps: f64,
    cpu_us: f64,
    open: Report,
}

const PORTS: [(&str, u16); 5] = [
    ("ultragate", 28080),
    ("nginx_cache", 28090),
    ("haproxy", 28092),
    ("varnish", 28093),
    ("nginx_return200", 28091),
];

/// Runs the comparison and writes the report.
pub fn run(args: CompareArgs) -> anyhow::Result<()> {
    ensure_packages()?;
    if args.tls {
        return crate::compare_tls::run(&crate::compare_tls::TlsCompareArgs {
            gateway: args.gateway,
            server_core: args.server_core,
            client_core: args.client_core,
            duration: args.duration,
            connections: args.connections,
            out: args.out,
        });
    }
    if !args.gateway.exists() {
        bail!(
            "no gateway binary at {} (cargo build --release -p ultragate)",
            args.gateway.display()
        );
    }
    let work = std::env::temp_dir().join(format!("ultragate-compare-{}", std::process::id()));
    std::fs::create_dir_all(work.join("ngx-cache"))?;
    Command::new("chmod")
        .args(["-R", "755"])
        .arg(&work)
        .status()?;
    let w = work.display();
    let core = args.server_core;
    let gw_conf = format!("[api_gateway]\nlisten = \"127.0.0.1:28080\"\ncores = [{core}]\n[admin]\nlisten = \"127.0.0.1:28081\"\n[upstream.primary]\nservers = [\"127.0.0.1:28000\"]\n");
    let body = "x".repeat(1024);
    let nginx_conf = format!(
        "worker_processes 1;\nworker_cpu_affinity {mask:b};\ndaemon off;\nerror_log {w}/nginx-error.log warn;\npid {w}/nginx.pid;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  proxy_cache_path {w}/ngx-cache levels=1:2 keys_zone=c:10m max_size=100m inactive=60m use_temp_path=off;\n  upstream origin {{ server 127.0.0.1:28000; keepalive 64; }}\n  server {{ listen 127.0.0.1:28090; location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_cache c; add_header X-Cache-Status $upstream_cache_status; }} }}\n  server {{ listen 127.0.0.1:28091; location / {{ default_type text/plain; return 200 \"{body}\"; }} }}\n}}\n",
        mask = 1u64 << core,
    );
    let haproxy_cfg = format!("global\n  nbthread 1\n  cpu-map 1/1 {core}\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\ncache c\n  total-max-size 256\n  max-object-size 100000\n  max-age 600\nfrontend f\n  bind 127.0.0.1:28092\n  default_backend b\nbackend b\n  http-request cache-use c\n  http-response cache-store c\n  http-reuse always\n  server o 127.0.0.1:28000\n");
    let mut servers = vec![peers::origin(args.client_core, 28000, &work)?];
    servers.push(peers::ultragate(
        "ultragate",
        &args.gateway,
        core,
        &gw_conf,
        &work,
    )?);
    servers.push(peers::nginx("nginx", core, &nginx_conf, &work)?);
    servers.push(peers::haproxy(core, &haproxy_cfg, &work)?);
    servers.push(peers::varnish(core, 28093, 28000, &work)?);
    let mut ports = PORTS.to_vec();
    if let Some(baseline) = &args.baseline {
        let conf = format!("[api_gateway]\nlisten = \"127.0.0.1:28082\"\ncores = [{core}]\n[admin]\nlisten = \"127.0.0.1:28083\"\n[upstream.primary]\nservers = [\"127.0.0.1:28000\"]\n");
        servers.push(peers::ultragate(
            "ultragate_baseline",
            baseline,
            core,
            &conf,
            &work,
        )?);
        ports.insert(1, ("ultragate_baseline", 28082));
    }
    for &(name, port) in &ports {
        wait_port(port, name)?;
    }
    let pid_of = |target: &str| {
        let server = match target {
            "nginx_cache" | "nginx_return200" => "nginx",
            t => t,
        };
        servers
            .iter()
            .find(|s| s.name == server)
            .map(|s| s.child.id())
            .unwrap_or(0)
    };

    let scenarios: [(&str, String); 3] = [
        (
            "cache hit, 1 KiB",
            "/hit1k?size=1024&cache=max-age%3D600".to_owned(),
        ),
        (
            "cache hit, 16 KiB",
            "/hit16k?size=16384&cache=max-age%3D600".to_owned(),
        ),
        ("miss (proxy path), 1 KiB", "/miss?size=1024".to_owned()),
    ];
    let mut results: Vec<(&str, Vec<Row>)> = Vec::new();
    for (scenario, path) in &scenarios {
        let mut rows = Vec::new();
        for &(target, port) in &ports {
            if target == "nginx_return200" && scenario.starts_with("miss") {
                continue;
            }
            let url = format!("http://127.0.0.1:{port}{path}");
            for _ in 0..3 {
                let _ = Command::new("curl")
                    .args(["-s", "-o", "/dev/null", &url])
                    .status();
            }
            let base = LoadArgs {
                url: url.clone(),
                rate: args.rate,
                duration: args.duration,
                connections: args.connections,
                pin: Some(args.client_core),
                closed_loop: true,
                json: false,
                hgrm: None,
                timeout: Duration::from_secs(10),
                tls_ca: None,
                tls_name: String::new(),
                new_connections: false,
            };
            let before = cpu_ticks(pid_of(target));
            let closed = run_load(&LoadArgs {
                connections: args.connections * 2,
                ..base.clone()
            })?;
            let ticks = cpu_ticks(pid_of(target)).saturating_sub(before);
            // SAFETY: sysconf has no memory effects.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            let cpu_us = ticks as f64 / hz * 1e6 / closed.requests.max(1) as f64;
            let open = run_load(&LoadArgs {
                closed_loop: false,
                ..base
            })?;
            eprintln!("{scenario}: {target}: {:.0} req/s max, {cpu_us:.2} µs CPU/req, p99 {} µs at {} req/s", rate(&closed), open.corrected.value_at_quantile(0.99), args.rate);
            rows.push(Row {
                target,
                max_rps: rate(&closed),
                cpu_us,
                open,
            });
        }
        results.push((scenario, rows));
    }
    drop(servers);
    let _ = std::fs::remove_dir_all(&work);
    let svg_path = args.out.with_extension("svg");
    std::fs::write(&svg_path, plot(&results[0].1, results[0].0, args.rate))?;
    // The sections other scripts measured stay (below the marker).
    let kept = std::fs::read_to_string(&args.out)
        .ok()
        .and_then(|old| old.find(KEEP_MARKER).map(|i| old[i..].to_owned()))
        .unwrap_or_default();
    let text = format!("{}\n{kept}", report(&args, &results, &svg_path));
    std::fs::write(&args.out, text)?;
    println!("wrote {} and {}", args.out.display(), svg_path.display());
    Ok(())
}

pub(crate) fn rate(r: &Report) -> f64 {
    r.requests as f64 / r.elapsed.as_secs_f64().max(1e-9)
}

/// Everything from this line on in the report was written by the other
/// benchmark scripts; `bench compare` keeps it.
pub(crate) const KEEP_MARKER: &str =
    "<!-- kept by bench compare: the sections below come from other scripts -->";

fn report(args: &CompareArgs, results: &[(&str, Vec<Row>)], svg: &Path) -> String {
    let mut s = String::new();
    let host = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let _ = writeln!(s, "# ultragate benchmark results\n");
    let _ = writeln!(
        s,
        "Command: `cargo build --release -p ultragate -p ultragate-bench && ./target/release/bench compare --duration {}s --rate {} --connections {}`\n",
        args.duration.as_secs(),
        args.rate,
        args.connections
    );
    let _ = writeln!(
        s,
        "Machine: {} cores ({host}), {}; date {}. Servers pinned to core {}, one worker each (Varnish: one thread pool); the load generator (`bench load`) pinned to core {}. \
         Max req/s: closed loop over {} connections. Latency: open loop at {} req/s, measured from each request's intended send time. \
         Server CPU: user+system time of the server's processes per request during the max-rate run. Ratios: against the best peer (nginx `return 200` is a floor, not a peer). \
         Varnish caches responses without freshness information for 120 s by default, so its miss-path row is mostly hits. \
         Tail latencies (p99, p99.9) on this shared two-core VM move by several milliseconds between runs for every target; compare medians and CPU first.\n",
        std::fs::read_to_string("/proc/cpuinfo").map_or(0, |c| c.lines().filter(|l| l.starts_with("processor")).count()),
        std::fs::read_to_string("/etc/debian_version").map(|v| format!("Debian {}", v.trim())).unwrap_or_default(),
        crate::load::today(),
        args.server_core,
        args.client_core,
        args.connections * 2,
        args.rate
    );
    for (scenario, rows) in results {
        let peers = rows
            .iter()
            .filter(|r| !r.target.starts_with("ultragate") && r.target != "nginx_return200");
        let best_rps = peers.clone().map(|r| r.max_rps).fold(0.0, f64::max);
        let best_cpu = peers.clone().map(|r| r.cpu_us).fold(f64::MAX, f64::min);
        let best_p99 = peers
            .map(|r| r.open.corrected.value_at_quantile(0.99))
            .min()
            .unwrap_or(1)
            .max(1);
        let _ = writeln!(s, "## {scenario}\n");
        let _ = writeln!(s, "| target | max req/s | vs best peer | server CPU µs/req | p50 µs | p99 µs | p99.9 µs | p99 vs best peer | errors |");
        let _ = writeln!(
            s,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for r in rows {
            let h = &r.open.corrected;
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.2}× | {:.2} | {} | {} | {} | {:.2}× | {} |",
                r.target,
                r.max_rps,
                r.max_rps / best_rps.max(1.0),
                r.cpu_us,
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.value_at_quantile(0.99) as f64 / best_p99 as f64,
                r.open.errors_total()
            );
        }
        let _ = writeln!(
            s,
            "\nBest peer here: {best_rps:.0} req/s, {best_cpu:.2} µs CPU/req, p99 {best_p99} µs.\n"
        );
    }
    let _ = writeln!(
        s,
        "![latency percentiles, 1 KiB hits]({})\n",
        svg.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("RESULTS.svg")
    );
    s
}

/// Latency by percentile (x: 1/(1-p) on a log scale, as HdrHistogram plots
/// it; y: µs on a log scale), one line per target.
fn plot(rows: &[Row], title: &str, rate: f64) -> String {
    let (w, h, left, bottom, top, right) = (760.0, 420.0, 70.0, 50.0, 40.0, 160.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let max_x = 4.0_f64; // up to p99.99
    let max_us = rows
        .iter()
        .map(|r| r.open.corrected.value_at_quantile(0.9999))
        .max()
        .unwrap_or(10)
        .max(10) as f64;
    let min_us = rows
        .iter()
        .map(|r| r.open.corrected.value_at_quantile(0.0))
        .min()
        .unwrap_or(1)
        .max(1) as f64;
    let (ly0, ly1) = (
        min_us.log10().floor(),
        max_us.log10().ceil().max(min_us.log10().floor() + 1.0),
    );
    let x = |q: f64| left + (-(1.0 - q).max(1e-4).log10()).min(max_x) / max_x * pw;
    let y = |us: f64| top + ph - (us.max(1.0).log10() - ly0) / (ly1 - ly0) * ph;
    let colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#7f7f7f"];
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    let _ = writeln!(s, "<text x=\"{left}\" y=\"20\" font-size=\"14\">Latency by percentile, {title}, open loop at {rate} req/s</text>");
    for (i, label) in ["p0", "p90", "p99", "p99.9", "p99.99"].iter().enumerate() {
        let xi = left + i as f64 / max_x * pw;
        let _ = writeln!(s, "<line x1=\"{xi}\" y1=\"{top}\" x2=\"{xi}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{xi}\" y=\"{}\" text-anchor=\"middle\">{label}</text>", top + ph, top + ph + 18.0);
    }
    let mut d = ly0;
    while d <= ly1 {
        let yi = y(10f64.powf(d));
        let _ = writeln!(s, "<line x1=\"{left}\" y1=\"{yi}\" x2=\"{}\" y2=\"{yi}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} µs</text>", left + pw, left - 6.0, yi + 4.0, 10f64.powf(d));
        d += 1.0;
    }
    for (i, r) in rows.iter().enumerate() {
        let points: Vec<String> = (0..=200)
            .map(|k| {
                let q = 1.0 - 10f64.powf(-(k as f64) / 200.0 * max_x);
                format!(
                    "{:.1},{:.1}",
                    x(q),
                    y(r.open.corrected.value_at_quantile(q) as f64)
                )
            })
            .collect();
        let c = colors[i % colors.len()];
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>",
            points.join(" ")
        );
        let ly = top + 16.0 * i as f64 + 10.0;
        let _ = writeln!(s, "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{c}\" stroke-width=\"3\"/><text x=\"{}\" y=\"{}\">{}</text>", left + pw + 10.0, left + pw + 30.0, left + pw + 35.0, ly + 4.0, r.target);
    }
    s.push_str("</svg>\n");
    s
}
