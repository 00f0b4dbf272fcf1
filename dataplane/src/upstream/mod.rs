//! Upstream servers as the data plane sees them: the choice of a server
//! (round robin or power of two choices over peak-EWMA latency), a
//! per-core pool of idle keep-alive connections, and the servers' health.

#![forbid(unsafe_code)]

pub mod balance;
pub mod health;
pub mod pool;
