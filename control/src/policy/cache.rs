//! The corruption row: what a cache verify's counts call for.

use super::{CacheCommand, Command, Decision, DecisionKind};

/// What a verify found, and whether the cache is bypassed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Entries checked.
    pub checked: u64,
    /// Entries whose checksum failed (the verify evicted them).
    pub corrupt: u64,
    /// The cache is bypassed.
    pub bypassed: bool,
}

/// The data-corruption policy: on a checksum failure bypass the cache and
/// restore the last good snapshot (whose verify comes back here); after a
/// clean verify serve from the cache again. The background verify and
/// `POST /admin/cache/verify` both feed it.
#[derive(Debug, Default)]
pub struct CorruptionPolicy {
    /// A restore was asked for: the next verify is the one after it.
    restoring: bool,
}

impl CorruptionPolicy {
    /// Takes a verify's counts; returns the decisions in order.
    pub fn observe(&mut self, v: Verified) -> Vec<Decision> {
        let restoring = std::mem::take(&mut self.restoring);
        let value = format!(
            "{} of {} entries failed their checksum",
            v.corrupt, v.checked
        );
        let decide = |kind, command| Decision {
            kind,
            trigger: if v.corrupt == 0 {
                "cache_verify_clean"
            } else {
                "cache_checksum_failure"
            },
            value: value.clone(),
            command,
        };
        match (v.corrupt, restoring) {
            (0, _) if v.bypassed => vec![decide(
                DecisionKind::CacheServeAgain,
                Command::Cache(CacheCommand::ServeAgain),
            )],
            (0, _) => Vec::new(),
            (_, false) => {
                self.restoring = true;
                let mut out = Vec::with_capacity(2);
                if !v.bypassed {
                    out.push(decide(
                        DecisionKind::CacheBypass,
                        Command::Cache(CacheCommand::Bypass),
                    ));
                }
                out.push(decide(
                    DecisionKind::CacheRestore,
                    Command::Cache(CacheCommand::RestoreSnapshot),
                ));
                out
            }
            (_, true) => vec![decide(DecisionKind::CacheStayBypassed, Command::Report)],
        }
    }
}
