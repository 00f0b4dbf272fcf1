//! The per-core layer driven by hand: cases the simulation does not aim at.

use super::*;
use crate::http::request::RequestLimits;
use crate::live::PoolSpec;
use crate::proxy::EngineConfig;
use std::time::SystemTime;

/// Engine settings for the layer's tests (the simulation's too), with
/// `epoch` as the start of the monotonic clock and the wall clock at the
/// Unix epoch, so nothing depends on the real time.
pub(super) fn engine(epoch: Instant) -> Arc<EngineConfig> {
    Arc::new(EngineConfig {
        limits: RequestLimits {
            max_header_bytes: 8192,
            max_body_bytes: 1 << 20,
        },
        max_response_head_bytes: 8192,
        response_timeout: Duration::from_secs(5),
        connect_attempts: 2,
        coalesce_wait: Duration::from_secs(1),
        ..EngineConfig::new("a".into(), (epoch, SystemTime::UNIX_EPOCH))
    })
}

fn endpoint(t0: Instant, fallback: PoolSpec) -> (Endpoint, Arc<DataplaneStatus>) {
    endpoint_with(t0, fallback, None)
}

fn endpoint_with(
    t0: Instant,
    fallback: PoolSpec,
    cache: Option<Arc<crate::cache::Cache>>,
) -> (Endpoint, Arc<DataplaneStatus>) {
    let engine = engine(t0);
    let primary = PoolSpec::new(
        vec![SocketAddr::from(([127, 0, 0, 1], 1))],
        Duration::from_secs(60),
        4,
        3,
    );
    let status = Arc::new(DataplaneStatus::default());
    let (stats, _) = mpsc::channel();
    let parts = Parts {
        status: status.clone(),
        cache,
        live: Arc::new(Live::new(engine, primary, fallback)),
        access: Arc::new(AccessLog::new()),
        stats,
        tls: None,
    };
    let cfg = EndpointConfig {
        core: 0,
        max_connections: 8,
        max_connections_per_client: usize::MAX,
        drain_timeout: Duration::from_secs(1),
        stats_interval: Duration::from_secs(3600),
        local_admin: false,
    };
    (Endpoint::new(cfg, parts, t0), status)
}

/// Carries out commands; returns the connects asked for.
fn connects(ep: &mut Endpoint) -> Vec<(UpstreamId, SocketAddr)> {
    let mut out = Vec::new();
    while let Some(cmd) = ep.poll_command() {
        if let Command::Connect { up, addr } = cmd {
            out.push((up, addr));
        }
    }
    out
}

