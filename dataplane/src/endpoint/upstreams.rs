//! The life of an upstream connection: checked out of the pool or
//! connected, attached to a client's exchange, released to the pool or
//! closed.

use super::*;

/// Where an upstream connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UpState {
    /// Connecting for a client.
    Connecting(ClientId),
    /// Connected, the TLS handshake with the server going on.
    Handshaking(ClientId),
    /// Serving a client's exchange.
    Attached(ClientId),
    /// In the pool since then; read, so a close or stray bytes retire it.
    Idle(Instant),
    /// Closing: waits for [`Event::UpstreamClosed`].
    Closed,
}

/// One upstream connection.
pub(super) struct Upstream {
    pub(super) target: Target,
    pub(super) state: UpState,
    /// A [`Command::Upstream`] for it is queued.
    pub(super) queued: bool,
    /// TLS to the server, for a pool with `tls = true`.
    pub(super) tls: Option<Box<ClientSession>>,
}

impl Endpoint {
    /// What the upstream connection wants from the transport now: an idle
    /// pooled connection is read, so its close (or stray bytes, which
    /// make it unusable) retires it at once.
    pub fn upstream_interest(&self, u: UpstreamId) -> Interest {
        let Some(up) = self.ups.get(u.idx, u.gen) else {
            return Interest::default();
        };
        let tls_pending = up.tls.as_ref().map(|t| t.pending() > 0);
        match up.state {
            UpState::Idle(_) => Interest {
                read: true,
                write: false,
            },
            UpState::Handshaking(_) => Interest {
                read: true,
                write: tls_pending == Some(true),
            },
            UpState::Attached(id) => match self.clients.get(id.idx, id.gen) {
                Some(c) if !c.closed => Interest {
                    read: c.conn.wants_upstream_bytes(),
                    write: tls_pending.unwrap_or_else(|| {
                        c.conn.upstream_attached() && !c.conn.upstream_output().is_empty()
                    }),
                },
                _ => Interest::default(),
            },
            _ => Interest::default(),
        }
    }

    /// The bytes queued for the upstream connection.
    pub fn upstream_output(&self, u: UpstreamId) -> &[u8] {
        let Some(up) = self.ups.get(u.idx, u.gen) else {
            return &[];
        };
        if let Some(t) = &up.tls {
            return t.first();
        }
        let UpState::Attached(id) = up.state else {
            return &[];
        };
        match self.clients.get(id.idx, id.gen) {
            Some(c) if !c.closed && c.conn.upstream_attached() => c.conn.upstream_output(),
            _ => &[],
        }
    }

    /// Takes the bytes queued for the upstream connection, for a kernel
    /// that reads them after the call returns (io_uring); report
    /// [`Event::UpstreamSent`] once all are written.
    pub fn take_upstream_output(&mut self, u: UpstreamId) -> Bytes {
        let Some(up) = self.ups.get_mut(u.idx, u.gen) else {
            return Bytes::new();
        };
        if let Some(t) = &mut up.tls {
            return t.take_first();
        }
        let UpState::Attached(id) = up.state else {
            return Bytes::new();
        };
        match self.clients.get_mut(id.idx, id.gen) {
            Some(c) if !c.closed && c.conn.upstream_attached() => c.conn.take_upstream_output(),
            _ => Bytes::new(),
        }
    }

    /// Hands the core's numbers to the control plane now (at the end of a
    /// driver's run; otherwise every stats interval).
    pub fn hand_over(&mut self) {
        #[cfg(feature = "test-hooks")]
        self.parts.status.stall_if_asked(self.stats.core);
        self.stats.open_connections = self.clients.len() as u64;
        let _ = self.parts.stats.send(self.stats.take());
    }

    pub(super) fn up_state(&self, u: UpstreamId) -> Option<UpState> {
        self.ups.get(u.idx, u.gen).map(|up| up.state)
    }

    /// Runs an event on upstream `u`'s client; an idle pooled connection
    /// that reports anything (bytes, a close, an error) is retired.
    pub(super) fn on_upstream(&mut self, u: UpstreamId, now: Instant, f: impl FnOnce(&mut Conn)) {
        match self.up_state(u) {
            Some(UpState::Attached(id)) => self.on_client(id, now, f),
            Some(UpState::Idle(_)) => self.close_upstream(u),
            _ => {}
        }
    }

    pub(super) fn connected(&mut self, now: Instant, u: UpstreamId) {
        let Some(up) = self.ups.get(u.idx, u.gen) else {
            return;
        };
        let UpState::Connecting(id) = up.state else {
            return;
        };
        let Some(tls) = self.peers.tls(up.target) else {
            return self.attach(now, u, id);
        };
        match ClientSession::client(tls.config.clone(), tls.server_name.clone()) {
            Ok(session) => {
                if let Some(up) = self.ups.get_mut(u.idx, u.gen) {
                    up.tls = Some(Box::new(session));
                    up.state = UpState::Handshaking(id);
                }
                self.touch_upstream(u);
            }
            Err(_) => self.connect_failed(now, u),
        }
    }

