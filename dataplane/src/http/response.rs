//! Response heads from upstreams: `ResponseHead::parse` reads what an
//! upstream sent and decides its framing and whether its connection can be
//! reused.

use super::fields::ConnectionOptions;
use super::{list_members, parse_content_length, Framing, Version};
use thiserror::Error;

/// Why an upstream response was refused; the client gets a 502.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// The bytes are not an HTTP/1.x response head.
    #[error("invalid response from upstream: {0}")]
    Malformed(&'static str),
    /// The head is larger than the limit.
    #[error("upstream response head too large")]
    TooLarge,
}

/// A parsed response head borrowing from the upstream input buffer.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'h, 'b> {
    /// The status code.
    pub status: u16,
    /// The reason phrase, possibly empty.
    pub reason: &'b str,
    /// The upstream's protocol version.
    pub version: Version,
    /// All fields in the order received.
    pub headers: &'h [httparse::Header<'b>],
    /// How the body is delimited.
    pub framing: Framing,
    /// Options of the `Connection` field.
    pub connection: ConnectionOptions<'h, 'b>,
    /// Length of the head in bytes, including the blank line.
    pub head_len: usize,
    /// The upstream connection may carry another request after this body.
    pub reusable: bool,
}

impl<'h, 'b> ResponseHead<'h, 'b> {
    /// Parses a response head to a request whose method was HEAD when
    /// `head_request` is set. `Ok(None)` means more bytes are needed.
    pub fn parse(
        buf: &'b [u8],
        headers: &'h mut [httparse::Header<'b>],
        max_head_bytes: usize,
        head_request: bool,
    ) -> Result<Option<Self>, ResponseError> {
        let mut resp = httparse::Response::new(headers);
        let head_len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) if n <= max_head_bytes => n,
            Ok(httparse::Status::Partial) if buf.len() <= max_head_bytes => return Ok(None),
            Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooLarge),
            Err(_) => return Err(ResponseError::Malformed("unparsable head")),
        };
        let (Some(version), Some(status)) = (resp.version, resp.code) else {
            return Err(ResponseError::Malformed("incomplete status line"));
        };
        if !(100..=999).contains(&status) {
            return Err(ResponseError::Malformed("status code out of range"));
        }
        let headers: &'h [httparse::Header<'b>] = resp.headers;
        let version = if version == 0 {
            Version::Http10
        } else {
            Version::Http11
        };
        let connection = ConnectionOptions::from_headers(headers);

        let mut length = None;
        let (mut te, mut chunked_last) = (false, false);
        for h in headers {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = parse_content_length(h.value)
                    .ok_or(ResponseError::Malformed("invalid Content-Length"))?;
                if length.is_some_and(|prev| prev != n) {
                    return Err(ResponseError::Malformed(
                        "conflicting Content-Length fields",
                    ));
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                for coding in list_members(h.value) {
                    te = true;
                    chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                }
            }
        }
        let framing = if head_request || status < 200 || status == 204 || status == 304 {
            Framing::Empty
        } else if te {
            // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and
            // a non-chunked final coding is read until close.
            if chunked_last {
                Framing::Chunked
            } else {
                Framing::UntilClose
            }
        } else {
            match length {
                Some(0) => Framing::Empty,
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            }
        };
        let persistent = match version {
            Version::Http11 => !connection.close,
            Version::Http10 => connection.keep_alive && !connection.close,
        };
        let reusable = persistent && framing != Framing::UntilClose && !(te && length.is_some());
        Ok(Some(Self {
            status,
            reason: resp.reason.unwrap_or(""),
            version,
            headers,
            framing,
            connection,
            head_len,
            reusable,
        }))
    }
}
