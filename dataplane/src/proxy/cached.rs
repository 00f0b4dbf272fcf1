//! How the engine uses the cache: the lookup decision for a request, the
//! fetch state an exchange carries (what to store, what to revalidate,
//! which fetch it claimed), and turning an upstream response into a stored
//! entry or a refresh of one.

use crate::cache::entry::{Entry, Meta};
use crate::cache::rules::{self, CacheControl, NotStored};
use crate::cache::verdict::Forwarded;
use crate::cache::{url_key, url_parts, Cache, Claim, Scheme, Stored, Waiting};
use crate::http::request::{Method, RequestHead};
use crate::http::response::ResponseHead;
use crate::http::{list_members, trim, Framing};
use crate::route::TtlOverride;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How long a key whose response was uncacheable skips coalescing.
const UNCACHEABLE_FOR: Duration = Duration::from_secs(30);

/// What the cache says about a request.
pub(super) enum Decision {
    /// The cache is not consulted: the method, or the cache is bypassed.
    Bypass(Forwarded),
    /// A fresh stored response answers.
    Hit(Arc<Entry>),
    /// The client's own condition matches a fresh stored response: 304.
    NotModified(Arc<Entry>),
    /// A stale response answers within `stale-while-revalidate`; when
    /// `refresh` the connection revalidates it in the background.
    Stale { entry: Arc<Entry>, refresh: bool },
    /// A stored response must be revalidated with the upstream first:
    /// it is stale, or the client asked (`Forwarded::Request`).
    Revalidate(Arc<Entry>, Forwarded),
    /// Nothing usable is stored; this connection fetches (`claimed`: it
    /// holds the key's fetch, so others wait for it; `uncacheable`: the
    /// key's responses were found uncacheable lately).
    Miss { claimed: bool, uncacheable: bool },
    /// Another connection fetches this key: wait for it (counted among
    /// the waiters while this is held).
    Wait(Waiting),
    /// The request's `Connection` names a field the stored responses vary
    /// on: the origin would not see what the cache keys on. 400.
    ConnectionNamesVary,
}

/// Request facts the cache decision and the store need.
pub(super) struct RequestFacts {
    pub cc: CacheControl,
    pub authorization: bool,
    /// The request carried a `Cookie`: a response without freshness of
    /// its own is not given the route's.
    pub cookie: bool,
    pub url_len: usize,
    /// The request's `Connection` names fields, which are not forwarded:
    /// a response that varies may then not be stored.
    pub connection_names_fields: bool,
}

/// Decides how the cache answers `head`, which came by `scheme`, leaving
/// the URL key in `key`. `may_wait` is false once this request has waited
/// its turn.
pub(super) fn decide(
    cache: &Cache,
    key: &mut Vec<u8>,
    (scheme, head): (Scheme, &RequestHead<'_, '_>),
    now: Instant,
    wait: Duration,
    may_wait: bool,
) -> (Decision, RequestFacts) {
    let cc = CacheControl::parse(head.headers);
    let authorization = rules::field(head.headers, "authorization").is_some();
    let cookie = rules::field(head.headers, "cookie").is_some();
    let url_len = url_key(key, scheme, head.host, head.target.as_bytes());
    let facts = RequestFacts {
        cc,
        authorization,
        cookie,
        url_len,
        connection_names_fields: head.connection.names_fields,
    };
    if !matches!(head.method, Method::Get | Method::Head) {
        return (Decision::Bypass(Forwarded::Method), facts);
    }
    if cache.bypassed() {
        return (Decision::Bypass(Forwarded::Bypass), facts);
    }
    if head.connection.names_fields
        && cache.varies_on(&key[..url_len], |n| head.connection.lists(n))
    {
        return (Decision::ConnectionNamesVary, facts);
    }
    let decision = match cache.lookup(key, url_len, head.headers) {
        Some(e) if !authorization || e.meta.auth_ok => {
            let age = e.age(now);
            let fresh = age < e.meta.lifetime;
            let usable =
                fresh && !e.meta.no_cache && !cc.no_cache && cc.max_age.is_none_or(|m| age <= m);
            let may_serve_stale =
                !e.meta.must_revalidate && !e.meta.no_cache && !cc.no_cache && cc.max_age.is_none();
            if usable {
                if client_condition_matches(head.headers, &e.meta) {
                    Decision::NotModified(e)
                } else {
                    Decision::Hit(e)
                }
            } else if may_serve_stale
                && age
                    < e.meta
                        .lifetime
                        .saturating_add(e.meta.stale_while_revalidate)
            {
                let refresh = head.method == Method::Get
                    && matches!(
                        cache.claim_fetch(&key[..url_len], now, wait),
                        Claim::Claimed
                    );
                Decision::Stale { entry: e, refresh }
            } else {
                let asked = fresh && (e.meta.no_cache || cc.no_cache || cc.max_age.is_some());
                let why = if asked && !e.meta.no_cache {
                    Forwarded::Request
                } else {
                    Forwarded::Stale
                };
                Decision::Revalidate(e, why)
            }
        }
        // A HEAD cannot fill the cache: it neither holds others nor waits.
        _ if !may_wait || head.method == Method::Head => Decision::Miss {
            claimed: false,
            uncacheable: false,
        },
        _ => match cache.claim_fetch(&key[..url_len], now, wait) {
            Claim::Claimed => Decision::Miss {
                claimed: true,
                uncacheable: false,
            },
            Claim::Pass => Decision::Miss {
                claimed: false,
                uncacheable: true,
            },
            Claim::Wait(waiting) => Decision::Wait(waiting),
        },
    };
    (decision, facts)
}

