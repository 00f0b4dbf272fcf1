//! `[admin]`: the admin port, its token and what a shown config hides.

use super::*;

/// `[admin]`: the admin and health API.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Address of the admin port. Default `127.0.0.1:8081`.
    pub listen: SocketAddr,
    /// Bearer token that allows admin calls from non-loopback peers;
    /// empty allows loopback only. Never printed: `GET /admin/config`
    /// shows it redacted. Default empty.
    pub token: String,
    /// A file holding the token (e.g. a mounted Kubernetes Secret), read at
    /// start and on reload; surrounding whitespace is ignored. Set this or
    /// `token`, not both. Default empty.
    pub token_file: String,
    /// Host names `/admin/*` answers to besides IP literals and
    /// `localhost` (a name that resolves to the pod, used on purpose);
    /// any other `Host` gets 421, so a page that rebinds its own name to
    /// the node cannot reach the admin API. Default empty.
    pub hosts: Vec<String>,
    /// With a token configured, loopback peers still change things
    /// without it (reads never need it from loopback). Default `false`:
    /// a sidecar or a browser on the node is a loopback peer too. Set it
    /// where `kubectl exec … curl -X POST localhost:…` is how operators
    /// work and nothing else shares the pod's network namespace.
    pub loopback_trust: bool,
}

/// What `GET /admin/config` shows in place of a secret.
pub const REDACTED: &str = "<redacted>";

impl AdminSection {
    /// `hosts`, lowercase, without a trailing dot, as the admin API
    /// compares them.
    pub fn host_names(&self) -> Vec<String> {
        self.hosts
            .iter()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            .collect()
    }

    /// The bearer token, from `token` or read from `token_file`; `None`
    /// when neither is set.
    pub fn resolve_token(&self) -> Result<Option<String>, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            key: "admin.token_file".into(),
            message,
        };
        if self.token_file.is_empty() {
            return Ok((!self.token.is_empty()).then(|| self.token.clone()));
        }
        if !self.token.is_empty() {
            return Err(invalid("set either admin.token or admin.token_file".into()));
        }
        let text = std::fs::read_to_string(&self.token_file)
            .map_err(|e| invalid(format!("cannot read {}: {e}", self.token_file)))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(invalid(format!("{} is empty", self.token_file)));
        }
        Ok(Some(token.to_owned()))
    }
}

impl Config {
    /// This configuration with every secret replaced by [`REDACTED`], for
    /// showing it.
    pub fn redacted(&self) -> Config {
        let mut shown = self.clone();
        if !shown.admin.token.is_empty() {
            shown.admin.token = REDACTED.to_owned();
        }
        // A webhook's path and query often hold its secret (Slack's do).
        if let Some(at) = shown.notify.webhook_url.find("://").and_then(|s| {
            let after = shown.notify.webhook_url.get(s + 3..)?;
            after.find('/').map(|p| s + 3 + p)
        }) {
            shown
                .notify
                .webhook_url
                .replace_range(at.., &format!("/{REDACTED}"));
        }
        shown
    }
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            token: String::new(),
            token_file: String::new(),
            hosts: Vec::new(),
            loopback_trust: false,
        }
    }
}
