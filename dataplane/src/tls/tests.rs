//! The TLS session against a real rustls client, in memory: handshakes,
//! resumption, SNI, bad first bytes, and reloads.

use super::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A throwaway CA and the leaf certificates it signs, as PEM files (the
/// per-core layer's tests use it too).
pub(crate) struct Ca {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let dir = std::env::temp_dir().join(format!("ug-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ultragate test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca {
            dir,
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A leaf for `names`, written as `<file>.crt` and `<file>.key`.
    pub(crate) fn leaf(&self, file: &str, names: &[&str]) -> CertFiles {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = CertFiles {
            cert_file: self.dir.join(format!("{file}.crt")),
            key_file: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&files.cert_file, cert.pem() + &self.pem).unwrap();
        std::fs::write(&files.key_file, key.serialize_pem()).unwrap();
        files
    }

    pub(crate) fn client(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap();
        roots.add(der).unwrap();
        Arc::new(
            ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

use rustls_pki_types::pem::PemObject;

pub(crate) fn settings(certs: Vec<CertFiles>) -> TlsSettings {
    TlsSettings {
        certificates: certs,
        min_version: MinVersion::Tls12,
        handshake_timeout: Duration::from_secs(10),
    }
}

/// Runs client and server until neither has anything to send; returns the
/// server's plaintext and whether a handshake finished (and how).
fn pump(client: &mut ClientConnection, server: &mut TlsSession) -> (Vec<u8>, Option<Handshake>) {
    let mut plain = Vec::new();
    let mut done = None;
    for _ in 0..20 {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        if !wire.is_empty() {
            if let Some(h) = server
                .recv(&wire, &mut |p| plain.extend_from_slice(p))
                .unwrap()
            {
                done = Some(h);
            }
        }
        let mut back = Vec::new();
        let mut slices = [std::io::IoSlice::new(&[]); 8];
        let n = server.slices(&mut slices);
        for s in &slices[..n] {
            back.extend_from_slice(s);
        }
        server.written(back.len());
        if wire.is_empty() && back.is_empty() {
            break;
        }
        let mut rd = &back[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client.process_new_packets().unwrap();
        }
    }
    (plain, done)
}

fn connect(cfg: &Arc<ClientConfig>, name: &str) -> ClientConnection {
    ClientConnection::new(cfg.clone(), ServerName::try_from(name.to_string()).unwrap()).unwrap()
}

#[test]
fn a_client_gets_the_certificate_its_sni_names_and_data_flows_both_ways() {
    let ca = Ca::new("sni");
    let a = ca.leaf("a", &["a.example"]);
    let b = ca.leaf("b", &["*.b.example"]);
    let server = TlsServer::new(&settings(vec![a, b])).unwrap();
    let names = |c: &ClientConnection| {
        let der = &c.peer_certificates().unwrap()[0];
        let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        x.subject().to_string()
    };
    let cfg = ca.client();
    for (sni, want) in [
        ("a.example", "CN=a.example"),
        ("x.b.example", "CN=*.b.example"),
    ] {
        let mut client = connect(&cfg, sni);
        let mut session = server.session().unwrap();
        client
            .writer()
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .unwrap();
        let (plain, done) = pump(&mut client, &mut session);
        assert_eq!(plain, b"GET / HTTP/1.1\r\n\r\n");
        assert!(done.is_some_and(|h| !h.resumed && h.tls13));
        assert_eq!(names(&client), want);
        assert!(session.encrypt(b"HTTP/1.1 200 OK\r\n\r\n").unwrap());
        pump(&mut client, &mut session);
        let mut got = [0u8; 19];
        client.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"HTTP/1.1 200 OK\r\n\r\n");
    }
    let infos = server.certificates();
    assert_eq!(infos[1].names, vec!["*.b.example".to_string()]);
    assert!(!infos[0].is_expired(0));
}

#[test]
fn a_second_connection_resumes_over_tls_1_2_and_1_3() {
    let ca = Ca::new("resume");
    let server = TlsServer::new(&settings(vec![ca.leaf("a", &["a.example"])])).unwrap();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut roots = RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
            .unwrap();
        let cfg = Arc::new(
            ClientConfig::builder_with_protocol_versions(&[version])
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let mut client = connect(&cfg, "a.example");
            let mut session = server.session().unwrap();
            client.writer().write_all(b"x").unwrap();
            let (_, done) = pump(&mut client, &mut session);
            kinds.push(done.unwrap().resumed);
        }
        assert_eq!(kinds, vec![false, true], "{version:?}");
    }
}

#[test]
fn plaintext_http_and_garbage_are_told_apart_and_refused() {
    let ca = Ca::new("bad");
    let server = TlsServer::new(&settings(vec![ca.leaf("a", &["a.example"])])).unwrap();
    let mut s = server.session().unwrap();
    assert_eq!(
        s.recv(b"GET / HTTP/1.1\r\n", &mut |_| {}),
        Err(Failure::PlaintextHttp)
    );
    let mut s = server.session().unwrap();
    assert_eq!(
        s.recv(b"\x00\x01garbage", &mut |_| {}),
        Err(Failure::NotTls)
    );
    // A handshake record that is no ClientHello.
    let mut s = server.session().unwrap();
    assert!(s
        .recv(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", &mut |_| {})
        .is_err());
}

#[test]
fn a_bad_reload_keeps_the_running_certificates_and_names_the_key() {
    let ca = Ca::new("reload");
    let good = ca.leaf("a", &["a.example"]);
    let server = TlsServer::new(&settings(vec![good.clone()])).unwrap();
    let other = ca.leaf("b", &["b.example"]);
    let mismatched = CertFiles {
        cert_file: good.cert_file.clone(),
        key_file: other.key_file.clone(),
    };
    let err = server
        .reload(&settings(vec![mismatched]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tls.certificate[0].key_file") && err.contains("does not match"),
        "{err}"
    );
    let missing = CertFiles {
        cert_file: Path::new("/nonexistent/x.crt").into(),
        key_file: good.key_file.clone(),
    };
    let err = server
        .reload(&settings(vec![missing]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tls.certificate[0].cert_file") && err.contains("/nonexistent/x.crt"),
        "{err}"
    );
    assert_eq!(
        server.certificates()[0].names,
        vec!["a.example".to_string()]
    );
    server.reload(&settings(vec![other])).unwrap();
    assert_eq!(
        server.certificates()[0].names,
        vec!["b.example".to_string()]
    );
}
