//! Real processes for end-to-end tests: the gateway binary, the test
//! origin from `bench`, the Node.js fallback. Every process is killed when
//! its handle drops; every wait is bounded.

#![allow(dead_code)]

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

/// Starts the test origin on a free port with extra flags.
pub fn origin(extra: &[&str]) -> (Proc, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
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
    (p, addr)
}

/// Starts the Node.js fallback service on a free port.
pub fn nodejs() -> (Proc, SocketAddr) {
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nodejs-api/server.js");
    let child = Command::new("node")
        .arg(script)
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .stdout(Stdio::null())
        .spawn()
        .expect("start node (is Node.js installed?)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let p = Proc {
        child,
        name: "nodejs-api",
    };
    wait_listening(addr, "nodejs-api");
    (p, addr)
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
        Self::start_on("127.0.0.1", primary, gateway_keys, extra)
    }

    /// As [`Gateway::start`], listening on `host`.
    pub fn start_on(
        host: &str,
        primary: &[SocketAddr],
        gateway_keys: &str,
        extra: &str,
    ) -> Gateway {
        let data: SocketAddr = format!("{host}:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let servers: Vec<String> = primary.iter().map(|a| format!("\"{a}\"")).collect();
        let text = format!(
            "[api_gateway]\nlisten = \"{data}\"\ndrain_timeout_ms = 5000\n{gateway_keys}\n\n[admin]\nlisten = \"{admin}\"\n\n[upstream.primary]\nservers = [{}]\n{extra}\n",
            servers.join(", ")
        );
        let config = std::env::temp_dir().join(format!(
            "ultragate-test-{}-{}.toml",
            std::process::id(),
            data.port()
        ));
        std::fs::write(&config, text).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ultragate"))
            .args(["--config", config.to_str().unwrap()])
            .env("ULTRAGATE_LOG", "warn")
            .spawn()
            .expect("start ultragate");
        let proc = Proc {
            child,
            name: "ultragate",
        };
        wait_listening(data, "ultragate data port");
        wait_listening(admin, "ultragate admin port");
        Gateway {
            proc,
            data,
            admin,
            config,
        }
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
