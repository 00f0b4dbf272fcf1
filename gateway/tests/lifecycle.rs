//! The pod's life as Kubernetes drives it: the preStop hook then SIGTERM
//! without a refused connection.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// A client that behaves like a Service's endpoints: it opens a new
/// connection per request while the pod's readiness probe (polled every
/// 50 ms) is green, and stops sending `lag` after it turns red, as
/// kube-proxy stops after the endpoints update.
struct Balancer {
    stop: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Balancer {
    fn start(data: SocketAddr, lag: Duration) -> Balancer {
        let stop = Arc::new(AtomicBool::new(false));
        let routed = Arc::new(AtomicBool::new(true));
        let (refused, answered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let probe = {
            let (stop, routed) = (stop.clone(), routed.clone());
            std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    if get_status(data, "/health/ready") != 200 {
                        std::thread::sleep(lag);
                        routed.store(false, Ordering::Relaxed);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let client = {
            let (stop, refused, answered) = (stop.clone(), refused.clone(), answered.clone());
            std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    if !routed.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    match get_status(data, "/x?size=10") {
                        200 => answered.fetch_add(1, Ordering::Relaxed),
                        _ => refused.fetch_add(1, Ordering::Relaxed),
                    };
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Balancer {
            stop,
            refused,
            answered,
            threads: vec![probe, client],
        }
    }

    /// Stops; (answered, refused or failed).
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.answered.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

#[test]
fn pre_stop_then_sigterm_refuses_no_connection() {
    let (_o, origin) = origin(&[]);
    let mut gw = Gateway::start(&[origin], "", "");
    let lb = Balancer::start(gw.data, Duration::from_millis(300));
    std::thread::sleep(Duration::from_millis(300));
    // The kubelet's sequence: the preStop hook to its end, then SIGTERM.
    let hook = Command::new(env!("CARGO_BIN_EXE_ultragate"))
        .args([
            "--config",
            gw.config.to_str().unwrap(),
            "--pre-stop",
            "1000",
        ])
        .output()
        .unwrap();
    assert!(
        hook.status.success(),
        "{}",
        String::from_utf8_lossy(&hook.stderr)
    );
    assert_eq!(get_status(gw.data, "/health/ready"), 503, "readiness red");
    assert!(has_event(&gw, "readiness red, still serving until SIGTERM"));
    gw.proc.signal(libc::SIGTERM);
    assert_eq!(gw.proc.wait_exit(Duration::from_secs(10)), Some(0));
    let (answered, refused) = lb.finish();
    eprintln!("preStop then SIGTERM: {answered} answered, {refused} refused");
    assert!(answered > 20, "load ran: {answered}");
    assert_eq!(refused, 0, "{answered} answered, {refused} refused");
}

#[test]
fn sigterm_without_the_hook_refuses_connections_the_balancer_still_sends() {
    let (_o, origin) = origin(&[]);
    let mut gw = Gateway::start(&[origin], "", "");
    let lb = Balancer::start(gw.data, Duration::from_millis(300));
    std::thread::sleep(Duration::from_millis(300));
    gw.proc.signal(libc::SIGTERM);
    assert_eq!(gw.proc.wait_exit(Duration::from_secs(10)), Some(0));
    std::thread::sleep(Duration::from_millis(400));
    let (answered, refused) = lb.finish();
    eprintln!("SIGTERM without the hook: {answered} answered, {refused} refused");
    assert!(
        answered > 0 && refused > 0,
        "{answered} answered, {refused} refused"
    );
}

#[test]
fn manifests_give_the_hook_and_the_drain_time_to_finish() {
    for overlay in ["default", "ultra-cpp", "dpdk"] {
        let objs = support::k8s::render(overlay);
        for d in support::k8s::all(&objs, "Deployment") {
            let name = d["metadata"]["name"].as_str().unwrap();
            let spec = &d["spec"]["template"]["spec"];
            let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
            let hook = &spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"];
            let hook: Vec<&str> = hook
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|w| w.as_str())
                .collect();
            if name == "nodejs-api" {
                assert_eq!(hook, ["sleep", "5"]);
                assert!(grace > 5, "{overlay}/{name}");
                continue;
            }
            let pre_stop_ms: u64 = hook[hook.iter().position(|w| *w == "--pre-stop").unwrap() + 1]
                .parse()
                .unwrap();
            let own = spec["volumes"][0]["projected"]["sources"][0]["configMap"]["name"]
                .as_str()
                .unwrap();
            let toml = support::k8s::find(&objs, "ConfigMap", own).unwrap()["data"]["gateway.toml"]
                .as_str()
                .unwrap();
            let drain_ms: u64 = toml
                .lines()
                .find_map(|l| l.trim().strip_prefix("drain_timeout_ms = ")?.parse().ok())
                .unwrap();
            assert!(
                grace * 1000 >= pre_stop_ms + drain_ms + 1000,
                "{overlay}/{name}: grace {grace} s < preStop {pre_stop_ms} ms + drain {drain_ms} ms"
            );
        }
    }
}

/// The data cores `/health` reports, and where they came from.
fn health_cores(gw: &Gateway) -> (Vec<u64>, String) {
    let health = admin_json(gw, "/health");
    let dp = health["components"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "dataplane"))
        .cloned()
        .unwrap_or_default();
    let cores = dp["cores"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_u64()).collect())
        .unwrap_or_default();
    (
        cores,
        dp["cores_from"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn data_cores_stay_inside_the_affinity_mask() {
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start_through(&["taskset", "-c", "1"], &[origin], "");
    let (cores, from) = health_cores(&gw);
    assert_eq!(cores, [1], "{from}");
    assert!(from.contains("affinity [1]"), "{from}");
    assert_eq!(get_status(gw.data, "/x?size=10"), 200);
}

/// A cgroup with a CPU quota of `cpus`, made by the test (v2 when the
/// unified hierarchy has the cpu controller, else v1), removed on drop.
struct QuotaGroup(std::path::PathBuf);

impl QuotaGroup {
    fn new(cpus: u64) -> QuotaGroup {
        let name = format!("ultragate-test-{}", std::process::id());
        let v2 = std::path::Path::new("/sys/fs/cgroup");
        let controllers =
            std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
        let dir = if controllers.split_whitespace().any(|c| c == "cpu") {
            let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+cpu");
            let dir = v2.join(&name);
            std::fs::create_dir_all(&dir).expect("create a cgroup (root needed)");
            std::fs::write(dir.join("cpu.max"), format!("{} 100000", cpus * 100_000)).unwrap();
            dir
        } else {
            let base = ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"]
                .iter()
                .map(std::path::Path::new)
                .find(|p| p.join("cpu.cfs_quota_us").exists())
                .expect("a cgroup v1 cpu hierarchy or v2 with the cpu controller");
            let dir = base.join(&name);
            std::fs::create_dir_all(&dir).expect("create a cgroup (root needed)");
            std::fs::write(dir.join("cpu.cfs_period_us"), "100000").unwrap();
            std::fs::write(dir.join("cpu.cfs_quota_us"), (cpus * 100_000).to_string()).unwrap();
            dir
        };
        QuotaGroup(dir)
    }
}

impl Drop for QuotaGroup {
    fn drop(&mut self) {
        // Empty once the gateway has exited.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn data_cores_follow_the_cgroup_cpu_quota() {
    let (_o, origin) = origin(&[]);
    // Both cores asked for; without a quota both serve.
    let gw = Gateway::start(&[origin], "cores = [0, 1]", "");
    assert_eq!(health_cores(&gw).0, [0, 1]);
    drop(gw);

    let group = QuotaGroup::new(1);
    let procs = group.0.join("cgroup.procs");
    let script = format!("echo $$ > {} && exec \"$@\"", procs.display());
    let mut gw = Gateway::start_through(&["sh", "-c", &script, "sh"], &[origin], "cores = [0, 1]");
    let (cores, from) = health_cores(&gw);
    assert_eq!(
        cores.len(),
        1,
        "one data thread for a quota of 1 CPU: {cores:?} ({from})"
    );
    assert!(from.contains("cgroup quota 1.00 CPUs"), "{from}");
    assert_eq!(get_status(gw.data, "/x?size=10"), 200);
    gw.proc.signal(libc::SIGTERM);
    gw.proc.wait_exit(Duration::from_secs(10));
}

/// `curl -i` of a path on the data port.
fn served_by_node(gw: &Gateway, path: &str) -> bool {
    String::from_utf8_lossy(&curl(&["-i", &gw.url(path)]).stdout)
        .contains("x-served-by: nodejs-api")
}

fn post_reload(gw: &Gateway) -> serde_json::Value {
    let out = curl(&[
        "-X",
        "POST",
        &format!("http://{}/admin/config/reload", gw.admin),
    ]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn component(gw: &Gateway, name: &str) -> serde_json::Value {
    admin_json(gw, "/health")["components"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .cloned()
        .unwrap_or_default()
}

#[test]
fn reload_applies_pools_and_cache_budget_and_names_what_needs_a_restart() {
    let (_o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    let gw = Gateway::start(&[origin], "", "\n[control]\nconfig_watch_ms = 0\n");
    assert!(!served_by_node(&gw, "/before?size=10"));
    let text = std::fs::read_to_string(&gw.config).unwrap();

    // A pool's server and the cache budget: applied, no restart.
    let changed = text.replace(
        &format!("servers = [\"{origin}\"]"),
        &format!("servers = [\"{node}\"]"),
    ) + "\n[cache]\nmax_bytes = 1048576\nmax_object_bytes = 65536\n";
    std::fs::write(&gw.config, &changed).unwrap();
    let answer = post_reload(&gw);
    assert_eq!(answer["reloaded"], true, "{answer}");
    assert_eq!(
        answer["applied"],
        serde_json::json!([
            "cache.max_bytes",
            "cache.max_object_bytes",
            "upstream.primary.servers"
        ]),
        "{answer}"
    );
    assert_eq!(answer["needs_restart"], serde_json::json!([]));
    assert!(
        served_by_node(&gw, "/after"),
        "new requests go to the new server"
    );
    assert_eq!(component(&gw, "cache")["max_bytes"], 1_048_576);
    assert_eq!(
        component(&gw, "upstream_primary")["servers"][0]["address"],
        node.to_string()
    );
    let shown =
        String::from_utf8_lossy(&curl(&[&format!("http://{}/admin/config", gw.admin)]).stdout)
            .into_owned();
    assert!(
        shown.contains(&node.to_string()) && shown.contains("max_bytes = 1048576"),
        "{shown}"
    );
    // The old server's series leave with it.
    let gone = format!("server=\"{origin}\"");
    assert!(
        wait_for(Duration::from_secs(5), || {
            let m = curl(&[&format!("http://{}/metrics", gw.admin)]).stdout;
            let m = String::from_utf8_lossy(&m);
            !m.contains(&gone) && m.contains(&format!("server=\"{node}\""))
        }),
        "no series of {origin} after the reload"
    );

    // The listener needs a restart; the rest of the same change applies.
    let other = free_port();
    let restart = changed.replace(&gw.data.to_string(), &format!("127.0.0.1:{other}"))
        + "\n[control]\nconfig_watch_ms = 0\np99_threshold_ms = 25\n";
    let restart = restart.replacen("\n[control]\nconfig_watch_ms = 0\n", "\n", 1);
    std::fs::write(&gw.config, &restart).unwrap();
    let answer = post_reload(&gw);
    assert_eq!(
        answer["applied"],
        serde_json::json!(["control.p99_threshold_ms"]),
        "{answer}"
    );
    assert_eq!(
        answer["needs_restart"],
        serde_json::json!(["api_gateway.listen"]),
        "{answer}"
    );
    let shown =
        String::from_utf8_lossy(&curl(&[&format!("http://{}/admin/config", gw.admin)]).stdout)
            .into_owned();
    assert!(
        shown.contains(&gw.data.to_string()) && shown.contains("p99_threshold_ms = 25"),
        "the running listener stays, the threshold is new: {shown}"
    );
    assert_eq!(
        get_status(gw.data, "/still"),
        200,
        "still serving on the old listener"
    );
    assert!(has_event(&gw, "apply new config"));
    let metrics = String::from_utf8_lossy(&curl(&[&format!("http://{}/metrics", gw.admin)]).stdout)
        .into_owned();
    for line in [
        "ultragate_config_reloads_total{result=\"applied\"} 1",
        "ultragate_config_reloads_total{result=\"partial\"} 1",
        "ultragate_config_reloads_total{result=\"rejected\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[test]
fn a_changed_config_file_is_reloaded_by_itself() {
    let (_o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    let gw = Gateway::start(&[origin], "", "\n[control]\nconfig_watch_ms = 100\n");
    assert!(!served_by_node(&gw, "/before?size=10"));
    // As a ConfigMap update lands: a new file swapped in under the name.
    let text = std::fs::read_to_string(&gw.config).unwrap();
    let next = gw.config.with_extension("next");
    std::fs::write(
        &next,
        text.replace(
            &format!("servers = [\"{origin}\"]"),
            &format!("servers = [\"{node}\"]"),
        ),
    )
    .unwrap();
    std::fs::rename(&next, &gw.config).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || served_by_node(&gw, "/after")),
        "the file's new server serves without a signal"
    );
    let events = admin_json(&gw, "/admin/events");
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["trigger"] == "config_reload" && e["value"] == "config file changed"),
        "{events}"
    );
}

/// The runbook's `[security]` patch, as `kubectl patch` writes it: the
/// whole file replaced by one section.
const SECURITY_ONLY: &str = "[security]\nenable_audit_logging = true\nlog_all_requests = true\n";

fn reloads(gw: &Gateway, result: &str) -> u64 {
    let metrics = String::from_utf8_lossy(&curl(&[&format!("http://{}/metrics", gw.admin)]).stdout)
        .into_owned();
    let series = format!("ultragate_config_reloads_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_config_naming_no_servers_is_refused_on_every_path_and_the_running_one_stays() {
    let dir = std::env::temp_dir().join(format!("ug-partial-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let partial = dir.join("security-only.toml");
    std::fs::write(&partial, SECURITY_ONLY).unwrap();
    let bin = env!("CARGO_BIN_EXE_ultragate");
    // --check-config and start: refused, naming the key.
    for args in [
        vec!["--check-config", partial.to_str().unwrap()],
        vec!["--config", partial.to_str().unwrap()],
    ] {
        let out = Command::new("timeout")
            .arg("20")
            .arg(bin)
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("upstream.primary.servers"),
            "{args:?}: {:?} {err}",
            out.status
        );
    }

    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(&[origin], "", "\n[control]\nconfig_watch_ms = 100\n");
    let good = std::fs::read_to_string(&gw.config).unwrap();
    // The file watch: the ConfigMap swapped for the runbook's patch.
    let next = gw.config.with_extension("next");
    std::fs::write(&next, SECURITY_ONLY).unwrap();
    std::fs::rename(&next, &gw.config).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || reloads(&gw, "rejected") == 1),
        "the watch refused the file"
    );
    let events = admin_json(&gw, "/admin/events");
    assert!(
        events["events"].as_array().unwrap().iter().any(|e| {
            e["trigger"] == "config_reload"
                && e["action"] == "keep running config"
                && e["result"]
                    .as_str()
                    .is_some_and(|v| v.contains("upstream.primary.servers"))
        }),
        "{events}"
    );
    // The admin call and SIGHUP: refused the same way.
    let answer = post_reload(&gw);
    assert_eq!(answer["reloaded"], false, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("upstream.primary.servers")),
        "{answer}"
    );
    gw.proc.signal(libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || reloads(&gw, "rejected") == 3),
        "SIGHUP refused the file"
    );
    // The running config stays: the origin answers, not a default address.
    assert_eq!(get_status(gw.data, "/still?size=5"), 200);
    assert_eq!(
        component(&gw, "upstream_primary")["servers"][0]["address"],
        origin.to_string()
    );
    assert_eq!(admin_json(&gw, "/health")["overall_status"], "healthy");

    // A pool diverted now keeps the fallback it was diverted to: a file
    // that no longer writes its servers is refused.
    std::fs::write(&gw.config, &good).unwrap();
    let forced = curl(&[
        "-X",
        "POST",
        "--json",
        "fallback",
        &format!("http://{}/admin/route", gw.admin),
    ]);
    assert!(forced.status.success());
    let answer = post_reload(&gw);
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("upstream.fallback.servers")),
        "{answer}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn drop_in_files_merge_over_the_main_file_and_are_named() {
    let dir = std::env::temp_dir().join(format!("ug-dropin-{}", std::process::id()));
    let conf_d = dir.join("conf.d");
    std::fs::create_dir_all(&conf_d).unwrap();
    // The runbook's security step in its own ConfigMap key.
    std::fs::write(conf_d.join("10-security.toml"), SECURITY_ONLY).unwrap();
    std::fs::write(
        conf_d.join("20-cache.toml"),
        "[cache]\nmax_bytes = 2097152\nmax_object_bytes = 65536\n",
    )
    .unwrap();
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(
        &[origin],
        "",
        &format!(
            "\n[control]\nconfig_watch_ms = 0\n\n[include]\nfiles = [\"{}/*.toml\"]\n",
            conf_d.display()
        ),
    );
    assert_eq!(get_status(gw.data, "/dropin?size=5"), 200);
    assert_eq!(component(&gw, "cache")["max_bytes"], 2_097_152);
    let shown =
        String::from_utf8_lossy(&curl(&[&format!("http://{}/admin/config", gw.admin)]).stdout)
            .into_owned();
    for line in [
        format!(
            "# security.log_all_requests: from {}",
            conf_d.join("10-security.toml").display()
        ),
        format!(
            "# cache.max_bytes: from {}",
            conf_d.join("20-cache.toml").display()
        ),
    ] {
        assert!(shown.contains(&line), "{line} in {shown}");
    }
    assert!(shown.contains("log_all_requests = true"), "{shown}");

    // A bad drop-in: refused, naming its file and key; the rest stays.
    std::fs::write(
        conf_d.join("20-cache.toml"),
        "[cache]\nmax_bytez = 1\nmax_object_bytes = 65536\n",
    )
    .unwrap();
    let answer = post_reload(&gw);
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("20-cache.toml") && error.contains("max_bytez"),
        "{answer}"
    );
    assert_eq!(component(&gw, "cache")["max_bytes"], 2_097_152);
    std::fs::write(
        conf_d.join("20-cache.toml"),
        "[cache]\nmax_bytes = 1048576\nmax_object_bytes = 65536\n",
    )
    .unwrap();
    let answer = post_reload(&gw);
    assert_eq!(
        answer["applied"],
        serde_json::json!(["cache.max_bytes"]),
        "{answer}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `/health` once `until` holds of it (within `limit`, else a failure
/// showing the last one).
fn health_until(
    gw: &Gateway,
    limit: Duration,
    until: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut health = serde_json::Value::Null;
    let reached = wait_for(limit, || {
        health = admin_json(gw, "/health");
        until(&health)
    });
    assert!(reached, "{health}");
    health
}

#[test]
fn health_is_unhealthy_while_no_server_of_a_pool_nor_its_fallback_answers() {
    let (dead, also_dead) = (free_port(), free_port());
    let gw = Gateway::start(
        &[SocketAddr::from(([127, 0, 0, 1], dead))],
        "",
        &format!(
            "health_interval_ms = 100\nhealth_timeout_ms = 100\nrise = 1\nfall = 1\n\n[upstream.fallback]\nservers = [\"127.0.0.1:{also_dead}\"]\nhealth_interval_ms = 100\nhealth_timeout_ms = 100\nrise = 1\nfall = 1\n"
        ),
    );
    let health = health_until(&gw, Duration::from_secs(10), |h| {
        h["overall_status"] == "unhealthy"
    });
    assert!(
        health["reasons"].as_array().unwrap().iter().any(|r| r
            .as_str()
            .is_some_and(|r| r.contains("pool primary") && r.contains("fallback fallback"))),
        "{health}"
    );
    // The fallback comes up: the pool can be served again.
    let _fallback = origin_at(SocketAddr::from(([127, 0, 0, 1], also_dead)), &[]);
    health_until(&gw, Duration::from_secs(10), |h| {
        h["overall_status"] != "unhealthy"
    });
}

#[test]
fn a_stalled_data_core_makes_health_unhealthy_naming_it() {
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(
        &[origin],
        "",
        "\n[control]\ninterval_ms = 100\ncore_stall_ms = 1000\n\n[cache]\ntest_hooks = true\n",
    );
    let core = component(&gw, "dataplane")["cores"][0].as_u64().unwrap();
    assert_eq!(
        component(&gw, "dataplane")["stalled_cores"],
        serde_json::json!([])
    );
    let body = format!("{{\"core\": {core}, \"ms\": 3000}}");
    let out = curl(&[
        "-X",
        "POST",
        "--json",
        &body,
        &format!("http://{}/admin/test/stall-core", gw.admin),
    ]);
    assert!(out.status.success());
    let health = health_until(&gw, Duration::from_secs(5), |h| {
        h["overall_status"] == "unhealthy"
    });
    assert!(
        health["reasons"][0]
            .as_str()
            .is_some_and(|r| r.starts_with(&format!("data core {core} stalled"))),
        "{health}"
    );
    assert_eq!(component(&gw, "dataplane")["stalled_cores"][0], core);
    // The gauges follow at the next control round.
    let series = format!("ultragate_core_stalled{{core=\"{core}\"}} 1");
    assert!(
        wait_for(Duration::from_secs(2), || {
            String::from_utf8_lossy(&curl(&[&format!("http://{}/metrics", gw.admin)]).stdout)
                .contains(&series)
        }),
        "{series}"
    );
    health_until(&gw, Duration::from_secs(10), |h| {
        h["overall_status"] != "unhealthy"
    });
}

#[test]
fn a_wrong_method_gets_405_and_a_drain_can_be_undone() {
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(&[origin], "", "");
    let out = curl(&["-i", &format!("http://{}/admin/cache/clear", gw.admin)]);
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        text.starts_with("http/1.1 405") && text.contains("allow: post\r\n"),
        "{text}"
    );
    let post = |body: &str| {
        let out = curl(&[
            "-X",
            "POST",
            "--json",
            body,
            &format!("http://{}/admin/drain", gw.admin),
        ]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    assert_eq!(post("")["ready"], false);
    assert_eq!(admin_json(&gw, "/admin/ready")["ready"], false);
    assert!(has_event(&gw, "readiness red, still serving until SIGTERM"));
    assert_eq!(post("{\"undo\": true}")["ready"], true);
    assert_eq!(admin_json(&gw, "/admin/ready")["ready"], true);
    assert!(has_event(&gw, "readiness green again"));
}

#[test]
fn dpdk_asked_for_but_not_started_is_degraded_with_the_reason() {
    let (_o, origin) = origin(&[]);
    let (_n, node) = nodejs();
    let gw = Gateway::start(
        &[origin],
        "enable_dpdk = true\n",
        &format!(
            "\n[upstream.fallback]\nservers = [\"{node}\"]\n\n[dpdk]\neal_args = [\"--no-pci\", \"--in-memory\", \"--vdev=net_ug_no_such_driver0\"]\n"
        ),
    );
    assert_eq!(
        get_status(gw.data, "/kernel?size=5"),
        200,
        "served on the kernel"
    );
    let health = admin_json(&gw, "/health");
    assert_eq!(health["overall_status"], "degraded", "{health}");
    assert!(
        health["reasons"][0].as_str().is_some_and(|r| r
            .starts_with("DPDK asked for (api_gateway.enable_dpdk) but serving on")
            && r.contains("DPDK did not start")),
        "{health}"
    );
    let dataplane = component(&gw, "dataplane");
    assert_eq!(dataplane["status"], "degraded", "{dataplane}");
    assert_eq!(dataplane["dpdk_wanted"], true);
    assert_eq!(dataplane["backend"], expected_backend());
    // The gauges, as of the next control round.
    let mut metrics = String::new();
    assert!(
        wait_for(Duration::from_secs(2), || {
            metrics =
                String::from_utf8_lossy(&curl(&[&format!("http://{}/metrics", gw.admin)]).stdout)
                    .into_owned();
            metrics.contains("ultragate_dataplane_dpdk_wanted 1")
                && metrics.contains("ultragate_dataplane_backend{backend=\"dpdk\"} 0")
        }),
        "{metrics}"
    );
    assert!(has_event(
        &gw,
        &format!("serve on kernel networking at {}", gw.data)
    ));
}

#[test]
fn a_dpdk_pod_without_its_own_address_serves_on_the_kernel_and_says_why() {
    // The DPDK overlay's pods read their VF address from Multus'
    // network-status annotation; before Multus wrote it (or with the
    // volume missing) the gateway serves on the kernel, naming the file.
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(
        &[origin],
        "enable_dpdk = true\n",
        "\n[dpdk]\naddress = \"10.213.0.0/24\"\naddress_file = \"/nonexistent/podinfo/network-status\"\n",
    );
    assert_eq!(
        get_status(gw.data, "/kernel?size=5"),
        200,
        "served on the kernel"
    );
    let dataplane = component(&gw, "dataplane");
    assert_eq!(dataplane["status"], "degraded", "{dataplane}");
    let reason = dataplane["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("dpdk.address_file")
            && reason.contains("/nonexistent/podinfo/network-status"),
        "{dataplane}"
    );
}

#[test]
fn memory_relief_tells_the_truth_and_a_raised_limit_resumes_inserts_at_once() {
    let (_o, origin) = origin(&[]);
    // A limit far under the process's RSS: cleared, inserts paused.
    let gw = Gateway::start(
        &[origin],
        "",
        "\n[control]\nconfig_watch_ms = 0\ninterval_ms = 100\nmemory_limit_bytes = 1048576\n",
    );
    assert!(
        wait_for(Duration::from_secs(10), || component(&gw, "cache")
            ["status"]
            == "inserts_stopped"),
        "{}",
        admin_json(&gw, "/health")
    );
    let cache_status = |path: &str| {
        let out = curl(&["-si", &gw.url(path)]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Cache-Status: ").map(str::to_owned))
            .unwrap_or_default()
    };
    assert_eq!(
        cache_status("/paused?size=10&cache=max-age%3D60"),
        "ultragate; fwd=uri-miss; fwd-status=200; detail=inserts-paused"
    );
    let text = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(
        &gw.config,
        text.replace(
            "memory_limit_bytes = 1048576",
            "memory_limit_bytes = 107374182400",
        ),
    )
    .unwrap();
    let answer = post_reload(&gw);
    assert_eq!(
        answer["applied"],
        serde_json::json!(["control.memory_limit_bytes"]),
        "{answer}"
    );
    assert_eq!(component(&gw, "cache")["status"], "ok", "resumed at once");
    let events = admin_json(&gw, "/admin/events");
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["value"]
                .as_str()
                .is_some_and(|v| v.starts_with("memory limit changed by a reload"))),
        "{events}"
    );
    assert_eq!(
        cache_status("/resumed?size=10&cache=max-age%3D60"),
        "ultragate; fwd=uri-miss; fwd-status=200; stored"
    );
}
