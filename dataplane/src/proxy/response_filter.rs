//! Response filter phase: the upstream's head is read, stored when the
//! cache may keep it, rewritten for the client; the body is relayed; the
//! exchange ends, or fails with the status the client is owed.

use super::*;

/// The fields a response gets besides its own: the connection field, and
/// the request's `X-Request-Id` while the access log records it.
// Lives on the stack for one call: boxing the large variant would
// allocate on every hit while the access log is on.
#[allow(clippy::large_enum_variant)]
pub(super) enum ClientFields {
    /// The connection field alone (the log is off: nothing to build).
    Connection(&'static [u8]),
    /// With the request id.
    WithId(Fields),
}

impl ClientFields {
    pub(super) fn as_slice(&self) -> &[u8] {
        match self {
            Self::Connection(c) => c,
            Self::WithId(f) => f.as_slice(),
        }
    }
}

pub(super) fn client_fields(
    access: &Option<AccessDraft>,
    close: bool,
    version: Version,
) -> ClientFields {
    let connection = connection_field(close, version);
    match access {
        None => ClientFields::Connection(connection),
        Some(d) => {
            let mut f = Fields::default();
            f.push(&[connection]);
            d.push_id(&mut f);
            ClientFields::WithId(f)
        }
    }
}

/// Relays response body bytes to the client. `Ok(true)` when the body is
/// complete.
pub(super) fn relay_body(
    ex: &mut Exchange,
    out: &mut BytesMut,
    data: &[u8],
) -> Result<bool, &'static str> {
    let Exchange {
        response: Some(body),
        cache,
        ..
    } = ex
    else {
        return Ok(false);
    };
    let relay = cache.as_ref().is_none_or(|f| f.relay);
    let mut store = |d: &[u8]| {
        if let Some(f) = cache.as_mut() {
            f.store_body(d);
        }
    };
    // A chunked body goes to the client as it came unless it is dechunked
    // for an HTTP/1.0 client; anything else is its payload either way.
    let used = if relay && body.framing != ClientFraming::Dechunk {
        body.reader.forward(data, u64::MAX, out, store)
    } else {
        body.reader.read(data, u64::MAX, |d| {
            if relay {
                out.extend_from_slice(d);
            }
            store(d);
        })
    }
    .map_err(|_| "upstream sent an invalid chunked body")?;
    if used < data.len() {
        // Bytes after the end of the response: the connection is not clean.
        body.reusable = false;
    }
    Ok(body.reader.is_done())
}

pub(super) fn connection_field(close: bool, version: Version) -> &'static [u8] {
    match (close, version) {
        (true, _) => b"Connection: close\r\n",
        (false, Version::Http10) => b"Connection: keep-alive\r\n",
        (false, Version::Http11) => b"",
    }
}

impl Conn {
    pub(super) fn after_upstream(&mut self, now: Instant, result: Result<bool, &'static str>) {
        match result {
            Ok(true) => self.finish_exchange(now),
            Ok(false) => {}
            Err(msg) => {
                self.actions.push_back(Action::Release { reuse: false });
                if let Phase::Proxy(ex) = std::mem::replace(&mut self.phase, Phase::Idle) {
                    if ex.response.is_some() {
                        self.response_cut(now, &ex);
                    } else {
                        self.upstream_failed(now, &ex, 502, msg);
                    }
                }
            }
        }
        self.advance(now);
    }

