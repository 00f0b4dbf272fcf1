//! The cache end to end: curl through the real gateway, and the runbook's
//! admin commands as written.

mod support;

use std::time::Duration;
use support::*;

fn header(out: &std::process::Output, name: &str) -> Option<String> {
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

fn snapshot_dir(name: &str) -> String {
    let d = std::env::temp_dir().join(format!("ug-e2e-snap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d.display().to_string()
}

fn post(url: &str) -> (u16, serde_json::Value) {
    let out = curl(&["-X", "POST", "-w", "\n%{http_code}", url]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn miss_then_hit_with_curl() {
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(&[origin], "", "");
    let url = gw.url("/page?size=300&cache=max-age%3D60");
    let first = curl(&["-i", &url]);
    assert_eq!(header(&first, "x-cache").as_deref(), Some("MISS"));
    let second = curl(&["-i", &url]);
    assert_eq!(header(&second, "x-cache").as_deref(), Some("HIT"));
    assert!(header(&second, "age").is_some());
    assert!(String::from_utf8_lossy(&second.stdout).ends_with(&"x".repeat(300)));
    let uncacheable = curl(&["-i", &gw.url("/page?size=3&cache=no-store")]);
    assert_eq!(header(&uncacheable, "x-cache").as_deref(), Some("MISS"));
    let post = curl(&["-i", "-d", "x", &gw.url("/echo")]);
    assert_eq!(header(&post, "x-cache").as_deref(), Some("BYPASS"));
}

#[test]
fn runbook_cache_commands_work_as_written() {
    let (_o, origin) = origin(&[]);
    let dir = snapshot_dir("runbook");
    let gw = Gateway::start(&[origin], "", &format!("[cache]\nsnapshot_dir = \"{dir}\""));
    let admin = format!("http://{}", gw.admin);
    let url = gw.url("/doc?size=64&cache=max-age%3D600");
    curl(&[&url]);

    let (code, v) = post(&format!("{admin}/admin/cache/restore"));
    assert_eq!(code, 404, "no snapshot yet: {v}");
    assert!(v["error"].as_str().unwrap().contains("no usable snapshot"));

    // The runbook's commands hit the data port from loopback.
    let (code, v) = post(&gw.url("/admin/cache/verify"));
    assert_eq!(
        (code, v["checked"].as_u64(), v["corrupt"].as_u64()),
        (200, Some(1), Some(0)),
        "{v}"
    );
    assert!(v["duration_ms"].as_f64().is_some());
    let (code, v) = post(&gw.url("/admin/cache/snapshot"));
    assert_eq!((code, v["entries"].as_u64()), (200, Some(1)), "{v}");
    let (code, v) = post(&gw.url("/admin/cache/clear"));
    assert_eq!((code, v["cleared"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(
        header(&curl(&["-i", &url]), "x-cache").as_deref(),
        Some("MISS")
    );
    post(&gw.url("/admin/cache/clear"));
    let (code, v) = post(&gw.url("/admin/cache/restore"));
    assert_eq!(
        (code, v["restored"].as_u64(), v["skipped"].as_u64()),
        (200, Some(1), Some(0)),
        "{v}"
    );
    assert_eq!(
        header(&curl(&["-i", &url]), "x-cache").as_deref(),
        Some("HIT")
    );
    let (code, v) = post(&gw.url("/admin/data/verify"));
    assert_eq!(
        (code, v["checked"].as_u64(), v["changed"].as_u64()),
        (200, Some(1), Some(0)),
        "{v}"
    );

    let out = curl(&[
        "-X",
        "POST",
        "--json",
        "{\"prefix\":\"/doc\"}",
        &format!("{admin}/admin/cache/purge"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["action"], "purge", "{v}");
    assert_eq!(
        header(&curl(&["-i", &url]), "x-cache").as_deref(),
        Some("MISS")
    );
    assert_eq!(
        status(&[
            "-X",
            "POST",
            "--json",
            "{\"nonsense\":1}",
            &format!("{admin}/admin/cache/purge")
        ]),
        400
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_purge_glob_with_many_stars_does_not_stall_a_data_core() {
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(&[origin], "", "");
    let admin = format!("http://{}", gw.admin);
    // A long path of one letter: a backtracking matcher tries every way
    // to split it between the stars (the old one hung a core for minutes).
    let path = format!("/{}", "a".repeat(3000));
    let url = gw.url(&format!("{path}?cache=max-age%3D600"));
    curl(&[&url]);
    assert_eq!(
        header(&curl(&["-i", &url]), "x-cache").as_deref(),
        Some("HIT")
    );
    let purge = |body: &str| {
        status(&[
            "-X",
            "POST",
            "--json",
            body,
            &format!("{admin}/admin/cache/purge"),
        ])
    };
    assert_eq!(purge("{\"pattern\":\"/*a*a*a*a*a*a*b\"}"), 202);
    // Every lookup checks the pending purge: answered at once, still a HIT.
    assert_eq!(
        header(&curl(&["-i", &url]), "x-cache").as_deref(),
        Some("HIT")
    );
    assert_eq!(purge("{\"pattern\":\"/*a*a*a*a*a*a*\"}"), 202);
    assert_eq!(
        header(&curl(&["-i", &url]), "x-cache").as_deref(),
        Some("MISS")
    );
    // Patterns are bounded.
    let long = format!("{{\"pattern\":\"/{}*\"}}", "a".repeat(2000));
    assert_eq!(purge(&long), 400);
}

#[test]
fn data_verify_evicts_what_changed_at_the_origin() {
    let (o, origin) = origin(&["--body-size", "100"]);
    let gw = Gateway::start(&[origin], "", "");
    let url = gw.url("/v?cache=max-age%3D600");
    curl(&[&url]);
    assert_eq!(
        header(&curl(&["-i", &url]), "x-cache").as_deref(),
        Some("HIT")
    );
    // The origin is redeployed with different content.
    drop(o);
    let _o2 = {
        let child = std::process::Command::new(bench_bin())
            .args([
                "origin",
                "--listen",
                &origin.to_string(),
                "--body-size",
                "50",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_listening(origin, "restarted origin");
        Proc {
            child,
            name: "origin",
        }
    };
    let (code, v) = post(&gw.url("/admin/data/verify"));
    assert_eq!(
        (code, v["changed"].as_u64(), v["evicted"].as_u64()),
        (200, Some(1), Some(1)),
        "{v}"
    );
    let out = curl(&["-i", &url]);
    assert_eq!(
        header(&out, "x-cache").as_deref(),
        Some("MISS"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(&format!("\r\n\r\n{}", "x".repeat(50))));
}

#[test]
fn snapshot_on_shutdown_and_restore_on_start() {
    let (_o, origin) = origin(&[]);
    let dir = snapshot_dir("restart");
    let cache = format!(
        "[cache]\nsnapshot_dir = \"{dir}\"\nsnapshot_on_shutdown = true\nrestore_on_start = true"
    );
    let mut gw = Gateway::start(&[origin], "", &cache);
    let url_path = "/kept?size=10&cache=max-age%3D600";
    curl(&[&gw.url(url_path)]);
    gw.proc.signal(libc::SIGTERM);
    assert_eq!(gw.proc.wait_exit(Duration::from_secs(10)), Some(0));
    let old_host = gw.data.to_string();
    let gw = Gateway::start(&[origin], "", &cache);
    let out = curl(&[&format!("http://{}/admin/cache", gw.admin)]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["entries"].as_u64(), Some(1), "restored at start: {v}");
    // The key holds the Host the client sent: the old data address.
    let out = curl(&["-i", "-H", &format!("Host: {old_host}"), &gw.url(url_path)]);
    assert_eq!(header(&out, "x-cache").as_deref(), Some("HIT"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn early_hints_reach_the_client_before_the_answer_and_are_not_stored() {
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(&[origin], "", "");
    let url = gw.url("/hinted?hints=1&size=5&cache=max-age%3D60");
    let first = String::from_utf8(curl(&["-si", &url]).stdout).unwrap();
    assert!(
        first.starts_with(
            "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n"
        ),
        "{first}"
    );
    assert!(first.contains("HTTP/1.1 200 OK\r\n"), "{first}");
    let second = String::from_utf8(curl(&["-si", &url]).stdout).unwrap();
    assert!(
        second.starts_with("HTTP/1.1 200 OK\r\n") && second.contains("X-Cache: HIT"),
        "the hit has no 103: {second}"
    );
}

#[test]
fn cache_status_says_what_the_cache_did() {
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(&[origin], "", "");
    let field = |url: &str| {
        let out = String::from_utf8(curl(&["-si", url]).stdout).unwrap();
        out.lines()
            .find_map(|l| l.strip_prefix("Cache-Status: "))
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    let url = gw.url("/cs?size=3&cache=max-age%3D60");
    assert_eq!(
        field(&url),
        "ultragate; fwd=uri-miss; fwd-status=200; stored"
    );
    assert!(field(&url).starts_with("ultragate; hit; ttl="));
    assert_eq!(
        field(&gw.url("/cs-ns?cache=no-store")),
        "ultragate; fwd=uri-miss; fwd-status=200; detail=no-store"
    );
}

#[test]
fn an_operator_targeted_field_goes_ahead_of_cdn_cache_control() {
    let (o, origin) = origin(&[]);
    let gw = Gateway::start(
        &[origin],
        "",
        "[cache]\ntargeted_fields = [\"Ultragate-Cache-Control\", \"CDN-Cache-Control\"]\n",
    );
    // The CDN tier may keep it a minute; this gateway must not store it.
    let fields = "Ultragate-Cache-Control:%20no-store%7CCDN-Cache-Control:%20max-age%3D60";
    let url = gw.url(&format!("/tgt?size=2&cache=no-store&fields={fields}"));
    let first = String::from_utf8(curl(&["-si", &url]).stdout).unwrap();
    assert!(first.contains("detail=no-store"), "{first}");
    assert!(
        first.contains("CDN-Cache-Control: max-age=60"),
        "forwarded: {first}"
    );
    let again = String::from_utf8(curl(&["-si", &url]).stdout).unwrap();
    assert!(again.contains("X-Cache: MISS"), "not stored: {again}");
    // Without the gateway's own field, CDN-Cache-Control stores it.
    let url = gw.url("/tgt2?size=2&cache=no-store&fields=CDN-Cache-Control:%20max-age%3D60");
    curl(&["-s", &url]);
    let hit = String::from_utf8(curl(&["-si", &url]).stdout).unwrap();
    assert!(hit.contains("X-Cache: HIT"), "{hit}");
    drop(o);
    let bad = std::env::temp_dir().join(format!("ug-tgt-{}.toml", std::process::id()));
    std::fs::write(&bad, "[cache]\ntargeted_fields = [\"bad name\"]\n").unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_ultragate"))
        .args(["--check-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&check.stderr).contains("cache.targeted_fields"));
    let _ = std::fs::remove_file(bad);
}

#[test]
fn curl_ranges_are_answered_from_the_cache() {
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(&[origin], "", "");
    let url = gw.url("/video?size=1000&cache=max-age%3D600");
    // The first range fetches the object whole and stores it.
    let first = curl(&["-s", "-r", "100-199", "-w", " %{http_code}", &url]);
    let first = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(first.ends_with(" 206") && first.len() == 100 + 4, "{first}");
    let head = String::from_utf8(curl(&["-si", "-r", "-10", &url]).stdout).unwrap();
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert!(
        head.contains("Content-Range: bytes 990-999/1000") && head.contains("X-Cache: HIT"),
        "{head}"
    );
    let several = String::from_utf8(curl(&["-si", "-r", "0-9,20-29", &url]).stdout).unwrap();
    assert!(several.contains("multipart/byteranges"), "{several}");
    let past = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-r",
        "5000-",
        &url,
    ]);
    assert_eq!(String::from_utf8_lossy(&past.stdout), "416");
}
