//! `[control]` and `[notify]`: the runbook's thresholds and who hears of its decisions.

use super::*;

/// `[control]`: when the control plane acts (runbook defaults).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSection {
    /// Time between control rounds, in milliseconds. Default 250.
    pub interval_ms: u64,
    /// P99 latency above which the primary is slow, in milliseconds.
    /// Default 10.
    pub p99_threshold_ms: u64,
    /// How long P99 must stay above it before a divert, in milliseconds.
    /// Default 30000.
    pub p99_window_ms: u64,
    /// Error share (0.0–1.0) above which the primary is failing. Default 0.10.
    pub error_rate_threshold: f64,
    /// How long the error rate must stay above it, in milliseconds. Default 5000.
    pub error_window_ms: u64,
    /// Requests per second below which P99 and errors are not judged. Default 20.
    pub min_requests: u64,
    /// How long the primary must be healthy before failing back, in
    /// milliseconds. Default 30000.
    pub failback_hold_ms: u64,
    /// Most the fail-back hold grows to, doubled by each flap (a divert
    /// within the hold of a fail-back), in milliseconds; 0: 8 ×
    /// `failback_hold_ms`. It goes back to `failback_hold_ms` after this
    /// long on the pool. Default 0.
    pub failback_hold_max_ms: u64,
    /// Client addresses and URL paths that must share errors or slow
    /// answers before they are the pool's (unless its own health check
    /// corroborates them); 1 judges on any. Default 4.
    pub min_spread: u32,
    /// Share (0.0–1.0) of a diverted pool's idempotent requests sent to it
    /// as canaries (a failed one is retried on the fallback): the evidence
    /// its fail-back is judged on. Default 0.02.
    pub canary_share: f64,
    /// Memory limit in bytes; 0 reads the cgroup's (v2, then v1). Default 0.
    pub memory_limit_bytes: u64,
    /// Time between background cache verifies, in milliseconds. Default 60000.
    pub verify_interval_ms: u64,
    /// How often the config file is checked for a change (a ConfigMap
    /// update lands as a symlink swap), which is then reloaded as SIGHUP
    /// would; 0 turns the watch off. Milliseconds, default 2000.
    pub config_watch_ms: u64,
    /// A data core whose loop has not turned (handed over its numbers)
    /// for this long is stalled: `/health` unhealthy naming it,
    /// `ultragate_core_stalled{core}` 1. Milliseconds, default 10000.
    pub core_stall_ms: u64,
}

impl Default for ControlSection {
    fn default() -> Self {
        Self {
            interval_ms: 250,
            p99_threshold_ms: 10,
            p99_window_ms: 30_000,
            error_rate_threshold: 0.10,
            error_window_ms: 5_000,
            min_requests: 20,
            failback_hold_ms: 30_000,
            failback_hold_max_ms: 0,
            min_spread: 4,
            canary_share: 0.02,
            memory_limit_bytes: 0,
            verify_interval_ms: 60_000,
            config_watch_ms: 2_000,
            core_stall_ms: 10_000,
        }
    }
}

/// `[notify]`: a webhook told of every control-plane decision.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySection {
    /// `http://HOST:PORT/PATH` to POST each decision to; empty: none.
    /// (HTTPS receivers such as Slack need an HTTP relay: the gateway has
    /// no TLS client.) Default empty.
    pub webhook_url: String,
    /// `json` (the event as an object) or `slack` (`{"text": ...}`).
    /// Default `json`.
    pub format: NotifyFormat,
    /// Longest time for one POST, in milliseconds. Default 2000.
    pub timeout_ms: u64,
    /// The same decision (trigger and action) within this time is sent
    /// once, in milliseconds. Default 60000.
    pub min_interval_ms: u64,
}

/// `[notify] format`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NotifyFormat {
    /// The event as a JSON object.
    #[default]
    Json,
    /// Slack-compatible `{"text": ...}`.
    Slack,
}

impl Default for NotifySection {
    fn default() -> Self {
        Self {
            webhook_url: String::new(),
            format: NotifyFormat::Json,
            timeout_ms: 2000,
            min_interval_ms: 60_000,
        }
    }
}

impl NotifySection {
    /// `(host:port, host, path)` of the webhook URL, when one is set.
    pub fn target(&self) -> Result<Option<(String, String, String)>, ConfigError> {
        if self.webhook_url.is_empty() {
            return Ok(None);
        }
        let invalid = |message: &str| ConfigError::Invalid {
            key: "notify.webhook_url".into(),
            message: message.to_owned(),
        };
        if self.webhook_url.starts_with("https://") {
            return Err(invalid(
                "https needs a TLS client, which ultragate does not have: point it at an HTTP relay",
            ));
        }
        let rest = self
            .webhook_url
            .strip_prefix("http://")
            .ok_or_else(|| invalid("give http://HOST:PORT/PATH"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || "-._:[]".contains(c);
        if authority.is_empty()
            || !authority.chars().all(valid)
            || path.contains(char::is_whitespace)
        {
            return Err(invalid("give http://HOST:PORT/PATH"));
        }
        let addr = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Some((addr, authority.to_owned(), path.to_owned())))
    }
}
