//! The request path through the per-core layer, as every driver drives it:
//! a warm cache hit makes no heap allocation, and both paths — a warm hit
//! and a proxied request over a pooled upstream connection — are the
//! steady yardstick for `valgrind --tool=callgrind` (`ROUNDS` sets how many
//! requests each test serves after its warm-up; the difference between two
//! counts over the difference in rounds is the cost of one request).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};
use ultragate_dataplane::access::AccessLog;
use ultragate_dataplane::cache::{Cache, CacheConfig};
use ultragate_dataplane::endpoint::{
    ClientId, Command, Endpoint, EndpointConfig, Event, Parts, UpstreamId,
};
use ultragate_dataplane::http::request::RequestLimits;
use ultragate_dataplane::live::{Live, PoolSpec};
use ultragate_dataplane::proxy::EngineConfig;
use ultragate_dataplane::status::DataplaneStatus;

struct Counting;

thread_local! {
    /// Allocations of this thread: the tests run side by side.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    ALLOCATIONS.with(|a| a.set(a.get() + 1));
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
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

fn rounds() -> usize {
    std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

fn endpoint(cache: bool, t0: Instant) -> Endpoint {
    let engine = Arc::new(EngineConfig {
        limits: RequestLimits {
            max_header_bytes: 16384,
            max_body_bytes: 1 << 20,
        },
        response_timeout: Duration::from_secs(5),
        coalesce_wait: Duration::from_secs(1),
        ..EngineConfig::new("origin:80".into(), (t0, SystemTime::now()))
    });
    let origin = vec![SocketAddr::from(([127, 0, 0, 1], 9))];
    let live = Arc::new(Live::new(
        engine,
        PoolSpec::new(origin, Duration::from_secs(60), 4, 3),
        PoolSpec::new(Vec::new(), Duration::from_secs(60), 4, 3),
    ));
    let status = Arc::new(DataplaneStatus::default());
    status.set_serving(true);
    let cache = cache.then(|| {
        Arc::new(Cache::new(CacheConfig {
            max_bytes: 64 << 20,
            max_object_bytes: 1 << 20,
        }))
    });
    let (stats, _) = mpsc::channel();
    let parts = Parts {
        status,
        cache,
        live,
        access: Arc::new(AccessLog::new()),
        stats,
        tls: None,
    };
    let cfg = EndpointConfig {
        core: 0,
        max_connections: 16,
        max_connections_per_client: usize::MAX,
        drain_timeout: Duration::from_secs(1),
        stats_interval: Duration::from_secs(3600),
        local_admin: false,
    };
    Endpoint::new(cfg, parts, t0)
}

/// A transport that completes every operation at once: what a driver does
/// per request, minus the syscalls.
struct Wire {
    ep: Endpoint,
    now: Instant,
    client: ClientId,
    /// Connects asked for and not yet answered.
    connects: Vec<UpstreamId>,
    /// Bytes the client got.
    got: usize,
}

impl Wire {
    fn new(ep: Endpoint, now: Instant) -> Wire {
        let mut ep = ep;
        let client = ep
            .accept(now, SocketAddr::from(([10, 0, 0, 9], 40000)))
            .expect("under the limit");
        Wire {
            ep,
            now,
            client,
            connects: Vec::with_capacity(4),
            got: 0,
        }
    }

    /// Carries out commands: client output written whole, upstream output
    /// taken whole, connects remembered.
    fn pump(&mut self) {
        while let Some(cmd) = self.ep.poll_command() {
            match cmd {
                Command::Client(id) => {
                    if self.ep.client_interest(id).write {
                        self.ep.pin_client_output(id);
                        let mut slices = [IoSlice::new(&[]); 8];
                        let n = self.ep.client_slices(id, &mut slices);
                        let sent: usize = slices[..n].iter().map(|s| s.len()).sum();
                        self.got += sent;
                        self.ep.handle(self.now, Event::ClientWritten(id, sent));
                    }
                }
                Command::Upstream(u) => {
                    let n = self.ep.upstream_output(u).len();
                    if n > 0 {
                        self.ep.handle(self.now, Event::UpstreamWritten(u, n));
                    }
                }
                Command::Connect { up, .. } => self.connects.push(up),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn request(&mut self) {
        self.ep
            .handle(self.now, Event::ClientBytes(self.client, REQUEST));
        self.pump();
    }
}

const RESPONSE: &str =
    "HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 1024\r\n\r\n";

/// A miss: connected, request written, response in.
fn fetch(w: &mut Wire, up: UpstreamId, body: &[u8]) {
    w.ep.handle(w.now, Event::UpstreamBytes(up, RESPONSE.as_bytes()));
    w.ep.handle(w.now, Event::UpstreamBytes(up, body));
    w.pump();
}

#[test]
fn a_warm_cache_hit_through_the_endpoint_allocates_nothing() {
    let t0 = Instant::now();
    let mut w = Wire::new(endpoint(true, t0), t0);
    let body = vec![b'x'; 1024];
    w.request();
    let up = w.connects.pop().expect("a miss connects");
    w.ep.handle(t0, Event::Connected(up));
    w.pump();
    fetch(&mut w, up, &body);
    w.now = t0 + Duration::from_millis(5);
    for _ in 0..100 {
        w.request();
    }
    assert!(w.connects.is_empty(), "hits never connect");
    // Read before counting: the variable's value is a String.
    let n = rounds();
    let (before, got) = (allocations(), w.got);
    for _ in 0..n {
        w.request();
    }
    let allocated = allocations() - before;
    assert!(w.got - got > n * 1024);
    assert_eq!(allocated, 0, "allocations over {n} cache hits");
}

#[test]
fn a_proxied_request_reuses_its_pooled_connection() {
    let t0 = Instant::now();
    let mut w = Wire::new(endpoint(false, t0), t0);
    let body = vec![b'x'; 1024];
    w.request();
    let up = w.connects.pop().expect("the first request connects");
    w.ep.handle(t0, Event::Connected(up));
    w.pump();
    fetch(&mut w, up, &body);
    let n = rounds();
    for _ in 0..n {
        w.request();
        fetch(&mut w, up, &body);
    }
    assert!(w.connects.is_empty(), "one connection, reused");
    assert!(w.got > (n + 1) * 1024);
}
