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
/// The writer's buffer: large writes, few system calls.
const WRITE_BUFFER: usize = 1 << 20;
/// How often the writer looks at the queues.
const WRITER_TICK: Duration = Duration::from_millis(20);
/// Longest `X-Request-Id` taken from a client.
const MAX_REQUEST_ID: usize = 128;
/// Most bytes of `User-Agent` and `Referer` a record keeps.
pub const MAX_LOGGED_FIELD: usize = 256;

/// One answered request, as the access log writes it.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// When its first byte came in.
    pub time: SystemTime,
    /// The client's address and port (filled by the driver).
    pub client: Option<SocketAddr>,
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
    /// The route that matched (none: no route took the request).
    pub route: Option<Arc<str>>,
    /// The pool whose server answered: the route's, or its fallback's
    /// when diverted or retried there (filled by the driver).
    pub pool: Option<Arc<str>>,
    /// The upstream server that answered (filled by the driver).
    pub upstream: Option<SocketAddr>,
    /// Upstream connects made.
    pub attempts: u32,
    /// Microseconds: first byte to head parsed.
    pub head_us: u64,
    /// Microseconds: head parsed to the cache's decision (waiting for
    /// another connection's fetch included).
    pub cache_us: Option<u64>,
    /// Microseconds: the last upstream connect.
    pub connect_us: Option<u64>,
    /// Microseconds: first byte to the first upstream response byte.
    pub upstream_first_byte_us: Option<u64>,
    /// Microseconds: first byte to response complete.
    pub total_us: u64,
    /// Also for the audit log (security isolation is on).
    pub audit: bool,
    /// Method, host, target, request id, traceparent, user agent and
    /// referer, one after the other: one allocation per record.
    text: String,
    ends: [u32; 7],
}

impl AccessRecord {
    /// A record of a request: its method, host, target, `X-Request-Id`,
    /// `traceparent`, `User-Agent` and `Referer`.
    pub fn new(time: SystemTime, protocol: &'static str, parts: [&str; 7]) -> AccessRecord {
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u32; 7];
        for (end, part) in ends.iter_mut().zip(parts) {
            text.push_str(part);
            *end = text.len() as u32;
        }
        AccessRecord {
            time,
            client: None,
            protocol,
            status: 0,
            request_bytes: 0,
            response_bytes: 0,
            cache: "none",
            route: None,
            pool: None,
            upstream: None,
            attempts: 0,
            head_us: 0,
            cache_us: None,
            connect_us: None,
            upstream_first_byte_us: None,
            total_us: 0,
            audit: false,
            text,
            ends,
        }
    }

    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..self.ends[i] as usize).unwrap_or("")
    }

    /// The request method.
    pub fn method(&self) -> &str {
        self.part(0)
    }

    /// The `Host` field (or the absolute target's authority).
    pub fn host(&self) -> &str {
        self.part(1)
    }

    /// The request target.
    pub fn target(&self) -> &str {
        self.part(2)
    }

    /// `X-Request-Id`, as sent or made up.
    pub fn request_id(&self) -> &str {
        self.part(3)
    }

    /// W3C `traceparent`, as sent or made up.
    pub fn traceparent(&self) -> &str {
        self.part(4)
    }

    /// `User-Agent`, at most [`MAX_LOGGED_FIELD`] bytes of it.
    pub fn user_agent(&self) -> &str {
        self.part(5)
    }

    /// `Referer`, at most [`MAX_LOGGED_FIELD`] bytes of it.
    pub fn referer(&self) -> &str {
        self.part(6)
    }

    /// The record as one JSON line (without the newline), appended to
    /// `out` without other allocations.
    pub fn json(&self, out: &mut String) {
        out.push_str("{\"time\":\"");
        rfc3339_micros(self.time, out);
        out.push_str("\",\"client\":");
        addr(out, self.client);
        // The method is a token, the id and the trace are checked to hold
        // no character JSON escapes; host and target are escaped.
        out.push_str(",\"method\":\"");
        out.push_str(self.method());
        out.push_str("\",\"host\":");
        escaped(out, self.host());
        out.push_str(",\"target\":");
        escaped(out, self.target());
        out.push_str(",\"protocol\":\"");
        out.push_str(self.protocol);
        out.push_str("\",\"status\":");
        num(out, u64::from(self.status));
        out.push_str(",\"request_bytes\":");
        num(out, self.request_bytes);
        out.push_str(",\"response_bytes\":");
        num(out, self.response_bytes);
        out.push_str(",\"cache\":\"");
        out.push_str(self.cache);
        out.push_str("\",\"route\":");
        optional(out, self.route.as_deref());
        out.push_str(",\"pool\":");
        optional(out, self.pool.as_deref());
        out.push_str(",\"upstream\":");
        addr(out, self.upstream);
        out.push_str(",\"attempts\":");
        num(out, u64::from(self.attempts));
        out.push_str(",\"head_us\":");
        num(out, self.head_us);
        for (name, v) in [
            (",\"cache_us\":", self.cache_us),
            (",\"connect_us\":", self.connect_us),
            (",\"upstream_first_byte_us\":", self.upstream_first_byte_us),
        ] {
            out.push_str(name);
            match v {
                Some(v) => num(out, v),
                None => out.push_str("null"),
            }
        }
        out.push_str(",\"total_us\":");
        num(out, self.total_us);
        out.push_str(",\"request_id\":\"");
        out.push_str(self.request_id());
        out.push_str("\",\"traceparent\":\"");
        out.push_str(self.traceparent());
        out.push_str("\",\"user_agent\":");
        optional(out, Some(self.user_agent()).filter(|v| !v.is_empty()));
        out.push_str(",\"referer\":");
        optional(out, Some(self.referer()).filter(|v| !v.is_empty()));
        out.push('}');
    }
}

