//! The HTTP/1.1 codec: typed heads parsed from bytes (`request`, `response`),
//! incremental chunked framing (`chunked`) and the header rules a proxy
//! applies between the two sides (`fields`).
//!
//! Nothing here owns a buffer or a socket: every function takes the bytes it
//! reads and, where it writes, the `BytesMut` it appends to.

#![forbid(unsafe_code)]

pub mod chunked;
pub mod decimal;
pub mod fields;
pub mod output;
pub mod path;
pub mod request;
pub mod response;

/// The protocol version of a message; HTTP/1.0 peers get different framing
/// (no chunked coding, close by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: persistent only with `Connection: keep-alive`.
    Http10,
    /// HTTP/1.1: persistent unless `Connection: close`.
    Http11,
}

/// How the body of a message is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// The body ends when the sender closes the connection (responses only).
    UntilClose,
}

/// Most header fields accepted in one head; more is answered like a head
/// that is too large.
pub const MAX_HEADERS: usize = 100;

/// Parses a `Content-Length` field value: digits only, and a comma list only
/// when every member is the same number (RFC 9110 §8.6). `None` means the
/// value is invalid and the message must be rejected.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut found: Option<u64> = None;
    for part in value.split(|&b| b == b',') {
        let part = trim(part);
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        match found {
            Some(prev) if prev != n => return None,
            _ => found = Some(n),
        }
    }
    found
}

/// Strips optional whitespace (SP / HTAB) at both ends of a field value.
pub fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Iterates the comma-separated, trimmed, non-empty members of a list-valued
/// field such as `Connection` or `Transfer-Encoding`.
pub fn list_members(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|m| !m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_values() {
        let table: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"1024", Some(1024)),
            (b" 42 ", Some(42)),
            (b"5, 5", Some(5)),
            (b"5, 6", None),
            (b"+5", None),
            (b"-1", None),
            (b"0x10", None),
            (b"", None),
            (b"1 2", None),
            (b"99999999999999999999", None),
        ];
        for (input, want) in table {
            assert_eq!(
                parse_content_length(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
