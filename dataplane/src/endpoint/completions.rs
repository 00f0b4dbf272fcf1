//! An answered request booked where it counts: the core's statistics,
//! the server's passive health and the access log.

use super::*;

/// Books an answered request: the core's statistics, the server's passive
/// health, and its access-log record (the client's address and the
/// upstream server filled in here, where they are known).
pub(super) fn record(
    parts: &Parts,
    stats: &mut CoreStats,
    peers: &mut Upstreams<UpstreamId>,
    mut done: Completion,
    target: Option<Target>,
    peer: SocketAddr,
    now: Instant,
) {
    if !done.attempt_only {
        stats.record(&done);
    }
    let server = match (done.proxied, target) {
        (true, Some(target)) => {
            peers.responded(target, &done, now);
            peers.server(target)
        }
        _ => None,
    };
    if let Some((pool, addr, slow)) = server {
        stats.record_server(pool, addr, slow, &done);
    }
    if let Some(mut rec) = done.access.take() {
        rec.client = Some(peer);
        rec.upstream = server.map(|(_, addr, _)| addr);
        rec.pool = server.map(|(pool, _, _)| pool.clone());
        rec.audit = parts.status.log_requests();
        parts.access.push(*rec);
    }
}
