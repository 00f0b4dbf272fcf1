//! The deploy tree checked without a cluster: the runbook scripts against
//! a recording fake `kubectl` on PATH (a double for the cluster, not for
//! the product), and the ConfigMap's TOML through `ultragate --check-config`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FAKE_KUBECTL: &str = r#"#!/usr/bin/env bash
# Records every call; answers from a small state directory. With a file
# "down" in it, answers as kubectl does when the API server is unreachable.
echo "$*" >> "$FAKE/log"
if [ -e "$FAKE/down" ]; then
  echo "Unable to connect to the server: dial tcp 10.96.0.1:443: i/o timeout" >&2
  exit 1
fi
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --context|-n) shift 2 ;;
    --request-timeout=*) shift ;;
    *) args+=("$1"); shift ;;
  esac
done
set -- "${args[@]}"
state() { cat "$FAKE/$1" 2>/dev/null || echo "$2"; }
put() { if [ "$2" = null ]; then rm -f "$FAKE/$1"; else echo "$2" > "$FAKE/$1"; fi; }
case "$*" in
  "get namespace ultragate -o name") echo namespace/ultragate ;;
  "get service ultragate -o jsonpath={.spec.selector.color}") state color blue ;;
  "get service ultragate -o jsonpath={.spec.selector.app}") state app ultragate ;;
  "get service ultragate -o jsonpath={.metadata.annotations.ultragate\.io/diverted-from-color}") state from "" ;;
  "get service ultragate -o jsonpath={.metadata.annotations.ultragate\.io/emergency-from}") state efrom "" ;;
  "get deployment ultragate-"*" -o jsonpath={.status.readyReplicas}") c=${3#ultragate-}; state "ready-$c" 2 ;;
  "get deployment ultragate-"*" -o jsonpath={.spec.replicas}") c=${3#ultragate-}; state "replicas-$c" 2 ;;
  "get deployment nodejs-api -o jsonpath={.status.readyReplicas}") state ready-nodejs 2 ;;
  "get endpoints ultragate -o jsonpath={.subsets[*].addresses[*].ip}") echo 10.1.0.7 ;;
  "get pods -l app=ultragate -o jsonpath={.items[*].metadata.name}") echo ug-1 ug-2 ;;
  "get configmap "*) printf 'data:\n  gateway.toml: |\n    [admin]\n    token = "s3cr3t-admin"\n' ;;
  scale\ deployment/ultragate-*)
    c=${2#deployment/ultragate-}; n=${3#--replicas=}
    put "replicas-$c" "$n"; put "ready-$c" "$(state "stuck-$c" "$n")"
    echo "deployment.apps/ultragate-$c scaled" ;;
  patch\ service\ ultragate*)
    p=$7
    case "$p" in *'"app":"nodejs-api"'*) put app nodejs-api ;; *'"app":"ultragate"'*) put app ultragate ;; esac
    case "$p" in *'"color":"green"'*) put color green ;; *'"color":"blue"'*) put color blue ;; *'"color":null'*) put color "" ;; esac
    case "$p" in *'diverted-from-color":null'*) put from null ;; *'diverted-from-color":"'*) v=${p#*diverted-from-color\":\"}; put from "${v%%\"*}" ;; esac
    case "$p" in *'emergency-from":null'*) put efrom null ;; *'emergency-from":"'*) v=${p#*emergency-from\":\"}; put efrom "${v%%\"*}" ;; esac
    echo "service/ultragate patched" ;;
  exec\ *)
    if [ "$2" = "$(state exec-fail none)" ]; then echo "curl: (22) The requested URL returned error: 404" >&2; exit 22; fi
    case "$*" in
      *admin/config*) printf '[admin]\ntoken = "s3cr3t-admin"\n' ;;
      *) state "answer-$2" '{"action":"verify","checked":10,"corrupt":0,"evicted":0}' ;;
    esac ;;
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

