//! `/metrics` in the Prometheus text format, with the conventional names
//! and units (`_total`, `_seconds`, `_bytes`).

use crate::histograms::HistogramFamily;
use crate::policy::DecisionKind;
use crate::snapshot::Snapshot;
use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::Arc;
use ultragate_dataplane::cache::verdict::CacheResult;
use ultragate_dataplane::stats::CoreStats;
use ultragate_dataplane::status::{Backend, Route};

/// Registers a shared histogram family (the registry takes a box).
struct ArcCollector(Arc<HistogramFamily>);

impl prometheus::core::Collector for ArcCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        prometheus::core::Collector::desc(&*self.0)
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        prometheus::core::Collector::collect(&*self.0)
    }
}

/// How a config reload ended, for `ultragate_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// Every change took effect.
    Applied,
    /// Some changes took effect, others need a restart.
    Partial,
    /// The file had no change.
    Unchanged,
    /// The file was refused; the running config stays.
    Rejected,
}

impl ReloadResult {
    const ALL: [ReloadResult; 4] = [
        ReloadResult::Applied,
        ReloadResult::Partial,
        ReloadResult::Unchanged,
        ReloadResult::Rejected,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            ReloadResult::Applied => "applied",
            ReloadResult::Partial => "partial",
            ReloadResult::Unchanged => "unchanged",
            ReloadResult::Rejected => "rejected",
        }
    }
}

