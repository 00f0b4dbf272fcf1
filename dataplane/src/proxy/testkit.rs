//! Helpers shared by the engine's tests: a config, a ready status, a
//! cache, readers of what the engine queued, and whole exchanges.

use super::*;
use crate::cache::CacheConfig;
use std::net::Ipv4Addr;

/// A client that is not on loopback.
pub(super) const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));

/// Engine settings for tests, with this body limit in bytes.
pub(super) fn cfg(max_body_bytes: u64) -> Arc<EngineConfig> {
    Arc::new(EngineConfig {
        limits: RequestLimits {
            max_header_bytes: 8192,
            max_body_bytes,
        },
        max_response_head_bytes: 8192,
        response_timeout: Duration::from_secs(5),
        ..EngineConfig::new(
            "origin:80".into(),
            (Instant::now(), std::time::SystemTime::now()),
        )
    })
}

/// A data plane that is serving.
pub(super) fn ready() -> Arc<DataplaneStatus> {
    let s = Arc::new(DataplaneStatus::default());
    s.set_serving(true);
    s
}

/// Everything queued for the client, marked written.
pub(super) fn take_client(c: &mut Conn) -> String {
    let mut out = Vec::new();
    while c.client_pending() > 0 {
        let first = c.client_output();
        out.extend_from_slice(first);
        let n = first.len();
        c.client_written(n, Instant::now());
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Everything queued for the upstream, marked written.
pub(super) fn take_upstream(c: &mut Conn, now: Instant) -> String {
    let out = String::from_utf8_lossy(c.upstream_output()).into_owned();
    c.upstream_written(out.len(), now);
    out
}

/// The pending actions, as text.
pub(super) fn actions(c: &mut Conn) -> Vec<String> {
    std::iter::from_fn(|| c.poll_action())
        .map(|a| format!("{a:?}"))
        .collect()
}

/// The status code of a response.
pub(super) fn status_of(resp: &str) -> u16 {
    resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A 1 MiB cache storing objects of up to 64 KiB.
pub(super) fn new_cache() -> Arc<Cache> {
    Arc::new(Cache::new(CacheConfig {
        max_bytes: 1 << 20,
        max_object_bytes: 64 * 1024,
    }))
}

/// A connection from [`CLIENT`] answering from `cache`.
pub(super) fn conn(cache: &Arc<Cache>, t: Instant) -> Conn {
    Conn::new(cfg(1 << 20), ready(), Some(cache.clone()), CLIENT, t)
}

/// Sends `req`; if the engine goes upstream, answers with `resp`. Returns
/// (went upstream, request sent upstream, client output).
pub(super) fn roundtrip(
    cache: &Arc<Cache>,
    t: Instant,
    req: &str,
    resp: &str,
) -> (bool, String, String) {
    let mut c = conn(cache, t);
    c.recv_client(t, req.as_bytes());
    let acts = actions(&mut c);
    if acts.is_empty() {
        return (false, String::new(), take_client(&mut c));
    }
    c.upstream_connected(t, false);
    let up = take_upstream(&mut c, t);
    c.recv_upstream(t, resp.as_bytes());
    (true, up, take_client(&mut c))
}

/// The background refresh a client's `req` for `/` sets off, once a
/// stale-while-revalidate entry for it is stale.
pub(super) fn refresh_of(req: &[u8]) -> Bytes {
    let cache = new_cache();
    let t0 = Instant::now();
    let swr = "HTTP/1.1 200 OK\r\nCache-Control: max-age=1, stale-while-revalidate=60\r\nContent-Length: 2\r\n\r\nv1";
    roundtrip(&cache, t0, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", swr);
    let t1 = t0 + Duration::from_secs(5);
    let mut c = conn(&cache, t1);
    c.recv_client(t1, req);
    match c.poll_action() {
        Some(super::Action::Refresh { request, .. }) => request,
        other => panic!("a background refresh, not {other:?}"),
    }
}

/// Sends `req` on `c`, connects the upstream it asks for, writes the
/// request out and feeds `resp_start` back: an exchange left in flight.
pub(super) fn in_flight(c: &mut Conn, t: Instant, req: &[u8], resp_start: &[u8]) {
    c.recv_client(t, req);
    actions(c);
    c.upstream_connected(t, false);
    take_upstream(c, t);
    c.recv_upstream(t, resp_start);
}
