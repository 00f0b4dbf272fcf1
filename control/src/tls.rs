//! The TLS listener's certificates as the control plane runs them:
//! reloads (`POST /admin/tls/reload`, a config reload, the files changing
//! on disk), the `tls` component of `/health` and the expiry metric.
//!
//! A reload builds everything before it swaps: a bad certificate keeps the
//! running one, the caller gets the reason, and the timeline says why.
//! Connections already open keep the certificate they started with.

use crate::executor::events::Event;
use crate::supervisor::Supervisor;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use ultragate_dataplane::tls::{CertInfo, TlsServer, TlsSettings};

/// What identifies a file's content without reading it: a Kubernetes
/// Secret update swaps a symlink, which changes the target's inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        inode: m.ino(),
        len: m.len(),
        modified: m.modified().ok(),
    })
}

/// The certificates' reloads and their view for operators.
pub struct TlsControl {
    server: Arc<TlsServer>,
    /// The files as last loaded or last refused, so a watch reloads once
    /// per change.
    seen: Mutex<Vec<Option<Stamp>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Seconds since the Unix epoch now.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl TlsControl {
    /// Watches `server`'s certificates; warns now about expired ones.
    pub fn new(server: Arc<TlsServer>) -> Self {
        match ultragate_dataplane::tls::ktls::kernel_support() {
            Ok(()) => tracing::info!("TLS records are made in userspace (rustls); the kernel offers kTLS, which this build does not use"),
            Err(why) => tracing::warn!(reason = %why, "no kTLS: TLS records are made in userspace (rustls)"),
        }
        let me = Self {
            seen: Mutex::new(stamps(&server.settings())),
            server,
        };
        me.warn_expired();
        me
    }

    /// Loads the certificates again, from `settings` when a config reload
    /// brings new ones, else from the running settings' files. On success
    /// the new ones serve every new connection; on failure the running
    /// ones stay and the reason comes back. Either way the timeline says
    /// so, naming `cause`.
    pub fn reload(
        &self,
        sup: &Supervisor,
        settings: Option<&TlsSettings>,
        cause: &str,
    ) -> Result<Arc<Vec<CertInfo>>, String> {
        let settings = settings
            .cloned()
            .unwrap_or_else(|| (*self.server.settings()).clone());
        *lock(&self.seen) = stamps(&settings);
        match self.server.reload(&settings) {
            Ok(()) => {
                let certs = self.server.certificates();
                let names: Vec<&str> = certs.iter().map(|c| c.subject.as_str()).collect();
                sup.record(Event::TlsReload {
                    cause,
                    outcome: Ok(names),
                });
                self.warn_expired();
                self.export(sup);
                Ok(certs)
            }
            Err(e) => {
                let why = e.to_string();
                tracing::error!(error = %why, cause, "TLS reload refused; the running certificates stay");
                sup.record(Event::TlsReload {
                    cause,
                    outcome: Err(&why),
                });
                Err(why)
            }
        }
    }

    /// Reloads when a certificate or key file changed on disk since the
    /// last load (or the last refusal).
    pub fn check_files(&self, sup: &Supervisor) {
        let now = stamps(&self.server.settings());
        if *lock(&self.seen) == now {
            return;
        }
        let _ = self.reload(sup, None, "certificate files changed on disk");
    }

    /// Sets the expiry gauge of every certificate served.
    pub fn export(&self, sup: &Supervisor) {
        sup.metrics.tls_certificates(&self.server.certificates());
    }

    fn warn_expired(&self) {
        let now = unix_now();
        for c in self
            .server
            .certificates()
            .iter()
            .filter(|c| c.is_expired(now))
        {
            tracing::warn!(file = %c.cert_file, subject = %c.subject, "TLS certificate has expired; still served, clients will refuse it");
        }
    }

    /// The `tls` component of `/health`: each certificate's subject,
    /// names and expiry; `expired` when one has.
    pub fn health(&self) -> Value {
        let now = unix_now();
        let certs = self.server.certificates();
        let settings = self.server.settings();
        let list: Vec<Value> = certs
            .iter()
            .map(|c| {
                json!({
                    "file": c.cert_file,
                    "subject": c.subject,
                    "names": c.names,
                    "not_after_unix": c.not_after,
                    "expires_in_s": c.not_after - now,
                    "expired": c.is_expired(now),
                })
            })
            .collect();
        let expired = certs.iter().any(|c| c.is_expired(now));
        let ktls = match ultragate_dataplane::tls::ktls::kernel_support() {
            Ok(()) => {
                "userspace records; the kernel offers kTLS (tls ULP), this build does not use it"
                    .to_string()
            }
            Err(why) => format!("userspace records; no kTLS: {why}"),
        };
        json!({
            "name": "tls",
            "status": if expired { "expired" } else { "ok" },
            "record_layer": ktls,
            "min_version": match settings.min_version {
                ultragate_dataplane::tls::MinVersion::Tls12 => "1.2",
                ultragate_dataplane::tls::MinVersion::Tls13 => "1.3",
            },
            "certificates": list,
        })
    }
}

/// The stamps of every certificate and key file of `settings`.
fn stamps(settings: &TlsSettings) -> Vec<Option<Stamp>> {
    settings
        .certificates
        .iter()
        .flat_map(|c| [stamp(&c.cert_file), stamp(&c.key_file)])
        .collect()
}
