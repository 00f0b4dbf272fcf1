//! Which certificate a handshake gets: the one whose names match the
//! client's SNI (exact before wildcard, in config order), else the first.

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
    fn a_wildcard_covers_one_label_only() {
        assert!(wildcard_matches("*.example.com", "a.example.com"));
        assert!(!wildcard_matches("*.example.com", "a.b.example.com"));
        assert!(!wildcard_matches("*.example.com", "example.com"));
        assert!(!wildcard_matches("*.example.com", ".example.com"));
        assert!(!wildcard_matches("example.com", "example.com"));
    }
}
