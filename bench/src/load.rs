//! `bench load`: HTTP/1.1 load over keep-alive connections, open loop by
//! default. Each request has an intended send time on a constant-rate
//! schedule and its latency is measured from that time, so a stalled
//! server is charged for the requests it kept the client from sending
//! (coordinated-omission correction, as in wrk2). `--closed-loop` sends
//! back to back instead, for maximum throughput.
//!
//! The client parses responses itself (status line, `Content-Length`,
//! chunked) and shares no code with the gateway.

use crate::stream::{Stream, Tls};
use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Options of `bench load`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Target URL, `http://HOST:PORT/PATH`.
    #[arg(long)]
    pub url: String,
    /// Offered rate in requests per second (open loop).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long to offer load, e.g. `10s`, `500ms`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Pin the client to this core.
    #[arg(long)]
    pub pin: Option<usize>,
    /// Send back to back instead of on a schedule (maximum throughput).
    #[arg(long)]
    pub closed_loop: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Write the latency distribution as an HdrHistogram `.hgrm` file.
    #[arg(long)]
    pub hgrm: Option<std::path::PathBuf>,
    /// Give up on a response after this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// For `https://` URLs: the CA certificate (PEM) to trust.
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// For `https://` URLs: the server name sent in SNI and verified.
    #[arg(long, default_value = "localhost")]
    pub tls_name: String,
    /// One request per connection (`Connection: close`): with `https://`,
    /// a full handshake for every request (no resumption).
    #[arg(long)]
    pub new_connections: bool,
}

/// Parses `10s`, `250ms`, `2m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Errors by kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct Errors {
    /// Connections refused or failed.
    pub connect: u64,
    /// Reads or writes that failed, or unparsable responses.
    pub io: u64,
    /// Responses later than `--timeout`.
    pub timeout: u64,
    /// Responses with status 500 or above.
    pub status_5xx: u64,
    /// Responses with status 400 to 499.
    pub status_4xx: u64,
}

