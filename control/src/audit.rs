//! The audit log: admin calls and refusals, and every request while
//! `[security] log_all_requests` asks for it, as JSON lines.
//!
//! Anyone who reaches the admin port can make it write, so it is bounded
//! three ways: each peer may add [`BURST`] lines at once and
//! [`PER_SECOND`] a second after that (the lines it loses are counted and
//! said in a `dropped` line once it may write again); a target is cut to
//! [`MAX_TARGET`] bytes; a file rotates to `PATH.1` past its size cap, so
//! the log takes at most twice the cap on disk.

use crate::timeline::unix_ms;
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

/// Lines a peer may add at once.
pub const BURST: f64 = 20.0;
/// Lines a peer may add each second after its burst.
pub const PER_SECOND: f64 = 5.0;
/// Bytes of a call's target kept in its line.
pub const MAX_TARGET: usize = 512;
/// Peers whose rate is remembered; past it, the quiet ones are forgotten,
/// and when none is, new peers share one bucket.
const MAX_PEERS: usize = 4096;

/// Where the audit log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    /// Nowhere (`[security] enable_audit_logging = false`).
    Off,
    /// JSON lines on stdout, for the cluster's log pipeline.
    Stdout,
    /// JSON lines appended to a file, rotated to `PATH.1` past
    /// `max_bytes`.
    File {
        /// The file.
        path: PathBuf,
        /// Its size cap (`[security] audit_log_max_bytes`).
        max_bytes: u64,
    },
}

enum Out {
    Off,
    Stdout,
    File {
        file: std::fs::File,
        path: PathBuf,
        max_bytes: u64,
        written: u64,
    },
}

fn open(sink: &AuditSink) -> std::io::Result<Out> {
    Ok(match sink {
        AuditSink::Off => Out::Off,
        AuditSink::Stdout => Out::Stdout,
        AuditSink::File { path, max_bytes } => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            let written = file.metadata().map_or(0, |m| m.len());
            Out::File {
                file,
                path: path.clone(),
                max_bytes: *max_bytes,
                written,
            }
        }
    })
}

impl Out {
    fn write(&mut self, line: &str) {
        match self {
            Out::Off => {}
            Out::Stdout => {
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            }
            Out::File {
                file,
                path,
                max_bytes,
                written,
            } => {
                if *written > 0 && *written + line.len() as u64 + 1 > *max_bytes {
                    let mut old = path.clone().into_os_string();
                    old.push(".1");
                    let reopened = std::fs::rename(&*path, &old).and_then(|()| {
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&*path)
                    });
                    match reopened {
                        Ok(f) => {
                            *file = f;
                            *written = 0;
                        }
                        // Full and not rotatable: nothing more is written
                        // rather than the disk filled.
                        Err(e) => {
                            tracing::warn!(error = %e, "audit log: cannot rotate; line dropped");
                            return;
                        }
                    }
                }
                if writeln!(file, "{line}").is_ok() {
                    *written += line.len() as u64 + 1;
                }
            }
        }
    }
}

/// A peer's allowance of lines.
struct Bucket {
    tokens: f64,
    at: Instant,
    dropped: u64,
}

