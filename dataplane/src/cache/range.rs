//! Byte ranges served from a stored complete response (RFC 9110 §14):
//! parsing `Range` against the stored length, `If-Range`, and writing the
//! `206` (one range, or `multipart/byteranges` for several) or the `416`.
//! No allocation: ranges are parsed into a fixed array, and the parts'
//! bytes are queued as slices of the stored body.

use super::entry::{put_decimal, Entry};
use super::rules;
use crate::http::output::Output;
use bytes::BufMut;

/// Most ranges answered in one request; more (a common way to make a
/// server do much work for little) are answered with the whole response.
pub const MAX_RANGES: usize = 8;

/// The boundary of a `multipart/byteranges` answer. Fixed: the parts are
/// the stored response's own bytes, which the gateway serves as they are.
const BOUNDARY: &str = "ultragate-byteranges-3d6f1a";

/// What a `Range` asks of a representation of a given length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranges {
    /// Answer with the whole representation (no range, one not understood,
    /// too many or overlapping ones, or `If-Range` did not match).
    Whole,
    /// Answer with these ranges, inclusive `(first, last)` byte positions.
    Parts([(u64, u64); MAX_RANGES], usize),
    /// None of the ranges can be satisfied: `416`.
    Unsatisfiable,
}

impl Ranges {
    /// Reads a `Range` value for a representation of `len` bytes.
    pub fn parse(value: &[u8], len: u64) -> Self {
        let Some(specs) = value.strip_prefix(b"bytes=") else {
            return Self::Whole;
        };
        let mut parts = [(0, 0); MAX_RANGES];
        let mut n = 0;
        let mut any_valid = false;
        for spec in specs.split(|&b| b == b',') {
            let spec = crate::http::trim(spec);
            let Some(dash) = spec.iter().position(|&b| b == b'-') else {
                return Self::Whole;
            };
            let (first, last) = (&spec[..dash], &spec[dash + 1..]);
            let (first, last) = match (number(first), number(last)) {
                // `-N`: the last N bytes.
                (None, Some(suffix)) if first.is_empty() => {
                    if suffix == 0 {
                        any_valid = true;
                        continue;
                    }
                    (len.saturating_sub(suffix), len.saturating_sub(1))
                }
                // `A-`: from A to the end.
                (Some(a), None) if last.is_empty() => (a, len.saturating_sub(1)),
                (Some(a), Some(b)) if a <= b => (a, b.min(len.saturating_sub(1))),
                _ => return Self::Whole,
            };
            any_valid = true;
            if first >= len {
                continue;
            }
            if n == MAX_RANGES {
                return Self::Whole;
            }
            parts[n] = (first, last);
            n += 1;
        }
        if n == 0 {
            return if any_valid {
                Self::Unsatisfiable
            } else {
                Self::Whole
            };
        }
        // Overlapping ranges are answered whole (RFC 9110 §14.2 lets a
        // server coalesce or refuse them; whole is the simple safe way).
        let mut sorted = parts;
        sorted[..n].sort_unstable();
        if sorted[..n].windows(2).any(|w| w[1].0 <= w[0].1) {
            return Self::Whole;
        }
        Self::Parts(parts, n)
    }
}

