//! Responses the gateway writes itself: errors with a short body saying
//! what went wrong, health answers, admin answers.

use bytes::{BufMut, BytesMut};
use std::fmt::Write;

/// The reason phrase for the status codes the gateway emits itself.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Appends a complete response with a body to `out`. `close` adds
/// `Connection: close`; `head_only` omits the body (HEAD requests);
/// `extra` holds more header lines, each ending in CRLF.
pub fn write_response(
    out: &mut BytesMut,
    status: u16,
    content_type: &str,
    body: &[u8],
    close: bool,
    head_only: bool,
    extra: &str,
) {
    // Writing into a BytesMut cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nServer: ultragate\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}{}\r\n",
        reason(status),
        body.len(),
        if close { "Connection: close\r\n" } else { "" },
    );
    if !head_only {
        out.put_slice(body);
    }
}

/// Appends a plain-text error response whose body says what went wrong;
/// `extra` as for [`write_response`].
pub fn write_error(
    out: &mut BytesMut,
    status: u16,
    message: &str,
    close: bool,
    head_only: bool,
    extra: &str,
) {
    let mut body = BytesMut::with_capacity(message.len() + 1);
    body.put_slice(message.as_bytes());
    body.put_u8(b'\n');
    write_response(
        out,
        status,
        "text/plain; charset=utf-8",
        &body,
        close,
        head_only,
        extra,
    );
}

/// Pre-encoded answers to the probes on the data port: no formatting and
/// no allocation when a kubelet polls.
pub mod probe {
    /// `GET /health/live`.
    pub const LIVE: &[u8] =
        b"HTTP/1.1 200 OK\r\nServer: ultragate\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nlive\n";
    /// `GET /health/ready` while ready.
    pub const READY: &[u8] =
        b"HTTP/1.1 200 OK\r\nServer: ultragate\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nready\n";
    /// `GET /health/ready` while not ready (draining or no data plane).
    pub const NOT_READY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nServer: ultragate\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nnot ready\n";

    /// The length of the head of a pre-encoded answer, for HEAD requests.
    pub fn head_len(resp: &[u8]) -> usize {
        resp.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(resp.len(), |p| p + 4)
    }
}

/// Appends the interim `100 Continue` the gateway sends for
/// `Expect: 100-continue` before it reads a request body.
pub fn write_continue(out: &mut BytesMut) {
    out.put_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
}