    /// Parses the response head from `head_buf`; on success writes the
    /// client head and relays the bytes after it. `Ok(true)` when the whole
    /// response is complete.
    pub(super) fn response_head(&mut self, now: Instant) -> Result<bool, &'static str> {
        // The exchange is lent out while the head is read; nothing below
        // looks at the phase.
        let Phase::Proxy(mut ex) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return Ok(false);
        };
        let result = self.read_response_head(now, &mut ex);
        self.phase = Phase::Proxy(ex);
        result
    }

    /// The response filter: interim responses, then the final head through
    /// the cache and to the client.
    pub(super) fn read_response_head(
        &mut self,
        now: Instant,
        ex: &mut Exchange,
    ) -> Result<bool, &'static str> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let parsed = ResponseHead::parse(
                &ex.head_buf,
                &mut headers,
                self.cfg.max_response_head_bytes,
                ex.method == Method::Head,
            )
            .map_err(|_| "upstream sent an invalid response")?;
            let Some(head) = parsed else { return Ok(false) };
            if head.status == 101 {
                return Err("upstream switched protocols, which the gateway does not relay");
            }
            if head.status < 200 {
                // Interim responses (102, 103 Early Hints, ...) go to an
                // HTTP/1.1 client that gets this response, before the final
                // one; never stored, their fields never merged. A 100 is
                // consumed: the gateway answered `Expect` itself.
                let relay = ex.cache.as_ref().is_none_or(|f| f.relay);
                if relay && head.status != 100 && ex.client_version == Version::Http11 {
                    rewrite::interim_response(self.output.tail(), &head);
                }
                let n = head.head_len;
                ex.head_buf.advance(n);
                continue;
            }
            ex.head_at.get_or_insert(now);
            if ex.canary.is_some() && head.status >= 500 {
                self.retry_canary(now, ex, head.status);
                return Ok(false);
            }
            let framing = rewrite::client_framing(&head, ex.client_version);
            let close = ex.cache.as_ref().is_none_or(|f| f.relay)
                && (!ex.client_keep_alive
                    || self.closes()
                    || framing != ClientFraming::Relay
                    || !ex.request.is_done());
            if close {
                self.close(Closing::AfterResponse);
            }
            let connection = client_fields(&self.access, close, ex.client_version);
            if let Some(fetch) = &mut ex.cache {
                let to_client = (connection.as_slice(), ex.method == Method::Head);
                if let Some(outcome) = self.cache_response(now, fetch, &head, to_client) {
                    ex.outcome = Some(outcome);
                }
            }
            if ex.cache.as_ref().is_none_or(|f| f.relay) {
                let version = ex.client_version;
                let part = self.relay_head(ex.cache.as_deref(), version, &head, framing, close);
                ex.outcome = Some((head.status, part));
            }
            ex.response = Some(ResponseBody {
                reader: BodyReader::response(head.framing),
                framing,
                reusable: head.reusable,
            });
            let n = head.head_len;
            let rest = ex.head_buf.split_off(n);
            ex.head_buf.clear();
            return relay_body(ex, self.output.tail(), &rest);
        }
    }

    /// The cache's part of a final response head: a 304 refreshes the
    /// stored response and a 5xx may be answered by it (stale-if-error),
    /// either way written to the client here (the outcome returned); else
    /// the response may be stored. `to_client` is the connection fields
    /// and whether the request was a HEAD.
    pub(super) fn cache_response(
        &mut self,
        now: Instant,
        fetch: &mut CacheFetch,
        head: &ResponseHead<'_, '_>,
        to_client: (&[u8], bool),
    ) -> Option<(u16, CacheResult)> {
        let wall = self.cfg.wall(now);
        fetch.invalidate_after(head);
        let from_store = if head.status == 304 {
            fetch
                .stale
                .clone()
                .map(|stale| (fetch.refresh(&stale, head, now, wall), Served::Revalidated))
        } else if head.status >= 500 {
            fetch
                .stale_for_error(now)
                .cloned()
                .map(|stale| (stale, Served::StaleIfError))
        } else {
            None
        };
        if let Some((entry, served)) = from_store {
            let relay = std::mem::replace(&mut fetch.relay, false);
            if relay {
                let (connection, head_only) = to_client;
                entry.write_response(&mut self.output, now, served, connection, head_only);
                return Some((entry.meta.status, served.result()));
            }
            return None;
        }
        if head.status == 304 {
            // Nothing stored to refresh: relayed as it came.
            return None;
        }
        // Any status may be stored with explicit freshness, 5xx included
        // (RFC 9111 §3); the rules say which may.
        fetch.begin_store(head, now, wall);
        // The whole object, known to fit: the client's range is cut from
        // it once complete, so nothing is relayed now.
        if fetch.range_wanted
            && fetch.store.is_some()
            && head.status == 200
            && matches!(head.framing, Framing::Length(_))
        {
            fetch.answer_range = true;
            fetch.relay = false;
        }
        None
    }

    /// Writes the client's response head for an upstream head; returns the
    /// cache's part in the answer.
    pub(super) fn relay_head(
        &mut self,
        fetch: Option<&CacheFetch>,
        version: Version,
        head: &ResponseHead<'_, '_>,
        framing: ClientFraming,
        close: bool,
    ) -> CacheResult {
        let verdict = fetch.map(|f| (f.fwd, f.store.is_some(), f.not_stored));
        let id = self.access.as_ref().map(|d| {
            let mut f = Fields::default();
            d.push_id(&mut f);
            f
        });
        let extra = id.as_ref().map_or(&[][..], Fields::as_slice);
        rewrite::client_response(
            self.output.tail(),
            head,
            framing,
            version,
            close,
            verdict,
            extra,
        );
        fetch.map_or(CacheResult::None, |f| f.fwd.result())
    }

    /// The response is complete: release the upstream and get ready for the
    /// next request.
    pub(super) fn finish_exchange(&mut self, now: Instant) {
        let Phase::Proxy(ex) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return;
        };
        if ex.upstream == UpstreamState::Connected {
            // Reused only when the whole request went out: bytes still
            // queued would start the next request on that connection.
            let reuse = ex.response.as_ref().is_some_and(|r| r.reusable)
                && ex.request.is_done()
                && self.upstream_output.is_empty();
            self.actions.push_back(Action::Release { reuse });
        }
        let mut outcome = ex.outcome;
        let (took, canary) = (ex.upstream_took(now), ex.canary.is_some());
        if let Some(mut fetch) = ex.cache {
            if let Some(whole) = fetch.finish_store(now) {
                // The client asked for a range of what just arrived whole.
                if !ex.client_keep_alive {
                    self.close(Closing::AfterResponse);
                }
                let close = self.closes();
                let connection = client_fields(&self.access, close, ex.client_version);
                let connection = connection.as_slice();
                let ranges = fetch.with_request(|h| range::requested(h, &whole));
                let status = write_stored(
                    &mut self.output,
                    &whole,
                    ranges,
                    false,
                    now,
                    Served::Hit,
                    connection,
                );
                outcome = Some((status, CacheResult::Miss));
            }
        }
        if let Some((status, part)) = outcome {
            let proxied = !matches!(part, CacheResult::Hit | CacheResult::Stale);
            if proxied {
                self.upstream_took = took;
                self.canary_answer = canary;
            }
            let answer = if proxied {
                Answer::proxied(status, part)
            } else {
                Answer::cached(status, part)
            };
            self.complete(now, answer);
        }
        let close = self.closes();
        self.end_of_response(now, close);
    }

    pub(super) fn end_of_response(&mut self, now: Instant, close: bool) {
        self.idle_since = now;
        self.head_started = if self.input.is_empty() {
            None
        } else {
            Some(now)
        };
        if close || self.closes() || (self.client_eof && self.input.is_empty()) {
            self.close(Closing::Finished);
        }
    }

    /// The exchange ended after the response head arrived but before the
    /// body was whole (a timeout, a reset, garbage). A client that got
    /// that head can only be told by a close, never by a second response;
    /// the partial response is not stored (its fetch is dropped). When the
    /// client's answer came from the cache instead (a background refresh,
    /// a 304 or a stale answer), the connection goes on.
    pub(super) fn response_cut(&mut self, now: Instant, ex: &Exchange) {
        if ex.cache.as_ref().is_some_and(|f| f.answer_range) {
            // Nothing went to the client yet: it gets an answer, then the
            // connection closes.
            local::write_error(
                self.output.tail(),
                502,
                "upstream response cut short",
                true,
                false,
                "",
            );
            self.complete(
                now,
                Answer::proxied(502, CacheResult::Miss).upstream_failed(),
            );
            self.close(Closing::Finished);
            return;
        }
        if ex.cache.as_ref().is_none_or(|f| f.relay) {
            self.close(Closing::Finished);
        } else {
            self.end_of_response(now, self.closes());
        }
    }

    /// Answers an upstream failure with `status`, if the client has not
    /// seen a response head yet.
    pub(super) fn upstream_failed(
        &mut self,
        now: Instant,
        ex: &Exchange,
        status: u16,
        message: &str,
    ) {
        if ex.response.is_some() {
            return self.response_cut(now, ex);
        }
        let close = !ex.client_keep_alive || !ex.request.is_done() || self.closes();
        let head_only = ex.method == Method::Head;
        let answered = self.completions.len();
        self.upstream_took = ex.upstream_took(now);
        self.canary_answer = ex.canary.is_some();
        match &ex.cache {
            // A background refresh failed: the client has its answer.
            Some(fetch) if !fetch.relay => {}
            Some(fetch) if fetch.stale_for_error(now).is_some() => {
                if let Some(stale) = fetch.stale_for_error(now) {
                    let connection = client_fields(&self.access, close, ex.client_version);
                    let connection = connection.as_slice();
                    stale.write_response(
                        &mut self.output,
                        now,
                        Served::StaleIfError,
                        connection,
                        head_only,
                    );
                    let served = stale.meta.status;
                    self.complete(
                        now,
                        Answer::cached(served, CacheResult::Stale).upstream_failed(),
                    );
                }
            }
            fetch => {
                // With a cache, every proxied answer says its part, errors too.
                let mut fields = BytesMut::new();
                if let Some(f) = fetch {
                    f.fwd
                        .write(&mut fields, None, false, Some("upstream-failed"));
                }
                let extra = std::str::from_utf8(&fields).unwrap_or("");
                local::write_error(self.output.tail(), status, message, close, head_only, extra);
                let part = fetch.as_ref().map_or(CacheResult::None, |f| f.fwd.result());
                self.complete(now, Answer::proxied(status, part).upstream_failed());
            }
        }
        if self.completions.len() > answered {
            if let Some(done) = self.completions.back_mut() {
                done.transport_error = ex.upstream != UpstreamState::Connecting;
            }
        }
        self.end_of_response(now, close);
    }

    /// Answers an error and closes the connection.
    pub(super) fn fail(&mut self, now: Instant, status: u16, message: &str) {
        self.phase = Phase::Idle;
        let head_only = self.head_request;
        local::write_error(self.output.tail(), status, message, true, head_only, "");
        self.complete(now, Answer::local(status));
        self.close(Closing::Finished);
    }
}
