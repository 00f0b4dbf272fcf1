//! The gateway's configuration: one TOML file, every key defaulted, unknown
//! keys and bad values refused with the key's name. This is the one place
//! that turns TOML into settings.

use crate::cpus::CpuBudget;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use ultragate_dataplane::proxy::forward::{Cidr, ForwardRules};

/// Why a configuration was refused. Every variant names the key.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The text is not TOML.
    #[error("config is not valid TOML: {0}")]
    Toml(String),
    /// A key is unknown or its value of the wrong type.
    #[error("config key `{key}`: {message}")]
    Syntax {
        /// The dotted key, e.g. `api_gateway.listen`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A value parses but is not acceptable.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The dotted key, e.g. `route[2].upstream`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The data port and its limits.
    pub api_gateway: ApiGateway,
    /// The admin and health API.
    pub admin: AdminSection,
    /// Upstream server groups.
    pub upstream: Upstreams,
    /// The response cache.
    pub cache: CacheSection,
    /// The runbook's thresholds.
    pub control: ControlSection,
    /// Audit and isolation.
    pub security: SecuritySection,
    /// The process log.
    pub log: LogSection,
    /// Decision webhooks.
    pub notify: NotifySection,
    /// The DPDK port, used when `api_gateway.enable_dpdk` is true.
    pub dpdk: DpdkSection,
    /// `[[route]]`: which pool takes which requests. None: every request
    /// goes to `primary`.
    pub route: Vec<RouteConfig>,
    /// How server names are resolved.
    pub resolver: ResolverSection,
    /// The TLS data port and its certificates.
    pub tls: TlsSection,
    /// Drop-in files merged over this one ([`crate::files`]).
    pub include: IncludeSection,
}

/// `[include]`: drop-in files merged over the main file in name order.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IncludeSection {
    /// Paths or globs (`*` in the file name), relative to the main file's
    /// folder, e.g. `["conf.d/*.toml"]`. Default none.
    pub files: Vec<String>,
}

/// `[tls]`: HTTPS on a second data port, next to the plain one.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// Address of the TLS data port, e.g. `0.0.0.0:8443`. Default empty:
    /// no TLS.
    #[serde(with = "optional_addr")]
    pub listen: Option<SocketAddr>,
    /// `[[tls.certificate]]`: PEM chain and key, chosen by SNI against
    /// each certificate's names; the first is the default.
    pub certificate: Vec<CertificateConfig>,
    /// The oldest version accepted: `"1.2"` (default) or `"1.3"`.
    pub min_version: TlsVersionName,
    /// How long a client may take to finish its handshake, in
    /// milliseconds. Default 10000.
    pub handshake_timeout_ms: u64,
    /// How often the certificate and key files are checked for a change
    /// (a Kubernetes Secret update), in milliseconds; 0: never. Default
    /// 5000.
    pub watch_interval_ms: u64,
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            listen: None,
            certificate: Vec::new(),
            min_version: TlsVersionName::V12,
            handshake_timeout_ms: 10_000,
            watch_interval_ms: 5_000,
        }
    }
}

impl TlsSection {
    /// What the data plane needs of it.
    pub fn settings(&self) -> ultragate_dataplane::tls::TlsSettings {
        use ultragate_dataplane::tls::{CertFiles, MinVersion, TlsSettings};
        TlsSettings {
            certificates: self
                .certificate
                .iter()
                .map(|c| CertFiles {
                    cert_file: c.cert_file.clone(),
                    key_file: c.key_file.clone(),
                })
                .collect(),
            min_version: match self.min_version {
                TlsVersionName::V12 => MinVersion::Tls12,
                TlsVersionName::V13 => MinVersion::Tls13,
            },
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
        }
    }
}

/// One `[[tls.certificate]]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM: the certificate, then its chain.
    pub cert_file: PathBuf,
    /// PEM: its private key (RSA or ECDSA).
    pub key_file: PathBuf,
}

/// The values of `[tls] min_version`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum TlsVersionName {
    /// TLS 1.2 and 1.3.
    #[serde(rename = "1.2")]
    V12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V13,
}

/// An address that may be empty (`""`: off), as TOML text.
mod optional_addr {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::SocketAddr;

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.collect_str(a),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "{text:?} is not HOST:PORT (an IP address and a port), or empty for off"
            ))
        })
    }
}

/// `[resolver]`: how `HOST:PORT` server names become addresses. Names are
/// resolved off the data path at start and every pool's
/// `resolve_interval_ms`; a name resolves to every address it has (a
/// headless Service: one per pod).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ResolverSection {
    /// An `/etc/hosts`-style file read first at every resolution (`ADDRESS
    /// NAME...` per line). Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts_file: Option<PathBuf>,
    /// Ask the system resolver (`/etc/hosts`, then DNS) for names not in
    /// `hosts_file`. Default `true`.
    pub system: bool,
}