/// A decimal number of at most 18 digits.
fn number(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 18 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// Whether an `If-Range` lets the ranges apply to `entry` (RFC 9110
/// §13.1.5): a strong entity tag equal to the stored one, or a date equal
/// to its `Last-Modified`.
pub fn if_range_matches(value: &[u8], entry: &Entry) -> bool {
    let value = crate::http::trim(value);
    if value.starts_with(b"\"") {
        return entry.meta.etag.as_deref() == Some(value);
    }
    if value.starts_with(b"W/") {
        return false;
    }
    match (rules::http_date(value), &entry.meta.last_modified) {
        (Some(date), Some(lm)) => rules::http_date(lm) == Some(date),
        _ => false,
    }
}

/// What to answer to a GET for `entry` with these request fields: the
/// ranges, or `None` to answer with the whole stored response.
pub fn requested(headers: &[httparse::Header<'_>], entry: &Entry) -> Option<Ranges> {
    if entry.meta.status != 200 {
        return None;
    }
    let range = rules::field(headers, "range")?;
    if let Some(if_range) = rules::field(headers, "if-range") {
        if !if_range_matches(if_range, entry) {
            return None;
        }
    }
    match Ranges::parse(range, entry.body.len() as u64) {
        Ranges::Whole => None,
        r => Some(r),
    }
}

/// Writes the `206` or `416` for `ranges` of `entry`: the status line,
/// the stored fields (without `Content-Type` for a multipart answer, whose
/// parts carry it), `fields` (`Age` and the cache's fields), the range's
/// framing fields and `connection`, then the parts.
pub fn write(
    output: &mut Output,
    entry: &Entry,
    ranges: Ranges,
    fields: impl FnOnce(&mut bytes::BytesMut),
    connection: &[u8],
) {
    let len = entry.body.len() as u64;
    let stored = entry.stored_fields();
    let multipart = matches!(ranges, Ranges::Parts(_, n) if n > 1);
    let fields = |out: &mut bytes::BytesMut| {
        for line in stored.split_inclusive(|&b| b == b'\n') {
            let is_type = line.len() > 13 && line[..13].eq_ignore_ascii_case(b"content-type:");
            if !(multipart && is_type) {
                out.put_slice(line);
            }
        }
        fields(out);
    };
    let out = output.tail();
    match ranges {
        Ranges::Unsatisfiable | Ranges::Whole => {
            out.put_slice(b"HTTP/1.1 416 Range Not Satisfiable\r\n");
            fields(out);
            out.put_slice(b"Content-Range: bytes */");
            put_decimal(out, len);
            out.put_slice(b"\r\nContent-Length: 0\r\n");
            out.put_slice(connection);
            out.put_slice(b"\r\n");
        }
        Ranges::Parts(parts, 1) => {
            let (a, b) = parts[0];
            out.put_slice(b"HTTP/1.1 206 Partial Content\r\n");
            fields(out);
            put_content_range(out, a, b, len);
            out.put_slice(b"Content-Length: ");
            put_decimal(out, b - a + 1);
            out.put_slice(b"\r\n");
            out.put_slice(connection);
            out.put_slice(b"\r\n");
            output.push(&entry.body.slice(a as usize..=b as usize));
        }
        Ranges::Parts(parts, n) => {
            let content_type = entry
                .stored_field(b"content-type")
                .unwrap_or(b"application/octet-stream");
            let part_head = |a: u64, b: u64| {
                // "--" boundary CRLF, Content-Type, Content-Range, CRLF.
                let digits = |v: u64| v.checked_ilog10().unwrap_or(0) as usize + 1;
                4 + BOUNDARY.len()
                    + 16
                    + content_type.len()
                    + 25
                    + digits(a)
                    + digits(b)
                    + digits(len)
                    + 2
            };
            let mut total = 0u64;
            for &(a, b) in &parts[..n] {
                total += part_head(a, b) as u64 + (b - a + 1) + 2;
            }
            total += (2 + BOUNDARY.len() + 4) as u64;
            out.put_slice(b"HTTP/1.1 206 Partial Content\r\n");
            fields(out);
            out.put_slice(b"Content-Type: multipart/byteranges; boundary=");
            out.put_slice(BOUNDARY.as_bytes());
            out.put_slice(b"\r\nContent-Length: ");
            put_decimal(out, total);
            out.put_slice(b"\r\n");
            out.put_slice(connection);
            out.put_slice(b"\r\n");
            for &(a, b) in &parts[..n] {
                let out = output.tail();
                out.put_slice(b"--");
                out.put_slice(BOUNDARY.as_bytes());
                out.put_slice(b"\r\nContent-Type: ");
                out.put_slice(content_type);
                out.put_slice(b"\r\n");
                put_content_range(out, a, b, len);
                out.put_slice(b"\r\n");
                output.push(&entry.body.slice(a as usize..=b as usize));
                output.tail().put_slice(b"\r\n");
            }
            let out = output.tail();
            out.put_slice(b"--");
            out.put_slice(BOUNDARY.as_bytes());
            out.put_slice(b"--\r\n");
        }
    }
}

fn put_content_range(out: &mut bytes::BytesMut, a: u64, b: u64, len: u64) {
    out.put_slice(b"Content-Range: bytes ");
    put_decimal(out, a);
    out.put_u8(b'-');
    put_decimal(out, b);
    out.put_u8(b'/');
    put_decimal(out, len);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(value: &str, len: u64) -> Vec<(u64, u64)> {
        match Ranges::parse(value.as_bytes(), len) {
            Ranges::Parts(p, n) => p[..n].to_vec(),
            other => panic!("{value}: {other:?}"),
        }
    }

    #[test]
    fn rfc9110_14_1_2_byte_range_forms() {
        assert_eq!(parts("bytes=0-99", 1000), [(0, 99)]);
        assert_eq!(parts("bytes=900-", 1000), [(900, 999)]);
        assert_eq!(parts("bytes=-100", 1000), [(900, 999)]);
        assert_eq!(
            parts("bytes=-5000", 1000),
            [(0, 999)],
            "suffix longer than the object"
        );
        assert_eq!(parts("bytes=990-2000", 1000), [(990, 999)], "last clipped");
        assert_eq!(parts("bytes=0-0, -1", 1000), [(0, 0), (999, 999)]);
        assert_eq!(parts("bytes= 0-1 ,5-6", 10), [(0, 1), (5, 6)]);
        assert_eq!(
            parts("bytes=0-1,1000-,5-6", 10),
            [(0, 1), (5, 6)],
            "unsatisfiable parts dropped"
        );
    }

    #[test]
    fn rfc9110_14_2_what_is_answered_whole_or_416() {
        for whole in [
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=1",
            "bytes=0-5,3-8",
            "bytes=0-0,1-1,2-2,3-3,4-4,5-5,6-6,7-7,8-8",
            "bytes=99999999999999999999-",
        ] {
            assert_eq!(
                Ranges::parse(whole.as_bytes(), 100),
                Ranges::Whole,
                "{whole}"
            );
        }
        for unsat in ["bytes=100-", "bytes=200-300", "bytes=-0"] {
            assert_eq!(
                Ranges::parse(unsat.as_bytes(), 100),
                Ranges::Unsatisfiable,
                "{unsat}"
            );
        }
        assert_eq!(Ranges::parse(b"bytes=0-1", 0), Ranges::Unsatisfiable);
    }
}
