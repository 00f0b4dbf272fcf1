//! `[resolver]`: how server names become addresses.

use super::*;

/// `[resolver]`: how `HOST:PORT` server names become addresses. Names are
/// resolved off the data path at start and every pool's
/// `resolve_interval_ms`; a name resolves to every address it has (a
/// headless Service: one per pod).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ResolverSection {
    /// An `/etc/hosts`-style file read first at every resolution (`ADDRESS
    /// NAME...` per line). Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts_file: Option<PathBuf>,
    /// Ask the system resolver (`/etc/hosts`, then DNS) for names not in
    /// `hosts_file`. Default `true`.
    pub system: bool,
}

impl Default for ResolverSection {
    fn default() -> Self {
        Self {
            hosts_file: None,
            system: true,
        }
    }
}
