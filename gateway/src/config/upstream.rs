//! `[upstream.NAME]`: the pools, their servers and how they balance.

use super::*;

/// `[upstream.*]`: the server groups. `primary` and `fallback` always
/// exist (with their defaults when not written); any other name is a
/// named pool that routes send requests to.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstreams {
    /// `[upstream.primary]`: where requests go. Default `127.0.0.1:8000`,
    /// diverting to `fallback`.
    pub primary: UpstreamGroup,
    /// `[upstream.fallback]`: the Node.js fallback service. Default
    /// `127.0.0.1:3005`.
    pub fallback: UpstreamGroup,
    /// `[upstream.NAME]` for every other NAME, by name.
    pub named: BTreeMap<String, UpstreamGroup>,
}

impl Default for Upstreams {
    fn default() -> Self {
        let mut primary = UpstreamGroup::with_server(SocketAddr::from(([127, 0, 0, 1], 8000)));
        primary.fallback = Some("fallback".into());
        Self {
            primary,
            fallback: UpstreamGroup::with_server(SocketAddr::from(([127, 0, 0, 1], 3005))),
            named: BTreeMap::new(),
        }
    }
}

impl<'de> Deserialize<'de> for Upstreams {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = BTreeMap::<String, UpstreamGroupFile>::deserialize(d)?;
        let mut out = Upstreams::default();
        if let Some(p) = map.remove("primary") {
            out.primary = p.over(out.primary);
        }
        if let Some(f) = map.remove("fallback") {
            out.fallback = f.over(out.fallback);
        }
        // A named pool has no server unless it says which, and balances
        // by latency unless it says otherwise.
        let named = UpstreamGroup {
            servers: Vec::new(),
            balance: BalanceKey::P2cEwma,
            ..UpstreamGroup::default()
        };
        out.named = map
            .into_iter()
            .map(|(name, g)| (name, g.over(named.clone())))
            .collect();
        Ok(out)
    }
}

impl Serialize for Upstreams {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut all: BTreeMap<&str, &UpstreamGroup> =
            self.named.iter().map(|(k, v)| (k.as_str(), v)).collect();
        all.insert("primary", &self.primary);
        all.insert("fallback", &self.fallback);
        all.serialize(s)
    }
}

impl Upstreams {
    /// Every pool with its config key prefix: primary, fallback, then the
    /// named ones in name order (the order the data plane indexes them).
    pub fn all(&self) -> Vec<(&str, &UpstreamGroup)> {
        let mut out = vec![("primary", &self.primary), ("fallback", &self.fallback)];
        out.extend(self.named.iter().map(|(k, v)| (k.as_str(), v)));
        out
    }
}

/// An `[upstream.NAME]` section as written: every key optional, so that
/// a key not written takes the pool's default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamGroupFile {
    servers: Option<Vec<ServerAddr>>,
    connect_timeout_ms: Option<u64>,
    response_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_idle_per_core: Option<usize>,
    health_path: Option<String>,
    health_interval_ms: Option<u64>,
    health_timeout_ms: Option<u64>,
    rise: Option<u32>,
    fall: Option<u32>,
    eject_after_failures: Option<u32>,
    balance: Option<BalanceKey>,
    fallback: Option<String>,
    resolve_interval_ms: Option<u64>,
    p99_threshold_ms: Option<u64>,
    p99_window_ms: Option<u64>,
    error_rate_threshold: Option<f64>,
    error_window_ms: Option<u64>,
    tls: Option<bool>,
    tls_server_name: Option<String>,
    tls_ca_file: Option<PathBuf>,
}

impl UpstreamGroupFile {
    /// The section over `base` (the pool's defaults).
    fn over(self, mut base: UpstreamGroup) -> UpstreamGroup {
        macro_rules! take {
            ($($k:ident),*) => { $( if let Some(v) = self.$k { base.$k = v; } )* };
        }
        take!(
            servers,
            connect_timeout_ms,
            response_timeout_ms,
            idle_timeout_ms,
            max_idle_per_core,
            health_path,
            health_interval_ms,
            health_timeout_ms,
            rise,
            fall,
            eject_after_failures,
            balance,
            resolve_interval_ms,
            tls
        );
        macro_rules! keep {
            ($($k:ident),*) => { $( if self.$k.is_some() { base.$k = self.$k; } )* };
        }
        keep!(
            p99_threshold_ms,
            p99_window_ms,
            error_rate_threshold,
            error_window_ms,
            tls_server_name,
            tls_ca_file
        );
        if let Some(f) = self.fallback {
            // `fallback = ""`: none.
            base.fallback = (!f.is_empty()).then_some(f);
        }
        base
    }
}

/// An upstream server as configured: `HOST:PORT`, where HOST is an IP
/// address or a DNS name (a Kubernetes Service, say), resolved off the
/// data path (`crate::resolve`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServerAddr(String);

/// `HOST:PORT` as its parts (an IPv6 literal's brackets removed); none
/// when it is not that shape.
pub(super) fn split_host_port(v: &str) -> Option<(&str, u16)> {
    let (host, port) = v.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse().ok()?;
    (!host.is_empty() && !host.contains(char::is_whitespace)).then_some((host, port))
}

impl TryFrom<String> for ServerAddr {
    type Error = String;

