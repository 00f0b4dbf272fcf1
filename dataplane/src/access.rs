//! The access log: one JSON line per request, written off the hot path.
//! The engine fills a record while it answers (only while the log is
//! wanted); each data core pushes it, without a lock, onto its own bounded
//! queue; a writer thread drains the queues, formats the lines and writes
//! them. A full queue drops the record and counts it: a slow disk never
//! blocks a core.

use crossbeam_queue::ArrayQueue;
use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Records one core may hold before the writer takes them.
const QUEUE: usize = 16 * 1024;
/// How often the writer looks at the queues.
const WRITER_TICK: Duration = Duration::from_millis(20);
/// Longest `X-Request-Id` taken from a client.
const MAX_REQUEST_ID: usize = 128;

/// One answered request, as the access log writes it.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// When its first byte came in.
    pub time: SystemTime,
    /// The client's address and port (filled by the driver).
    pub client: Option<SocketAddr>,
    /// Request method, host and target as sent.
    pub method: Box<str>,
    /// The `Host` field (or the absolute target's authority).
    pub host: Box<str>,
    /// The request target.
    pub target: Box<str>,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub protocol: &'static str,
    /// The status sent.
    pub status: u16,
    /// Bytes received from the client for this request, head included.
    pub request_bytes: u64,
    /// Bytes queued to the client for this response, head included.
    pub response_bytes: u64,
    /// `hit`, `miss`, `stale`, `bypass` or `none`.
    pub cache: &'static str,
    /// The route that matched.
    pub route: &'static str,
    /// The upstream server that answered (filled by the driver).
    pub upstream: Option<SocketAddr>,
    /// Upstream connects made.
    pub attempts: u32,
    /// Microseconds: first byte to head parsed.
    pub head_us: u64,
    /// Microseconds: head parsed to the cache's decision.
    pub cache_us: Option<u64>,
    /// Microseconds: the last upstream connect.
    pub connect_us: Option<u64>,
    /// Microseconds: first byte to the first upstream response byte.
    pub upstream_first_byte_us: Option<u64>,
    /// Microseconds: first byte to response complete.
    pub total_us: u64,
    /// `X-Request-Id`, as sent or made up.
    pub request_id: Box<str>,
    /// W3C `traceparent`, as sent or made up.
    pub traceparent: Box<str>,
    /// Also for the audit log (security isolation is on).
    pub audit: bool,
}

impl AccessRecord {
    /// The record as one JSON line (without the newline).
    pub fn json(&self, out: &mut String) {
        let time = rfc3339_micros(self.time);
        let _ = write!(out, "{{\"time\":\"{time}\"");
        let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string());
        let client = addr(self.client);
        let _ = write!(
            out,
            ",\"client\":{},\"method\":{},\"host\":{},\"target\":{},\"protocol\":\"{}\",\"status\":{},\"request_bytes\":{},\"response_bytes\":{},\"cache\":\"{}\",\"route\":\"{}\",\"upstream\":{},\"attempts\":{}",
            Json(client.as_deref()),
            Json(Some(&self.method)),
            Json(Some(&self.host)),
            Json(Some(&self.target)),
            self.protocol,
            self.status,
            self.request_bytes,
            self.response_bytes,
            self.cache,
            self.route,
            Json(addr(self.upstream).as_deref()),
            self.attempts,
        );
        let opt = |v: Option<u64>| v.map_or("null".to_owned(), |v| v.to_string());
        let _ = write!(
            out,
            ",\"head_us\":{},\"cache_us\":{},\"connect_us\":{},\"upstream_first_byte_us\":{},\"total_us\":{},\"request_id\":{},\"traceparent\":{}}}",
            self.head_us,
            opt(self.cache_us),
            opt(self.connect_us),
            opt(self.upstream_first_byte_us),
            self.total_us,
            Json(Some(&self.request_id)),
            Json(Some(&self.traceparent)),
        );
    }
}

/// A JSON string (escaped) or `null`.
struct Json<'a>(Option<&'a str>);

impl std::fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(s) = self.0 else {
            return f.write_str("null");
        };
        f.write_char('"')?;
        for c in s.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

