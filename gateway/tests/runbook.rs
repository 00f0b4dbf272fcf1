//! The users' runbook (`../shared/runbook-ultra-cpp.md`) against the
//! `ultra-cpp` overlay as `kubectl kustomize` renders it: every `kubectl`
//! and `curl` line that targets the gateway, its Service, ConfigMap, pods
//! or the Node.js API, kept here as data, word for word. For each, what it
//! names must exist (namespace, resource, label selector, container, port,
//! ConfigMap key), and what it changes must leave a working system: the
//! selector patch keeps an endpoint on every port of the Service, the
//! ConfigMap patches give a config the gateway loads, the scale-downs are
//! not undone by an HPA's floor.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use support::k8s::{self, find, ports_without_endpoints, render, selected_deployments};

/// The runbook's command lines that target the deployment, as it writes
/// them (node-wide commands such as `kubectl get nodes` are left out:
/// they name nothing of ours).
const RUNBOOK: &[&str] = &[
    "kubectl get pods -n ultra-cpp -l app=ultra-cpp-gateway",
    "kubectl get svc ultra-cpp-gateway -n ultra-cpp",
    r#"curl -f http://ultra-cpp-gateway.ultra-cpp.svc.cluster.local/health/live || echo "Service DOWN""#,
    "kubectl get events -n ultra-cpp --sort-by='.lastTimestamp' | tail -20",
    "./k8s/ultra-cpp/scripts/rollback.sh emergency",
    "curl -f http://ultra-cpp-gateway.ultra-cpp.svc.cluster.local/health/ready",
    r#"kubectl patch service ultra-cpp-gateway -n ultra-cpp -p '{"spec":{"selector":{"app":"nodejs-api"}}}'"#,
    "kubectl get svc ultra-cpp-gateway -n ultra-cpp -o yaml | grep selector",
    "kubectl logs -n ultra-cpp -l app=ultra-cpp-gateway --previous --tail=500 > /tmp/ultra-cpp-crash-logs.txt",
    "kubectl get events -n ultra-cpp --sort-by='.lastTimestamp' > /tmp/ultra-cpp-events.txt",
    "kubectl top pods -n ultra-cpp > /tmp/ultra-cpp-resources.txt",
    r#"kubectl describe pods -n ultra-cpp -l app=ultra-cpp-gateway | grep -A 10 -B 10 "OOMKilled\|Killed""#,
    "kubectl get configmap ultra-cpp-config -n ultra-cpp -o yaml",
    "kubectl scale deployment ultra-cpp-gateway-blue -n ultra-cpp --replicas=1",
    "kubectl scale deployment ultra-cpp-gateway-green -n ultra-cpp --replicas=1",
    "kubectl exec -n ultra-cpp deployment/ultra-cpp-gateway-blue -- curl -X POST http://localhost:8080/admin/cache/clear || true",
    r#"kubectl patch deployment ultra-cpp-gateway-blue -n ultra-cpp -p '{"spec":{"template":{"spec":{"containers":[{"name":"ultra-cpp-gateway","resources":{"limits":{"memory":"16Gi"}}}]}}}}'"#,
    "kubectl rollout status deployment/ultra-cpp-gateway-blue -n ultra-cpp --timeout=300s",
    "watch kubectl top pods -n ultra-cpp -l app=ultra-cpp-gateway",
    r#"kubectl exec -n ultra-cpp deployment/ultra-cpp-gateway-blue -- curl -s http://localhost:8081/health | jq '.components[] | select(.name=="memory")'"#,
    "kubectl exec -n ultra-cpp deployment/ultra-cpp-gateway-blue -- cat /proc/meminfo | grep -i huge",
    "kubectl exec -n ultra-cpp deployment/ultra-cpp-gateway-blue -- ls -la /dev/uio*",
    "kubectl exec -n ultra-cpp deployment/ultra-cpp-gateway-blue -- ip link show",
    "kubectl delete pods -n ultra-cpp -l app=ultra-cpp-gateway --force --grace-period=0",
    r#"kubectl patch configmap ultra-cpp-config -n ultra-cpp --patch '{"data":{"ultra-cpp.conf":"[api_gateway]\nenable_dpdk = false\n..."}}'"#,
    "kubectl rollout restart deployment/ultra-cpp-gateway-blue -n ultra-cpp",
    "kubectl exec -n ultra-cpp deployment/ultra-cpp-gateway-blue -- curl -f http://nodejs-api:3005/health",
    "kubectl exec -n ultra-cpp deployment/ultra-cpp-gateway-blue -- curl -f https://httpbin.org/status/200",
    r#"kubectl patch service ultra-cpp-gateway -n ultra-cpp -p '{"spec":{"type":"ClusterIP"}}'"#,
    r#"kubectl patch configmap ultra-cpp-config -n ultra-cpp --patch '{"data":{"ultra-cpp.conf":"[security]\nenable_audit_logging = true\nlog_all_requests = true\n..."}}'"#,
    r#"kubectl logs -n ultra-cpp -l app=ultra-cpp-gateway --tail=1000 | grep -i "security\|auth\|unauthorized" > /tmp/security-logs.txt"#,
    "kubectl exec -n ultra-cpp deployment/ultra-cpp-gateway-blue -- tcpdump -i any -w /tmp/security-traffic.pcap -c 10000",
    "kubectl exec -n ultra-cpp deployment/ultra-cpp-gateway-blue -- tar -czf /tmp/incident-evidence.tar.gz /var/log/ultra-cpp/ /tmp/security-*",
    "kubectl scale deployment ultra-cpp-gateway-blue -n ultra-cpp --replicas=0",
    "kubectl scale deployment ultra-cpp-gateway-green -n ultra-cpp --replicas=0",
    "kubectl exec -n ultra-cpp deployment/ultra-cpp-gateway-blue -- curl -X POST http://localhost:8080/admin/cache/verify || true",
    "kubectl exec -n ultra-cpp deployment/ultra-cpp-gateway-blue -- curl -X POST http://localhost:8080/admin/data/verify || true",
    "kubectl exec -n ultra-cpp deployment/ultra-cpp-gateway-blue -- curl -X POST http://localhost:8080/admin/cache/clear",
    "kubectl exec -n ultra-cpp deployment/ultra-cpp-gateway-blue -- curl -X POST http://localhost:8080/admin/cache/restore",
    "kubectl exec -n ultra-cpp deployment/ultra-cpp-gateway-blue -- curl -s http://localhost:8081/health | jq '.overall_status'",
    "./k8s/ultra-cpp/scripts/performance-test.sh --quick-validation",
    "kubectl logs -n ultra-cpp -l app=ultra-cpp-gateway --since=2h > /tmp/incident-logs-$(date +%s).txt",
    "kubectl get all,configmaps,secrets -n ultra-cpp -o yaml > /tmp/incident-config-$(date +%s).yaml",
];

