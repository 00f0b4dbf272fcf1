//! `[api_gateway]`: the plain data port, its drivers and request limits.

use super::*;

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