impl Bucket {
    /// Takes one line's allowance at `now`; false when there is none.
    fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * PER_SECOND;
        self.tokens = (self.tokens + refill).min(BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

struct State {
    out: Out,
    peers: HashMap<IpAddr, Bucket>,
}

/// The audit log (see the module's doc).
pub struct Audit {
    state: Mutex<State>,
}

impl Audit {
    /// An audit log writing to `sink`.
    pub fn open(sink: &AuditSink) -> std::io::Result<Self> {
        Ok(Self {
            state: Mutex::new(State {
                out: open(sink)?,
                peers: HashMap::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Switches to `sink` (a config reload); on an error the current one
    /// stays.
    pub fn reopen(&self, sink: &AuditSink) -> std::io::Result<()> {
        let out = open(sink)?;
        self.lock().out = out;
        Ok(())
    }

    /// Writes one JSON line (a request record while every request is
    /// logged: bounded by the data plane's own rates and the size cap).
    pub fn write_line(&self, line: &str) {
        self.lock().out.write(line);
    }

    /// Records an admin call and its outcome, within `peer`'s rate.
    pub fn record(&self, peer: IpAddr, method: &str, target: &str, outcome: &str) {
        self.record_at(Instant::now(), peer, method, target, outcome);
    }

    fn record_at(&self, now: Instant, peer: IpAddr, method: &str, target: &str, outcome: &str) {
        let mut st = self.lock();
        let State { out, peers } = &mut *st;
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            // Forget peers whose allowance is whole again and owe no notice.
            peers.retain(|_, b| {
                b.dropped > 0
                    || b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * PER_SECOND
                        < BURST
            });
        }
        let key = if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            IpAddr::from([0, 0, 0, 0])
        } else {
            peer
        };
        let bucket = peers.entry(key).or_insert(Bucket {
            tokens: BURST,
            at: now,
            dropped: 0,
        });
        if !bucket.take(now) {
            return;
        }
        if bucket.dropped > 0 {
            let notice = json!({ "audit": "dropped", "time_unix_ms": unix_ms(), "peer": key.to_string(), "lines": bucket.dropped, "why": "over the per-peer rate" });
            bucket.dropped = 0;
            out.write(&notice.to_string());
        }
        let cut = (0..=MAX_TARGET.min(target.len()))
            .rev()
            .find(|&i| target.is_char_boundary(i))
            .unwrap_or(0);
        let target = target.get(..cut).unwrap_or_default();
        let line = json!({ "audit": "admin_call", "time_unix_ms": unix_ms(), "peer": peer.to_string(), "method": method, "target": target, "outcome": outcome });
        out.write(&line.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_flooding_peer_is_held_to_its_rate_and_told_what_it_lost() {
        let dir = std::env::temp_dir().join(format!("ug-audit-rate-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("audit.log");
        let _ = std::fs::remove_file(&path);
        let sink = AuditSink::File {
            path: path.clone(),
            max_bytes: 1 << 20,
        };
        let audit = Audit::open(&sink).unwrap();
        let t0 = Instant::now();
        let flooder: IpAddr = "10.0.0.66".parse().unwrap();
        let other: IpAddr = "10.0.0.7".parse().unwrap();
        for _ in 0..10_000 {
            audit.record_at(t0, flooder, "POST", "/admin/x", "refused");
        }
        audit.record_at(t0, other, "POST", "/admin/cache/clear", "status 200");
        let got = lines(&path);
        assert_eq!(
            got.len(),
            BURST as usize + 1,
            "the burst, and the other peer"
        );
        assert!(got.iter().any(|l| l["peer"] == "10.0.0.7"));
        // A second later: the notice, then the line.
        audit.record_at(
            t0 + Duration::from_secs(1),
            flooder,
            "POST",
            "/admin/x",
            "refused",
        );
        let got = lines(&path);
        let notice = &got[got.len() - 2];
        assert_eq!(notice["audit"], "dropped");
        assert_eq!(notice["lines"], 10_000 - BURST as u64);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_file_rotates_past_its_cap_and_long_targets_are_cut() {
        let dir = std::env::temp_dir().join(format!("ug-audit-rot-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("audit.log");
        let sink = AuditSink::File {
            path: path.clone(),
            max_bytes: 4096,
        };
        let audit = Audit::open(&sink).unwrap();
        let t0 = Instant::now();
        let long = format!("/admin/{}é", "x".repeat(MAX_TARGET));
        for i in 0..2000u32 {
            let peer = IpAddr::from(i.to_be_bytes());
            audit.record_at(t0, peer, "POST", &long, "refused");
        }
        let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let old = dir.join("audit.log.1");
        assert!(
            size(&path) <= 4096 && size(&old) <= 4096,
            "{} {}",
            size(&path),
            size(&old)
        );
        assert!(size(&old) > 0, "rotated");
        for l in lines(&path) {
            assert!(l["target"].as_str().unwrap().len() <= MAX_TARGET);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
