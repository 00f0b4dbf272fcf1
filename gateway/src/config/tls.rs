//! `[tls]`: the HTTPS listener, its certificates and protocol versions.

use super::*;

/// `[tls]`: HTTPS on a second data port, next to the plain one.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// Address of the TLS data port, e.g. `0.0.0.0:8443`. Default empty:
    /// no TLS.
    #[serde(with = "optional_addr")]
    pub listen: Option<SocketAddr>,
    /// `[[tls.certificate]]`: PEM chain and key, chosen by SNI against
    /// each certificate's names; the first is the default.
    pub certificate: Vec<CertificateConfig>,
    /// The oldest version accepted: `"1.2"` (default) or `"1.3"`.
    pub min_version: TlsVersionName,
    /// How long a client may take to finish its handshake, in
    /// milliseconds. Default 10000.
    pub handshake_timeout_ms: u64,
    /// How often the certificate and key files are checked for a change
    /// (a Kubernetes Secret update), in milliseconds; 0: never. Default
    /// 5000.
    pub watch_interval_ms: u64,
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            listen: None,
            certificate: Vec::new(),
            min_version: TlsVersionName::V12,
            handshake_timeout_ms: 10_000,
            watch_interval_ms: 5_000,
        }
    }
}

impl TlsSection {
    /// What the data plane needs of it.
    pub fn settings(&self) -> ultragate_dataplane::tls::TlsSettings {
        use ultragate_dataplane::tls::{CertFiles, MinVersion, TlsSettings};
        TlsSettings {
            certificates: self
                .certificate
                .iter()
                .map(|c| CertFiles {
                    cert_file: c.cert_file.clone(),
                    key_file: c.key_file.clone(),
                })
                .collect(),
            min_version: match self.min_version {
                TlsVersionName::V12 => MinVersion::Tls12,
                TlsVersionName::V13 => MinVersion::Tls13,
            },
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
        }
    }
}

/// One `[[tls.certificate]]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM: the certificate, then its chain.
    pub cert_file: PathBuf,
    /// PEM: its private key (RSA or ECDSA).
    pub key_file: PathBuf,
}

/// The values of `[tls] min_version`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum TlsVersionName {
    /// TLS 1.2 and 1.3.
    #[serde(rename = "1.2")]
    V12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V13,
}
