//! Upstream servers as the data plane sees them: round-robin choice and a
//! per-core pool of idle keep-alive connections, and the servers' health.

pub mod health;
pub mod pool;
