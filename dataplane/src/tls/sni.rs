//! Which certificate a handshake gets: the one whose names match the
//! client's SNI (exact before wildcard, in config order), else the first.

use super::CertInfo;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

/// The certificates of `[[tls.certificate]]`, each with its DNS names.
#[derive(Debug)]
pub struct SniResolver {
    certs: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl SniResolver {
    /// A resolver over `certs` (names lowercase); the first is the default.
    pub fn new(certs: Vec<(Vec<String>, Arc<CertifiedKey>)>) -> Self {
        Self { certs }
    }

    /// The certificate for `name` (any case, trailing dot ignored) among
    /// those whose key can sign with one of `schemes`.
    fn pick(
        &self,
        name: Option<&str>,
        usable: impl Fn(&CertifiedKey) -> bool,
    ) -> Option<Arc<CertifiedKey>> {
        let usable_certs = || self.certs.iter().filter(|(_, k)| usable(k));
        if let Some(name) = name {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let exact = usable_certs().find(|(names, _)| names.contains(&name));
            let wild = || {
                usable_certs().find(|(names, _)| names.iter().any(|n| wildcard_matches(n, &name)))
            };
            if let Some((_, k)) = exact.or_else(wild) {
                return Some(k.clone());
            }
        }
        usable_certs().next().map(|(_, k)| k.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        self.pick(hello.server_name(), |k| {
            k.key.choose_scheme(schemes).is_some()
        })
    }
}

/// The names of the certificate a connection's handshake got, so each of
/// its requests can be held to them: a `Host` the certificate does not
/// cover gets 421 (no domain fronting past a name-based route).
#[derive(Debug, Clone)]
pub struct ServedNames {
    certs: Arc<Vec<CertInfo>>,
    index: usize,
}

impl ServedNames {
    /// The names of the certificate [`SniResolver`] picks for `sni` among
    /// `certs` (exact before wildcard, in config order, else the first).
    pub fn for_hello(certs: Arc<Vec<CertInfo>>, sni: Option<&str>) -> ServedNames {
        let index = sni
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
            .and_then(|n| {
                let exact = certs.iter().position(|c| c.names.contains(&n));
                exact.or_else(|| {
                    certs
                        .iter()
                        .position(|c| c.names.iter().any(|p| wildcard_matches(p, &n)))
                })
            })
            .unwrap_or(0);
        ServedNames { certs, index }
    }

    /// Whether the certificate covers `host` (a `Host` value, port and
    /// trailing dot aside, any case). An empty host or an IP literal
    /// reaches no name-based route, so it is let through.
    pub fn covers(&self, host: &[u8]) -> bool {
        let name = match host.iter().rposition(|&b| b == b':') {
            _ if host.first() == Some(&b'[') => return true,
            Some(i) => &host[..i],
            None => host,
        };
        let name = name.strip_suffix(b".").unwrap_or(name);
        let is_ip = std::str::from_utf8(name).is_ok_and(|n| n.parse::<std::net::IpAddr>().is_ok());
        if name.is_empty() || is_ip {
            return true;
        }
        let Some(cert) = self.certs.get(self.index) else {
            return true;
        };
        cert.names
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => name.iter().position(|&b| b == b'.').is_some_and(|i| {
                    i > 0 && name[i + 1..].eq_ignore_ascii_case(suffix.as_bytes())
                }),
                None => name.eq_ignore_ascii_case(pattern.as_bytes()),
            })
    }
}

/// Whether `pattern` (`*.example.com`) covers `name` (`a.example.com`):
/// exactly one label in place of the `*`, as RFC 6125 has it.
fn wildcard_matches(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return false;
    };
    match name.split_once('.') {
        Some((label, rest)) => !label.is_empty() && rest == suffix,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connections_certificate_covers_its_names_only() {
        let cert = |names: &[&str]| CertInfo {
            cert_file: String::new(),
            subject: String::new(),
            names: names.iter().map(|n| n.to_string()).collect(),
            not_after: 0,
        };
        let certs = Arc::new(vec![cert(&["a.test"]), cert(&["*.b.test", "b.test"])]);
        let b = ServedNames::for_hello(certs.clone(), Some("x.b.test"));
        for host in [
            "y.B.test:443",
            "b.test",
            "b.test.",
            "127.0.0.1:8443",
            "[::1]:1",
            "",
        ] {
            assert!(b.covers(host.as_bytes()), "{host}");
        }
        for host in ["a.test", "z.y.b.test", ".b.test", "evil.example"] {
            assert!(!b.covers(host.as_bytes()), "{host}");
        }
        let default = ServedNames::for_hello(certs, None);
        assert!(default.covers(b"a.test") && !default.covers(b"b.test"));
    }

    #[test]
    fn a_wildcard_covers_one_label_only() {
        assert!(wildcard_matches("*.example.com", "a.example.com"));
        assert!(!wildcard_matches("*.example.com", "a.b.example.com"));
        assert!(!wildcard_matches("*.example.com", "example.com"));
        assert!(!wildcard_matches("*.example.com", ".example.com"));
        assert!(!wildcard_matches("example.com", "example.com"));
    }
}
