//! The kernel data-plane backends: the fallback from io_uring to epoll
//! when a sandbox refuses io_uring (a real seccomp filter, as container
//! runtimes install), the per-core connection limit, and back-pressure
//! from a slow reader to the upstream. The limit and back-pressure tests
//! run on whichever backend the matrix picks (`ULTRAGATE_IO_BACKEND`).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// Installs a seccomp filter in the calling process that fails
/// `io_uring_setup` with `EPERM`, as Docker's and containerd's default
/// profiles do; every other syscall is allowed.
fn refuse_io_uring() -> std::io::Result<()> {
    const IO_URING_SETUP: u32 = 425; // the same number on every architecture
    let filter = [
        // A = seccomp_data.nr
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: IO_URING_SETUP,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with a valid, live filter program.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Starts the gateway under [`refuse_io_uring`] with `io_backend`; its
/// process, data and admin addresses, and the file its log goes to.
fn start_refused(
    origin: SocketAddr,
    io_backend: &str,
) -> (Proc, SocketAddr, SocketAddr, std::path::PathBuf) {
    let data: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = std::env::temp_dir();
    let config = dir.join(format!(
        "ultragate-refused-{}-{io_backend}.toml",
        data.port()
    ));
    let log = dir.join(format!(
        "ultragate-refused-{}-{io_backend}.log",
        data.port()
    ));
    std::fs::write(
        &config,
        format!(
            "[api_gateway]\nlisten = \"{data}\"\nio_backend = \"{io_backend}\"\n\n[admin]\nlisten = \"{admin}\"\n\n[upstream.primary]\nservers = [\"{origin}\"]\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ultragate"));
    cmd.args(["--config", config.to_str().unwrap()])
        .env("ULTRAGATE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: the closure only makes two prctl calls, which are
    // async-signal-safe.
    unsafe { cmd.pre_exec(refuse_io_uring) };
    let child = cmd.spawn().expect("start ultragate");
    (
        Proc {
            child,
            name: "ultragate",
        },
        data,
        admin,
        log,
    )
}

#[test]
fn auto_serves_on_epoll_when_seccomp_refuses_io_uring() {
    let (_origin, origin) = origin(&[]);
    let (_gw, data, admin, log) = start_refused(origin, "auto");
    wait_listening(data, "gateway data port");
    wait_listening(admin, "gateway admin port");
    let out = curl(&["-i", &format!("http://{data}/")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    let health = curl(&[&format!("http://{admin}/health")]);
    let health: serde_json::Value = serde_json::from_slice(&health.stdout).unwrap();
    let dataplane = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "dataplane")
        .unwrap();
    assert_eq!(dataplane["backend"], "epoll", "{health}");
    assert_eq!(dataplane["ready"], true);
    let metrics = curl(&[&format!("http://{admin}/metrics")]);
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains("ultragate_dataplane_backend{backend=\"epoll\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("ultragate_dataplane_backend{backend=\"io_uring\"} 0"));

    let log = std::fs::read_to_string(&log).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("io_uring refused"))
        .unwrap_or_else(|| panic!("no fallback line in the log:\n{log}"));
    assert!(line.contains("Operation not permitted"), "{line}");
    assert!(line.contains("seccomp"), "{line}");
}

#[test]
fn uring_without_fallback_refuses_to_start_and_says_why() {
    let (_origin, origin) = origin(&[]);
    let (mut gw, _data, _admin, log) = start_refused(origin, "uring");
    let code = gw.wait_exit(Duration::from_secs(10));
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("io_uring is not usable"), "{log}");
    assert!(log.contains("io_uring_setup"), "{log}");
}

/// Sends one keep-alive GET on `s` and reads the whole answer.
fn get_on(s: &mut TcpStream) -> String {
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(&[b'x'; 16]) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn connections_over_the_per_core_limit_get_a_503() {
    let (_origin, origin) = origin(&[]);
    let gw = Gateway::start(&[origin], "cores = [0]\nmax_connections_per_core = 3", "");
    let mut open: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(gw.data).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            assert!(get_on(&mut s).starts_with("HTTP/1.1 200"));
            s
        })
        .collect();
    let refused = raw_exchange(
        gw.data,
        b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
        Duration::from_secs(5),
    );
    let refused = String::from_utf8_lossy(&refused);
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("connection limit reached"), "{refused}");
    // The connections already open still work.
    assert!(get_on(&mut open[0]).starts_with("HTTP/1.1 200"));
    // One closes: a new one is served again.
    open.pop();
    assert!(
        wait_for(Duration::from_secs(5), || get_status(gw.data, "/") == 200),
        "a connection below the limit is served"
    );
}

