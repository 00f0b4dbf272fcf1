//! Data-plane drivers: each moves bytes between its transport and the
//! engine, one thread per pinned core.

pub mod epoll;
