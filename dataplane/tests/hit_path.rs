//! The hot path allocates nothing: once a keep-alive connection is warm, a
//! cache hit — request in, lookup, head encoded, body queued, output pinned
//! and handed out as slices, written, statistics collected, as the io_uring
//! and epoll drivers call the engine — makes no heap allocation. A counting
//! allocator checks it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::IoSlice;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use ultragate_dataplane::cache::{Cache, CacheConfig};
use ultragate_dataplane::http::request::RequestLimits;
use ultragate_dataplane::proxy::{Action, Conn, ConnEvent, EngineConfig};
use ultragate_dataplane::stats::CoreStats;
use ultragate_dataplane::status::DataplaneStatus;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const REQUEST: &[u8] = b"GET /page HTTP/1.1\r\nHost: gateway\r\n\r\n";

/// What a driver does with one request's worth of client bytes: feed them,
/// carry out actions, pin and send the output in one go, book completions.
fn serve(c: &mut Conn, stats: &mut CoreStats, now: Instant) -> usize {
    c.handle(now, ConnEvent::ClientBytes(REQUEST));
    while let Some(a) = c.poll_action() {
        assert!(!matches!(a, Action::Connect { .. }), "a hit never connects");
    }
    c.pin_client_output();
    let mut slices = [IoSlice::new(&[]); 8];
    let n = c.client_slices(&mut slices);
    let sent: usize = slices[..n].iter().map(|s| s.len()).sum();
    c.handle(now, ConnEvent::ClientWritten(sent));
    while let Some(done) = c.poll_completion() {
        stats.record(&done);
    }
    sent
}

#[test]
fn a_warm_cache_hit_allocates_nothing() {
    let t0 = Instant::now();
    let cfg = Arc::new(EngineConfig {
        limits: RequestLimits {
            max_header_bytes: 16384,
            max_body_bytes: 1 << 20,
        },
        response_timeout: Duration::from_secs(5),
        coalesce_wait: Duration::from_secs(1),
        ..EngineConfig::new("origin:80".into(), (t0, SystemTime::now()))
    });
    let status = Arc::new(DataplaneStatus::default());
    status.set_serving(true);
    let cache = Arc::new(Cache::new(CacheConfig {
        max_bytes: 64 << 20,
        max_object_bytes: 1 << 20,
    }));
    let client = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));

    // Fill the cache through the engine: a miss fetched from the origin.
    let mut miss = Conn::new(cfg.clone(), status.clone(), Some(cache.clone()), client, t0);
    miss.handle(t0, ConnEvent::ClientBytes(REQUEST));
    while miss.poll_action().is_some() {}
    miss.handle(t0, ConnEvent::UpstreamConnected { reused: false });
    let n = miss.upstream_output().len();
    miss.handle(t0, ConnEvent::UpstreamWritten(n));
    let body = "x".repeat(1024);
    let resp = format!(
        "HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 1024\r\n\r\n{body}"
    );
    miss.handle(t0, ConnEvent::UpstreamBytes(resp.as_bytes()));

    let mut c = Conn::new(cfg, status, Some(cache), client, t0);
    let mut stats = CoreStats::default();
    let now = t0 + Duration::from_millis(5);
    for _ in 0..100 {
        assert!(serve(&mut c, &mut stats, now) > 1024);
    }
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let mut sent = 0;
    // `ROUNDS` sets the count, for callgrind (see `endpoint_path.rs`).
    let rounds = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000usize);
    for _ in 0..rounds {
        sent += serve(&mut c, &mut stats, now);
    }
    let allocated = ALLOCATIONS.load(Ordering::SeqCst) - before;
    assert!(sent > rounds * 1024);
    assert_eq!(allocated, 0, "allocations over {rounds} cache hits");
}
