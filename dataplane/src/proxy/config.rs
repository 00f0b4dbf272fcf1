//! The engine's settings, shared by every connection of a process.

use super::*;

/// Settings of the engine, shared by every connection of a process.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Request head and body limits.
    pub limits: RequestLimits,
    /// Largest response head accepted from an upstream, in bytes.
    pub max_response_head_bytes: usize,
    /// Longest wait for progress on a started request head or body.
    pub client_timeout: Duration,
    /// Longest idle time of a client keep-alive connection between requests.
    pub keepalive_timeout: Duration,
    /// Longest time queued client output may go without any of it being
    /// written (a client that stopped reading); then the connection closes.
    pub send_timeout: Duration,
    /// Longest wait for an upstream connection.
    pub connect_timeout: Duration,
    /// Longest wait for the next byte of an upstream response.
    pub response_timeout: Duration,
    /// How many upstream connects a request may try: one per primary
    /// server, and one more that the driver sends to the fallback group.
    pub connect_attempts: usize,
    /// `Host` sent upstream for HTTP/1.0 requests that carry none.
    pub default_host: String,
    /// Longest wait for another connection's fetch of the same missing
    /// key before going to the upstream too.
    pub coalesce_wait: Duration,
    /// A reading of both clocks taken together, so the engine can turn its
    /// monotonic `now` into wall time (for `Date` and `Age`) without
    /// asking the operating system.
    pub epoch: (Instant, SystemTime),
    /// The access log, when the process has one: requests it wants are
    /// recorded, with an `X-Request-Id` and a `traceparent`.
    pub access: Option<Arc<AccessLog>>,
    /// Which route (and so which upstream pool) takes a request.
    pub routes: Arc<Routes>,
    /// How request paths are normalised before anything reads them.
    pub paths: PathRules,
    /// Whose forwarding fields are kept, and which are removed.
    pub forwarding: ForwardRules,
    /// Bytes queued for a client past which its connection takes no
    /// more: no upstream bytes, no further pipelined request, no client
    /// bytes (the driver stops receiving), until the client reads
    /// (`[api_gateway] max_connection_buffer_bytes`). A connection holds
    /// at most this plus one request head and the one response being
    /// written.
    pub max_client_queue: usize,
    /// Whether the test hooks answer (`[cache] test_hooks`): a request for
    /// `TEST_PANIC_PATH` panics, and so does an upstream TLS answer
    /// naming `endpoint::TEST_UPSTREAM_TLS_PANIC`. Read only by builds
    /// with the `test-hooks` feature, which production builds never have.
    pub test_hooks: bool,
}

impl EngineConfig {
    /// The engine with the config's built-in defaults (those of
    /// `[api_gateway]`, `[upstream.primary]` and `[cache]`), sending
    /// `default_host` upstream for a request without `Host`, with its clock
    /// reading `epoch`: what a test, a benchmark or the ring harness starts
    /// from, naming only the fields it is about
    /// (`EngineConfig { connect_attempts: 2, ..EngineConfig::new(..) }`).
    /// The gateway builds its own from the config file.
    pub fn new(default_host: String, epoch: (Instant, SystemTime)) -> Self {
        Self {
            limits: RequestLimits {
                max_header_bytes: 16 * 1024,
                max_body_bytes: 10 << 20,
            },
            max_response_head_bytes: 64 * 1024,
            client_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(30),
            connect_attempts: 1,
            default_host,
            coalesce_wait: Duration::from_secs(2),
            epoch,
            access: None,
            routes: Default::default(),
            paths: Default::default(),
            forwarding: Default::default(),
            max_client_queue: 256 * 1024,
            test_hooks: false,
        }
    }

    /// Wall-clock time at monotonic `now`.
    pub(super) fn wall(&self, now: Instant) -> SystemTime {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0)
    }
}
