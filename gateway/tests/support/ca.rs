//! A throwaway certificate authority for the HTTPS tests: leaves for the
//! gateway, and a rustls client that trusts only it.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::path::PathBuf;
use std::sync::Arc;

/// A CA made for one test, its files in a directory of their own.
pub struct Ca {
    pub dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    pub fn new(test: &str) -> Ca {
        let dir = std::env::temp_dir().join(format!("ug-tls-e2e-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ultragate test CA");
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        Ca {
            dir,
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    pub fn ca_file(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }

    /// Writes a leaf for `names` (common name `cn`) as `DIR/tls.crt` and
    /// `DIR/tls.key` under the CA's directory.
    pub fn leaf(&self, sub: &str, cn: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        self.leaf_with(sub, names, |p| {
            p.distinguished_name.push(DnType::CommonName, cn)
        })
    }

    /// A leaf for `names` that expired on 2020-01-02.
    pub fn expired_leaf(&self, sub: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        self.leaf_with(sub, names, |p| {
            p.not_before = rcgen::date_time_ymd(2019, 1, 1);
            p.not_after = rcgen::date_time_ymd(2020, 1, 2);
        })
    }

    /// A leaf for `names` with `shape` applied to its parameters.
    pub fn leaf_with(
        &self,
        sub: &str,
        names: &[&str],
        shape: impl FnOnce(&mut CertificateParams),
    ) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        shape(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let dir = self.dir.join(sub);
        std::fs::create_dir_all(&dir).unwrap();
        let (crt, k) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (crt, k)
    }

    /// A rustls client trusting this CA only, without resumption (so
    /// every connection sees the certificate served now).
    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap())
            .unwrap();
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.resumption = rustls::client::Resumption::disabled();
        Arc::new(cfg)
    }
}

impl Drop for Ca {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