impl Report {
    /// Errors of every kind.
    pub fn errors_total(&self) -> u64 {
        self.errors.total()
    }
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

impl Errors {
    fn total(&self) -> u64 {
        self.connect + self.io + self.timeout + self.status_5xx + self.status_4xx
    }
}

/// The outcome of a run.
pub struct Report {
    /// Latency from intended send time (closed loop: from send), in µs.
    pub corrected: Histogram<u64>,
    /// Latency from actual send time, in µs.
    pub uncorrected: Histogram<u64>,
    /// Errors by kind.
    pub errors: Errors,
    /// Responses received.
    pub requests: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

struct Target {
    addr: String,
    request: Vec<u8>,
    tls: Option<Tls>,
}

fn target(args: &LoadArgs) -> anyhow::Result<Target> {
    let url = &args.url;
    let (rest, tls) = match url.strip_prefix("https://") {
        Some(rest) => {
            let ca = args
                .tls_ca
                .as_deref()
                .context("an https:// URL needs --tls-ca")?;
            (
                rest,
                Some(Tls::new(ca, &args.tls_name, !args.new_connections)?),
            )
        }
        None => (
            url.strip_prefix("http://")
                .context("only http:// and https:// URLs are supported")?,
            None,
        ),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:{}", if tls.is_some() { 443 } else { 80 })
    };
    let close = if args.new_connections {
        "Connection: close\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: ultragate-bench\r\n{close}\r\n"
    )
    .into_bytes();
    Ok(Target { addr, request, tls })
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Runs the load and returns the report.
pub fn run_load(args: &LoadArgs) -> anyhow::Result<Report> {
    if args.connections == 0 || (!args.closed_loop && args.rate <= 0.0) {
        bail!("--connections and --rate must be above 0");
    }
    if let Some(core) = args.pin {
        let id = core_affinity::get_core_ids()
            .and_then(|ids| ids.into_iter().find(|c| c.id == core))
            .with_context(|| format!("no core {core}"))?;
        core_affinity::set_for_current(id);
    }
    let target = Rc::new(target(args)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let shared = Rc::new(RefCell::new(Report {
        corrected: histogram(),
        uncorrected: histogram(),
        errors: Errors::default(),
        requests: 0,
        elapsed: Duration::ZERO,
    }));
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + args.duration;
    local.block_on(&rt, async {
        let mut tasks = Vec::new();
        for c in 0..args.connections {
            let (target, shared, args) = (target.clone(), shared.clone(), args.clone());
            tasks.push(tokio::task::spawn_local(async move {
                connection(c, &target, &shared, &args, start, end).await
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let mut report = Rc::try_unwrap(shared)
        .ok()
        .context("tasks still running")?
        .into_inner();
    report.elapsed = Instant::now()
        .saturating_duration_since(start)
        .min(args.duration + args.timeout);
    Ok(report)
}

async fn connection(
    c: usize,
    target: &Target,
    shared: &RefCell<Report>,
    args: &LoadArgs,
    start: Instant,
    end: Instant,
) {
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(f64::MIN_POSITIVE));
    let mut stream: Option<Stream> = None;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut k: u64 = 0;
    loop {
        let intended = if args.closed_loop {
            Instant::now()
        } else {
            let i = k * args.connections as u64 + c as u64;
            start + interval.mul_f64(i as f64)
        };
        k += 1;
        if intended >= end || Instant::now() >= end + args.timeout {
            break;
        }
        wait_until(intended).await;
        if stream.is_none() {
            match Stream::connect(&target.addr, target.tls.as_ref()).await {
                Ok(s) => stream = Some(s),
                Err(_) => {
                    shared.borrow_mut().errors.connect += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = stream.as_mut() else { continue };
        let sent = Instant::now();
        let outcome =
            tokio::time::timeout(args.timeout, exchange(s, &target.request, &mut buf)).await;
        let done = Instant::now();
        let mut r = shared.borrow_mut();
        match outcome {
            Ok(Ok((status, keep))) => {
                r.requests += 1;
                let corrected = done.saturating_duration_since(intended).as_micros() as u64;
                let uncorrected = done.saturating_duration_since(sent).as_micros() as u64;
                r.corrected.saturating_record(corrected.max(1));
                r.uncorrected.saturating_record(uncorrected.max(1));
                match status {
                    500.. => r.errors.status_5xx += 1,
                    400..=499 => r.errors.status_4xx += 1,
                    _ => {}
                }
                if !keep {
                    stream = None;
                }
            }
            Ok(Err(_)) => {
                r.errors.io += 1;
                stream = None;
            }
            Err(_) => {
                r.errors.timeout += 1;
                stream = None;
            }
        }
    }
}

/// Waits for a send time. tokio's timers tick in milliseconds, which would
/// add up to a millisecond of the client's own lateness to every latency;
/// the last stretch is spent yielding instead, so sends leave on time
/// (the client core is dedicated to the client).
async fn wait_until(t: Instant) {
    loop {
        let now = Instant::now();
        if now >= t {
            return;
        }
        if t - now > Duration::from_millis(5) {
            tokio::time::sleep_until((t - Duration::from_millis(3)).into()).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

/// Sends one request and reads its response; returns the status and
/// whether the connection stays open.
async fn exchange(
    s: &mut Stream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<(u16, bool)> {
    s.write_all(request).await?;
    buf.clear();
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p + 4;
        }
        read_more(s, buf).await?;
    };
    let head =
        std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("response head is not UTF-8"))?;
    let status: u16 = head
        .get(9..12)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let (mut length, mut chunked, mut close) = (None, false, head.starts_with("HTTP/1.0"));
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| bad("bad content-length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let no_body = status == 204 || status == 304 || (100..200).contains(&status);
    if chunked && !no_body {
        let mut pos = head_end;
        loop {
            let line_end = loop {
                if let Some(p) = find(&buf[pos..], b"\r\n") {
                    break pos + p;
                }
                read_more(s, buf).await?;
            };
            let size_text =
                std::str::from_utf8(&buf[pos..line_end]).map_err(|_| bad("bad chunk size"))?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            pos = line_end + 2;
            if size == 0 {
                while find(&buf[pos..], b"\r\n").is_none() {
                    read_more(s, buf).await?;
                }
                break;
            }
            while buf.len() < pos + size + 2 {
                read_more(s, buf).await?;
            }
            pos += size + 2;
        }
    } else if let (Some(n), false) = (length, no_body) {
        while buf.len() < head_end + n {
            read_more(s, buf).await?;
        }
    } else if !no_body {
        // Delimited by close.
        loop {
            let mut tmp = [0u8; 16384];
            if s.read(&mut tmp).await? == 0 {
                break;
            }
        }
        close = true;
    }
    Ok((status, !close))
}

async fn read_more(s: &mut Stream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut tmp = [0u8; 16384];
    let n = s.read(&mut tmp).await?;
    if n == 0 {
        return Err(bad("connection closed mid-response"));
    }
    buf.extend_from_slice(&tmp[..n]);
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn bad(msg: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

/// The report as one flat JSON object (`p99_us` and so on).
pub fn to_json(args: &LoadArgs, r: &Report) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        m.insert(k.to_owned(), v);
    };
    put(
        "mode",
        (if args.closed_loop {
            "closed_loop"
        } else {
            "open_loop"
        })
        .into(),
    );
    put(
        "target_rate",
        if args.closed_loop {
            serde_json::Value::Null
        } else {
            args.rate.into()
        },
    );
    put(
        "achieved_rate",
        (r.requests as f64 / r.elapsed.as_secs_f64().max(1e-9)).into(),
    );
    put("duration_s", r.elapsed.as_secs_f64().into());
    put("requests", r.requests.into());
    put("errors", r.errors.total().into());
    put("errors_connect", r.errors.connect.into());
    put("errors_io", r.errors.io.into());
    put("errors_timeout", r.errors.timeout.into());
    put("errors_5xx", r.errors.status_5xx.into());
    put("errors_4xx", r.errors.status_4xx.into());
    for (name, q) in PERCENTILES {
        put(
            &format!("{}_us", name.replace('.', "")),
            r.corrected.value_at_quantile(q).into(),
        );
    }
    put("max_us", r.corrected.max().into());
    put("mean_us", r.corrected.mean().into());
    put(
        "uncorrected_p99_us",
        r.uncorrected.value_at_quantile(0.99).into(),
    );
    put("uncorrected_max_us", r.uncorrected.max().into());
    serde_json::Value::Object(m)
}

/// The report as a readable table.
pub fn to_table(args: &LoadArgs, r: &Report) -> String {
    let mut s = String::new();
    let achieved = r.requests as f64 / r.elapsed.as_secs_f64().max(1e-9);
    if args.closed_loop {
        let _ = writeln!(
            s,
            "closed loop, {} connections: {achieved:.1} req/s",
            args.connections
        );
    } else {
        let _ = writeln!(
            s,
            "offered {:.1} req/s over {} connections, achieved {achieved:.1} req/s",
            args.rate, args.connections
        );
    }
    let _ = writeln!(
        s,
        "{} responses in {:.2} s, {} errors",
        r.requests,
        r.elapsed.as_secs_f64(),
        r.errors.total()
    );
    let _ = writeln!(
        s,
        "latency{}:",
        if args.closed_loop {
            ""
        } else {
            " (from intended send time)"
        }
    );
    for (name, q) in PERCENTILES {
        let _ = writeln!(s, "  {name:<7}{:>10} µs", r.corrected.value_at_quantile(q));
    }
    let _ = writeln!(s, "  {:<7}{:>10} µs", "max", r.corrected.max());
    let e = r.errors;
    if e.total() > 0 {
        let _ = writeln!(
            s,
            "errors: connect {}, io {}, timeout {}, 5xx {}, 4xx {}",
            e.connect, e.io, e.timeout, e.status_5xx, e.status_4xx
        );
    }
    s
}

/// The latency distribution in HdrHistogram's percentile text format
/// (`.hgrm`), values in milliseconds.
pub fn to_hgrm(h: &Histogram<u64>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / 1000.0;
        if q < 1.0 {
            let _ = writeln!(
                s,
                "{value:>12.3} {q:>14.12} {total:>10} {:>14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(s, "{value:>12.3} {q:>14.12} {total:>10}");
        }
    }
    let _ = writeln!(
        s,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        s,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
    s
}

/// `bench load`: runs and prints.
pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let report = run_load(&args)?;
    if let Some(path) = &args.hgrm {
        std::fs::write(path, to_hgrm(&report.corrected))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!("{}", to_json(&args, &report));
    } else {
        print!("{}", to_table(&args, &report));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_is_a_date() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(
            d.starts_with("20") && d.as_bytes()[4] == b'-' && d.as_bytes()[7] == b'-',
            "{d}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("3h").is_err());
    }

    #[test]
    fn hgrm_is_in_the_standard_format() {
        let mut h = histogram();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap();
        }
        let text = to_hgrm(&h);
        let mut lines = text.lines();
        assert!(lines.next().unwrap().split_whitespace().eq([
            "Value",
            "Percentile",
            "TotalCount",
            "1/(1-Percentile)"
        ]));
        let rows: Vec<Vec<f64>> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.contains("Value"))
            .map(|l| l.split_whitespace().map(|f| f.parse().unwrap()).collect())
            .collect();
        assert!(rows.len() > 10);
        assert!(
            rows.windows(2)
                .all(|w| w[0][1] <= w[1][1] && w[0][0] <= w[1][0]),
            "monotonic"
        );
        let last = rows.last().unwrap();
        assert_eq!((last[1], last[2]), (1.0, 1000.0));
        assert!((last[0] - 10.0).abs() < 0.02, "max 10 ms: {last:?}");
        assert!(text.contains("#[Mean    =") && text.contains("Total count    =         1000]"));
    }
}
