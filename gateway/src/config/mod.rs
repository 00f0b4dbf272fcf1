//! The gateway's configuration: one TOML file, every key defaulted, unknown
//! keys and bad values refused with the key's name. This is the one place
//! that turns TOML into settings.

mod admin;
mod api_gateway;
mod cache;
mod control;
mod dpdk;
mod log;
mod resolver;
mod route;
mod security;
mod tls;
mod upstream;
mod validate;

pub use admin::*;
pub use api_gateway::*;
pub use cache::*;
pub use control::*;
pub use dpdk::*;
pub use log::*;
pub use resolver::*;
pub use route::*;
pub use security::*;
pub use tls::*;
pub use upstream::*;

use crate::cpus::CpuBudget;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use ultragate_dataplane::proxy::forward::{Cidr, ForwardRules};

/// Why a configuration was refused. Every variant names the key.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The text is not TOML.
    #[error("config is not valid TOML: {0}")]
    Toml(String),
    /// A key is unknown or its value of the wrong type.
    #[error("config key `{key}`: {message}")]
    Syntax {
        /// The dotted key, e.g. `api_gateway.listen`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A value parses but is not acceptable.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The dotted key, e.g. `route[2].upstream`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The data port and its limits.
    pub api_gateway: ApiGateway,
    /// The admin and health API.
    pub admin: AdminSection,
    /// Upstream server groups.
    pub upstream: Upstreams,
    /// The response cache.
    pub cache: CacheSection,
    /// The runbook's thresholds.
    pub control: ControlSection,
    /// Audit and isolation.
    pub security: SecuritySection,
    /// The process log.
    pub log: LogSection,
    /// Decision webhooks.
    pub notify: NotifySection,
    /// The DPDK port, used when `api_gateway.enable_dpdk` is true.
    pub dpdk: DpdkSection,
    /// `[[route]]`: which pool takes which requests. None: every request
    /// goes to `primary`.
    pub route: Vec<RouteConfig>,
    /// How server names are resolved.
    pub resolver: ResolverSection,
    /// The TLS data port and its certificates.
    pub tls: TlsSection,
    /// Drop-in files merged over this one ([`crate::files`]).
    pub include: IncludeSection,
}

/// `[include]`: drop-in files merged over the main file in name order.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IncludeSection {
    /// Paths or globs (`*` in the file name), relative to the main file's
    /// folder, e.g. `["conf.d/*.toml"]`. Default none.
    pub files: Vec<String>,
}

/// An address that may be empty (`""`: off), as TOML text.
mod optional_addr {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::SocketAddr;

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.collect_str(a),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "{text:?} is not HOST:PORT (an IP address and a port), or empty for off"
            ))
        })
    }
}

/// Milliseconds from the config as a `Duration`.
pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[cfg(test)]
mod tests;
