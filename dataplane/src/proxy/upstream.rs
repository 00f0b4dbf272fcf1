//! Upstream phase: the request goes to a server (connect, send, retry on
//! a fresh connection or the fallback), and the server's bytes come in.

use super::*;

/// Sends the request of `ex` again, from its replay copy, on a fresh
/// connection (its `connects`-th attempt): the keep-alive race, or a
/// canary retried on the fallback.
pub(super) fn resend(
    ex: &mut Exchange,
    out: &mut BytesMut,
    actions: &mut VecDeque<Action>,
    now: Instant,
) {
    ex.upstream = UpstreamState::Connecting;
    ex.connect_started = now;
    ex.sent_at = None;
    ex.head_at = None;
    ex.response_bytes_seen = false;
    ex.head_buf.clear();
    out.clear();
    if let Some(replay) = &ex.replay {
        out.extend_from_slice(replay);
    }
    actions.push_back(Action::Connect {
        fresh: true,
        attempt: ex.connects,
    });
}

/// Queues the release of the exchange's upstream connection, if any.
pub(super) fn ex_released(actions: &mut VecDeque<Action>, ex: &Exchange) {
    if ex.upstream != UpstreamState::Released {
        actions.push_back(Action::Release { reuse: false });
    }
}

impl Conn {
    /// The upstream request: rewritten head queued, the exchange started,
    /// a connect asked for.
    pub(super) fn forward(
        &mut self,
        now: Instant,
        head: &RequestHead<'_, '_>,
        fetch: Option<Box<CacheFetch>>,
        close: bool,
    ) {
        self.upstream_output.clear();
        let validators = fetch
            .as_ref()
            .and_then(|f| f.stale.as_ref())
            .map(|e| &e.meta);
        let whole = fetch.as_ref().is_some_and(|f| f.range_wanted);
        let fields = self.access.as_ref().map(AccessDraft::upstream_fields);
        let (extra, replaced) = fields
            .as_ref()
            .map_or((&[][..], &[][..]), |(f, r)| (f.as_slice(), *r));
        let client = rewrite::ClientSide {
            peer: self.peer,
            scheme: self.scheme,
            trusted: self.trusted,
            rules: &self.cfg.forwarding,
        };
        rewrite::upstream_request(
            &mut self.upstream_output,
            head,
            &client,
            &self.cfg.default_host,
            validators,
            whole,
            (extra, replaced),
        );
        let request = BodyReader::request(head.framing);
        if head.expect_continue && !request.is_done() {
            local::write_continue(self.output.tail());
        }
        let replay =
            (self.upstream_output.len() <= MAX_REPLAY_BYTES).then(|| self.upstream_output.clone());
        if close {
            self.close(Closing::AfterResponse);
        }
        self.phase = Phase::Proxy(Box::new(Exchange {
            method: head.method,
            client_version: head.version,
            client_keep_alive: !close,
            request,
            replay,
            upstream: UpstreamState::Connecting,
            reused: false,
            connects: 0,
            connect_started: now,
            timeouts: None,
            upstream_progress: now,
            client_progress: now,
            head_buf: BytesMut::new(),
            response_bytes_seen: false,
            response: None,
            cache: fetch,
            outcome: None,
            sent_at: None,
            head_at: None,
            canary: None,
        }));
        self.actions.push_back(Action::Connect {
            fresh: false,
            attempt: 0,
        });
    }

    /// Bytes queued for the upstream connection.
    pub fn upstream_output(&self) -> &[u8] {
        &self.upstream_output
    }

    /// `n` bytes of [`Self::upstream_output`] were written.
    pub(super) fn upstream_written(&mut self, n: usize, now: Instant) {
        self.send_clock(now);
        self.upstream_output.advance(n);
        // Room in the queue: take more of a request body.
        self.advance(now);
        self.note_sent(now);
    }

    /// Takes every byte queued for the upstream, for a driver whose kernel
    /// reads them after the call returns (io_uring); call
    /// [`Self::upstream_sent`] once they are written.
    pub fn take_upstream_output(&mut self) -> Bytes {
        self.upstream_output.split().freeze()
    }

    /// The bytes taken with [`Self::take_upstream_output`] were written.
    pub(super) fn upstream_sent(&mut self, now: Instant) {
        self.send_clock(now);
        self.advance(now);
        self.note_sent(now);
    }

    /// The upstream's clock starts when the request's last byte is out.
    pub(super) fn note_sent(&mut self, now: Instant) {
        let empty = self.upstream_output.is_empty();
        if let Phase::Proxy(ex) = &mut self.phase {
            if empty && ex.request.is_done() && ex.sent_at.is_none() {
                ex.sent_at = Some(now);
            }
        }
    }

    /// Whether the request in flight may be a canary to a diverted pool:
    /// its first try, idempotent, and replayable on the fallback.
    pub fn may_be_canary(&self) -> bool {
        matches!(&self.phase, Phase::Proxy(ex)
            if ex.connects == 0
                && ex.method.is_idempotent()
                && ex.replay.is_some()
                && ex.request.is_done()
                && ex.cache.as_ref().is_none_or(|f| f.relay))
    }

    /// The peer selector sent this try to its diverted pool as a canary:
    /// no response head within `deadline`, or a 5xx, and it is retried on
    /// the fallback.
    pub fn upstream_canary(&mut self, deadline: Duration) {
        if let Phase::Proxy(ex) = &mut self.phase {
            ex.canary = Some(deadline);
        }
    }

