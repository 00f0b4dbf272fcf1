//! Header rules shared by both directions of the proxy: which fields are
//! hop-by-hop (RFC 9110 §7.6.1) and must not be forwarded.

use super::list_members;

/// Fields that describe one connection, never forwarded by a proxy.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// End-to-end fields that framing, routing or the cache rely on: a
/// `Connection` option naming one would remove it on the way upstream while
/// the gateway still acted on it, so such a request is refused.
const PROTECTED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "authorization",
    "cache-control",
    "pragma",
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
    "range",
];

/// Connection-scoped options found in a head's `Connection` field(s).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionOptions<'h, 'b> {
    /// `close` was listed.
    pub close: bool,
    /// `keep-alive` was listed.
    pub keep_alive: bool,
    /// Some other option was listed (a field name to drop).
    pub names_fields: bool,
    /// The head's fields, rescanned for listed names (no allocation).
    headers: &'h [httparse::Header<'b>],
}

impl<'h, 'b> ConnectionOptions<'h, 'b> {
    /// Collects the options of every `Connection` field in `headers`.
    pub fn from_headers(headers: &'h [httparse::Header<'b>]) -> Self {
        let (mut close, mut keep_alive, mut names_fields) = (false, false, false);
        for token in connection_tokens(headers) {
            let is_close = token.eq_ignore_ascii_case(b"close");
            let is_keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
            close |= is_close;
            keep_alive |= is_keep_alive;
            names_fields |= !is_close && !is_keep_alive;
        }
        Self {
            close,
            keep_alive,
            names_fields,
            headers,
        }
    }

    /// Whether a `Connection` option names `name` (so it is not forwarded).
    pub fn lists(&self, name: &str) -> bool {
        connection_tokens(self.headers).any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    }

    /// Whether a `Connection` option names a field the gateway relies on
    /// end to end (Host, framing, fields the cache reads).
    pub fn lists_protected(&self) -> bool {
        PROTECTED.iter().any(|p| self.lists(p))
    }

    /// Whether a field must be dropped when forwarding: a standard
    /// hop-by-hop field or one named in `Connection`.
    pub fn is_hop_by_hop(&self, name: &str) -> bool {
        HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name)) || self.lists(name)
    }
}

/// Every token listed in the `Connection` fields of a head.
fn connection_tokens<'h, 'b>(
    headers: &'h [httparse::Header<'b>],
) -> impl Iterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| list_members(h.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_tokens_make_fields_hop_by_hop() {
        let headers = [
            httparse::Header {
                name: "Connection",
                value: b"close, X-Secret",
            },
            httparse::Header {
                name: "connection",
                value: b"Keep-Alive",
            },
        ];
        let opts = ConnectionOptions::from_headers(&headers);
        assert!(opts.close && opts.keep_alive);
        assert!(opts.is_hop_by_hop("x-secret"));
        assert!(opts.is_hop_by_hop("Transfer-Encoding"));
        assert!(!opts.is_hop_by_hop("Host"));
    }
}