fn client_output(ep: &Endpoint, id: ClientId) -> String {
    let mut slices = [std::io::IoSlice::new(&[]); 8];
    let n = ep.client_slices(id, &mut slices);
    slices[..n]
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[test]
fn the_fallback_pools_own_timeouts_apply_to_requests_sent_there() {
    let t0 = Instant::now();
    let fallback = PoolSpec::new(
        vec![SocketAddr::from(([127, 0, 0, 1], 2))],
        Duration::from_secs(60),
        4,
        3,
    )
    .with_timeouts(Duration::from_millis(200), Duration::from_millis(300));
    let (mut ep, _) = endpoint(t0, fallback);
    ep.parts
        .live
        .load()
        .primary()
        .diverted
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let id = ep
        .accept(t0, SocketAddr::from(([10, 0, 0, 1], 5000)))
        .unwrap();
    ep.handle(
        t0,
        Event::ClientBytes(id, b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"),
    );
    let [(up, addr)] = connects(&mut ep)[..] else {
        panic!("one connect")
    };
    assert_eq!(addr.port(), 2, "routed to the fallback");
    assert!(
        ep.poll_timeout() <= t0 + Duration::from_millis(200),
        "its connect timeout"
    );
    ep.handle(t0, Event::Connected(up));
    let n = ep.upstream_output(up).len();
    ep.handle(t0, Event::UpstreamWritten(up, n));
    connects(&mut ep);
    // Timers fire (an early one is harmless) until the client has its
    // answer: at the fallback's 300 ms, not the engine's 5 s.
    let mut at = t0;
    while client_output(&ep, id).is_empty() && at < t0 + Duration::from_secs(10) {
        at = ep.poll_timeout();
        ep.handle(at, Event::Timer);
    }
    assert_eq!(at, t0 + Duration::from_millis(300), "its response timeout");
    let out = client_output(&ep, id);
    assert!(out.starts_with("HTTP/1.1 504"), "{out}");
}

#[test]
fn a_stale_while_revalidate_refresh_runs_beside_the_client_not_in_its_slot() {
    use crate::cache::{Cache, CacheConfig};
    let t0 = Instant::now();
    let fallback = PoolSpec::new(Vec::new(), Duration::from_secs(60), 4, 3);
    let cache = Arc::new(Cache::new(CacheConfig {
        max_bytes: 1 << 20,
        max_object_bytes: 1 << 16,
    }));
    let (mut ep, _) = endpoint_with(t0, fallback, Some(cache));
    let get = b"GET /s HTTP/1.1\r\nHost: a\r\n\r\n";
    let id = ep
        .accept(t0, SocketAddr::from(([10, 0, 0, 1], 5000)))
        .unwrap();
    // The first request fills the cache: max-age=1, stale-while-revalidate=60.
    ep.handle(t0, Event::ClientBytes(id, get));
    let [(up, _)] = connects(&mut ep)[..] else {
        panic!("one connect")
    };
    ep.handle(t0, Event::Connected(up));
    let n = ep.upstream_output(up).len();
    ep.handle(t0, Event::UpstreamWritten(up, n));
    ep.handle(
        t0,
        Event::UpstreamBytes(
            up,
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=1, stale-while-revalidate=60\r\nContent-Length: 2\r\n\r\nv1",
        ),
    );
    let written = |ep: &mut Endpoint, at: Instant| {
        let out = client_output(ep, id);
        ep.handle(at, Event::ClientWritten(id, out.len()));
        out
    };
    assert!(written(&mut ep, t0).ends_with("v1"));

    // Two seconds later: stale. The answer is immediate, and the refresh
    // is a fetch of its own on the pooled connection.
    let t1 = t0 + Duration::from_secs(2);
    ep.handle(t1, Event::ClientBytes(id, get));
    let out = written(&mut ep, t1);
    assert!(
        out.contains("X-Cache: STALE") && out.ends_with("v1"),
        "{out}"
    );
    assert!(
        connects(&mut ep).is_empty(),
        "the refresh reuses the pooled connection"
    );
    let refresh = ep.upstream_output(up).to_vec();
    let text = String::from_utf8_lossy(&refresh);
    assert!(text.starts_with("GET /s HTTP/1.1\r\n"), "{text}");
    assert!(
        text.contains("\r\nX-Forwarded-For: 10.0.0.1\r\n"),
        "the refresh speaks for the client that found it stale: {text}"
    );
    ep.handle(t1, Event::UpstreamWritten(up, refresh.len()));
    // The origin is slow on the refresh; the client's next request on the
    // same connection does not wait for it.
    ep.handle(t1, Event::ClientBytes(id, get));
    let out = written(&mut ep, t1);
    assert!(
        out.contains("X-Cache: STALE") && out.ends_with("v1"),
        "{out}"
    );
    assert_eq!(ep.clients.len(), 2, "the client and the refresh");
    // The refresh completes: the cache has the new body, the refresh's
    // slot is gone, the client's next answer is the new one.
    let t2 = t1 + Duration::from_secs(1);
    ep.handle(
        t2,
        Event::UpstreamBytes(
            up,
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\nv2",
        ),
    );
    connects(&mut ep);
    assert_eq!(ep.clients.len(), 1, "the refresh ended");
    ep.handle(t2, Event::ClientBytes(id, get));
    let out = written(&mut ep, t2);
    assert!(out.contains("X-Cache: HIT") && out.ends_with("v2"), "{out}");
}

#[test]
fn a_request_waiting_for_another_cores_fetch_is_woken_when_it_ends() {
    use crate::cache::{Cache, CacheConfig};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let t0 = Instant::now();
    let cache = Arc::new(Cache::new(CacheConfig {
        max_bytes: 1 << 20,
        max_object_bytes: 1 << 16,
    }));
    let none = || PoolSpec::new(Vec::new(), Duration::from_secs(60), 4, 3);
    // Two cores sharing the cache; the second's driver counts its wakes.
    let (mut one, _) = endpoint_with(t0, none(), Some(cache.clone()));
    let (mut two, _) = endpoint_with(t0, none(), Some(cache));
    let wakes = Arc::new(AtomicUsize::new(0));
    let counted = wakes.clone();
    two.on_wake(Box::new(move || {
        counted.fetch_add(1, Ordering::Relaxed);
    }));
    let get = b"GET /c HTTP/1.1\r\nHost: a\r\n\r\n";
    let peer = SocketAddr::from(([10, 0, 0, 1], 5000));
    let a = one.accept(t0, peer).unwrap();
    let b = two.accept(t0, peer).unwrap();
    one.handle(t0, Event::ClientBytes(a, get));
    let [(up, _)] = connects(&mut one)[..] else {
        panic!("the first miss fetches")
    };
    two.handle(t0, Event::ClientBytes(b, get));
    assert!(connects(&mut two).is_empty(), "the second waits");
    assert!(
        two.poll_timeout() >= t0 + Duration::from_secs(1),
        "no poll while it waits: only its coalescing deadline"
    );
    // The fetch on core one ends 40 ms later: core two is woken at once
    // and answers from the cache without going upstream.
    let t1 = t0 + Duration::from_millis(40);
    one.handle(t1, Event::Connected(up));
    one.handle(
        t1,
        Event::UpstreamBytes(
            up,
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\nok",
        ),
    );
    assert_eq!(wakes.load(Ordering::Relaxed), 1, "one wake");
    assert_eq!(two.poll_timeout(), t0, "due at once");
    two.handle(t1, Event::Timer);
    assert!(connects(&mut two).is_empty(), "no fetch of its own");
    let out = client_output(&two, b);
    assert!(out.contains("X-Cache: HIT") && out.ends_with("ok"), "{out}");
    assert!(
        two.poll_timeout() > t1,
        "nothing due: the bell was answered"
    );
}

/// What [`tls_pump`] saw the layer ask for.
#[derive(Default)]
struct Asked {
    /// A close (with a reset when `true`).
    closed: Option<bool>,
    /// Connects.
    connects: Vec<(UpstreamId, SocketAddr)>,
}

/// Moves bytes between an in-memory rustls client and client `id` of the
/// layer until neither has anything more.
fn tls_pump(
    ep: &mut Endpoint,
    id: ClientId,
    client: &mut rustls::ClientConnection,
    now: Instant,
) -> Asked {
    let mut asked = Asked::default();
    for _ in 0..50 {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        if !wire.is_empty() {
            ep.handle(now, Event::ClientBytes(id, &wire));
        }
        let back = client_output_bytes(ep, id);
        if !back.is_empty() {
            ep.handle(now, Event::ClientWritten(id, back.len()));
            let mut rd = &back[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
            }
            client.process_new_packets().unwrap();
        }
        while let Some(cmd) = ep.poll_command() {
            match cmd {
                Command::CloseClient { client, reset } => {
                    assert_eq!(client, id);
                    asked.closed = Some(reset);
                }
                Command::Connect { up, addr } => asked.connects.push((up, addr)),
                _ => {}
            }
        }
        if wire.is_empty() && back.is_empty() {
            break;
        }
    }
    asked
}

fn client_output_bytes(ep: &Endpoint, id: ClientId) -> Vec<u8> {
    let mut slices = [std::io::IoSlice::new(&[]); 8];
    let n = ep.client_slices(id, &mut slices);
    slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
}

/// What the rustls client has read so far, as text.
fn tls_read(client: &mut rustls::ClientConnection) -> String {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = client.reader().read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_tls_client_gets_a_miss_then_a_hit_of_its_scheme_and_a_close_notify_before_the_fin() {
    use crate::cache::{Cache, CacheConfig};
    use crate::tls::tests::{settings, Ca};
    use std::io::Write;
    let t0 = Instant::now();
    let ca = Ca::new("endpoint");
    let server = TlsServer::new(&settings(vec![ca.leaf("a", &["a.test"])])).unwrap();
    let cache = Arc::new(Cache::new(CacheConfig {
        max_bytes: 1 << 20,
        max_object_bytes: 1 << 16,
    }));
    let none = PoolSpec::new(Vec::new(), Duration::from_secs(60), 4, 3);
    let (mut ep, _) = endpoint_with(t0, none, Some(cache));
    ep.parts.tls = Some(Arc::new(server));
    let id = ep
        .accept_tls(t0, SocketAddr::from(([10, 0, 0, 1], 5000)))
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
    let mut client = rustls::ClientConnection::new(ca.client(), name).unwrap();

    // The request is written before the handshake (rustls holds it); the
    // miss goes upstream once it is decrypted.
    let get = b"GET /t HTTP/1.1\r\nHost: a.test\r\n\r\n";
    client.writer().write_all(get).unwrap();
    let asked = tls_pump(&mut ep, id, &mut client, t0);
    assert_eq!(asked.closed, None);
    assert_eq!(ep.stats.tls.full, 1, "one full handshake");
    let [(up, _)] = asked.connects[..] else {
        panic!("one connect")
    };
    ep.handle(t0, Event::Connected(up));
    let sent = String::from_utf8_lossy(ep.upstream_output(up)).into_owned();
    assert!(sent.contains("X-Forwarded-Proto: https\r\n"), "{sent}");
    ep.handle(t0, Event::UpstreamWritten(up, sent.len()));
    ep.handle(
        t0,
        Event::UpstreamBytes(
            up,
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n\r\nhello",
        ),
    );
    tls_pump(&mut ep, id, &mut client, t0);
    let out = tls_read(&mut client);
    assert!(
        out.contains("X-Cache: MISS") && out.ends_with("hello"),
        "{out}"
    );

    // The same URL again: a hit, nothing upstream.
    client.writer().write_all(get).unwrap();
    assert!(tls_pump(&mut ep, id, &mut client, t0).connects.is_empty());
    let out = tls_read(&mut client);
    assert!(
        out.contains("X-Cache: HIT") && out.ends_with("hello"),
        "{out}"
    );
    // A plain client asking the same URL is not given the https answer
    // (the scheme is in the key): it goes upstream (on the pooled
    // connection), told http.
    let plain = ep
        .accept(t0, SocketAddr::from(([10, 0, 0, 2], 5000)))
        .unwrap();
    ep.handle(t0, Event::ClientBytes(plain, get));
    assert!(connects(&mut ep).is_empty(), "the pooled one");
    let sent = String::from_utf8_lossy(ep.upstream_output(up)).into_owned();
    assert!(
        sent.starts_with("GET /t ") && sent.contains("X-Forwarded-Proto: http\r\n"),
        "{sent}"
    );

    // A Host the certificate does not cover (domain fronting): 421, the
    // connection goes on.
    client
        .writer()
        .write_all(b"GET /t HTTP/1.1\r\nHost: other.test\r\n\r\n")
        .unwrap();
    assert!(tls_pump(&mut ep, id, &mut client, t0).connects.is_empty());
    let out = tls_read(&mut client);
    assert!(out.starts_with("HTTP/1.1 421 "), "{out}");

    // The last request: the answer, then close_notify, then a clean close.
    client
        .writer()
        .write_all(b"GET /t HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let closed = tls_pump(&mut ep, id, &mut client, t0).closed;
    let out = tls_read(&mut client);
    assert!(out.ends_with("hello"), "{out}");
    assert!(
        client.process_new_packets().unwrap().peer_has_closed(),
        "close_notify"
    );
    assert_eq!(closed, Some(false), "a FIN, not a reset");
}

#[test]
fn a_handshake_that_stalls_is_reset_at_its_deadline_and_counted() {
    use crate::tls::tests::{settings, Ca};
    let t0 = Instant::now();
    let ca = Ca::new("stall");
    let server = TlsServer::new(&settings(vec![ca.leaf("a", &["a.test"])])).unwrap();
    let deadline = t0 + server.handshake_timeout();
    let none = PoolSpec::new(Vec::new(), Duration::from_secs(60), 4, 3);
    let (mut ep, _) = endpoint_with(t0, none, None);
    ep.parts.tls = Some(Arc::new(server));
    let id = ep
        .accept_tls(t0, SocketAddr::from(([10, 0, 0, 1], 5000)))
        .unwrap();
    // The first bytes of a ClientHello, then nothing.
    ep.handle(
        t0,
        Event::ClientBytes(id, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
    );
    while ep.poll_command().is_some() {}
    assert_eq!(ep.poll_timeout(), deadline, "the handshake's deadline");
    ep.handle(deadline, Event::Timer);
    let closes: Vec<bool> = std::iter::from_fn(|| ep.poll_command())
        .filter_map(|c| match c {
            Command::CloseClient { reset, .. } => Some(reset),
            _ => None,
        })
        .collect();
    assert_eq!(closes, [true], "reset at the deadline");
    assert_eq!(ep.stats.tls.failures[5], 1, "counted as a timeout");
    assert_eq!(crate::tls::Failure::ALL[5].label(), "timeout");
}

#[test]
fn a_connection_over_the_limit_gets_a_503_written_like_any_answer_and_its_slot_back() {
    let t0 = Instant::now();
    let fallback = PoolSpec::new(Vec::new(), Duration::from_secs(60), 4, 3);
    let (mut ep, _) = endpoint(t0, fallback);
    let peer = |i: u8| SocketAddr::from(([10, 0, 0, i], 5000));
    let served: Vec<ClientId> = (0..8).map(|i| ep.accept(t0, peer(i)).unwrap()).collect();
    let over = ep.accept(t0, peer(9)).expect("taken, to be answered");
    let out = client_output(&ep, over);
    assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
    assert!(out.contains("\r\nRetry-After: 1\r\n"), "{out}");
    assert!(out.contains("\r\nConnection: close\r\n"), "{out}");
    assert!(!ep.client_interest(over).read, "nothing more is read");
    ep.handle(t0, Event::ClientWritten(over, out.len()));
    let closed = std::iter::from_fn(|| ep.poll_command())
        .any(|c| matches!(c, Command::CloseClient { client, reset: false } if client == over));
    assert!(closed, "closed once written");
    ep.handle(t0, Event::ClientClosed(over));
    assert_eq!(ep.stats.refused, [1, 0]);

    // The 503s being written have a bound of their own: past it, the
    // driver is told to close the socket unanswered.
    let answering: Vec<ClientId> = (0..REFUSING_MAX)
        .map(|_| ep.accept(t0, peer(9)).expect("within the reserve"))
        .collect();
    assert!(ep.accept(t0, peer(9)).is_none(), "past the reserve");
    assert_eq!(ep.room(), 0);
    for id in answering {
        ep.handle(t0, Event::ClientClosed(id));
    }
    // A served connection ends: the next one is served, not refused.
    ep.handle(t0, Event::ClientClosed(served[0]));
    let next = ep.accept(t0, peer(10)).unwrap();
    assert_eq!(client_output(&ep, next), "");
}

#[test]
fn the_drain_resets_what_is_open_at_its_deadline_and_ends_one_grace_later() {
    let t0 = Instant::now();
    let fallback = PoolSpec::new(Vec::new(), Duration::from_secs(60), 4, 3);
    let (mut ep, _) = endpoint(t0, fallback);
    let id = ep
        .accept(t0, SocketAddr::from(([10, 0, 0, 1], 5000)))
        .unwrap();
    // A request in flight keeps the connection through the drain.
    ep.handle(
        t0,
        Event::ClientBytes(id, b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"),
    );
    connects(&mut ep);
    ep.handle(t0, Event::Drain);
    assert!(!ep.drain_over(t0));
    let deadline = t0 + Duration::from_secs(1);
    assert_eq!(ep.poll_timeout(), deadline);
    ep.handle(deadline, Event::Timer);
    let reset = std::iter::from_fn(|| ep.poll_command())
        .any(|c| matches!(c, Command::CloseClient { client, reset: true } if client == id));
    assert!(reset, "reset at the deadline");
    // The driver never reports the socket closed: it stops anyway, at the
    // one bound every driver keeps, and is woken for it.
    assert_eq!(ep.poll_timeout(), deadline + DRAIN_GRACE);
    assert!(!ep.drain_over(deadline + DRAIN_GRACE - Duration::from_millis(1)));
    assert!(ep.drain_over(deadline + DRAIN_GRACE));
    ep.handle(deadline + DRAIN_GRACE, Event::Timer);
    let again =
        std::iter::from_fn(|| ep.poll_command()).any(|c| matches!(c, Command::CloseClient { .. }));
    assert!(!again, "the reset is not asked again");
}

#[test]
fn a_close_the_driver_never_reports_done_is_reset_at_the_linger_limit() {
    let t0 = Instant::now();
    let fallback = PoolSpec::new(Vec::new(), Duration::from_secs(60), 4, 3);
    let (mut ep, _) = endpoint(t0, fallback);
    let id = ep
        .accept(t0, SocketAddr::from(([10, 0, 0, 1], 5000)))
        .unwrap();
    ep.handle(t0, Event::ClientEof(id));
    let graceful = std::iter::from_fn(|| ep.poll_command())
        .any(|c| matches!(c, Command::CloseClient { client, reset: false } if client == id));
    assert!(graceful, "closed gracefully");
    // The peer never answers the close; the driver keeps the socket.
    assert!(ep.poll_timeout() <= t0 + CLOSE_LINGER);
    ep.handle(t0 + CLOSE_LINGER, Event::Timer);
    let reset = std::iter::from_fn(|| ep.poll_command())
        .any(|c| matches!(c, Command::CloseClient { client, reset: true } if client == id));
    assert!(reset, "reset at the linger limit");
    // Reported gone: nothing more for it.
    ep.handle(t0 + CLOSE_LINGER, Event::ClientClosed(id));
    ep.handle(t0 + CLOSE_LINGER * 2, Event::Timer);
    assert!(
        !std::iter::from_fn(|| ep.poll_command()).any(|c| matches!(c, Command::CloseClient { .. }))
    );
}