/// What a command in the pod runs that the image must have, from
/// `deploy/Containerfile` (Debian's base image brings coreutils and tar).
/// tcpdump is not among them: it needs NET_RAW and NET_ADMIN, which the
/// gateway's container drops; the README gives the runbook's capture as
/// `kubectl debug`.
const IN_IMAGE: &[&str] = &["curl", "cat", "ls", "ip", "tar"];

/// The words of a shell line up to its first pipe, redirection or `||`,
/// quotes removed.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, ' ') => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    let end = out
        .iter()
        .position(|w| ["|", "||", ">", "&&"].contains(&w.as_str()))
        .unwrap_or(out.len());
    out.truncate(end);
    out
}

/// A kubectl command line: its flags and the rest.
struct Kubectl {
    namespace: Option<String>,
    selector: Option<String>,
    patch: Option<Value>,
    replicas: Option<u64>,
    /// Verb and objects, flags removed.
    args: Vec<String>,
    /// What `exec` runs, after `--`.
    command: Vec<String>,
}

fn kubectl(words: &[String]) -> Kubectl {
    let mut k = Kubectl {
        namespace: None,
        selector: None,
        patch: None,
        replicas: None,
        args: Vec::new(),
        command: Vec::new(),
    };
    let mut it = words.iter().skip_while(|w| *w != "kubectl").skip(1);
    while let Some(w) = it.next() {
        match w.as_str() {
            "-n" => k.namespace = it.next().cloned(),
            "-l" => k.selector = it.next().cloned(),
            "-p" | "--patch" => {
                k.patch = it
                    .next()
                    .map(|p| serde_json::from_str(p).expect("a JSON patch"))
            }
            "-o" => {
                it.next();
            }
            "--" => {
                k.command = it.by_ref().cloned().collect();
            }
            w if w.starts_with("--replicas=") => k.replicas = w[11..].parse().ok(),
            w if w.starts_with('-') => {}
            w => k.args.push(w.to_owned()),
        }
    }
    k
}