impl Default for ResolverSection {
    fn default() -> Self {
        Self {
            hosts_file: None,
            system: true,
        }
    }
}

/// One `[[route]]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Its name, unique: `POST /admin/route` and events use it.
    pub name: String,
    /// `NAME` or `*.SUFFIX`; absent: any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The path prefix it takes. Default `/`.
    #[serde(default = "slash")]
    pub path_prefix: String,
    /// The methods it takes; absent: every method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// The `[upstream.NAME]` its requests go to.
    pub upstream: String,
    /// Whether its responses are cached. Default `true`.
    #[serde(default = "yes")]
    pub cache: bool,
    /// The freshness, in seconds, of what it stores, whatever the
    /// responses say (one without any becomes storable, unless its
    /// request carried `Cookie` or `Authorization`; `no-store`, `private`
    /// and `Set-Cookie` still keep a response out), for the content types
    /// of `cache_ttl_override_types`. Default none: the responses' own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_ttl_override_s: Option<u64>,
    /// The `Content-Type`s `cache_ttl_override_s` applies to: media types
    /// (`text/css`) or top-level types (`image/*`). Default: static
    /// assets (CSS, JavaScript, WebAssembly, images, fonts, audio,
    /// video), never HTML or JSON.
    #[serde(default = "asset_types")]
    pub cache_ttl_override_types: Vec<String>,
}

fn asset_types() -> Vec<String> {
    ultragate_dataplane::route::ASSET_TYPES
        .iter()
        .map(|t| t.to_string())
        .collect()
}

fn slash() -> String {
    "/".into()
}

fn yes() -> bool {
    true
}

/// `[dpdk]`: the DPDK port and the userspace stack's address on it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DpdkSection {
    /// EAL arguments, e.g. `["--vdev=net_tap0,iface=ugtap0", "--no-pci"]`.
    /// Default none (the EAL probes PCI devices bound to vfio-pci).
    pub eal_args: Vec<String>,
    /// The DPDK port id. Default 0.
    pub port: u16,
    /// The stack's IPv4 address and prefix on the port. Default
    /// `10.213.0.2/24`. With `address_file`, the subnet the pod's own
    /// address is allocated from (e.g. `10.213.0.0/24`).
    pub address: String,
    /// Multus' `network-status` annotation as a file (a downward API
    /// volume): the pod's own address on the port is read from it at
    /// start, so each replica gets its own (the SR-IOV attachment's
    /// IPAM); see [`crate::netstatus`]. Default empty: `address` is the
    /// address.
    pub address_file: String,
    /// The attachment's name in that file (`NAMESPACE/NAME`). Default
    /// empty: the first network that is not the cluster's default.
    pub network: String,
    /// Next hop for clients outside the prefix. Default none.
    pub gateway: String,
    /// TCP port clients connect to on the DPDK address. Default 8080.
    pub listen_port: u16,
    /// How long the link may stay down before the gateway serves on
    /// kernel networking (`api_gateway.listen`), in milliseconds.
    /// Default 500.
    pub link_down_grace_ms: u64,
}

impl Default for DpdkSection {
    fn default() -> Self {
        Self {
            eal_args: Vec::new(),
            port: 0,
            address: "10.213.0.2/24".into(),
            address_file: String::new(),
            network: String::new(),
            gateway: String::new(),
            listen_port: 8080,
            link_down_grace_ms: 500,
        }
    }
}

impl DpdkSection {
    /// The address and prefix length.
    pub fn cidr(&self) -> Result<(Ipv4Addr, u8), ConfigError> {
        let bad = || ConfigError::Invalid {
            key: "dpdk.address".into(),
            message: format!("{:?} is not IPV4/PREFIX, e.g. 10.213.0.2/24", self.address),
        };
        let (ip, len) = self.address.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| (1..=32).contains(l))
            .ok_or_else(bad)?;
        Ok((ip, len))
    }

    /// The next hop, when set.
    pub fn next_hop(&self) -> Result<Option<Ipv4Addr>, ConfigError> {
        if self.gateway.is_empty() {
            return Ok(None);
        }
        self.gateway
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::Invalid {
                key: "dpdk.gateway".into(),
                message: format!("{:?} is not an IPv4 address", self.gateway),
            })
    }
}

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

/// `[log]`: the process log.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Level or filter, as `RUST_LOG` takes it (`info`, `warn`,
    /// `info,ultragate::access=off`); the environment variable
    /// `ULTRAGATE_LOG` wins at start, a reload applies this. Default
    /// `info`.
    pub level: String,
    /// The process log's lines (on stderr): `json` (one object per line,
    /// for a log collector), `text`, or `auto`: text on a terminal, JSON
    /// otherwise. Never ANSI colours off a terminal. Default `auto`.
    pub format: LogFormat,
    /// The access log, one JSON line per request: `stdout`, a file path
    /// (reopened on SIGUSR1, for logrotate), or `off`. Default `off`.
    pub access: String,
    /// Share of requests written to the access log, 0.0 to 1.0. Default 1.0.
    pub access_sample: f64,
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Auto,
            access: "off".into(),
            access_sample: 1.0,
        }
    }
}

