//! `[cache]`: the response cache's size, rules and snapshot.

use super::*;

/// `[cache]`: the shared response cache.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// Cache responses at all. Default `true`.
    pub enabled: bool,
    /// Budget for all entries including overhead, in bytes. Default 256 MiB.
    pub max_bytes: u64,
    /// Largest body stored, in bytes; larger ones pass through. Default 8 MiB.
    pub max_object_bytes: u64,
    /// Directory of snapshots. Default `/var/cache/ultragate`.
    pub snapshot_dir: PathBuf,
    /// Write a snapshot after draining on SIGTERM. Default `false`.
    pub snapshot_on_shutdown: bool,
    /// Load the newest good snapshot at start. Default `false`.
    pub restore_on_start: bool,
    /// Longest wait for another connection's fetch of the same missing
    /// key, in milliseconds. Default 2000.
    pub coalesce_wait_ms: u64,
    /// Test builds only (a release build refuses the key): enables `POST
    /// /admin/cache/corrupt`, which flips a bit in a stored entry as memory
    /// corruption would. Absent by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_hooks: Option<bool>,
    /// Targeted cache-control fields this cache follows (RFC 9213), first
    /// valid one wins over `Cache-Control` and `Expires`; put a
    /// gateway-specific field (e.g. `Ultragate-Cache-Control`) ahead of
    /// `CDN-Cache-Control` to address this tier alone. At most 8 field
    /// names. Default `["CDN-Cache-Control"]`.
    pub targeted_fields: Vec<String>,
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 256 * 1024 * 1024,
            max_object_bytes: 8 * 1024 * 1024,
            snapshot_dir: PathBuf::from("/var/cache/ultragate"),
            snapshot_on_shutdown: false,
            restore_on_start: false,
            coalesce_wait_ms: 2000,
            test_hooks: None,
            targeted_fields: ultragate_dataplane::cache::targeted::DEFAULT
                .iter()
                .map(|&n| n.to_owned())
                .collect(),
        }
    }
}
