//! `bench load` against a server that stalls once: the open-loop report
//! must charge the stall to every request it held back, a closed-loop
//! count must not.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Answers every request at once, except that request number `stall_at`
/// waits 500 ms. Returns the address.
fn stalling_server(stall_at: u64) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let served = served.clone();
            std::thread::spawn(move || {
                let _ = conn.set_nodelay(true);
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    while let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..p + 4);
                        if served.fetch_add(1, Ordering::SeqCst) + 1 == stall_at {
                            std::thread::sleep(Duration::from_millis(500));
                        }
                        if conn
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .is_err()
                        {
                            return;
                        }
                    }
                    match conn.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
            });
        }
    });
    addr
}

fn load(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("load")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn corrected_p99_reflects_a_500ms_stall_at_1000_rps() {
    let addr = stalling_server(1000);
    let url = format!("http://{addr}/");
    let v = load(&[
        "--url",
        &url,
        "--rate",
        "1000",
        "--duration",
        "3s",
        "--connections",
        "1",
    ]);
    let p99 = v["p99_us"].as_u64().unwrap();
    let raw_p99 = v["uncorrected_p99_us"].as_u64().unwrap();
    assert_eq!(v["errors"].as_u64(), Some(0), "{v}");
    assert!(v["requests"].as_u64().unwrap() >= 2900, "{v}");
    // About 500 of 3000 requests were due during the stall: the corrected
    // p99 sits deep inside it; measured from the actual send, only one
    // request was slow.
    assert!(
        p99 >= 300_000,
        "corrected p99 {p99} µs must show the stall: {v}"
    );
    assert!(raw_p99 < 100_000, "uncorrected p99 {raw_p99} µs: {v}");
    assert!(v["max_us"].as_u64().unwrap() >= 490_000, "{v}");
}

#[test]
fn closed_loop_count_does_not_see_the_stall() {
    let addr = stalling_server(1000);
    let url = format!("http://{addr}/");
    let v = load(&[
        "--url",
        &url,
        "--closed-loop",
        "--duration",
        "2s",
        "--connections",
        "1",
    ]);
    assert!(v["requests"].as_u64().unwrap() > 1000, "{v}");
    assert!(
        v["p99_us"].as_u64().unwrap() < 100_000,
        "closed loop hides the stall in its p99: {v}"
    );
    assert!(v["max_us"].as_u64().unwrap() >= 490_000, "{v}");
}

#[test]
fn hgrm_file_and_table() {
    let addr = stalling_server(u64::MAX);
    let url = format!("http://{addr}/");
    let hgrm = std::env::temp_dir().join(format!("bench-{}.hgrm", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args([
            "load",
            "--url",
            &url,
            "--rate",
            "500",
            "--duration",
            "1s",
            "--connections",
            "2",
            "--hgrm",
        ])
        .arg(&hgrm)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("offered 500.0 req/s") && table.contains("p99.99"),
        "{table}"
    );
    let text = std::fs::read_to_string(&hgrm).unwrap();
    assert!(text.trim_start().starts_with("Value"), "{text}");
    assert!(text.contains("#[Max     ="));
    let _ = std::fs::remove_file(hgrm);
}
