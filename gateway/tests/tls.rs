//! HTTPS on the TLS listener, end to end: a throwaway CA made here, curl
//! and a rustls client against the real gateway in front of a real origin.

mod support;

use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::ca::Ca;
use support::*;

/// The `[tls]` section: a listener on `port` with the given certificates.
/// It follows `[upstream.primary]`, whose fallback it turns off: on a
/// loaded machine the runbook would divert a slow primary to the default
/// fallback (nothing listens there), and these tests are about TLS.
fn tls_section(port: u16, certs: &[(PathBuf, PathBuf)], extra: &str) -> String {
    let mut s = format!(
        "fallback = \"\"\n\n[tls]\nlisten = \"127.0.0.1:{port}\"\nhandshake_timeout_ms = 500\n{extra}\n"
    );
    for (crt, key) in certs {
        s += &format!(
            "[[tls.certificate]]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            crt.display(),
            key.display()
        );
    }
    s
}

/// Starts the gateway with `[tls]` on a free port; returns it and the
/// TLS address.
fn start(origin: SocketAddr, certs: &[(PathBuf, PathBuf)], extra: &str) -> (Gateway, SocketAddr) {
    let port = free_port();
    let gw = Gateway::start(&[origin], "", &tls_section(port, certs, extra));
    let tls = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(tls, "the TLS listener");
    (gw, tls)
}

/// curl over TLS to `name` (resolved to `tls`), trusting the CA: the
/// verbose log and the body.
fn curl_tls(ca: &Ca, tls: SocketAddr, name: &str, path: &str, args: &[&str]) -> (String, String) {
    let resolve = format!("{name}:{}:127.0.0.1", tls.port());
    let url = format!("https://{name}:{}{path}", tls.port());
    let ca_file = ca.ca_file();
    let mut all = vec!["-v", "-i", "--cacert", &ca_file, "--resolve", &resolve];
    all.extend(args);
    all.push(&url);
    let out = curl(&all);
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// One GET over a new TLS connection with rustls: the status and the
/// common name of the certificate served.
fn https_get(
    cfg: &Arc<rustls::ClientConfig>,
    tls: SocketAddr,
    name: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let server = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(cfg.clone(), server).map_err(|e| e.to_string())?;
    let sock =
        TcpStream::connect_timeout(&tls, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut s = rustls::StreamOwned::new(conn, sock);
    let req = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    match s.read_to_end(&mut body) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !body.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&body);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {text:?}"))?;
    let der = &s.conn.peer_certificates().ok_or("no certificate")?[0];
    let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    let cn = x
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or("")
        .to_owned();
    Ok((status, cn))
}

/// Whether `site.test` is served with certificate `cn` within 5 s.
fn serves_soon(client: &Arc<rustls::ClientConfig>, tls: SocketAddr, cn: &str) -> bool {
    wait_for(Duration::from_secs(5), || {
        https_get(client, tls, "site.test", "/").is_ok_and(|(_, got)| got == cn)
    })
}

/// Updates a Secret volume at `live` as the kubelet does: `..data` swapped
/// in one rename to point at the directory of `crt`.
fn update_secret(live: &std::path::Path, crt: &std::path::Path) {
    let next = live.join("..data_tmp");
    std::os::unix::fs::symlink(crt.parent().unwrap(), &next).unwrap();
    std::fs::rename(&next, live.join("..data")).unwrap();
}

/// The `tls` component of a `/health` answer.
fn tls_component(health: &serde_json::Value) -> serde_json::Value {
    health["components"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "tls"))
        .cloned()
        .unwrap_or_else(|| panic!("no tls component in {health}"))
}

