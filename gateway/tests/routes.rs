//! Routes to named pools, each with its own fallback and runbook row:
//! real gateway, three test origins behind two routes, and the Node.js
//! fallback service.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::*;

/// Who answered `path`: the origin's `X-Origin` name, or `node` for the
/// Node.js fallback.
fn answered_by(gw: &Gateway, path: &str) -> String {
    let out = curl(&["-i", &gw.url(path)]);
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    if text.contains("x-served-by: nodejs-api") {
        return "node".into();
    }
    text.lines()
        .find_map(|l| l.strip_prefix("x-origin: "))
        .map_or_else(|| format!("? {text}"), |v| v.trim().to_owned())
}

/// The `[upstream.*]` and `[[route]]` sections: `/api/` to pool `api`
/// (diverting to the Node.js `fallback`), everything else to `primary`.
fn routed(api: SocketAddr, node: SocketAddr) -> String {
    format!(
        "health_interval_ms = 100\nhealth_timeout_ms = 300\neject_after_failures = 1\n\n\
         [upstream.fallback]\nservers = [\"{node}\"]\nhealth_interval_ms = 100\n\n\
         [upstream.api]\nservers = [\"{api}\"]\nfallback = \"fallback\"\n\
         health_interval_ms = 100\nhealth_timeout_ms = 300\neject_after_failures = 1\n\n\
         [[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"api\"\ncache = false\n\n\
         [[route]]\nname = \"web\"\nupstream = \"primary\"\ncache = false\n\n\
         [control]\ninterval_ms = 100\nfailback_hold_ms = 1000\np99_threshold_ms = 200\n"
    )
}

