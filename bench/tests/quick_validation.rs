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

/// Starts `bench origin` on a free port; again on another one when the
/// port was taken before the origin bound it.
fn origin(extra: &[&str]) -> Origin {
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_bench"))
            .args(["origin", "--listen", &addr])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end && !matches!(child.try_wait(), Ok(Some(_))) {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return Origin(child, addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("bench origin did not start");
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

fn run(o: &Origin, extra: &[&str]) -> Output {
    let url = format!("http://{}/check?size=100", o.1);
    let mut args = vec!["--url", &url, "--rate", "200", "--duration", "2s"];
    args.extend_from_slice(extra);
    script(&args)
}

fn p99_ms(text: &str) -> f64 {
    text.split("p99_ms=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

#[test]
fn fast_origin_passes() {
    let o = origin(&[]);
    // A roomy P99 bound: the tests share two cores with the build.
    let out = run(&o, &["--max-p99-ms", "250"]);
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
    let out = run(&o, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.starts_with("FAIL") && p99_ms(&text) >= 30.0, "{text}");
}

#[test]
fn failing_origin_fails_on_errors() {
    let o = origin(&["--error-every", "10"]);
    let out = run(&o, &["--max-p99-ms", "250"]);
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

/// The runbook runs the check inside a gateway pod, where there is only
/// what `deploy/Containerfile` puts in the image: the script alone at
/// /usr/local/bin (no lib.sh beside it), bench on PATH, and the base
/// image's bash, grep, awk, head and cut. The same here: a folder with
/// just those on PATH.
#[test]
fn the_check_runs_with_only_what_the_image_has() {
    let o = origin(&[]);
    let bin = std::env::temp_dir().join(format!("ug-image-bin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&bin);
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/scripts/performance-test.sh"
        ),
        bin.join("performance-test.sh"),
    )
    .unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_bench"), bin.join("bench")).unwrap();
    for tool in ["bash", "grep", "awk", "head", "cut", "dirname"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
        assert!(!path.is_empty(), "{tool} on this machine");
        std::os::unix::fs::symlink(path, bin.join(tool)).unwrap();
    }
    let url = format!("http://{}/check?size=100", o.1);
    let out = Command::new(bin.join("bash"))
        .arg(bin.join("performance-test.sh"))
        .args(["--quick-validation", "--url", &url, "--max-p99-ms", "250"])
        .env_clear()
        .env("PATH", &bin)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&bin);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("PASS requests=1000"), "{text}");
}