/// The gateway's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn a_slow_reader_stops_the_upstream_and_loses_nothing() {
    const TOTAL: u64 = 256 << 20;
    // An origin that streams as fast as the gateway takes it, counting.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = listener.local_addr().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    // Health checks get a short answer; `/stream` gets the stream.
    let streamer = std::thread::spawn(move || loop {
        let (mut s, _) = listener.accept().unwrap();
        let mut head = [0u8; 4096];
        let n = s.read(&mut head).unwrap_or(0);
        if !head[..n].starts_with(b"GET /stream ") {
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
            );
            continue;
        }
        write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {TOTAL}\r\n\r\n").unwrap();
        let block: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut sent = 0;
        while sent < TOTAL {
            if s.write_all(&block).is_err() {
                return;
            }
            sent += block.len() as u64;
            counter.store(sent, Ordering::Relaxed);
        }
        return;
    });
    let gw = Gateway::start(&[origin], "", "");
    let base = rss(gw.proc.child.id());
    let mut client = TcpStream::connect(gw.data).unwrap();
    client
        .write_all(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    // The client reads nothing for a while: the gateway must stop reading
    // from the origin once its queue and the sockets' buffers are full.
    std::thread::sleep(Duration::from_secs(2));
    let during = written.load(Ordering::Relaxed);
    let grown = rss(gw.proc.child.id()).saturating_sub(base);
    eprintln!("origin wrote {during} bytes while the client stalled; gateway grew {grown} bytes");
    assert!(
        during < TOTAL / 4,
        "the origin wrote {during} of {TOTAL} bytes to a stalled client"
    );
    assert!(grown < 64 << 20, "the gateway grew by {grown} bytes");

    // Then it reads everything: every byte arrives, in order.
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut head = Vec::new();
    let mut pos: u64 = 0;
    let end = Instant::now() + Duration::from_secs(120);
    while pos < TOTAL && Instant::now() < end {
        let n = client.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {pos} body bytes");
        let mut chunk = &buf[..n];
        while !chunk.is_empty() && !head.ends_with(b"\r\n\r\n") {
            head.push(chunk[0]);
            chunk = &chunk[1..];
        }
        for &b in chunk {
            assert_eq!(b, ((pos % 65536) % 251) as u8, "byte {pos}");
            pos += 1;
        }
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 200"));
    assert_eq!(pos, TOTAL);
    streamer.join().unwrap();
}

#[test]
fn the_panic_hook_answers_only_when_the_config_turns_it_on() {
    // A test build without `[cache] test_hooks`: the path is a path.
    let (_origin, origin) = origin(&[]);
    let gw = Gateway::start(&[origin], "", "");
    assert_eq!(get_status(gw.data, "/__ultragate_test/panic"), 200);
}

#[test]
fn a_panicking_request_costs_its_connection_only() {
    let (_origin, origin) = origin(&[]);
    let gw = Gateway::start(&[origin], "cores = [0]", "\n[cache]\ntest_hooks = true\n");
    // A connection that stays open across the panic, on the same core.
    let mut bystander = TcpStream::connect(gw.data).unwrap();
    bystander
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(get_on(&mut bystander).starts_with("HTTP/1.1 200"));

    let answer = raw_exchange(
        gw.data,
        b"GET /__ultragate_test/panic HTTP/1.1\r\nHost: t\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(answer.is_empty(), "closed without an answer: {answer:?}");

    assert!(
        get_on(&mut bystander).starts_with("HTTP/1.1 200"),
        "the other connection goes on"
    );
    assert_eq!(get_status(gw.data, "/"), 200, "new connections are served");
    let metrics = || {
        let m = curl(&[&format!("http://{}/metrics", gw.admin)]);
        String::from_utf8_lossy(&m.stdout).into_owned()
    };
    assert!(
        wait_for(Duration::from_secs(5), || metrics()
            .contains("ultragate_panics_total 1")),
        "counted: {}",
        metrics()
    );
    let mut gw = gw;
    assert!(
        gw.proc.child.try_wait().unwrap().is_none(),
        "the process lives"
    );
}

/// Reads one response with a `Content-Length` body from `s`: (status,
/// body); none when the connection ended first.
fn read_response(s: &mut TcpStream) -> Option<(u16, String)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + len]).into_owned();
                return Some((status, body));
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Upstream connections closed while operations on them are still in
/// flight, at a high rate, next to new ones opening: clients that vanish
/// while their upstream request runs (the gateway closes that upstream
/// with its receive armed), an origin that closes idle keep-alive
/// connections after 1 ms (closes racing reuse), and keep-alive clients
/// whose every answer must be their own. A socket closed under a pending
/// receive whose number a new connection reuses would hand one client's
/// response to another, or lose it: every answer is checked against its
/// request, and none may be missing.
#[test]
fn upstream_closes_under_operations_in_flight_never_cross_answers() {
    let (_o, origin) = origin(&["--idle-close-ms", "1"]);
    // No fallback: a fresh connection the origin closes before the
    // request reached it is retried, and with the pool's one server tried
    // the retry would go to the default fallback, where nothing listens;
    // this test is about answers crossing, not about the runbook.
    let gw = Gateway::start(&[origin], "", "fallback = \"\"\n");
    let data = gw.data;
    // CHURN_ROUNDS=N runs more (a longer hunt; the default is the test
    // command's).
    let rounds: usize = std::env::var("CHURN_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let threads: Vec<_> = (0..6)
        .map(|t| {
            std::thread::spawn(move || {
                let mut wrong = Vec::new();
                let end = Instant::now() + Duration::from_secs(20 + rounds as u64 / 10);
                for i in 0..rounds {
                    if Instant::now() > end {
                        break;
                    }
                    if i % 3 == 2 {
                        // A client that leaves while its request is upstream.
                        if let Ok(mut s) = TcpStream::connect(data) {
                            let req = format!(
                                "GET /echo?gone={t}-{i}&delay_ms=3 HTTP/1.1\r\nHost: t\r\n\r\n"
                            );
                            let _ = s.write_all(req.as_bytes());
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        continue;
                    }
                    let Ok(mut s) = TcpStream::connect(data) else {
                        wrong.push(format!("{t}-{i}: connect"));
                        continue;
                    };
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    for k in 0..3 {
                        let id = format!("id={t}-{i}-{k}");
                        let delay = (i + k) % 3;
                        let req =
                            format!("GET /echo?{id}&delay_ms={delay} HTTP/1.1\r\nHost: t\r\n\r\n");
                        if s.write_all(req.as_bytes()).is_err() {
                            wrong.push(format!("{id}: write"));
                            break;
                        }
                        match read_response(&mut s) {
                            Some((200, body)) if body.contains(&format!("{id}&")) => {}
                            Some((status, body)) => {
                                let first = body.lines().next().unwrap_or("").to_owned();
                                wrong.push(format!("{id}: {status} {first}"));
                            }
                            None => wrong.push(format!("{id}: no answer")),
                        }
                    }
                }
                wrong
            })
        })
        .collect();
    let wrong: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(wrong.is_empty(), "{} wrong answers: {wrong:?}", wrong.len());
}
