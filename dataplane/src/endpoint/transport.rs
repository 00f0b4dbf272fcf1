//! The transport layer of client and upstream connections, plain or TLS
//! behind one surface (bytes received, bytes written, output sealed, a
//! deadline): over TLS, bytes from the socket are decrypted for the
//! engine, the engine's output is sealed into records, and a handshake or
//! a closing write has a deadline; plain bytes go to the engine as they
//! are.

use super::*;

/// Most encrypted bytes a TLS connection queues before the engine's
/// output waits (so the engine's send timeout still sees a slow reader).
pub(super) const TLS_QUEUE: usize = 64 * 1024;

/// Most plaintext sealed into one TLS record.
pub(super) const TLS_RECORD: usize = 16 * 1024;

/// The answer to a plain HTTP request sent to the TLS port, in plain text.
pub(super) const PLAIN_TO_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 51\r\nConnection: close\r\n\r\nThis port speaks HTTPS: send the request over TLS.\n";

/// A client connection's TLS layer.
pub(super) struct Tls {
    pub(super) session: TlsSession,
    /// The handshake's deadline, then (once closing) the last write's.
    pub(super) deadline: Option<Instant>,
    /// The connection failed or ended: what is queued is written, then it
    /// closes.
    pub(super) closing: bool,
}

impl Endpoint {
    /// Bytes from client `id`'s socket.
    pub(super) fn client_bytes(&mut self, id: ClientId, now: Instant, data: &[u8]) {
        match self.is_tls(id) {
            true => self.tls_bytes(id, now, data),
            false => self.on_client(id, now, |c| c.handle(now, ConnEvent::ClientBytes(data))),
        }
    }

    /// `n` bytes of client `id`'s output were written to its socket.
    pub(super) fn client_written(&mut self, id: ClientId, now: Instant, n: usize) {
        let tls = self
            .clients
            .get_mut(id.idx, id.gen)
            .and_then(|c| c.tls.as_mut());
        match tls {
            Some(t) => {
                t.session.written(n);
                self.on_client(id, now, |_| {})
            }
            None => self.on_client(id, now, |c| c.handle(now, ConnEvent::ClientWritten(n))),
        }
    }

    /// Bytes from upstream `u`'s socket.
    pub(super) fn upstream_bytes(&mut self, u: UpstreamId, now: Instant, data: &[u8]) {
        match self.up_tls(u) {
            true => self.upstream_tls_bytes(now, u, data),
            false => self.on_upstream(u, now, |c| c.handle(now, ConnEvent::UpstreamBytes(data))),
        }
    }

    /// `n` bytes of upstream `u`'s output were written to its socket.
    pub(super) fn upstream_written(&mut self, u: UpstreamId, now: Instant, n: usize) {
        match self
            .ups
            .get_mut(u.idx, u.gen)
            .and_then(|up| up.tls.as_mut())
        {
            Some(t) => {
                t.written(n);
                self.touch_upstream(u);
            }
            None => self.on_upstream(u, now, |c| c.handle(now, ConnEvent::UpstreamWritten(n))),
        }
    }

    /// All of upstream `u`'s taken output was sent; over TLS the engine
    /// was told when its bytes went into records.
    pub(super) fn upstream_sent(&mut self, u: UpstreamId, now: Instant) {
        match self.up_tls(u) {
            true => self.touch_upstream(u),
            false => self.on_upstream(u, now, |c| c.handle(now, ConnEvent::UpstreamSent)),
        }
    }