/// `[security]`: the audit trail, with the runbook's own keys
/// (`enable_audit_logging`, `log_all_requests`) accepted as it writes them.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySection {
    /// Where the audit log (JSON lines) goes: a file appended to, or
    /// `stdout` (also when empty) so the cluster's log pipeline keeps it.
    /// Default empty (stdout).
    pub audit_log: String,
    /// Records admin calls and refusals in the audit log. Default true.
    pub enable_audit_logging: bool,
    /// Also writes every request (as an access-log record) to the audit
    /// log, as the runbook's security step asks. Default false.
    pub log_all_requests: bool,
    /// Size cap of an `audit_log` file, in bytes: past it the file moves
    /// to `PATH.1` (replacing the one before) and a new one starts, so the
    /// log takes at most twice this. Default 64 MiB.
    pub audit_log_max_bytes: u64,
}

impl Default for SecuritySection {
    fn default() -> Self {
        Self {
            audit_log: String::new(),
            enable_audit_logging: true,
            log_all_requests: false,
            audit_log_max_bytes: 64 << 20,
        }
    }
}

/// `[cache]`: the shared response cache.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// Cache responses at all. Default `true`.
    pub enabled: bool,
    /// Budget for all entries including overhead, in bytes. Default 256 MiB.
    pub max_bytes: u64,
    /// Largest body stored, in bytes; larger ones pass through. Default 8 MiB.
    pub max_object_bytes: u64,
    /// Directory of snapshots. Default `/var/cache/ultragate`.
    pub snapshot_dir: PathBuf,
    /// Write a snapshot after draining on SIGTERM. Default `false`.
    pub snapshot_on_shutdown: bool,
    /// Load the newest good snapshot at start. Default `false`.
    pub restore_on_start: bool,
    /// Longest wait for another connection's fetch of the same missing
    /// key, in milliseconds. Default 2000.
    pub coalesce_wait_ms: u64,
    /// Test builds only (a release build refuses the key): enables `POST
    /// /admin/cache/corrupt`, which flips a bit in a stored entry as memory
    /// corruption would. Absent by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_hooks: Option<bool>,
    /// Targeted cache-control fields this cache follows (RFC 9213), first
    /// valid one wins over `Cache-Control` and `Expires`; put a
    /// gateway-specific field (e.g. `Ultragate-Cache-Control`) ahead of
    /// `CDN-Cache-Control` to address this tier alone. At most 8 field
    /// names. Default `["CDN-Cache-Control"]`.
    pub targeted_fields: Vec<String>,
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 256 * 1024 * 1024,
            max_object_bytes: 8 * 1024 * 1024,
            snapshot_dir: PathBuf::from("/var/cache/ultragate"),
            snapshot_on_shutdown: false,
            restore_on_start: false,
            coalesce_wait_ms: 2000,
            test_hooks: None,
            targeted_fields: ultragate_dataplane::cache::targeted::DEFAULT
                .iter()
                .map(|&n| n.to_owned())
                .collect(),
        }
    }
}

