//! Certificates from PEM files: the chain, the key that must match it, and
//! what `/health` and the metrics show of it (subject, names, expiry).

use super::TlsError;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::Arc;

/// One `[[tls.certificate]]`: where its chain and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM: the server's certificate first, then its chain.
    pub cert_file: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: PathBuf,
}

/// What an operator sees of a loaded certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The file it came from.
    pub cert_file: String,
    /// The subject's distinguished name.
    pub subject: String,
    /// The DNS names it is valid for (lowercase; `*.` for wildcards).
    pub names: Vec<String>,
    /// When it expires, in seconds since the Unix epoch.
    pub not_after: i64,
}

impl CertInfo {
    /// Whether it has expired at `now` (seconds since the Unix epoch).
    pub fn is_expired(&self, now: i64) -> bool {
        self.not_after < now
    }
}

/// A certificate ready to serve: the chain with its signing key, and what
/// is shown of it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// What rustls signs handshakes with.
    pub key: Arc<CertifiedKey>,
    /// Subject, names and expiry.
    pub info: CertInfo,
}

/// Loads `[[tls.certificate]]` number `index`; errors name the key and the
/// file.
pub fn load(
    index: usize,
    files: &CertFiles,
    provider: &CryptoProvider,
) -> Result<Loaded, TlsError> {
    let cert_key = format!("tls.certificate[{index}].cert_file");
    let key_key = format!("tls.certificate[{index}].key_file");
    let cert_name = files.cert_file.display().to_string();
    let key_name = files.key_file.display().to_string();
    let read = |key: &str, path: &PathBuf, name: &str| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            key: key.to_string(),
            file: name.to_string(),
            source,
        })
    };
    let invalid = |key: &str, file: &str, reason: String| TlsError::Invalid {
        key: key.to_string(),
        file: file.to_string(),
        reason,
    };
    let cert_pem = read(&cert_key, &files.cert_file, &cert_name)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&cert_key, &cert_name, format!("not PEM certificates: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(invalid(
            &cert_key,
            &cert_name,
            "holds no PEM certificate".into(),
        ));
    };
    let info =
        describe(leaf, &cert_name).map_err(|reason| invalid(&cert_key, &cert_name, reason))?;
    let key_pem = read(&key_key, &files.key_file, &key_name)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| invalid(&key_key, &key_name, format!("no PEM private key: {e}")))?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            key: key_key.clone(),
            key_file: key_name.clone(),
            cert_file: cert_name.clone(),
        },
        other => invalid(&key_key, &key_name, other.to_string()),
    })?;
    Ok(Loaded {
        key: Arc::new(certified),
        info,
    })
}

/// Subject, DNS names and expiry of a DER certificate.
fn describe(der: &CertificateDer<'_>, file: &str) -> Result<CertInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = name {
                names.push(n.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    Ok(CertInfo {
        cert_file: file.to_string(),
        subject: cert.subject().to_string(),
        names,
        not_after: cert.validity().not_after.timestamp(),
    })
}