/// A metric's value from `/metrics` (0 when absent).
fn metric(gw: &Gateway, series: &str) -> f64 {
    let out = curl(&[&format!("http://{}/metrics", gw.admin)]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[test]
fn curl_gets_the_sni_certificate_over_tls_1_2_and_1_3_resumes_and_hits_the_cache() {
    let ca = Ca::new("curl");
    let a = ca.leaf("a", "a.test", &["a.test"]);
    let b = ca.leaf("b", "wild.b.test", &["*.b.test"]);
    let (_o, origin) = origin(&[]);
    let (gw, tls) = start(origin, &[a, b], "");

    for (version, max) in [("--tlsv1.2", "1.2"), ("--tlsv1.3", "1.3")] {
        let (log, out) = curl_tls(
            &ca,
            tls,
            "a.test",
            "/v?size=1024&cache=max-age=60",
            &[version, "--tls-max", max],
        );
        assert!(out.starts_with("HTTP/1.1 200"), "{log}\n{out}");
        assert!(log.contains(&format!("TLSv{max}")), "{log}");
        assert!(log.contains("CN=a.test"), "{log}");
        assert!(log.contains("ALPN: server accepted http/1.1"), "{log}");
    }
    // SNI picks the wildcard certificate; an unknown name gets the first.
    let (log, _) = curl_tls(&ca, tls, "x.b.test", "/", &[]);
    assert!(log.contains("CN=wild.b.test"), "{log}");
    let (log, _) = curl_tls(&ca, tls, "other.test", "/", &["-k"]);
    assert!(log.contains("CN=a.test"), "{log}");

    // The third request for the same URL is a cache hit, over TLS.
    let (_, out) = curl_tls(&ca, tls, "a.test", "/v?size=1024&cache=max-age=60", &[]);
    assert!(out.to_ascii_lowercase().contains("x-cache: hit"), "{out}");
    // Not on the plain port: the scheme is in the key (the origin is told
    // it, and may answer each differently).
    let host = format!("Host: a.test:{}", tls.port());
    let plain = String::from_utf8(
        curl(&["-i", "-H", &host, &gw.url("/v?size=1024&cache=max-age=60")]).stdout,
    )
    .unwrap();
    assert!(
        plain.to_ascii_lowercase().contains("x-cache: miss"),
        "{plain}"
    );
    // The origin is told the scheme, whatever the client claims.
    let (_, out) = curl_tls(
        &ca,
        tls,
        "a.test",
        "/echo",
        &["-H", "X-Forwarded-Proto: http"],
    );
    assert!(out.contains("\r\nX-Forwarded-Proto: https\r\n"), "{out}");
    assert!(!out.contains("X-Forwarded-Proto: http\r\n"), "{out}");
    let plain = String::from_utf8(curl(&["-i", &gw.url("/echo")]).stdout).unwrap();
    assert!(plain.contains("\r\nX-Forwarded-Proto: http\r\n"), "{plain}");

    // Large bodies both ways: 4 MiB down (many records, the queue ahead
    // of the socket full and drained again), 256 KiB up to /echo.
    let big = ca.dir.join("big.out");
    let (log, _) = curl_tls(
        &ca,
        tls,
        "a.test",
        "/big?size=4194304&cache=no-store",
        &["-o", big.to_str().unwrap()],
    );
    let got = std::fs::read(&big).unwrap_or_default();
    let body_at = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |p| p + 4);
    assert_eq!(got.len() - body_at, 4 << 20, "{log}");
    let upload = ca.dir.join("up.bin");
    std::fs::write(&upload, vec![b'u'; 256 << 10]).unwrap();
    let data = format!("@{}", upload.display());
    let (_, out) = curl_tls(
        &ca,
        tls,
        "a.test",
        "/echo",
        &[
            "--data-binary",
            &data,
            "-H",
            "Content-Type: application/octet-stream",
        ],
    );
    assert!(
        out.starts_with("HTTP/1.1 200"),
        "{}",
        &out[..out.len().min(300)]
    );
    assert!(
        out.ends_with(&"u".repeat(256 << 10)),
        "the body came back whole"
    );

    // Two URLs in one curl, each on its own connection: the second resumes.
    let url = format!("https://a.test:{}/", tls.port());
    let resolve = format!("a.test:{}:127.0.0.1", tls.port());
    for version in ["--tlsv1.2", "--tlsv1.3"] {
        let max = &version[6..];
        let out = curl(&[
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "--cacert",
            &ca.ca_file(),
            "--resolve",
            &resolve,
            "-H",
            "Connection: close",
            version,
            "--tls-max",
            max,
            &url,
            &url,
        ]);
        assert!(out.status.success(), "{out:?}");
    }
    assert!(
        wait_for(Duration::from_secs(3), || metric(
            &gw,
            "ultragate_tls_handshakes_total{kind=\"resumed\"}"
        ) >= 2.0),
        "resumed handshakes: {}",
        metric(&gw, "ultragate_tls_handshakes_total{kind=\"resumed\"}")
    );
    let health = admin_json(&gw, "/health");
    let tls_health = tls_component(&health);
    assert_eq!(tls_health["status"], "ok", "{tls_health}");
    assert_eq!(
        tls_health["certificates"][1]["names"][0], "*.b.test",
        "{tls_health}"
    );
    let out = curl(&[&format!("http://{}/metrics", gw.admin)]);
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("ultragate_tls_certificate_expiry_timestamp_seconds{file="));
}

