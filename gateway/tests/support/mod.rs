//! Real processes for end-to-end tests: the gateway binary, the test
//! origin from `bench`, the Node.js fallback. Every process is killed when
//! its handle drops; every wait is bounded.

#![allow(dead_code)]

pub mod ca;
pub mod k8s;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits up to `limit` for the process to exit; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_ultragate"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

/// The `bench` binary, built on demand when the test run did not build it.
pub fn bench_bin() -> PathBuf {
    let path = target_dir().join("bench");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "ultragate-bench", "--bin", "bench"])
            .status()
            .expect("run cargo build for bench")
            .success();
        assert!(ok && path.exists(), "cannot build the bench binary");
    }
    path
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts on `addr`.
pub fn wait_listening(addr: SocketAddr, what: &str) {
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not start listening on {addr}");
}

/// Waits until `addr` accepts, or the process exits (false then).
fn wait_up(proc: &mut Proc, addr: SocketAddr) -> bool {
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if matches!(proc.child.try_wait(), Ok(Some(_))) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Starts a server on a free loopback port, again on another port when
/// the one found free was taken before the server bound it. The server
/// must say on stdout that it listens: a connect alone could reach another
/// test's server that took the port first.
fn spawn_listening(name: &'static str, spawn: impl Fn(SocketAddr) -> Child) -> (Proc, SocketAddr) {
    for _ in 0..5 {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut p = Proc {
            child: spawn(addr),
            name,
        };
        if said_listening(&mut p) && wait_up(&mut p, addr) {
            return (p, addr);
        }
    }
    panic!("{name} did not start");
}

/// Waits for a line saying `listening` on the child's stdout (then keeps
/// draining it); false when it exits or stays silent for 15 s.
fn said_listening(p: &mut Proc) -> bool {
    use std::io::BufRead;
    let Some(out) = p.child.stdout.take() else {
        return false;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if line.contains("listening") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(15)).is_ok()
}

/// Starts the test origin on a free port with extra flags.
pub fn origin(extra: &[&str]) -> (Proc, SocketAddr) {
    spawn_listening("origin", |addr| {
        Command::new(bench_bin())
            .args(["origin", "--listen", &addr.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start origin")
    })
}

/// Starts the Node.js fallback service on a free port.
pub fn nodejs() -> (Proc, SocketAddr) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nodejs-api/server.js");
    spawn_listening("nodejs-api", |addr| {
        Command::new("node")
            .arg(&script)
            .env("PORT", addr.port().to_string())
            .env("HOST", "127.0.0.1")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start node (is Node.js installed?)")
    })
}

/// The `io_backend` line for the backend the suite runs on: the test
/// matrix sets `ULTRAGATE_IO_BACKEND` to `uring` or `epoll` (unset: the
/// default, `auto`). An explicit `uring` fails to start rather than fall
/// back, so a matrix row never passes on the other backend by accident.
pub fn backend_key() -> String {
    match std::env::var("ULTRAGATE_IO_BACKEND") {
        Ok(b) if !b.is_empty() => format!("io_backend = \"{b}\"\n"),
        _ => String::new(),
    }
}

/// The backend `/health` names for the matrix row: io_uring unless the
/// row is epoll (this kernel allows io_uring, so `auto` picks it).
pub fn expected_backend() -> &'static str {
    match std::env::var("ULTRAGATE_IO_BACKEND").as_deref() {
        Ok("epoll") => "epoll",
        _ => "io_uring",
    }
}

/// A running gateway and its ports.
pub struct Gateway {
    pub proc: Proc,
    pub data: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
}

impl Gateway {
    /// Starts the gateway in front of `primary` with extra TOML appended to
    /// the sections it writes (`[api_gateway]` keys go in `gateway_keys`).
    pub fn start(primary: &[SocketAddr], gateway_keys: &str, extra: &str) -> Gateway {
        Self::start_on("127.0.0.1", primary, gateway_keys, "", extra)
    }

    /// As [`Gateway::start`], with both ports listening on `host` and
    /// `admin_keys` in `[admin]`.
    pub fn start_on(
        host: &str,
        primary: &[SocketAddr],
        gateway_keys: &str,
        admin_keys: &str,
        extra: &str,
    ) -> Gateway {
        Self::launch(&[], host, primary, gateway_keys, admin_keys, extra)
    }

    /// As [`Gateway::start`], run through `launcher` (e.g. `taskset -c 1`,
    /// or a shell that moves itself into a cgroup and `exec`s the rest).
    pub fn start_through(launcher: &[&str], primary: &[SocketAddr], gateway_keys: &str) -> Gateway {
        Self::launch(launcher, "127.0.0.1", primary, gateway_keys, "", "")
    }

    fn launch(
        launcher: &[&str],
        host: &str,
        primary: &[SocketAddr],
        gateway_keys: &str,
        admin_keys: &str,
        extra: &str,
    ) -> Gateway {
        // A port found free can be taken before the gateway binds it (by
        // another test's connection): start again on new ports then.
        for _ in 0..5 {
            let data: SocketAddr = format!("{host}:{}", free_port()).parse().unwrap();
            let admin: SocketAddr = format!("{host}:{}", free_port()).parse().unwrap();
            let servers: Vec<String> = primary.iter().map(|a| format!("\"{a}\"")).collect();
            let backend = if gateway_keys.contains("io_backend") {
                String::new()
            } else {
                backend_key()
            };
            let drain = if gateway_keys.contains("drain_timeout_ms") {
                ""
            } else {
                "drain_timeout_ms = 5000\n"
            };
            let text = format!(
                "[api_gateway]\nlisten = \"{data}\"\n{drain}{backend}{gateway_keys}\n\n[admin]\nlisten = \"{admin}\"\n{admin_keys}\n\n[upstream.primary]\nservers = [{}]\n{extra}\n",
                servers.join(", ")
            );
            let config = std::env::temp_dir().join(format!(
                "ultragate-test-{}-{}.toml",
                std::process::id(),
                data.port()
            ));
            std::fs::write(&config, text).unwrap();
            // ULTRAGATE_TEST_BIN runs the suites against another build
            // (an older one, for a before/after).
            let bin = std::env::var("ULTRAGATE_TEST_BIN")
                .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ultragate").to_owned());
            let mut argv: Vec<&str> = launcher.to_vec();
            argv.extend([bin.as_str(), "--config", config.to_str().unwrap()]);
            let child = Command::new(argv[0])
                .args(&argv[1..])
                .env("ULTRAGATE_LOG", "warn")
                .spawn()
                .expect("start ultragate");
            let mut proc = Proc {
                child,
                name: "ultragate",
            };
            let local = |a: SocketAddr| SocketAddr::from(([127, 0, 0, 1], a.port()));
            // Up on both ports and still running: a port taken by another
            // test's server first makes this gateway exit.
            if wait_up(&mut proc, local(data))
                && wait_up(&mut proc, local(admin))
                && matches!(proc.child.try_wait(), Ok(None))
            {
                return Gateway {
                    proc,
                    data,
                    admin,
                    config,
                };
            }
            let _ = std::fs::remove_file(&config);
        }
        panic!("ultragate did not start (see its log above)");
    }

    /// `http://ADDR` of the data port.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.data)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Runs curl with a bounded time; returns its output.
pub fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl (is curl installed?)")
}

/// `curl -o /dev/null -w %{http_code}`: the status code only.
pub fn status(args: &[&str]) -> u16 {
    let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    all.extend_from_slice(args);
    let out = curl(&all);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Sends raw bytes on one connection and reads until the peer closes (or
/// `limit` passes).
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let end = Instant::now() + limit;
    let mut buf = [0u8; 65536];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// One GET on a fresh connection; the status, or 0 when the connection
/// failed or the answer was not HTTP.
pub fn get_status(addr: SocketAddr, path: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    read_status(&mut s)
}

/// Reads a response to its end; its status, or 0.
fn read_status(s: &mut TcpStream) -> u16 {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    std::str::from_utf8(out.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A connection to `addr` from source address `from` (another address of
/// 127.0.0.0/8: a client of its own).
pub fn connect_from(from: [u8; 4], addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::from((from, 0)).into())?;
    s.connect_timeout(&addr.into(), Duration::from_secs(2))?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// One GET from source address `from`, its head sent in two parts `gap`
/// apart (none: at once); the status, or 0.
pub fn get_from(from: [u8; 4], addr: SocketAddr, path: &str, gap: Option<Duration>) -> u16 {
    let Ok(mut s) = connect_from(from, addr) else {
        return 0;
    };
    let first = format!("GET {path} HTTP/1.1\r\n");
    if s.write_all(first.as_bytes()).is_err() {
        return 0;
    }
    if let Some(gap) = gap {
        std::thread::sleep(gap);
    }
    if s.write_all(b"Host: test\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return 0;
    }
    read_status(&mut s)
}

/// Clients at several source addresses, each asking for its paths in turn
/// every `pause` for `time` (bounded), heads split by `gap`; returns the
/// answers sent and the statuses that were not 200.
pub fn load_from(
    addr: SocketAddr,
    sources: &[[u8; 4]],
    paths: &[&str],
    (pause, gap): (Duration, Option<Duration>),
    time: Duration,
) -> (u64, Vec<u16>) {
    let threads: Vec<_> = sources
        .iter()
        .map(|&from| {
            let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
            std::thread::spawn(move || {
                let end = Instant::now() + time;
                let (mut sent, mut failed) = (0, Vec::new());
                for path in paths.iter().cycle() {
                    if Instant::now() >= end {
                        break;
                    }
                    let status = get_from(from, addr, path, gap);
                    sent += 1;
                    if status != 200 {
                        failed.push(status);
                    }
                    std::thread::sleep(pause);
                }
                (sent, failed)
            })
        })
        .collect();
    threads.into_iter().fold((0, Vec::new()), |(n, mut f), t| {
        let (sent, failed) = t.join().unwrap();
        f.extend(failed);
        (n + sent, f)
    })
}

/// A client sending GETs back to back from a thread until stopped;
/// counts answers that are not 200.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<(u64, Vec<u16>)>>,
}

impl Load {
    /// Starts GETs of `path` every `pause`.
    pub fn start(addr: SocketAddr, path: &str, pause: Duration) -> Load {
        use std::sync::atomic::Ordering::Relaxed;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (flag, count, path) = (stop.clone(), sent.clone(), path.to_owned());
        let thread = std::thread::spawn(move || {
            let mut failed = Vec::new();
            let end = Instant::now() + Duration::from_secs(60);
            while !flag.load(Relaxed) && Instant::now() < end {
                let status = get_status(addr, &path);
                count.fetch_add(1, Relaxed);
                if status != 200 {
                    failed.push(status);
                }
                std::thread::sleep(pause);
            }
            (count.load(Relaxed), failed)
        });
        Load {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Waits (up to 30 s) until at least `total` requests have been sent:
    /// a count, not a time, since a slow machine sends fewer per second.
    pub fn reach(&self, total: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        wait_for(Duration::from_secs(30), || self.sent.load(Relaxed) >= total);
    }

    /// Stops; returns (requests sent, statuses of the failed ones).
    pub fn finish(self) -> (u64, Vec<u16>) {
        self.finish_after(0)
    }

    /// Goes on until at least `count` more requests have been sent, then
    /// stops; returns (requests sent, statuses of the failed ones).
    pub fn finish_after(mut self, count: u64) -> (u64, Vec<u16>) {
        use std::sync::atomic::Ordering::Relaxed;
        self.reach(self.sent.load(Relaxed) + count);
        self.stop.store(true, Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default()
    }
}

/// GET of a JSON document from the admin port.
pub fn admin_json(gw: &Gateway, path: &str) -> serde_json::Value {
    let out = curl(&[&format!("http://{}{path}", gw.admin)]);
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Waits up to `limit` for `cond`; whether it held.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    cond()
}

/// Whether `/admin/events` holds an event with this action.
pub fn has_event(gw: &Gateway, action: &str) -> bool {
    admin_json(gw, "/admin/events")["events"]
        .as_array()
        .is_some_and(|e| e.iter().any(|e| e["action"] == action))
}

/// Restarts the origin on the same address with extra flags.
pub fn origin_at(addr: SocketAddr, extra: &[&str]) -> Proc {
    let child = Command::new(bench_bin())
        .args(["origin", "--listen", &addr.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("start origin");
    let p = Proc {
        child,
        name: "origin",
    };
    wait_listening(addr, "origin");
    p
}

/// The process's resident set, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