/// A strategic merge patch as the API server applies it to these objects:
/// maps merged key by key, `null` deleting, lists of containers merged by
/// `name`, anything else replaced.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (Value::Array(t), Value::Array(p)) if p.iter().all(|e| e.get("name").is_some()) => {
            for e in p {
                match t.iter_mut().find(|x| x.get("name") == e.get("name")) {
                    Some(x) => merge(x, e),
                    None => t.push(e.clone()),
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn one<'a>(objs: &'a [Value], kind: &str, name: &str, line: &str) -> &'a Value {
    find(objs, kind, name)
        .unwrap_or_else(|| panic!("{line}: no {kind} {name} in the ultra-cpp overlay"))
}

/// The ConfigMap key patched over the rendered files of both colors, as
/// the pods see them: the color's gateway.toml beside the runbook key.
fn load_with(objs: &[Value], key: &str, text: &str) -> Vec<ultragate::config::Config> {
    let token = std::env::temp_dir().join(format!("ug-runbook-token-{}", std::process::id()));
    std::fs::write(&token, "t0ken\n").unwrap();
    let mut configs = Vec::new();
    for color in ["blue", "green"] {
        let dir = std::env::temp_dir().join(format!("ug-runbook-{color}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let deployment = one(
            objs,
            "Deployment",
            &format!("ultra-cpp-gateway-{color}"),
            key,
        );
        let sources = &deployment["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"];
        let own = sources[0]["configMap"]["name"].as_str().unwrap();
        let main = one(objs, "ConfigMap", own, key)["data"]["gateway.toml"]
            .as_str()
            .unwrap()
            .replace("/etc/ultragate-secret/token", &token.display().to_string());
        assert_eq!(
            sources[1]["configMap"]["name"], "ultra-cpp-config",
            "{color} mounts the runbook key"
        );
        std::fs::write(dir.join("gateway.toml"), main).unwrap();
        std::fs::write(dir.join(key), text).unwrap();
        let loaded = ultragate::files::load(&dir.join("gateway.toml"))
            .unwrap_or_else(|e| panic!("{color} with the runbook's {key}: {e}"));
        assert!(
            loaded.files.iter().any(|f| f.ends_with(key)),
            "{key} is read"
        );
        configs.push(loaded.config);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_file(token);
    configs
}

/// Checks one kubectl line against the overlay.
fn check_kubectl(objs: &[Value], line: &str, k: &Kubectl) {
    let namespace = k
        .namespace
        .as_deref()
        .unwrap_or_else(|| panic!("{line}: no namespace"));
    one(objs, "Namespace", namespace, line);
    assert!(
        objs.iter()
            .filter(|o| o["kind"] != "Namespace")
            .all(|o| o["metadata"]["namespace"] == namespace),
        "every object is in {namespace}"
    );
    if let Some(selector) = &k.selector {
        let (key, value) = selector.split_once('=').unwrap();
        let pods = selected_deployments(objs, &json!({ key: value }));
        let names: Vec<&str> = pods
            .iter()
            .filter_map(|d| d["metadata"]["name"].as_str())
            .collect();
        assert_eq!(
            names,
            ["ultra-cpp-gateway-blue", "ultra-cpp-gateway-green"],
            "{line}: the selector finds the gateway's pods, both colors"
        );
    }
    let verb = k.args[0].as_str();
    let object = k.args.get(1).map(String::as_str).unwrap_or_default();
    let name = k.args.get(2).map(String::as_str);
    let (kind, name) = match (object.split_once('/'), name) {
        (Some((kind, name)), _) => (kind, Some(name)),
        (None, name) => (object, name),
    };
    let kind = match kind {
        "svc" | "service" => "Service",
        "deployment" => "Deployment",
        "configmap" => "ConfigMap",
        _ => "",
    };
    let Some(name) = name.filter(|_| !kind.is_empty()) else {
        // `get pods`, `get events`, `top pods`, `get all,…`: namespace and
        // selector were the names.
        return;
    };
    let object = one(objs, kind, name, line);
    match (verb, kind) {
        ("patch", "Service") => {
            let mut patched = object.clone();
            merge(&mut patched, k.patch.as_ref().unwrap());
            let missing = ports_without_endpoints(objs, &patched);
            assert!(
                missing.is_empty(),
                "{line}: ports {missing:?} lose their endpoints"
            );
            let selected = selected_deployments(objs, &patched["spec"]["selector"]);
            assert!(!selected.is_empty(), "{line}: selects no pods");
            if patched["spec"]["selector"]["app"] == "nodejs-api" {
                assert!(
                    selected
                        .iter()
                        .all(|d| d["metadata"]["name"] == "nodejs-api"),
                    "{line}: only the Node.js pods"
                );
            }
        }
        ("patch", "Deployment") => {
            let wanted = &k.patch.as_ref().unwrap()["spec"]["template"]["spec"]["containers"];
            let have = &object["spec"]["template"]["spec"]["containers"];
            for c in wanted.as_array().unwrap() {
                assert!(
                    have.as_array()
                        .unwrap()
                        .iter()
                        .any(|h| h["name"] == c["name"]),
                    "{line}: no container {} (the patch would add one without an image)",
                    c["name"]
                );
            }
        }
        ("patch", "ConfigMap") => {
            for (key, text) in k.patch.as_ref().unwrap()["data"].as_object().unwrap() {
                assert!(
                    object["data"].get(key).is_some(),
                    "{line}: the ConfigMap has no key {key}"
                );
                let configs = load_with(objs, key, text.as_str().unwrap());
                for cfg in configs {
                    assert!(
                        !cfg.upstream.primary.servers.is_empty()
                            && !cfg.upstream.fallback.servers.is_empty(),
                        "{line}: the colors' servers stay"
                    );
                    if text.as_str().unwrap().contains("enable_dpdk = false") {
                        assert!(!cfg.api_gateway.enable_dpdk);
                    } else {
                        assert!(cfg.security.enable_audit_logging && cfg.security.log_all_requests);
                    }
                }
            }
        }
        ("scale", "Deployment") => {
            let replicas = k.replicas.unwrap();
            assert!(
                object["spec"].get("replicas").is_none(),
                "{name} has no replicas for an apply to reset"
            );
            let hpa = k8s::all(objs, "HorizontalPodAutoscaler")
                .find(|h| h["spec"]["scaleTargetRef"]["name"] == name)
                .unwrap_or_else(|| panic!("{name} has an HPA"));
            let min = hpa["spec"]["minReplicas"].as_u64().unwrap_or(1);
            // An HPA leaves a Deployment scaled to zero alone; above zero,
            // its floor must allow the count.
            assert!(
                replicas == 0 || min <= replicas,
                "{line}: the HPA's minReplicas {min} undoes it"
            );
        }
        ("exec", "Deployment") => check_exec(objs, line, object, &k.command),
        _ => {}
    }
}

/// What `kubectl exec deployment/… --` runs in the gateway pod.
fn check_exec(objs: &[Value], line: &str, deployment: &Value, command: &[String]) {
    let program = command[0].as_str();
    if program == "tcpdump" {
        return;
    }
    assert!(
        IN_IMAGE.contains(&program),
        "{line}: the image has no {program}"
    );
    let containerfile = std::fs::read_to_string(k8s::root().join("../Containerfile")).unwrap();
    for package in ["curl", "iproute2"] {
        assert!(
            containerfile.contains(package),
            "the image installs {package}"
        );
    }
    if program == "tar" {
        let mounts = &deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"];
        for dir in ["/var/log/ultra-cpp", "/tmp"] {
            assert!(
                mounts
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["mountPath"] == dir),
                "{line}: {dir} is a writable mount"
            );
        }
    }
    let Some(url) = command.iter().find(|w| w.starts_with("http")) else {
        return;
    };
    let rest = url.split_once("://").unwrap().1;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = authority.split_once(':').unwrap_or((authority, "80"));
    let port: u64 = port.parse().unwrap();
    match host {
        "localhost" => {
            let ports = k8s::container_ports(deployment);
            assert!(
                ports.iter().any(|(_, n)| *n == port),
                "{line}: the gateway container has no port {port}"
            );
            let admin_on_data =
                port == 8080 && (path.starts_with("admin/") || path.starts_with("health"));
            assert!(
                admin_on_data || port == 8081,
                "{line}: nothing answers /{path} on {port}"
            );
        }
        "nodejs-api" => {
            let service = one(objs, "Service", "nodejs-api", line);
            assert!(
                service["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["port"] == port),
                "{line}: the nodejs-api Service has no port {port}"
            );
            assert!(ports_without_endpoints(objs, service).is_empty());
        }
        // The internet, from the pod: nothing of ours to check.
        _ => assert!(url.starts_with("https://"), "{line}"),
    }
}

/// A curl from a machine in the cluster to the Service's DNS name.
fn check_service_curl(objs: &[Value], line: &str, url: &str) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut labels = host.split('.');
    let (service, namespace) = (labels.next().unwrap(), labels.next().unwrap());
    assert_eq!(
        &host[service.len() + namespace.len() + 1..],
        ".svc.cluster.local"
    );
    let service = one(objs, "Service", service, line);
    assert_eq!(service["metadata"]["namespace"], namespace);
    let http = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == 80)
        .unwrap_or_else(|| panic!("{line}: the Service has no port 80"));
    for d in selected_deployments(objs, &service["spec"]["selector"]) {
        let probes = &d["spec"]["template"]["spec"]["containers"][0];
        assert!(
            k8s::container_ports(d)
                .iter()
                .any(|(n, _)| http["targetPort"] == n.as_str()),
            "{line}: port 80 reaches {}",
            d["metadata"]["name"]
        );
        // The gateway answers /health/live and /health/ready on its data
        // port: its own probes use them there.
        let probe = format!("/{path}");
        assert!(
            probes["livenessProbe"]["httpGet"]["path"] == probe.as_str()
                || probes["readinessProbe"]["httpGet"]["path"] == probe.as_str(),
            "{line}: {probe} is a probe path of the pods"
        );
    }
}