/// The registry and every series the gateway exports.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    cache_results: IntCounterVec,
    upstream_errors: IntCounter,
    panics: IntCounter,
    decisions: IntCounterVec,
    reloads: IntCounterVec,
    build_info: GaugeVec,
    duration: Arc<HistogramFamily>,
    upstream_duration: Arc<HistogramFamily>,
    upstream_requests: IntCounterVec,
    upstream_server_errors: IntCounterVec,
    route_requests: IntCounterVec,
    route_errors: IntCounterVec,
    probes: IntCounter,
    refused: IntCounterVec,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    open_connections: IntGaugeVec,
    core_requests: IntCounterVec,
    isolated: IntGauge,
    webhooks: IntCounterVec,
    tls_handshakes: IntCounterVec,
    tls_failures: IntCounterVec,
    tls_reloads: IntCounterVec,
    tls_expiry: GaugeVec,
    access_dropped: IntCounter,
    access_written: IntCounter,
    latency: GaugeVec,
    error_ratio: Gauge,
    route: GaugeVec,
    backend: GaugeVec,
    cache_bytes: IntGauge,
    cache_entries: IntGauge,
    cache_bypassed: IntGauge,
    cache_inserts: IntGauge,
    rss: IntGauge,
    limit: IntGauge,
    server_up: GaugeVec,
    port: GaugeVec,
    flaps: IntCounterVec,
    diverted: GaugeVec,
    dpdk_wanted: IntGauge,
    reload_ok: IntGauge,
    unservable: GaugeVec,
    core_stalled: GaugeVec,
    core_loop_age: GaugeVec,
    /// The (pool, server) pairs whose series exist: those of a server that
    /// left the config (reload, DNS change) are removed.
    servers_shown: std::sync::Mutex<std::collections::BTreeSet<(String, String)>>,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    /// Registers every series.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(opts(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(opts(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let int_gauge = |name: &str, help: &str| {
            let g = IntGauge::with_opts(opts(name, help)).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let upstream_errors = IntCounter::with_opts(opts(
            "ultragate_upstream_errors_total",
            "Upstream failures: connect, timeout, invalid response.",
        ))
        .expect("valid metric");
        registry
            .register(Box::new(upstream_errors.clone()))
            .expect("unique metric");
        let panics = IntCounter::with_opts(opts(
            "ultragate_panics_total",
            "Panics in per-connection work (the engine, TLS either way) caught at the per-core layer's boundary; each closed one connection.",
        ))
        .expect("valid metric");
        registry
            .register(Box::new(panics.clone()))
            .expect("unique metric");
        let error_ratio = Gauge::with_opts(opts(
            "ultragate_window_error_ratio",
            "Share of 5xx and upstream failures in the control plane's last one-second window; for alerts use rate() of ultragate_requests_total.",
        ))
        .expect("valid metric");
        registry
            .register(Box::new(error_ratio.clone()))
            .expect("unique metric");
        let int_counter = |name: &str, help: &str| {
            let c = IntCounter::with_opts(opts(name, help)).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = Arc::new(HistogramFamily::new(name, help, labels));
            registry
                .register(Box::new(ArcCollector(h.clone())))
                .expect("unique metric");
            h
        };
        let duration = histogram(
            "ultragate_request_duration_seconds",
            "Request latency, first request byte to response complete; probes not included.",
            &["route", "cache"],
        );
        for r in CacheResult::ALL {
            duration.touch(&["default", r.label()]);
        }
        let upstream_duration = histogram(
            "ultragate_upstream_duration_seconds",
            "Latency of proxied requests by upstream server.",
            &["pool", "server"],
        );
        let build_info = gauge_vec(
            "ultragate_build_info",
            "1, labelled with the gateway's version and whether it has the DPDK data plane.",
            &["version", "dpdk"],
        );
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        let requests = counter_vec(
            "ultragate_requests_total",
            "Responses by status class; probes not included.",
            &["class"],
        );
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            requests.with_label_values(&[class]);
        }
        let cache_results = counter_vec(
            "ultragate_cache_responses_total",
            "Responses by cache result.",
            &["result"],
        );
        for r in CacheResult::ALL {
            cache_results.with_label_values(&[r.label()]);
        }
        let decisions = counter_vec(
            "ultragate_decisions_total",
            "Decisions taken by the control plane, by kind.",
            &["decision"],
        );
        for d in DecisionKind::ALL {
            decisions.with_label_values(&[d.label()]);
        }
        let reloads = counter_vec(
            "ultragate_config_reloads_total",
            "Config reloads by result: applied (every change took effect), partial (some changes need a restart), unchanged, rejected (the running config stays).",
            &["result"],
        );
        for r in ReloadResult::ALL {
            reloads.with_label_values(&[r.label()]);
        }
        let webhooks = counter_vec(
            "ultragate_webhook_notifications_total",
            "Decision webhook messages: sent, failed (after retries), dropped (queue full), suppressed (repeated within min_interval_ms).",
            &["result"],
        );
        for r in ["sent", "failed", "dropped", "suppressed"] {
            webhooks.with_label_values(&[r]);
        }
        let tls_handshakes = counter_vec(
            "ultragate_tls_handshakes_total",
            "TLS handshakes completed, by kind: full, or resumed (a session ticket or id skipped the full handshake).",
            &["kind"],
        );
        for k in ["full", "resumed"] {
            tls_handshakes.with_label_values(&[k]);
        }
        let tls_failures = counter_vec(
            "ultragate_tls_handshake_failures_total",
            "TLS connections that failed, by reason: plaintext_http, not_tls, protocol, incompatible, peer_alert, timeout, closed.",
            &["reason"],
        );
        for f in ultragate_dataplane::tls::Failure::ALL {
            tls_failures.with_label_values(&[f.label()]);
        }
        let tls_reloads = counter_vec(
            "ultragate_tls_reloads_total",
            "TLS certificate reloads by result: applied, or rejected (the running certificates stay).",
            &["result"],
        );
        for r in ["applied", "rejected"] {
            tls_reloads.with_label_values(&[r]);
        }
        Self {
            tls_handshakes,
            tls_failures,
            tls_reloads,
            tls_expiry: gauge_vec(
                "ultragate_tls_certificate_expiry_timestamp_seconds",
                "When each served TLS certificate expires, in seconds since the Unix epoch, by its file and first name.",
                &["file", "name"],
            ),
            webhooks,
            build_info,
            reloads,
            requests,
            cache_results,
            decisions,
            duration,
            upstream_duration,
            upstream_requests: counter_vec(
                "ultragate_upstream_requests_total",
                "Proxied requests by upstream server.",
                &["pool", "server"],
            ),
            upstream_server_errors: counter_vec(
                "ultragate_upstream_server_errors_total",
                "Proxied requests an upstream server answered with a 5xx or failed.",
                &["pool", "server"],
            ),
            route_requests: counter_vec(
                "ultragate_route_requests_total",
                "Requests by the route that took them and its pool (cache hits included).",
                &["route", "pool"],
            ),
            route_errors: counter_vec(
                "ultragate_route_errors_total",
                "Requests of a route answered with a 5xx or an upstream failure.",
                &["route", "pool"],
            ),
            probes: int_counter(
                "ultragate_probes_total",
                "Probes (/health/live, /health/ready) answered on the data port.",
            ),
            refused: counter_vec(
                "ultragate_connections_refused_total",
                "Client connections over a core's limit (per_core) or one address's (per_client): answered 503 and closed, or closed at once while a core already writes 64 such answers.",
                &["reason"],
            ),
            bytes_in: int_counter(
                "ultragate_client_received_bytes_total",
                "Bytes received from clients on the data port.",
            ),
            bytes_out: int_counter(
                "ultragate_client_sent_bytes_total",
                "Bytes sent to clients on the data port.",
            ),
            core_requests: counter_vec(
                "ultragate_core_requests_total",
                "Responses by data core: how the load spreads over the cores.",
                &["core"],
            ),
            open_connections: {
                let g = IntGaugeVec::new(
                    opts(
                        "ultragate_open_connections",
                        "Client connections open, by data core.",
                    ),
                    &["core"],
                )
                .expect("valid metric");
                registry
                    .register(Box::new(g.clone()))
                    .expect("unique metric");
                g
            },
            access_dropped: int_counter(
                "ultragate_access_log_dropped_total",
                "Access-log records dropped because a core's queue was full (the writer could not keep up).",
            ),
            access_written: int_counter(
                "ultragate_access_log_records_total",
                "Access-log records written.",
            ),
            isolated: int_gauge(
                "ultragate_security_isolated",
                "1 while security isolation is on (every request logged, admin from loopback only).",
            ),
            latency: gauge_vec(
                "ultragate_window_request_duration_seconds",
                "Request latency percentiles over the control plane's last one-second window (what the runbook policies act on).",
                &["percentile"],
            ),
            route: gauge_vec(
                "ultragate_route",
                "1 for the upstream group taking traffic.",
                &["route"],
            ),
            backend: gauge_vec(
                "ultragate_dataplane_backend",
                "1 for the data-plane backend serving.",
                &["backend"],
            ),
            port: gauge_vec(
                "ultragate_dpdk_port",
                "The DPDK port as last sampled: link_up (1/0), speed_mbps, rx_packets, tx_packets, rx_errors, tx_errors, rx_missed, rx_nombuf, mempool_free, mempool_in_use, hugepages_total, hugepages_free.",
                &["port", "stat"],
            ),
            server_up: gauge_vec(
                "ultragate_upstream_server_up",
                "1 while an upstream server passes its checks.",
                &["pool", "server"],
            ),
            flaps: counter_vec(
                "ultragate_route_flaps_total",
                "Diverts of a pool soon after it failed back (each doubles its fail-back hold-down).",
                &["pool"],
            ),
            diverted: gauge_vec(
                "ultragate_pool_diverted",
                "1 while a pool's requests go to its fallback (mode: auto, or forced by an operator).",
                &["pool", "mode"],
            ),
            dpdk_wanted: int_gauge(
                "ultragate_dataplane_dpdk_wanted",
                "1 when the config asks for DPDK (api_gateway.enable_dpdk); with ultragate_dataplane_backend{backend=\"dpdk\"} 0 the gateway fell back to the kernel.",
            ),
            reload_ok: {
                let g = int_gauge(
                    "ultragate_config_last_reload_successful",
                    "0 after a config reload was rejected (the running config stays) until one succeeds; 1 otherwise.",
                );
                g.set(1);
                g
            },
            unservable: gauge_vec(
                "ultragate_pool_unservable",
                "1 while no server of a pool that takes traffic, nor of its fallback, passes its checks.",
                &["pool"],
            ),
            core_stalled: gauge_vec(
                "ultragate_core_stalled",
                "1 while a data core's loop has not turned for longer than [control] core_stall_ms.",
                &["core"],
            ),
            core_loop_age: gauge_vec(
                "ultragate_core_loop_age_seconds",
                "Seconds since a data core's loop last handed over its numbers (its heartbeat).",
                &["core"],
            ),
            servers_shown: Default::default(),
            cache_bytes: int_gauge(
                "ultragate_cache_bytes",
                "Bytes held by the cache, overhead included.",
            ),
            cache_entries: int_gauge("ultragate_cache_entries", "Keys held by the cache."),
            cache_bypassed: int_gauge(
                "ultragate_cache_bypassed",
                "1 while the cache is bypassed after a failed verify.",
            ),
            cache_inserts: int_gauge(
                "ultragate_cache_inserts_enabled",
                "1 while the cache stores responses.",
            ),
            rss: int_gauge(
                "ultragate_memory_rss_bytes",
                "Resident set size of the process.",
            ),
            limit: int_gauge(
                "ultragate_memory_limit_bytes",
                "Memory limit (cgroup or configured); 0 when none.",
            ),
            upstream_errors,
            panics,
            error_ratio,
            registry,
        }
    }

    /// Adds a core's interval to the counters; `routes` names each route
    /// index and its pool.
    pub fn count(&self, s: &CoreStats, routes: &[(String, String)]) {
        for (i, n) in s.status_classes.iter().enumerate() {
            if *n > 0 {
                self.requests
                    .with_label_values(&[&format!("{}xx", i + 1)])
                    .inc_by(*n);
            }
        }
        for (r, n) in CacheResult::ALL.iter().zip(s.cache) {
            if n > 0 {
                self.cache_results.with_label_values(&[r.label()]).inc_by(n);
            }
        }
        self.upstream_errors.inc_by(s.upstream_errors);
        for (r, b) in CacheResult::ALL.iter().zip(&s.duration) {
            if b.count() > 0 {
                self.duration.add(&["none", r.label()], b);
            }
        }
        for (stats, (route, pool)) in s.routes.iter().zip(routes) {
            if stats.requests == 0 {
                continue;
            }
            let labels = [route.as_str(), pool.as_str()];
            self.route_requests
                .with_label_values(&labels)
                .inc_by(stats.requests);
            self.route_errors
                .with_label_values(&labels)
                .inc_by(stats.errors);
            for (r, b) in CacheResult::ALL.iter().zip(&stats.duration) {
                if b.count() > 0 {
                    self.duration.add(&[route, r.label()], b);
                }
            }
        }
        let mut shown = self.servers_shown.lock().unwrap_or_else(|e| e.into_inner());
        for srv in &s.servers {
            let addr = srv.addr.to_string();
            // Counted now, forgotten at the next refresh if no longer
            // configured.
            shown.insert((srv.pool.to_string(), addr.clone()));
            let labels = [&*srv.pool, addr.as_str()];
            self.upstream_requests
                .with_label_values(&labels)
                .inc_by(srv.requests);
            self.upstream_server_errors
                .with_label_values(&labels)
                .inc_by(srv.errors);
            self.upstream_duration.add(&labels, &srv.duration);
        }
        drop(shown);
        let tls = &s.tls;
        self.tls_handshakes
            .with_label_values(&["full"])
            .inc_by(tls.full);
        self.tls_handshakes
            .with_label_values(&["resumed"])
            .inc_by(tls.resumed);
        for (f, n) in ultragate_dataplane::tls::Failure::ALL
            .iter()
            .zip(tls.failures)
        {
            if n > 0 {
                self.tls_failures.with_label_values(&[f.label()]).inc_by(n);
            }
        }
        self.probes.inc_by(s.probes);
        for (reason, n) in ["per_core", "per_client"].into_iter().zip(s.refused) {
            self.refused.with_label_values(&[reason]).inc_by(n);
        }
        self.bytes_in.inc_by(s.bytes_in);
        self.bytes_out.inc_by(s.bytes_out);
        let core = s.core.to_string();
        self.core_requests
            .with_label_values(&[&core])
            .inc_by(s.requests);
        self.open_connections
            .with_label_values(&[&core])
            .set(s.open_connections as i64);
    }

    /// The webhook counters, for the notifier.
    pub fn webhook_counts(&self) -> IntCounterVec {
        self.webhooks.clone()
    }

    /// Names the build in `ultragate_build_info`.
    pub fn set_build_info(&self, version: &str, dpdk: bool) {
        self.build_info.reset();
        self.build_info
            .with_label_values(&[version, if dpdk { "yes" } else { "no" }])
            .set(1.0);
    }

    /// Says whether security isolation is on.
    pub fn set_isolated(&self, on: bool) {
        self.isolated.set(i64::from(on));
    }

    /// Counts a TLS certificate reload.
    pub fn tls_reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "rejected" };
        self.tls_reloads.with_label_values(&[result]).inc();
    }

    /// Sets the expiry of each served certificate (the set replaces the
    /// last one, so a certificate no longer served leaves the series).
    pub fn tls_certificates(&self, certs: &[ultragate_dataplane::tls::CertInfo]) {
        self.tls_expiry.reset();
        for c in certs {
            let name = c.names.first().map_or(c.subject.as_str(), String::as_str);
            self.tls_expiry
                .with_label_values(&[c.cert_file.as_str(), name])
                .set(c.not_after as f64);
        }
    }

    /// Counts a config reload.
    pub fn reload(&self, result: ReloadResult) {
        self.reloads.with_label_values(&[result.label()]).inc();
        self.reload_ok
            .set(i64::from(result != ReloadResult::Rejected));
    }

    /// Counts a decision.
    pub fn decision(&self, kind: DecisionKind) {
        self.decisions.with_label_values(&[kind.label()]).inc();
    }

    /// Pool `pool` flapped.
    pub fn flap(&self, pool: &str) {
        self.flaps.with_label_values(&[pool]).inc();
    }

    /// Refreshes the gauges from one round's snapshot.
    pub(crate) fn refresh(&self, s: &Snapshot) {
        let v = &s.view;
        for (q, d) in [("50", v.p50), ("99", v.p99), ("99.9", v.p999)] {
            self.latency.with_label_values(&[q]).set(d.as_secs_f64());
        }
        self.error_ratio.set(v.error_rate);
        if let Some((dropped, written)) = s.access {
            self.access_dropped
                .inc_by(dropped.saturating_sub(self.access_dropped.get()));
            self.access_written
                .inc_by(written.saturating_sub(self.access_written.get()));
        }
        self.panics
            .inc_by(s.panics.saturating_sub(self.panics.get()));
        for r in [Route::Primary, Route::Fallback] {
            self.route
                .with_label_values(&[r.as_str()])
                .set(f64::from(u8::from(r == s.route)));
        }
        if let Some(p) = &s.port {
            let id = p.port.to_string();
            for (stat, v) in [
                ("link_up", u64::from(p.link_up)),
                ("speed_mbps", u64::from(p.speed_mbps)),
                ("rx_packets", p.rx_packets),
                ("tx_packets", p.tx_packets),
                ("rx_errors", p.rx_errors),
                ("tx_errors", p.tx_errors),
                ("rx_missed", p.rx_missed),
                ("rx_nombuf", p.rx_nombuf),
                ("mempool_free", u64::from(p.mempool_free)),
                ("mempool_in_use", u64::from(p.mempool_in_use)),
                ("hugepages_total", p.hugepages_total),
                ("hugepages_free", p.hugepages_free),
            ] {
                self.port.with_label_values(&[&id, stat]).set(v as f64);
            }
        }
        for b in Backend::ALL {
            self.backend
                .with_label_values(&[b.as_str()])
                .set(f64::from(u8::from(b == s.backend)));
        }
        // Reset first: a reload may have removed servers.
        self.server_up.reset();
        self.diverted.reset();
        for (pool, diverted, forced) in &s.routes {
            let mode = if *forced { "forced" } else { "auto" };
            self.diverted
                .with_label_values(&[pool, mode])
                .set(f64::from(u8::from(*diverted)));
            self.flaps.with_label_values(&[pool]);
        }
        for r in s.pools.engine.routes.iter() {
            // Present from the start, at 0.
            let labels = [&*r.name, &*r.upstream];
            self.route_requests.with_label_values(&labels);
            self.route_errors.with_label_values(&labels);
            for c in CacheResult::ALL {
                self.duration.touch(&[&*r.name, c.label()]);
            }
        }
        self.dpdk_wanted.set(i64::from(s.dpdk_wanted));
        self.unservable.reset();
        for (pool, stranded) in &s.traffic {
            self.unservable
                .with_label_values(&[pool])
                .set(f64::from(u8::from(*stranded)));
        }
        for (core, age, stalled) in &s.cores {
            let core = core.to_string();
            self.core_stalled
                .with_label_values(&[&core])
                .set(f64::from(u8::from(*stalled)));
            self.core_loop_age
                .with_label_values(&[&core])
                .set(age.as_secs_f64());
        }
        self.forget_servers(s);
        for g in s.pools.pools() {
            for (i, a) in g.servers.iter().enumerate() {
                let addr = a.to_string();
                let labels = [&*g.name, addr.as_str()];
                self.server_up
                    .with_label_values(&labels)
                    .set(f64::from(u8::from(g.health.is_healthy(i))));
                // Present from the start, at 0.
                self.upstream_requests.with_label_values(&labels);
                self.upstream_server_errors.with_label_values(&labels);
                self.upstream_duration.touch(&labels);
            }
        }
        if let Some(c) = &s.cache {
            self.cache_bytes.set(c.bytes as i64);
            self.cache_entries.set(c.entries as i64);
            self.cache_bypassed.set(i64::from(c.bypassed));
            self.cache_inserts.set(i64::from(c.inserts));
        }
        self.rss.set(v.rss as i64);
        self.limit.set(v.limit.unwrap_or(0) as i64);
    }

    /// Removes the series of servers no longer configured.
    fn forget_servers(&self, s: &Snapshot) {
        let now: std::collections::BTreeSet<(String, String)> = s
            .pools
            .pools()
            .iter()
            .flat_map(|g| {
                g.servers
                    .iter()
                    .map(|a| (g.name.to_string(), a.to_string()))
            })
            .collect();
        let mut shown = self.servers_shown.lock().unwrap_or_else(|e| e.into_inner());
        if *shown == now {
            return;
        }
        for (pool, server) in shown.difference(&now) {
            let labels = [pool.as_str(), server.as_str()];
            let _ = self.upstream_requests.remove_label_values(&labels);
            let _ = self.upstream_server_errors.remove_label_values(&labels);
        }
        self.upstream_duration.retain(|v| match v {
            [pool, server] => now.contains(&(pool.clone(), server.clone())),
            _ => false,
        });
        *shown = now;
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
