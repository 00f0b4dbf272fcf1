//! The deploy tree checked without a cluster: the runbook scripts against
//! a recording fake `kubectl` on PATH (a double for the cluster, not for
//! the product), and the ConfigMap's TOML through `ultragate --check-config`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::k8s;

const FAKE_KUBECTL: &str = r#"#!/usr/bin/env bash
# Records every call; answers from a small state directory, under the
# names the scripts use (the ULTRAGATE_* variables an overlay's scripts
# set, else the default overlay's). With a file "down" in it, answers as
# kubectl does when the API server is unreachable (the file's text, or a
# timeout).
echo "$*" >> "$FAKE/log"
if [ -e "$FAKE/down" ]; then
  msg=$(cat "$FAKE/down")
  echo "${msg:-Unable to connect to the server: dial tcp 10.96.0.1:443: i/o timeout}" >&2
  exit 1
fi
APP=${ULTRAGATE_APP:-ultragate}
SVC=${ULTRAGATE_SERVICE:-ultragate}
DEP=${ULTRAGATE_DEPLOYMENT:-ultragate}
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
# A merge patch's value for KEY: the string, "null", or nothing.
value() { # patch key
  case "$1" in
    *"\"$2\":null"*) echo null ;;
    *"\"$2\":\""*) v=${1#*\"$2\":\"}; echo "${v%%\"*}" ;;
    *"\"$2\":"[0-9]*) v=${1#*\"$2\":}; echo "${v%%[!0-9]*}" ;;
  esac
}
color() { c=$(state color blue); [ "$c" = none ] || echo "$c"; }
case "$*" in
  "get namespace "*" -o name") echo "namespace/$3" ;;
  "get service $SVC -o jsonpath={.spec.selector.app}") state app "$APP" ;;
  "get service $SVC -o jsonpath={.spec.selector}")
    c=$(color)
    printf '{"app":"%s"%s}\n' "$(state app "$APP")" "${c:+,\"traffic.ultragate.io/$c\":\"true\"}" ;;
  "get service $SVC -o jsonpath={.metadata.annotations.ultragate\.io/emergency-from}") state efrom "" ;;
  "get service $SVC -o jsonpath={.spec.ports[*].name}") echo http https ;;
  "get endpointslices -l kubernetes.io/service-name=$SVC -o jsonpath="*)
    if [ "$(state app "$APP")" = nodejs-api ]; then
      ready=$(state ready-nodejs 2); ports=$(state nodejs-ports "http,https,")
    else
      ready=$(state "ready-$(color)" 2); ports="http,https,"
    fi
    if [ "$ready" -gt 0 ]; then echo "$ports true;;"; else echo "$ports false;"; fi ;;
  "get deployment $DEP-"*" -o jsonpath={.status.readyReplicas}") c=${3#"$DEP"-}; state "ready-$c" 2 ;;
  "get deployment $DEP-"*" -o jsonpath={.spec.replicas}") c=${3#"$DEP"-}; state "replicas-$c" 2 ;;
  "get deployment nodejs-api -o jsonpath={.status.readyReplicas}") state ready-nodejs 2 ;;
  "get hpa $DEP-"*" -o jsonpath={.metadata.annotations.ultragate\.io/held-from}") c=${3#"$DEP"-}; state "held-$c" "" ;;
  "get hpa $DEP-"*" -o jsonpath={.spec.minReplicas}") c=${3#"$DEP"-}; state "min-$c" 2 ;;
  "get hpa $DEP-"*" -o jsonpath={.spec.maxReplicas}") c=${3#"$DEP"-}; state "max-$c" 10 ;;
  "patch hpa $DEP-"*)
    c=${3#"$DEP"-}; p=$7
    put "min-$c" "$(value "$p" minReplicas)"; put "max-$c" "$(value "$p" maxReplicas)"
    put "held-$c" "$(value "$p" ultragate.io/held-from)"
    echo "horizontalpodautoscaler.autoscaling/$3 patched" ;;
  "get pods -l app=$APP -o jsonpath={.items[*].metadata.name}") echo ug-1 ug-2 ;;
  "get configmap "*) printf 'data:\n  gateway.toml: |\n    [admin]\n    token = "s3cr3t-admin"\n' ;;
  "scale deployment/$DEP-"*)
    c=${2#deployment/"$DEP"-}; n=${3#--replicas=}
    put "replicas-$c" "$n"; put "ready-$c" "$(state "stuck-$c" "$n")"
    echo "deployment.apps/$DEP-$c scaled" ;;
  "patch service $SVC "*)
    p=$7
    a=$(value "$p" app); [ -z "$a" ] || put app "$a"
    [ "$(value "$p" traffic.ultragate.io/green)" != true ] || put color green
    [ "$(value "$p" traffic.ultragate.io/blue)" != true ] || put color blue
    e=$(value "$p" ultragate.io/emergency-from); [ -z "$e" ] || put efrom "$e"
    echo "service/$SVC patched" ;;
  exec\ *)
    if [ "$2" = "$(state exec-fail none)" ]; then
      echo "curl: (7) Failed to connect to localhost port 8081 after 0 ms: Connection refused" >&2
      echo "command terminated with exit code 7" >&2
      exit 7
    fi
    case "$*" in
      *admin/config*) printf '[admin]\ntoken = "s3cr3t-admin"\n' ;;
      *performance-test.sh*) echo "PASS requests=1000 errors=0 error_rate=0.0000 p99_ms=0.412 (limits: p99 <= 10 ms, errors <= 0.001)" ;;
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

    /// Runs a script of `deploy/scripts`, or one at a path from `deploy/`
    /// (`k8s/ultra-cpp/scripts/rollback.sh`), from `deploy/` as the
    /// runbook does.
    fn run(&self, script: &str, args: &[&str]) -> Output {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let path = if script.contains('/') {
            PathBuf::from(script)
        } else {
            Path::new("scripts").join(script)
        };
        let env_path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("bash")
            .arg(path)
            .args(args)
            .current_dir(deploy)
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
    assert!(text(&out).contains("switched the Service ultragate from blue to green (2 ready pods)"));
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
            && said.contains("would switch the Service ultragate from blue to green"),
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
    assert!(
        text(&out).contains("diverted the Service ultragate to nodejs-api (color green stays"),
        "{}",
        text(&out)
    );
    let patch = k.changes().pop().unwrap();
    assert!(
        patch.ends_with(
            r#"patch service ultragate --type merge -p {"spec":{"selector":{"app":"nodejs-api"}}}"#
        ),
        "the runbook's own patch: {patch}"
    );
    assert!(
        k.calls()
            .iter()
            .any(|c| c.contains("get endpointslices -l kubernetes.io/service-name=ultragate")),
        "verified"
    );

    let out = k.run("divert.sh", &["to-nodejs"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(
            "already diverted to nodejs-api (color green kept in the selector); nothing changed"
        ),
        "{}",
        text(&out)
    );

    let out = k.run("divert.sh", &["back"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("selects the gateway again (color green)"),
        "{}",
        text(&out)
    );
    assert_eq!(
        (k.get("app"), k.get("color")),
        ("ultragate".into(), "green".into())
    );
    let out = k.run("divert.sh", &["back"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not diverted"), "{}", text(&out));
}

#[test]
fn divert_back_after_the_runbooks_own_patch_returns_to_the_live_color() {
    // The runbook's `kubectl patch service … '{"spec":{"selector":{"app":
    // "nodejs-api"}}}'` leaves the color key; divert.sh back finds it.
    let k = Cluster::new("divert-runbook");
    k.set("app", "nodejs-api");
    k.set("color", "green");
    let out = k.run("divert.sh", &["back"]);
    assert!(out.status.success(), "{}", text(&out));
    let patch = k.changes().pop().unwrap();
    assert!(
        patch.ends_with(r#"{"spec":{"selector":{"app":"ultragate","traffic.ultragate.io/green":"true","traffic.ultragate.io/blue":null}}}"#),
        "{patch}"
    );
    assert_eq!(
        (k.get("app"), k.get("color")),
        ("ultragate".into(), "green".into())
    );
}

#[test]
fn divert_back_without_a_color_asks_which() {
    let k = Cluster::new("divert-nocolor");
    k.set("app", "nodejs-api");
    k.set("color", "none");
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
fn divert_names_every_port_left_without_endpoints() {
    // Node.js pods that serve HTTP only: the patch goes through (the
    // runbook's own would too), but the script says 443 is dark and fails.
    let k = Cluster::new("divert-ports");
    k.set("nodejs-ports", "http,");
    let out = k.run("divert.sh", &["to-nodejs"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("these ports of the Service ultragate have no ready endpoint: https"),
        "{}",
        text(&out)
    );
    // No Node.js pod ready after the patch: both ports named.
    let k = Cluster::new("divert-dark");
    k.set("ready-nodejs", "1");
    k.set("nodejs-ports", "http,https,");
    let out = k.run("divert.sh", &["to-nodejs"]);
    assert!(out.status.success(), "{}", text(&out));
    k.set("ready-nodejs", "0");
    k.set("app", "ultragate");
    let out = k.run("divert.sh", &["to-nodejs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no ready pods; not diverting"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_ultra_cpp_scripts_run_at_the_runbooks_paths_with_its_names() {
    let k = Cluster::new("ultra-cpp");
    k.set("replicas-blue", "4");
    let out = k.run("k8s/ultra-cpp/scripts/rollback.sh", &["emergency"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("switched the Service ultra-cpp-gateway from blue to green"),
        "{}",
        text(&out)
    );
    let calls = k.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.starts_with("--request-timeout=10s -n ultra-cpp ")),
        "{calls:#?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.ends_with("scale deployment/ultra-cpp-gateway-green --replicas=4")),
        "{calls:#?}"
    );
    // The runbook's performance check runs in a pod of the live color.
    let out = k.run(
        "k8s/ultra-cpp/scripts/performance-test.sh",
        &["--quick-validation"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("PASS requests=1000"), "{}", text(&out));
    assert_eq!(
        k.calls().pop().unwrap(),
        "--request-timeout=10s -n ultra-cpp exec deployment/ultra-cpp-gateway-green -- performance-test.sh --quick-validation"
    );
    for script in [
        "divert.sh",
        "cache-op.sh",
        "collect-diagnostics.sh",
        "scale.sh",
    ] {
        let out = k.run(&format!("k8s/ultra-cpp/scripts/{script}"), &["--help"]);
        assert!(
            out.status.success() && text(&out).contains("usage:"),
            "{script}"
        );
    }
    let out = k.run("k8s/ultra-cpp/scripts/cache-op.sh", &["verify"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        k.calls().iter().any(|c| c
            .ends_with("get pods -l app=ultra-cpp-gateway -o jsonpath={.items[*].metadata.name}")),
        "the overlay's label"
    );
}

#[test]
fn the_runbooks_scale_down_holds_against_the_autoscaler() {
    let k = Cluster::new("hold");
    let out = k.run("k8s/ultra-cpp/scripts/scale.sh", &["all", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("ultra-cpp-gateway-blue: 1 pods, held (scale.sh blue release gives the HPA its range 2-10 back)"),
        "{}",
        text(&out)
    );
    for c in ["blue", "green"] {
        assert_eq!(
            (k.get(&format!("min-{c}")), k.get(&format!("max-{c}"))),
            ("1".into(), "1".into())
        );
        assert_eq!(k.get(&format!("held-{c}")), "2-10");
        assert_eq!(k.get(&format!("replicas-{c}")), "1");
    }
    let changes = k.changes();
    let hpa = changes
        .iter()
        .position(|c| c.contains("patch hpa ultra-cpp-gateway-blue"))
        .unwrap();
    let scale = changes
        .iter()
        .position(|c| c.contains("scale deployment/ultra-cpp-gateway-blue"))
        .unwrap();
    assert!(
        hpa < scale,
        "the HPA holds before the Deployment shrinks: {changes:#?}"
    );
    // Held again (a count of 2): the range saved the first time stays.
    let out = k.run("k8s/ultra-cpp/scripts/scale.sh", &["blue", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        (k.get("min-blue"), k.get("held-blue")),
        ("2".into(), "2-10".into())
    );
    let out = k.run("k8s/ultra-cpp/scripts/scale.sh", &["all", "release"]);
    assert!(out.status.success(), "{}", text(&out));
    for c in ["blue", "green"] {
        assert_eq!(
            (k.get(&format!("min-{c}")), k.get(&format!("max-{c}"))),
            ("2".into(), "10".into())
        );
        assert_eq!(k.get(&format!("held-{c}")), "");
    }
    let out = k.run("k8s/ultra-cpp/scripts/scale.sh", &["blue", "release"]);
    assert!(
        text(&out).contains("is not held; nothing changed"),
        "{}",
        text(&out)
    );
    // Zero, the runbook's stop: no hold needed, the HPA leaves zero alone.
    let before = k.changes().len();
    let out = k.run("k8s/ultra-cpp/scripts/scale.sh", &["green", "0"]);
    assert!(out.status.success(), "{}", text(&out));
    let new: Vec<String> = k.changes().split_off(before);
    assert_eq!(
        new,
        ["--request-timeout=10s -n ultra-cpp scale deployment/ultra-cpp-gateway-green --replicas=0"]
    );
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

/// What kubectl prints when it could not act on the cluster, as kubectl
/// 1.32 prints it (copied from real runs: no kubeconfig, a refused or hung
/// API server, a name that does not resolve, a certificate it does not
/// trust, an API server that answers it cannot serve), and when the
/// cluster answered (forbidden, unauthorized, not found, a conflict), or
/// a command run by `kubectl exec` failed inside the pod.
const KUBECTL_SAYS: &[(&str, i32)] = &[
    (
        "E1203 14:40:19.664192   30281 memcache.go:265] \"Unhandled Error\" err=\"couldn't get current server API group list: Get \\\"http://localhost:8080/api?timeout=32s\\\": dial tcp 127.0.0.1:8080: connect: connection refused\"\nThe connection to the server localhost:8080 was refused - did you specify the right host or port?",
        3,
    ),
    ("The connection to the server 10.0.0.1:6443 was refused - did you specify the right host or port?", 3),
    ("E1203 14:41:02.120071    3310 memcache.go:265] \"Unhandled Error\" err=\"couldn't get current server API group list: Get \\\"https://127.0.0.1:16447/api?timeout=2s\\\": net/http: TLS handshake timeout\"\nThe connection to the server 127.0.0.1:16447 was refused - did you specify the right host or port?", 3),
    ("Unable to connect to the server: dial tcp 10.96.0.1:443: i/o timeout", 3),
    ("Unable to connect to the server: dial tcp: lookup api.prod.example.com on 10.255.255.53:53: no such host", 3),
    ("Unable to connect to the server: tls: failed to verify certificate: x509: certificate signed by unknown authority", 3),
    ("Unable to connect to the server: net/http: request canceled (Client.Timeout exceeded while awaiting headers)", 3),
    ("Error from server (ServiceUnavailable): the server is currently unable to handle the request", 3),
    ("Error from server (Timeout): the server was unable to return a response in the time allotted, but may still be processing the request (get services ultragate)", 3),
    ("error: error loading config file \"/root/.kube/config\": yaml: line 3: mapping values are not allowed in this context", 3),
    ("Error from server (Forbidden): services \"ultragate\" is forbidden: User \"system:serviceaccount:ci:deployer\" cannot get resource \"services\" in API group \"\" in the namespace \"ultragate\"", 1),
    ("error: You must be logged in to the server (Unauthorized)", 1),
    ("Error from server (NotFound): services \"ultragate\" not found", 1),
    ("Error from server (NotFound): deployments.apps \"ultragate-green\" not found", 1),
    ("error: the server doesn't have a resource type \"endpointslices\"", 1),
    ("Error from server (Conflict): Operation cannot be fulfilled on services \"ultragate\": the object has been modified; please apply your changes to the latest version and try again", 1),
    ("Error from server (BadRequest): container \"ultragate\" in pod \"ug-1\" is waiting to start: ContainerCreating", 1),
    // curl inside the pod, through `kubectl exec`: the cluster answered.
    ("curl: (7) Failed to connect to localhost port 8081 after 0 ms: Connection refused\ncommand terminated with exit code 7", 1),
];

#[test]
fn unreachable_or_answered_is_told_by_what_kubectl_really_prints() {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/scripts/lib.sh");
    for (message, code) in KUBECTL_SAYS {
        let out = Command::new("bash")
            .arg("-c")
            .arg(r#". "$1"; if is_unreachable "$2"; then exit 3; else exit 1; fi"#)
            .arg("lib")
            .arg(&lib)
            .arg(message)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(*code), "{message}");
    }
    // The scripts go by it: each message as the fake cluster's answer.
    for (message, code) in KUBECTL_SAYS.iter().filter(|(m, _)| !m.starts_with("curl")) {
        let k = Cluster::new("says");
        k.set("down", message);
        let out = k.run("divert.sh", &["to-nodejs"]);
        assert_eq!(out.status.code(), Some(*code), "{message}: {}", text(&out));
    }
}

/// A stand-in API server on loopback: discovery for services, and `code`
/// (a Kubernetes Status) for everything else. Serves until dropped.
struct FakeApi {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApi {
    fn start(code: u16) -> FakeApi {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !flag.load(Ordering::Relaxed) && std::time::Instant::now() < end {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                    .unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let path = path.split('?').next().unwrap_or(path);
                let (status, body) = match path {
                    "/api" => (200, r#"{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1"}]}"#.to_owned()),
                    "/apis" => (200, r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[]}"#.to_owned()),
                    "/api/v1" => (200, r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[{"name":"services","singularName":"service","namespaced":true,"kind":"Service","verbs":["get","list","patch"],"shortNames":["svc"]}]}"#.to_owned()),
                    _ => {
                        let (reason, message) = match code {
                            403 => ("Forbidden", r#"services \"ultragate\" is forbidden: User \"ci\" cannot get resource \"services\" in API group \"\" in the namespace \"ultragate\""#),
                            503 => ("ServiceUnavailable", "the server is currently unable to handle the request"),
                            _ => ("NotFound", r#"services \"ultragate\" not found"#),
                        };
                        (code, format!(r#"{{"kind":"Status","apiVersion":"v1","status":"Failure","message":"{message}","reason":"{reason}","code":{code}}}"#))
                    }
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FakeApi {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn the_scripts_read_the_real_kubectl_right() {
    // The machine's own kubectl (no fake on PATH), against loopback only.
    let dir = std::env::temp_dir().join(format!("ug-real-kubectl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = |name: &str, server: &str| {
        let file = dir.join(name);
        std::fs::write(
            &file,
            format!("apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"{server}\"}}}}]\nusers: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"),
        )
        .unwrap();
        file
    };
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // Accepts and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let forbidden = FakeApi::start(403);
    let unavailable = FakeApi::start(503);
    let cases = [
        ("no kubeconfig", None, 3),
        (
            "refused",
            Some(kubeconfig("refused", &format!("http://{closed}"))),
            3,
        ),
        (
            "hung",
            Some(kubeconfig(
                "hung",
                &format!("https://{}", hung.local_addr().unwrap()),
            )),
            3,
        ),
        (
            "unavailable",
            Some(kubeconfig(
                "unavailable",
                &format!("http://{}", unavailable.addr),
            )),
            3,
        ),
        (
            "forbidden",
            Some(kubeconfig(
                "forbidden",
                &format!("http://{}", forbidden.addr),
            )),
            1,
        ),
    ];
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/scripts/divert.sh");
    for (case, config, code) in cases {
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .args(["to-nodejs", "--request-timeout", "2s"])
            .env("HOME", &dir)
            .env_remove("KUBECONFIG");
        if let Some(c) = &config {
            cmd.env("KUBECONFIG", c);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{case}: {}", text(&out));
        if code == 3 {
            assert!(
                text(&out).contains("cluster unreachable"),
                "{case}: {}",
                text(&out)
            );
        } else {
            assert!(text(&out).contains("(Forbidden)"), "{case}: {}", text(&out));
        }
    }
    drop(hung);
    let _ = std::fs::remove_dir_all(&dir);
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
        ("performance-test.sh", vec!["--namespace", "x"]),
        ("scale.sh", vec!["purple", "1"]),
        ("scale.sh", vec!["blue", "many"]),
        ("scale.sh", vec!["blue"]),
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
        "scale.sh",
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
    // Without a kubeconfig kubectl says its "localhost:8080 was refused":
    // unreachable too, so the local collection goes on.
    k.set(
        "down",
        "The connection to the server localhost:8080 was refused - did you specify the right host or port?",
    );
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
    let (files, _) = untar(String::from_utf8_lossy(&out.stdout).trim());
    assert!(files.contains("cluster-unreachable.txt"), "{files}");
}

#[test]
fn every_rendered_gateway_toml_passes_check_config() {
    // The token file is the mounted Secret: a stand-in here.
    let token = std::env::temp_dir().join(format!("ug-configmap-token-{}", std::process::id()));
    std::fs::write(&token, "t0ken\n").unwrap();
    for overlay in ["default", "ultra-cpp", "dpdk"] {
        let objs = k8s::render(overlay);
        let tomls = k8s::gateway_tomls(&objs);
        let colors: Vec<&String> = tomls
            .iter()
            .filter(|(n, _)| n.ends_with("-blue") || n.ends_with("-green"))
            .map(|(_, t)| t)
            .collect();
        assert_eq!(colors.len(), 2, "{overlay}: a ConfigMap per color");
        assert_eq!(
            colors[0], colors[1],
            "{overlay}: both colors start from the same config"
        );
        if overlay == "dpdk" {
            let dpdk = tomls
                .iter()
                .find(|(n, _)| n == "ultragate-config-dpdk")
                .unwrap();
            assert!(dpdk.1.contains("enable_dpdk = true") && dpdk.1.contains("[dpdk]"));
        }
        for (name, toml) in &tomls {
            assert!(toml.lines().count() > 10, "{toml}");
            let toml = toml.replace("/etc/ultragate-secret/token", &token.display().to_string());
            assert!(
                toml.contains(&*token.display().to_string()),
                "the token comes from a file"
            );
            let file = std::env::temp_dir().join(format!(
                "ug-configmap-{}-{overlay}-{name}.toml",
                std::process::id()
            ));
            std::fs::write(&file, toml).unwrap();
            let out = Command::new(env!("CARGO_BIN_EXE_ultragate"))
                .arg("--check-config")
                .arg(&file)
                .output()
                .unwrap();
            assert!(out.status.success(), "{overlay}/{name}: {}", text(&out));
            let _ = std::fs::remove_file(file);
        }
    }
    let _ = std::fs::remove_file(token);
}

#[test]
fn the_dpdk_variant_never_overlaps_a_color_and_probes_the_admin_port() {
    let objs = k8s::render("dpdk");
    let dpdk = k8s::find(&objs, "Deployment", "ultragate-dpdk").unwrap();
    let labels = &dpdk["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["color"], "dpdk");
    assert!(
        labels.get("traffic.ultragate.io/blue").is_none()
            && labels.get("traffic.ultragate.io/green").is_none(),
        "the client Service never selects it"
    );
    let container = &dpdk["spec"]["template"]["spec"]["containers"][0];
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["add"][0],
        "IPC_LOCK"
    );
    for color in ["blue", "green"] {
        let d = k8s::find(&objs, "Deployment", &format!("ultragate-{color}")).unwrap();
        let sources = &d["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"];
        assert_eq!(
            sources[0]["configMap"]["name"],
            format!("ultragate-config-{color}")
        );
        assert_eq!(sources[1]["configMap"]["name"], "ultragate-runbook");
    }
    for name in [
        "ultragate-blue",
        "ultragate-green",
        "ultragate-dpdk",
        "nodejs-api",
    ] {
        assert!(
            k8s::find(&objs, "PodDisruptionBudget", name).is_some(),
            "a PDB for {name}"
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

/// A self-signed certificate for `name`, as the Secret's tls.crt/tls.key.
fn certificate(dir: &Path, name: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    // Written beside and renamed over, as the kubelet swaps a Secret.
    std::fs::write(dir.join("tls.crt.new"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key.new"), key.serialize_pem()).unwrap();
    std::fs::rename(dir.join("tls.key.new"), dir.join("tls.key")).unwrap();
    std::fs::rename(dir.join("tls.crt.new"), dir.join("tls.crt")).unwrap();
    cert.pem()
}

#[test]
fn the_nodejs_fallback_serves_https_with_the_secret_and_takes_its_renewal() {
    // What a diverted Service's port 443 reaches: deploy/nodejs-api with
    // the gateway's certificate files, as the Deployment mounts them.
    let dir = std::env::temp_dir().join(format!("ug-nodejs-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    certificate(&dir, "first.test");
    let http = support::free_port();
    let https = support::free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nodejs-api/server.js");
    let child = Command::new("node")
        .arg(&script)
        .env("PORT", http.to_string())
        .env("HTTPS_PORT", https.to_string())
        .env("HOST", "127.0.0.1")
        .env("TLS_CERT_FILE", dir.join("tls.crt"))
        .env("TLS_KEY_FILE", dir.join("tls.key"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _node = support::Proc {
        child,
        name: "nodejs-api",
    };
    support::wait_listening(
        format!("127.0.0.1:{https}").parse().unwrap(),
        "nodejs-api https",
    );
    let get = |name: &str| {
        support::curl(&[
            "-s",
            "--cacert",
            dir.join("tls.crt").to_str().unwrap(),
            "--resolve",
            &format!("{name}:{https}:127.0.0.1"),
            &format!("https://{name}:{https}/health/ready"),
        ])
    };
    let out = get("first.test");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"status\":\"ok\""),
        "{}",
        text(&out)
    );
    // A renewal: the new certificate within the 5 s poll, no restart.
    certificate(&dir, "second.test");
    assert!(
        support::wait_for(std::time::Duration::from_secs(15), || get("second.test")
            .status
            .success()),
        "the renewed certificate is served"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
