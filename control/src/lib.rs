//! The control plane of ultragate: what the emergency runbook tells an
//! engineer to do, done by the process itself, and the API an operator
//! drives it with. It depends on `ultragate-dataplane` (never the other
//! way) and reads no configuration files (the `ultragate` binary does).
//!
//! Map of the crate, one job each:
//! - [`supervisor`]: the control loop — merges the data cores' numbers
//!   into a window each interval and feeds the runbook (`rounds`), and
//!   renders `/health` (`health`).
//! - [`policy`]: the runbook as one table of pure rows (route per pool,
//!   memory, DPDK port, cache corruption, security) turning observations
//!   into decisions.
//! - [`executor`]: applies the rows' decisions, counts them and writes
//!   them to the timeline; [`executor::events`] records everything else
//!   the timeline holds (operator calls, checks, reloads): the timeline's
//!   only writer.
//! - [`checks`]: active health checks of the upstream servers, probed at
//!   once, judged by a pure rise/fall [`checks::CheckPolicy`].
//! - [`revalidate`]: data verify against the origin.
//! - [`memory`]: memory use against the cgroup or configured limit.
//! - [`tls`]: the TLS listener's certificates: reloads, health, expiry.
//! - [`api`]: the admin and health API on its own port (hyper);
//!   [`admin`]: the `/admin/*` router it shares with the data port.
//! - [`metrics`]: `/metrics` (Prometheus text), rendered from one round's
//!   snapshot; [`timeline`]: `GET /admin/events`; [`audit`]: the audit
//!   log; [`notify`]: decision webhooks.
//! - [`client`]: the control plane's own small HTTP/1.1 client.
//!
//! Start reading at [`supervisor::Supervisor`].

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