/// `2026-11-30T23:27:02.960317Z`.
fn rfc3339_micros(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessSink {
    /// Not written.
    Off,
    /// JSON lines on stdout.
    Stdout,
    /// JSON lines appended to a file (reopened on SIGUSR1, for logrotate).
    File(std::path::PathBuf),
}

/// Receives every record while `[security] log_all_requests` is on: the
/// audit log.
pub type AuditLines = Box<dyn Fn(&str) + Send + Sync>;

/// The per-core queues, the switches and the counters the writer and the
/// engine share.
pub struct AccessLog {
    queues: Mutex<Vec<Arc<ArrayQueue<AccessRecord>>>>,
    /// `[log] access` is not off.
    to_sink: AtomicBool,
    /// `[security] log_all_requests`, or isolation.
    to_audit: AtomicBool,
    /// `[log] access_sample` as a fraction of `u32::MAX`.
    sample: AtomicU64,
    dropped: AtomicU64,
    written: AtomicU64,
    reopen: AtomicBool,
    sink: Mutex<AccessSink>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field(
                "sink",
                &*self.sink.lock().unwrap_or_else(|e| e.into_inner()),
            )
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// This thread's queue (a data core's), registered at its first push.
    static QUEUE_OF_THREAD: RefCell<Option<Arc<ArrayQueue<AccessRecord>>>> = const { RefCell::new(None) };
    /// A cheap per-thread generator for ids and sampling (xorshift64*).
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// 64 random-looking bits: xorshift64*, seeded per thread from the clock
/// and the thread's stack address. Ids, not secrets.
pub fn random_u64() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        if x == 0 {
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64;
            x = (t ^ (&x as *const u64 as u64).rotate_left(32)) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

impl AccessLog {
    /// Off until configured.
    pub fn new() -> AccessLog {
        AccessLog {
            queues: Mutex::new(Vec::new()),
            to_sink: AtomicBool::new(false),
            to_audit: AtomicBool::new(false),
            sample: AtomicU64::new(u64::from(u32::MAX)),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            reopen: AtomicBool::new(false),
            sink: Mutex::new(AccessSink::Off),
        }
    }

    /// Points the log at `sink` with a sampling share (0.0 to 1.0).
    pub fn configure(&self, sink: AccessSink, sample: f64) {
        self.to_sink
            .store(sink != AccessSink::Off, Ordering::Relaxed);
        *self.sink.lock().unwrap_or_else(|e| e.into_inner()) = sink;
        self.reopen.store(true, Ordering::Relaxed);
        let share = (sample.clamp(0.0, 1.0) * f64::from(u32::MAX)) as u64;
        self.sample.store(share, Ordering::Relaxed);
    }

    /// Every request also goes to the audit log (`log_all_requests`).
    pub fn set_audit(&self, on: bool) {
        self.to_audit.store(on, Ordering::Relaxed);
    }

    /// Whether a request starting now is recorded: one or two relaxed
    /// loads, and a sampling draw when the sink takes a share.
    pub fn wanted(&self) -> bool {
        if self.to_audit.load(Ordering::Relaxed) {
            return true;
        }
        if !self.to_sink.load(Ordering::Relaxed) {
            return false;
        }
        let share = self.sample.load(Ordering::Relaxed);
        share >= u64::from(u32::MAX) || (random_u64() >> 32) < share
    }

    /// Queues a record on this thread's queue; a full queue drops it.
    pub fn push(&self, rec: AccessRecord) {
        let queue = QUEUE_OF_THREAD.with(|q| {
            q.borrow_mut()
                .get_or_insert_with(|| {
                    let queue = Arc::new(ArrayQueue::new(QUEUE));
                    self.queues
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(queue.clone());
                    queue
                })
                .clone()
        });
        if queue.push(rec).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records dropped because a queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records written.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Reopens the file at its next write (SIGUSR1 after logrotate).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Starts the writer thread; it runs until `stop` is set, then writes
    /// what is queued and returns.
    pub fn spawn_writer(
        self: &Arc<Self>,
        audit: AuditLines,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("ug-access-log".into())
            .spawn(move || me.write_loop(&audit, &stop))
    }

    fn write_loop(&self, audit: &AuditLines, stop: &AtomicBool) {
        let mut out: Option<Box<dyn Write>> = None;
        let mut line = String::with_capacity(512);
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if self.reopen.swap(false, Ordering::Relaxed) {
                if let Some(o) = out.as_mut() {
                    let _ = o.flush();
                }
                out = self.open_sink();
            }
            let queues = self
                .queues
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let mut wrote = false;
            for q in &queues {
                while let Some(rec) = q.pop() {
                    line.clear();
                    rec.json(&mut line);
                    if rec.audit || self.to_audit.load(Ordering::Relaxed) {
                        audit(&line);
                    }
                    if let Some(o) = out.as_mut() {
                        line.push('\n');
                        let _ = o.write_all(line.as_bytes());
                    }
                    self.written.fetch_add(1, Ordering::Relaxed);
                    wrote = true;
                }
            }
            if wrote {
                if let Some(o) = out.as_mut() {
                    let _ = o.flush();
                }
            }
            if stopping {
                return;
            }
            std::thread::sleep(WRITER_TICK);
        }
    }

    fn open_sink(&self) -> Option<Box<dyn Write>> {
        let sink = self.sink.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match sink {
            AccessSink::Off => None,
            AccessSink::Stdout => Some(Box::new(std::io::BufWriter::new(std::io::stdout()))),
            AccessSink::File(p) => match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
            {
                Ok(f) => Some(Box::new(std::io::BufWriter::new(f))),
                Err(e) => {
                    tracing::error!(path = %p.display(), error = %e, "cannot open the access log");
                    None
                }
            },
        }
    }
}

impl Default for AccessLog {
    fn default() -> Self {
        Self::new()
    }
}

/// An `X-Request-Id` a client sent, if usable: 1 to 128 visible ASCII
/// characters (it is echoed in a header and a log line).
pub fn valid_request_id(v: &[u8]) -> Option<&str> {
    (!v.is_empty() && v.len() <= MAX_REQUEST_ID && v.iter().all(|b| b.is_ascii_graphic()))
        .then(|| std::str::from_utf8(v).ok())
        .flatten()
}

/// A new request id: 32 hex digits.
pub fn new_request_id() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

/// A `traceparent` a client sent, if valid (W3C Trace Context, version
/// 00: `00-<32 hex, not all zero>-<16 hex, not all zero>-<2 hex>`).
pub fn valid_traceparent(v: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(v).ok()?;
    let mut parts = s.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |p: &str| p.bytes().any(|b| b != b'0');
    (parts.next().is_none()
        && version == "00"
        && hex(trace, 32)
        && nonzero(trace)
        && hex(parent, 16)
        && nonzero(parent)
        && hex(flags, 2))
    .then_some(s)
}

/// A new `traceparent` (a new trace, not sampled).
pub fn new_traceparent() -> String {
    format!(
        "00-{:016x}{:016x}-{:016x}-00",
        random_u64(),
        random_u64() | 1,
        random_u64() | 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord {
        AccessRecord {
            time: UNIX_EPOCH + Duration::from_micros(1_764_545_222_960_317),
            client: Some("127.0.0.1:5000".parse().unwrap()),
            method: "GET".into(),
            host: "a\"b".into(),
            target: "/x?q=\u{1}".into(),
            protocol: "HTTP/1.1",
            status: 200,
            request_bytes: 40,
            response_bytes: 100,
            cache: "hit",
            route: "default",
            upstream: None,
            attempts: 0,
            head_us: 3,
            cache_us: Some(1),
            connect_us: None,
            upstream_first_byte_us: None,
            total_us: 9,
            request_id: "abc".into(),
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            audit: false,
        }
    }

    #[test]
    fn a_record_is_one_json_object() {
        let mut line = String::new();
        record().json(&mut line);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2025-11-30T23:27:02.960317Z");
        assert_eq!(v["host"], "a\"b");
        assert_eq!(v["target"], "/x?q=\u{1}");
        assert_eq!(v["upstream"], serde_json::Value::Null);
        assert_eq!(v["cache_us"], 1);
        assert_eq!(v["client"], "127.0.0.1:5000");
    }

    #[test]
    fn ids_and_trace_context() {
        assert_eq!(valid_request_id(b"req-1"), Some("req-1"));
        assert_eq!(valid_request_id(b"a b"), None);
        assert_eq!(valid_request_id(&[b'x'; 129]), None);
        assert_eq!(new_request_id().len(), 32);
        let t = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(valid_traceparent(t.as_bytes()), Some(t));
        for bad in [
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
        ] {
            assert_eq!(valid_traceparent(bad.as_bytes()), None, "{bad}");
        }
        assert!(valid_traceparent(new_traceparent().as_bytes()).is_some());
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let log = AccessLog::new();
        for _ in 0..QUEUE + 5 {
            log.push(record());
        }
        assert_eq!(log.dropped(), 5);
    }
}
