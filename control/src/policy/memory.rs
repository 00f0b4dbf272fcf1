//! The memory row: shrink the cache once per crossing of 85 %, clear it
//! at 95 %, restore under 70 %.

use super::{CacheCommand, Command, Decision, DecisionKind};

/// Where the memory policy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum MemoryState {
    /// Under the thresholds.
    #[default]
    Normal,
    /// Shrunk; `rearmed` once memory fell under 85 % since, so that a new
    /// crossing shrinks again (once).
    Shrunk { rearmed: bool },
    /// Cleared, inserts stopped.
    Cleared,
}

/// The memory-exhaustion policy: at 85 % shrink once per crossing (not
/// on every tick while memory stays high), at 95 % clear and stop
/// inserts, under 70 % restore.
#[derive(Debug, Default)]
pub struct MemoryPolicy {
    state: MemoryState,
}

impl MemoryPolicy {
    /// Takes the used share of the memory limit (0.0–1.0).
    pub fn observe(&mut self, ratio: f64) -> Option<Decision> {
        use MemoryState::*;
        let (next, kind) = match self.state {
            Cleared if ratio < 0.70 => (Normal, Some(DecisionKind::CacheResumeInserts)),
            Cleared => (Cleared, None),
            _ if ratio >= 0.95 => (Cleared, Some(DecisionKind::CacheClear)),
            Normal if ratio >= 0.85 => (Shrunk { rearmed: false }, Some(DecisionKind::CacheShrink)),
            Shrunk { .. } if ratio < 0.70 => (Normal, Some(DecisionKind::CacheResumeInserts)),
            Shrunk { rearmed: true } if ratio >= 0.85 => {
                (Shrunk { rearmed: false }, Some(DecisionKind::CacheShrink))
            }
            Shrunk { rearmed } => (
                Shrunk {
                    rearmed: rearmed || ratio < 0.85,
                },
                None,
            ),
            Normal => (Normal, None),
        };
        self.state = next;
        let kind = kind?;
        Some(Decision {
            kind,
            trigger: "memory_pressure",
            value: format!("memory at {:.1}% of the limit", ratio * 100.0),
            command: match kind {
                DecisionKind::CacheShrink => Command::Cache(CacheCommand::Shrink),
                DecisionKind::CacheClear => Command::Cache(CacheCommand::Clear),
                _ => Command::Cache(CacheCommand::Restore),
            },
        })
    }
}
