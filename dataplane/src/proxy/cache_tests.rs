//! The engine with a cache, on byte slices: every RFC 9111 behaviour the
//! gateway promises, one test each.

use super::testkit::*;
use super::Action;
use super::*;
const GET: &str = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
const FRESH: &str =
    "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn miss_then_hit_with_age_and_x_cache() {
    let cache = new_cache();
    let t0 = Instant::now();
    let (up, _, out) = roundtrip(&cache, t0, GET, FRESH);
    assert!(
        up && out.contains("X-Cache: MISS\r\n") && out.ends_with("hello"),
        "{out}"
    );
    let (up, _, out) = roundtrip(&cache, t0 + Duration::from_secs(7), GET, "");
    assert!(!up, "served from cache");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(
        out.contains("Age: 7\r\nX-Cache: HIT\r\n") && out.contains("Content-Length: 5\r\n"),
        "{out}"
    );
    assert!(
        out.contains("Via: 1.1 ultragate\r\n") && out.ends_with("\r\n\r\nhello"),
        "{out}"
    );
}

#[test]
fn head_is_answered_from_a_stored_get() {
    let cache = new_cache();
    let t0 = Instant::now();
    roundtrip(&cache, t0, GET, FRESH);
    let (up, _, out) = roundtrip(&cache, t0, "HEAD /a HTTP/1.1\r\nHost: h\r\n\r\n", "");
    assert!(
        !up && out.ends_with(
            "Content-Length: 5\r\nAge: 0\r\nX-Cache: HIT\r\n\
                 Cache-Status: ultragate; hit; ttl=60\r\n\r\n"
        ),
        "{out}"
    );
}

#[test]
fn expires_with_date_gives_freshness() {
    let cache = new_cache();
    let t0 = Instant::now();
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let expires = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
    let resp = format!(
        "HTTP/1.1 200 OK\r\nDate: {date}\r\nExpires: {expires}\r\nContent-Length: 1\r\n\r\nx"
    );
    roundtrip(&cache, t0, GET, &resp);
    assert!(!roundtrip(&cache, t0 + Duration::from_secs(20), GET, "").0);
    let (up, _, _) = roundtrip(&cache, t0 + Duration::from_secs(40), GET, &resp);
    assert!(up, "expired");
}

#[test]
fn no_store_and_private_are_never_served_from_cache() {
    for cc in ["no-store", "private, max-age=60"] {
        let cache = new_cache();
        let t0 = Instant::now();
        let resp = format!("HTTP/1.1 200 OK\r\nCache-Control: {cc}\r\nContent-Length: 1\r\n\r\nx");
        roundtrip(&cache, t0, GET, &resp);
        assert!(
            roundtrip(&cache, t0, GET, &resp).0,
            "{cc} must not be stored"
        );
    }
}

#[test]
fn authorization_requests_use_only_shareable_responses() {
    let cache = new_cache();
    let t0 = Instant::now();
    let auth = "GET /a HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer x\r\n\r\n";
    roundtrip(&cache, t0, auth, FRESH);
    assert!(
        roundtrip(&cache, t0, auth, FRESH).0,
        "max-age alone does not allow sharing"
    );
    let public =
        "HTTP/1.1 200 OK\r\nCache-Control: public, max-age=60\r\nContent-Length: 1\r\n\r\np";
    let cache = new_cache();
    roundtrip(&cache, t0, auth, public);
    assert!(!roundtrip(&cache, t0, auth, "").0, "public allows it");
}

#[test]
fn vary_keeps_variants_and_star_is_not_stored() {
    let cache = new_cache();
    let t0 = Instant::now();
    let req = |lang: &str| format!("GET /v HTTP/1.1\r\nHost: h\r\nAccept-Language: {lang}\r\n\r\n");
    let resp = |body: &str| {
        format!("HTTP/1.1 200 OK\r\nVary: Accept-Language\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\n{body}")
    };
    roundtrip(&cache, t0, &req("de"), &resp("de"));
    roundtrip(&cache, t0, &req("fr"), &resp("fr"));
    let (up, _, out) = roundtrip(&cache, t0, &req("de"), "");
    assert!(!up && out.ends_with("de"), "{out}");
    let (up, _, out) = roundtrip(&cache, t0, &req("fr"), "");
    assert!(!up && out.ends_with("fr"), "{out}");
    assert!(roundtrip(&cache, t0, &req("en"), &resp("en")).0);

    let star =
        "HTTP/1.1 200 OK\r\nVary: *\r\nCache-Control: max-age=60\r\nContent-Length: 1\r\n\r\ns";
    let cache = new_cache();
    roundtrip(&cache, t0, GET, star);
    assert!(roundtrip(&cache, t0, GET, star).0);
}

#[test]
fn stale_entry_is_revalidated_and_304_refreshes_it() {
    let cache = new_cache();
    let t0 = Instant::now();
    let resp = "HTTP/1.1 200 OK\r\nCache-Control: max-age=10\r\nETag: \"v1\"\r\nX-Old: 1\r\nContent-Length: 5\r\n\r\nhello";
    roundtrip(&cache, t0, GET, resp);
    let t1 = t0 + Duration::from_secs(20);
    let not_modified = "HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=100\r\nETag: \"v1\"\r\nX-Old: 2\r\n\r\n";
    let (up, sent, out) = roundtrip(&cache, t1, GET, not_modified);
    assert!(up && sent.contains("If-None-Match: \"v1\"\r\n"), "{sent}");
    assert!(
        out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("hello"),
        "{out}"
    );
    assert!(
        out.contains("X-Old: 2\r\n") && !out.contains("X-Old: 1"),
        "stored fields updated: {out}"
    );
    let (up, _, out) = roundtrip(&cache, t1 + Duration::from_secs(50), GET, "");
    assert!(
        !up && out.contains("X-Cache: HIT"),
        "fresh again for max-age=100: {out}"
    );
}

