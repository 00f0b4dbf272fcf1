//! `[log]`: the process log and the access log.

use super::*;

/// `[log]`: the process log.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Level or filter, as `RUST_LOG` takes it (`info`, `warn`,
    /// `info,ultragate::access=off`); the environment variable
    /// `ULTRAGATE_LOG` wins at start, a reload applies this. Default
    /// `info`.
    pub level: String,
    /// The process log's lines (on stderr): `json` (one object per line,
    /// for a log collector), `text`, or `auto`: text on a terminal, JSON
    /// otherwise. Never ANSI colours off a terminal. Default `auto`.
    pub format: LogFormat,
    /// The access log, one JSON line per request: `stdout`, a file path
    /// (reopened on SIGUSR1, for logrotate), or `off`. Default `off`.
    pub access: String,
    /// Share of requests written to the access log, 0.0 to 1.0. Default 1.0.
    pub access_sample: f64,
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Auto,
            access: "off".into(),
            access_sample: 1.0,
        }
    }
}