/// A JSON string, escaped, or `null`.
fn optional(out: &mut String, v: Option<&str>) {
    match v {
        Some(v) => escaped(out, v),
        None => out.push_str("null"),
    }
}

/// A decimal number (see [`crate::http::decimal`]).
fn num(out: &mut String, v: u64) {
    for &d in crate::http::decimal::digits(v, &mut [0; 20]) {
        out.push(char::from(d));
    }
}

fn addr(out: &mut String, a: Option<SocketAddr>) {
    match a {
        Some(SocketAddr::V4(a)) => {
            out.push('"');
            for (i, o) in a.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                num(out, u64::from(*o));
            }
            out.push(':');
            num(out, u64::from(a.port()));
            out.push('"');
        }
        Some(a) => {
            let _ = write!(out, "\"{a}\"");
        }
        None => out.push_str("null"),
    }
}

/// A JSON string: the text whole when nothing needs escaping.
/// Bytes a JSON string cannot hold as they are.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

fn escaped(out: &mut String, s: &str) {
    out.push('"');
    if !s.as_bytes().iter().any(|&b| NEEDS_ESCAPE[b as usize]) {
        out.push_str(s);
    } else {
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
    }
    out.push('"');
}

thread_local! {
    /// The writer's last second and its `YYYY-MM-DDTHH:MM:SS` text.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// `2026-11-30T23:27:02.960317Z`, appended; the date and time of day are
/// worked out once per second.
fn rfc3339_micros(t: SystemTime, out: &mut String) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    SECOND.with(|s| {
        let mut s = s.borrow_mut();
        if s.0 != d.as_secs() {
            s.1.clear();
            civil(d.as_secs(), &mut s.1);
            s.0 = d.as_secs();
        }
        out.push_str(&s.1);
    });
    let micros = d.subsec_micros();
    out.push('.');
    for &d in crate::http::decimal::padded(u64::from(micros), 6, &mut [0; 20]) {
        out.push(char::from(d));
    }
    out.push('Z');
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix second.
fn civil(secs: u64, out: &mut String) {
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
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
    );
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
            AccessSink::Stdout => Some(Box::new(std::io::BufWriter::with_capacity(
                WRITE_BUFFER,
                std::io::stdout(),
            ))),
            AccessSink::File(p) => match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
            {
                Ok(f) => Some(Box::new(std::io::BufWriter::with_capacity(WRITE_BUFFER, f))),
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
/// characters other than `"` and `\` (it is echoed in a header and in a
/// log line as it is).
pub fn valid_request_id(v: &[u8]) -> Option<&str> {
    (!v.is_empty()
        && v.len() <= MAX_REQUEST_ID
        && v.iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\'))
    .then(|| std::str::from_utf8(v).ok())
    .flatten()
}

/// The 16 hex digits of `v` into `out` (16 bytes).
fn hex(out: &mut [u8], v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in v.to_be_bytes().iter().enumerate() {
        if let Some(pair) = out.get_mut(2 * i..2 * i + 2) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 15)];
        }
    }
}

/// A new request id: 32 hex digits.
pub fn new_request_id() -> [u8; 32] {
    let mut id = [0u8; 32];
    hex(&mut id[..16], random_u64());
    hex(&mut id[16..], random_u64());
    id
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
pub fn new_traceparent() -> [u8; 55] {
    let mut t = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex(&mut t[3..19], random_u64());
    hex(&mut t[19..35], random_u64() | 1);
    hex(&mut t[36..52], random_u64() | 1);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord {
        let mut r = AccessRecord::new(
            UNIX_EPOCH + Duration::from_micros(1_764_545_222_960_317),
            "HTTP/1.1",
            [
                "GET",
                "a\"b",
                "/x?q=\u{1}",
                "abc",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "curl/8 \"x\"\n",
                "",
            ],
        );
        r.client = Some("127.0.0.1:5000".parse().unwrap());
        r.status = 200;
        r.cache = "hit";
        r.cache_us = Some(1);
        r
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
        assert_eq!(v["user_agent"], "curl/8 \"x\"\n");
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert_eq!(v["route"], serde_json::Value::Null);
        assert_eq!(v["pool"], serde_json::Value::Null);
    }

    #[test]
    fn ids_and_trace_context() {
        assert_eq!(valid_request_id(b"req-1"), Some("req-1"));
        assert_eq!(valid_request_id(b"a b"), None);
        assert_eq!(valid_request_id(b"a\"b"), None);
        assert_eq!(valid_request_id(&[b'x'; 129]), None);
        assert!(valid_request_id(&new_request_id()).is_some());
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
        assert!(valid_traceparent(&new_traceparent()).is_some());
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
