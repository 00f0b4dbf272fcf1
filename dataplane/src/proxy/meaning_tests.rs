//! One request, one meaning: what the routes and the cache read of a
//! request is what the origin is sent (paths, hosts, methods), each as a
//! byte-slice test of an attack that worked before.

use super::testkit::*;
use super::*;
use crate::http::path::EscapedSlashes;
use crate::route::{HostMatch, RouteSpec, TtlOverride, ASSET_TYPES};
use forward::ForwardRules;

fn route(name: &str, prefix: &str, methods: &[&str], ttl: Option<u64>) -> RouteSpec {
    RouteSpec {
        name: name.into(),
        host: HostMatch::Any,
        path_prefix: prefix.into(),
        methods: methods.iter().map(|m| m.to_string()).collect(),
        upstream: Arc::from("primary"),
        pool: 0,
        cache: true,
        cache_ttl: ttl.map(|s| TtlOverride::new(Duration::from_secs(s), &ASSET_TYPES)),
    }
}

/// A connection under `routes` and `paths`, answering from `cache`.
fn routed(cache: &Arc<Cache>, t: Instant, routes: Vec<RouteSpec>, paths: PathRules) -> Conn {
    let mut cfg = (*cfg(1 << 20)).clone();
    cfg.routes = Arc::new(Routes::new(routes));
    cfg.paths = paths;
    Conn::new(Arc::new(cfg), ready(), Some(cache.clone()), CLIENT, t)
}

/// Sends `req`; returns (request sent upstream, or empty; client output).
fn send(c: &mut Conn, t: Instant, req: &str) -> (String, String) {
    c.recv_client(t, req.as_bytes());
    if actions(c).is_empty() {
        return (String::new(), take_client(c));
    }
    c.upstream_connected(t, false);
    (take_upstream(c, t), take_client(c))
}

fn assets_and_private() -> Vec<RouteSpec> {
    vec![
        route("assets", "/norm/assets/", &["GET"], Some(3600)),
        route("private", "/norm/private/", &["GET"], None),
        route("public", "/public/", &[], None),
    ]
}

