//! One request, one meaning, end to end: a real gateway in front of a
//! test origin that reads paths as nginx does (`--decode-paths`: escapes
//! decoded, dots resolved), each attack of the edge review sent as raw
//! bytes. Every one of these worked against the gateway before issue 25.

mod support;

use std::time::Duration;
use support::*;

/// Sends one request (`Connection: close` added) and returns the answer.
fn ask(gw: &Gateway, method_target: &str, fields: &str) -> String {
    let req =
        format!("{method_target} HTTP/1.1\r\nHost: shop\r\n{fields}Connection: close\r\n\r\n");
    let out = raw_exchange(gw.data, req.as_bytes(), Duration::from_secs(5));
    String::from_utf8_lossy(&out).into_owned()
}

fn status(resp: &str) -> u16 {
    resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Routes: assets with a one-hour TTL override, a read-only `/norm/` and
/// a catch-all for `/norm` that takes any method, no cache elsewhere.
const ROUTES: &str = "[[route]]\nname = \"assets\"\npath_prefix = \"/norm/assets/\"\n\
     upstream = \"primary\"\ncache_ttl_override_s = 3600\n\n\
     [[route]]\nname = \"read-only\"\npath_prefix = \"/norm/\"\nupstream = \"primary\"\n\
     methods = [\"GET\"]\ncache = false\n\n\
     [[route]]\nname = \"writes\"\npath_prefix = \"/norm\"\nupstream = \"primary\"\ncache = false\n\n\
     [[route]]\nname = \"echo\"\npath_prefix = \"/echo\"\nupstream = \"primary\"\n";

#[test]
fn web_cache_deception_stores_no_victims_page() {
    let (_o, origin) = origin(&["--decode-paths"]);
    let gw = Gateway::start(&[origin], "", ROUTES);
    // The victim follows the attacker's link: to the origin it is /echo
    // (the victim's own request, cookie included), to a gateway that
    // routed the raw path it was an asset under a one-hour TTL.
    for link in [
        "/norm/assets/..%2f..%2f..%2fecho",
        "/norm/assets/%2e%2e/%2e%2e/%2e%2e/echo",
        "/norm/assets/../../../echo",
    ] {
        let victim = ask(
            &gw,
            &format!("GET {link}"),
            "Cookie: session=victim-secret\r\n",
        );
        let attacker = ask(&gw, &format!("GET {link}"), "");
        assert!(
            !attacker.contains("victim-secret"),
            "{link}: the victim's page was served to the attacker:\n{attacker}"
        );
        assert!(!attacker.contains("X-Cache: HIT"), "{link}: {attacker}");
        // Refused (encoded slash) or sent as the /echo it is (no TTL).
        let s = status(&victim);
        assert!(
            s == 400 || victim.contains("GET /echo HTTP/1.1"),
            "{link}: {victim}"
        );
    }
    // An asset still gets the route's TTL.
    let css = "GET /norm/assets/site.css?type=text/css";
    assert!(ask(&gw, css, "").contains("X-Cache: MISS"));
    let again = ask(&gw, css, "");
    assert!(again.contains("X-Cache: HIT"), "{again}");
}

#[test]
fn paths_and_methods_no_route_allows_are_refused() {
    let (_o, origin) = origin(&["--decode-paths"]);
    let gw = Gateway::start(&[origin], "", ROUTES);
    // Each reaches /secret at the origin if forwarded as sent; no route
    // takes /secret.
    for target in [
        "/norm/../secret",
        "/norm/%2e%2e/secret",
        "/norm/..%2fsecret",
        "/norm//../../secret",
        "/norm/x/..\\..\\..\\secret",
    ] {
        let resp = ask(&gw, &format!("GET {target}"), "");
        assert!(
            matches!(status(&resp), 400 | 404),
            "{target} was forwarded: {resp}"
        );
    }
    // The read-only route's methods hold: the catch-all for `/norm` does
    // not take what `/norm/` refuses.
    let resp = ask(&gw, "DELETE /norm/items/1", "");
    assert_eq!(status(&resp), 405, "{resp}");
    assert!(resp.contains("\r\nAllow: GET, HEAD\r\n"), "{resp}");
    assert_eq!(status(&ask(&gw, "DELETE /normal", "")), 200);
    // TRACE would echo the cookie: refused where no route lists it.
    let resp = ask(&gw, "TRACE /echo", "Cookie: session=s3cr3t\r\n");
    assert_eq!(status(&resp), 405, "{resp}");
    assert!(!resp.contains("s3cr3t"), "{resp}");
}

#[test]
fn the_origin_is_sent_the_host_and_path_that_were_routed() {
    let (_o, origin) = origin(&["--decode-paths"]);
    let gw = Gateway::start(&[origin], "", ROUTES);
    // Absolute form: its authority is the host (RFC 9112 §3.2.2), sent
    // upstream in origin form.
    let req = b"GET http://shop.example/echo?x=1 HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n";
    let resp =
        String::from_utf8_lossy(&raw_exchange(gw.data, req, Duration::from_secs(5))).into_owned();
    assert_eq!(status(&resp), 200, "routed by its path: {resp}");
    assert!(resp.contains("GET /echo?x=1 HTTP/1.1\r\n"), "{resp}");
    assert!(resp.contains("Host: shop.example\r\n"), "{resp}");
    assert!(!resp.contains("evil.example"), "{resp}");
    // A Host that is no host.
    for host in ["a/b", "a b@c", "x..y", "[::1", "h:8o"] {
        let req = format!("GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let out = raw_exchange(gw.data, req.as_bytes(), Duration::from_secs(5));
        let resp = String::from_utf8_lossy(&out);
        assert_eq!(status(&resp), 400, "{host}: {resp}");
    }
}

#[test]
fn a_clients_forwarding_fields_do_not_poison_a_cached_page() {
    let (_o, origin) = origin(&["--decode-paths"]);
    let gw = Gateway::start(&[origin], "", ROUTES);
    // The origin builds the page from what it is told (here: echoes it);
    // the attacker's fields would be in the stored copy everyone gets.
    let page = "GET /echo?cache=max-age%3D60";
    let spoofed = "X-Forwarded-Host: evil.example\r\nX-Original-URL: /admin\r\n\
                   Forwarded: host=evil.example\r\nX-Real-IP: 6.6.6.6\r\n\
                   X-Forwarded-For: 6.6.6.6\r\n";
    let first = ask(&gw, page, spoofed);
    assert!(first.contains("X-Cache: MISS"), "{first}");
    let victim = ask(&gw, page, "");
    assert!(victim.contains("X-Cache: HIT"), "{victim}");
    for bad in ["evil.example", "/admin", "6.6.6.6"] {
        assert!(!victim.contains(bad), "{bad} in the cached page:\n{victim}");
    }
    assert!(victim.contains("X-Forwarded-Host: shop\r\n"), "{victim}");
    assert!(
        victim.contains("X-Forwarded-For: 127.0.0.1\r\n"),
        "{victim}"
    );
}
