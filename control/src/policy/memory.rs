//! The memory row: shrink the cache once per crossing of 85 %, clear it
//! at 95 %, restore under 70 % — and at once when a reload raises the
//! limit (under 85 % of the new one) or removes it.

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
        decision(
            kind?,
            format!("memory at {:.1}% of the limit", ratio * 100.0),
        )
    }

    /// The limit changed (a reload raised, lowered or removed it):
    /// `ratio` is the used share of the new one (`None`: no limit). A
    /// relieved cache gets its budget and inserts back at once when the
    /// new limit is not under pressure.
    pub fn limit_changed(&mut self, ratio: Option<f64>) -> Option<Decision> {
        if self.state == MemoryState::Normal || ratio.is_some_and(|r| r >= 0.85) {
            return None;
        }
        self.state = MemoryState::Normal;
        let value = match ratio {
            Some(r) => format!(
                "memory limit changed by a reload: now at {:.1}% of it",
                r * 100.0
            ),
            None => "memory limit removed by a reload".to_owned(),
        };
        decision(DecisionKind::CacheResumeInserts, value)
    }
}

/// The decision of `kind`, with what memory looked like.
fn decision(kind: DecisionKind, value: String) -> Option<Decision> {
    Some(Decision {
        kind,
        trigger: "memory_pressure",
        value,
        command: match kind {
            DecisionKind::CacheShrink => Command::Cache(CacheCommand::Shrink),
            DecisionKind::CacheClear => Command::Cache(CacheCommand::Clear),
            _ => Command::Cache(CacheCommand::Restore),
        },
    })
}