#[test]
fn certificates_reload_under_load_without_a_failed_request_and_a_bad_one_is_refused() {
    let ca = Ca::new("reload");
    let v1 = ca.leaf("v1", "v1.test", &["site.test"]);
    let v2 = ca.leaf("v2", "v2.test", &["site.test"]);
    // As a Kubernetes Secret volume: the files are symlinks through
    // `..data`, and an update swaps `..data`.
    let live = ca.dir.join("live");
    std::fs::create_dir_all(&live).unwrap();
    let data = live.join("..data");
    std::os::unix::fs::symlink(v1.0.parent().unwrap(), &data).unwrap();
    std::os::unix::fs::symlink("..data/tls.crt", live.join("tls.crt")).unwrap();
    std::os::unix::fs::symlink("..data/tls.key", live.join("tls.key")).unwrap();
    let files = (live.join("tls.crt"), live.join("tls.key"));
    let (_o, origin) = origin(&[]);
    let (gw, tls) = start(origin, &[files], "watch_interval_ms = 100\n");
    let client = ca.client();
    assert_eq!(
        https_get(&client, tls, "site.test", "/"),
        Ok((200, "v1.test".into()))
    );

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, client) = (stop.clone(), client.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            let end = std::time::Instant::now() + Duration::from_secs(30);
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < end
            {
                match https_get(&client, tls, "site.test", "/?size=256") {
                    Ok((200, _)) => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // The Secret is updated: the watch reloads.
    update_secret(&live, &v2.0);
    assert!(
        serves_soon(&client, tls, "v2.test"),
        "the new certificate is not served"
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    assert!(
        ok > 10 && failed.is_empty(),
        "{ok} answered, failed: {failed:?}"
    );
    assert!(has_event(&gw, "load the TLS certificates"));

    // A bad certificate (the key of another): the admin call says why,
    // and the running one stays.
    let v3 = ca.leaf("v3", "v3.test", &["site.test"]);
    std::fs::copy(&v1.1, &v3.1).unwrap();
    update_secret(&live, &v3.0);
    let out = curl(&[
        "-s",
        "-w",
        "\n%{http_code}",
        "-X",
        "POST",
        &format!("http://{}/admin/tls/reload", gw.admin),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("422") && text.contains("does not match"),
        "{text}"
    );
    assert_eq!(
        https_get(&client, tls, "site.test", "/"),
        Ok((200, "v2.test".into()))
    );
    assert!(metric(&gw, "ultragate_tls_reloads_total{result=\"rejected\"}") >= 1.0);
    let events = admin_json(&gw, "/admin/events").to_string();
    assert!(events.contains("the running certificates stay"), "{events}");
}

#[test]
fn plaintext_garbage_and_stalled_handshakes_are_closed_and_counted() {
    let ca = Ca::new("bad");
    let a = ca.leaf("a", "a.test", &["a.test"]);
    let (_o, origin) = origin(&[]);
    let (gw, tls) = start(origin, &[a], "");

    // A plain HTTP request: a plain 400 that says why, then the close.
    let answer = raw_exchange(
        tls,
        b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
        Duration::from_secs(3),
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 400") && text.contains("HTTPS"),
        "{text}"
    );
    // Garbage: closed, nothing sent.
    let answer = raw_exchange(tls, b"\x00\x01\x02garbage", Duration::from_secs(3));
    assert!(answer.is_empty(), "{answer:?}");
    // A ClientHello cut short, then silence: closed at the handshake
    // timeout (500 ms here).
    let started = std::time::Instant::now();
    let answer = raw_exchange(
        tls,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        Duration::from_secs(5),
    );
    assert!(answer.is_empty(), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        started.elapsed()
    );
    // A renegotiation request: openssl's `R` on a TLS 1.2 session.
    let mut s_client = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-tls1_2",
            "-connect",
            &tls.to_string(),
            "-servername",
            "a.test",
            "-CAfile",
            &ca.ca_file(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let _ = s_client.stdin.as_mut().unwrap().write_all(b"R\n");
    std::thread::sleep(Duration::from_millis(500));
    let _ = s_client.kill();
    let _ = s_client.wait();
    // Every failure counted; the gateway still serves.
    let counted = |reason: &str| {
        metric(
            &gw,
            &format!("ultragate_tls_handshake_failures_total{{reason=\"{reason}\"}}"),
        )
    };
    assert!(
        wait_for(Duration::from_secs(3), || counted("plaintext_http") >= 1.0
            && counted("not_tls") >= 1.0
            && counted("timeout") >= 1.0
            // rustls refuses the renegotiation (a no_renegotiation
            // alert); openssl answers with a fatal alert and both close.
            && counted("peer_alert") >= 1.0),
        "plaintext {} not_tls {} timeout {} peer_alert {}",
        counted("plaintext_http"),
        counted("not_tls"),
        counted("timeout"),
        counted("peer_alert")
    );
    assert_eq!(
        https_get(&ca.client(), tls, "a.test", "/"),
        Ok((200, "a.test".into()))
    );
}

/// An HTTPS origin independent of ultragate: Python's `http.server` over
/// OpenSSL, keep-alive, its certificate signed by `ca` for `origin.test`.
fn python_https_origin(ca: &Ca) -> (std::process::Child, SocketAddr) {
    let (crt, key) = ca.leaf("origin", "origin.test", &["origin.test"]);
    let script = ca.dir.join("origin.py");
    std::fs::write(
        &script,
        r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"hello over tls from " + self.path.encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print("listening", s.server_address[1], flush=True)
s.serve_forever()
"#,
    )
    .unwrap();
    let mut child = std::process::Command::new("python3")
        .arg(&script)
        .arg(&crt)
        .arg(&key)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port: u16 = line
        .trim()
        .trim_start_matches("listening ")
        .parse()
        .unwrap();
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

#[test]
fn a_pool_with_tls_verifies_its_servers_and_a_wrong_name_gets_502() {
    let ca = Ca::new("upstream");
    let (mut origin, addr) = python_https_origin(&ca);
    let upstream = |name: &str| {
        format!(
            "tls = true\ntls_server_name = \"{name}\"\ntls_ca_file = \"{}\"\n",
            ca.ca_file()
        )
    };
    // `[upstream.primary]` is the last section the gateway writes before
    // `extra`: its TLS keys go first.
    let gw = Gateway::start(&[addr], "", &upstream("origin.test"));
    for i in 0..5 {
        let out = curl(&[&gw.url(&format!("/item/{i}"))]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("hello over tls from /item/{i}\n"),
            "{out:?}"
        );
    }
    let wrong = Gateway::start(&[addr], "", &upstream("wrong.test"));
    let out = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &wrong.url("/x"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "502", "{out:?}");
    let out = curl(&[&gw.url("/after")]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("hello over tls"));
    let _ = origin.kill();
    let _ = origin.wait();
}

#[test]
fn sighup_reloads_the_certificates_and_min_version_1_3_refuses_tls_1_2() {
    let ca = Ca::new("sighup");
    let (crt, key) = ca.leaf("live", "first.test", &["site.test"]);
    let (_o, origin) = origin(&[]);
    let (gw, tls) = start(
        origin,
        &[(crt.clone(), key.clone())],
        "min_version = \"1.3\"\nwatch_interval_ms = 0\n",
    );
    let client = ca.client();
    assert_eq!(
        https_get(&client, tls, "site.test", "/"),
        Ok((200, "first.test".into()))
    );
    let (log, _) = curl_tls(
        &ca,
        tls,
        "site.test",
        "/",
        &["--tlsv1.2", "--tls-max", "1.2"],
    );
    assert!(!log.contains("HTTP/1.1 200"), "{log}");
    let counted = || {
        metric(
            &gw,
            "ultragate_tls_handshake_failures_total{reason=\"incompatible\"}",
        )
    };
    assert!(
        wait_for(Duration::from_secs(3), || counted() >= 1.0),
        "incompatible: {}",
        counted()
    );

    // New files in place (no watch): SIGHUP loads them.
    let (new_crt, new_key) = ca.leaf("next", "second.test", &["site.test"]);
    std::fs::copy(&new_crt, &crt).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        https_get(&client, tls, "site.test", "/"),
        Ok((200, "first.test".into())),
        "no watch: the old certificate until asked"
    );
    gw.proc.signal(libc::SIGHUP);
    assert!(
        serves_soon(&client, tls, "second.test"),
        "SIGHUP did not load the new certificate"
    );
}

#[test]
fn an_expired_certificate_is_served_with_a_warning_in_health_not_refused() {
    let ca = Ca::new("expired");
    let (_o, origin) = origin(&[]);
    let (gw, tls) = start(origin, &[ca.expired_leaf("old", &["old.test"])], "");
    // Served (a client that checks dates refuses it; -k does not check).
    let (log, out) = curl_tls(&ca, tls, "old.test", "/", &["-k"]);
    assert!(out.starts_with("HTTP/1.1 200"), "{log}");
    let (log, _) = curl_tls(&ca, tls, "old.test", "/", &[]);
    assert!(log.contains("expired"), "{log}");
    let health = admin_json(&gw, "/health");
    let tls_health = tls_component(&health);
    assert_eq!(tls_health["status"], "expired", "{tls_health}");
    assert_eq!(tls_health["certificates"][0]["expired"], true);
    assert_eq!(health["overall_status"], "degraded", "{health}");
    // Its expiry, by file and name, in seconds since the Unix epoch.
    let out = curl(&[&format!("http://{}/metrics", gw.admin)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("name=\"old.test\"} 1577923200"), "{text}");
}

#[test]
fn a_panic_in_the_upstream_tls_path_closes_one_connection_and_the_core_goes_on() {
    let ca = Ca::new("panic");
    let (mut origin, addr) = python_https_origin(&ca);
    let gw = Gateway::start(
        &[addr],
        "",
        &format!(
            "tls = true\ntls_server_name = \"origin.test\"\ntls_ca_file = \"{}\"\n\n[cache]\ntest_hooks = true\n",
            ca.ca_file()
        ),
    );
    assert!(
        String::from_utf8_lossy(&curl(&[&gw.url("/before")]).stdout).starts_with("hello over tls")
    );
    // The origin's answer names the path: the test hook panics on it in
    // the endpoint's upstream TLS receive, outside the engine.
    let out = curl(&[&gw.url("/__ultragate_test/upstream-tls-panic")]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("hello over tls"),
        "{out:?}"
    );
    for i in 0..10 {
        let out = curl(&[&gw.url(&format!("/after/{i}"))]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("hello over tls from /after/{i}\n"),
            "the core still serves"
        );
    }
    assert!(
        wait_for(Duration::from_secs(5), || metric(
            &gw,
            "ultragate_panics_total"
        ) == 1.0),
        "counted: {}",
        metric(&gw, "ultragate_panics_total")
    );
    let _ = origin.kill();
    let _ = origin.wait();
}

#[test]
fn tls_clients_that_pipeline_without_reading_cost_at_most_the_bound() {
    let ca = Ca::new("hogs");
    let leaf = ca.leaf("h", "h.test", &["h.test"]);
    let (_o, origin) = origin(&[]);
    let (gw, tls) = start(origin, &[leaf], "");
    let hit = "/obj?size=4096&cache=max-age%3D600";
    assert_eq!(
        https_get(&ca.client(), tls, "h.test", hit).map(|r| r.0),
        Ok(200)
    );
    let pid = gw.proc.child.id();
    let before = rss(pid);
    let chunk = format!("GET {hit} HTTP/1.1\r\nHost: h.test\r\n\r\n").repeat(64);
    let cfg = ca.client();
    let mut hogs = Vec::new();
    for _ in 0..200 {
        let server = ServerName::try_from("h.test").unwrap();
        let mut conn = rustls::ClientConnection::new(cfg.clone(), server).unwrap();
        // Never more than 64 KiB of plaintext buffered here.
        conn.set_buffer_limit(Some(64 * 1024));
        let mut sock = TcpStream::connect(tls).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).unwrap();
        }
        sock.set_nonblocking(true).unwrap();
        hogs.push((conn, sock, 0usize));
    }
    // Round-robin until the gateway stops reading every one (or 4 MiB
    // each, or the time is up); nothing is ever read back.
    let end = Instant::now() + Duration::from_secs(10);
    let mut open: Vec<usize> = (0..hogs.len()).collect();
    while !open.is_empty() && Instant::now() < end {
        open.retain(|&i| {
            let (conn, sock, sent) = &mut hogs[i];
            let _ = conn.writer().write(chunk.as_bytes());
            loop {
                match conn.write_tls(sock) {
                    Ok(0) => return false,
                    Ok(n) => *sent += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return *sent < 4 << 20,
                    Err(_) => return false,
                }
                if !conn.wants_write() {
                    return *sent < 4 << 20;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(500));
    let grown = rss(pid).saturating_sub(before);
    let per = grown / 200;
    eprintln!("tls: RSS {before} -> +{grown} bytes for 200 non-reading clients ({per} per client)");
    // The bound, the TLS queue and a record, a request head, the response
    // in flight, the session, and the allocator's slack.
    assert!(per < 512 * 1024, "{per} bytes per client");
    assert_eq!(
        https_get(&ca.client(), tls, "h.test", hit).map(|r| r.0),
        Ok(200)
    );
    drop(hogs);
}

#[test]
fn a_host_the_connections_certificate_does_not_cover_gets_421() {
    let ca = Ca::new("fronting");
    let a = ca.leaf("a", "a.test", &["a.test"]);
    let b = ca.leaf("b", "wild.b.test", &["*.b.test"]);
    let (_o, origin) = origin(&[]);
    let (_gw, tls) = start(origin, &[a, b], "");
    // Domain fronting: SNI a.test, Host a name of another certificate.
    for host in ["x.b.test", "evil.example"] {
        let (log, out) = curl_tls(
            &ca,
            tls,
            "a.test",
            "/echo",
            &["-H", &format!("Host: {host}")],
        );
        assert!(out.starts_with("HTTP/1.1 421"), "{host}: {log}\n{out}");
    }
    // Its own names, any case, with the port.
    let (log, out) = curl_tls(&ca, tls, "x.b.test", "/echo", &["-H", "Host: Y.b.test:443"]);
    assert!(out.starts_with("HTTP/1.1 200"), "{log}\n{out}");
    let (log, out) = curl_tls(&ca, tls, "a.test", "/echo", &[]);
    assert!(out.starts_with("HTTP/1.1 200"), "{log}\n{out}");
}
