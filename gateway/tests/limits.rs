//! Every kernel driver answers the same at the edges of its bounds: the
//! connection over `max_connections_per_core` gets a `503` with
//! `Retry-After` on the plain and the TLS port alike (through the
//! per-core layer's normal write path), and a drain gives up at the same
//! bound (the drain timeout, then the layer's grace). The DPDK driver is
//! checked the same way in `tests/dpdk.rs`. The client is Python's own
//! socket and ssl (`support/limit_client.py`).

mod support;

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};
use support::ca::Ca;
use support::*;

/// The per-core limit the tests fill.
const LIMIT: usize = 500;

/// Runs the limit client against `addr`: the answers it got and the
/// connection over the limit's answer head.
fn limit_client(addr: SocketAddr, count: usize, tls: Option<(&str, &str)>) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/limit_client.py");
    let mut cmd = Command::new("timeout");
    cmd.args(["120", "python3", script])
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(count.to_string());
    if let Some((ca, name)) = tls {
        cmd.args([ca, name]);
    }
    let out = cmd.output().expect("python3");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "limit client: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// One core on `backend`, a limit of [`LIMIT`], the TLS port on: the
/// 501st plain and the 501st TLS connection each get the 503.
fn the_connection_over_the_limit_gets_a_503(backend: &str) {
    let (_o, origin) = origin(&[]);
    let ca = Ca::new(&format!("limit-{backend}"));
    let (crt, key) = ca.leaf("site", "site.test", &["site.test"]);
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let keys = format!(
        "cores = [0]\nio_backend = \"{backend}\"\nmax_connections_per_core = {LIMIT}\nmax_connections_per_client = {LIMIT}\n"
    );
    let extra = format!(
        "fallback = \"\"\n\n[tls]\nlisten = \"{tls}\"\n[[tls.certificate]]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        crt.display(),
        key.display()
    );
    let gw = Gateway::start(&[origin], &keys, &extra);
    wait_listening(tls, "the TLS listener");
    for (port, secure) in [(gw.data, None), (tls, Some((ca.ca_file(), "site.test")))] {
        let secure = secure.as_ref().map(|(ca, name)| (ca.as_str(), *name));
        let got = limit_client(port, LIMIT, secure);
        assert_eq!(got["served"], LIMIT, "{backend} {port}: {got}");
        let over = got["over"].as_str().unwrap_or("");
        assert!(over.starts_with("HTTP/1.1 503"), "{backend} {port}: {over}");
        assert!(over.contains("\r\nRetry-After: 1"), "{over}");
        // The client's connections closed: the next one is served.
        assert!(
            wait_for(Duration::from_secs(5), || get_status(gw.data, "/") == 200),
            "served again below the limit"
        );
    }
    // The core's statistics reach /metrics every interval.
    let refused = || {
        let out = curl(&[&format!("http://{}/metrics", gw.admin)]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("ultragate_connections_refused_total{reason=\"per_core\"}"))
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        wait_for(Duration::from_secs(5), || refused().ends_with(" 2")),
        "{}",
        refused()
    );
}

#[test]
fn io_uring_answers_the_connection_over_the_limit_503_plain_and_tls() {
    the_connection_over_the_limit_gets_a_503("uring");
}

#[test]
fn epoll_answers_the_connection_over_the_limit_503_plain_and_tls() {
    the_connection_over_the_limit_gets_a_503("epoll");
}

/// A request the origin holds for 30 s, then SIGTERM with a drain timeout
/// of 1 s: the gateway resets that connection at the timeout and exits
/// within the layer's grace, on `backend`.
fn the_drain_gives_up_at_one_bound(backend: &str) {
    let (_o, origin) = origin(&[]);
    let keys = format!("cores = [0]\nio_backend = \"{backend}\"\ndrain_timeout_ms = 1000\n");
    let mut gw = Gateway::start(&[origin], &keys, "fallback = \"\"\n");
    let mut held = TcpStream::connect(gw.data).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    std::io::Write::write_all(
        &mut held,
        b"GET /slow?delay_ms=30000 HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    // The request reached the origin (the gateway's upstream connection).
    std::thread::sleep(Duration::from_millis(300));
    let term = Instant::now();
    gw.proc.signal(libc::SIGTERM);
    let mut buf = [0u8; 1024];
    let cut = std::io::Read::read(&mut held, &mut buf);
    let cut_after = term.elapsed();
    let code = gw.proc.wait_exit(Duration::from_secs(15));
    let exited_after = term.elapsed();
    assert!(
        matches!(cut, Ok(0) | Err(_)),
        "{backend}: the held connection ends without an answer: {cut:?}"
    );
    assert!(
        cut_after >= Duration::from_millis(900),
        "{backend}: cut before the drain timeout: {cut_after:?}"
    );
    assert_eq!(code, Some(0), "{backend}: a clean exit");
    // Drain timeout 1 s + the layer's 1 s grace, plus the process's own
    // shutdown (the control plane, the final snapshot) on a busy machine.
    assert!(
        exited_after < Duration::from_secs(8),
        "{backend}: exited {exited_after:?} after SIGTERM"
    );
}

#[test]
fn io_uring_gives_up_the_drain_at_its_bound() {
    the_drain_gives_up_at_one_bound("uring");
}

#[test]
fn epoll_gives_up_the_drain_at_its_bound() {
    the_drain_gives_up_at_one_bound("epoll");
}