    /// The upstream connection asked for by [`Action::Connect`] is ready;
    /// `reused` when it came from the keep-alive pool.
    pub(super) fn upstream_connected(&mut self, now: Instant, reused: bool) {
        if let Phase::Proxy(ex) = &mut self.phase {
            ex.upstream = UpstreamState::Connected;
            ex.reused = reused;
            ex.upstream_progress = now;
            if let Some(d) = &mut self.access {
                d.record.attempts += 1;
                d.record.connect_us =
                    Some(micros(now.saturating_duration_since(ex.connect_started)));
            }
        }
    }

    /// The peer selector chose a pool with its own connect and response
    /// timeouts for the exchange in flight (the fallback's keys).
    pub fn upstream_timeouts(&mut self, connect: Duration, response: Duration) {
        if let Phase::Proxy(ex) = &mut self.phase {
            ex.timeouts = Some((connect, response));
        }
    }

    /// The connect asked for by [`Action::Connect`] failed.
    pub(super) fn upstream_connect_failed(&mut self, now: Instant) {
        self.send_clock(now);
        let Phase::Proxy(ex) = &mut self.phase else {
            return;
        };
        ex.connects += 1;
        ex.upstream = UpstreamState::Connecting;
        if let Some(d) = &mut self.access {
            d.record.attempts += 1;
        }
        if ex.connects < self.cfg.connect_attempts {
            ex.connect_started = now;
            self.actions.push_back(Action::Connect {
                fresh: true,
                attempt: ex.connects,
            });
            return;
        }
        if let Phase::Proxy(ex) = std::mem::replace(&mut self.phase, Phase::Idle) {
            ex_released(&mut self.actions, &ex);
            self.upstream_failed(now, &ex, 502, "upstream connect failed");
        }
        self.advance(now);
    }

    /// Feeds bytes received from the upstream connection.
    pub(super) fn recv_upstream(&mut self, now: Instant, data: &[u8]) {
        self.send_clock(now);
        let Phase::Proxy(ex) = &mut self.phase else {
            return;
        };
        ex.upstream_progress = now;
        ex.response_bytes_seen = true;
        if let Some(d) = &mut self.access {
            d.first_byte.get_or_insert(now);
        }
        let result = if ex.response.is_some() {
            relay_body(ex, self.output.tail(), data)
        } else {
            ex.head_buf.extend_from_slice(data);
            self.response_head(now)
        };
        self.after_upstream(now, result);
    }

    /// The upstream closed the connection cleanly (a FIN).
    pub(super) fn upstream_eof(&mut self, now: Instant) {
        self.upstream_closed(now, true);
    }

    /// The upstream connection failed (a reset, or a read or write error):
    /// like [`Self::upstream_eof`], except that a body delimited by the
    /// close is then known to be cut, so it is neither complete nor stored.
    pub(super) fn upstream_reset(&mut self, now: Instant) {
        self.upstream_closed(now, false);
    }

    pub(super) fn upstream_closed(&mut self, now: Instant, clean: bool) {
        self.send_clock(now);
        let Phase::Proxy(ex) = &mut self.phase else {
            return;
        };
        if ex.upstream != UpstreamState::Connected {
            return;
        }
        ex.upstream = UpstreamState::Released;
        self.actions.push_back(Action::Release { reuse: false });
        match &mut ex.response {
            None if !ex.response_bytes_seen
                && (ex.reused || ex.connects + 1 < self.cfg.connect_attempts)
                && ex.method.is_idempotent()
                && ex.replay.is_some() =>
            {
                // The keep-alive race (a pooled connection closed before it
                // saw the request), or an upstream that died holding it:
                // send it again on a fresh connection, the next server's
                // when it was a fresh one.
                if !ex.reused {
                    ex.connects += 1;
                }
                resend(ex, &mut self.upstream_output, &mut self.actions, now);
            }
            None => {
                if let Phase::Proxy(ex) = std::mem::replace(&mut self.phase, Phase::Idle) {
                    self.upstream_failed(
                        now,
                        &ex,
                        502,
                        "upstream closed the connection without a response",
                    );
                }
            }
            Some(body) if clean && body.reader.until_close() => {
                body.reader.closed();
                self.finish_exchange(now);
            }
            Some(_) => {
                if let Phase::Proxy(ex) = std::mem::replace(&mut self.phase, Phase::Idle) {
                    self.response_cut(now, &ex);
                }
            }
        }
        self.advance(now);
    }

    /// A canary failed with `status` (a 5xx it answered, or 504 for no
    /// head in time): the failure is booked against the server it went to
    /// (an attempt-only completion, not an answer), and the request goes
    /// again, to the fallback, on a fresh connection.
    pub(super) fn retry_canary(&mut self, now: Instant, ex: &mut Exchange, status: u16) {
        let took = ex.upstream_took(now);
        self.completions.push_back(Completion {
            latency: now.saturating_duration_since(self.served_since),
            upstream_latency: took,
            client_slot: self.slots.0,
            url_slot: self.slots.1,
            canary: true,
            attempt_only: true,
            status,
            cache: CacheResult::None,
            upstream_error: status == 504,
            transport_error: false,
            proxied: true,
            probe: false,
            route: self.route.and_then(|r| u16::try_from(r).ok()),
            bytes_in: 0,
            bytes_out: 0,
            access: None,
        });
        self.actions.push_back(Action::Release { reuse: false });
        ex.canary = None;
        ex.connects += 1;
        resend(ex, &mut self.upstream_output, &mut self.actions, now);
    }
}
