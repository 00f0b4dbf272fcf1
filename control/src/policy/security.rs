//! The security row: isolation on an operator's call.

use super::{Command, Decision, DecisionKind};

/// Security isolation, turned on and off by an operator (`POST
/// /admin/security/isolate`, `/normal`); a call that changes nothing
/// decides nothing.
#[derive(Debug, Default)]
pub struct SecurityPolicy {
    isolated: bool,
}

impl SecurityPolicy {
    /// Takes the operator's wish.
    pub fn observe(&mut self, isolate: bool) -> Option<Decision> {
        if self.isolated == isolate {
            return None;
        }
        self.isolated = isolate;
        Some(Decision {
            kind: if isolate {
                DecisionKind::Isolation
            } else {
                DecisionKind::IsolationEnd
            },
            trigger: "admin_call",
            value: if isolate {
                "security incident".into()
            } else {
                "security normal".into()
            },
            command: Command::Isolate(isolate),
        })
    }
}
