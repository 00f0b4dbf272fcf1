//! The operator's kit end to end: the access log, request ids and trace
//! context at the origin, the runbook's security config, decision
//! webhooks.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ug-obs-{name}-{}", std::process::id()))
}

/// The access log's lines, parsed, once `n` are there.
fn lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let mut got = Vec::new();
    wait_for(Duration::from_secs(5), || {
        got = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        got.len() >= n
    });
    got
}

const FIELDS: &[&str] = &[
    "time",
    "client",
    "method",
    "host",
    "target",
    "protocol",
    "status",
    "request_bytes",
    "response_bytes",
    "cache",
    "route",
    "pool",
    "upstream",
    "attempts",
    "head_us",
    "cache_us",
    "connect_us",
    "upstream_first_byte_us",
    "total_us",
    "request_id",
    "traceparent",
    "user_agent",
    "referer",
];

fn has_every_field(line: &serde_json::Value) {
    for f in FIELDS {
        assert!(line.get(f).is_some(), "{f} missing in {line}");
    }
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
    assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1:"));
}

#[test]
fn an_access_log_line_per_request_for_a_hit_a_miss_a_retry_and_a_502() {
    let (_o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    let log = temp("access");
    let _ = std::fs::remove_file(&log);
    let extra = format!("\n[log]\naccess = \"{}\"\n", log.display());
    let gw = Gateway::start(&[origin], "", &extra);

    let url = gw.url("/a?size=10&cache=max-age%3D60");
    let agent = format!("bot/1 \"{}\"", "x".repeat(400));
    assert_eq!(
        status(&["-A", &agent, "-e", "http://r.example/é", &url]),
        200
    ); // miss
    assert_eq!(status(&[&url]), 200); // hit
    assert_eq!(status(&[&gw.url("/g?garbage=1")]), 502);
    let got = lines(&log, 3);
    assert_eq!(got.len(), 3, "{got:?}");
    for l in &got {
        has_every_field(l);
    }
    let (miss, hit, bad) = (&got[0], &got[1], &got[2]);
    assert_eq!(
        (miss["cache"].as_str(), miss["status"].as_u64()),
        (Some("miss"), Some(200))
    );
    assert_eq!(miss["upstream"], origin.to_string());
    assert_eq!(miss["attempts"], 1);
    assert!(miss["connect_us"].is_u64() && miss["upstream_first_byte_us"].is_u64());
    assert_eq!(miss["target"], "/a?size=10&cache=max-age%3D60");
    assert_eq!(miss["protocol"], "HTTP/1.1");
    assert_eq!(miss["route"], "default");
    assert_eq!(miss["pool"], "primary");
    let logged = miss["user_agent"].as_str().unwrap();
    assert!(
        logged.starts_with("bot/1 \"xx") && logged.len() == 256,
        "bounded: {logged}"
    );
    assert_eq!(miss["referer"], "http://r.example/é");
    assert_eq!(
        hit["pool"],
        serde_json::Value::Null,
        "no upstream for a hit"
    );
    assert_eq!(
        hit["user_agent"].as_str().map(|a| a.starts_with("curl/")),
        Some(true)
    );
    assert_eq!(
        (hit["cache"].as_str(), hit["upstream"].is_null()),
        (Some("hit"), true)
    );
    assert!(hit["connect_us"].is_null());
    assert_eq!(bad["status"], 502);
    assert_ne!(miss["request_id"], hit["request_id"]);

    // A primary that refuses: the request is retried on the fallback.
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log2 = temp("access-retry");
    let _ = std::fs::remove_file(&log2);
    let extra = format!(
        "\n[upstream.fallback]\nservers = [\"{node}\"]\n\n[log]\naccess = \"{}\"\n",
        log2.display()
    );
    let gw2 = Gateway::start(&[dead], "", &extra);
    assert_eq!(status(&[&gw2.url("/api/items")]), 200);
    let retry = &lines(&log2, 1)[0];
    has_every_field(retry);
    assert_eq!(retry["attempts"], 2, "{retry}");
    assert_eq!(retry["upstream"], node.to_string(), "{retry}");
    assert_eq!(retry["pool"], "fallback", "as routed: {retry}");
    let _ = std::fs::remove_file(log);
    let _ = std::fs::remove_file(log2);
}

#[test]
fn request_id_and_traceparent_reach_the_origin_and_the_client() {
    let (_o, origin) = origin(&[]);
    let log = temp("ids");
    let _ = std::fs::remove_file(&log);
    let gw = Gateway::start(
        &[origin],
        "",
        &format!("\n[log]\naccess = \"{}\"\n", log.display()),
    );
    // Sent by the client: propagated as they are.
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let out = curl(&[
        "-i",
        "-H",
        "X-Request-Id: rq-42",
        "-H",
        &format!("traceparent: {trace}"),
        &gw.url("/echo"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("X-Request-Id: rq-42\r\n"), "{text}");
    let (head, echoed) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("X-Request-Id: rq-42"),
        "on the response: {head}"
    );
    assert!(
        echoed.contains("X-Request-Id: rq-42\r\n")
            && echoed.contains(&format!("traceparent: {trace}\r\n")),
        "at the origin: {echoed}"
    );
    // Not sent (or invalid): made up, sent upstream once, returned.
    let out = curl(&["-i", "-H", "traceparent: garbage", &gw.url("/echo")]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, echoed) = text.split_once("\r\n\r\n").unwrap();
    let id = head
        .lines()
        .find_map(|l| l.strip_prefix("X-Request-Id: "))
        .expect("an id on the response");
    assert_eq!(id.len(), 32);
    assert!(
        echoed.contains(&format!("X-Request-Id: {id}\r\n")),
        "{echoed}"
    );
    assert_eq!(echoed.matches("traceparent:").count(), 1, "{echoed}");
    assert!(!echoed.contains("garbage"), "{echoed}");
    let got = lines(&log, 2);
    assert_eq!(got[0]["request_id"], "rq-42");
    assert_eq!(got[0]["traceparent"], trace);
    assert_eq!(got[1]["request_id"], id);
    assert!(echoed.contains(got[1]["traceparent"].as_str().unwrap()));
    let _ = std::fs::remove_file(log);
}

fn check_config(file: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ultragate"))
        .arg("--check-config")
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn the_runbooks_config_snippets_are_accepted_as_drop_ins_and_log_all_requests_to_the_audit_log() {
    let dir = temp("runbook");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, snippet) in [
        "[api_gateway]\nenable_dpdk = false\n",
        "[security]\nenable_audit_logging = true\nlog_all_requests = true\n",
    ]
    .iter()
    .enumerate()
    {
        // Alone, a snippet names no servers: refused, naming the key,
        // rather than sending every request to the default address.
        let file = dir.join(format!("snippet-{i}.toml"));
        std::fs::write(&file, snippet).unwrap();
        let out = check_config(&file);
        assert!(
            !out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains("upstream.primary.servers"),
            "{snippet}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // As a drop-in over the main file (its own ConfigMap key): valid.
        let main = dir.join(format!("main-{i}.toml"));
        let drop_ins = dir.join(format!("conf-{i}.d"));
        std::fs::create_dir_all(&drop_ins).unwrap();
        std::fs::write(drop_ins.join("50-runbook.toml"), snippet).unwrap();
        std::fs::write(
            &main,
            format!(
                "[include]\nfiles = [\"conf-{i}.d/*.toml\"]\n\n[upstream.primary]\nservers = [\"127.0.0.1:9\"]\n"
            ),
        )
        .unwrap();
        let out = check_config(&main);
        assert!(
            out.status.success(),
            "{snippet}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The security step applied by a reload, as the runbook patches the
    // ConfigMap.
    let (_o, origin) = origin(&[]);
    let audit = dir.join("audit.log");
    let gw = Gateway::start(
        &[origin],
        "",
        &format!(
            "\n[control]\nconfig_watch_ms = 0\n\n[security]\naudit_log = \"{}\"\n",
            audit.display()
        ),
    );
    let text = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(
        &gw.config,
        text.replace(
            "[security]\n",
            "[security]\nenable_audit_logging = true\nlog_all_requests = true\n",
        ),
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
        serde_json::json!(["security.log_all_requests"]),
        "{answer}"
    );
    assert_eq!(status(&[&gw.url("/logged?size=3")]), 200);
    let mut audited = String::new();
    assert!(
        wait_for(Duration::from_secs(5), || {
            audited = std::fs::read_to_string(&audit).unwrap_or_default();
            audited.contains("\"target\":\"/logged?size=3\"")
        }),
        "{audited}"
    );
    assert!(
        audited.contains("\"outcome\":\"status 200\""),
        "the reload call is audited too: {audited}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// An HTTP receiver that keeps every POST body; `answer` false makes it
/// accept and never answer (a dead receiver).
fn receiver(answer: bool) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        let end = Instant::now() + Duration::from_secs(60);
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            if Instant::now() > end {
                return;
            }
            if !answer {
                held.push(s);
                continue;
            }
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = s.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        keep.lock().unwrap().push(body.to_owned());
                        break;
                    }
                }
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    (addr, got)
}

fn kill_primary_config(
    node: std::net::SocketAddr,
    hook: std::net::SocketAddr,
    timeout_ms: u64,
) -> String {
    format!(
        "health_interval_ms = 100\nhealth_timeout_ms = 300\neject_after_failures = 1\n\n\
         [upstream.fallback]\nservers = [\"{node}\"]\nhealth_interval_ms = 100\n\n\
         [control]\ninterval_ms = 100\nfailback_hold_ms = 1000\np99_threshold_ms = 200\n\n\
         [notify]\nwebhook_url = \"http://{hook}/hooks/ultragate\"\ntimeout_ms = {timeout_ms}\nmin_interval_ms = 0\n"
    )
}

#[test]
fn the_webhook_hears_the_divert_and_the_fail_back_in_order() {
    let (o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    let (hook, got) = receiver(true);
    let gw = Gateway::start(&[origin], "", &kill_primary_config(node, hook, 2000));
    std::thread::sleep(Duration::from_millis(300));
    drop(o);
    assert!(wait_for(Duration::from_secs(2), || has_event(
        &gw,
        "divert to fallback"
    )));
    let _o2 = origin_at(origin, &[]);
    assert!(wait_for(Duration::from_secs(6), || has_event(
        &gw,
        "fail back to primary"
    )));
    let mut actions = Vec::new();
    assert!(wait_for(Duration::from_secs(5), || {
        actions = got
            .lock()
            .unwrap()
            .iter()
            .map(|b| serde_json::from_str::<serde_json::Value>(b).unwrap())
            .filter(|v| {
                v["action"] == "divert to fallback" || v["action"] == "fail back to primary"
            })
            .collect();
        actions.len() >= 2
    }));
    assert_eq!(actions[0]["action"], "divert to fallback", "{actions:?}");
    assert_eq!(actions[1]["action"], "fail back to primary", "{actions:?}");
    for a in &actions {
        for f in [
            "source",
            "pod",
            "time_unix_ms",
            "trigger",
            "value",
            "result",
        ] {
            assert!(a.get(f).is_some(), "{f} in {a}");
        }
    }
    let metrics = String::from_utf8_lossy(&curl(&[&format!("http://{}/metrics", gw.admin)]).stdout)
        .into_owned();
    assert!(
        !metrics.contains("ultragate_webhook_notifications_total{result=\"sent\"} 0"),
        "{metrics}"
    );
}

#[test]
fn a_dead_webhook_receiver_does_not_slow_the_divert() {
    let (o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    let (hook, _) = receiver(false);
    let gw = Gateway::start(&[origin], "", &kill_primary_config(node, hook, 300));
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    drop(o);
    assert!(
        wait_for(Duration::from_secs(1), || has_event(
            &gw,
            "divert to fallback"
        )),
        "diverted within 1 s of the kill, receiver dead: {}",
        admin_json(&gw, "/admin/events")
    );
    eprintln!("divert {:?} after the kill", killed.elapsed());
    // The failures are said in the timeline (after the retries) and counted.
    assert!(wait_for(Duration::from_secs(8), || {
        admin_json(&gw, "/admin/events")["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["trigger"] == "notify_failed"))
    }));
    let metrics = String::from_utf8_lossy(&curl(&[&format!("http://{}/metrics", gw.admin)]).stdout)
        .into_owned();
    assert!(
        !metrics.contains("ultragate_webhook_notifications_total{result=\"failed\"} 0"),
        "{metrics}"
    );
}

#[test]
fn sigusr1_reopens_the_access_log_after_a_rotation() {
    let (_o, origin) = origin(&[]);
    let log = temp("rotate");
    let rotated = temp("rotate.1");
    let _ = std::fs::remove_file(&log);
    let gw = Gateway::start(
        &[origin],
        "",
        &format!("\n[log]\naccess = \"{}\"\n", log.display()),
    );
    assert_eq!(status(&[&gw.url("/before?size=1")]), 200);
    assert_eq!(lines(&log, 1).len(), 1);
    // logrotate: move the file, then tell the gateway.
    std::fs::rename(&log, &rotated).unwrap();
    gw.proc.signal(libc::SIGUSR1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(status(&[&gw.url("/after?size=1")]), 200);
    let after = lines(&log, 1);
    assert_eq!(after.len(), 1, "a new file after the signal");
    assert_eq!(after[0]["target"], "/after?size=1");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("/before") && !old.contains("/after"), "{old}");
    let _ = std::fs::remove_file(log);
    let _ = std::fs::remove_file(rotated);
}

#[test]
fn the_process_log_is_json_lines_without_colours_off_a_terminal() {
    let (_o, origin) = origin(&[]);
    let config = temp("json-log.toml");
    let (data, admin) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!("[api_gateway]\nlisten = \"127.0.0.1:{data}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[upstream.primary]\nservers = [\"{origin}\"]\n"),
    )
    .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ultragate"))
        .args(["--config", config.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .env_remove("ULTRAGATE_LOG")
        .spawn()
        .unwrap();
    wait_listening(
        std::net::SocketAddr::from(([127, 0, 0, 1], admin)),
        "ultragate",
    );
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!text.contains('\x1b'), "no ANSI escapes: {text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 3, "{text}");
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{l}");
    }
    let _ = std::fs::remove_file(config);
}