#[test]
fn encoded_slashes_and_dot_segments_cannot_reach_a_path_the_routes_did_not_see() {
    let cache = new_cache();
    let t0 = Instant::now();
    let rules = PathRules::default();
    for target in [
        "/norm/assets/..%2fprivate/me",
        "/norm/assets/..%2Fprivate/me",
        "/norm/assets/%2e%2e%5cprivate/me",
        "/norm/assets\\..\\private/me",
        "/..",
        "/public/../../etc/passwd",
        "/public/%2e%2e/%2e%2e/x",
        "/public/%zz",
    ] {
        let mut c = routed(&cache, t0, assets_and_private(), rules);
        let (up, out) = send(
            &mut c,
            t0,
            &format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n"),
        );
        assert!(up.is_empty(), "{target} went upstream: {up}");
        assert_eq!(status_of(&out), 400, "{target}: {out}");
    }
    // Dot segments the routes resolve are what the origin is sent: the
    // private route takes it, by its own rules.
    for target in [
        "/norm/assets/../private/me",
        "/norm/assets/%2e%2e/private/me",
    ] {
        let mut c = routed(&cache, t0, assets_and_private(), rules);
        let (up, _) = send(
            &mut c,
            t0,
            &format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n"),
        );
        let sent = up.lines().next().unwrap_or_default();
        assert_eq!(sent, "GET /norm/private/me HTTP/1.1", "{target}");
    }
    // `//../` removes the empty segment only: `//norm/…` is no route's.
    let mut c = routed(&cache, t0, assets_and_private(), rules);
    let (up, out) = send(
        &mut c,
        t0,
        "GET /public/..//norm/private/me HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    assert!(up.is_empty() && status_of(&out) == 404, "{up}{out}");
}

#[test]
fn the_decode_policy_routes_what_an_origin_that_decodes_would_serve() {
    let cache = new_cache();
    let t0 = Instant::now();
    let rules = PathRules {
        merge_slashes: true,
        escaped_slashes: EscapedSlashes::Decode,
    };
    // The victim's request: under `decode` it is the private page, sent
    // and keyed as such, so the assets route's TTL never applies.
    let victim = "GET /norm/assets/..%2fprivate/me HTTP/1.1\r\nHost: h\r\nCookie: s=victim\r\n\r\n";
    let mut c = routed(&cache, t0, assets_and_private(), rules);
    let (up, _) = send(&mut c, t0, victim);
    assert!(up.starts_with("GET /norm/private/me HTTP/1.1\r\n"), "{up}");
    c.recv_upstream(
        t0,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 7\r\n\r\nprivate",
    );
    take_client(&mut c);
    // The attacker asks again without the cookie: a miss, not a HIT of the
    // victim's page.
    let mut c = routed(&cache, t0, assets_and_private(), rules);
    let (up, _) = send(
        &mut c,
        t0,
        "GET /norm/assets/..%2fprivate/me HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    assert!(!up.is_empty(), "went upstream again");
    // Merged slashes reach the route they spell.
    let mut c = routed(&cache, t0, assets_and_private(), rules);
    let (up, _) = send(
        &mut c,
        t0,
        "GET //norm//private///me HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    assert!(up.starts_with("GET /norm/private/me HTTP/1.1\r\n"), "{up}");
}

#[test]
fn a_route_refuses_methods_it_does_not_list_and_trace_is_refused() {
    let cache = new_cache();
    let t0 = Instant::now();
    let routes = || {
        vec![
            route("everything", "/", &[], None),
            route("read-only", "/norm/", &["GET"], None),
        ]
    };
    let mut c = routed(&cache, t0, routes(), PathRules::default());
    let (up, out) = send(&mut c, t0, "DELETE /norm/x HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(up.is_empty(), "{up}");
    assert_eq!(status_of(&out), 405, "{out}");
    assert!(out.contains("\r\nAllow: GET, HEAD\r\n"), "{out}");
    assert!(!c.is_finished(), "the connection goes on");
    let mut c = routed(&cache, t0, routes(), PathRules::default());
    let (_, out) = send(
        &mut c,
        t0,
        "TRACE /x HTTP/1.1\r\nHost: h\r\nCookie: session=secret\r\n\r\n",
    );
    assert_eq!(status_of(&out), 405, "{out}");
    assert!(!out.contains("secret"), "{out}");
}

#[test]
fn an_absolute_form_target_is_sent_in_origin_form_with_its_own_host() {
    let cache = new_cache();
    let t0 = Instant::now();
    let mut c = routed(&cache, t0, assets_and_private(), PathRules::default());
    let (up, _) = send(
        &mut c,
        t0,
        "GET http://Origin.example:8080/public/a?q=1 HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    );
    assert!(up.starts_with("GET /public/a?q=1 HTTP/1.1\r\n"), "{up}");
    assert!(up.contains("\r\nHost: Origin.example:8080\r\n"), "{up}");
    assert!(!up.contains("evil"), "{up}");
    for bad in [
        "GET http://user@h/ HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a..b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
    ] {
        let mut c = routed(&cache, t0, assets_and_private(), PathRules::default());
        let (up, out) = send(&mut c, t0, bad);
        assert!(up.is_empty(), "{bad:?}: {up}");
        assert_eq!(status_of(&out), 400, "{bad:?}: {out}");
    }
    for good in ["h", "h:80", "[::1]:8080", "127.0.0.1", "a-b.example.", ""] {
        let req = format!("GET /public/ HTTP/1.1\r\nHost: {good}\r\n\r\n");
        let mut c = routed(&cache, t0, assets_and_private(), PathRules::default());
        let (up, out) = send(&mut c, t0, &req);
        assert!(!up.is_empty(), "{good}: {out}");
    }
}

/// A connection from `peer` under `rules`, answering from `cache`.
fn forwarded_conn(cache: &Arc<Cache>, t: Instant, peer: IpAddr, rules: ForwardRules) -> Conn {
    let mut cfg = (*cfg(1 << 20)).clone();
    cfg.forwarding = rules;
    Conn::new(Arc::new(cfg), ready(), Some(cache.clone()), peer, t)
}

const SPOOFED: &str = "GET /page HTTP/1.1\r\nHost: shop\r\nX-Forwarded-Host: evil.example\r\n\
     Forwarded: for=1.1.1.1;host=evil.example\r\nX-Real-IP: 1.1.1.1\r\n\
     X-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\nX-Forwarded-For: 1.1.1.1\r\n\
     X-Forwarded-Proto: https\r\nX-Forwarded-Prefix: /evil\r\n\r\n";

#[test]
fn an_untrusted_clients_forwarding_fields_never_reach_the_origin() {
    let cache = new_cache();
    let t0 = Instant::now();
    let rules = ForwardRules {
        trusted: vec!["192.168.0.0/16".parse().unwrap()],
        strip: vec!["x-forwarded-prefix".into()],
        forwarded: true,
    };
    let mut c = forwarded_conn(&cache, t0, CLIENT, rules.clone());
    let (up, _) = send(&mut c, t0, SPOOFED);
    for spoofed in ["evil", "1.1.1.1", "/admin", "https", "X-Real-IP"] {
        assert!(!up.contains(spoofed), "{spoofed} reached the origin:\n{up}");
    }
    let peer = CLIENT.to_string();
    assert!(
        up.contains(&format!("\r\nX-Forwarded-For: {peer}\r\n")),
        "{up}"
    );
    assert!(up.contains("\r\nX-Forwarded-Proto: http\r\n"), "{up}");
    assert!(up.contains("\r\nX-Forwarded-Host: shop\r\n"), "{up}");
    assert!(
        up.contains(&format!(
            "\r\nForwarded: for={peer};proto=http;host=\"shop\"\r\n"
        )),
        "{up}"
    );
    // A trusted proxy's are kept; the peer is appended to its chain.
    drop(c);
    let proxy: IpAddr = "192.168.1.2".parse().unwrap();
    let mut c = forwarded_conn(&cache, t0, proxy, rules);
    let (up, _) = send(&mut c, t0, SPOOFED);
    assert!(
        up.contains("\r\nX-Forwarded-For: 1.1.1.1, 192.168.1.2\r\n"),
        "{up}"
    );
    assert!(
        up.contains("\r\nX-Forwarded-Host: evil.example\r\n"),
        "{up}"
    );
    assert!(up.contains("\r\nX-Forwarded-Proto: https\r\n"), "{up}");
    assert!(
        up.contains("\r\nForwarded: for=1.1.1.1;host=evil.example, for=192.168.1.2;proto=http;host=\"shop\"\r\n"),
        "{up}"
    );
    assert_eq!(up.matches("Forwarded:").count(), 1, "{up}");
}

#[test]
fn a_cached_page_is_not_poisoned_by_a_forwarded_host() {
    let cache = new_cache();
    let t0 = Instant::now();
    let mut c = forwarded_conn(&cache, t0, CLIENT, ForwardRules::default());
    let (up, _) = send(
        &mut c,
        t0,
        "GET /p HTTP/1.1\r\nHost: shop\r\nX-Forwarded-Host: evil.example\r\n\r\n",
    );
    // What the origin builds its links from is the host that keyed it.
    assert!(!up.contains("evil.example"), "{up}");
    assert!(up.contains("\r\nX-Forwarded-Host: shop\r\n"), "{up}");
}

#[test]
fn request_ids_reach_the_origin_once_and_valid_or_not_at_all() {
    let cache = new_cache();
    let t0 = Instant::now();
    let id = "X-Request-Id: a1\r\n";
    let tp = "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n";
    for (fields, ids, traces) in [
        (format!("{id}{tp}"), 1, 1),
        (format!("{id}{id}{tp}{tp}"), 0, 0),
        ("X-Request-Id: a b\r\ntraceparent: zz\r\n".to_owned(), 0, 0),
    ] {
        let mut c = conn(&cache, t0);
        let req = format!("POST /x HTTP/1.1\r\nHost: h\r\n{fields}\r\n");
        let (up, _) = send(&mut c, t0, &req);
        assert_eq!(up.matches("X-Request-Id:").count(), ids, "{up}");
        assert_eq!(up.matches("traceparent:").count(), traces, "{up}");
    }
}

#[test]
fn a_background_refresh_leaves_out_what_the_clients_connection_named() {
    let request = refresh_of(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: x-hop\r\nX-Hop: secret\r\nAccept: */*\r\n\r\n",
    );
    let request = String::from_utf8_lossy(&request);
    assert!(!request.contains("secret"), "{request}");
    assert!(request.contains("\r\nAccept: */*\r\n"), "{request}");
}

#[test]
fn a_chunked_body_reaches_the_origin_in_canonical_form() {
    let cache = new_cache();
    let t0 = Instant::now();
    let mut c = conn(&cache, t0);
    let (up, _) = send(
        &mut c,
        t0,
        "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
    );
    assert!(
        up.ends_with("\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
        "{up:?}"
    );
}
