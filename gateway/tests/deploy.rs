//! The deploy tree checked without a cluster: the runbook scripts against
//! a recording fake `kubectl` on PATH (a double for the cluster, not for
//! the product), and the ConfigMap's TOML through `ultragate --check-config`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FAKE_KUBECTL: &str = r#"#!/usr/bin/env bash
# Records every call; answers from a small state directory.
echo "$*" >> "$FAKE/log"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --context|-n) shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
set -- "${args[@]}"
state() { cat "$FAKE/$1" 2>/dev/null || echo "$2"; }
case "$*" in
  "get service ultragate -o jsonpath={.spec.selector.color}") state color blue ;;
  "get service ultragate -o jsonpath={.spec.selector.app}") state app ultragate ;;
  "get service ultragate -o jsonpath={.metadata.annotations.ultragate\.io/diverted-from-color}") state from "" ;;
  "get deployment ultragate-green -o jsonpath={.status.readyReplicas}") state ready-green 2 ;;
  "get deployment ultragate-blue -o jsonpath={.status.readyReplicas}") state ready-blue 2 ;;
  "get deployment nodejs-api -o jsonpath={.status.readyReplicas}") state ready-nodejs 2 ;;
  "get endpoints ultragate -o jsonpath={.subsets[*].addresses[*].ip}") echo 10.1.0.7 ;;
  "get pods -l app=ultragate -o jsonpath={.items[*].metadata.name}") echo ug-1 ug-2 ;;
  patch\ service\ ultragate*)
    case "$*" in
      *nodejs-api*) echo nodejs-api > "$FAKE/app" ;;
      *green*) echo green > "$FAKE/color"; echo ultragate > "$FAKE/app" ;;
      *blue*) echo blue > "$FAKE/color"; echo ultragate > "$FAKE/app" ;;
    esac
    echo "service/ultragate patched" ;;
  annotate\ service\ ultragate*) all="$*"; echo "${all##*=}" > "$FAKE/from"; echo annotated ;;
  exec\ *)
    if [ "$2" = "$(state exec-fail none)" ]; then echo "curl: (22) The requested URL returned error: 404" >&2; exit 22; fi
    echo '{"action":"done","duration_ms":0.5}' ;;
  "logs ug-1 --previous"|"logs ug-2 --previous") echo "previous terminated container not found" >&2; exit 1 ;;
  *) echo "fake output of: $*" ;;
esac
"#;

struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    fn new(name: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!("ug-fake-kube-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let kubectl = dir.join("bin/kubectl");
        std::fs::write(&kubectl, FAKE_KUBECTL).unwrap();
        Command::new("chmod")
            .arg("+x")
            .arg(&kubectl)
            .status()
            .unwrap();
        Cluster { dir }
    }

    fn set(&self, key: &str, value: &str) {
        std::fs::write(self.dir.join(key), format!("{value}\n")).unwrap();
    }

    fn run(&self, script: &str, args: &[&str]) -> Output {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/scripts")
            .join(script);
        let env_path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("bash")
            .arg(path)
            .args(args)
            .env("PATH", env_path)
            .env("FAKE", &self.dir)
            .output()
            .unwrap()
    }

    /// The kubectl calls made, one per line, flags as given.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn emergency_rollback_switches_to_the_ready_color_and_verifies() {
    let k = Cluster::new("switch");
    let out = k.run(
        "rollback.sh",
        &["emergency", "--namespace", "prod", "--context", "east"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let calls = k.calls();
    assert_eq!(calls.len(), 4, "{calls:#?}");
    assert_eq!(
        calls[0],
        "--context east -n prod get service ultragate -o jsonpath={.spec.selector.color}"
    );
    assert_eq!(
        calls[1],
        "--context east -n prod get deployment ultragate-green -o jsonpath={.status.readyReplicas}"
    );
    assert!(
        calls[2].starts_with("--context east -n prod patch service ultragate")
            && calls[2].contains("\"color\":\"green\"")
    );
    assert_eq!(calls[3], calls[0], "verified after the patch");
    assert!(text(&out).contains("switched the ultragate Service from blue to green"));
}

#[test]
fn switch_refuses_when_the_other_color_has_no_ready_pods() {
    let k = Cluster::new("refuse");
    k.set("ready-green", "0");
    let out = k.run("rollback.sh", &["switch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("ultragate-green has no ready pods; not switching from blue"),
        "{}",
        text(&out)
    );
    assert!(
        !k.calls().iter().any(|c| c.contains("patch")),
        "nothing changed"
    );
}

#[test]
fn emergency_without_a_ready_other_color_undoes_the_live_rollout() {
    let k = Cluster::new("undo");
    k.set("ready-green", "0");
    let out = k.run("rollback.sh", &["emergency"]);
    assert!(out.status.success(), "{}", text(&out));
    let calls = k.calls();
    assert_eq!(
        &calls[2..],
        [
            "-n ultragate rollout undo deployment/ultragate-blue",
            "-n ultragate rollout status deployment/ultragate-blue --timeout=120s"
        ]
    );
}

#[test]
fn dry_run_prints_changes_and_makes_none() {
    let k = Cluster::new("dry");
    let out = k.run("rollback.sh", &["emergency", "--dry-run"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("+ kubectl -n ultragate patch service ultragate"),
        "{}",
        text(&out)
    );
    assert!(
        k.calls().iter().all(|c| c.contains(" get ")),
        "only reads ran: {:?}",
        k.calls()
    );
}

#[test]
fn divert_to_nodejs_and_back() {
    let k = Cluster::new("divert");
    k.set("color", "green");
    let out = k.run("divert.sh", &["to-nodejs"]);
    assert!(out.status.success(), "{}", text(&out));
    let calls = k.calls();
    assert_eq!(
        calls[0],
        "-n ultragate get deployment nodejs-api -o jsonpath={.status.readyReplicas}"
    );
    assert!(calls[2]
        .contains("annotate service ultragate --overwrite ultragate.io/diverted-from-color=green"));
    assert!(
        calls[3].contains("patch service ultragate")
            && calls[3].contains("\"app\":\"nodejs-api\",\"color\":null")
    );
    assert!(
        calls[4].ends_with("{.spec.selector.app}") && calls[5].contains("get endpoints"),
        "verified: {calls:#?}"
    );
    let out = k.run("divert.sh", &["back"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("selects the gateway again (color green)"),
        "{}",
        text(&out)
    );
}

#[test]
fn divert_refuses_without_ready_nodejs_pods() {
    let k = Cluster::new("divert-refuse");
    k.set("ready-nodejs", "0");
    let out = k.run("divert.sh", &["to-nodejs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("nodejs-api has no ready pods; not diverting"));
}

#[test]
fn cache_op_runs_in_every_pod_and_fails_when_one_does() {
    let k = Cluster::new("cache");
    let out = k.run("cache-op.sh", &["verify"]);
    assert!(out.status.success(), "{}", text(&out));
    let execs: Vec<String> = k
        .calls()
        .into_iter()
        .filter(|c| c.contains(" exec "))
        .collect();
    assert_eq!(
        execs,
        [
            "-n ultragate exec ug-1 -- curl -sS -f -X POST http://localhost:8080/admin/cache/verify",
            "-n ultragate exec ug-2 -- curl -sS -f -X POST http://localhost:8080/admin/cache/verify",
        ]
    );
    assert!(
        text(&out).contains("ug-1: ok {\"action\":\"done\"")
            && text(&out).contains("verify done in every gateway pod")
    );

    let k = Cluster::new("cache-fail");
    k.set("exec-fail", "ug-2");
    let out = k.run("cache-op.sh", &["restore"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("ug-2: FAILED") && text(&out).contains("restore failed in 1 pod(s)"),
        "{}",
        text(&out)
    );
}

#[test]
fn unknown_arguments_are_refused_by_every_script() {
    let k = Cluster::new("args");
    for (script, args) in [
        ("rollback.sh", vec!["sideways"]),
        ("rollback.sh", vec!["emergency", "--force"]),
        ("divert.sh", vec!["to-mars"]),
        ("cache-op.sh", vec!["explode"]),
        ("collect-diagnostics.sh", vec!["--verbose"]),
    ] {
        let out = k.run(script, &args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{script} {args:?}: {}",
            text(&out)
        );
        assert!(text(&out).contains("usage:"), "{script}");
    }
    for script in [
        "rollback.sh",
        "divert.sh",
        "cache-op.sh",
        "collect-diagnostics.sh",
        "performance-test.sh",
    ] {
        let out = k.run(script, &["--help"]);
        assert!(
            out.status.success() && text(&out).contains("usage:"),
            "{script} --help"
        );
    }
    assert!(k.calls().is_empty(), "no kubectl call on misuse");
}

#[test]
fn diagnostics_land_in_one_tarball() {
    let k = Cluster::new("diag");
    let out_dir = k.dir.join("out");
    let out = k.run(
        "collect-diagnostics.sh",
        &["--output", out_dir.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let tarball = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let list = Command::new("tar")
        .args(["-tzf", &tarball])
        .output()
        .unwrap();
    let files = String::from_utf8_lossy(&list.stdout);
    for f in [
        "events.txt",
        "configmap.yaml",
        "ug-1.log",
        "ug-1.previous.log",
        "ug-2.health.txt",
        "ug-2.metrics.txt",
        "ug-1.admin-events.txt",
        "ug-1.admin-config.txt",
    ] {
        assert!(files.contains(f), "{f} missing from {files}");
    }
}

#[test]
fn configmap_toml_passes_check_config() {
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s/configmap.yaml"),
    )
    .unwrap();
    let block: Vec<&str> = yaml
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("gateway.toml: |"))
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(""))
        .collect();
    assert!(block.len() > 10, "{block:?}");
    // The token file is the mounted Secret: a stand-in here.
    let token = std::env::temp_dir().join(format!("ug-configmap-token-{}", std::process::id()));
    std::fs::write(&token, "t0ken\n").unwrap();
    let toml = block
        .join("\n")
        .replace("/etc/ultragate-secret/token", &token.display().to_string());
    assert!(
        toml.contains(&*token.display().to_string()),
        "the token comes from a file"
    );
    let file = std::env::temp_dir().join(format!("ug-configmap-{}.toml", std::process::id()));
    std::fs::write(&file, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ultragate"))
        .arg("--check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(token);
}

#[test]
fn hugepages_setup_reports_and_refuses_bad_arguments() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hugepages-setup.sh");
    let run = |args: &[&str]| {
        Command::new("bash")
            .arg(&script)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(run(&["--help"]).status.success());
    for bad in [
        vec!["--frobnicate"],
        vec!["--size", "3M"],
        vec!["--pages", "many"],
    ] {
        let out = run(&bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out));
    }
    // --check changes nothing and says what it found, ready or not.
    let out = run(&["--check"]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
    let report = text(&out);
    assert!(
        report.contains("hugepages 2M: total")
            && report.contains("hugetlbfs:")
            && report.contains("IOMMU:"),
        "{report}"
    );
}