/// `[api_gateway]`: the data port.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiGateway {
    /// Address of the plain HTTP data port. Default `0.0.0.0:8080`;
    /// empty: off (only `[tls] listen` serves).
    #[serde(with = "optional_addr")]
    pub listen: Option<SocketAddr>,
    /// Cores running one data thread each. Default: every core but core 0,
    /// at least one.
    pub cores: Vec<usize>,
    /// Serve on DPDK instead of kernel networking. Default `false`; this
    /// build has no DPDK support and says so when it is `true`.
    pub enable_dpdk: bool,
    /// Largest request head, in bytes. Default 16384; more gets 431.
    pub max_header_bytes: usize,
    /// Largest request body, in bytes. Default 10 MiB; more gets 413.
    pub max_body_bytes: u64,
    /// Longest wait for progress on a started request, in milliseconds.
    /// Default 10000; a late head gets 408.
    pub client_timeout_ms: u64,
    /// Idle time before a client keep-alive connection is closed, in
    /// milliseconds. Default 60000.
    pub keepalive_timeout_ms: u64,
    /// Longest time a response may sit queued with none of it taken by
    /// the client (a zero window, a peer that stopped reading), in
    /// milliseconds; then the connection closes. Default 30000.
    pub send_timeout_ms: u64,
    /// Time in-flight requests get to finish after SIGTERM, in
    /// milliseconds. Default 10000.
    pub drain_timeout_ms: u64,
    /// Kernel data-plane backend: `auto` (io_uring, else epoll with the
    /// reason logged), `uring` (or fail to start) or `epoll`. Default `auto`.
    pub io_backend: IoBackendName,
    /// Most client connections one data core serves at once (at most
    /// 1048576); more get a `503` and are closed. Default 16384.
    pub max_connections_per_core: usize,
    /// Most client connections one address may have open on one data
    /// core; more get a `503` and are closed, counted in
    /// `ultragate_connections_refused_total{reason="per_client"}`. Set it
    /// above what a NAT or a proxy in front opens. Default 1024.
    pub max_connections_per_client: usize,
    /// Read `//` in a path as `/` before routing, keying and forwarding.
    /// Default `false` (empty segments are kept, as RFC 3986 says).
    pub merge_slashes: bool,
    /// What becomes of `%2F`, `%5C` and `\` in a path: `reject` (400),
    /// `keep` (forwarded as sent; only for origins that never decode
    /// them) or `decode` (read as `/`). Default `reject`.
    pub escaped_slashes: EscapedSlashesName,
    /// Peers (CIDR blocks, e.g. `10.0.0.0/8`, or addresses) whose
    /// forwarding fields are kept: a load balancer in front. From any
    /// other peer `X-Forwarded-Host`, `Forwarded`, `X-Real-IP`,
    /// `X-Original-URL`, `X-Rewrite-URL` and `strip_fields` are removed,
    /// and `X-Forwarded-For`/`-Proto`/`-Host` are the gateway's own.
    /// Default none.
    pub trusted_proxies: Vec<String>,
    /// More request fields removed from untrusted peers' requests (ones
    /// the origin acts on, e.g. `X-Forwarded-Prefix`). Default none.
    pub strip_fields: Vec<String>,
    /// Also send an RFC 7239 `Forwarded` field (`for`, `proto`, `host`).
    /// Default `false`.
    pub forwarded_field: bool,
    /// Bytes queued for one client past which its connection takes no
    /// more (no further pipelined request answered, nothing more read
    /// from it or its upstream) until it reads; a connection then holds
    /// at most this, one request head and the response being written.
    /// Default 262144.
    pub max_connection_buffer_bytes: usize,
}