    fn try_from(v: String) -> Result<Self, String> {
        match split_host_port(&v) {
            Some(_) => Ok(Self(v)),
            None => Err(format!("{v:?} is not HOST:PORT")),
        }
    }
}

impl From<ServerAddr> for String {
    fn from(a: ServerAddr) -> String {
        a.0
    }
}

impl From<SocketAddr> for ServerAddr {
    fn from(a: SocketAddr) -> Self {
        Self(a.to_string())
    }
}

impl ServerAddr {
    /// The address as written, used as `Host` for HTTP/1.0 clients.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host (a name or an IP literal, without brackets) and the port.
    pub fn host_port(&self) -> (&str, u16) {
        // Checked when made: every ServerAddr has both.
        split_host_port(&self.0).unwrap_or(("", 0))
    }
}

/// One group of interchangeable upstream servers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UpstreamGroup {
    /// Server addresses, used round robin. At least one.
    pub servers: Vec<ServerAddr>,
    /// Longest wait for a connection, in milliseconds. Default 1000; then
    /// the next server, and 504 when none is left.
    pub connect_timeout_ms: u64,
    /// Longest wait for the next response byte, in milliseconds. Default
    /// 30000; then 504.
    pub response_timeout_ms: u64,
    /// How long an idle keep-alive connection is kept, in milliseconds.
    /// Default 60000.
    pub idle_timeout_ms: u64,
    /// Most idle keep-alive connections kept per server and core. Default 64.
    pub max_idle_per_core: usize,
    /// Path of the active health check. Default `/health`.
    pub health_path: String,
    /// Time between health checks, in milliseconds. Default 1000.
    pub health_interval_ms: u64,
    /// Time allowed per health check, in milliseconds. Default 500.
    pub health_timeout_ms: u64,
    /// Passing checks in a row that re-admit a server. Default 2.
    pub rise: u32,
    /// Failing checks in a row that eject a server. Default 2.
    pub fall: u32,
    /// Connect failures in a row after which the data plane ejects a
    /// server until its checks pass again. Default 2.
    pub eject_after_failures: u32,
    /// How a server is picked: `round_robin` or `p2c_ewma` (the power of
    /// two choices over each server's peak-EWMA latency times its
    /// outstanding requests). Default `round_robin` for `primary` and
    /// `fallback` (their meaning unchanged), `p2c_ewma` for named pools.
    pub balance: BalanceKey,
    /// The pool its requests divert to when the runbook (or an operator)
    /// says so, and after every server of it was tried: `fallback` for
    /// `primary`, none for the others unless written (`""`: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// How often the servers' names are resolved again, in milliseconds
    /// (addresses added and removed live). Default 5000.
    pub resolve_interval_ms: u64,
    /// The pool's own `[control]` P99 threshold for diverting it, in
    /// milliseconds; default `[control] p99_threshold_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_threshold_ms: Option<u64>,
    /// Its own P99 window; default `[control] p99_window_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_window_ms: Option<u64>,
    /// Its own error-rate threshold (0.0–1.0); default `[control]
    /// error_rate_threshold`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate_threshold: Option<f64>,
    /// Its own error-rate window; default `[control] error_window_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_window_ms: Option<u64>,
    /// Speak TLS to the servers, verifying their certificates. Default
    /// `false`.
    pub tls: bool,
    /// The name the servers' certificates must carry (and SNI); default:
    /// the first server's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// The CAs (PEM) the servers' certificates must chain to; default: the
    /// system's trust store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
}

impl UpstreamGroup {
    /// The name verified in the servers' certificates: `tls_server_name`,
    /// else the first server's host.
    pub fn tls_name(&self) -> &str {
        match &self.tls_server_name {
            Some(n) => n,
            None => self.servers.first().map_or("", |s| s.host_port().0),
        }
    }
}

/// `balance` as written in the config.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BalanceKey {
    /// Each server in turn.
    #[default]
    RoundRobin,
    /// Power of two choices over peak-EWMA latency.
    P2cEwma,
}

impl From<BalanceKey> for ultragate_dataplane::upstream::balance::Balance {
    fn from(k: BalanceKey) -> Self {
        match k {
            BalanceKey::RoundRobin => Self::RoundRobin,
            BalanceKey::P2cEwma => Self::P2cEwma,
        }
    }
}

impl UpstreamGroup {
    fn with_server(server: SocketAddr) -> Self {
        Self {
            servers: vec![ServerAddr::from(server)],
            connect_timeout_ms: 1000,
            response_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_idle_per_core: 64,
            health_path: "/health".to_owned(),
            health_interval_ms: 1000,
            health_timeout_ms: 500,
            rise: 2,
            fall: 2,
            eject_after_failures: 2,
            balance: BalanceKey::RoundRobin,
            fallback: None,
            resolve_interval_ms: 5000,
            p99_threshold_ms: None,
            p99_window_ms: None,
            error_rate_threshold: None,
            error_window_ms: None,
            tls: false,
            tls_server_name: None,
            tls_ca_file: None,
        }
    }
}

impl Default for UpstreamGroup {
    fn default() -> Self {
        Self::with_server(SocketAddr::from(([127, 0, 0, 1], 8000)))
    }
}
