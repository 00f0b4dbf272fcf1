//! `bench soak`: the gateway under a long, fixed-rate mix of everything a
//! hostile or careless client sends — cache hits, unique misses that churn
//! the cache, unique uncacheable URLs, pipelined requests, slow readers
//! that stop reading a large response, slowloris heads and malformed
//! requests — while the gateway's RSS is sampled every second. Starts its
//! own origin and gateway on loopback, stops them at the end, and prints
//! the RSS curve (start, max, end) and the outcome counts per kind. Not a
//! test: a run of minutes, quoted in closing notes.

use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `bench soak`.
#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// The gateway binary.
    #[arg(long, default_value = "target/release/ultragate")]
    gateway: PathBuf,
    /// How long to run.
    #[arg(long, default_value = "600s", value_parser = crate::load::parse_duration)]
    duration: Duration,
    /// Requests per second of each request kind (hits, misses,
    /// uncacheable, pipelined batches, malformed).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// The gateway's cache budget, in MiB.
    #[arg(long, default_value_t = 64)]
    cache_mib: u64,
    /// Where the per-second samples go (CSV: second, RSS bytes, cache
    /// bytes, answered, failed).
    #[arg(long, default_value = "soak.csv")]
    out: PathBuf,
}

/// The kinds of traffic in the mix.
const KINDS: [&str; 7] = [
    "hit",
    "miss",
    "uncacheable",
    "pipelined",
    "slow_reader",
    "slowloris",
    "malformed",
];

/// Outcome counters of one kind.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(addr: SocketAddr) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on {addr}")
}

/// Resident set size of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Reads one response from `s`; its status. Bodies are read by
/// Content-Length or chunked framing (a body ended by the close is read to
/// the end).
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    let bad = |m: &'static str| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let mut tmp = [0u8; 16384];
    let mut more = |s: &mut TcpStream, buf: &mut Vec<u8>| -> std::io::Result<()> {
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(bad("closed mid-response"));
        }
        buf.extend_from_slice(&tmp[..n]);
        Ok(())
    };
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        more(s, buf)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head
        .get(9..12)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("status line"))?;
    let field = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let no_body = matches!(status, 204 | 304) || status < 200;
    let end = if no_body {
        head_end
    } else if let Some(n) = field("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while buf.len() < head_end + n {
            more(s, buf)?;
        }
        head_end + n
    } else if field("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut pos = head_end;
        loop {
            let line_end = loop {
                if let Some(p) = buf[pos..].windows(2).position(|w| w == b"\r\n") {
                    break pos + p;
                }
                more(s, buf)?;
            };
            let size = std::str::from_utf8(&buf[pos..line_end])
                .ok()
                .and_then(|t| usize::from_str_radix(t.split(';').next()?.trim(), 16).ok())
                .ok_or_else(|| bad("chunk size"))?;
            pos = line_end + 2;
            if size == 0 {
                while !buf[pos..].starts_with(b"\r\n") {
                    let Some(p) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
                        more(s, buf)?;
                        continue;
                    };
                    pos += p + 2;
                }
                break pos + 2;
            }
            while buf.len() < pos + size + 2 {
                more(s, buf)?;
            }
            pos += size + 2;
        }
    } else {
        while s.read(&mut tmp)? > 0 {}
        buf.len()
    };
    buf.drain(..end);
    Ok(status)
}

/// Requests the gateway must refuse, each with a 4xx or 5xx and a close.
const MALFORMED: &[&[u8]] = &[
    b"GET /aaaaa\xc3\xa9 HTTP/1.1\r\nHost: x\r\nConnection: host\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
];