impl ApiGateway {
    /// The forwarding rules of `trusted_proxies`, `strip_fields` and
    /// `forwarded_field`.
    pub fn forward_rules(&self) -> Result<ForwardRules, ConfigError> {
        let trusted = self
            .trusted_proxies
            .iter()
            .map(|c| {
                c.parse::<Cidr>().map_err(|e| ConfigError::Invalid {
                    key: "api_gateway.trusted_proxies".into(),
                    message: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ForwardRules {
            trusted,
            strip: self
                .strip_fields
                .iter()
                .map(|f| f.to_ascii_lowercase().into_boxed_str())
                .collect(),
            forwarded: self.forwarded_field,
        })
    }
}

/// The values of `[api_gateway] escaped_slashes`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EscapedSlashesName {
    /// 400.
    #[default]
    Reject,
    /// Forwarded as sent.
    Keep,
    /// Read as `/`.
    Decode,
}

/// The values of `[api_gateway] io_backend`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum IoBackendName {
    /// io_uring when the kernel and sandbox allow it, else epoll.
    #[default]
    Auto,
    /// io_uring only.
    Uring,
    /// epoll only.
    Epoll,
}

impl Default for ApiGateway {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 8080))),
            cores: Vec::new(),
            enable_dpdk: false,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            client_timeout_ms: 10_000,
            keepalive_timeout_ms: 60_000,
            send_timeout_ms: 30_000,
            drain_timeout_ms: 10_000,
            io_backend: IoBackendName::Auto,
            max_connections_per_core: 16_384,
            max_connections_per_client: 1024,
            merge_slashes: false,
            escaped_slashes: EscapedSlashesName::Reject,
            trusted_proxies: Vec::new(),
            strip_fields: Vec::new(),
            forwarded_field: false,
            max_connection_buffer_bytes: 256 * 1024,
        }
    }
}

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
struct UpstreamGroupFile {
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
fn split_host_port(v: &str) -> Option<(&str, u16)> {
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

impl Config {
    /// Reads and validates a configuration file and its drop-ins
    /// ([`crate::files::load`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_files(path).map(|l| l.config)
    }

    /// As [`Config::load`], with the files read and which values came
    /// from a drop-in.
    pub fn load_files(path: &Path) -> Result<crate::files::Loaded, ConfigError> {
        let loaded = crate::files::load(path)?;
        loaded.config.admin.resolve_token()?;
        Ok(loaded)
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        // The message of a TOML error, with its line.
        let described = |e: &toml::de::Error| {
            let location = e
                .span()
                .map(|s| text.get(..s.start).unwrap_or(text).lines().count().max(1))
                .map_or(String::new(), |line| format!(" (line {line})"));
            format!("{}{location}", e.message().replace('\n', "; "))
        };
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Toml(described(&e)))?;
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let message = if key == "admin.token" {
                // The value may be the secret, mistyped: never echoed.
                "must be a string (the value is not shown: it is a secret)".to_owned()
            } else {
                described(e.inner())
            };
            if key == "." {
                ConfigError::Toml(message)
            } else {
                ConfigError::Syntax { key, message }
            }
        })?;
        cfg.validate()?;
        cfg.test_hooks_built(ultragate_dataplane::TEST_HOOKS)?;
        Ok(cfg)
    }

    /// `[cache] test_hooks` is a key of test builds only: a build without
    /// the hooks refuses it as unknown.
    fn test_hooks_built(&self, built: bool) -> Result<(), ConfigError> {
        if self.cache.test_hooks.is_some() && !built {
            return Err(ConfigError::Syntax {
                key: "cache.test_hooks".into(),
                message: "unknown field `test_hooks` (test builds only)".into(),
            });
        }
        Ok(())
    }

    /// The defaults, as TOML text.
    pub fn default_toml() -> String {
        toml::to_string_pretty(&Config::default()).unwrap_or_default()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                message: message.to_owned(),
            })
        };
        self.dpdk.cidr()?;
        self.dpdk.next_hop()?;
        self.notify.target()?;
        if self.notify.timeout_ms == 0 {
            return invalid("notify.timeout_ms", "must be above 0");
        }
        if !(0.0..=1.0).contains(&self.log.access_sample) {
            return invalid("log.access_sample", "must be between 0.0 and 1.0");
        }
        if self.log.access.is_empty() {
            return invalid("log.access", "give stdout, a file path or off");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return invalid(
                "log.level",
                "is not a level or filter (e.g. info, warn, info,ultragate::access=off)",
            );
        }
        let g = &self.api_gateway;
        if !(1..=1 << 20).contains(&g.max_connections_per_core) {
            return invalid(
                "api_gateway.max_connections_per_core",
                "must be between 1 and 1048576",
            );
        }
        let token = |n: &String| {
            !n.is_empty() && n.bytes().all(ultragate_dataplane::http::chunked::is_tchar)
        };
        g.forward_rules()?;
        if g.max_connections_per_client == 0 {
            return invalid("api_gateway.max_connections_per_client", "must be above 0");
        }
        if !(16 * 1024..=64 << 20).contains(&g.max_connection_buffer_bytes) {
            return invalid(
                "api_gateway.max_connection_buffer_bytes",
                "must be between 16384 and 67108864",
            );
        }
        if self.security.audit_log_max_bytes < 4096 {
            return invalid("security.audit_log_max_bytes", "must be at least 4096");
        }
        if !g.strip_fields.iter().all(token) {
            return invalid("api_gateway.strip_fields", "must be field names (tokens)");
        }
        if self.cache.targeted_fields.len() > 8 || !self.cache.targeted_fields.iter().all(token) {
            return invalid(
                "cache.targeted_fields",
                "must be at most 8 field names (tokens)",
            );
        }
        if !(1024..=1024 * 1024).contains(&g.max_header_bytes) {
            return invalid(
                "api_gateway.max_header_bytes",
                "must be between 1024 and 1048576",
            );
        }
        let positive = [
            ("api_gateway.client_timeout_ms", g.client_timeout_ms),
            ("api_gateway.keepalive_timeout_ms", g.keepalive_timeout_ms),
            ("api_gateway.send_timeout_ms", g.send_timeout_ms),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return invalid(key, "must be above 0");
        }
        let available = available_cores();
        if let Some(core) = g.cores.iter().find(|c| !available.contains(c)) {
            return Err(ConfigError::Invalid {
                key: "api_gateway.cores".into(),
                message: format!("core {core} does not exist here (cores: {available:?})"),
            });
        }
        if self.cache.max_bytes < 64 * 1024 {
            return invalid("cache.max_bytes", "must be at least 65536");
        }
        if self.cache.max_object_bytes > self.cache.max_bytes {
            return invalid("cache.max_object_bytes", "must not exceed cache.max_bytes");
        }
        if !(0.0..=1.0).contains(&self.control.error_rate_threshold) {
            return invalid(
                "control.error_rate_threshold",
                "must be between 0.0 and 1.0",
            );
        }
        if self.control.interval_ms == 0 || self.control.verify_interval_ms == 0 {
            return invalid("control.interval_ms", "intervals must be above 0");
        }
        self.validate_tls()?;
        self.validate_upstreams()?;
        self.validate_routes()
    }

    /// `[tls]`: a listener needs a certificate and a timeout; no data port
    /// at all is refused. The files are read when the listener starts (and
    /// at each reload), where their errors name the key and the file.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                message: message.to_owned(),
            })
        };
        let tls = &self.tls;
        if self.api_gateway.listen.is_none() && tls.listen.is_none() {
            return invalid(
                "api_gateway.listen",
                "is empty and so is tls.listen: no data port would serve",
            );
        }
        if tls.listen.is_some() && tls.certificate.is_empty() {
            return invalid(
                "tls.certificate",
                "a TLS listener needs at least one [[tls.certificate]]",
            );
        }
        if tls.handshake_timeout_ms == 0 {
            return invalid("tls.handshake_timeout_ms", "must be above 0");
        }
        Ok(())
    }

    /// Every pool: servers, timeouts, health path, and a fallback that
    /// exists and leads to no cycle.
    fn validate_upstreams(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        for (name, u) in self.upstream.all() {
            if u.servers.is_empty() {
                return invalid(
                    format!("upstream.{name}.servers"),
                    "at least one server is required",
                );
            }
            for (key, v) in [
                ("connect_timeout_ms", u.connect_timeout_ms),
                ("response_timeout_ms", u.response_timeout_ms),
                ("resolve_interval_ms", u.resolve_interval_ms),
            ] {
                if v == 0 {
                    return invalid(format!("upstream.{name}.{key}"), "must be above 0");
                }
            }
            if u.error_rate_threshold
                .is_some_and(|r| !(0.0..=1.0).contains(&r))
            {
                return invalid(
                    format!("upstream.{name}.error_rate_threshold"),
                    "must be between 0.0 and 1.0",
                );
            }
            if !u.health_path.starts_with('/') {
                return invalid(format!("upstream.{name}.health_path"), "must start with /");
            }
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return invalid(
                    format!("upstream.{name}"),
                    "a pool name is letters, digits, `_` and `-`",
                );
            }
        }
        let pools = self.upstream.all();
        let fallback_of = |name: &str| {
            pools
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, u)| u.fallback.as_deref())
        };
        for (name, u) in &pools {
            let Some(f) = u.fallback.as_deref() else {
                continue;
            };
            let key = format!("upstream.{name}.fallback");
            if !pools.iter().any(|(n, _)| *n == f) {
                return invalid(key, &format!("no [upstream.{f}]"));
            }
            // Follow the chain: back to `name` is a cycle.
            let mut at = Some(f);
            for _ in 0..pools.len() {
                match at {
                    Some(n) if n == *name => {
                        return invalid(key, &format!("{name} → {f} → … leads back to {name}"))
                    }
                    Some(n) => at = fallback_of(n),
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// Every route: a unique name, an existing pool, a host, a prefix and
    /// methods that can match.
    fn validate_routes(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| Err(ConfigError::Invalid { key, message });
        let pools = self.upstream.all();
        for (i, r) in self.route.iter().enumerate() {
            let at = |k: &str| format!("route[{i}].{k}");
            if r.name.is_empty() {
                return invalid(at("name"), "must not be empty".into());
            }
            if self.route[..i].iter().any(|o| o.name == r.name) {
                return invalid(at("name"), format!("{:?} names another route too", r.name));
            }
            if !pools.iter().any(|(n, _)| *n == r.upstream) {
                return invalid(at("upstream"), format!("no [upstream.{}]", r.upstream));
            }
            if let Some(h) = &r.host {
                let name = h.strip_prefix("*.").unwrap_or(h);
                let ok = !name.is_empty()
                    && name.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                    });
                if !ok {
                    return invalid(at("host"), format!("{h:?}: give NAME or *.SUFFIX"));
                }
            }
            if !r.path_prefix.starts_with('/') {
                return invalid(at("path_prefix"), "must start with /".into());
            }
            if let Some(m) = r
                .methods
                .iter()
                .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase() || b == b'-'))
            {
                return invalid(at("methods"), format!("{m:?} is not a method (uppercase)"));
            }
        }
        Ok(())
    }

    /// The data cores: as configured, else the container's CPUs as
    /// [`CpuBudget::default_cores`] chooses them; never more than the CPU
    /// quota's whole CPUs.
    pub fn data_cores(&self, budget: &CpuBudget) -> Vec<usize> {
        let mut cores = if self.api_gateway.cores.is_empty() {
            budget.default_cores()
        } else {
            self.api_gateway.cores.clone()
        };
        if let Some(n) = budget.whole_cpus() {
            cores.truncate(n);
        }
        cores
    }
}