/// Whether the client's `If-None-Match` (or, without it,
/// `If-Modified-Since`) is satisfied by a stored response.
fn client_condition_matches(headers: &[httparse::Header<'_>], meta: &Meta) -> bool {
    if let Some(inm) = rules::field(headers, "if-none-match") {
        return meta
            .etag
            .as_ref()
            .is_some_and(|etag| rules::etag_matches(inm, etag));
    }
    match (
        rules::field(headers, "if-modified-since").and_then(rules::http_date),
        &meta.last_modified,
    ) {
        (Some(since), Some(lm)) => rules::http_date(lm).is_some_and(|lm| lm <= since),
        _ => false,
    }
}

/// A response being collected for the cache.
pub(super) struct StoreBuf {
    pub head: BytesMut,
    pub body: BytesMut,
    pub meta: Meta,
    pub vary: Option<Vec<Box<str>>>,
}

/// What an exchange carries for the cache.
pub(super) struct CacheFetch {
    pub cache: Arc<Cache>,
    /// The URL key.
    pub url: Bytes,
    /// The request head as received, for `Vary` keys at store time.
    pub request_head: Bytes,
    pub facts: RequestFacts,
    pub method: Method,
    /// This exchange holds the key's fetch.
    pub claimed: bool,
    /// The stored response being revalidated.
    pub stale: Option<Arc<Entry>>,
    /// The client gets this response; false for a background refresh.
    pub relay: bool,
    /// Why the request went upstream (`X-Cache`, `Cache-Status`).
    pub fwd: Forwarded,
    /// Why the response is not stored, once known (`Cache-Status`'s
    /// `detail`).
    pub not_stored: Option<&'static str>,
    /// The client asked for a range of an object not stored: the whole
    /// object is fetched (`Range` is not forwarded).
    pub range_wanted: bool,
    /// The whole object is being stored, and the client's range is cut
    /// from it once complete (nothing is relayed before).
    pub answer_range: bool,
    /// The response being stored, once the head allowed it.
    pub store: Option<StoreBuf>,
    /// When the request left, for the age of the response.
    pub sent_wall: SystemTime,
    /// The route's freshness for what it stores, whatever the response
    /// says (`cache_ttl_override_s`), for the content types it names.
    pub ttl_override: Option<TtlOverride>,
}

impl Drop for CacheFetch {
    fn drop(&mut self) {
        if self.claimed {
            self.cache.release_fetch(&self.url);
        }
    }
}

impl CacheFetch {
    /// A fetch of the key `url` for a request whose head is `request_head`,
    /// sent at `sent_wall`: relayed to the client, holding no claim,
    /// revalidating nothing, until the caller says otherwise.
    pub fn new(
        cache: Arc<Cache>,
        url: &[u8],
        request_head: &[u8],
        method: Method,
        facts: RequestFacts,
        sent_wall: SystemTime,
    ) -> Self {
        Self {
            cache,
            url: Bytes::copy_from_slice(url),
            request_head: Bytes::copy_from_slice(request_head),
            facts,
            method,
            claimed: false,
            stale: None,
            relay: true,
            fwd: Forwarded::UriMiss,
            not_stored: None,
            range_wanted: false,
            answer_range: false,
            store: None,
            sent_wall,
            ttl_override: None,
        }
    }

    /// Whether a stale stored response may answer instead of an upstream
    /// error (`stale-if-error`).
    pub fn stale_for_error(&self, now: Instant) -> Option<&Arc<Entry>> {
        self.stale.as_ref().filter(|e| {
            !e.meta.must_revalidate
                && !e.meta.no_cache
                && e.age(now) < e.meta.lifetime.saturating_add(e.meta.stale_if_error)
        })
    }

    /// Unsafe methods (extension methods too) invalidate the URL and the
    /// `Location` and `Content-Location` targets on the same host (RFC
    /// 9111 §4.4).
    pub fn invalidate_after(&self, resp: &ResponseHead<'_, '_>) {
        if self.method.is_safe() || resp.status >= 400 {
            return;
        }
        self.cache.remove_url(&self.url);
        let (scheme, host, _) = url_parts(&self.url);
        for name in ["location", "content-location"] {
            let Some(v) = rules::field(resp.headers, name) else {
                continue;
            };
            let path = match v.iter().position(|&b| b == b'/') {
                Some(0) => Some(v),
                _ => strip_same_host(v, host),
            };
            if let Some(path) = path {
                let mut key = Vec::new();
                url_key(&mut key, scheme, host, path);
                self.cache.remove_url(&key);
            }
        }
    }

    /// Starts collecting a response for the cache if it may be stored.
    pub fn begin_store(&mut self, resp: &ResponseHead<'_, '_>, now: Instant, now_wall: SystemTime) {
        if self.cache.bypassed() {
            self.not_stored = Some("bypassed");
            return;
        }
        if !self.cache.inserts_enabled() {
            // Memory relief: nothing is stored until it ends.
            self.not_stored = Some("inserts-paused");
            return;
        }
        let cc = CacheControl::of_response(resp.headers, self.cache.targeted_fields());
        let get = self.method == Method::Get;
        let verdict = rules::storable(
            get,
            &self.facts.cc,
            self.facts.authorization,
            resp.status,
            resp.headers,
            &cc,
            now_wall,
        );
        // The route's TTL, for the types it names: it gives freshness to a
        // response without any, unless the request carried credentials (a
        // personal page the origin sent without cache headers).
        let ttl = self
            .ttl_override
            .as_ref()
            .filter(|o| o.applies_to(rules::field(resp.headers, "content-type")))
            .map(|o| o.ttl);
        let credentials = self.facts.cookie || self.facts.authorization;
        let verdict = match verdict {
            Err(NotStored::NoFreshness) if ttl.is_some() && !credentials => Ok(()),
            v => v,
        };
        if let Err(why) = verdict {
            self.not_stored = Some(why.detail());
            if self.claimed {
                self.cache.mark_uncacheable(&self.url, now, UNCACHEABLE_FOR);
            }
            return;
        }
        if let Framing::Length(n) = resp.framing {
            if n > self.cache.config().max_object_bytes {
                self.not_stored = Some("too-large");
                // Known unstorable now: nobody waits for this fetch.
                if self.claimed {
                    self.cache.mark_uncacheable(&self.url, now, UNCACHEABLE_FOR);
                    self.claimed = false;
                }
                return;
            }
        }
        let mut head = BytesMut::new();
        super::rewrite::response_fields(&mut head, resp, false);
        let delay = now_wall
            .duration_since(self.sent_wall)
            .unwrap_or(Duration::ZERO);
        let mut meta = meta_of(resp, &cc, now_wall, delay);
        if let Some(ttl) = ttl {
            meta.lifetime = ttl.as_secs();
        }
        let vary = vary_names_of(resp.headers);
        if !vary.is_empty() && self.facts.connection_names_fields {
            self.not_stored = Some("vary-on-dropped-field");
            return;
        }
        let vary = (!vary.is_empty()).then_some(vary);
        self.store = Some(StoreBuf {
            head,
            body: BytesMut::new(),
            meta,
            vary,
        });
    }

    /// Adds body bytes to the response being stored; gives up on it when
    /// it grows past the object limit.
    pub fn store_body(&mut self, data: &[u8]) {
        if let Some(buf) = &mut self.store {
            if (buf.body.len() + data.len()) as u64 > self.cache.config().max_object_bytes {
                self.store = None;
                // Grown past the limit: release waiters at once.
                if self.claimed {
                    self.cache.release_fetch(&self.url);
                    self.claimed = false;
                }
            } else {
                buf.body.extend_from_slice(data);
            }
        }
    }

    /// Stores the collected response.
    ///
    /// When this fetch answers a client's range ([`Self::answer_range`]),
    /// returns the complete response to cut the range from.
    pub fn finish_store(&mut self, now: Instant) -> Option<Entry> {
        let buf = self.store.take()?;
        let mut headers = [httparse::EMPTY_HEADER; crate::http::MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let _ = req.parse(&self.request_head);
        self.cache.clear_fetch_state(&self.url);
        let (head, body) = (buf.head.freeze(), buf.body.freeze());
        let answer = self.answer_range.then(|| {
            Entry::new(
                self.url.clone(),
                head.clone(),
                body.clone(),
                buf.meta.clone(),
                now,
            )
        });
        self.cache.insert(
            &self.url,
            buf.vary.as_deref(),
            req.headers,
            Stored {
                head,
                body,
                meta: buf.meta,
            },
            now,
        );
        answer
    }

    /// The request's fields, parsed again from the stored head, for `f`.
    pub fn with_request<T>(&self, f: impl FnOnce(&[httparse::Header<'_>]) -> T) -> T {
        let mut headers = [httparse::EMPTY_HEADER; crate::http::MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let _ = req.parse(&self.request_head);
        f(req.headers)
    }

    /// The upstream answered a revalidation with 304: stores the stale
    /// entry again with the new fields and freshness (RFC 9111 §4.3.4),
    /// and returns the refreshed entry. When the merged response may no
    /// longer be stored (the 304 brought `private`, `no-store` or a
    /// `Set-Cookie`), the stored entry is removed instead and the refreshed
    /// response goes to this client only.
    pub fn refresh(
        &self,
        stale: &Entry,
        resp: &ResponseHead<'_, '_>,
        now: Instant,
        now_wall: SystemTime,
    ) -> Arc<Entry> {
        let mut stored_headers = [httparse::EMPTY_HEADER; crate::http::MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut stored_headers);
        let mut head_with_end = stale.head.to_vec();
        head_with_end.extend_from_slice(b"\r\n");
        let _ = parsed.parse(&head_with_end);
        let (merged, head) = merged_head(&stale.head, parsed.headers, resp.headers);
        let cc = CacheControl::of_response(&merged, self.cache.targeted_fields());
        let view = ResponseHead {
            headers: &merged,
            ..*resp
        };
        let delay = now_wall
            .duration_since(self.sent_wall)
            .unwrap_or(Duration::ZERO);
        let mut meta = meta_of(&view, &cc, now_wall, delay);
        meta.status = stale.meta.status;
        let mut headers = [httparse::EMPTY_HEADER; crate::http::MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let _ = req.parse(&self.request_head);
        let url_end = stale
            .key
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(stale.key.len());
        let vary = (stale.meta.vary_id != 0).then(|| vary_names_of(&merged));
        let storable = rules::storable(
            true,
            &self.facts.cc,
            self.facts.authorization,
            meta.status,
            &merged,
            &cc,
            now_wall,
        )
        .is_ok();
        if !storable || self.cache.bypassed() {
            self.cache.remove_entry(stale);
        } else {
            self.cache.insert(
                &stale.key[..url_end],
                vary.as_deref(),
                req.headers,
                Stored {
                    head: head.clone().freeze(),
                    body: stale.body.clone(),
                    meta: meta.clone(),
                },
                now,
            );
        }
        Arc::new(Entry::new(
            stale.key.clone(),
            head.freeze(),
            stale.body.clone(),
            meta,
            now,
        ))
    }
}

/// The head of a stored response refreshed by a 304 (RFC 9111 §4.3.4):
/// its status line, its `stored` fields with those the 304 carries
/// replaced by the 304's (framing, connection and cache-status fields kept
/// from neither side but the stored one), `Via` last. Returns the merged
/// fields and the head's bytes.
fn merged_head<'h>(
    stored_head: &[u8],
    stored: &[httparse::Header<'h>],
    resp: &[httparse::Header<'h>],
) -> (Vec<httparse::Header<'h>>, BytesMut) {
    let skip = |name: &str| {
        [
            "content-length",
            "transfer-encoding",
            "connection",
            "keep-alive",
            "age",
            "x-cache",
            "via",
        ]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(name))
    };
    let replaced = |name: &str| resp.iter().any(|h| h.name.eq_ignore_ascii_case(name));
    let mut merged: Vec<httparse::Header<'_>> = stored
        .iter()
        .filter(|h| !replaced(h.name) || skip(h.name))
        .copied()
        .collect();
    merged.extend(resp.iter().filter(|h| !skip(h.name)).copied());
    let mut head = BytesMut::new();
    let status_line_end = stored_head
        .iter()
        .position(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    head.extend_from_slice(&stored_head[..status_line_end]);
    for h in merged
        .iter()
        .filter(|h| !h.name.eq_ignore_ascii_case("via"))
    {
        head.extend_from_slice(h.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(h.value);
        head.extend_from_slice(b"\r\n");
    }
    for h in stored.iter().filter(|h| h.name.eq_ignore_ascii_case("via")) {
        head.extend_from_slice(b"Via: ");
        head.extend_from_slice(h.value);
        head.extend_from_slice(b"\r\n");
    }
    (merged, head)
}

fn vary_names_of(headers: &[httparse::Header<'_>]) -> Vec<Box<str>> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("vary"))
        .flat_map(|h| list_members(h.value))
        .map(|n| {
            String::from_utf8_lossy(n)
                .to_ascii_lowercase()
                .into_boxed_str()
        })
        .collect()
}

fn meta_of(
    resp: &ResponseHead<'_, '_>,
    cc: &CacheControl,
    now_wall: SystemTime,
    delay: Duration,
) -> Meta {
    let value = |name| rules::field(resp.headers, name).map(Bytes::copy_from_slice);
    Meta {
        status: resp.status,
        stored_wall: now_wall,
        initial_age: rules::initial_age(resp.headers, now_wall, delay).as_secs(),
        lifetime: rules::freshness_lifetime(resp.headers, cc, now_wall).as_secs(),
        must_revalidate: cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some(),
        no_cache: cc.no_cache,
        auth_ok: cc.public || cc.must_revalidate || cc.s_maxage.is_some(),
        stale_while_revalidate: cc.stale_while_revalidate.unwrap_or(0),
        stale_if_error: cc.stale_if_error.unwrap_or(0),
        etag: value("etag"),
        last_modified: value("last-modified"),
        vary_id: 0,
    }
}

/// The path of an absolute URI on `host` (`http://host/path` → `/path`).
fn strip_same_host<'a>(uri: &'a [u8], host: &[u8]) -> Option<&'a [u8]> {
    let rest = uri
        .strip_prefix(b"http://")
        .or_else(|| uri.strip_prefix(b"https://"))?;
    let slash = rest.iter().position(|&b| b == b'/')?;
    trim(&rest[..slash])
        .eq_ignore_ascii_case(host)
        .then_some(&rest[slash..])
}
