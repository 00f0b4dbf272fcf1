//! `[security]`: what the security row watches for.

use super::*;

/// `[security]`: the audit trail, with the runbook's own keys
/// (`enable_audit_logging`, `log_all_requests`) accepted as it writes them.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySection {
    /// Where the audit log (JSON lines) goes: a file appended to, or
    /// `stdout` (also when empty) so the cluster's log pipeline keeps it.
    /// Default empty (stdout).
    pub audit_log: String,
    /// Records admin calls and refusals in the audit log. Default true.
    pub enable_audit_logging: bool,
    /// Also writes every request (as an access-log record) to the audit
    /// log, as the runbook's security step asks. Default false.
    pub log_all_requests: bool,
    /// Size cap of an `audit_log` file, in bytes: past it the file moves
    /// to `PATH.1` (replacing the one before) and a new one starts, so the
    /// log takes at most twice this. Default 64 MiB.
    pub audit_log_max_bytes: u64,
}

impl Default for SecuritySection {
    fn default() -> Self {
        Self {
            audit_log: String::new(),
            enable_audit_logging: true,
            log_all_requests: false,
            audit_log_max_bytes: 64 << 20,
        }
    }
}