#[test]
fn last_modified_revalidation_uses_if_modified_since() {
    let cache = new_cache();
    let t0 = Instant::now();
    let resp = "HTTP/1.1 200 OK\r\nCache-Control: max-age=0\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 1\r\n\r\nx";
    roundtrip(&cache, t0, GET, resp);
    let (up, sent, _) = roundtrip(&cache, t0, GET, "HTTP/1.1 304 Not Modified\r\n\r\n");
    assert!(
        up && sent.contains("If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n"),
        "{sent}"
    );
}

#[test]
fn client_conditionals_get_304_from_cache() {
    let cache = new_cache();
    let t0 = Instant::now();
    let resp = "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nETag: W/\"e\"\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 1\r\n\r\nx";
    roundtrip(&cache, t0, GET, resp);
    let (up, _, out) = roundtrip(
        &cache,
        t0,
        "GET /a HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"e\"\r\n\r\n",
        "",
    );
    assert!(
        !up && out.starts_with("HTTP/1.1 304 Not Modified\r\nETag: W/\"e\"\r\n"),
        "{out}"
    );
    let ims =
        "GET /a HTTP/1.1\r\nHost: h\r\nIf-Modified-Since: Mon, 07 Nov 1994 08:49:37 GMT\r\n\r\n";
    assert!(roundtrip(&cache, t0, ims, "")
        .2
        .starts_with("HTTP/1.1 304 "));
    let (_, _, out) = roundtrip(
        &cache,
        t0,
        "GET /a HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"other\"\r\n\r\n",
        "",
    );
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
}

#[test]
fn request_no_cache_and_max_age_zero_force_revalidation() {
    for directive in ["no-cache", "max-age=0"] {
        let cache = new_cache();
        let t0 = Instant::now();
        roundtrip(&cache, t0, GET, FRESH);
        let req = format!("GET /a HTTP/1.1\r\nHost: h\r\nCache-Control: {directive}\r\n\r\n");
        assert!(
            roundtrip(&cache, t0 + Duration::from_secs(1), &req, FRESH).0,
            "{directive}"
        );
    }
}

