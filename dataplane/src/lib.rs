//! The request path of ultragate.
//!
//! The engine and the per-core layer are deterministic: they contain no
//! networking code and take the time from their caller, so they are tested
//! with plain byte slices and a simulated transport, and behave the same
//! on every driver. What does not live here: configuration files, the
//! admin API and the runbook (the `ultragate-control` crate), the binary
//! (`ultragate`).
//!
//! # Map of the code
//!
//! Layers, bottom up; a module only uses those above it in this list
//! (`tests/layering.rs` checks that no module reaches back to itself).
//!
//! - [`glob`]: `*` patterns (purges, drop-in files).
//! - [`http`]: the HTTP/1.1 codec — `request` and `response` heads,
//!   `path` normalisation, `chunked` framing, `fields` rules, and `output`,
//!   the client's queued bytes as shared chunks.
//! - [`access`]: the access log, one JSON line per request, off the hot path.
//! - [`admin`]: the seam between a data-port admin call and the control
//!   plane's handlers.
//! - [`tls`]: TLS sessions over rustls' unbuffered API (`session`),
//!   certificates (`certs`), SNI (`sni`), kTLS detection (`ktls`).
//! - [`cache`]: the shared cache — the store (`mod.rs`), `key`, `bans`,
//!   `coalesce`, `verify`, the RFC 9111 `rules`, `verdict`, `entry`,
//!   `range`, `targeted` fields, `snapshot` on disk.
//! - [`stats`]: per-core statistics the control plane merges.
//! - [`status`]: what the control plane publishes for the cores to read.
//! - [`route`]: which pool a request goes to.
//! - [`upstream`]: server choice (`balance`), passive health (`health`),
//!   the per-core keep-alive `pool`.
//! - [`proxy`]: the sans-IO engine of one client connection, [`proxy::Conn`],
//!   by phase — `request_filter`, `cache_lookup` (with `cached`),
//!   `upstream`, `response_filter`, `logging`, `timers`; `config` its
//!   settings, `body` body framing, `rewrite` the heads it writes,
//!   `forward` forwarding fields, `local` its own answers.
//! - [`live`]: the settings a reload swaps while the cores run.
//! - [`endpoint`]: the sans-IO per-core layer, [`endpoint::Endpoint`] —
//!   connections, the TLS `transport`, `upstreams` (their lifecycle),
//!   `peers` (pool and server choice, retries, divert), `background`
//!   fetches, `timers`, `drain`, `completions`, the `panic` boundary and
//!   the connection limits.
//! - [`driver`]: what only moves bytes — `uring` (default), `epoll` (its
//!   fallback), `dpdk` (with the `dpdk` feature: smoltcp over a DPDK port;
//!   the `ring` feature adds the in-process `net_ring` harness), `listen`
//!   (the kernel listeners).
//!
//! Start reading at [`proxy::Conn`], then [`endpoint::Endpoint`], then a
//! driver: [`driver::uring`].

pub mod access;
pub mod admin;
pub mod cache;
pub mod driver;
pub mod endpoint;
pub mod glob;
pub mod http;
pub mod live;
pub mod proxy;
pub mod route;
pub mod stats;
pub mod status;
pub mod tls;
pub mod upstream;

/// Whether this build has the test hooks (the `test-hooks` feature, which
/// only test builds enable): the config refuses `[cache] test_hooks`
/// without them.
pub const TEST_HOOKS: bool = cfg!(feature = "test-hooks");