#[test]
fn killing_one_routes_pool_diverts_that_route_alone() {
    let (_w1, web1) = origin(&["--name", "web1"]);
    let (_w2, web2) = origin(&["--name", "web2"]);
    let (api_proc, api) = origin(&["--name", "api"]);
    let (_n, node) = nodejs();
    let gw = Gateway::start(&[web1, web2], "", &routed(api, node));
    assert_eq!(answered_by(&gw, "/api/items"), "api");
    assert!(answered_by(&gw, "/page").starts_with("web"));

    let api_load = Load::start(gw.data, "/api/items", Duration::from_millis(5));
    let web_load = Load::start(gw.data, "/page?size=64", Duration::from_millis(5));
    api_load.reach(30);
    web_load.reach(30);
    drop(api_proc);
    assert!(
        wait_for(Duration::from_secs(2), || has_event(
            &gw,
            "divert to fallback"
        )),
        "diverted: {}",
        admin_json(&gw, "/admin/events")
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        answered_by(&gw, "/api/items"),
        "node",
        "the api route diverted"
    );
    assert!(
        answered_by(&gw, "/page").starts_with("web"),
        "the web route untouched"
    );
    let (api_sent, api_failed) = api_load.finish_after(30);
    let (web_sent, web_failed) = web_load.finish_after(30);
    assert!(api_sent > 50 && web_sent > 50, "{api_sent} {web_sent}");
    assert!(api_failed.is_empty(), "api: {api_failed:?} of {api_sent}");
    assert!(web_failed.is_empty(), "web: {web_failed:?} of {web_sent}");

    let route = admin_json(&gw, "/admin/route");
    assert_eq!(
        route["route"], "primary",
        "the default route stays: {route}"
    );
    assert_eq!(route["pools"][0]["pool"], "api", "{route}");
    assert_eq!(route["pools"][0]["route"], "fallback", "{route}");
    let events = admin_json(&gw, "/admin/events").to_string();
    assert!(
        events.contains("pool api (routes api)"),
        "the decision names the route: {events}"
    );
    let metrics = String::from_utf8_lossy(&curl(&[&format!("http://{}/metrics", gw.admin)]).stdout)
        .into_owned();
    let count = |series: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        count("ultragate_route_requests_total{pool=\"api\",route=\"api\"}") > 50.0
            && count("ultragate_route_requests_total{pool=\"primary\",route=\"web\"}") > 50.0,
        "requests by route and pool: {metrics}"
    );
    assert!(metrics.contains("ultragate_upstream_server_up{pool=\"api\""));
    let health = admin_json(&gw, "/health");
    let api_health = health["components"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "upstream_api"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(api_health["status"], "down", "{health}");
    assert_eq!(api_health["route"], "fallback", "{health}");
    assert_eq!(api_health["routes"], "api", "{health}");

    // The operator takes the api route back by name; `auto` returns it
    // to the runbook, which keeps it diverted while its pool is down.
    let post = |body: &str| {
        curl(&[
            "-X",
            "POST",
            "--json",
            body,
            &format!("http://{}/admin/route", gw.admin),
        ])
    };
    let out = post(r#"{"route": "api", "to": "primary"}"#);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(r#""route":"primary""#),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = post(r#"{"route": "nope", "to": "primary"}"#);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no route named"));
    post(r#"{"route": "api", "to": "auto"}"#);
}

#[test]
fn a_request_no_route_takes_gets_404_and_a_reload_adds_a_route_under_load() {
    let (_w, web) = origin(&["--name", "web"]);
    let (_x, extra) = origin(&["--name", "extra"]);
    let (_n, node) = nodejs();
    let only_api = format!(
        "[upstream.fallback]\nservers = [\"{node}\"]\n\n\
         [[route]]\nname = \"web\"\npath_prefix = \"/web/\"\nupstream = \"primary\"\ncache = false\n"
    );
    let gw = Gateway::start(&[web], "", &only_api);
    let out = curl(&["-i", &gw.url("/elsewhere")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("HTTP/1.1 404") && text.contains("no route"),
        "{text}"
    );
    assert_eq!(answered_by(&gw, "/web/a"), "web");

    let load = Load::start(gw.data, "/web/a?size=64", Duration::from_millis(5));
    load.reach(30);
    let mut text = std::fs::read_to_string(&gw.config).unwrap();
    text.push_str(&format!(
        "\n[upstream.extra]\nservers = [\"{extra}\"]\n\n\
         [[route]]\nname = \"extra\"\npath_prefix = \"/extra/\"\nupstream = \"extra\"\n"
    ));
    std::fs::write(&gw.config, text).unwrap();
    let out = curl(&[
        "-X",
        "POST",
        &format!("http://{}/admin/config/reload", gw.admin),
    ]);
    assert!(
        out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("error"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        wait_for(Duration::from_secs(3), || answered_by(&gw, "/extra/b")
            == "extra"),
        "the new route serves"
    );
    let (sent, failed) = load.finish_after(30);
    assert!(sent > 50, "{sent}");
    assert!(
        failed.is_empty(),
        "{failed:?} of {sent} failed across the reload"
    );
}

#[test]
fn a_pool_by_name_starts_unresolved_then_follows_its_addresses_live() {
    // The name's addresses come from a hosts file the test writes: no
    // lookup leaves the machine.
    let port = free_port();
    let a2: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    let a3: SocketAddr = format!("127.0.0.3:{port}").parse().unwrap();
    let _o2 = origin_at(a2, &["--name", "a2"]);
    let _o3 = origin_at(a3, &["--name", "a3"]);
    let (_w, web) = origin(&["--name", "web"]);
    let (_n, node) = nodejs();
    let hosts = std::env::temp_dir().join(format!("ug-test-hosts-{}-{port}", std::process::id()));
    std::fs::write(&hosts, "# nothing yet\n").unwrap();
    let extra = format!(
        "[upstream.fallback]\nservers = [\"{node}\"]\n\n\
         [upstream.api]\nservers = [\"api.test:{port}\"]\nfallback = \"fallback\"\n\
         resolve_interval_ms = 100\nhealth_interval_ms = 100\n\n\
         [[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"api\"\ncache = false\n\n\
         [[route]]\nname = \"web\"\nupstream = \"primary\"\n\n\
         [resolver]\nhosts_file = \"{}\"\nsystem = false\n\n\
         [control]\ninterval_ms = 100\nfailback_hold_ms = 300\np99_threshold_ms = 200\n",
        hosts.display()
    );
    // Unresolvable at start: the gateway starts (no CrashLoop), says why,
    // and the route is served by its fallback meanwhile.
    let gw = Gateway::start(&[web], "", &extra);
    let api_health = || {
        admin_json(&gw, "/health")["components"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == "upstream_api").cloned())
            .unwrap_or_default()
    };
    let h = api_health();
    assert_eq!(h["status"], "down", "{h}");
    assert!(
        h["unresolved"]
            .as_str()
            .is_some_and(|u| u.contains("api.test")),
        "{h}"
    );
    assert!(admin_json(&gw, "/admin/events")
        .to_string()
        .contains("dns_unresolved"));
    assert_eq!(answered_by(&gw, "/api/items"), "node");

    // The name appears: its address is used (the pool, diverted while it
    // had none, fails back after the hold).
    std::fs::write(&hosts, format!("{} api.test\n", a2.ip())).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || answered_by(&gw, "/api/items")
            == "a2"),
        "resolved: {}",
        admin_json(&gw, "/admin/events")
    );
    assert!(api_health()["unresolved"].is_null());

    // Under load, the name moves to another address: the old one is
    // dropped, the new one serves, nothing fails.
    let load = Load::start(gw.data, "/api/items", Duration::from_millis(5));
    load.reach(30);
    std::fs::write(&hosts, format!("{} api.test\n", a3.ip())).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || answered_by(&gw, "/api/items")
            == "a3"),
        "moved"
    );
    let (sent, failed) = load.finish_after(30);
    assert!(sent > 50, "{sent}");
    assert!(failed.is_empty(), "{failed:?} of {sent}");
    let servers = api_health()["servers"].to_string();
    assert!(
        servers.contains(&a3.to_string()) && !servers.contains(&a2.to_string()),
        "{servers}"
    );
    assert!(admin_json(&gw, "/admin/events")
        .to_string()
        .contains("dns_change"));
    let _ = std::fs::remove_file(&hosts);
}