    /// A new client connection from `peer` on the TLS listener: the same as
    /// [`Self::accept`], with a TLS session in front of the engine. `None`
    /// also when no TLS listener is configured.
    pub fn accept_tls(&mut self, now: Instant, peer: SocketAddr) -> Option<ClientId> {
        let server = self.parts.tls.as_ref()?;
        // The session's set-up is per-connection work too: a panic there
        // refuses this connection only.
        let server = server.clone();
        let session = match self.contained(None, None, Some(peer), |_| server.session())? {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a TLS session");
                return None;
            }
        };
        let tls = Tls {
            session,
            deadline: Some(now + server.handshake_timeout()),
            closing: false,
        };
        self.open(now, peer, Some(Box::new(tls)))
    }

    /// Whether client `id` came through the TLS listener.
    pub(super) fn is_tls(&self, id: ClientId) -> bool {
        self.clients
            .get(id.idx, id.gen)
            .is_some_and(|c| c.tls.is_some())
    }

    /// Whether client `id`'s TLS handshake is still going on.
    pub(super) fn tls_handshaking(&self, id: ClientId) -> bool {
        self.clients
            .get(id.idx, id.gen)
            .and_then(|c| c.tls.as_ref())
            .is_some_and(|t| t.session.is_handshaking())
    }

    /// TLS bytes from client `id`: decrypted into its engine (inside the
    /// panic boundary); a failed handshake is counted by reason and closes
    /// the connection once what is queued (an HTTP `400` for a plain
    /// request) is written.
    pub(super) fn tls_bytes(&mut self, id: ClientId, now: Instant, data: &[u8]) {
        let Self {
            clients,
            stats,
            parts,
            ..
        } = self;
        let Some(c) = clients.get_mut(id.idx, id.gen).filter(|c| !c.closed) else {
            return;
        };
        let Client {
            tls: Some(t), conn, ..
        } = c
        else {
            return;
        };
        if t.closing {
            return;
        }
        // Inside the boundary of `handle` (the event is this client's): a
        // panic here resets this connection only.
        let run = t.session.recv(data, &mut |plain| {
            conn.handle(now, ConnEvent::ClientBytes(plain))
        });
        // The ClientHello is read in an earlier call than any request
        // (the client needs the server's flight first).
        if !conn.has_served_names() {
            if let (Some(sni), Some(server)) = (t.session.client_hello_name(), &parts.tls) {
                conn.serve_names(ServedNames::for_hello(server.certificates(), sni));
            }
        }
        match run {
            Ok(Some(handshake)) => {
                stats.tls.handshake(handshake);
                t.deadline = None;
            }
            Ok(None) => {}
            Err(failure) => {
                stats.tls.failure(failure);
                if failure == Failure::PlaintextHttp {
                    t.session.queue_plain(PLAIN_TO_TLS);
                }
                t.closing = true;
                t.deadline = Some(now + self.peers.engine().send_timeout);
            }
        }
        self.on_client(id, now, |_| {});
    }

    /// For a TLS client: encrypts what its engine queued (up to
    /// [`TLS_QUEUE`] ahead of the socket), and once the engine is done
    /// queues `close_notify` and closes when all is written. Returns
    /// whether it closed the client.
    pub(super) fn seal(&mut self, id: ClientId, now: Instant) -> bool {
        let send_timeout = self.peers.engine().send_timeout;
        let Self {
            clients,
            seal_buf,
            stats,
            ..
        } = self;
        let Some(Client {
            tls: Some(t), conn, ..
        }) = clients.get_mut(id.idx, id.gen)
        else {
            return false;
        };
        while !t.closing && t.session.pending() < TLS_QUEUE && conn.client_pending() > 0 {
            seal_buf.clear();
            let mut slices = [std::io::IoSlice::new(&[]); 8];
            let n = conn.client_slices(&mut slices);
            for s in &slices[..n] {
                let room = TLS_RECORD - seal_buf.len();
                seal_buf.extend_from_slice(&s[..s.len().min(room)]);
            }
            match t.session.encrypt(seal_buf) {
                Ok(true) => conn.handle(now, ConnEvent::ClientWritten(seal_buf.len())),
                Ok(false) => break,
                Err(failure) => {
                    stats.tls.failure(failure);
                    t.closing = true;
                    t.deadline = Some(now + send_timeout);
                }
            }
        }
        if conn.is_finished() && !conn.is_aborted() && !t.closing {
            t.session.queue_close();
            t.closing = true;
            t.deadline = Some(now + send_timeout);
        }
        if t.closing && t.session.pending() == 0 {
            self.close_client(id, false);
            return true;
        }
        false
    }

    /// Closes client `id` when its TLS deadline (handshake, or the last
    /// write after the end) has passed; a handshake that timed out is
    /// counted. Returns whether it closed it.
    pub(super) fn tls_expired(&mut self, id: ClientId, now: Instant) -> bool {
        let Some(t) = self
            .clients
            .get(id.idx, id.gen)
            .and_then(|c| c.tls.as_ref())
        else {
            return false;
        };
        if t.deadline.is_none_or(|d| d > now) {
            return false;
        }
        if t.session.is_handshaking() && !t.closing {
            self.stats.tls.failure(Failure::Timeout);
        }
        self.close_client(id, true);
        true
    }

    /// Whether upstream `u` speaks TLS.
    pub(super) fn up_tls(&self, u: UpstreamId) -> bool {
        self.ups
            .get(u.idx, u.gen)
            .is_some_and(|up| up.tls.is_some())
    }

    /// TLS bytes from upstream `u`: its handshake, or records whose
    /// plaintext goes to the attached client's engine. A failed handshake
    /// is a failed connect (another server is tried); a failure after it,
    /// an upstream reset.
    pub(super) fn upstream_tls_bytes(&mut self, now: Instant, u: UpstreamId, data: &[u8]) {
        let mut plain = std::mem::take(&mut self.plain_buf);
        plain.clear();
        let Some(up) = self.ups.get_mut(u.idx, u.gen) else {
            return;
        };
        let (state, Some(session)) = (up.state, up.tls.as_mut()) else {
            return;
        };
        let got = session.recv(data, &mut |p| plain.extend_from_slice(p));
        #[cfg(feature = "test-hooks")]
        if self.peers.engine().test_hooks
            && plain
                .windows(TEST_UPSTREAM_TLS_PANIC.len())
                .any(|w| w == TEST_UPSTREAM_TLS_PANIC)
        {
            panic!("test hook: a panic in the upstream TLS path");
        }
        match (state, got) {
            (UpState::Handshaking(id), Ok(Some(_))) => {
                self.attach(now, u, id);
                if !plain.is_empty() {
                    self.on_client(id, now, |c| c.handle(now, ConnEvent::UpstreamBytes(&plain)));
                }
            }
            (UpState::Handshaking(_), Ok(None)) => self.touch_upstream(u),
            (UpState::Handshaking(_), Err(_)) => self.connect_failed(now, u),
            (UpState::Attached(id), Ok(_)) if !plain.is_empty() => {
                self.on_client(id, now, |c| c.handle(now, ConnEvent::UpstreamBytes(&plain)))
            }
            (UpState::Attached(_), Ok(_)) => self.touch_upstream(u),
            (UpState::Attached(id), Err(_)) => {
                self.on_client(id, now, |c| c.handle(now, ConnEvent::UpstreamReset))
            }
            // A session ticket while pooled keeps it; anything else
            // retires it.
            (UpState::Idle(_), Ok(_)) if plain.is_empty() => self.touch_upstream(u),
            (UpState::Idle(_), _) => self.close_upstream(u),
            _ => {}
        }
        self.plain_buf = plain;
    }

    /// For client `id` with a TLS upstream attached: encrypts what its
    /// engine queued for the server. Returns whether it failed (the engine
    /// was told of an upstream reset).
    pub(super) fn seal_upstream(&mut self, id: ClientId, now: Instant) -> bool {
        let Some(c) = self.clients.get_mut(id.idx, id.gen) else {
            return false;
        };
        let Some(u) = c.up else {
            return false;
        };
        let Some(up) = self.ups.get_mut(u.idx, u.gen) else {
            return false;
        };
        let (UpState::Attached(_), Some(session)) = (up.state, up.tls.as_mut()) else {
            return false;
        };
        let out = c.conn.take_upstream_output();
        if out.is_empty() {
            return false;
        }
        match session.encrypt(&out) {
            Ok(true) => {
                c.conn.handle(now, ConnEvent::UpstreamSent);
                false
            }
            _ => {
                c.conn.handle(now, ConnEvent::UpstreamReset);
                true
            }
        }
    }
}
