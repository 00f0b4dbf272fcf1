//! TLS termination, once for every data plane: the per-core layer runs a
//! [`TlsSession`] (rustls' unbuffered API: the caller owns the buffers,
//! no IO inside) between the driver's bytes and the engine, so io_uring,
//! epoll and DPDK serve HTTPS without code of their own.
//!
//! [`TlsServer`] holds what every session starts from: the certificates
//! (chosen by SNI, [`sni`]), the versions, ALPN, the session-ticket keys
//! (rotating) and the session cache. A reload builds a new configuration
//! and swaps it in only when every certificate loaded; connections already
//! open keep the one they started with, and resumption survives the swap.

pub mod certs;
pub mod ktls;
mod session;
pub mod sni;

pub use certs::{CertFiles, CertInfo};
pub use session::{ClientSession, Handshake, Side, TlsSession};

use arc_swap::ArcSwap;
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::ServerConfig;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Why certificates or the TLS settings could not be loaded: each names
/// the config key and the file.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{key}: cannot read {file}: {source}")]
    Read {
        /// The config key.
        key: String,
        /// The file.
        file: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A file's content is not what the key needs.
    #[error("{key}: {file}: {reason}")]
    Invalid {
        /// The config key.
        key: String,
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The private key is not the certificate's.
    #[error("{key}: the key in {key_file} does not match the certificate in {cert_file}")]
    KeyMismatch {
        /// The config key.
        key: String,
        /// The key's file.
        key_file: String,
        /// The certificate's file.
        cert_file: String,
    },
    /// `[tls]` without any `[[tls.certificate]]`.
    #[error("tls.certificate: a TLS listener needs at least one certificate")]
    NoCertificate,
    /// rustls refused the settings.
    #[error("tls: {0}")]
    Settings(rustls::Error),
}

/// The oldest TLS version a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// What `[tls]` says, as the data plane needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificates; the first is the default for clients without a
    /// matching SNI.
    pub certificates: Vec<CertFiles>,
    /// The oldest version accepted.
    pub min_version: MinVersion,
    /// How long a client may take to finish its handshake.
    pub handshake_timeout: Duration,
}

/// Why a TLS connection failed, for `ultragate_tls_handshake_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A plain HTTP request came to the TLS port (answered `400` in plain
    /// text).
    PlaintextHttp,
    /// The first bytes were not a TLS record.
    NotTls,
    /// A malformed or unexpected message, or a renegotiation attempt.
    Protocol,
    /// No version, cipher suite, group or ALPN protocol in common.
    Incompatible,
    /// The client sent a fatal alert (e.g. it refused the certificate).
    PeerAlert,
    /// The handshake did not finish within the handshake timeout.
    Timeout,
    /// The client closed the connection mid-handshake.
    Closed,
}

impl Failure {
    /// Every reason, in the order of [`TlsCounts::failures`].
    pub const ALL: [Failure; 7] = [
        Failure::PlaintextHttp,
        Failure::NotTls,
        Failure::Protocol,
        Failure::Incompatible,
        Failure::PeerAlert,
        Failure::Timeout,
        Failure::Closed,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Failure::PlaintextHttp => "plaintext_http",
            Failure::NotTls => "not_tls",
            Failure::Protocol => "protocol",
            Failure::Incompatible => "incompatible",
            Failure::PeerAlert => "peer_alert",
            Failure::Timeout => "timeout",
            Failure::Closed => "closed",
        }
    }

    /// What a rustls error says about the peer; `open` when the handshake
    /// had finished.
    pub(crate) fn of(e: &rustls::Error, open: bool) -> Failure {
        use rustls::Error as E;
        match e {
            E::AlertReceived(_) => Failure::PeerAlert,
            E::PeerIncompatible(_) | E::NoApplicationProtocol => Failure::Incompatible,
            E::InvalidMessage(_) if !open => Failure::NotTls,
            _ => Failure::Protocol,
        }
    }

    fn index(self) -> usize {
        Failure::ALL.iter().position(|f| *f == self).unwrap_or(0)
    }
}

/// One core's TLS counters for an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsCounts {
    /// Full handshakes completed.
    pub full: u64,
    /// Resumed handshakes completed (ticket or session id).
    pub resumed: u64,
    /// Handshakes completed over TLS 1.3 (the rest are 1.2).
    pub tls13: u64,
    /// Failed connections, by [`Failure::ALL`] order.
    pub failures: [u64; 7],
}

impl TlsCounts {
    /// Counts a finished handshake.
    pub fn handshake(&mut self, h: Handshake) {
        if h.resumed {
            self.resumed += 1;
        } else {
            self.full += 1;
        }
        self.tls13 += u64::from(h.tls13);
    }

    /// Counts a failed connection.
    pub fn failure(&mut self, f: Failure) {
        self.failures[f.index()] += 1;
    }

    /// Adds another core's counts.
    pub fn merge(&mut self, o: &TlsCounts) {
        self.full += o.full;
        self.resumed += o.resumed;
        self.tls13 += o.tls13;
        for (a, b) in self.failures.iter_mut().zip(o.failures) {
            *a += b;
        }
    }
}

