//! The deploy tree as Kubernetes would see it: an overlay rendered by
//! `kubectl kustomize` (the real one, on every machine the tests run on),
//! as JSON values, and small queries over the objects.

use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `deploy/k8s` in the source tree.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s")
}

/// The objects `kubectl kustomize deploy/k8s/OVERLAY` renders.
pub fn render(overlay: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(root().join(overlay))
        .output()
        .expect("kubectl is installed (bench/scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    yaml_serde::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("kustomize prints YAML"))
        .collect()
}

/// The object of `kind` named `name`.
pub fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// Every object of `kind`.
pub fn all<'a>(objs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    objs.iter().filter(move |o| o["kind"] == kind)
}

/// Whether `labels` has every pair of the map `selector`.
pub fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The Deployments whose pods carry every label of `selector`.
pub fn selected_deployments<'a>(objs: &'a [Value], selector: &Value) -> Vec<&'a Value> {
    all(objs, "Deployment")
        .filter(|d| selects(selector, &d["spec"]["template"]["metadata"]["labels"]))
        .collect()
}

/// The named container ports of a Deployment's pods (name, number).
pub fn container_ports(deployment: &Value) -> Vec<(String, u64)> {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["containerPort"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The ports of `service` that no pod it selects serves (its targetPort
/// names or numbers no container port of theirs), or all when it selects
/// none.
pub fn ports_without_endpoints(objs: &[Value], service: &Value) -> Vec<String> {
    let pods = selected_deployments(objs, &service["spec"]["selector"]);
    service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            !pods.iter().any(|d| {
                container_ports(d)
                    .iter()
                    .any(|(name, number)| match &p["targetPort"] {
                        Value::String(t) => t == name,
                        Value::Number(n) => n.as_u64() == Some(*number),
                        _ => p["port"].as_u64() == Some(*number),
                    })
            })
        })
        .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Every `gateway.toml` a ConfigMap of the overlay holds: (ConfigMap, TOML).
pub fn gateway_tomls(objs: &[Value]) -> Vec<(String, String)> {
    all(objs, "ConfigMap")
        .filter_map(|c| {
            Some((
                c["metadata"]["name"].as_str()?.to_owned(),
                c["data"]["gateway.toml"].as_str()?.to_owned(),
            ))
        })
        .collect()
}