#[test]
fn response_no_cache_and_must_revalidate() {
    let cache = new_cache();
    let t0 = Instant::now();
    let resp = "HTTP/1.1 200 OK\r\nCache-Control: no-cache, max-age=60\r\nETag: \"n\"\r\nContent-Length: 1\r\n\r\nx";
    roundtrip(&cache, t0, GET, resp);
    assert!(
        roundtrip(&cache, t0, GET, "HTTP/1.1 304 Not Modified\r\n\r\n").0,
        "no-cache: every use revalidates"
    );

    // must-revalidate forbids stale-if-error.
    let cache = new_cache();
    let resp = "HTTP/1.1 200 OK\r\nCache-Control: max-age=1, must-revalidate, stale-if-error=60\r\nContent-Length: 1\r\n\r\nx";
    roundtrip(&cache, t0, GET, resp);
    let (_, _, out) = roundtrip(
        &cache,
        t0 + Duration::from_secs(5),
        GET,
        "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
}

#[test]
fn unsafe_methods_invalidate_uri_and_location() {
    let cache = new_cache();
    let t0 = Instant::now();
    roundtrip(&cache, t0, GET, FRESH);
    roundtrip(&cache, t0, "GET /b HTTP/1.1\r\nHost: h\r\n\r\n", FRESH);
    let (_, _, out) = roundtrip(
        &cache,
        t0,
        "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 201 Created\r\nLocation: http://h/b\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(out.contains("X-Cache: BYPASS\r\n"), "{out}");
    assert!(roundtrip(&cache, t0, GET, FRESH).0, "/a invalidated");
    assert!(
        roundtrip(&cache, t0, "GET /b HTTP/1.1\r\nHost: h\r\n\r\n", FRESH).0,
        "Location invalidated"
    );
}

#[test]
fn stale_while_revalidate_answers_stale_and_refreshes_behind() {
    let cache = new_cache();
    let t0 = Instant::now();
    let resp = "HTTP/1.1 200 OK\r\nCache-Control: max-age=10, stale-while-revalidate=60\r\nContent-Length: 3\r\n\r\nold";
    roundtrip(&cache, t0, GET, resp);
    let t1 = t0 + Duration::from_secs(20);
    let mut c = conn(&cache, t1);
    c.recv_client(t1, GET.as_bytes());
    let out = take_client(&mut c);
    assert!(
        out.contains("X-Cache: STALE\r\n") && out.ends_with("old"),
        "{out}"
    );
    // The refresh is a fetch of its own, not in this connection's slot.
    let Some(Action::Refresh { request, key }) = c.poll_action() else {
        panic!("a background refresh")
    };
    assert!(c.poll_action().is_none(), "no upstream for the client");
    assert_eq!(
        &request[..],
        b"GET /a HTTP/1.1\r\nHost: h\r\nCache-Control: max-age=0\r\nConnection: close\r\n\r\n"
    );
    // The client's next request is answered at once (stale again, without
    // a second refresh while the first holds the claim).
    c.recv_client(t1, GET.as_bytes());
    assert!(take_client(&mut c).ends_with("old"));
    assert!(actions(&mut c).is_empty(), "one refresh at a time");
    // The refresh, run as the per-core layer runs it.
    let mut r = conn(&cache, t1);
    r.recv_client(t1, &request);
    assert_eq!(actions(&mut r), ["Connect { fresh: false, attempt: 0 }"]);
    r.upstream_connected(t1, false);
    take_upstream(&mut r, t1);
    r.recv_upstream(
        t1,
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=10\r\nContent-Length: 3\r\n\r\nnew",
    );
    assert!(r.is_finished() || !take_client(&mut r).is_empty());
    cache.release_fetch(&key);
    let (up, _, out) = roundtrip(&cache, t1, GET, "");
    assert!(!up && out.ends_with("new"), "{out}");
}

#[test]
fn stale_if_error_answers_stale_on_5xx_and_connect_failure() {
    let cache = new_cache();
    let t0 = Instant::now();
    let resp = "HTTP/1.1 200 OK\r\nCache-Control: max-age=1, stale-if-error=60\r\nContent-Length: 3\r\n\r\nold";
    roundtrip(&cache, t0, GET, resp);
    let t1 = t0 + Duration::from_secs(5);
    let (up, _, out) = roundtrip(
        &cache,
        t1,
        GET,
        "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 4\r\n\r\noops",
    );
    assert!(
        up && out.contains("X-Cache: STALE\r\n") && out.ends_with("old"),
        "{out}"
    );

    let mut c = conn(&cache, t1);
    c.recv_client(t1, GET.as_bytes());
    c.upstream_connect_failed(t1);
    let out = take_client(&mut c);
    assert!(
        out.contains("X-Cache: STALE\r\n") && out.ends_with("old"),
        "{out}"
    );
}

#[test]
fn concurrent_misses_cause_one_fetch() {
    let cache = new_cache();
    let t0 = Instant::now();
    let mut first = conn(&cache, t0);
    let mut second = conn(&cache, t0);
    first.recv_client(t0, GET.as_bytes());
    second.recv_client(t0, GET.as_bytes());
    assert_eq!(
        actions(&mut first),
        ["Connect { fresh: false, attempt: 0 }"]
    );
    assert!(actions(&mut second).is_empty(), "the second miss waits");
    assert!(second.is_waiting());
    assert_eq!(
        second.timeout(),
        Some(t0 + Duration::from_secs(2)),
        "no poll: only its coalescing deadline"
    );
    // A bell rings for some other fetch: it looks again and waits on.
    second.retry_wait(t0);
    assert!(
        actions(&mut second).is_empty() && second.is_waiting(),
        "still waiting while the fetch runs"
    );
    first.upstream_connected(t0, false);
    first.recv_upstream(t0, FRESH.as_bytes());
    let t1 = t0 + Duration::from_millis(3);
    second.retry_wait(t1);
    assert!(actions(&mut second).is_empty());
    let out = take_client(&mut second);
    assert!(
        out.contains("X-Cache: HIT") && out.ends_with("hello"),
        "{out}"
    );
    assert!(
        out.contains("Cache-Status: ultragate; hit; ttl=60; collapsed\r\n"),
        "RFC 9211 §2.8: the waiter was collapsed into the fetch: {out}"
    );
}

#[test]
fn a_waiter_gives_up_after_the_bounded_wait() {
    let cache = new_cache();
    let t0 = Instant::now();
    let mut first = conn(&cache, t0);
    let mut second = conn(&cache, t0);
    first.recv_client(t0, GET.as_bytes());
    second.recv_client(t0, GET.as_bytes());
    actions(&mut first);
    let mut t = t0;
    while actions(&mut second).is_empty() {
        t = second.timeout().unwrap();
        assert!(t <= t0 + Duration::from_secs(2), "bounded");
        second.handle_timeout(t);
    }
    assert_eq!(t, t0 + Duration::from_secs(2));
}

#[test]
fn uncacheable_objects_over_the_size_limit_pass_through() {
    let cache = new_cache();
    let t0 = Instant::now();
    let big = format!(
        "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 70000\r\n\r\n{}",
        "b".repeat(70000)
    );
    let (_, _, out) = roundtrip(&cache, t0, GET, &big);
    assert!(out.ends_with(&"b".repeat(70000)));
    assert!(
        roundtrip(&cache, t0, GET, &big).0,
        "over max_object_bytes: not stored"
    );
    let chunked = "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let cache = new_cache();
    roundtrip(&cache, t0, GET, chunked);
    let (up, _, out) = roundtrip(&cache, t0, GET, "");
    assert!(
        !up && out.contains("Content-Length: 3\r\n") && out.ends_with("abc"),
        "chunked stored de-chunked: {out}"
    );
}

#[test]
fn uncacheable_responses_stop_later_misses_from_queueing() {
    let cache = new_cache();
    let t0 = Instant::now();
    let uncacheable = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
    let mut first = conn(&cache, t0);
    let mut second = conn(&cache, t0);
    first.recv_client(t0, GET.as_bytes());
    second.recv_client(t0, GET.as_bytes());
    assert!(actions(&mut second).is_empty(), "waits for the first fetch");
    actions(&mut first);
    first.upstream_connected(t0, false);
    first.recv_upstream(t0, uncacheable.as_bytes());
    second.retry_wait(t0 + Duration::from_millis(1));
    assert_eq!(
        actions(&mut second),
        ["Connect { fresh: false, attempt: 0 }"],
        "nothing to wait for"
    );
    let mut third = conn(&cache, t0);
    third.recv_client(t0, GET.as_bytes());
    assert_eq!(
        actions(&mut third),
        ["Connect { fresh: false, attempt: 0 }"],
        "no queueing behind an uncacheable key"
    );
}

#[test]
fn a_waiting_request_is_still_answered_when_draining() {
    let cache = new_cache();
    let t0 = Instant::now();
    let mut first = conn(&cache, t0);
    let mut second = conn(&cache, t0);
    first.recv_client(t0, GET.as_bytes());
    second.recv_client(t0, GET.as_bytes());
    actions(&mut first);
    second.drain(t0);
    assert!(!second.is_finished());
    first.upstream_connected(t0, false);
    first.recv_upstream(t0, FRESH.as_bytes());
    second.retry_wait(t0 + Duration::from_millis(1));
    let out = take_client(&mut second);
    assert!(
        out.contains("X-Cache: HIT") && out.contains("Connection: close"),
        "{out}"
    );
    assert!(second.is_finished());
}

#[test]
fn upstream_errors_carry_x_cache_too() {
    let cache = new_cache();
    let t0 = Instant::now();
    let mut c = conn(&cache, t0);
    c.recv_client(t0, GET.as_bytes());
    c.upstream_connect_failed(t0);
    let out = take_client(&mut c);
    assert!(
        out.starts_with("HTTP/1.1 502 ") && out.contains("X-Cache: MISS\r\n"),
        "{out}"
    );
}

#[test]
fn a_head_miss_neither_holds_gets_nor_marks_the_key_uncacheable() {
    let cache = new_cache();
    let t0 = Instant::now();
    let mut head = conn(&cache, t0);
    head.recv_client(t0, b"HEAD /a HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(actions(&mut head), ["Connect { fresh: false, attempt: 0 }"]);
    let mut get = conn(&cache, t0);
    get.recv_client(t0, GET.as_bytes());
    assert_eq!(
        actions(&mut get),
        ["Connect { fresh: false, attempt: 0 }"],
        "the GET fetches at once"
    );
    head.upstream_connected(t0, false);
    head.recv_upstream(
        t0,
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n\r\n",
    );
    get.upstream_connected(t0, false);
    get.recv_upstream(t0, FRESH.as_bytes());
    let (up, _, out) = roundtrip(&cache, t0, GET, "");
    assert!(!up && out.ends_with("hello"), "stored by the GET: {out}");
}

#[test]
fn rfc9110_9_1_extension_methods_are_forwarded_and_rfc9111_4_4_invalidate() {
    let cache = new_cache();
    let t0 = Instant::now();
    let ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    roundtrip(&cache, t0, GET, FRESH);
    assert!(!roundtrip(&cache, t0, GET, "").0, "stored");
    let ssdp = "M-SEARCH * HTTP/1.1\r\nHost: h\r\nMan: \"ssdp:discover\"\r\n\r\n";
    let (up, sent, out) = roundtrip(&cache, t0, ssdp, ok);
    assert!(up && sent.starts_with("M-SEARCH * HTTP/1.1\r\n"), "{sent}");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // TRACE echoes the request, cookies included: refused where no
    // route lists it.
    let (up, _, out) = roundtrip(&cache, t0, "TRACE /a HTTP/1.1\r\nHost: h\r\n\r\n", ok);
    assert!(!up && out.starts_with("HTTP/1.1 405"), "{out}");
    assert!(out.contains("\r\nAllow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS\r\n"));
    assert!(
        !roundtrip(&cache, t0, GET, "").0,
        "M-SEARCH was for another URI"
    );
    // An extension method on the URI is unsafe (methods are
    // case-sensitive: `get` is one too): the stored response goes.
    for method in ["PURGE-ME", "get"] {
        let req = format!("{method} /a HTTP/1.1\r\nHost: h\r\n\r\n");
        let (up, sent, _) = roundtrip(&cache, t0, &req, "HTTP/1.1 204 No Content\r\n\r\n");
        assert!(
            up && sent.starts_with(&format!("{method} /a HTTP/1.1\r\n")),
            "{sent}"
        );
        assert!(roundtrip(&cache, t0, GET, FRESH).0, "{method} invalidated");
    }
}

#[test]
fn rfc9110_15_2_interim_responses_are_relayed_never_stored_or_merged() {
    let cache = new_cache();
    let t0 = Instant::now();
    let hints = "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n\
                 HTTP/1.1 102 Processing\r\n\r\n\
                 HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\nok";
    let (_, _, out) = roundtrip(&cache, t0, GET, hints);
    assert!(
        out.starts_with(
            "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n\
             HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\n"
        ),
        "{out}"
    );
    let final_head = &out[out.find("HTTP/1.1 200").unwrap_or(0)..];
    assert!(!final_head.contains("Link:"), "not merged: {out}");
    let (up, _, hit) = roundtrip(&cache, t0, GET, "");
    assert!(!up && hit.starts_with("HTTP/1.1 200 OK\r\n"), "{hit}");
    assert!(
        !hit.contains("103") && !hit.contains("Link:"),
        "not stored: {hit}"
    );
    // HTTP/1.0 clients get no 1xx (RFC 9110 §15.2).
    let (_, _, old) = roundtrip(
        &new_cache(),
        t0,
        "GET /a HTTP/1.0\r\nHost: h\r\n\r\n",
        hints,
    );
    assert!(old.starts_with("HTTP/1.1 200 OK\r\n"), "{old}");
}

/// The `Cache-Status` field of a response.
fn cache_status(out: &str) -> &str {
    out.lines()
        .find_map(|l| l.strip_prefix("Cache-Status: "))
        .unwrap_or("")
}

#[test]
fn while_memory_relief_pauses_inserts_nothing_says_stored() {
    let cache = new_cache();
    let t0 = Instant::now();
    cache.set_inserts(false);
    let (_, _, out) = roundtrip(&cache, t0, GET, FRESH);
    assert_eq!(
        cache_status(&out),
        "ultragate; fwd=uri-miss; fwd-status=200; detail=inserts-paused"
    );
    assert!(cache.is_empty());
    cache.set_inserts(true);
    let (_, _, out) = roundtrip(&cache, t0, GET, FRESH);
    assert_eq!(
        cache_status(&out),
        "ultragate; fwd=uri-miss; fwd-status=200; stored",
        "resumed"
    );
    assert!(!cache.is_empty());
}

#[test]
fn rfc9211_cache_status_on_every_response_passing_the_cache() {
    let cache = new_cache();
    let t0 = Instant::now();
    let (_, _, out) = roundtrip(&cache, t0, GET, FRESH);
    assert_eq!(
        cache_status(&out),
        "ultragate; fwd=uri-miss; fwd-status=200; stored"
    );
    let (_, _, out) = roundtrip(&cache, t0 + Duration::from_secs(10), GET, "");
    assert_eq!(cache_status(&out), "ultragate; hit; ttl=50", "§2.1, §2.2");
    let nc = "GET /a HTTP/1.1\r\nHost: h\r\nCache-Control: no-cache\r\n\r\n";
    let (_, _, out) = roundtrip(&cache, t0, nc, FRESH);
    assert_eq!(
        cache_status(&out),
        "ultragate; fwd=request; fwd-status=200; stored",
        "§2.3: the client asked"
    );
    let private = "HTTP/1.1 200 OK\r\nCache-Control: private\r\nContent-Length: 1\r\n\r\nx";
    let (_, _, out) = roundtrip(&cache, t0, "GET /p HTTP/1.1\r\nHost: h\r\n\r\n", private);
    assert_eq!(
        cache_status(&out),
        "ultragate; fwd=uri-miss; fwd-status=200; detail=private",
        "§2.7: why not stored"
    );
    let (_, _, out) = roundtrip(
        &cache,
        t0,
        "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(
        cache_status(&out),
        "ultragate; fwd=method; fwd-status=201; detail=method"
    );
    assert!(out.contains("X-Cache: BYPASS"), "{out}");
    // Stale: revalidated with a 304, and served within stale-while-revalidate.
    let cache = new_cache();
    let etag = "HTTP/1.1 200 OK\r\nCache-Control: max-age=10\r\nETag: \"v1\"\r\nContent-Length: 2\r\n\r\nv1";
    roundtrip(&cache, t0, GET, etag);
    let not_modified =
        "HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=10\r\nETag: \"v1\"\r\n\r\n";
    let (_, _, out) = roundtrip(&cache, t0 + Duration::from_secs(20), GET, not_modified);
    assert_eq!(cache_status(&out), "ultragate; fwd=stale; fwd-status=304");
    let swr = "HTTP/1.1 200 OK\r\nCache-Control: max-age=1, stale-while-revalidate=60\r\nContent-Length: 2\r\n\r\nv1";
    let cache = new_cache();
    roundtrip(&cache, t0, GET, swr);
    let (_, _, out) = roundtrip(&cache, t0 + Duration::from_secs(5), GET, swr);
    assert_eq!(
        cache_status(&out),
        "ultragate; hit; ttl=-4; detail=stale-while-revalidate"
    );
    // An error the gateway made itself still says what the cache did.
    let cache = new_cache();
    let mut c = conn(&cache, t0);
    c.recv_client(t0, GET.as_bytes());
    actions(&mut c);
    c.upstream_connect_failed(t0);
    let out = take_client(&mut c);
    assert_eq!(
        cache_status(&out),
        "ultragate; fwd=uri-miss; detail=upstream-failed"
    );
}

#[test]
fn rfc9213_2_1_cdn_cache_control_decides_for_this_cache() {
    let t0 = Instant::now();
    let resp = |fields: &str| format!("HTTP/1.1 200 OK\r\n{fields}Content-Length: 2\r\n\r\nok");
    // Stored for the CDN while browsers are told not to store it; the field
    // goes on to the client (and any cache after this one) as it came.
    let cache = new_cache();
    let r = resp("Cache-Control: no-store\r\nCDN-Cache-Control: max-age=600\r\n");
    let (_, _, out) = roundtrip(&cache, t0, GET, &r);
    assert!(out.contains("CDN-Cache-Control: max-age=600\r\n"), "{out}");
    assert!(out.contains("Cache-Control: no-store\r\n"), "{out}");
    let (up, _, out) = roundtrip(&cache, t0 + Duration::from_secs(300), GET, "");
    assert!(
        !up && out.contains("ttl=300"),
        "fresh for the targeted max-age: {out}"
    );
    // Not stored when the targeted field says so, whatever Cache-Control says.
    for cdn in ["private", "no-store"] {
        let cache = new_cache();
        let r = resp(&format!(
            "Cache-Control: max-age=600\r\nCDN-Cache-Control: {cdn}\r\n"
        ));
        roundtrip(&cache, t0, GET, &r);
        assert!(roundtrip(&cache, t0, GET, &r).0, "{cdn}: not stored");
    }
    // A targeted field makes this cache ignore Expires too.
    let cache = new_cache();
    let expires = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(600));
    let r = resp(&format!(
        "Expires: {expires}\r\nCDN-Cache-Control: no-cache\r\n"
    ));
    roundtrip(&cache, t0, GET, &r);
    assert!(
        roundtrip(&cache, t0, GET, &r).0,
        "no freshness from Expires"
    );
    // An invalid targeted field is ignored as a whole: Cache-Control rules.
    let cache = new_cache();
    let r = resp("Cache-Control: max-age=600\r\nCDN-Cache-Control: Max-Age=0, no-store\r\n");
    roundtrip(&cache, t0, GET, &r);
    assert!(
        !roundtrip(&cache, t0, GET, "").0,
        "stored per Cache-Control"
    );
}

/// A stored 200 of `body` with a strong ETag and a date.
fn stored_range_object(cache: &Arc<Cache>, t0: Instant, body: &str) {
    let resp = format!(
        "HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Type: text/plain\r\nETag: \"r1\"\r\n\
         Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    roundtrip(cache, t0, GET, &resp);
}

fn with(fields: &str) -> String {
    format!("GET /a HTTP/1.1\r\nHost: h\r\n{fields}\r\n")
}

#[test]
fn rfc9110_14_2_single_ranges_from_a_stored_response() {
    let cache = new_cache();
    let t0 = Instant::now();
    stored_range_object(&cache, t0, "0123456789");
    for (range, part, content_range) in [
        ("bytes=0-3", "0123", "bytes 0-3/10"),
        ("bytes=7-", "789", "bytes 7-9/10"),
        ("bytes=-2", "89", "bytes 8-9/10"),
        ("bytes=5-100", "56789", "bytes 5-9/10"),
    ] {
        let (up, _, out) = roundtrip(&cache, t0, &with(&format!("Range: {range}\r\n")), "");
        assert!(!up, "{range}: from the cache");
        assert!(
            out.starts_with("HTTP/1.1 206 Partial Content\r\n"),
            "{range}: {out}"
        );
        assert!(
            out.contains(&format!("Content-Range: {content_range}\r\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("Content-Length: {}\r\n", part.len())),
            "{out}"
        );
        assert!(
            out.contains("Content-Type: text/plain\r\n") && out.contains("X-Cache: HIT"),
            "{out}"
        );
        assert!(out.ends_with(&format!("\r\n\r\n{part}")), "{range}: {out}");
    }
}

#[test]
fn rfc9110_14_6_multiple_ranges_are_multipart_byteranges() {
    let cache = new_cache();
    let t0 = Instant::now();
    stored_range_object(&cache, t0, "0123456789");
    let (_, _, out) = roundtrip(&cache, t0, &with("Range: bytes=0-1, 8-\r\n"), "");
    assert!(out.starts_with("HTTP/1.1 206 Partial Content\r\n"), "{out}");
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("Content-Type: multipart/byteranges; boundary="),
        "{head}"
    );
    assert!(
        !head.contains("Content-Type: text/plain"),
        "the parts carry it: {head}"
    );
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(length, body.len(), "the announced length is exact");
    let boundary = head
        .split("boundary=")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    assert_eq!(
        body,
        format!(
            "--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n01\r\n\
             --{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 8-9/10\r\n\r\n89\r\n\
             --{boundary}--\r\n"
        )
    );
}

#[test]
fn rfc9110_15_5_17_unsatisfiable_ranges_get_416() {
    let cache = new_cache();
    let t0 = Instant::now();
    stored_range_object(&cache, t0, "0123456789");
    let (up, _, out) = roundtrip(&cache, t0, &with("Range: bytes=10-20\r\n"), "");
    assert!(
        !up && out.starts_with("HTTP/1.1 416 Range Not Satisfiable\r\n"),
        "{out}"
    );
    assert!(
        out.contains("Content-Range: bytes */10\r\n") && out.ends_with("Content-Length: 0\r\n\r\n"),
        "{out}"
    );
    // A syntax the cache does not take, and HEAD, get the whole response.
    let (_, _, out) = roundtrip(&cache, t0, &with("Range: lines=1-2\r\n"), "");
    assert!(
        out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("0123456789"),
        "{out}"
    );
}

#[test]
fn rfc9110_13_1_5_if_range_with_a_strong_etag_or_the_date() {
    let cache = new_cache();
    let t0 = Instant::now();
    stored_range_object(&cache, t0, "0123456789");
    for (if_range, partial) in [
        ("\"r1\"", true),
        ("\"r0\"", false),
        ("W/\"r1\"", false),
        ("Sun, 06 Nov 1994 08:49:37 GMT", true),
        ("Sun, 06 Nov 1994 08:49:38 GMT", false),
    ] {
        let req = with(&format!("Range: bytes=0-1\r\nIf-Range: {if_range}\r\n"));
        let (_, _, out) = roundtrip(&cache, t0, &req, "");
        let want = if partial {
            "HTTP/1.1 206"
        } else {
            "HTTP/1.1 200"
        };
        assert!(out.starts_with(want), "If-Range {if_range}: {out}");
    }
}

#[test]
fn rfc9110_14_2_a_range_of_an_object_not_stored_fetches_it_whole() {
    let cache = new_cache();
    let t0 = Instant::now();
    let whole =
        "HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 10\r\n\r\n0123456789";
    let (up, sent, out) = roundtrip(
        &cache,
        t0,
        &with("Range: bytes=2-4\r\nIf-Range: \"x\"\r\n"),
        whole,
    );
    assert!(up && !sent.contains("Range"), "fetched whole: {sent}");
    assert!(
        out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("0123456789"),
        "If-Range did not match: {out}"
    );
    let cache = new_cache();
    let (_, _, out) = roundtrip(&cache, t0, &with("Range: bytes=2-4\r\n"), whole);
    assert!(out.starts_with("HTTP/1.1 206 Partial Content\r\n"), "{out}");
    assert!(
        out.contains("Content-Range: bytes 2-4/10\r\n") && out.ends_with("\r\n\r\n234"),
        "{out}"
    );
    let (up, _, out) = roundtrip(&cache, t0, GET, "");
    assert!(
        !up && out.ends_with("0123456789"),
        "and it is stored whole: {out}"
    );
    // A 206 from the upstream (an uncacheable key keeps its Range) is
    // relayed, never stored.
    let cache = new_cache();
    let nostore =
        "HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 10\r\n\r\n0123456789";
    roundtrip(&cache, t0, GET, nostore);
    let partial = "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-1/10\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\n01";
    let (up, sent, out) = roundtrip(&cache, t0, &with("Range: bytes=0-1\r\n"), partial);
    assert!(up && sent.contains("Range: bytes=0-1\r\n"), "{sent}");
    assert!(
        out.starts_with("HTTP/1.1 206") && out.ends_with("01"),
        "{out}"
    );
    assert!(cache.is_empty(), "a 206 is not stored");
    // Cut short while fetched whole: the client still gets an answer.
    let cache = new_cache();
    let mut c = conn(&cache, t0);
    in_flight(
        &mut c,
        t0,
        with("Range: bytes=0-1\r\n").as_bytes(),
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 10\r\n\r\n01",
    );
    c.upstream_reset(t0);
    let out = take_client(&mut c);
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    assert!(cache.is_empty());
}

#[test]
fn rfc9110_5_6_7_expires_in_every_date_format_and_case() {
    let t0 = Instant::now();
    let in_a_minute = std::time::SystemTime::now() + Duration::from_secs(60);
    let imf = httpdate::fmt_http_date(in_a_minute);
    let parsed: chrono_free::Date = chrono_free::Date::from_imf(&imf);
    for expires in [
        imf.clone(),
        imf.to_ascii_lowercase(),
        parsed.rfc850(),
        parsed.asctime(),
    ] {
        let cache = new_cache();
        let resp = format!("HTTP/1.1 200 OK\r\nExpires: {expires}\r\nContent-Length: 1\r\n\r\nx");
        roundtrip(&cache, t0, GET, &resp);
        assert!(!roundtrip(&cache, t0, GET, "").0, "fresh until {expires:?}");
    }
    // An invalid Expires means already expired (RFC 9111 §5.3).
    let cache = new_cache();
    let resp = "HTTP/1.1 200 OK\r\nExpires: 0\r\nContent-Length: 1\r\n\r\nx";
    roundtrip(&cache, t0, GET, resp);
    assert!(roundtrip(&cache, t0, GET, resp).0);
}

/// Other spellings of an IMF-fixdate, made by hand (no date crate).
mod chrono_free {
    pub struct Date {
        wday: String,
        day: String,
        month: String,
        year: String,
        time: String,
    }

    impl Date {
        /// From `Sun, 06 Nov 1994 08:49:37 GMT`.
        pub fn from_imf(s: &str) -> Self {
            let p: Vec<&str> = s.split([' ', ',']).filter(|p| !p.is_empty()).collect();
            Date {
                wday: p[0].to_owned(),
                day: p[1].to_owned(),
                month: p[2].to_owned(),
                year: p[3].to_owned(),
                time: p[4].to_owned(),
            }
        }

        /// `Sunday, 06-Nov-94 08:49:37 GMT`.
        pub fn rfc850(&self) -> String {
            let long = [
                "Monday",
                "Tuesday",
                "Wednesday",
                "Thursday",
                "Friday",
                "Saturday",
                "Sunday",
            ]
            .into_iter()
            .find(|d| d.starts_with(&self.wday))
            .unwrap_or("Sunday");
            format!(
                "{long}, {}-{}-{} {} GMT",
                self.day,
                self.month,
                &self.year[2..],
                self.time
            )
        }

        /// `Sun Nov  6 08:49:37 1994`.
        pub fn asctime(&self) -> String {
            let day: u32 = self.day.parse().unwrap_or(1);
            format!(
                "{} {} {day:>2} {} {}",
                self.wday, self.month, self.time, self.year
            )
        }
    }
}

#[test]
fn rfc9111_5_1_age_lists_and_invalid_values() {
    let t0 = Instant::now();
    for (age, fresh) in [
        ("Age: 10, 500", true),
        ("Age: 500", false),
        ("Age: 500x", true),
    ] {
        let cache = new_cache();
        let resp = format!(
            "HTTP/1.1 200 OK\r\nCache-Control: max-age=100\r\n{age}\r\nContent-Length: 1\r\n\r\nx"
        );
        roundtrip(&cache, t0, GET, &resp);
        assert_eq!(!roundtrip(&cache, t0, GET, "").0, fresh, "{age}");
    }
}

#[test]
fn rfc9111_3_explicit_freshness_stores_any_status_heuristics_only_some() {
    let t0 = Instant::now();
    let lm = "Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n";
    for (status, fields, stored) in [
        (
            "500 Internal Server Error",
            "Cache-Control: max-age=60\r\n",
            true,
        ),
        (
            "503 Service Unavailable",
            "Cache-Control: s-maxage=60\r\n",
            true,
        ),
        ("500 Internal Server Error", lm, false),
        ("404 Not Found", lm, true),
        ("302 Found", lm, false),
    ] {
        let cache = new_cache();
        let resp = format!("HTTP/1.1 {status}\r\n{fields}Content-Length: 1\r\n\r\nx");
        roundtrip(&cache, t0, GET, &resp);
        let (up, _, out) = roundtrip(&cache, t0, GET, &resp);
        assert_eq!(!up, stored, "{status} with {fields:?}: {out}");
    }
}

#[test]
fn rfc9111_4_1_vary_on_accept_encoding_and_language_is_normalised() {
    let cache = new_cache();
    let t0 = Instant::now();
    let vary = "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nVary: Accept-Encoding, Accept-Language\r\nContent-Length: 1\r\n\r\nx";
    roundtrip(
        &cache,
        t0,
        &with("Accept-Encoding: gzip, br\r\nAccept-Language: en-US, fr;q=0.50\r\n"),
        vary,
    );
    for same in [
        "Accept-Encoding: BR;q=1.0 ,gzip\r\nAccept-Language: fr;q=0.5,en-us\r\n",
        "Accept-Encoding: br\r\nAccept-Encoding: gzip, gzip\r\nAccept-Language: EN-US, FR; q=0.500\r\n",
    ] {
        assert!(!roundtrip(&cache, t0, &with(same), "").0, "{same}");
    }
    for other in [
        "Accept-Encoding: gzip\r\nAccept-Language: en-US, fr;q=0.5\r\n",
        "Accept-Encoding: gzip, br\r\nAccept-Language: en-US, fr;q=0.4\r\n",
    ] {
        assert!(roundtrip(&cache, t0, &with(other), vary).0, "{other}");
    }
}

/// A connection whose engine has `routes`.
fn routed_conn(cache: &Arc<Cache>, t: Instant, routes: crate::route::Routes) -> Conn {
    let mut cfg = (*cfg(1 << 20)).clone();
    cfg.routes = Arc::new(routes);
    Conn::new(Arc::new(cfg), ready(), Some(cache.clone()), CLIENT, t)
}

fn route(name: &str, prefix: &str, cache: bool, ttl: Option<u64>) -> crate::route::RouteSpec {
    crate::route::RouteSpec {
        name: name.into(),
        host: crate::route::HostMatch::Any,
        path_prefix: prefix.into(),
        methods: Vec::new(),
        upstream: Arc::from("primary"),
        pool: 0,
        cache,
        cache_ttl: ttl.map(|s| {
            crate::route::TtlOverride::new(Duration::from_secs(s), &crate::route::ASSET_TYPES)
        }),
    }
}

#[test]
fn a_routes_ttl_stores_what_says_nothing_and_no_cache_route_never_stores() {
    let cache = new_cache();
    let t0 = Instant::now();
    let routes = || {
        crate::route::Routes::new(vec![
            route("ttl", "/ttl/", true, Some(60)),
            route("live", "/live/", false, None),
            route("plain", "/", true, None),
        ])
    };
    // Sends `req` on a fresh connection; answers `resp` if it went
    // upstream. Returns (went upstream, client output).
    let ask = |t: Instant, req: &str, resp: &str| {
        let mut c = routed_conn(&cache, t, routes());
        c.recv_client(t, req.as_bytes());
        if actions(&mut c).is_empty() {
            return (false, take_client(&mut c));
        }
        c.upstream_connected(t, false);
        take_upstream(&mut c, t);
        c.recv_upstream(t, resp.as_bytes());
        (true, take_client(&mut c))
    };
    let bare = "HTTP/1.1 200 OK\r\nContent-Type: text/css\r\nContent-Length: 2\r\n\r\nok";
    let get = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: h\r\n\r\n");
    // Says nothing about freshness: stored for the route's 60 s.
    assert!(ask(t0, &get("/ttl/a"), bare).0);
    let (up, out) = ask(t0 + Duration::from_secs(30), &get("/ttl/a"), bare);
    assert!(!up && out.contains("X-Cache: HIT"), "{out}");
    assert!(
        ask(t0 + Duration::from_secs(61), &get("/ttl/a"), bare).0,
        "then stale"
    );
    // The same response elsewhere is not stored (no freshness).
    assert!(ask(t0, &get("/x"), bare).0);
    assert!(ask(t0, &get("/x"), bare).0);
    // Web cache deception: a page the origin served for an asset path is
    // not an asset type, and a response without cache headers to a
    // request with credentials is someone's own.
    let page = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nok";
    assert!(ask(t0, &get("/ttl/me"), page).0);
    let (up, out) = ask(t0, &get("/ttl/me"), page);
    assert!(up && out.contains("detail=no-freshness"), "{out}");
    let with_cookie = "GET /ttl/mine.css HTTP/1.1\r\nHost: h\r\nCookie: s=victim\r\n\r\n";
    assert!(ask(t0, with_cookie, bare).0);
    assert!(ask(t0, &get("/ttl/mine.css"), bare).0, "not stored");
    // A TTL does not store what must never be shared.
    let cookie = "HTTP/1.1 200 OK\r\nSet-Cookie: s=1\r\nContent-Length: 2\r\n\r\nok";
    assert!(ask(t0, &get("/ttl/c"), cookie).0);
    assert!(ask(t0, &get("/ttl/c"), cookie).0);
    // A route without the cache neither stores nor answers from it.
    let fresh = "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\nok";
    let (_, out) = ask(t0, &get("/live/a"), fresh);
    assert!(!out.contains("X-Cache"), "{out}");
    assert!(ask(t0, &get("/live/a"), fresh).0);
}

#[test]
fn a_request_no_route_takes_is_answered_404_and_the_connection_goes_on() {
    let cache = new_cache();
    let t0 = Instant::now();
    let mut c = routed_conn(
        &cache,
        t0,
        crate::route::Routes::new(vec![route("api", "/api/", true, None)]),
    );
    c.recv_client(
        t0,
        b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\nHEAD /nope HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    let out = take_client(&mut c);
    assert_eq!(out.matches("HTTP/1.1 404").count(), 2, "{out}");
    assert!(out.contains("no route"), "{out}");
    assert!(actions(&mut c).is_empty(), "nothing upstream");
    assert!(!c.is_finished(), "keep-alive");
}