/// Session ids one process remembers for TLS 1.2 clients without ticket
/// support (rustls evicts the oldest past it).
const SESSION_CACHE: usize = 20_000;

/// What every TLS session starts from, shared by the cores and replaced by
/// a reload.
pub struct TlsServer {
    config: ArcSwap<ServerConfig>,
    certs: ArcSwap<Vec<CertInfo>>,
    settings: ArcSwap<TlsSettings>,
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
}

impl TlsServer {
    /// Loads every certificate of `settings`; fails naming the key and the
    /// file.
    pub fn new(settings: &TlsSettings) -> Result<Self, TlsError> {
        let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(TlsError::Settings)?;
        let sessions: Arc<dyn StoresServerSessions> = ServerSessionMemoryCache::new(SESSION_CACHE);
        let (config, certs) = build(settings, &ticketer, &sessions)?;
        Ok(Self {
            config: ArcSwap::from(config),
            certs: ArcSwap::from_pointee(certs),
            settings: ArcSwap::from_pointee(settings.clone()),
            ticketer,
            sessions,
        })
    }

    /// Loads `settings` again (the files may have changed): swapped in only
    /// when everything loaded, else the running certificates stay.
    pub fn reload(&self, settings: &TlsSettings) -> Result<(), TlsError> {
        let (config, certs) = build(settings, &self.ticketer, &self.sessions)?;
        self.config.store(config);
        self.certs.store(Arc::new(certs));
        self.settings.store(Arc::new(settings.clone()));
        Ok(())
    }

    /// The configuration new sessions start with.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }

    /// The certificates served now, in config order.
    pub fn certificates(&self) -> Arc<Vec<CertInfo>> {
        self.certs.load_full()
    }

    /// The settings loaded now.
    pub fn settings(&self) -> Arc<TlsSettings> {
        self.settings.load_full()
    }

    /// How long a client may take to finish its handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.settings.load().handshake_timeout
    }

    /// A session for a new connection.
    pub fn session(&self) -> Result<TlsSession, rustls::Error> {
        TlsSession::new(self.config())
    }
}

/// The rustls configuration of `settings`, with the shared ticket keys and
/// session cache, and what is shown of its certificates.
fn build(
    settings: &TlsSettings,
    ticketer: &Arc<dyn ProducesTickets>,
    sessions: &Arc<dyn StoresServerSessions>,
) -> Result<(Arc<ServerConfig>, Vec<CertInfo>), TlsError> {
    if settings.certificates.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut keys = Vec::new();
    let mut infos = Vec::new();
    for (i, files) in settings.certificates.iter().enumerate() {
        let loaded = certs::load(i, files, &provider)?;
        keys.push((loaded.info.names.clone(), loaded.key));
        infos.push(loaded.info);
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(TlsError::Settings)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(sni::SniResolver::new(keys)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = ticketer.clone();
    config.session_storage = sessions.clone();
    Ok((Arc::new(config), infos))
}

/// A pool's TLS to its servers (`[upstream.NAME] tls = true`): the
/// client settings and the name verified (and sent in SNI).
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// rustls' client settings: the trusted CAs, ALPN `http/1.1`, a
    /// session cache so reconnects resume.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the servers' certificates must carry.
    pub server_name: rustls::pki_types::ServerName<'static>,
    /// What it was built from (`tls_server_name`, `tls_ca_file`), so a
    /// reload tells whether it changed.
    source: (String, Option<std::path::PathBuf>),
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl UpstreamTls {
    /// Whether it was built from this name and CA file.
    pub fn is_built_from(&self, server_name: &str, ca_file: Option<&std::path::Path>) -> bool {
        self.source.0 == server_name && self.source.1.as_deref() == ca_file
    }

    /// Verifies servers as `server_name` against the CAs of `ca_file`
    /// (PEM), or the system's trust store without one. `key` is the
    /// pool's config prefix (`upstream.NAME`), for errors.
    pub fn new(
        key: &str,
        server_name: &str,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, TlsError> {
        use rustls_pki_types::pem::PemObject;
        let invalid = |k: &str, file: &str, reason: String| TlsError::Invalid {
            key: format!("{key}.{k}"),
            file: file.to_string(),
            reason,
        };
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| invalid("tls_server_name", server_name, e.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let file = path.display().to_string();
                let pem = std::fs::read(path).map_err(|source| TlsError::Read {
                    key: format!("{key}.tls_ca_file"),
                    file: file.clone(),
                    source,
                })?;
                for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| {
                        invalid("tls_ca_file", &file, format!("not PEM certificates: {e}"))
                    })?;
                    roots
                        .add(cert)
                        .map_err(|e| invalid("tls_ca_file", &file, e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(invalid("tls_ca_file", &file, "holds no certificate".into()));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(invalid(
                        "tls_ca_file",
                        "(system trust store)",
                        "no CA certificates found: set tls_ca_file".into(),
                    ));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Settings)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            server_name: name,
            source: (server_name.to_string(), ca_file.map(Into::into)),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
