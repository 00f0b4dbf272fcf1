//! The runbook, automatic: real gateway, test origin and Node.js fallback,
//! a client under continuous load, faults injected by killing, slowing and
//! corrupting.

mod support;

use std::time::Duration;
use support::*;

/// `[upstream.fallback]` and fast `[control]` timings for tests.
fn runbook_config(node: std::net::SocketAddr, control: &str) -> String {
    format!(
        "health_interval_ms = 100\nhealth_timeout_ms = 300\neject_after_failures = 1\n\n\
         [upstream.fallback]\nservers = [\"{node}\"]\nhealth_interval_ms = 100\n\n\
         [control]\ninterval_ms = 100\nfailback_hold_ms = 1000\n{control}\n"
    )
}

#[test]
fn killed_primary_is_diverted_without_failed_gets_and_failed_back() {
    let (o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    // This fault is the kill: the slowness threshold stays out of the way
    // (failing back needs a check faster than it, and a busy CI machine
    // can take longer than the default 10 ms to answer one).
    let control = "p99_threshold_ms = 200";
    let gw = Gateway::start(&[origin], "", &runbook_config(node, control));
    let load = Load::start(gw.data, "/item?size=64", Duration::from_millis(5));
    load.reach(50);

    drop(o);
    assert!(
        wait_for(Duration::from_secs(1), || has_event(
            &gw,
            "divert to fallback"
        )),
        "diverted within 1 s: {}",
        admin_json(&gw, "/admin/events")
    );
    assert_eq!(admin_json(&gw, "/admin/route")["route"], "fallback");
    std::thread::sleep(Duration::from_millis(300));

    let _o2 = origin_at(origin, &[]);
    assert!(
        wait_for(Duration::from_secs(5), || has_event(
            &gw,
            "fail back to primary"
        )),
        "failed back after the hold: {}",
        admin_json(&gw, "/admin/events")
    );
    let (sent, failed) = load.finish_after(51);
    assert!(sent > 100, "continuous load: {sent}");
    assert!(
        failed.is_empty(),
        "{} of {sent} GETs failed: {failed:?}",
        failed.len()
    );
    assert_eq!(admin_json(&gw, "/admin/route")["route"], "primary");
}

#[test]
fn slow_primary_is_diverted_and_failed_back_when_fast() {
    let (o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    let control = "p99_threshold_ms = 20\np99_window_ms = 500\nmin_requests = 5";
    let gw = Gateway::start(&[origin], "", &runbook_config(node, control));
    drop(o);
    let slow = origin_at(origin, &["--delay-ms", "60"]);
    let load = Load::start(gw.data, "/item?size=64", Duration::from_millis(2));
    assert!(
        wait_for(Duration::from_secs(5), || has_event(
            &gw,
            "divert to fallback"
        )),
        "slow primary diverted: {}",
        admin_json(&gw, "/admin/events")
    );
    let events = admin_json(&gw, "/admin/events");
    assert!(
        events.to_string().contains("p99_over_threshold"),
        "{events}"
    );
    drop(slow);
    let _fast = origin_at(origin, &[]);
    assert!(
        wait_for(Duration::from_secs(6), || has_event(
            &gw,
            "fail back to primary"
        )),
        "fast again: failed back: {}",
        admin_json(&gw, "/admin/events")
    );
    let (_, failed) = load.finish();
    assert!(failed.is_empty(), "{failed:?}");
}

#[test]
fn memory_pressure_shrinks_or_clears_the_cache_and_serving_goes_on() {
    let (_o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    // A limit close to what the process needs at rest.
    let gw = Gateway::start(
        &[origin],
        "",
        &runbook_config(node, "memory_limit_bytes = 48000000"),
    );
    for i in 0..400 {
        let path = format!("/fill/{i}?size=200000&cache=max-age%3D600");
        assert_eq!(get_status(gw.data, &path), 200);
    }
    assert!(
        wait_for(Duration::from_secs(3), || has_event(
            &gw,
            "clear cache, stop inserts"
        ) || has_event(
            &gw,
            "shrink cache"
        )),
        "{}",
        admin_json(&gw, "/admin/events")
    );
    assert_eq!(get_status(gw.data, "/after?size=10"), 200);
    let health = admin_json(&gw, "/health");
    let memory = &health["components"][0];
    assert_eq!(memory["name"], "memory");
    assert_eq!(memory["limit_bytes"], 48000000);
}

#[test]
fn corrupted_entry_is_caught_bypassed_and_cache_serves_again() {
    let (_o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    let extra = format!(
        "{}\n[cache]\ntest_hooks = true\n",
        runbook_config(node, "verify_interval_ms = 200")
    );
    let gw = Gateway::start(&[origin], "", &extra);
    let url = gw.url("/precious?size=100&cache=max-age%3D600");
    curl(&[&url]);
    let out = curl(&[
        "-X",
        "POST",
        "--json",
        "/precious?size=100&cache=max-age%3D600",
        &format!("http://{}/admin/cache/corrupt", gw.admin),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("corrupt"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        wait_for(Duration::from_secs(3), || has_event(
            &gw,
            "bypass cache, evict bad entries"
        )),
        "{}",
        admin_json(&gw, "/admin/events")
    );
    assert!(wait_for(Duration::from_secs(3), || has_event(
        &gw,
        "serve from cache again"
    )));
    // The bad copy is gone: fetched again, then served from the cache.
    let first = String::from_utf8_lossy(&curl(&["-i", &url]).stdout).into_owned();
    assert!(
        first.contains("X-Cache: MISS") && first.ends_with(&"x".repeat(100)),
        "{first}"
    );
    let second = String::from_utf8_lossy(&curl(&["-i", &url]).stdout).into_owned();
    assert!(
        second.contains("X-Cache: HIT") && second.ends_with(&"x".repeat(100)),
        "{second}"
    );
}

#[test]
fn on_demand_verify_runs_the_whole_corruption_runbook() {
    let (_o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    let dir = std::env::temp_dir().join(format!("ug-verify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // No background verify during the test: the operator's call does it.
    let extra = format!(
        "{}\n[cache]\ntest_hooks = true\nsnapshot_dir = \"{}\"\n",
        runbook_config(node, "verify_interval_ms = 3600000"),
        dir.display()
    );
    let gw = Gateway::start(&[origin], "", &extra);
    let path = "/kept?size=100&cache=max-age%3D600";
    curl(&[&gw.url(path)]);
    let admin = |what: &str, body: &str| {
        let out = curl(&[
            "-X",
            "POST",
            "--json",
            body,
            &format!("http://{}/admin/cache/{what}", gw.admin),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(admin("snapshot", "").contains("\"entries\":1"));
    assert!(admin("corrupt", path).contains("corrupt"));
    let verify: serde_json::Value = serde_json::from_str(&admin("verify", "")).unwrap();
    assert_eq!(verify["corrupt"], 1, "{verify}");
    assert_eq!(verify["restored"], 1, "{verify}");
    assert_eq!(verify["bypassed"], false, "{verify}");
    for action in [
        "bypass cache, evict bad entries",
        "restore last good snapshot",
        "serve from cache again",
    ] {
        assert!(
            has_event(&gw, action),
            "{action}: {}",
            admin_json(&gw, "/admin/events")
        );
    }
    // The good copy came back from the snapshot: a hit, not a refetch.
    let again = String::from_utf8_lossy(&curl(&["-i", &gw.url(path)]).stdout).into_owned();
    assert!(
        again.contains("X-Cache: HIT") && again.ends_with(&"x".repeat(100)),
        "{again}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn health_json_and_metrics() {
    let (_o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    let gw = Gateway::start(&[origin], "", &runbook_config(node, ""));
    for _ in 0..20 {
        get_status(gw.data, "/m?size=10&cache=max-age%3D60");
    }
    // Probes on the data port are counted apart from traffic.
    for _ in 0..7 {
        assert_eq!(get_status(gw.data, "/health/ready"), 200);
    }
    std::thread::sleep(Duration::from_millis(400));
    let h = admin_json(&gw, "/health");
    assert_eq!(h["overall_status"], "healthy", "{h}");
    let names: Vec<&str> = h["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "memory",
            "dataplane",
            "cache",
            "upstream_primary",
            "upstream_fallback"
        ]
    );
    let c = &h["components"];
    assert!(c[0]["rss_bytes"].as_u64().unwrap() > 0 && c[0]["status"] == "ok");
    assert_eq!(
        (
            c[1]["backend"].as_str(),
            c[1]["ready"].as_bool(),
            c[1]["status"].as_str()
        ),
        (Some(expected_backend()), Some(true), Some("ok"))
    );
    assert!(c[1]["p99_ms"].is_number() && c[1]["error_rate"].is_number());
    assert_eq!(
        (c[2]["status"].as_str(), c[2]["entries"].as_u64()),
        (Some("ok"), Some(1))
    );
    assert_eq!(c[3]["servers"][0]["address"], origin.to_string());
    assert_eq!(
        (
            c[3]["status"].as_str(),
            c[3]["routed"].as_bool(),
            c[3]["fallback"].as_str()
        ),
        (Some("ok"), Some(true), Some("fallback"))
    );
    assert_eq!(
        (c[4]["status"].as_str(), c[4]["routed"].as_bool()),
        (Some("ok"), Some(false))
    );

    let text = String::from_utf8(curl(&[&format!("http://{}/metrics", gw.admin)]).stdout).unwrap();
    let mut samples = std::collections::HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        samples.insert(series.to_owned(), v);
    }
    assert!(
        samples["ultragate_requests_total{class=\"2xx\"}"] >= 20.0,
        "{text}"
    );
    assert!(
        samples["ultragate_cache_responses_total{result=\"hit\"}"] >= 19.0,
        "{text}"
    );
    assert_eq!(samples["ultragate_route{route=\"primary\"}"], 1.0);
    for backend in ["epoll", "io_uring", "dpdk"] {
        let series = format!("ultragate_dataplane_backend{{backend=\"{backend}\"}}");
        let serving = f64::from(u8::from(backend == expected_backend()));
        assert_eq!(samples[&series], serving, "{series}");
    }
    assert_eq!(samples["ultragate_probes_total"], 7.0);
    assert_eq!(
        samples["ultragate_requests_total{class=\"2xx\"}"], 20.0,
        "probes do not move the request counters"
    );
    assert_eq!(
        samples["ultragate_request_duration_seconds_count{route=\"default\",cache=\"hit\"}"],
        samples["ultragate_cache_responses_total{result=\"hit\"}"],
        "a histogram per cache result"
    );
    assert_eq!(
        samples["ultragate_request_duration_seconds_bucket{route=\"default\",cache=\"miss\",le=\"+Inf\"}"],
        1.0
    );
    let upstream =
        format!("ultragate_upstream_requests_total{{pool=\"primary\",server=\"{origin}\"}}");
    assert_eq!(samples[&upstream], 1.0, "{upstream}");
    assert!(samples["ultragate_client_received_bytes_total"] > 0.0);
    assert!(samples["ultragate_client_sent_bytes_total"] > 0.0);
    assert!(samples.contains_key("ultragate_window_request_duration_seconds{percentile=\"99\"}"));
    assert!(samples
        .keys()
        .any(|k| k.starts_with("ultragate_open_connections{core=")));
    assert!(samples
        .keys()
        .any(|k| k.starts_with("ultragate_build_info{")));
    assert!(samples.contains_key("process_resident_memory_bytes"));
    assert_eq!(
        samples["ultragate_decisions_total{decision=\"divert\"}"], 0.0,
        "present from start"
    );
    assert_eq!(
        samples["ultragate_config_reloads_total{result=\"rejected\"}"],
        0.0
    );
    assert!(samples["ultragate_memory_rss_bytes"] > 0.0);
    for help in [
        "# HELP ultragate_requests_total",
        "# TYPE ultragate_requests_total counter",
        "# TYPE ultragate_cache_bytes gauge",
        "# TYPE ultragate_request_duration_seconds histogram",
    ] {
        assert!(text.contains(help), "{help}");
    }
    // Clean by Prometheus' own linter (the test command installs it).
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package)");
    use std::io::Write as _;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every metric the Grafana dashboard queries is exported (but the TLS
    // listener's and the DPDK port's, which exist with `[tls]` or a DPDK
    // port only), and every panel's expression is PromQL that promtool
    // accepts: written as recording rules, Grafana's variables filled.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/k8s/monitoring/grafana-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().replace("$namespace", ".*"))
        .collect();
    assert!(exprs.len() >= 20, "{}", exprs.len());
    let mut queried = 0;
    for word in exprs
        .iter()
        .flat_map(|e| e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
    {
        if word.starts_with("ultragate_")
            && !word.starts_with("ultragate_tls_")
            && !word.starts_with("ultragate_dpdk_")
        {
            queried += 1;
            assert!(
                samples.keys().any(|k| k.split('{').next() == Some(word)),
                "the dashboard queries {word}, which /metrics does not export"
            );
        }
    }
    assert!(queried >= 20, "{queried}");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:panel_{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    let file = std::env::temp_dir().join(format!("ug-dashboard-rules-{}.yml", std::process::id()));
    std::fs::write(&file, rules).unwrap();
    let check = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (bench/scripts/test.sh installs it)");
    let _ = std::fs::remove_file(&file);
    assert!(
        check.status.success(),
        "promtool check rules on the dashboard's expressions: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // So does every metric an alert reads (but the TLS listener's, which
    // exists with `[tls]` only).
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/k8s/monitoring/alerts.rules.yml"),
    )
    .unwrap();
    let mut read = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("ultragate_") && !word.starts_with("ultragate_tls_") {
            read += 1;
            assert!(
                samples.keys().any(|k| k.split('{').next() == Some(word)),
                "an alert reads {word}, which /metrics does not export"
            );
        }
    }
    assert!(read >= 12, "{read}");
}

/// A primary whose fallback is another pool (`fallback = "legacy"`) is
/// diverted there when its server dies, judged by that pool's health, not
/// by `[upstream.fallback]`'s (nothing listens at its default address).
#[test]
fn a_primary_diverts_to_the_pool_it_names() {
    let (o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    let extra = format!(
        "fallback = \"legacy\"\nhealth_interval_ms = 100\nhealth_timeout_ms = 300\neject_after_failures = 1\n\n\
         [upstream.fallback]\nservers = [\"127.0.0.1:{}\"]\nhealth_interval_ms = 100\n\n\
         [upstream.legacy]\nservers = [\"{node}\"]\nhealth_interval_ms = 100\n\n\
         [control]\ninterval_ms = 100\nfailback_hold_ms = 1000\np99_threshold_ms = 200\n",
        free_port()
    );
    let gw = Gateway::start(&[origin], "", &extra);
    assert_eq!(get_status(gw.data, "/item?size=8"), 200);
    // `[upstream.fallback]` is seen down first.
    assert!(wait_for(Duration::from_secs(3), || admin_json(
        &gw, "/health"
    )["components"][4]["status"]
        == "down"));
    drop(o);
    assert!(
        wait_for(Duration::from_secs(3), || has_event(
            &gw,
            "divert to fallback"
        )),
        "{}",
        admin_json(&gw, "/admin/events")
    );
    let answer = String::from_utf8(curl(&["-i", &gw.url("/api/items")]).stdout).unwrap();
    assert!(answer.contains("x-served-by: nodejs-api"), "{answer}");
    let h = admin_json(&gw, "/health");
    assert_eq!(h["components"][3]["fallback"], "legacy", "{h}");
    assert_eq!(h["overall_status"], "degraded", "{h}");
}

/// `fallback = ""` on the primary: requests stay on it when its server
/// is down (a 502, not the Node.js service's answer), the runbook does not
/// divert it, an operator cannot (409), and `/health` says unhealthy.
#[test]
fn a_primary_without_a_fallback_keeps_its_requests() {
    let (o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    let extra = format!("fallback = \"\"\n{}", runbook_config(node, ""));
    let gw = Gateway::start(&[origin], "", &extra);
    assert_eq!(get_status(gw.data, "/item?size=8"), 200);
    drop(o);
    // Rounds of the runbook with the primary down.
    std::thread::sleep(Duration::from_millis(800));
    let answer = String::from_utf8(curl(&["-i", &gw.url("/api/items")]).stdout).unwrap();
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(!answer.contains("nodejs-api"), "{answer}");
    assert_eq!(admin_json(&gw, "/admin/route")["route"], "primary");
    assert!(
        !has_event(&gw, "divert to fallback"),
        "{}",
        admin_json(&gw, "/admin/events")
    );
    let url = format!("http://{}/admin/route", gw.admin);
    assert_eq!(status(&["-X", "POST", "--json", "fallback", &url]), 409);
    // Nothing can answer for the primary: unhealthy, though the Node.js
    // service (no fallback of it) is up.
    assert!(
        wait_for(Duration::from_secs(3), || admin_json(&gw, "/health")
            ["overall_status"]
            == "unhealthy"),
        "{}",
        admin_json(&gw, "/health")
    );
    let h = admin_json(&gw, "/health");
    assert_eq!(
        h["components"][3]["fallback"],
        serde_json::Value::Null,
        "{h}"
    );
}

#[test]
fn manual_route_override_and_config_reload() {
    let (_o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    // The file watch is off: this test reloads by hand.
    let gw = Gateway::start(&[origin], "", &runbook_config(node, "config_watch_ms = 0"));
    let out = curl(&[
        "-X",
        "POST",
        "--json",
        "fallback",
        &format!("http://{}/admin/route", gw.admin),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"route\":\"fallback\""));
    let body = String::from_utf8(curl(&["-i", &gw.url("/api/items")]).stdout).unwrap();
    assert!(
        body.contains("x-served-by: nodejs-api"),
        "diverted by hand: {body}"
    );
    curl(&[
        "-X",
        "POST",
        "--json",
        "{\"route\":\"auto\"}",
        &format!("http://{}/admin/route", gw.admin),
    ]);
    assert!(wait_for(Duration::from_secs(3), || admin_json(
        &gw,
        "/admin/route"
    )["route"]
        == "primary"));

    // A bad file is refused and the running config stays.
    let good = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(
        &gw.config,
        good.replace("[control]\n", "[control]\nbogus = 1\n"),
    )
    .unwrap();
    let out = curl(&[
        "-X",
        "POST",
        "-w",
        " %{http_code}",
        &format!("http://{}/admin/config/reload", gw.admin),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with(" 422") && text.contains("bogus"), "{text}");
    std::fs::write(
        &gw.config,
        good.replace("failback_hold_ms = 1000", "failback_hold_ms = 2000"),
    )
    .unwrap();
    let out = curl(&[
        "-X",
        "POST",
        &format!("http://{}/admin/config/reload", gw.admin),
    ]);
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        answer["applied"],
        serde_json::json!(["control.failback_hold_ms"])
    );
    assert_eq!(answer["needs_restart"], serde_json::json!([]));
    gw.proc.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        get_status(gw.data, "/still-serving"),
        200,
        "SIGHUP reloads, it does not stop"
    );
}

#[test]
fn a_primary_far_slower_than_its_peers_is_ejected() {
    let (_fast, fast) = origin(&[]);
    let (_slow, slow) = origin(&["--delay-ms", "40"]);
    let (_n, node) = nodejs();
    // Checks every 5 s: the test sees the ejection before a re-admission.
    let extra = format!(
        "health_interval_ms = 5000\n\n[upstream.fallback]\nservers = [\"{node}\"]\n\n[control]\ninterval_ms = 100\np99_threshold_ms = 10\np99_window_ms = 60000\n"
    );
    let gw = Gateway::start(&[fast, slow], "cores = [0]", &extra);
    for _ in 0..40 {
        assert_eq!(get_status(gw.data, "/item?size=10"), 200);
    }
    assert!(
        wait_for(Duration::from_secs(2), || has_event(
            &gw,
            "eject slow primary server"
        )),
        "{}",
        admin_json(&gw, "/admin/events")
    );
    let h = admin_json(&gw, "/health");
    let servers = &h["components"][3]["servers"];
    assert_eq!(servers[0]["healthy"], true, "{h}");
    assert_eq!(servers[1]["healthy"], false, "{h}");
    assert_eq!(h["route"], "primary", "the fast peer carries on");
}

#[test]
fn a_client_cannot_divert_the_gateway_with_urls_that_answer_500() {
    // The primary is one address (as a Kubernetes Service is); a client
    // asks for a URL that answers 500, again and again.
    let (_o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    let control = "[control]\ninterval_ms = 100\nfailback_hold_ms = 1000\n";
    let extra = format!(
        "health_interval_ms = 100\n\n[upstream.fallback]\nservers = [\"{node}\"]\n\n{control}"
    );
    let gw = Gateway::start(&[origin], "", &extra);
    for _ in 0..10 {
        assert_eq!(get_status(gw.data, "/x?status=500"), 500);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        admin_json(&gw, "/admin/route")["route"],
        "primary",
        "{}",
        admin_json(&gw, "/admin/events")
    );
    assert_eq!(get_status(gw.data, "/fine"), 200);
    let served = String::from_utf8(curl(&["-i", &gw.url("/fine")]).stdout).unwrap();
    assert!(!served.contains("nodejs-api"), "{served}");
}

/// Four clients of their own (source addresses in 127.0.0.0/8).
const CLIENTS: [[u8; 4]; 4] = [
    [127, 0, 0, 11],
    [127, 0, 0, 12],
    [127, 0, 0, 13],
    [127, 0, 0, 14],
];

/// Counts the timeline's events whose action is `action`.
fn events_of(gw: &Gateway, action: &str) -> usize {
    admin_json(gw, "/admin/events")["events"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|e| e["action"] == action).count())
}

#[test]
fn one_url_answering_500_from_several_clients_does_not_divert() {
    let (_o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    let control = "error_window_ms = 1000\nmin_requests = 5";
    let gw = Gateway::start(&[origin], "", &runbook_config(node, control));
    // About 60 req/s of one URL the origin answers with 500, from four
    // addresses, for three error windows.
    let (sent, failed) = load_from(
        gw.data,
        &CLIENTS,
        &["/status/500?status=500"],
        (Duration::from_millis(60), None),
        Duration::from_secs(3),
    );
    assert!(
        sent > 100 && failed.len() as u64 == sent,
        "{sent} {failed:?}"
    );
    assert_eq!(
        admin_json(&gw, "/admin/route")["route"],
        "primary",
        "{}",
        admin_json(&gw, "/admin/events")
    );
    assert_eq!(events_of(&gw, "divert to fallback"), 0);
}

#[test]
fn cache_hits_whose_heads_arrive_slowly_do_not_divert() {
    let (_o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    let control = "p99_threshold_ms = 20\np99_window_ms = 1000\nmin_requests = 5";
    let gw = Gateway::start(&[origin], "", &runbook_config(node, control));
    let hit = "/hit?cache=max-age%3D600";
    assert_eq!(get_status(gw.data, hit), 200);
    // Every head comes in two parts 60 ms apart, from four addresses,
    // for three P99 windows: every answer a HIT, none slow at the origin.
    let (sent, failed) = load_from(
        gw.data,
        &CLIENTS,
        &[hit],
        (Duration::from_millis(1), Some(Duration::from_millis(60))),
        Duration::from_secs(3),
    );
    assert!(sent > 100 && failed.is_empty(), "{sent} {failed:?}");
    assert_eq!(
        admin_json(&gw, "/admin/route")["route"],
        "primary",
        "{}",
        admin_json(&gw, "/admin/events")
    );
    assert_eq!(
        events_of(&gw, "divert to fallback"),
        0,
        "{}",
        admin_json(&gw, "/admin/events")
    );
}

#[test]
fn every_url_answering_500_diverts_within_the_error_window() {
    let (o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    let control = "error_window_ms = 1000\nmin_requests = 5\np99_threshold_ms = 200";
    let gw = Gateway::start(&[origin], "", &runbook_config(node, control));
    drop(o);
    // One client (the drill's shape): its errors are corroborated by the
    // gateway's own check of /health, which fails too.
    let _failing = origin_at(origin, &["--error-every", "1"]);
    let load = Load::start(gw.data, "/item?size=64", Duration::from_millis(5));
    assert!(
        wait_for(Duration::from_secs(3), || has_event(
            &gw,
            "divert to fallback"
        )),
        "diverted: {}",
        admin_json(&gw, "/admin/events")
    );
    load.finish();
}

#[test]
fn a_slow_origin_that_passes_its_checks_is_diverted_once_and_fails_back_when_fast() {
    let (o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    let control =
        "p99_threshold_ms = 20\np99_window_ms = 500\nmin_requests = 5\ncanary_share = 0.2";
    let gw = Gateway::start(&[origin], "", &runbook_config(node, control));
    drop(o);
    let slow = origin_at(origin, &["--delay-ms", "60", "--health-fast"]);
    let paths = ["/a?size=64", "/b?size=64", "/c?size=64", "/d?size=64"];
    let load = |secs| {
        load_from(
            gw.data,
            &CLIENTS,
            &paths,
            (Duration::from_millis(20), None),
            Duration::from_secs(secs),
        )
    };
    let (_, failed) = load(2);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(
        events_of(&gw, "divert to fallback"),
        1,
        "{}",
        admin_json(&gw, "/admin/events")
    );
    // Four hold-downs (1 s each) with the origin still slow: the canaries
    // say so, it stays diverted.
    let (_, failed) = load(4);
    assert!(
        failed.is_empty(),
        "no canary failure reached a client: {failed:?}"
    );
    let events = admin_json(&gw, "/admin/events");
    assert_eq!(events_of(&gw, "divert to fallback"), 1, "{events}");
    assert_eq!(events_of(&gw, "fail back to primary"), 0, "{events}");
    assert_eq!(admin_json(&gw, "/admin/route")["route"], "fallback");
    let metrics =
        String::from_utf8(curl(&[&format!("http://{}/metrics", gw.admin)]).stdout).unwrap();
    assert!(
        metrics.contains("ultragate_pool_diverted{mode=\"auto\",pool=\"primary\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("ultragate_route_flaps_total{pool=\"primary\"} 0"));
    // Fast again: back once the canaries show it.
    drop(slow);
    let _fast = origin_at(origin, &[]);
    let _ = load(4);
    let events = admin_json(&gw, "/admin/events");
    assert_eq!(events_of(&gw, "fail back to primary"), 1, "{events}");
    assert_eq!(events_of(&gw, "divert to fallback"), 1, "{events}");
}
