//! Cache lookup phase: a routed request is answered from the store,
//! waits for another connection's fetch of its key, or goes upstream
//! with what the exchange carries for the cache.

use super::*;

/// What the cache lookup decided.
pub(super) enum Lookup {
    /// Answered from the store.
    Answered,
    /// Nothing more now: the request waits for another connection's
    /// fetch, or was refused with an error.
    Stop,
    /// Goes upstream, with what the exchange carries for the cache.
    Forward(Option<Box<CacheFetch>>),
}

/// Answers a request from a stored response: `ranges` when a GET asked
/// for some (RFC 9110 §14), else the whole response (or its head). Returns
/// the status sent.
pub(super) fn write_stored(
    output: &mut Output,
    e: &Entry,
    ranges: Option<Ranges>,
    head_only: bool,
    now: Instant,
    served: Served,
    connection: &[u8],
) -> u16 {
    match ranges {
        Some(ranges) => {
            e.write_ranges(output, now, served, connection, ranges);
            match ranges {
                Ranges::Parts(..) => 206,
                _ => 416,
            }
        }
        None => {
            e.write_response(output, now, served, connection, head_only);
            e.meta.status
        }
    }
}

/// The ranges a request asks of a stored response, if it is a GET that
/// asks for some.
pub(super) fn ranges_of(head: &RequestHead<'_, '_>, e: &Entry) -> Option<Ranges> {
    (head.method == Method::Get)
        .then(|| range::requested(head.headers, e))
        .flatten()
}

/// The request of a background refresh: a bodiless GET of the client's
/// target and host with the client's fields (a varied response is stored
/// under the same variant), minus what would make it partial, give it a
/// body, make it conditional on the client's validators or tie it to the
/// client's connection (the fields its `Connection` named included), plus `Cache-Control: max-age=0` so the cache
/// revalidates instead of serving.
pub(super) fn refresh_request(head: &RequestHead<'_, '_>) -> Bytes {
    const DROPPED: [&str; 12] = [
        "content-length",
        "transfer-encoding",
        "cache-control",
        "pragma",
        "range",
        "if-range",
        "if-none-match",
        "if-modified-since",
        "connection",
        "keep-alive",
        "expect",
        "te",
    ];
    let mut out = BytesMut::with_capacity(head.head_len + 32);
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    out.extend_from_slice(b"Host: ");
    out.extend_from_slice(head.host);
    out.extend_from_slice(b"\r\n");
    for h in head.headers {
        // Fields the client's `Connection` named were for the gateway.
        if DROPPED.iter().any(|d| h.name.eq_ignore_ascii_case(d))
            || head.connection.is_hop_by_hop(h.name)
            || h.name.eq_ignore_ascii_case("host")
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Cache-Control: max-age=0\r\nConnection: close\r\n\r\n");
    out.freeze()
}

impl Conn {
    /// The cache lookup: answers from the store, waits for another
    /// connection's fetch, or says what the upstream request carries for
    /// the cache.
    pub(super) fn lookup(
        &mut self,
        now: Instant,
        head: &RequestHead<'_, '_>,
        raw: &[u8],
        close: bool,
    ) -> Lookup {
        let may_wait = self.coalesce_until.is_none_or(|t| now < t);
        let wait = self.cfg.coalesce_wait;
        let Some(cache) = &self.cache else {
            return Lookup::Forward(None);
        };
        let (decision, facts) = cached::decide(
            cache,
            &mut self.key_buf,
            (self.scheme, head),
            now,
            wait,
            may_wait,
        );
        if let Some(d) = &mut self.access {
            d.cache_done = Some(now);
        }
        let connection = client_fields(&self.access, close, head.version);
        let connection = connection.as_slice();
        let mut range_wanted = false;
        let (stale, claimed, fwd) = match decision {
            Decision::Hit(e) => {
                // A hit after waiting for another connection's fetch was
                // collapsed into it.
                let collapsed = self.coalesce_until.is_some();
                let served = if collapsed {
                    Served::Collapsed
                } else {
                    Served::Hit
                };
                self.serve_stored(now, head, &e, served, connection);
                return Lookup::Answered;
            }
            Decision::NotModified(e) => {
                e.write_not_modified(self.output.tail(), now, connection);
                self.complete(now, Answer::cached(304, CacheResult::Hit));
                return Lookup::Answered;
            }
            Decision::ConnectionNamesVary => {
                self.fail(now, 400, "Connection names a field the response varies on");
                return Lookup::Stop;
            }
            Decision::Wait(waiting) => {
                let until = *self.coalesce_until.get_or_insert(now + wait);
                self.phase = Phase::Wait {
                    until,
                    _waiting: waiting,
                };
                return Lookup::Stop;
            }
            Decision::Stale { entry, refresh } => {
                let served = Served::StaleWhileRevalidate;
                self.serve_stored(now, head, &entry, served, connection);
                if refresh {
                    self.actions.push_back(Action::Refresh {
                        request: refresh_request(head),
                        key: Bytes::copy_from_slice(&self.key_buf[..facts.url_len]),
                    });
                }
                return Lookup::Answered;
            }
            Decision::Revalidate(e, why) => (Some(e), false, why),
            Decision::Miss {
                claimed,
                uncacheable,
            } => {
                // A range of an object that may be stored: fetch it whole.
                range_wanted = head.method == Method::Get
                    && !uncacheable
                    && rules::field(head.headers, "range").is_some();
                (None, claimed, Forwarded::UriMiss)
            }
            Decision::Bypass(why) => (None, false, why),
        };
        let mut fetch = self.fetch(now, head.method, raw, facts);
        if let Some(f) = &mut fetch {
            f.claimed = claimed;
            f.stale = stale;
            f.fwd = fwd;
            f.range_wanted = range_wanted;
        }
        Lookup::Forward(fetch)
    }

    /// What an exchange for the request with head `raw` carries for the
    /// cache (the key in `key_buf`), with the route's TTL.
    pub(super) fn fetch(
        &self,
        now: Instant,
        method: Method,
        raw: &[u8],
        facts: cached::RequestFacts,
    ) -> Option<Box<CacheFetch>> {
        let cache = self.cache.clone()?;
        let url = &self.key_buf[..facts.url_len];
        let mut fetch = CacheFetch::new(cache, url, raw, method, facts, self.cfg.wall(now));
        fetch.ttl_override = self
            .route
            .and_then(|r| self.cfg.routes.get(r))
            .and_then(|r| r.cache_ttl.clone());
        Some(Box::new(fetch))
    }

    /// Answers from a stored entry: a hit, or a stale one
    /// (stale-while-revalidate).
    pub(super) fn serve_stored(
        &mut self,
        now: Instant,
        head: &RequestHead<'_, '_>,
        entry: &Entry,
        served: Served,
        connection: &[u8],
    ) {
        let status = write_stored(
            &mut self.output,
            entry,
            ranges_of(head, entry),
            head.method == Method::Head,
            now,
            served,
            connection,
        );
        self.complete(now, Answer::cached(status, served.result()));
    }

    /// A fetch ended somewhere: a waiting request looks at the cache
    /// again (and waits on when its key's fetch still runs).
    pub(super) fn retry_wait(&mut self, now: Instant) {
        if self.is_waiting() {
            self.send_clock(now);
            self.phase = Phase::Idle;
            self.advance(now);
        }
    }
}
