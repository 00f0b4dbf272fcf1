//! The engine on byte slices: no sockets, time passed in.

use super::testkit::*;
use super::*;
use std::net::Ipv4Addr;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn conn_from(peer: IpAddr, t0: Instant) -> Conn {
    Conn::new(cfg(1024), ready(), None, peer, t0)
}

/// Feeds `req` split at `split`, and answers any upstream connect, so that
/// the whole request reaches the engine; returns the client output.
fn feed_split(req: &[u8], split: usize) -> (Conn, String) {
    let t0 = Instant::now();
    let mut c = conn_from(CLIENT, t0);
    c.recv_client(t0, &req[..split]);
    c.recv_client(t0, &req[split..]);
    let out = take_client(&mut c);
    (c, out)
}

#[test]
fn malformed_and_smuggling_requests_get_their_status() {
    let big_value = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let many_fields = format!(
        "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
        "X-F: 1\r\n".repeat(120)
    );
    let table: Vec<(&str, &[u8], u16)> = vec![
        ("missing Host", b"GET / HTTP/1.1\r\n\r\n", 400),
        ("two Host fields", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("CL and TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("TE and CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
        ("differing CL fields", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
        ("differing CL list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello", 400),
        ("CL list after CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1, 2\r\n\r\nh", 400),
        ("negative CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
        ("signed CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400),
        ("hex CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", 400),
        ("CL with inner space", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\nhello", 400),
        ("empty CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-Foo: a\r\n  b\r\n\r\n", 400),
        ("chunked not last", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400),
        ("only gzip", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        ("chunked twice", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("xchunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400),
        ("empty TE", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", 400),
        ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("gzip then chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("bad chunk size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
        ("chunk size 0x", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400),
        ("negative chunk size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", 400),
        ("chunk size overflow", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n", 400),
        ("chunk LF only", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
        ("chunk overrun", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", 400),
        ("control char in chunk ext", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;\x01\r\nhello\r\n0\r\n\r\n", 400),
        ("header too large", big_value.as_bytes(), 431),
        ("too many fields", many_fields.as_bytes(), 431),
        ("CL over limit", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000\r\n\r\n", 413),
        ("chunked over limit", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n", 413),
        ("CONNECT", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
        ("HTTP/2.0 version", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400),
        ("unknown expectation", b"GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n", 417),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        ("field without colon", b"GET / HTTP/1.1\r\nHost a\r\n\r\n", 400),
        ("NUL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
        ("relative target", b"GET foo HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("asterisk with GET", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("method with a separator", b"GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("TLS client hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
        ("double space", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ];
    assert!(table.len() >= 30);
    let connect = feed_split(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 0).1;
    assert!(
        connect.contains("CONNECT: the gateway does not open tunnels"),
        "{connect}"
    );
    for (name, req, want) in &table {
        for split in 0..=req.len() {
            let (c, out) = feed_split(req, split);
            assert_eq!(status_of(&out), *want, "{name} (split at {split}): {out}");
            assert!(
                out.contains("Connection: close"),
                "{name}: error must close"
            );
            assert!(c.is_finished(), "{name}: connection must close");
        }
    }
}

#[test]
fn every_split_forwards_the_same_bytes() {
    let requests: &[&[u8]] = &[
        b"GET /a?b=c HTTP/1.1\r\nHost: origin\r\nAccept: */*\r\n\r\n",
        b"POST /submit HTTP/1.1\r\nHost: origin\r\nContent-Length: 11\r\n\r\nhello world",
        b"PUT /c HTTP/1.1\r\nHost: origin\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: 1\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ];
    for req in requests {
        let mut reference = None;
        for split in 0..=req.len() {
            let t0 = Instant::now();
            let mut c = conn_from(CLIENT, t0);
            c.recv_client(t0, &req[..split]);
            c.recv_client(t0, &req[split..]);
            assert_eq!(actions(&mut c), ["Connect { fresh: false, attempt: 0 }"]);
            c.upstream_connected(t0, false);
            let sent = take_upstream(&mut c, t0);
            assert!(sent.ends_with("\r\n") || sent.ends_with("world"), "{sent}");
            assert_eq!(take_client(&mut c), "");
            match &reference {
                None => reference = Some(sent),
                Some(r) => assert_eq!(&sent, r, "split at {split}"),
            }
        }
    }
}

/// One full exchange: returns (bytes sent upstream, bytes sent to client,
/// actions after the response).
fn exchange(peer: IpAddr, req: &[u8], resp: &[u8]) -> (String, String, Vec<String>, Conn) {
    let t0 = Instant::now();
    let mut c = conn_from(peer, t0);
    c.recv_client(t0, req);
    assert_eq!(actions(&mut c), ["Connect { fresh: false, attempt: 0 }"]);
    c.upstream_connected(t0, false);
    let up = take_upstream(&mut c, t0);
    c.recv_upstream(t0, resp);
    let out = take_client(&mut c);
    let acts = actions(&mut c);
    (up, out, acts, c)
}

#[test]
fn rewrites_request_head_for_upstream() {
    let req = b"GET /x HTTP/1.1\r\nHost: example\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Authorization: x\r\nVia: 1.0 edge\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n";
    let (up, _, _, _) = exchange(CLIENT, req, b"HTTP/1.1 204 No Content\r\n\r\n");
    // The forwarding fields are the gateway's to say for a client that is
    // no trusted proxy: a plain client claiming https is told as http,
    // its made-up chain replaced by its address.
    assert_eq!(
        up,
        "GET /x HTTP/1.1\r\nHost: example\r\nAccept: */*\r\nVia: 1.0 edge, 1.1 ultragate\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: example\r\n\r\n"
    );
}

#[test]
fn http10_without_host_gets_default_host() {
    let (up, out, acts, c) = exchange(
        CLIENT,
        b"GET / HTTP/1.0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    );
    assert!(up.contains("Host: origin:80\r\n"), "{up}");
    assert!(out.ends_with("Connection: close\r\n\r\nok"), "{out}");
    assert_eq!(acts, ["Release { reuse: true }"]);
    assert!(c.is_finished());
}

#[test]
fn relays_length_response_and_keeps_alive() {
    let (_, out, acts, c) = exchange(
        CLIENT,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-App: 1\r\n\r\nhello",
    );
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nX-App: 1\r\nVia: 1.1 ultragate\r\nContent-Length: 5\r\n\r\nhello"
    );
    assert_eq!(acts, ["Release { reuse: true }"]);
    assert!(!c.is_finished());
}

#[test]
fn relays_chunked_to_http11_and_dechunks_for_http10() {
    let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let (_, out, acts, c) = exchange(CLIENT, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", resp);
    assert!(
        out.ends_with("Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        "{out}"
    );
    assert_eq!(acts, ["Release { reuse: true }"]);
    assert!(!c.is_finished());

    let (_, out, acts, c) = exchange(
        CLIENT,
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        resp,
    );
    assert!(out.ends_with("Connection: close\r\n\r\nhello"), "{out}");
    assert!(!out.contains("chunked"));
    assert_eq!(acts, ["Release { reuse: true }"]);
    assert!(c.is_finished());
}

#[test]
fn chunked_response_split_at_every_byte() {
    let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
    for split in 0..=resp.len() {
        let t0 = Instant::now();
        let mut c = conn_from(CLIENT, t0);
        c.recv_client(t0, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        c.upstream_connected(t0, false);
        take_upstream(&mut c, t0);
        c.recv_upstream(t0, &resp[..split]);
        c.recv_upstream(t0, &resp[split..]);
        let out = take_client(&mut c);
        assert!(
            out.ends_with("\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"),
            "split {split}: {out}"
        );
        assert_eq!(
            actions(&mut c).last().map(String::as_str),
            Some("Release { reuse: true }")
        );
    }
}

#[test]
fn response_until_close_closes_client() {
    let t0 = Instant::now();
    let mut c = conn_from(CLIENT, t0);
    c.recv_client(t0, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    actions(&mut c);
    c.upstream_connected(t0, false);
    c.recv_upstream(t0, b"HTTP/1.0 200 OK\r\n\r\npart one ");
    c.recv_upstream(t0, b"part two");
    assert!(!c.is_finished());
    c.upstream_eof(t0);
    let out = take_client(&mut c);
    assert!(
        out.ends_with("Connection: close\r\n\r\npart one part two"),
        "{out}"
    );
    assert_eq!(actions(&mut c), ["Release { reuse: false }"]);
    assert!(c.is_finished());
}

#[test]
fn head_response_has_no_body() {
    let (_, out, acts, _) = exchange(
        CLIENT,
        b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n",
    );
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nVia: 1.1 ultragate\r\n\r\n"
    );
    assert_eq!(acts, ["Release { reuse: true }"]);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let t0 = Instant::now();
    let mut c = conn_from(CLIENT, t0);
    c.recv_client(t0, b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /health/live HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(actions(&mut c), ["Connect { fresh: false, attempt: 0 }"]);
    c.upstream_connected(t0, false);
    assert!(take_upstream(&mut c, t0).starts_with("GET /1 "));
    c.recv_upstream(t0, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none");
    assert_eq!(
        actions(&mut c),
        [
            "Release { reuse: true }",
            "Connect { fresh: false, attempt: 0 }"
        ]
    );
    c.upstream_connected(t0, true);
    assert!(take_upstream(&mut c, t0).starts_with("GET /3 "));
    c.recv_upstream(t0, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nthree");
    let out = take_client(&mut c);
    let one = out.find("one").unwrap();
    let live = out.find("live\n").unwrap();
    let three = out.find("three").unwrap();
    assert!(one < live && live < three, "{out}");
}

#[test]
fn connection_close_stops_the_pipeline() {
    let t0 = Instant::now();
    let mut c = conn_from(CLIENT, t0);
    c.recv_client(t0, b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
    actions(&mut c);
    c.upstream_connected(t0, false);
    take_upstream(&mut c, t0);
    c.recv_upstream(t0, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(actions(&mut c), ["Release { reuse: true }"]);
    assert!(take_client(&mut c).contains("Connection: close\r\n"));
    assert!(c.is_finished());
}

#[test]
fn expect_continue_is_answered_by_the_gateway() {
    let t0 = Instant::now();
    let mut c = conn_from(CLIENT, t0);
    c.recv_client(
        t0,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(take_client(&mut c), "HTTP/1.1 100 Continue\r\n\r\n");
    c.upstream_connected(t0, false);
    c.recv_client(t0, b"hello");
    let up = take_upstream(&mut c, t0);
    assert!(!up.to_ascii_lowercase().contains("expect"), "{up}");
    assert!(up.ends_with("Content-Length: 5\r\n\r\nhello"), "{up}");
    // An interim response from the upstream is not relayed.
    c.recv_upstream(
        t0,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(take_client(&mut c).starts_with("HTTP/1.1 201 Created\r\n"));
}

#[test]
fn stale_pooled_connection_is_retried_for_idempotent_requests_only() {
    let t0 = Instant::now();
    let mut c = conn_from(CLIENT, t0);
    c.recv_client(t0, b"GET /r HTTP/1.1\r\nHost: a\r\n\r\n");
    actions(&mut c);
    c.upstream_connected(t0, true);
    let first = take_upstream(&mut c, t0);
    c.upstream_eof(t0);
    assert_eq!(
        actions(&mut c),
        [
            "Release { reuse: false }",
            "Connect { fresh: true, attempt: 0 }"
        ]
    );
    c.upstream_connected(t0, false);
    assert_eq!(take_upstream(&mut c, t0), first);
    c.recv_upstream(t0, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert!(take_client(&mut c).ends_with("ok"));

    let mut c = conn_from(CLIENT, t0);
    c.recv_client(
        t0,
        b"POST /r HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
    );
    actions(&mut c);
    c.upstream_connected(t0, true);
    take_upstream(&mut c, t0);
    c.upstream_eof(t0);
    assert_eq!(actions(&mut c), ["Release { reuse: false }"]);
    assert_eq!(status_of(&take_client(&mut c)), 502);
}

#[test]
fn upstream_failures_map_to_502_and_504() {
    let t0 = Instant::now();
    let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

    let mut c = conn_from(CLIENT, t0);
    c.recv_client(t0, get);
    c.upstream_connect_failed(t0);
    let out = take_client(&mut c);
    assert_eq!(status_of(&out), 502);
    assert!(out.contains("upstream connect failed"), "{out}");

    let mut c = conn_from(CLIENT, t0);
    c.recv_client(t0, get);
    let t1 = c.timeout().unwrap();
    assert_eq!(t1, t0 + Duration::from_secs(1));
    c.handle_timeout(t1);
    let out = take_client(&mut c);
    assert_eq!(status_of(&out), 504);
    assert!(out.contains("upstream connect timeout"), "{out}");

    let mut c = conn_from(CLIENT, t0);
    c.recv_client(t0, get);
    c.upstream_connected(t0, false);
    take_upstream(&mut c, t0);
    c.handle_timeout(t0 + Duration::from_secs(4));
    assert_eq!(take_client(&mut c), "");
    c.handle_timeout(t0 + Duration::from_secs(5));
    let out = take_client(&mut c);
    assert_eq!(status_of(&out), 504);
    assert!(out.contains("upstream response timeout"), "{out}");
    assert!(
        !c.is_finished(),
        "a timeout does not cost the client its connection"
    );

    for garbage in [
        &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    ] {
        let (_, out, acts, _) = exchange(CLIENT, get, garbage);
        assert_eq!(status_of(&out), 502, "{out}");
        assert_eq!(acts, ["Release { reuse: false }"]);
    }
}

#[test]
fn next_server_is_tried_after_a_connect_failure() {
    let t0 = Instant::now();
    let cfg = Arc::new(EngineConfig {
        connect_attempts: 2,
        ..(*cfg(1024)).clone()
    });
    let mut c = Conn::new(cfg, ready(), None, CLIENT, t0);
    c.recv_client(t0, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    actions(&mut c);
    c.upstream_connect_failed(t0);
    assert_eq!(actions(&mut c), ["Connect { fresh: true, attempt: 1 }"]);
    c.upstream_connected(t0, false);
    assert!(take_upstream(&mut c, t0).starts_with("GET / HTTP/1.1\r\n"));
}

#[test]
fn health_probes_are_answered_locally() {
    let t0 = Instant::now();
    let mut c = conn_from(CLIENT, t0);
    c.recv_client(t0, b"GET /health/live HTTP/1.1\r\nHost: a\r\n\r\nHEAD /health/ready HTTP/1.1\r\nHost: a\r\n\r\n");
    let out = take_client(&mut c);
    assert!(
        out.starts_with("HTTP/1.1 200 OK\r\n") && out.contains("live\nHTTP/1.1 200 OK"),
        "{out}"
    );
    assert!(
        out.ends_with("Content-Length: 6\r\n\r\n"),
        "HEAD has no body: {out}"
    );
    assert!(actions(&mut c).is_empty());

    let mut c = Conn::new(
        cfg(1024),
        Arc::new(DataplaneStatus::default()),
        None,
        CLIENT,
        t0,
    );
    c.recv_client(t0, b"GET /health/ready HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(status_of(&take_client(&mut c)), 503);
}

#[test]
fn admin_on_data_port_is_for_loopback_peers_only() {
    let t0 = Instant::now();
    let req = b"POST /admin/cache/clear HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}";
    let mut c = conn_from(CLIENT, t0);
    c.recv_client(t0, req);
    assert_eq!(status_of(&take_client(&mut c)), 403);
    assert!(c.is_finished());

    let mut c = conn_from(LOOPBACK, t0);
    c.recv_client(t0, req);
    let Some(Action::Admin(call)) = c.poll_action() else {
        panic!("expected an admin call")
    };
    assert_eq!(
        (call.method, call.target.as_str(), &call.body[..]),
        ("POST", "/admin/cache/clear", &b"{}"[..])
    );
    c.admin_response(
        t0,
        AdminResponse {
            status: 200,
            content_type: "application/json",
            body: Bytes::from_static(b"{\"ok\":true}"),
            allow: None,
        },
    );
    let out = take_client(&mut c);
    assert!(
        out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("{\"ok\":true}"),
        "{out}"
    );
    assert!(!c.is_finished());
}

#[test]
fn drain_closes_idle_connections_and_finishes_busy_ones() {
    let t0 = Instant::now();
    let mut idle = conn_from(CLIENT, t0);
    idle.drain(t0);
    assert!(idle.is_finished());

    let mut busy = conn_from(CLIENT, t0);
    busy.recv_client(t0, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    actions(&mut busy);
    busy.upstream_connected(t0, false);
    busy.drain(t0);
    assert!(!busy.is_finished());
    busy.recv_upstream(t0, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let out = take_client(&mut busy);
    assert!(
        out.contains("Connection: close\r\n") && out.ends_with("ok"),
        "{out}"
    );
    assert!(busy.is_finished());
}

#[test]
fn idle_keepalive_times_out_and_partial_head_gets_408() {
    let t0 = Instant::now();
    let mut c = conn_from(CLIENT, t0);
    c.handle_timeout(t0 + Duration::from_secs(60));
    assert!(c.is_finished());
    assert_eq!(take_client(&mut c), "");

    let mut c = conn_from(CLIENT, t0);
    c.recv_client(t0, b"GET / HTTP/1.1\r\nHo");
    c.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(status_of(&take_client(&mut c)), 408);
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A deterministic xorshift stream of inputs, fed in random pieces to
    // both sides of the engine.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let alphabet: &[u8] =
        b"GET POST HTTP/1.1\r\n:chunked0123456789abcdefContent-LengthTransfer-Encoding ;\t\x00\xff";
    let t0 = Instant::now();
    for _ in 0..3000 {
        let mut c = conn_from(CLIENT, t0);
        let len = (next() % 300) as usize;
        let mut input: Vec<u8> = b"POST / HTTP/1.1\r\nHost: a\r\n".to_vec();
        input.extend((0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]));
        for piece in input.chunks(1 + (next() % 17) as usize) {
            c.recv_client(t0, piece);
            while c.poll_action().is_some() {}
            c.upstream_connected(t0, false);
            c.recv_upstream(t0, piece);
            let n = c.client_pending();
            c.client_written(n, t0);
        }
        c.upstream_eof(t0);
        c.handle_timeout(t0 + Duration::from_secs(100));
    }
}
