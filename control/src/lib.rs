//! The control plane of ultragate.
//!
//! What lives here: the admin and health API served with hyper on its own
//! port ([`api`]), the admin call router shared with the data port
//! ([`admin`]) with the runbook's cache commands, and data verify against
//! the origin ([`revalidate`]). What does not: the request path (`ultragate-dataplane`,
//! which this crate depends on, never the other way) and configuration
//! files (the `ultragate` binary).
//!
//! Start reading at [`api::AdminServer`].

pub mod admin;
pub mod api;
pub mod audit;
pub mod checks;
pub mod client;
pub mod executor;
mod histograms;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod revalidate;
mod snapshot;
pub mod supervisor;
pub mod timeline;
pub mod tls;
