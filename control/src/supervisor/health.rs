//! `/health`: the gateway's state as one JSON document, rendered from
//! what the loop last saw (route, pools, cores, cache, runbook rows).

use super::*;

/// One upstream pool in `/health`: its servers and their state.
pub(super) fn pool_json(pool: &PoolSpec, name: &str) -> Value {
    let servers: Vec<Value> = pool
        .servers
        .iter()
        .enumerate()
        .map(|(i, a)| json!({ "address": a.to_string(), "healthy": pool.health.is_healthy(i) }))
        .collect();
    let healthy = (0..pool.servers.len())
        .filter(|&i| pool.health.is_healthy(i))
        .count();
    let status = match healthy {
        0 => "down",
        n if n < pool.servers.len() => "degraded",
        _ => "ok",
    };
    let mut c =
        json!({ "name": name, "status": status, "servers": servers, "healthy_servers": healthy });
    if let Some(why) = &pool.unresolved {
        c["unresolved"] = json!(why);
    }
    c
}

impl Supervisor {
    /// `GET /health`: the components and an overall status.
    pub fn health_json(&self) -> Value {
        let view = *lock(&self.view);
        let (route, mode) = self.route();
        let ready = self.status.is_ready();
        let memory = match view.limit {
            Some(limit) => {
                let ratio = view.rss as f64 / limit as f64;
                let status = if ratio >= 0.95 {
                    "critical"
                } else if ratio >= 0.85 {
                    "warning"
                } else {
                    "ok"
                };
                json!({ "name": "memory", "status": status, "rss_bytes": view.rss, "limit_bytes": limit, "used_ratio": ratio })
            }
            None => {
                json!({ "name": "memory", "status": "ok", "rss_bytes": view.rss, "limit_bytes": null, "used_ratio": null })
            }
        };
        let port = self.status.port().map(|p| {
            json!({
                "port": p.port,
                "link_up": p.link_up,
                "speed_mbps": p.speed_mbps,
                "rx_packets": p.rx_packets,
                "tx_packets": p.tx_packets,
                "rx_errors": p.rx_errors,
                "tx_errors": p.tx_errors,
                "rx_missed": p.rx_missed,
                "rx_nombuf": p.rx_nombuf,
                "mempool_free": p.mempool_free,
                "mempool_in_use": p.mempool_in_use,
                "hugepages_total": p.hugepages_total,
                "hugepages_free": p.hugepages_free,
            })
        });
        // What makes the gateway unhealthy (it cannot serve) or degraded.
        let mut unhealthy: Vec<String> = Vec::new();
        let mut degraded: Vec<String> = Vec::new();
        if !ready {
            unhealthy.push("not ready: draining, or no data plane serves".into());
        }
        let beats = self.core_beats();
        let stalled: Vec<usize> = beats.iter().filter(|b| b.2).map(|b| b.0).collect();
        for (core, age, _) in beats.iter().filter(|b| b.2) {
            unhealthy.push(format!(
                "data core {core} stalled: its loop has not turned for {:.1} s",
                age.as_secs_f64()
            ));
        }
        let backend = self.status.backend();
        let why = self.status.reason();
        let kernel_fallback = self.status.dpdk_wanted() && backend != Backend::Dpdk;
        if kernel_fallback {
            degraded.push(format!(
                "DPDK asked for (api_gateway.enable_dpdk) but serving on {}: {why}",
                backend.as_str()
            ));
        }
        let dataplane = json!({
            "name": "dataplane",
            "dpdk_port": port,
            "status": if !ready {
                "down"
            } else if !stalled.is_empty() {
                "critical"
            } else if kernel_fallback {
                "degraded"
            } else {
                "ok"
            },
            "backend": backend.as_str(),
            "reason": why,
            "dpdk_wanted": self.status.dpdk_wanted(),
            "stalled_cores": stalled,
            "loop_age_ms": beats.iter().map(|b| ms(b.1).round()).collect::<Vec<_>>(),
            "cores": self.cfg.cores,
            "cores_from": self.cfg.cores_from,
            "ready": ready,
            "requests_per_second": view.rps,
            "p50_ms": ms(view.p50),
            "p99_ms": ms(view.p99),
            "p999_ms": ms(view.p999),
            "error_rate": view.error_rate,
        });
        let cache = match &self.cache {
            Some(c) => {
                let status = if c.bypassed() {
                    "bypassed"
                } else if !c.inserts_enabled() {
                    "inserts_stopped"
                } else {
                    "ok"
                };
                json!({ "name": "cache", "status": status, "entries": c.len(), "bytes": c.bytes(), "max_bytes": c.config().max_bytes })
            }
            None => json!({ "name": "cache", "status": "disabled" }),
        };
        let pools = self.live.load();
        // The pool the primary diverts to, if any: `[upstream.fallback]`,
        // another one, or none (`fallback = ""`).
        let diverts_to = pools.primary().fallback;
        let mut primary = pool_json(pools.primary(), "upstream_primary");
        primary["routed"] = json!(route == Route::Primary);
        primary["fallback"] = json!(diverts_to.and_then(|f| pools.pool(f)).map(|p| &*p.name));
        let mut fallback = pool_json(pools.fallback(), "upstream_fallback");
        fallback["routed"] = json!(route == Route::Fallback && diverts_to == Some(1));
        let mut components = vec![memory, dataplane, cache, primary, fallback];
        let routes: BTreeMap<Arc<str>, (Route, Mode)> = self
            .pool_routes()
            .into_iter()
            .map(|(name, r, m)| (name, (r, m)))
            .collect();
        for (i, spec) in pools.pools().iter().enumerate().skip(2) {
            let mut c = pool_json(spec, &format!("upstream_{}", spec.name));
            c["routes"] = json!(route_names(&pools, i));
            c["fallback"] = json!(spec.fallback.and_then(|f| pools.pool(f)).map(|p| &*p.name));
            if let Some((r, m)) = routes.get(&spec.name) {
                c["route"] = json!(r.as_str());
                c["route_mode"] = json!(match m {
                    Mode::Auto => "auto",
                    Mode::Forced(_) => "forced",
                });
            }
            components.push(c);
        }
        if let Some(tls) = self.tls.get() {
            components.push(tls.health());
        }
        for (i, name) in traffic_pools(&pools) {
            if let Some(why) = stranded(&pools, i) {
                unhealthy.push(format!("pool {name}: {why}"));
            }
        }
        if route == Route::Fallback {
            degraded.push("pool primary is diverted to its fallback".into());
        }
        for c in &components {
            if c["status"] != "ok" && c["name"] != "dataplane" {
                degraded.push(format!(
                    "{}: {}",
                    c["name"].as_str().unwrap_or("?"),
                    c["status"].as_str().unwrap_or("?")
                ));
            }
        }
        let overall = if !unhealthy.is_empty() {
            "unhealthy"
        } else if !degraded.is_empty() {
            "degraded"
        } else {
            "healthy"
        };
        unhealthy.extend(degraded);
        let mode = match mode {
            Mode::Auto => "auto",
            Mode::Forced(_) => "forced",
        };
        json!({ "overall_status": overall, "reasons": unhealthy, "route": route.as_str(), "route_mode": mode, "components": components })
    }
}
