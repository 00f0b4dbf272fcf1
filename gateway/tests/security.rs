//! Admin calls from a peer that is not loopback, made real with a network
//! namespace the test creates (a veth pair; no other address is used).

mod support;

use std::process::Command;
use support::*;

/// A namespace with one end of a veth pair; removed on drop.
struct Netns {
    name: String,
    host_if: String,
}

impl Netns {
    /// Host side `10.213.N.1/24`, namespace side `10.213.N.2/24`.
    fn create(n: u8) -> Option<Netns> {
        let pid = std::process::id() % 100_000;
        // Named after the test's subnet too: the tests run in parallel.
        let ns = Netns {
            name: format!("ugt{pid}n{n}"),
            host_if: format!("ugh{pid}n{n}"),
        };
        let peer = format!("ugp{pid}n{n}");
        let host_ip = format!("10.213.{n}.1/24");
        let ns_ip = format!("10.213.{n}.2/24");
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &ns.name],
            vec![
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ],
            vec!["link", "set", &peer, "netns", &ns.name],
            vec!["addr", "add", &host_ip, "dev", &ns.host_if],
            vec!["link", "set", &ns.host_if, "up"],
            vec!["-n", &ns.name, "addr", "add", &ns_ip, "dev", &peer],
            vec!["-n", &ns.name, "link", "set", &peer, "up"],
            vec!["-n", &ns.name, "link", "set", "lo", "up"],
        ];
        for args in steps {
            let ok = Command::new("ip")
                .args(&args)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                eprintln!(
                    "cannot set up the test namespace (ip {args:?}): needs root and iproute2"
                );
                return None;
            }
        }
        Some(ns)
    }

    fn curl(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "curl",
                "-sS",
                "--max-time",
                "5",
                "-w",
                " %{http_code}",
            ])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn mutating_admin_call_from_outside_needs_the_token_and_is_audited() {
    // Needs root (the test command runs as root): without a namespace the
    // test fails rather than pass having checked nothing.
    let ns = Netns::create(7).expect("a network namespace (run the tests as root, with iproute2)");
    let (_o, origin) = origin(&[]);
    let audit = std::env::temp_dir().join(format!("ug-audit-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&audit);
    let extra = format!("[security]\naudit_log = \"{}\"\n", audit.display());
    let gw = Gateway::start_on("0.0.0.0", &[origin], "", "token = \"s3cret\"", &extra);
    let (data_port, admin_port) = (gw.data.port(), gw.admin.port());
    let admin = format!("http://10.213.7.1:{admin_port}");
    let refused = ns.curl(&["-X", "POST", &format!("{admin}/admin/cache/clear")]);
    assert!(refused.ends_with(" 403"), "{refused}");
    let data = ns.curl(&[
        "-X",
        "POST",
        &format!("http://10.213.7.1:{data_port}/admin/cache/clear"),
    ]);
    assert!(data.ends_with(" 403"), "data port: loopback only: {data}");
    let read_only = ns.curl(&[&format!("{admin}/health")]);
    assert!(read_only.ends_with(" 200"), "{read_only}");
    let with_token = ns.curl(&[
        "-X",
        "POST",
        "-H",
        "Authorization: Bearer s3cret",
        &format!("{admin}/admin/cache/clear"),
    ]);
    assert!(with_token.ends_with(" 200"), "{with_token}");
    let wrong = ns.curl(&[
        "-X",
        "POST",
        "-H",
        "Authorization: Bearer nope",
        &format!("{admin}/admin/cache/clear"),
    ]);
    assert!(wrong.ends_with(" 403"), "{wrong}");

    // Isolation: loopback only, token or not (and with a token
    // configured, loopback changes things with it).
    let out = curl(&[
        "-X",
        "POST",
        "-H",
        "Authorization: Bearer s3cret",
        &format!("http://127.0.0.1:{admin_port}/admin/security/isolate"),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"isolated\":true"));
    let isolated = ns.curl(&[
        "-X",
        "POST",
        "-H",
        "Authorization: Bearer s3cret",
        &format!("{admin}/admin/cache/clear"),
    ]);
    assert!(isolated.ends_with(" 403"), "{isolated}");
    curl(&[
        "-X",
        "POST",
        "-H",
        "Authorization: Bearer s3cret",
        &format!("http://127.0.0.1:{admin_port}/admin/security/normal"),
    ]);

    let log = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let refusals = lines
        .iter()
        .filter(|l| l["outcome"].as_str().unwrap().starts_with("refused"))
        .count();
    assert_eq!(refusals, 3, "{log}");
    assert!(
        lines
            .iter()
            .any(|l| l["peer"] == "10.213.7.2" && l["outcome"] == "status 200"),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["target"] == "/admin/security/isolate"),
        "{log}"
    );
    let _ = std::fs::remove_file(audit);
}

#[test]
fn admin_reads_need_the_token_off_loopback_and_the_token_is_never_shown() {
    // Needs root (the test command runs as root): without a namespace the
    // test fails rather than pass having checked nothing.
    let ns = Netns::create(8).expect("a network namespace (run the tests as root, with iproute2)");
    let (_o, origin) = origin(&[]);
    // The token comes from a file, as a mounted Kubernetes Secret gives it.
    let token_file = std::env::temp_dir().join(format!("ug-token-{}", std::process::id()));
    std::fs::write(&token_file, "fr0m-a-f1le\n").unwrap();
    let admin_keys = format!("token_file = \"{}\"", token_file.display());
    let gw = Gateway::start_on("0.0.0.0", &[origin], "", &admin_keys, "");
    let admin = format!("http://10.213.8.1:{}", gw.admin.port());

    for path in ["/admin/config", "/admin/events", "/admin/cache"] {
        let refused = ns.curl(&[&format!("{admin}{path}")]);
        assert!(
            refused.ends_with(" 403"),
            "GET {path} off loopback: {refused}"
        );
        assert!(!refused.contains("fr0m-a-f1le"), "{refused}");
    }
    for open in ["/health", "/metrics", "/health/live"] {
        let out = ns.curl(&[&format!("{admin}{open}")]);
        assert!(out.ends_with(" 200"), "{open} stays open: {out}");
    }
    let bearer = ["-H", "Authorization: Bearer fr0m-a-f1le"];
    let config = ns.curl(&[bearer[0], bearer[1], &format!("{admin}/admin/config")]);
    assert!(config.ends_with(" 200"), "the file's token works: {config}");
    assert!(
        !config.contains("fr0m-a-f1le"),
        "no response contains the token: {config}"
    );
    let prefix = ns.curl(&[
        "-H",
        "Authorization: Bearer fr0m",
        &format!("{admin}/admin/config"),
    ]);
    assert!(
        prefix.ends_with(" 403"),
        "a prefix of the token is refused: {prefix}"
    );
    let local = curl(&[&format!(
        "http://127.0.0.1:{}/admin/config",
        gw.admin.port()
    )]);
    let local = String::from_utf8_lossy(&local.stdout).into_owned();
    assert!(
        local.contains("token_file") && !local.contains("fr0m-a-f1le"),
        "{local}"
    );
    let metrics = curl(&[&format!("http://127.0.0.1:{}/metrics", gw.admin.port())]);
    assert!(!String::from_utf8_lossy(&metrics.stdout).contains("fr0m-a-f1le"));

    // The Secret is rotated (same file name, new token): a reload takes
    // it, the old token stops working, and nothing shows either.
    std::fs::write(&token_file, "r0tat3d-t0ken\n").unwrap();
    gw.proc.signal(libc::SIGHUP);
    let rotated = ["-H", "Authorization: Bearer r0tat3d-t0ken"];
    assert!(
        wait_for(std::time::Duration::from_secs(5), || ns
            .curl(&[rotated[0], rotated[1], &format!("{admin}/admin/config")])
            .ends_with(" 200")),
        "the rotated token works after the reload"
    );
    let old = ns.curl(&[bearer[0], bearer[1], &format!("{admin}/admin/config")]);
    assert!(old.ends_with(" 403"), "the old token is refused: {old}");
    let events = curl(&[&format!(
        "http://127.0.0.1:{}/admin/events",
        gw.admin.port()
    )]);
    let events = String::from_utf8_lossy(&events.stdout).into_owned();
    assert!(
        events.contains("admin.token_file") && !events.contains("r0tat3d"),
        "{events}"
    );
    drop(gw);
    let _ = std::fs::remove_file(token_file);
}

#[test]
fn an_inline_token_is_redacted_and_a_bad_token_file_names_the_key() {
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start_on("127.0.0.1", &[origin], "", "token = \"inl1ne-s3cret\"", "");
    let out = curl(&[&format!(
        "http://127.0.0.1:{}/admin/config",
        gw.admin.port()
    )]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("token = \"<redacted>\"") && !text.contains("inl1ne-s3cret"),
        "{text}"
    );
    let bad = std::env::temp_dir().join(format!("ug-bad-token-{}.toml", std::process::id()));
    std::fs::write(
        &bad,
        "[upstream.primary]\nservers = [\"127.0.0.1:9\"]\n\n[admin]\ntoken_file = \"/nonexistent/token\"\n",
    )
    .unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_ultragate"))
        .args(["--check-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(
        !check.status.success() && err.contains("admin.token_file"),
        "{err}"
    );
    let _ = std::fs::remove_file(bad);
}

#[test]
fn the_admin_port_bounds_slow_heads_and_connections() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(&[origin], "", "");
    // Every slot taken by a client that never finishes its head.
    let mut slow: Vec<TcpStream> = (0..256)
        .map(|_| {
            let mut s = TcpStream::connect(gw.admin).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut over = TcpStream::connect(gw.admin).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = over.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut buf = [0u8; 64];
    assert!(
        matches!(over.read(&mut buf), Ok(0) | Err(_)),
        "over the limit: closed without an answer"
    );
    // The slow heads are dropped after the header read timeout.
    let started = Instant::now();
    let s = &mut slow[0];
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "closed within the header timeout"
    );
    drop(slow);
    assert!(
        wait_for(Duration::from_secs(5), || {
            let out = curl(&[&format!("http://{}/health", gw.admin)]);
            out.status.success()
        }),
        "the admin port serves again"
    );
}

#[test]
fn admin_calls_only_on_purpose_a_foreign_host_or_a_web_page_is_refused() {
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start_on(
        "127.0.0.1",
        &[origin],
        "",
        "hosts = [\"gw.internal\"]\n",
        "",
    );
    let admin = format!("http://{}", gw.admin);
    // DNS rebinding: a page's own name pointed at the node.
    for base in [admin.clone(), format!("http://{}", gw.data)] {
        assert_eq!(
            status(&["-H", "Host: evil.example", &format!("{base}/admin/config")]),
            421,
            "{base}"
        );
    }
    assert_eq!(
        status(&[
            "-H",
            &format!("Host: gw.internal:{}", gw.admin.port()),
            &format!("{admin}/admin/config")
        ]),
        200,
        "a name in [admin] hosts"
    );
    // A cross-site form post: refused, the route stays.
    assert_eq!(
        status(&[
            "-X",
            "POST",
            "-H",
            "Origin: http://evil.example",
            "-H",
            "Content-Type: text/plain",
            "-d",
            "fallback",
            &format!("{admin}/admin/route"),
        ]),
        403
    );
    // The same without Origin (a browser that does not send it, a page
    // served from a file): a form's Content-Type is not an admin call's.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        for base in [admin.clone(), format!("http://{}", gw.data)] {
            let url = format!("{base}/admin/route");
            let ct = format!("Content-Type: {ct}");
            assert_eq!(
                status(&["-X", "POST", "-H", &ct, "-d", "fallback", &url]),
                415,
                "{url} {ct}"
            );
        }
    }
    let purge = format!("{admin}/admin/cache/purge");
    assert_eq!(
        status(&["-d", "{\"prefix\":\"/\"}", &purge]),
        415,
        "curl -d is a form"
    );
    assert_eq!(admin_json(&gw, "/admin/route")["route"], "primary");
    // JSON, or the custom field, is on purpose.
    assert_eq!(status(&["--json", "{\"prefix\":\"/\"}", &purge]), 202);
    let custom = [
        "-H",
        "X-Ultragate-Admin: 1",
        "-d",
        "{\"prefix\":\"/\"}",
        &purge,
    ];
    assert_eq!(status(&custom), 202);
    assert_eq!(admin_json(&gw, "/admin/route")["route"], "primary");
    assert_eq!(
        status(&[
            "-X",
            "POST",
            "-H",
            "Sec-Fetch-Site: cross-site",
            &format!("{admin}/admin/cache/clear"),
        ]),
        403
    );
    // The runbook's commands, as written, still work.
    assert_eq!(
        status(&[
            "-X",
            "POST",
            &format!("http://localhost:{}/admin/cache/clear", gw.admin.port())
        ]),
        200
    );
    assert_eq!(
        status(&[&format!("http://localhost:{}/health", gw.admin.port())]),
        200
    );
}

