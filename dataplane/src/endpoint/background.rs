//! Background fetches: a stale entry refreshed after its client was
//! answered (stale-while-revalidate), an exchange with no client socket.

use super::*;

/// Most background refreshes one core runs at once.
pub(super) const MAX_BACKGROUND: usize = 64;

impl Endpoint {
    /// Starts a background refresh (stale-while-revalidate): a connection
    /// of its own, with no socket, whose request revalidates the entry and
    /// whose answer only goes into the cache; the client that asked for it
    /// was answered and goes on. At most [`MAX_BACKGROUND`] at once per
    /// core (past it, or while draining, the refresh is left to a later
    /// request). The origin is told the address of `peer`, the client
    /// whose request found the entry stale.
    pub(super) fn start_refresh(
        &mut self,
        now: Instant,
        request: &[u8],
        key: Bytes,
        peer: Option<IpAddr>,
    ) {
        let Some(cache) = self.parts.cache.clone() else {
            return;
        };
        if self.background >= MAX_BACKGROUND || self.drain_deadline.is_some() {
            cache.release_fetch(&key);
            return;
        }
        let conn = Conn::new(
            self.peers.engine().clone(),
            self.parts.status.clone(),
            Some(cache),
            peer.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()),
            now,
        )
        .without_local_admin()
        .came_by(url_parts(&key).0);
        let peer = SocketAddr::from(([0, 0, 0, 0], 0));
        let (idx, gen) = self.clients.insert(Client::new(conn, peer, Some(key)));
        self.background += 1;
        self.on_client(ClientId { idx, gen }, now, |c| {
            c.handle(now, ConnEvent::ClientBytes(request))
        });
    }

    /// A background refresh after an event: its answer is dropped (it is
    /// in the cache), its result counts for the server's passive health
    /// only (not as client traffic), and it ends with its exchange.
    pub(super) fn settle_background(&mut self, id: ClientId, now: Instant) {
        let Some(c) = self.clients.get_mut(id.idx, id.gen) else {
            return;
        };
        let pending = c.conn.client_pending();
        if pending > 0 {
            c.conn.handle(now, ConnEvent::ClientWritten(pending));
        }
        while let Some(done) = c.conn.poll_completion() {
            if let (true, Some(target)) = (done.proxied, c.last_target) {
                self.peers.responded(target, &done, now);
            }
        }
        if c.conn.is_finished() || c.conn.is_aborted() {
            return self.end_background(id);
        }
        if let Some(t) = c.conn.timeout() {
            if c.timer_at.is_none_or(|at| t < at) {
                c.timer_at = Some(t);
                self.timers.push(Reverse((t, id.idx, id.gen)));
            }
        }
        if let Some(u) = c.up {
            self.touch_upstream(u);
        }
    }

    /// Ends a background refresh: its upstream closed unless pooled, its
    /// fetch claim released.
    pub(super) fn end_background(&mut self, id: ClientId) {
        let Some(c) = self.clients.remove(id.idx, id.gen) else {
            return;
        };
        self.background -= 1;
        if let Some(u) = c.up {
            self.close_upstream(u);
        }
        if let (Some(cache), Some(key)) = (&self.parts.cache, &c.background) {
            cache.release_fetch(key);
        }
    }
}