    /// Hands the connected (and, with TLS, handshaken) upstream `u` to
    /// client `id`'s engine.
    pub(super) fn attach(&mut self, now: Instant, u: UpstreamId, id: ClientId) {
        let Some(up) = self.ups.get_mut(u.idx, u.gen) else {
            return;
        };
        up.state = UpState::Attached(id);
        let target = up.target;
        self.peers.connected(target);
        if let Some(c) = self.clients.get_mut(id.idx, id.gen) {
            c.last_target = Some(target);
        }
        self.on_client(id, now, |c| {
            c.handle(now, ConnEvent::UpstreamConnected { reused: false })
        });
    }

    pub(super) fn connect_failed(&mut self, now: Instant, u: UpstreamId) {
        let (Some(UpState::Connecting(id)) | Some(UpState::Handshaking(id))) = self.up_state(u)
        else {
            return;
        };
        if let Some(up) = self.ups.get(u.idx, u.gen) {
            self.peers.connect_failed(up.target);
        }
        self.close_upstream(u);
        if let Some(c) = self.clients.get_mut(id.idx, id.gen) {
            if c.up == Some(u) {
                c.up = None;
            }
        }
        self.on_client(id, now, |c| c.handle(now, ConnEvent::UpstreamConnectFailed));
    }

    /// Attaches an upstream connection to client `id` for its request's
    /// `attempt`-th try: an idle pooled one to the chosen server unless
    /// `fresh`, else a new one.
    pub(super) fn checkout(&mut self, id: ClientId, now: Instant, fresh: bool, attempt: usize) {
        if let Some(old) = self
            .clients
            .get_mut(id.idx, id.gen)
            .and_then(|c| c.up.take())
        {
            self.close_upstream(old);
        }
        let (home, may_canary) = match self.clients.get(id.idx, id.gen) {
            Some(c) => (
                self.peers.route_pool(c.conn.engine(), c.conn.route()),
                c.background.is_none() && c.conn.may_be_canary(),
            ),
            None => return,
        };
        let ups = &self.ups;
        let picked = self.peers.checkout(
            &self.parts.live,
            Wanted {
                home,
                attempt,
                may_canary,
                fresh,
            },
            now,
            |u| matches!(ups.get(u.idx, u.gen), Some(up) if matches!(up.state, UpState::Idle(_))),
        );
        let Some(c) = self.clients.get_mut(id.idx, id.gen) else {
            return;
        };
        let Some((target, checkout, canary)) = picked else {
            // No server to try (the pool's names did not resolve).
            return c.conn.handle(now, ConnEvent::UpstreamConnectFailed);
        };
        if let Some((connect, response)) = self.peers.timeouts(target) {
            c.conn.upstream_timeouts(connect, response);
        }
        if let Some(deadline) = canary {
            c.conn.upstream_canary(deadline);
        }
        match checkout {
            Checkout::Reused { conn: u, .. } => {
                if let Some(up) = self.ups.get_mut(u.idx, u.gen) {
                    up.state = UpState::Attached(id);
                }
                c.up = Some(u);
                c.last_target = Some(target);
                c.conn
                    .handle(now, ConnEvent::UpstreamConnected { reused: true });
                self.touch_upstream(u);
            }
            Checkout::Connect { addr, .. } => {
                let (idx, gen) = self.ups.insert(Upstream {
                    target,
                    state: UpState::Connecting(id),
                    queued: false,
                    tls: None,
                });
                let up = UpstreamId { idx, gen };
                c.up = Some(up);
                self.commands.push_back(Command::Connect { up, addr });
            }
        }
    }

    /// Detaches client `id`'s upstream connection: into the pool when the
    /// engine calls it clean, closed otherwise.
    pub(super) fn release(&mut self, id: ClientId, now: Instant, reuse: bool) {
        let Some(u) = self
            .clients
            .get_mut(id.idx, id.gen)
            .and_then(|c| c.up.take())
        else {
            return;
        };
        let Some(up) = self.ups.get_mut(u.idx, u.gen) else {
            return;
        };
        if !(reuse && up.state == UpState::Attached(id)) {
            return self.close_upstream(u);
        }
        up.state = UpState::Idle(now);
        let target = up.target;
        self.peers.end(target);
        if let Some(displaced) = self.peers.checkin(target, u, now) {
            self.close_upstream(displaced);
        }
        self.touch_upstream(u);
    }

    /// Tells the driver to look at upstream `u` again.
    pub(super) fn touch_upstream(&mut self, u: UpstreamId) {
        if let Some(up) = self.ups.get_mut(u.idx, u.gen) {
            if !up.queued && up.state != UpState::Closed {
                up.queued = true;
                self.commands.push_back(Command::Upstream(u));
            }
        }
    }

    pub(super) fn close_upstream(&mut self, u: UpstreamId) {
        if let Some(up) = self.ups.get_mut(u.idx, u.gen) {
            if matches!(
                up.state,
                UpState::Connecting(_) | UpState::Handshaking(_) | UpState::Attached(_)
            ) {
                self.peers.end(up.target);
            }
            if up.state != UpState::Closed {
                up.state = UpState::Closed;
                self.commands.push_back(Command::CloseUpstream(u));
            }
        }
    }
}
