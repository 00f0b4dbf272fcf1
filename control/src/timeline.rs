//! The record of what the control plane decided and who asked for what:
//! a bounded event timeline (`GET /admin/events`) and the audit log of
//! admin calls (JSON lines).

use crate::notify::{Event, Notifier};
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
    pub fn push(&self, trigger: &str, value: &str, action: &str, result: &str) {
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
    pub fn push_quiet(&self, trigger: &str, value: &str, action: &str, result: &str) {
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

/// Where the audit log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    /// Nowhere (`[security] enable_audit_logging = false`).
    Off,
    /// JSON lines on stdout, for the cluster's log pipeline.
    Stdout,
    /// JSON lines appended to a file.
    File(std::path::PathBuf),
}

enum Out {
    Off,
    Stdout,
    File(std::fs::File),
}

/// The audit log: admin calls and refusals, and every request while
/// `[security] log_all_requests` asks for it. JSON lines.
pub struct Audit {
    out: Mutex<Out>,
}

fn open(sink: &AuditSink) -> std::io::Result<Out> {
    Ok(match sink {
        AuditSink::Off => Out::Off,
        AuditSink::Stdout => Out::Stdout,
        AuditSink::File(p) => Out::File(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        ),
    })
}

impl Audit {
    /// An audit log writing to `sink`.
    pub fn open(sink: &AuditSink) -> std::io::Result<Self> {
        Ok(Self {
            out: Mutex::new(open(sink)?),
        })
    }

    /// Switches to `sink` (a config reload); on an error the current one
    /// stays.
    pub fn reopen(&self, sink: &AuditSink) -> std::io::Result<()> {
        let out = open(sink)?;
        *self.out.lock().unwrap_or_else(|e| e.into_inner()) = out;
        Ok(())
    }

    /// Writes one JSON line.
    pub fn write_line(&self, line: &str) {
        match &mut *self.out.lock().unwrap_or_else(|e| e.into_inner()) {
            Out::Off => {}
            Out::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
            Out::File(f) => {
                let _ = writeln!(f, "{line}");
            }
        }
    }

    /// Records an admin call and its outcome.
    pub fn record(&self, peer: IpAddr, method: &str, target: &str, outcome: &str) {
        let line = json!({ "audit": "admin_call", "time_unix_ms": unix_ms(), "peer": peer.to_string(), "method": method, "target": target, "outcome": outcome });
        self.write_line(&line.to_string());
    }
}
