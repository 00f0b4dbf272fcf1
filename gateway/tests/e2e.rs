//! End to end with real sockets and processes: curl and raw TCP clients,
//! the test origin, the Node.js fallback, the gateway binary.

mod support;

use std::time::{Duration, Instant};
use support::*;

#[test]
fn curl_http11_and_http10_get_through_the_gateway() {
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(&[origin], "", "");
    let out = curl(&["-i", &gw.url("/file?size=1024")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.contains("Via: 1.1 ultragate\r\n") && text.contains("Content-Length: 1024\r\n"),
        "{text}"
    );
    assert!(text.ends_with(&"x".repeat(1024)));

    let out = curl(&["-i", "--http1.0", &gw.url("/file?size=100")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with(&"x".repeat(100)),
        "{text}"
    );
    assert!(text.contains("Connection: close\r\n"), "{text}");

    let out = curl(&["-I", &gw.url("/file?size=77")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Content-Length: 77\r\n"),
        "HEAD keeps the length: {text}"
    );
}

#[test]
fn request_head_is_rewritten_for_the_upstream() {
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(&[origin], "", "");
    let out = curl(&[
        "-H",
        "Connection: keep-alive, X-Hop",
        "-H",
        "X-Hop: secret",
        "-H",
        "X-Forwarded-For: 203.0.113.7",
        "-H",
        "Host: app.example",
        "--data-binary",
        "payload",
        &gw.url("/echo"),
    ]);
    let echo = String::from_utf8_lossy(&out.stdout);
    assert!(echo.starts_with("POST /echo HTTP/1.1\r\n"), "{echo}");
    assert!(echo.contains("Host: app.example\r\n"), "{echo}");
    assert!(echo.contains("Via: 1.1 ultragate\r\n"), "{echo}");
    // A client that is no trusted proxy cannot seed the chain.
    assert!(echo.contains("X-Forwarded-For: 127.0.0.1\r\n"), "{echo}");
    assert!(!echo.contains("203.0.113.7"), "{echo}");
    assert!(
        !echo.contains("X-Hop") && !echo.to_ascii_lowercase().contains("connection:"),
        "{echo}"
    );
    assert!(echo.ends_with("Content-Length: 7\r\n\r\npayload"), "{echo}");

    // A chunked request body reaches the upstream intact.
    let out = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        "chunked payload",
        &gw.url("/echo"),
    ]);
    let echo = String::from_utf8_lossy(&out.stdout);
    assert!(
        echo.contains("Transfer-Encoding: chunked\r\n") && echo.ends_with("chunked payload"),
        "{echo}"
    );
}

#[test]
fn pipelined_requests_come_back_in_order() {
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(&[origin], "", "");
    let mut reqs = Vec::new();
    for size in [3, 1, 2] {
        reqs.extend_from_slice(
            format!(
                "GET /p?size={size}&delay_ms={} HTTP/1.1\r\nHost: t\r\n\r\n",
                30 * size
            )
            .as_bytes(),
        );
    }
    reqs.extend_from_slice(b"GET /health/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let out = String::from_utf8(raw_exchange(gw.data, &reqs, Duration::from_secs(5))).unwrap();
    let bodies: Vec<&str> = out
        .split("HTTP/1.1 200 OK\r\n")
        .skip(1)
        .map(|r| r.rsplit("\r\n\r\n").next().unwrap())
        .collect();
    assert_eq!(bodies, ["xxx", "x", "xx", "live\n"], "{out}");
}

#[test]
fn chunked_upstream_responses_are_relayed() {
    let (_o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    let gw = Gateway::start(&[origin], "", "");
    let out = curl(&[&gw.url("/big?chunked=1&size=20000")]);
    assert_eq!(out.stdout, vec![b'x'; 20000]);
    let out = curl(&["--http1.0", &gw.url("/big?chunked=1&size=20000")]);
    assert_eq!(out.stdout, vec![b'x'; 20000], "de-chunked for HTTP/1.0");

    // Node.js answers without Content-Length: chunked on the wire.
    let gw = Gateway::start(&[node], "", "");
    let out = curl(&["-i", &gw.url("/api/stream?parts=3")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Transfer-Encoding: chunked\r\n"), "{text}");
    assert!(
        text.ends_with("\r\n\r\npart 0\npart 1\npart 2\nend\n"),
        "{text}"
    );
    let out = curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        "{\"name\":\"gamma\"}",
        &gw.url("/api/items"),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"name\":\"gamma\""));
}

#[test]
fn upstream_down_gives_502_and_slow_upstream_gives_504() {
    let dead = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = Gateway::start(&[dead], "", "");
    let out = curl(&["-i", &gw.url("/")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("HTTP/1.1 502 ") && text.contains("upstream connect failed"),
        "{text}"
    );

    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(&[origin], "", "response_timeout_ms = 300");
    let t0 = Instant::now();
    let out = curl(&["-i", &gw.url("/slow?delay_ms=3000")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("HTTP/1.1 504 ") && text.contains("upstream response timeout"),
        "{text}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "the timeout answered, not the origin"
    );
    assert_eq!(status(&[&gw.url("/garbage?garbage=1")]), 502);
}

#[test]
fn second_server_is_used_when_the_first_is_down() {
    let dead = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(&[dead, origin], "cores = [0]", "");
    for _ in 0..6 {
        assert_eq!(status(&[&gw.url("/x")]), 200);
    }
}

#[test]
fn pooled_connection_closed_by_upstream_is_retried() {
    let (_o, origin) = origin(&["--idle-close-ms", "100"]);
    let gw = Gateway::start(&[origin], "cores = [0]", "");
    for _ in 0..5 {
        assert_eq!(status(&[&gw.url("/x")]), 200);
        std::thread::sleep(Duration::from_millis(150));
    }
}

#[test]
fn malformed_and_oversized_requests_get_clear_answers() {
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(&[origin], "max_body_bytes = 1000", "");
    let out = raw_exchange(gw.data, b"GET / HTTP/1.1\r\n\r\n", Duration::from_secs(5));
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 400 ") && text.contains("missing Host"),
        "{text}"
    );
    let smuggle = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin/config HTTP/1.1\r\nHost: a\r\n\r\n";
    let text = String::from_utf8_lossy(&raw_exchange(gw.data, smuggle, Duration::from_secs(5)))
        .into_owned();
    assert!(
        text.starts_with("HTTP/1.1 400 ") && text.matches("HTTP/1.1").count() == 1,
        "{text}"
    );
    let big = "a".repeat(2000);
    assert_eq!(status(&["--data-binary", &big, &gw.url("/echo")]), 413);
    let huge_header = format!("X-Big: {}", "h".repeat(20000));
    assert_eq!(status(&["-H", &huge_header, &gw.url("/")]), 431);
    assert_eq!(
        status(&["-X", "CONNECT", &gw.url("/")]),
        501,
        "no tunnels; any other method token is forwarded"
    );
}

#[test]
fn probes_on_both_ports_and_admin_on_the_data_port() {
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(&[origin], "", "");
    let admin = format!("http://{}", gw.admin);
    for base in [gw.url(""), admin.clone()] {
        assert_eq!(status(&["-f", &format!("{base}/health/live")]), 200);
        assert_eq!(status(&["-f", &format!("{base}/health/ready")]), 200);
    }
    let out = curl(&["-f", &gw.url("/admin/config")]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("[upstream.primary]"));
    assert_eq!(status(&[&format!("{admin}/admin/nothing")]), 404);
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let (_o, origin) = origin(&[]);
    let mut gw = Gateway::start(&[origin], "", "");
    let url = gw.url("/slow?delay_ms=700&size=10");
    let inflight = std::thread::spawn(move || curl(&["-i", &url]));
    std::thread::sleep(Duration::from_millis(200));
    gw.proc.signal(libc::SIGTERM);
    let out = inflight.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("xxxxxxxxxx"),
        "{text}"
    );
    assert!(text.contains("Connection: close\r\n"), "{text}");
    assert_eq!(gw.proc.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(
        std::net::TcpStream::connect(gw.data).is_err(),
        "no longer accepting"
    );
}

#[test]
fn config_check_names_the_bad_key() {
    let dir = std::env::temp_dir();
    let bad = dir.join(format!("ug-bad-{}.toml", std::process::id()));
    std::fs::write(&bad, "[api_gateway]\nlisten = \"not an address\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ultragate"))
        .args(["--check-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("api_gateway.listen"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ultragate"))
        .arg("--print-default-config")
        .output()
        .unwrap();
    let good = dir.join(format!("ug-good-{}.toml", std::process::id()));
    std::fs::write(&good, &out.stdout).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ultragate"))
        .args(["--check-config", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let _ = std::fs::remove_file(bad);
    let _ = std::fs::remove_file(good);
}

#[test]
fn a_pooled_connection_that_got_bytes_while_idle_is_not_reused() {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    // A broken origin: it answers a HEAD with a body anyway, on a
    // kept-alive connection. Reused, those bytes would answer the next GET.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut have = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => have.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&have[..end]).into_owned();
                        have.drain(..end + 4);
                        let sent = if head.starts_with("HEAD") {
                            // The head, then (once the gateway has pooled
                            // the connection) bytes that look like an answer.
                            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 58\r\n\r\n")
                                .and_then(|()| {
                                    std::thread::sleep(Duration::from_millis(50));
                                    s.write_all(
                                        b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
                                    )
                                })
                        } else {
                            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal")
                        };
                        if sent.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let gw = Gateway::start(&[origin], "cores = [0]", "[cache]\nenabled = false\n");
    let head = curl(&["-sI", &gw.url("/h")]);
    assert!(String::from_utf8_lossy(&head.stdout).starts_with("HTTP/1.1 200"));
    // The late bytes reach the pooled connection.
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        let out = curl(&["-s", &gw.url("/g")]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "real",
            "the late bytes were not taken for an answer"
        );
    }
}

#[test]
fn a_client_that_stops_reading_is_closed_after_the_send_timeout() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(&[origin], "send_timeout_ms = 1000", "");
    let path = "/big?size=8000000&cache=max-age%3D600";
    // Stored by a client that reads it all.
    let full = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        &gw.url(path),
    ]);
    assert_eq!(String::from_utf8_lossy(&full.stdout), "8000000");
    // A client with a tiny receive window that reads nothing.
    let s = std::net::TcpStream::connect(gw.data).unwrap();
    let small: libc::c_int = 4096;
    // SAFETY: setsockopt on our own socket with a c_int option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let mut s = s;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    // Reading now drains what was in flight, then the end: the gateway
    // gave up on this client instead of holding the response for ever.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (mut got, mut buf) = (0usize, [0u8; 65536]);
    let started = Instant::now();
    let ended = loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break true,
            Ok(n) => got += n,
        }
        if started.elapsed() > Duration::from_secs(20) {
            break false;
        }
    };
    assert!(ended, "the connection was closed");
    assert!(got < 8_000_000, "not the whole response: {got} bytes");
    assert_eq!(get_status(gw.data, "/"), 200, "and the gateway serves on");
}
