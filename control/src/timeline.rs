//! The record of what the control plane decided: a bounded event
//! timeline (`GET /admin/events`). Who asked for what is in
//! [`crate::audit`].

use crate::notify::{Event, Notifier};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Events kept; older ones drop off.
const CAPACITY: usize = 1000;

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The bounded timeline of decisions; each one also goes to the decision
/// webhook when one is configured.
#[derive(Default)]
pub struct Timeline {
    events: Mutex<VecDeque<Value>>,
    notifier: std::sync::OnceLock<std::sync::Arc<Notifier>>,
}

impl Timeline {
    /// Records a decision: what set it off (with its measured value), what
    /// was done, and how it went.
    pub(crate) fn push(&self, trigger: &str, value: &str, action: &str, result: &str) {
        let time_unix_ms = self.record(trigger, value, action, result);
        if let Some(n) = self.notifier.get() {
            n.send(Event {
                trigger: trigger.to_owned(),
                value: value.to_owned(),
                action: action.to_owned(),
                result: result.to_owned(),
                time_unix_ms,
            });
        }
    }

    /// Records an event without notifying (a failed notification itself).
    pub(crate) fn push_quiet(&self, trigger: &str, value: &str, action: &str, result: &str) {
        self.record(trigger, value, action, result);
    }

    /// Sends every event from now on to `notifier` as well.
    pub fn notify_to(&self, notifier: std::sync::Arc<Notifier>) {
        let _ = self.notifier.set(notifier);
    }

    fn record(&self, trigger: &str, value: &str, action: &str, result: &str) -> u64 {
        tracing::info!(trigger, value, action, result, "decision");
        let time = unix_ms();
        let event = json!({
            "time_unix_ms": time,
            "trigger": trigger,
            "value": value,
            "action": action,
            "result": result,
        });
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == CAPACITY {
            events.pop_front();
        }
        events.push_back(event);
        time
    }

    /// Every event kept, oldest first.
    pub fn list(&self) -> Vec<Value> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