#[test]
fn with_a_token_loopback_changes_need_it_too_unless_loopback_is_trusted() {
    let (_o, origin) = origin(&[]);
    let clear = |gw: &Gateway, auth: Option<&str>| {
        let url = format!("http://{}/admin/cache/clear", gw.admin);
        let data = format!("http://{}/admin/cache/clear", gw.data);
        let header = auth.map(|t| format!("Authorization: Bearer {t}"));
        let mut args = vec!["-X", "POST"];
        if let Some(h) = &header {
            args.extend(["-H", h.as_str()]);
        }
        let admin_port = status(&[args.as_slice(), &[url.as_str()]].concat());
        let data_port = status(&[args.as_slice(), &[data.as_str()]].concat());
        (admin_port, data_port)
    };
    // A sidecar or a browser on the node is loopback too.
    let gw = Gateway::start_on("127.0.0.1", &[origin], "", "token = \"s3cret-token\"\n", "");
    assert_eq!(clear(&gw, None), (403, 403));
    assert_eq!(clear(&gw, Some("wrong")), (403, 403));
    assert_eq!(clear(&gw, Some("s3cret-token")), (200, 200));
    assert_eq!(
        status(&[&format!("http://{}/admin/config", gw.admin)]),
        200,
        "reads from loopback need no token"
    );
    drop(gw);
    // Explicitly trusted: the runbook's command as written.
    let gw = Gateway::start_on(
        "127.0.0.1",
        &[origin],
        "",
        "token = \"s3cret-token\"\nloopback_trust = true\n",
        "",
    );
    assert_eq!(clear(&gw, None), (200, 200));
}

