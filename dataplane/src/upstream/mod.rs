//! Upstream servers as the data plane sees them: round-robin choice and a
//! per-core pool of idle keep-alive connections.

pub mod pool;