impl Cluster {
    fn get(&self, key: &str) -> String {
        std::fs::read_to_string(self.dir.join(key))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    fn changes(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| !c.contains(" get "))
            .collect()
    }
}

#[test]
fn every_kubectl_call_has_a_request_timeout() {
    let k = Cluster::new("timeout");
    let out = k.run(
        "rollback.sh",
        &["emergency", "--namespace", "prod", "--context", "east"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = k.run("divert.sh", &["to-nodejs", "--request-timeout", "3s"]);
    assert!(out.status.success(), "{}", text(&out));
    let calls = k.calls();
    assert!(calls.len() > 5, "{calls:#?}");
    assert!(
        calls[0].starts_with("--request-timeout=10s --context east -n prod get service ultragate"),
        "{calls:#?}"
    );
    assert!(
        calls.iter().all(|c| c.starts_with("--request-timeout=")),
        "{calls:#?}"
    );
    assert!(calls.last().unwrap().starts_with("--request-timeout=3s "));
}

#[test]
fn emergency_rollback_switches_once_and_never_flips_back_by_itself() {
    let k = Cluster::new("switch");
    let out = k.run("rollback.sh", &["emergency"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("switched the ultragate Service from blue to green (2 ready pods)"));
    assert_eq!(
        (k.get("color"), k.get("efrom")),
        ("green".into(), "blue".into())
    );

    // The on-call engineer runs it again: refused, nothing changes.
    let before = k.changes().len();
    let out = k.run("rollback.sh", &["emergency"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(
            "ultragate-green went live by an emergency switch from blue; not switching back"
        ),
        "{}",
        text(&out)
    );
    assert_eq!(k.changes().len(), before, "refused means nothing changed");
    assert_eq!(k.get("color"), "green");

    // Asking for the live color is refused too; --force makes it a no-op.
    let out = k.run("rollback.sh", &["emergency", "--to", "green"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("ultragate-green is already live"));
    let out = k.run("rollback.sh", &["emergency", "--to", "green", "--force"]);
    assert!(out.status.success(), "{}", text(&out));

    // Back on purpose, said so.
    let out = k.run("rollback.sh", &["emergency", "--to", "blue", "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(k.get("color"), "blue");
    // A planned switch clears the emergency mark.
    let out = k.run("rollback.sh", &["switch"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        (k.get("color"), k.get("efrom")),
        ("green".into(), String::new())
    );
}

#[test]
fn the_other_color_is_scaled_to_the_live_count_before_the_switch() {
    let k = Cluster::new("scale");
    k.set("replicas-blue", "10");
    let out = k.run("rollback.sh", &["emergency"]);
    assert!(out.status.success(), "{}", text(&out));
    let changes = k.changes();
    assert!(
        changes[0].ends_with("scale deployment/ultragate-green --replicas=10"),
        "{changes:#?}"
    );
    assert!(changes.iter().position(|c| c.contains("patch")) > Some(0));
    assert!(text(&out).contains("(10 ready pods)"), "{}", text(&out));

    // Green gets only 3 of 10 pods ready in time: refused unless --force.
    let k = Cluster::new("scale-stuck");
    k.set("replicas-blue", "10");
    k.set("stuck-green", "3");
    let out = k.run("rollback.sh", &["emergency", "--wait", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("ultragate-green has 3 of 10 pods ready; not switching from blue"),
        "{}",
        text(&out)
    );
    assert!(k
        .calls()
        .iter()
        .any(|c| c.contains("rollout status deployment/ultragate-green --timeout=1s")));
    assert_eq!(k.get("color"), "");
    let out = k.run("rollback.sh", &["emergency", "--wait", "1s", "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(k.get("color"), "green");
}

#[test]
fn switch_refuses_when_the_other_color_has_no_ready_pods() {
    let k = Cluster::new("refuse");
    k.set("ready-green", "0");
    k.set("replicas-green", "2");
    k.set("stuck-green", "0");
    let out = k.run("rollback.sh", &["switch", "--wait", "1s"]);
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
    let out = k.run("rollback.sh", &["emergency", "--wait", "1s"]);
    assert!(out.status.success(), "{}", text(&out));
    let changes: Vec<String> = k
        .changes()
        .into_iter()
        .filter(|c| !c.contains("ultragate-green"))
        .collect();
    assert_eq!(
        changes,
        [
            "--request-timeout=10s -n ultragate rollout undo deployment/ultragate-blue",
            "--request-timeout=10s -n ultragate rollout status deployment/ultragate-blue --timeout=1s"
        ]
    );
}

#[test]
fn dry_run_says_would_and_changes_nothing() {
    let k = Cluster::new("dry");
    k.set("replicas-blue", "4");
    for (script, args) in [
        ("rollback.sh", vec!["emergency", "--dry-run"]),
        ("divert.sh", vec!["to-nodejs", "--dry-run"]),
        ("cache-op.sh", vec!["clear", "--dry-run"]),
        ("collect-diagnostics.sh", vec!["--dry-run"]),
    ] {
        let out = k.run(script, &args);
        assert!(out.status.success(), "{script}: {}", text(&out));
        let said = text(&out);
        assert!(said.contains("would"), "{script}: {said}");
        assert!(
            !said.contains("switched") && !said.contains("diverted the"),
            "{said}"
        );
    }
    let said = text(&k.run("rollback.sh", &["emergency", "--dry-run"]));
    assert!(
        said.contains("would run: kubectl --request-timeout=10s -n ultragate scale deployment/ultragate-green --replicas=4")
            && said.contains("would switch the ultragate Service from blue to green"),
        "{said}"
    );
    assert!(k.changes().is_empty(), "only reads ran: {:?}", k.changes());
    assert_eq!(
        (k.get("color"), k.get("app")),
        (String::new(), String::new())
    );
}

#[test]
fn divert_twice_then_back_lands_on_the_color_that_was_live() {
    let k = Cluster::new("divert");
    k.set("color", "green");
    let out = k.run("divert.sh", &["to-nodejs"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("diverted the ultragate Service to nodejs-api (was color green)"));
    let patch = k.changes().pop().unwrap();
    assert!(
        patch.contains("\"ultragate.io/diverted-from-color\":\"green\"")
            && patch.contains("\"app\":\"nodejs-api\",\"color\":null"),
        "saved color and selector in one patch: {patch}"
    );
    assert!(
        k.calls().iter().any(|c| c.contains("get endpoints")),
        "verified"
    );

    let out = k.run("divert.sh", &["to-nodejs"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("already diverted to nodejs-api (from color green); nothing changed")
    );
    assert_eq!(
        k.get("from"),
        "green",
        "the second run kept what the first saved"
    );

    let out = k.run("divert.sh", &["back"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("selects the gateway again (color green)"),
        "{}",
        text(&out)
    );
    assert_eq!(
        (k.get("app"), k.get("color"), k.get("from")),
        ("ultragate".into(), "green".into(), String::new())
    );
    let out = k.run("divert.sh", &["back"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not diverted"), "{}", text(&out));
}

#[test]
fn divert_back_without_a_saved_color_asks_which() {
    let k = Cluster::new("divert-nocolor");
    k.set("app", "nodejs-api");
    let out = k.run("divert.sh", &["back"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("say which with --to blue|green"),
        "{}",
        text(&out)
    );
    let out = k.run("divert.sh", &["back", "--to", "green"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(k.get("color"), "green");
}

#[test]
fn divert_refuses_without_ready_nodejs_pods() {
    let k = Cluster::new("divert-refuse");
    k.set("ready-nodejs", "0");
    let out = k.run("divert.sh", &["to-nodejs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("nodejs-api has no ready pods; not diverting"));
    assert!(k.changes().is_empty());
}

#[test]
fn an_unreachable_cluster_exits_3_and_a_refusal_1() {
    let k = Cluster::new("down");
    k.set("down", "");
    for (script, args) in [
        ("rollback.sh", vec!["emergency"]),
        ("divert.sh", vec!["to-nodejs"]),
        ("divert.sh", vec!["back"]),
        ("cache-op.sh", vec!["verify"]),
    ] {
        let out = k.run(script, &args);
        assert_eq!(out.status.code(), Some(3), "{script}: {}", text(&out));
        assert!(
            text(&out).contains("cluster unreachable"),
            "{script}: {}",
            text(&out)
        );
    }
}

#[test]
fn cache_op_prints_a_table_and_says_corrupt() {
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
            "--request-timeout=10s -n ultragate exec ug-1 -- curl -sS -f -m 30 -X POST http://localhost:8081/admin/cache/verify",
            "--request-timeout=10s -n ultragate exec ug-2 -- curl -sS -f -m 30 -X POST http://localhost:8081/admin/cache/verify",
        ]
    );
    let said = text(&out);
    assert!(
        said.contains("POD")
            && said.contains("CORRUPT")
            && said.contains("verify done in every gateway pod"),
        "{said}"
    );
    assert!(
        said.lines()
            .any(|l| l.starts_with("ug-1") && l.contains(" ok ") && l.contains(" 10 ")),
        "{said}"
    );

    k.set(
        "answer-ug-2",
        r#"{"action":"verify","checked":10,"corrupt":3,"evicted":3}"#,
    );
    let out = k.run("cache-op.sh", &["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.lines()
            .any(|l| l.starts_with("ug-2") && l.contains("CORRUPT")),
        "{said}"
    );
    assert!(
        said.contains("CORRUPT: 3 corrupt entries in 1 pod(s)"),
        "{said}"
    );

    let k = Cluster::new("cache-fail");
    k.set("exec-fail", "ug-2");
    let out = k.run("cache-op.sh", &["restore"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("FAILED") && text(&out).contains("restore failed in 1 pod(s)"),
        "{}",
        text(&out)
    );
}

#[test]
fn unknown_arguments_are_refused_by_every_script() {
    let k = Cluster::new("args");
    for (script, args) in [
        ("rollback.sh", vec!["sideways"]),
        ("rollback.sh", vec!["emergency", "--to", "purple"]),
        ("divert.sh", vec!["to-mars"]),
        ("divert.sh", vec!["back", "--force"]),
        ("cache-op.sh", vec!["explode"]),
        ("cache-op.sh", vec!["clear", "--to", "blue"]),
        ("collect-diagnostics.sh", vec!["--verbose"]),
        ("performance-test.sh", vec!["--frobnicate"]),
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
fn performance_test_dry_run_goes_through_the_upstream_path() {
    let k = Cluster::new("perf");
    let out = k.run("performance-test.sh", &["--quick-validation", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out)
            .contains("would offer 200 req/s for 5s over 8 connections to http://127.0.0.1:8080/;"),
        "{}",
        text(&out)
    );
}

/// The files of a tarball and their concatenated contents.
fn untar(tarball: &str) -> (String, String) {
    let list = Command::new("tar")
        .args(["-tzf", tarball])
        .output()
        .unwrap();
    let all = Command::new("tar")
        .args(["-xzOf", tarball])
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&list.stdout).into_owned(),
        String::from_utf8_lossy(&all.stdout).into_owned(),
    )
}

#[test]
fn diagnostics_land_in_one_tarball_without_secrets() {
    let k = Cluster::new("diag");
    let out_dir = k.dir.join("out");
    let out = k.run(
        "collect-diagnostics.sh",
        &["--output", out_dir.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let tarball = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (files, contents) = untar(&tarball);
    for f in [
        "events.txt",
        "configmap-ultragate-config-blue.yaml",
        "ug-1.log",
        "ug-1.previous.log",
        "ug-2.health.txt",
        "ug-2.metrics.txt",
        "ug-1.admin-events.txt",
        "ug-1.admin-config.txt",
    ] {
        assert!(files.contains(f), "{f} missing from {files}");
    }
    assert!(
        !contents.contains("s3cr3t-admin"),
        "a secret reached the tarball"
    );
    assert!(contents.contains("token = <redacted>"), "{contents}");
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert_eq!(left.len(), 1, "only the tarball is written");
}

#[test]
fn diagnostics_without_the_api_server_keep_what_the_machine_has() {
    let k = Cluster::new("diag-down");
    k.set("down", "");
    let out_dir = k.dir.join("out");
    let out = k.run(
        "collect-diagnostics.sh",
        &[
            "--output",
            out_dir.to_str().unwrap(),
            "--admin",
            "http://127.0.0.1:9",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let tarball = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (files, contents) = untar(&tarball);
    assert!(
        files.contains("cluster-unreachable.txt") && files.contains("local/health.txt"),
        "{files}"
    );
    assert!(
        contents.contains("Unable to connect to the server"),
        "{contents}"
    );
}

/// Every `gateway.toml: |` block of a manifest file, unindented.
fn gateway_tomls(file: &str) -> Vec<String> {
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/k8s")
            .join(file),
    )
    .unwrap();
    let mut blocks = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with("gateway.toml: |") {
            let mut block = Vec::new();
            while let Some(l) = lines.next_if(|l| l.is_empty() || l.starts_with("    ")) {
                block.push(l.strip_prefix("    ").unwrap_or(""));
            }
            blocks.push(block.join("\n"));
        }
    }
    blocks
}

#[test]
fn every_configmap_toml_passes_check_config() {
    let colors = gateway_tomls("configmap.yaml");
    assert_eq!(colors.len(), 2, "a ConfigMap per color");
    assert_eq!(
        colors[0], colors[1],
        "both colors start from the same config"
    );
    let dpdk = gateway_tomls("dpdk/gateway-dpdk.yaml");
    assert_eq!(dpdk.len(), 1, "the DPDK variant has a ConfigMap of its own");
    assert!(dpdk[0].contains("enable_dpdk = true") && dpdk[0].contains("[dpdk]"));
    // The token file is the mounted Secret: a stand-in here.
    let token = std::env::temp_dir().join(format!("ug-configmap-token-{}", std::process::id()));
    std::fs::write(&token, "t0ken\n").unwrap();
    for (i, toml) in colors.iter().chain(&dpdk).enumerate() {
        assert!(toml.lines().count() > 10, "{toml}");
        let toml = toml.replace("/etc/ultragate-secret/token", &token.display().to_string());
        assert!(
            toml.contains(&*token.display().to_string()),
            "the token comes from a file"
        );
        let file =
            std::env::temp_dir().join(format!("ug-configmap-{}-{i}.toml", std::process::id()));
        std::fs::write(&file, toml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ultragate"))
            .arg("--check-config")
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let _ = std::fs::remove_file(file);
    }
    let _ = std::fs::remove_file(token);
}

#[test]
fn the_dpdk_variant_never_overlaps_a_color_and_probes_the_admin_port() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s");
    let dpdk = std::fs::read_to_string(root.join("dpdk/gateway-dpdk.yaml")).unwrap();
    assert!(!dpdk.contains("color: blue") && !dpdk.contains("color: green"));
    assert_eq!(
        dpdk.matches("port: admin}").count(),
        2,
        "both probes on the admin port"
    );
    assert!(dpdk.contains("drop: [ALL]") && dpdk.contains("add: [IPC_LOCK]"));
    for color in ["blue", "green"] {
        let d = std::fs::read_to_string(root.join(format!("gateway-{color}.yaml"))).unwrap();
        assert!(d.contains(&format!("configMap: {{name: ultragate-config-{color}}}")));
    }
    let pdb = std::fs::read_to_string(root.join("pdb.yaml")).unwrap();
    for color in ["blue", "green", "dpdk"] {
        assert!(
            pdb.contains(&format!("name: ultragate-{color}\n")),
            "a PDB for {color}"
        );
    }
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