/// The ids of the cores this process may run on.
fn available_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map_or_else(|| vec![0], |ids| ids.into_iter().map(|c| c.id).collect())
}

/// Milliseconds from the config as a `Duration`.
pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn secrets_are_never_shown_nor_echoed() {
        let cfg = Config::parse(
            "[notify]\nwebhook_url = \"http://relay:8080/hooks/T0/B0/s3cret?k=v\"\n\n[admin]\ntoken = \"t0ken\"\n",
        )
        .unwrap();
        let shown = toml::to_string(&cfg.redacted()).unwrap();
        assert!(
            shown.contains("webhook_url = \"http://relay:8080/<redacted>\"")
                && !shown.contains("s3cret")
                && !shown.contains("t0ken"),
            "{shown}"
        );
        let err = Config::parse("[admin]\ntoken = 123456789\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("admin.token") && !err.contains("123456789"),
            "{err}"
        );
    }

    #[test]
    fn test_hooks_are_an_unknown_key_without_the_hooks() {
        let cfg = Config::parse("[cache]\ntest_hooks = true\n").unwrap();
        assert_eq!(cfg.cache.test_hooks, Some(true), "a test build has them");
        let err = cfg.test_hooks_built(false).unwrap_err().to_string();
        assert!(
            err.contains("cache.test_hooks") && err.contains("unknown"),
            "{err}"
        );
        assert!(Config::default().test_hooks_built(false).is_ok());
        assert!(!Config::default_toml().contains("test_hooks"));
    }

    #[test]
    fn default_toml_round_trips() {
        assert_eq!(
            Config::parse(&Config::default_toml()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn servers_are_host_and_port() {
        let cfg = Config::parse(
            "[upstream.fallback]\nservers = [\"nodejs-api.ultragate.svc:3005\", \"[::1]:80\"]\n",
        )
        .unwrap();
        assert_eq!(
            cfg.upstream.fallback.servers[0].as_str(),
            "nodejs-api.ultragate.svc:3005"
        );
        let err = Config::parse("[upstream.fallback]\nservers = [\"nodejs-api:http\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("upstream.fallback.servers[0]") && err.contains("HOST:PORT"),
            "{err}"
        );
    }

    #[test]
    fn named_pools_and_routes() {
        let cfg = Config::parse(
            "[upstream.api]\nservers = [\"127.0.0.1:9001\"]\nfallback = \"fallback\"\nbalance = \"p2c_ewma\"\n\
             [upstream.assets]\nservers = [\"127.0.0.1:9002\"]\n\
             [[route]]\nname = \"api\"\nhost = \"*.example.com\"\npath_prefix = \"/v1/\"\nupstream = \"api\"\n\
             [[route]]\nname = \"assets\"\nupstream = \"assets\"\ncache = false\nmethods = [\"GET\", \"HEAD\"]\n",
        )
        .unwrap();
        let names: Vec<_> = cfg.upstream.all().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["primary", "fallback", "api", "assets"]);
        assert_eq!(cfg.upstream.primary.fallback.as_deref(), Some("fallback"));
        assert_eq!(
            cfg.upstream.named["api"].fallback.as_deref(),
            Some("fallback")
        );
        assert_eq!(cfg.upstream.named["assets"].fallback, None);
        assert_eq!(cfg.upstream.named["assets"].balance, BalanceKey::P2cEwma);
        assert_eq!(cfg.route[0].path_prefix, "/v1/");
        assert_eq!(cfg.route[1].path_prefix, "/", "the default");
        assert!(cfg.route[0].cache && !cfg.route[1].cache);
        // Written out and read back: the same config.
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(Config::parse(&text).unwrap(), cfg);
    }

    #[test]
    fn a_value_with_256_single_quotes_in_a_row_survives_a_round_trip() {
        // Found by the config fuzzer: toml 0.8's writer counted quotes in
        // a u8 (a panic with overflow checks, broken TOML without); the
        // config is written out for `GET /admin/config`.
        let text = format!(
            "[upstream.farack]\nservers = [\"120HH{}HHH03:5\"]\n",
            "'".repeat(267)
        );
        let cfg = Config::parse(&text).unwrap();
        let again = toml::to_string(&cfg).unwrap();
        assert_eq!(Config::parse(&again).unwrap(), cfg);
    }

    #[test]
    fn balance_is_round_robin_unless_asked() {
        let cfg = Config::parse("[upstream.fallback]\nbalance = \"p2c_ewma\"\n").unwrap();
        assert_eq!(cfg.upstream.primary.balance, BalanceKey::RoundRobin);
        assert_eq!(cfg.upstream.fallback.balance, BalanceKey::P2cEwma);
    }

    #[test]
    fn runbook_fix_enable_dpdk_false_is_accepted() {
        let cfg = Config::parse("[api_gateway]\nenable_dpdk = false\n").unwrap();
        assert!(!cfg.api_gateway.enable_dpdk);
    }

    #[test]
    fn errors_name_the_key() {
        let table = [
            (
                "[api_gateway]\nlisten = \"nowhere\"\n",
                "api_gateway.listen",
            ),
            ("[api_gateway]\nlisten = 8080\n", "api_gateway.listen"),
            ("[api_gateway]\nworkers = 4\n", "workers"),
            (
                "[api_gateway]\nlisten = \"\"\n",
                "api_gateway.listen",
            ),
            ("[tls]\nlisten = \"0.0.0.0:8443\"\n", "tls.certificate"),
            ("[tls]\nlisten = \"nowhere:x\"\n", "tls.listen"),
            ("[tls]\nmin_version = \"1.1\"\n", "tls.min_version"),
            ("[tls]\nhandshake_timeout_ms = 0\n", "tls.handshake_timeout_ms"),
            (
                "[[tls.certificate]]\ncert_file = \"a.crt\"\n",
                "tls.certificate",
            ),
            ("[upstream.primary]\ntls = \"yes\"\n", "upstream"),
            (
                "[api_gateway]\nmax_header_bytes = 10\n",
                "api_gateway.max_header_bytes",
            ),
            ("[api_gateway]\ncores = [999]\n", "api_gateway.cores"),
            (
                "[api_gateway]\nio_backend = \"dpdk\"\n",
                "api_gateway.io_backend",
            ),
            (
                "[api_gateway]\nmax_connections_per_core = 0\n",
                "api_gateway.max_connections_per_core",
            ),
            ("[dpdk]\naddress = \"10.0.0.1\"\n", "dpdk.address"),
            ("[dpdk]\ngateway = \"router\"\n", "dpdk.gateway"),
            ("[dpdk]\nport = -1\n", "dpdk.port"),
            (
                "[upstream.primary]\nservers = []\n",
                "upstream.primary.servers",
            ),
            (
                "[upstream.primary]\nservers = [\"127.0.0.1\"]\n",
                "upstream.primary.servers",
            ),
            (
                "[upstream.fallback]\nconnect_timeout_ms = -1\n",
                "upstream.fallback.connect_timeout_ms",
            ),
            (
                "[upstream.primary]\nresponse_timeout_ms = 0\n",
                "upstream.primary.response_timeout_ms",
            ),
            ("[upstream.canary]\nservers = []\n", "canary"),
            (
                "[upstream.api]\nfallback = \"legacy\"\n",
                "upstream.api.servers",
            ),
            (
                "[upstream.api]\nservers = [\"127.0.0.1:1\"]\nfallback = \"legacy\"\n",
                "upstream.api.fallback",
            ),
            (
                "[upstream.a]\nservers = [\"127.0.0.1:1\"]\nfallback = \"b\"\n[upstream.b]\nservers = [\"127.0.0.1:2\"]\nfallback = \"a\"\n",
                "upstream.a.fallback",
            ),
            (
                "[upstream.api]\nservers = [\"127.0.0.1:1\"]\nerror_rate_threshold = 2.0\n",
                "upstream.api.error_rate_threshold",
            ),
            (
                "[[route]]\nname = \"api\"\nupstream = \"nowhere\"\n",
                "route[0].upstream",
            ),
            (
                "[[route]]\nname = \"x\"\nupstream = \"primary\"\n[[route]]\nname = \"x\"\nupstream = \"fallback\"\n",
                "route[1].name",
            ),
            (
                "[[route]]\nname = \"x\"\nupstream = \"primary\"\nhost = \"a b\"\n",
                "route[0].host",
            ),
            (
                "[[route]]\nname = \"x\"\nupstream = \"primary\"\npath_prefix = \"v1\"\n",
                "route[0].path_prefix",
            ),
            (
                "[[route]]\nname = \"x\"\nupstream = \"primary\"\nmethods = [\"get\"]\n",
                "route[0].methods",
            ),
            (
                "[[route]]\nname = \"x\"\nupstream = \"primary\"\ncache_ttl = 5\n",
                "cache_ttl",
            ),
            (
                "[[route]]\nname = \"x\"\nupstream = \"primary\"\ncache_ttl_override_s = -1\n",
                "cache_ttl_override_s",
            ),
            (
                "[upstream.primary]\nbalance = \"random\"\n",
                "upstream.primary.balance",
            ),
            ("[nonsense]\n", "nonsense"),
            ("[cache]\nmax_bytes = 10\n", "cache.max_bytes"),
            (
                "[cache]\nmax_object_bytes = 999999999999\n",
                "cache.max_object_bytes",
            ),
            ("[cache]\nsnapshot_dir = 5\n", "cache.snapshot_dir"),
            (
                "[control]\nerror_rate_threshold = 3.0\n",
                "control.error_rate_threshold",
            ),
            ("[control]\np99_threshold = 3\n", "p99_threshold"),
            (
                "[upstream.fallback]\nhealth_path = \"health\"\n",
                "upstream.fallback.health_path",
            ),
            ("[security]\naudit_log = 1\n", "security.audit_log"),
            ("[api_gateway\n", "line 1"),
        ];
        for (text, key) in table {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(
                err.contains(key),
                "{text:?} gave {err:?}, which does not name {key}"
            );
        }
    }
}