/// Runs `op` `rate` times a second until `stop`, counting outcomes.
fn paced(rate: f64, stop: &AtomicBool, tally: &Tally, mut op: impl FnMut(u64) -> bool) {
    let every = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let start = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = start + every.mul_f64(n as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let counter = if op(n) { &tally.ok } else { &tally.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
}

/// One GET per call on a kept-alive connection (reopened when it closes).
fn keepalive_get(
    addr: SocketAddr,
    conn: &mut Option<(TcpStream, Vec<u8>)>,
    path: &str,
    want: u16,
) -> bool {
    if conn.is_none() {
        let Ok(s) = TcpStream::connect(addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        *conn = Some((s, Vec::new()));
    }
    let Some((s, buf)) = conn.as_mut() else {
        return false;
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: soak\r\n\r\n");
    let ok = s.write_all(req.as_bytes()).is_ok() && read_response(s, buf).ok() == Some(want);
    if !ok {
        *conn = None;
    }
    ok
}

/// Runs the soak.
pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    if !args.gateway.exists() {
        bail!(
            "no gateway binary at {} (cargo build --release -p ultragate)",
            args.gateway.display()
        );
    }
    let origin_addr: SocketAddr = "127.0.0.1:29000".parse()?;
    let data: SocketAddr = "127.0.0.1:29080".parse()?;
    let admin: SocketAddr = "127.0.0.1:29081".parse()?;
    let me = std::env::current_exe()?;
    let _origin = Proc(
        Command::new(&me)
            .args(["origin", "--listen", &origin_addr.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .context("start the origin")?,
    );
    wait_port(origin_addr)?;
    let config = std::env::temp_dir().join(format!("ultragate-soak-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[api_gateway]\nlisten = \"{data}\"\nclient_timeout_ms = 5000\nsend_timeout_ms = 5000\n\
             [admin]\nlisten = \"{admin}\"\n[upstream.primary]\nservers = [\"{origin_addr}\"]\n\
             [cache]\nmax_bytes = {}\n",
            args.cache_mib << 20
        ),
    )?;
    let gateway = Proc(
        Command::new(&args.gateway)
            .args(["--config", &config.display().to_string()])
            .env("ULTRAGATE_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .context("start the gateway")?,
    );
    wait_port(data)?;
    let pid = gateway.0.id();
    let stop = Arc::new(AtomicBool::new(false));
    let tallies: Arc<Vec<Tally>> = Arc::new(KINDS.iter().map(|_| Tally::default()).collect());
    let rate = args.rate;
    let mut workers = Vec::new();
    for (k, kind) in KINDS.iter().enumerate() {
        let (stop, tallies) = (stop.clone(), tallies.clone());
        let kind = *kind;
        workers.push(std::thread::spawn(move || {
            let tally = &tallies[k];
            let mut conn = None;
            match kind {
                "hit" => paced(rate, &stop, tally, |n| {
                    let path = format!("/soak/hot{}?size=1024&cache=max-age%3D600", n % 32);
                    keepalive_get(data, &mut conn, &path, 200)
                }),
                "miss" => paced(rate, &stop, tally, |n| {
                    let path = format!("/soak/miss/{n}?size=4096&cache=max-age%3D600");
                    keepalive_get(data, &mut conn, &path, 200)
                }),
                "uncacheable" => paced(rate, &stop, tally, |n| {
                    let path = format!("/soak/nc/{n}/{}?cache=no-store", "u".repeat(200));
                    keepalive_get(data, &mut conn, &path, 200)
                }),
                "pipelined" => paced(rate / 4.0, &stop, tally, |n| {
                    let Ok(mut s) = TcpStream::connect(data) else {
                        return false;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut batch = Vec::new();
                    for i in 0..4 {
                        let _ = write!(
                            batch,
                            "GET /soak/hot{}?size=512&cache=max-age%3D600 HTTP/1.1\r\nHost: soak\r\n\r\n",
                            (n * 4 + i) % 32
                        );
                    }
                    let mut buf = Vec::new();
                    s.write_all(&batch).is_ok()
                        && (0..4).all(|_| read_response(&mut s, &mut buf).ok() == Some(200))
                }),
                "slow_reader" => paced(1.0, &stop, tally, |n| {
                    // Asks for 4 MiB and reads none of it: the gateway must
                    // close it after its send timeout, not hold it.
                    let Ok(mut s) = TcpStream::connect(data) else {
                        return false;
                    };
                    let req = format!(
                        "GET /soak/big{}?size=4194304&cache=max-age%3D600 HTTP/1.1\r\nHost: soak\r\n\r\n",
                        n % 4
                    );
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    if s.write_all(req.as_bytes()).is_err() {
                        return false;
                    }
                    std::thread::sleep(Duration::from_secs(8));
                    // Past the send timeout: the gateway has closed; the
                    // bytes it had sent drain, then EOF or a reset.
                    let mut sink = [0u8; 65536];
                    let until = Instant::now() + Duration::from_secs(20);
                    while Instant::now() < until {
                        match s.read(&mut sink) {
                            Ok(0) | Err(_) => return true,
                            Ok(_) => {}
                        }
                    }
                    false
                }),
                "slowloris" => paced(1.0, &stop, tally, |_| {
                    // One byte a second: 408 and a close after the client
                    // timeout.
                    let Ok(mut s) = TcpStream::connect(data) else {
                        return false;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_millis(900)));
                    let head = b"GET /soak/slow HTTP/1.1\r\nHost: soak\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaa";
                    let mut got = Vec::new();
                    for b in head.iter() {
                        if s.write_all(&[*b]).is_err() {
                            break;
                        }
                        let mut tmp = [0u8; 512];
                        match s.read(&mut tmp) {
                            Ok(0) => break,
                            Ok(n) => got.extend_from_slice(&tmp[..n]),
                            Err(_) => {}
                        }
                    }
                    got.starts_with(b"HTTP/1.1 408")
                }),
                _ => paced(rate, &stop, tally, |n| {
                    let Ok(mut s) = TcpStream::connect(data) else {
                        return false;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let bad = MALFORMED[n as usize % MALFORMED.len()];
                    let mut buf = Vec::new();
                    s.write_all(bad).is_ok()
                        && read_response(&mut s, &mut buf).is_ok_and(|st| st >= 400)
                }),
            }
        }));
    }
    let mut csv = String::from("second,rss_bytes,cache_bytes,answered,failed\n");
    let started = Instant::now();
    let mut samples = Vec::new();
    let cache_bytes = || -> u64 {
        let Ok(mut s) = TcpStream::connect(admin) else {
            return 0;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.lines()
            .find_map(|l| l.strip_prefix("ultragate_cache_bytes "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    while started.elapsed() < args.duration {
        std::thread::sleep(Duration::from_secs(1));
        let (ok, failed) = tallies.iter().fold((0, 0), |(o, f), t| {
            (
                o + t.ok.load(Ordering::Relaxed),
                f + t.failed.load(Ordering::Relaxed),
            )
        });
        let sample = (started.elapsed().as_secs(), rss(pid), cache_bytes());
        csv.push_str(&format!(
            "{},{},{},{ok},{failed}\n",
            sample.0, sample.1, sample.2
        ));
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let alive = rss(pid) > 0;
    drop(gateway);
    let _ = std::fs::remove_file(&config);
    std::fs::write(&args.out, csv)?;
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let start = samples.first().map_or(0, |s| s.1);
    let max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let end = samples.last().map_or(0, |s| s.1);
    // After the cache has filled its budget (the first third), RSS must
    // stay flat.
    let warm = samples.get(samples.len() / 3).map_or(0, |s| s.1);
    println!(
        "soak {}s at {} req/s per kind, cache budget {} MiB",
        args.duration.as_secs(),
        args.rate,
        args.cache_mib
    );
    println!(
        "RSS MiB: start {:.1}, after warm-up {:.1}, max {:.1}, end {:.1}; gateway alive at the end: {alive}",
        mib(start),
        mib(warm),
        mib(max),
        mib(end)
    );
    println!("| kind | ok | failed |\n| --- | ---: | ---: |");
    for (kind, t) in KINDS.iter().zip(tallies.iter()) {
        println!(
            "| {kind} | {} | {} |",
            t.ok.load(Ordering::Relaxed),
            t.failed.load(Ordering::Relaxed)
        );
    }
    println!("samples: {}", args.out.display());
    if !alive {
        bail!("the gateway died during the soak");
    }
    Ok(())
}
