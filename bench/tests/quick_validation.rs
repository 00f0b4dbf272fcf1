//! `deploy/scripts/performance-test.sh`, both ways: a fast origin passes,
//! a slow or failing one fails with a non-zero exit.

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Origin(Child, String);

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn origin(extra: &[&str]) -> Origin {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["origin", "--listen", &addr])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    Origin(child, addr)
}

fn script(args: &[&str]) -> Output {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/scripts/performance-test.sh"
    );
    Command::new("bash")
        .arg(path)
        .args(args)
        .env("BENCH", env!("CARGO_BIN_EXE_bench"))
        .output()
        .unwrap()
}

fn run(o: &Origin) -> Output {
    let url = format!("http://{}/check?size=100", o.1);
    script(&["--url", &url, "--rate", "200", "--duration", "2s"])
}

#[test]
fn fast_origin_passes() {
    let o = origin(&[]);
    let out = run(&o);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("PASS requests=4"), "{text}");
}

#[test]
fn slow_origin_fails_on_p99() {
    let o = origin(&["--delay-ms", "30"]);
    let out = run(&o);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("FAIL") && text.contains("p99_ms=3"),
        "{text}"
    );
}

#[test]
fn failing_origin_fails_on_errors() {
    let o = origin(&["--error-every", "10"]);
    let out = run(&o);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("error_rate=0.1000"), "{text}");
}

#[test]
fn unknown_argument_is_refused() {
    let out = script(&["--nonsense"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument --nonsense"));
}