#[test]
fn every_runbook_command_fits_the_ultra_cpp_overlay() {
    let objs = render("ultra-cpp");
    // The users' document, when it is beside the project, still says
    // exactly these lines.
    let runbook = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/runbook-ultra-cpp.md");
    if let Ok(text) = std::fs::read_to_string(runbook) {
        for line in RUNBOOK {
            assert!(
                text.lines().any(|l| l.trim() == *line),
                "not in the runbook: {line}"
            );
        }
    }
    for line in RUNBOOK {
        let w = words(line);
        match w[0].as_str() {
            "kubectl" | "watch" => check_kubectl(&objs, line, &kubectl(&w)),
            "curl" => check_service_curl(&objs, line, w.last().unwrap()),
            script => {
                // From deploy/, as the runbook runs them.
                let path = k8s::root().join("..").join(script);
                let meta =
                    std::fs::metadata(&path).unwrap_or_else(|_| panic!("{line}: no {script}"));
                assert!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0);
            }
        }
    }
}

#[test]
fn the_runbooks_selector_patch_finds_the_nodejs_pods_on_every_port() {
    let objs = render("ultra-cpp");
    let service = find(&objs, "Service", "ultra-cpp-gateway").unwrap();
    assert!(
        ports_without_endpoints(&objs, service).is_empty(),
        "before the patch"
    );
    let ports: Vec<&Value> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["port"])
        .collect();
    assert_eq!(
        ports,
        [80, 443],
        "the client Service has the data ports only"
    );
    let mut diverted = service.clone();
    merge(
        &mut diverted,
        &json!({"spec": {"selector": {"app": "nodejs-api"}}}),
    );
    // The live color's key stays in the selector (a strategic merge), and
    // the Node.js pods carry it.
    assert_eq!(
        diverted["spec"]["selector"]["traffic.ultragate.io/blue"],
        "true"
    );
    assert!(ports_without_endpoints(&objs, &diverted).is_empty());
    // So does every other color that may be live.
    let mut green = diverted.clone();
    merge(
        &mut green,
        &json!({"spec": {"selector": {"traffic.ultragate.io/blue": null, "traffic.ultragate.io/green": "true"}}}),
    );
    assert!(ports_without_endpoints(&objs, &green).is_empty());
    let selected = selected_deployments(&objs, &green["spec"]["selector"]);
    assert_eq!(selected.len(), 1);
    assert_eq!(selected[0]["metadata"]["name"], "nodejs-api");
}

