//! The request path of ultragate.
//!
//! What lives here: the HTTP/1.1 codec ([`http`]), the sans-IO proxy engine
//! of one connection ([`proxy`]), the per-core layer above it that owns a
//! core's connections, timers, pools and peer selection ([`endpoint`]), the
//! upstream pool ([`upstream`]) and the drivers that execute the layer's
//! commands on their sockets ([`driver`]). The engine and the layer are
//! deterministic: they contain no networking code and take the time from
//! their caller, so they are tested with plain byte slices and a simulated
//! transport, and behave the same on every driver. What does not live here: configuration files, the admin
//! API and policy (the `ultragate-control` crate), the binary (`ultragate`).
//!
//! Start reading at [`proxy::Conn`], then [`endpoint::Endpoint`], then a
//! driver: [`driver::uring`] (the
//! default kernel driver), [`driver::epoll`] (its fallback), or the DPDK
//! driver (`driver::dpdk`, with the `dpdk` feature; FFI in `dpdk-sys`).

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
