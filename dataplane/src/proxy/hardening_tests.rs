//! The findings of the security review, each as a byte-slice test of the
//! engine that failed before its fix.

use super::testkit::*;
use super::*;
use crate::cache::Claim;

#[test]
fn a_target_with_multibyte_characters_at_any_offset_does_not_panic() {
    // The request that crashed the gateway: byte 7 inside "é".
    let t0 = Instant::now();
    let mut c = Conn::new(cfg(1024), ready(), None, CLIENT, t0);
    c.recv_client(t0, b"GET /aaaaa\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n");
    let out = take_client(&mut c);
    assert!(
        status_of(&out) == 400 || actions(&mut c).iter().any(|a| a.contains("Connect")),
        "{out}"
    );
    // Every offset of a multi-byte character in the first eight bytes.
    for pad in 0..8 {
        let req = format!("GET /{}é€😀 HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(pad));
        let mut c = Conn::new(cfg(1024), ready(), None, CLIENT, t0);
        c.recv_client(t0, req.as_bytes());
        let req = format!("GET é{}€ HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(pad));
        let mut c2 = Conn::new(cfg(1024), ready(), None, CLIENT, t0);
        c2.recv_client(t0, req.as_bytes());
        assert_eq!(status_of(&take_client(&mut c2)), 400);
        drop(c);
    }
}

#[test]
fn connection_may_not_name_fields_the_gateway_relies_on() {
    for field in [
        "Host",
        "content-length",
        "Transfer-Encoding",
        "Authorization",
        "Cache-Control",
    ] {
        let t0 = Instant::now();
        let mut c = Conn::new(cfg(1024), ready(), None, CLIENT, t0);
        let req =
            format!("GET / HTTP/1.1\r\nHost: victim\r\nConnection: keep-alive, {field}\r\n\r\n");
        c.recv_client(t0, req.as_bytes());
        let out = take_client(&mut c);
        assert_eq!(status_of(&out), 400, "{field}: {out}");
        assert!(actions(&mut c).is_empty(), "{field}: nothing goes upstream");
        assert!(c.is_finished());
    }
}

#[test]
fn connection_naming_a_varied_field_is_refused_and_never_stored() {
    let cache = new_cache();
    let t0 = Instant::now();
    let varied = "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nVary: Accept\r\nContent-Length: 2\r\n\r\nok";
    // Not stored while the origin did not see Accept.
    let req = "GET /v HTTP/1.1\r\nHost: h\r\nAccept: text/html\r\nConnection: Accept\r\n\r\n";
    let (up, sent, _) = roundtrip(&cache, t0, req, varied);
    assert!(up && !sent.contains("Accept:"), "{sent}");
    assert!(
        cache.is_empty(),
        "a response varying on a dropped field is not stored"
    );
    // Stored normally, then a request that drops the varied field: 400.
    roundtrip(
        &cache,
        t0,
        "GET /v HTTP/1.1\r\nHost: h\r\nAccept: text/html\r\n\r\n",
        varied,
    );
    let (up, _, out) = roundtrip(&cache, t0, req, "");
    assert!(!up && status_of(&out) == 400, "{out}");
}

#[test]
fn set_cookie_is_never_replayed_even_from_a_304() {
    let cache = new_cache();
    let t0 = Instant::now();
    let get = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
    let public_cookie = "HTTP/1.1 200 OK\r\nCache-Control: public, max-age=60\r\nSet-Cookie: s=1\r\nContent-Length: 1\r\n\r\nx";
    roundtrip(&cache, t0, get, public_cookie);
    assert!(
        roundtrip(&cache, t0, get, public_cookie).0,
        "not stored: {cache:?}",
        cache = cache.len()
    );

    let cache = new_cache();
    let resp = "HTTP/1.1 200 OK\r\nCache-Control: max-age=10\r\nETag: \"v1\"\r\nContent-Length: 5\r\n\r\nhello";
    roundtrip(&cache, t0, get, resp);
    for (i, not_modified) in [
        "HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=100\r\nSet-Cookie: victim=1\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nCache-Control: private, max-age=100\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nCache-Control: no-store\r\n\r\n",
    ]
    .into_iter()
    .enumerate()
    {
        // Stale by then: the stored response is revalidated.
        let t1 = t0 + Duration::from_secs(20 * (i as u64 + 1));
        let (up, _, out) = roundtrip(&cache, t1, get, not_modified);
        assert!(
            up && out.ends_with("hello"),
            "this client gets its answer: {out}"
        );
        let (up, _, out) = roundtrip(&cache, t1, get, resp);
        assert!(up, "the merged response is not served to others: {out}");
        assert!(!out.contains("victim"), "{out}");
    }
}

#[test]
fn a_client_that_stops_reading_is_closed_after_the_send_timeout() {
    let cache = new_cache();
    let t0 = Instant::now();
    let body = "b".repeat(50_000);
    let resp = format!(
        "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 50000\r\n\r\n{body}"
    );
    roundtrip(&cache, t0, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n", &resp);
    let mut c = conn(&cache, t0);
    c.recv_client(t0, b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(c.client_pending() > 0, "a hit is queued");
    assert_eq!(c.timeout(), Some(t0 + Duration::from_secs(30)));
    // Some progress at 20 s, then none: closed 30 s after that progress.
    let t1 = t0 + Duration::from_secs(20);
    c.client_written(1000, t1);
    c.handle_timeout(t0 + Duration::from_secs(30));
    assert!(!c.is_finished(), "progress 10 s ago: it waits on");
    let deadline = c.timeout().expect("a send deadline");
    assert_eq!(deadline, t1 + Duration::from_secs(30));
    c.handle_timeout(deadline - Duration::from_millis(1));
    assert!(!c.is_finished());
    c.handle_timeout(deadline);
    assert!(c.is_finished(), "no progress for send_timeout: closed");
    assert!(c.is_aborted(), "reset without writing the rest");
    assert_eq!(c.timeout(), None, "nothing more to wait for");
}

#[test]
fn a_client_that_never_reads_a_proxied_response_is_closed_and_releases_upstream() {
    let t0 = Instant::now();
    let mut c = Conn::new(cfg(1024), ready(), None, CLIENT, t0);
    in_flight(
        &mut c,
        t0,
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
    );
    assert!(c.client_pending() > 0);
    let deadline = c.timeout().expect("deadline");
    assert!(
        deadline <= t0 + Duration::from_secs(5),
        "the response timeout comes first"
    );
    // The upstream keeps sending bytes (progress), the client reads none.
    c.recv_upstream(t0 + Duration::from_secs(4), b"more");
    c.handle_timeout(t0 + Duration::from_secs(30));
    assert!(c.is_finished());
    assert_eq!(actions(&mut c), ["Release { reuse: false }"]);
}

#[test]
fn an_error_after_the_head_closes_without_a_second_response_or_a_store() {
    let cache = new_cache();
    let t0 = Instant::now();
    let mut c = conn(&cache, t0);
    in_flight(
        &mut c,
        t0,
        b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 10\r\n\r\nhalf",
    );
    c.handle_timeout(t0 + Duration::from_secs(6));
    let out = take_client(&mut c);
    assert!(out.ends_with("half") && !out.contains("504"), "{out}");
    assert!(c.is_finished(), "closed after a partial response");
    assert!(cache.is_empty(), "a partial response is never stored");

    // A body delimited by the close and cut by a reset: not stored.
    let mut c = conn(&cache, t0);
    in_flight(
        &mut c,
        t0,
        b"GET /cut HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n\r\nhalf",
    );
    c.upstream_reset(t0);
    assert!(c.is_finished() || take_client(&mut c).ends_with("half"));
    assert!(cache.is_empty(), "a reset body is not complete");
    // The same body ended by a clean close is stored.
    let mut c = conn(&cache, t0);
    in_flight(
        &mut c,
        t0,
        b"GET /cut HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n\r\nwhole",
    );
    c.upstream_eof(t0);
    assert_eq!(cache.len(), 1);
}

#[test]
fn a_request_body_timeout_after_the_head_sends_no_408() {
    let t0 = Instant::now();
    let mut c = Conn::new(cfg(1024), ready(), None, CLIENT, t0);
    in_flight(
        &mut c,
        t0,
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no",
    );
    c.handle_timeout(t0 + Duration::from_secs(11));
    let out = take_client(&mut c);
    assert!(!out.contains("408") && c.is_finished(), "{out}");
}

#[test]
fn trailers_are_validated_and_forbidden_ones_dropped_both_ways() {
    let t0 = Instant::now();
    let mut c = Conn::new(cfg(1024), ready(), None, CLIENT, t0);
    c.recv_client(
        t0,
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nX-Sum: 1\r\nHost: evil\r\nContent-Length: 9\r\n\r\n",
    );
    actions(&mut c);
    c.upstream_connected(t0, false);
    let sent = take_upstream(&mut c, t0);
    assert!(sent.ends_with("2\r\nab\r\n0\r\nX-Sum: 1\r\n\r\n"), "{sent}");
    c.recv_upstream(
        t0,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nSet-Cookie: a=b\r\nX-T: 2\r\n\r\n",
    );
    let out = take_client(&mut c);
    assert!(out.ends_with("1\r\nx\r\n0\r\nX-T: 2\r\n\r\n"), "{out}");

    let mut c = Conn::new(cfg(1024), ready(), None, CLIENT, t0);
    c.recv_client(
        t0,
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nBad Name: 1\r\n\r\n",
    );
    actions(&mut c);
    assert_eq!(
        status_of(&take_client(&mut c)),
        400,
        "an invalid trailer is refused"
    );
}

#[test]
fn an_object_over_the_size_limit_releases_its_coalescing_claim_at_once() {
    let cache = new_cache();
    let t0 = Instant::now();
    let mut c = conn(&cache, t0);
    in_flight(
        &mut c,
        t0,
        b"GET /huge HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100000\r\n\r\nabc",
    );
    let mut key = Vec::new();
    let n = crate::cache::url_key(&mut key, crate::cache::Scheme::Http, b"h", b"/huge");
    assert!(
        !matches!(
            cache.claim_fetch(&key[..n], t0, Duration::from_secs(2)),
            Claim::Wait(_)
        ),
        "nobody waits for a response that cannot be stored"
    );
    // Chunked: it grows past the limit while relayed.
    let mut c = conn(&cache, t0);
    in_flight(
        &mut c,
        t0,
        b"GET /grows HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let chunk = format!("{:x}\r\n{}\r\n", 70_000, "g".repeat(70_000));
    c.recv_upstream(t0, chunk.as_bytes());
    let n = crate::cache::url_key(&mut key, crate::cache::Scheme::Http, b"h", b"/grows");
    assert!(!matches!(
        cache.claim_fetch(&key[..n], t0, Duration::from_secs(2)),
        Claim::Wait(_)
    ));
}

#[test]
fn an_error_answer_to_a_head_request_has_no_body() {
    // Found by the engine fuzzer: a 400 to `HEAD *` carried a body, which
    // a HEAD client reads as the start of the next response.
    let t0 = Instant::now();
    for req in [
        &b"HEAD * HTTP/1.1\r\nHost: h\r\n\r\n"[..],
        b"HEAD /admin/cache HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: h\r\nConnection: host\r\n\r\n",
    ] {
        let mut c = Conn::new(cfg(1024), ready(), None, CLIENT, t0);
        c.recv_client(t0, req);
        let out = take_client(&mut c);
        assert!(status_of(&out) >= 400, "{out}");
        assert!(out.ends_with("\r\n\r\n"), "no body after the head: {out}");
    }
}

#[test]
fn a_connection_is_not_reused_while_request_bytes_are_unsent() {
    // Found by the engine fuzzer: the upstream answered before the whole
    // request was written, and the connection went back to the pool with
    // the rest of the request still queued (the next request would have
    // followed a partial one).
    let t0 = Instant::now();
    let mut c = Conn::new(cfg(1024), ready(), None, CLIENT, t0);
    c.recv_client(
        t0,
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    );
    actions(&mut c);
    c.upstream_connected(t0, false);
    // Nothing written upstream yet; the answer arrives anyway.
    c.recv_upstream(t0, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(actions(&mut c), ["Release { reuse: false }"]);
    assert!(take_client(&mut c).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_connection_without_local_admin_is_refused_admin_even_from_loopback() {
    // A DPDK peer claiming 127.0.0.1 is never local.
    let t0 = Instant::now();
    let loopback = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    let mut c = Conn::new(cfg(1024), ready(), None, loopback, t0).without_local_admin();
    c.recv_client(t0, b"POST /admin/cache/clear HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status_of(&take_client(&mut c)), 403);
    assert!(actions(&mut c).is_empty(), "no admin call is made");
}

#[test]
fn a_data_port_admin_call_is_bounded_in_time() {
    let t0 = Instant::now();
    let loopback = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    // No answer from the control plane: 504 after the call timeout.
    let mut c = Conn::new(cfg(1024), ready(), None, loopback, t0);
    c.recv_client(t0, b"POST /admin/data/verify HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(actions(&mut c).len(), 1, "the call is made");
    assert_eq!(c.timeout(), Some(t0 + ADMIN_CALL_TIMEOUT));
    c.handle_timeout(t0 + ADMIN_CALL_TIMEOUT);
    assert_eq!(status_of(&take_client(&mut c)), 504);
    assert!(c.is_finished());
    // A body that never comes: 408 after the client timeout.
    let mut c = Conn::new(cfg(1024), ready(), None, loopback, t0);
    c.recv_client(
        t0,
        b"POST /admin/cache/purge HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n{",
    );
    c.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(status_of(&take_client(&mut c)), 408);
    assert!(actions(&mut c).is_empty() && c.is_finished());
}

#[test]
fn a_background_refresh_of_a_get_with_a_body_sends_none() {
    // Found by the engine fuzzer: the refresh kept the client's
    // `Content-Length` without its body, so the upstream would have
    // waited for bytes that never come.
    let request = refresh_of(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\n123456789");
    assert_eq!(
        &request[..],
        b"GET / HTTP/1.1\r\nHost: h\r\nCache-Control: max-age=0\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn a_background_refresh_cut_short_stores_nothing() {
    let cache = new_cache();
    let t0 = Instant::now();
    let get = "GET /s HTTP/1.1\r\nHost: h\r\n\r\n";
    let swr = "HTTP/1.1 200 OK\r\nCache-Control: max-age=1, stale-while-revalidate=60\r\nContent-Length: 2\r\n\r\nv1";
    roundtrip(&cache, t0, get, swr);
    let t1 = t0 + Duration::from_secs(5);
    let mut c = conn(&cache, t1);
    c.recv_client(t1, get.as_bytes());
    assert!(take_client(&mut c).contains("X-Cache: STALE"));
    let Some(super::Action::Refresh { request, key }) = c.poll_action() else {
        panic!("a background refresh")
    };
    assert!(!c.is_finished(), "the client had its answer: it stays");
    // The refresh's body never completes.
    let mut r = conn(&cache, t1);
    in_flight(
        &mut r,
        t1,
        &request,
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 10\r\n\r\nv2",
    );
    r.handle_timeout(t1 + Duration::from_secs(6));
    assert!(actions(&mut r).contains(&"Release { reuse: false }".to_string()));
    cache.release_fetch(&key);
    c.recv_client(t1 + Duration::from_secs(6), get.as_bytes());
    assert!(
        take_client(&mut c).contains("X-Cache: STALE"),
        "the partial refresh was not stored"
    );
}

#[test]
fn duplicate_content_lengths_from_upstream_are_sent_on_as_one() {
    // Found by the engine fuzzer: a HEAD answered with `Content-Length: 5`
    // twice was relayed with both, which strict parsers refuse.
    let t0 = Instant::now();
    for (req, resp) in [
        (
            &b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n"[..],
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"[..],
        ),
        (
            b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
        ),
        (
            b"GET /g HTTP/1.1\r\nHost: h\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        ),
    ] {
        let mut c = Conn::new(cfg(1024), ready(), None, CLIENT, t0);
        in_flight(&mut c, t0, req, resp);
        let out = take_client(&mut c);
        assert_eq!(out.matches("Content-Length").count(), 1, "{out}");
        assert!(
            out.contains("Content-Length: 5\r\n") || out.ends_with("Content-Length: 2\r\n\r\nok"),
            "{out}"
        );
    }
}

#[test]
fn a_client_that_pipelines_without_reading_gets_no_more_than_the_bound_queued() {
    let cache = new_cache();
    let t0 = Instant::now();
    let fresh = "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 4096\r\n\r\n";
    let body = "x".repeat(4096);
    roundtrip(
        &cache,
        t0,
        "GET /big HTTP/1.1\r\nHost: h\r\n\r\n",
        &format!("{fresh}{body}"),
    );
    let mut c = conn(&cache, t0);
    let bound = c.engine().max_client_queue;
    let one = "GET /big HTTP/1.1\r\nHost: h\r\n\r\n";
    // Far more answers than the bound holds, in what the driver reads
    // while the engine still wants bytes.
    let mut sent = 0;
    while c.wants_client_bytes() {
        c.recv_client(t0, one.repeat(100).as_bytes());
        sent += 100;
    }
    let queued = c.client_pending();
    assert!(queued < bound + 4096 + 512, "{queued} bytes queued");
    let answered = |c: &mut Conn| std::iter::from_fn(|| c.poll_completion()).count();
    let first = answered(&mut c);
    assert!(first < sent, "{first} of {sent} answered");
    // The client reads: the held-back requests are taken up again.
    let mut total = first;
    while total < sent {
        let n = c.client_pending();
        assert!(n > 0, "stalled at {total} of {sent}");
        c.client_written(n, t0);
        c.resume(t0);
        assert!(c.client_pending() < bound + 4096 + 512);
        total += answered(&mut c);
    }
    assert_eq!(total, sent);
}
