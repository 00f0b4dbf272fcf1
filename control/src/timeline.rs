//! The record of what the control plane decided and who asked for what:
//! a bounded event timeline (`GET /admin/events`) and the audit log of
//! admin calls (JSON lines).

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Events kept; older ones drop off.
const CAPACITY: usize = 1000;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The bounded timeline of decisions.
#[derive(Default)]
pub struct Timeline {
    events: Mutex<VecDeque<Value>>,
}

impl Timeline {
    /// Records a decision: what set it off (with its measured value), what
    /// was done, and how it went.
    pub fn push(&self, trigger: &str, value: &str, action: &str, result: &str) {
        tracing::info!(trigger, value, action, result, "decision");
        let event = json!({
            "time_unix_ms": unix_ms(),
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

/// The audit log: one JSON line per mutating admin call and per refusal.
pub struct Audit {
    file: Mutex<Option<std::fs::File>>,
}

fn append(path: Option<&std::path::Path>) -> std::io::Result<Option<std::fs::File>> {
    path.map(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
    })
    .transpose()
}

impl Audit {
    /// Appends to `path`, or logs through `tracing` without one.
    pub fn open(path: Option<&std::path::Path>) -> std::io::Result<Self> {
        Ok(Self {
            file: Mutex::new(append(path)?),
        })
    }

    /// Switches to `path` (a config reload); on an error the current
    /// file stays.
    pub fn reopen(&self, path: Option<&std::path::Path>) -> std::io::Result<()> {
        let file = append(path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = file;
        Ok(())
    }

    /// Records an admin call and its outcome.
    pub fn record(&self, peer: IpAddr, method: &str, target: &str, outcome: &str) {
        let line = json!({ "time_unix_ms": unix_ms(), "peer": peer.to_string(), "method": method, "target": target, "outcome": outcome });
        match &mut *self.file.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(f) => {
                let _ = writeln!(f, "{line}");
            }
            None => tracing::info!(target: "ultragate::audit", "{line}"),
        }
    }
}