#[test]
fn every_overlay_keeps_the_admin_port_off_the_client_service_and_bounds_every_empty_dir() {
    for (overlay, service, admin) in [
        ("default", "ultragate", "ultragate-admin"),
        ("ultra-cpp", "ultra-cpp-gateway", "ultra-cpp-gateway-admin"),
        ("dpdk", "ultragate", "ultragate-admin"),
    ] {
        let objs = render(overlay);
        let client = find(&objs, "Service", service).unwrap();
        assert!(
            client["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["port"] != 8081),
            "{overlay}: the admin port is not on {service}"
        );
        let admin = find(&objs, "Service", admin).unwrap();
        assert_eq!(admin["spec"]["ports"][0]["port"], 8081, "{overlay}");
        assert!(
            ports_without_endpoints(&objs, admin).is_empty(),
            "{overlay}"
        );
        // 8081 only from the monitoring namespace.
        let policy = k8s::all(&objs, "NetworkPolicy")
            .next()
            .expect("a NetworkPolicy");
        for rule in policy["spec"]["ingress"].as_array().unwrap() {
            let ports: Vec<u64> = rule["ports"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["port"].as_u64())
                .collect();
            if ports.contains(&8081) {
                assert_eq!(
                    rule["from"][0]["namespaceSelector"]["matchLabels"]
                        ["kubernetes.io/metadata.name"],
                    "monitoring"
                );
            } else {
                assert!(
                    rule.get("from").is_none(),
                    "{overlay}: the data ports from anywhere"
                );
            }
        }
        for d in k8s::all(&objs, "Deployment") {
            let name = d["metadata"]["name"].as_str().unwrap();
            let spec = &d["spec"]["template"]["spec"];
            for v in spec["volumes"].as_array().into_iter().flatten() {
                if let Some(e) = v.get("emptyDir") {
                    assert!(
                        e.get("sizeLimit").is_some(),
                        "{overlay}/{name}: emptyDir {} unbounded",
                        v["name"]
                    );
                }
            }
            let hpa = k8s::all(&objs, "HorizontalPodAutoscaler")
                .any(|h| h["spec"]["scaleTargetRef"]["name"] == name);
            assert_eq!(
                d["spec"].get("replicas").is_none(),
                hpa,
                "{overlay}/{name}: replicas exactly when no HPA owns the count"
            );
            assert!(
                spec["topologySpreadConstraints"]
                    .as_array()
                    .is_some_and(|t| t.len() == 2),
                "{overlay}/{name}: spread over nodes and zones"
            );
        }
        for kind in ["PodMonitor", "PrometheusRule"] {
            let o = k8s::all(&objs, kind).next().unwrap();
            assert_eq!(
                o["metadata"]["labels"]["release"], "kube-prometheus-stack",
                "{overlay}: {kind}"
            );
        }
        let monitor = k8s::all(&objs, "PodMonitor").next().unwrap();
        assert!(
            !selected_deployments(&objs, &monitor["spec"]["selector"]["matchLabels"]).is_empty(),
            "{overlay}: the PodMonitor finds the gateway pods"
        );
        // Every gateway config logs its audit trail where `kubectl logs`
        // finds it.
        for (name, toml) in k8s::gateway_tomls(&objs) {
            assert!(toml.contains("audit_log = \"stdout\""), "{overlay}/{name}");
        }
    }
}

#[test]
fn the_nodejs_fallback_serves_https_with_the_gateways_secret_and_scales() {
    let objs = render("default");
    let node = find(&objs, "Deployment", "nodejs-api").unwrap();
    let ports = k8s::container_ports(node);
    assert!(ports.contains(&("http".into(), 3005)) && ports.contains(&("https".into(), 3443)));
    let secret = &node["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"];
    let gateway = find(&objs, "Deployment", "ultragate-blue").unwrap();
    assert!(
        gateway["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == *secret),
        "the same certificate Secret"
    );
    let hpa = find(&objs, "HorizontalPodAutoscaler", "nodejs-api").unwrap();
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
    assert!(find(&objs, "PodDisruptionBudget", "nodejs-api").is_some());
}

#[test]
fn each_dpdk_replica_reads_its_own_address() {
    let objs = render("dpdk");
    let d = find(&objs, "Deployment", "ultragate-dpdk").unwrap();
    let (_, toml) = k8s::gateway_tomls(&objs)
        .into_iter()
        .find(|(n, _)| n == "ultragate-config-dpdk")
        .unwrap();
    assert!(toml.contains("address_file = \"/etc/podinfo/network-status\""));
    let podinfo = d["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "podinfo")
        .unwrap();
    assert_eq!(
        podinfo["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.annotations['k8s.v1.cni.cncf.io/network-status']"
    );
    let nad = k8s::all(&objs, "NetworkAttachmentDefinition")
        .next()
        .unwrap();
    let cni: Value = serde_json::from_str(nad["spec"]["config"].as_str().unwrap()).unwrap();
    assert_eq!(cni["ipam"]["type"], "whereabouts", "an address per pod");
    // The kernel fallback's addresses: the pods' own.
    let fallback = find(&objs, "Service", "ultragate-dpdk").unwrap();
    assert_eq!(fallback["spec"]["clusterIP"], "None");
    assert!(ports_without_endpoints(&objs, fallback).is_empty());
}