#[test]
fn one_connection_cannot_flood_the_audit_log() {
    let (_o, origin) = origin(&[]);
    let audit = std::env::temp_dir().join(format!("ug-audit-flood-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&audit);
    let extra = format!("[security]\naudit_log = \"{}\"\n", audit.display());
    let gw = Gateway::start(&[origin], "", &extra);
    // 2,000 refused calls with long targets, pipelined on one connection.
    let one = format!(
        "POST /admin/cache/clear?{} HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        "x".repeat(4000)
    );
    let mut flood = one.repeat(2000);
    flood.push_str("GET /admin/config HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n");
    raw_exchange(
        gw.admin,
        flood.as_bytes(),
        std::time::Duration::from_secs(20),
    );
    std::thread::sleep(std::time::Duration::from_millis(1200));
    // A call after a second: the notice of what was dropped, then it.
    curl(&[
        "-X",
        "POST",
        "-H",
        "Host: evil.example",
        &format!("http://{}/admin/cache/clear", gw.admin),
    ]);
    let log = std::fs::read_to_string(&audit).unwrap_or_default();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.len() <= 40,
        "{} lines, {} bytes",
        lines.len(),
        log.len()
    );
    assert!(log.len() < 40 * 1024, "{} bytes", log.len());
    let dropped: u64 = lines
        .iter()
        .filter(|l| l["audit"] == "dropped")
        .map(|l| l["lines"].as_u64().unwrap())
        .sum();
    assert!(dropped > 1900, "the drops are said: {log}");
    let _ = std::fs::remove_file(audit);
}

#[test]
fn one_address_gets_at_most_its_connections_and_the_rest_a_503() {
    use std::io::{Read, Write};
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(
        &[origin],
        "cores = [0]\nmax_connections_per_client = 3\n",
        "",
    );
    // Three idle connections held (half-open handshakes cost the same).
    let held: Vec<_> = (0..3)
        .map(|_| connect_from([127, 0, 0, 5], gw.data).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut fourth = connect_from([127, 0, 0, 5], gw.data).unwrap();
    fourth
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let _ = fourth.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut answer = Vec::new();
    let _ = fourth.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // Another address is served.
    assert_eq!(get_from([127, 0, 0, 6], gw.data, "/", None), 200);
    let metrics = String::from_utf8_lossy(&curl(&[&format!("http://{}/metrics", gw.admin)]).stdout)
        .into_owned();
    assert!(
        wait_for(std::time::Duration::from_secs(3), || {
            String::from_utf8_lossy(&curl(&[&format!("http://{}/metrics", gw.admin)]).stdout)
                .contains("ultragate_connections_refused_total{reason=\"per_client\"} 1")
        }),
        "{metrics}"
    );
    // One closes: the address may open one again.
    drop(held);
    assert!(wait_for(std::time::Duration::from_secs(3), || get_from(
        [127, 0, 0, 5],
        gw.data,
        "/",
        None
    ) == 200));
}
