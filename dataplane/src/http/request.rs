//! Request heads: `RequestHead::parse` turns the bytes a client sent into a
//! typed head, or into the error status the client must get.

use super::fields::ConnectionOptions;
use super::{list_members, parse_content_length, trim, Framing, Version};
use thiserror::Error;

/// Size limits applied while parsing a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Largest request head (request line and fields), in bytes.
    pub max_header_bytes: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: u64,
}

/// The request methods the gateway knows; any other valid token is an
/// extension method ([`Method::Other`]), forwarded as sent and treated as
/// unsafe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `PATCH`
    Patch,
    /// `OPTIONS`
    Options,
    /// `TRACE`
    Trace,
    /// An extension method (its token is [`RequestHead::method_name`]).
    Other,
}

impl Method {
    /// The method of a token (methods are case-sensitive).
    fn from_token(token: &str) -> Self {
        match token {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "DELETE" => Self::Delete,
            "PATCH" => Self::Patch,
            "OPTIONS" => Self::Options,
            "TRACE" => Self::Trace,
            _ => Self::Other,
        }
    }

    /// The method's token for the admin router; `OTHER` for an extension
    /// method, which no admin endpoint takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Patch => "PATCH",
            Self::Options => "OPTIONS",
            Self::Trace => "TRACE",
            Self::Other => "OTHER",
        }
    }

    /// Idempotent methods (RFC 9110 §9.2.2) may be sent again after a
    /// connection failed before any response byte arrived; an extension
    /// method is not assumed to be.
    pub fn is_idempotent(self) -> bool {
        !matches!(self, Self::Post | Self::Patch | Self::Other)
    }

    /// Safe methods (RFC 9110 §9.2.1) leave the target as it was; a
    /// response to any other (extension methods included) invalidates
    /// what the cache holds for it (RFC 9111 §4.4).
    pub fn is_safe(self) -> bool {
        matches!(self, Self::Get | Self::Head | Self::Options | Self::Trace)
    }
}

/// Why a request was refused; each maps to the status the client gets.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// Syntax or framing the gateway cannot trust: 400 and close.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The head exceeds the configured size or field count: 431.
    #[error("request header fields too large")]
    HeadersTooLarge,
    /// The declared or received body exceeds the limit: 413.
    #[error("request body too large")]
    BodyTooLarge,
    /// A method or transfer coding the gateway does not support: 501.
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    /// An `Expect` value other than `100-continue`: 417.
    #[error("unsupported expectation")]
    ExpectationFailed,
}

impl RequestError {
    /// The HTTP status code that answers this error.
    pub fn status(self) -> u16 {
        match self {
            Self::Malformed(_) => 400,
            Self::HeadersTooLarge => 431,
            Self::BodyTooLarge => 413,
            Self::NotImplemented(_) => 501,
            Self::ExpectationFailed => 417,
        }
    }
}

/// A parsed request head borrowing from the connection's input buffer.
#[derive(Debug)]
pub struct RequestHead<'h, 'b> {
    /// The request method.
    pub method: Method,
    /// The method's token as sent (forwarded as it is).
    pub method_name: &'b str,
    /// The request target in origin-form (`/path?query`; an
    /// absolute-form target's path, RFC 9112 §3.2.2) or `*`.
    pub target: &'b str,
    /// The host the request is for: an absolute-form target's authority
    /// (which overrides the `Host` field), else the `Host` field, else
    /// empty. Checked to be a host and optional port, nothing else.
    pub host: &'b [u8],
    /// The client's protocol version.
    pub version: Version,
    /// All fields in the order received.
    pub headers: &'h [httparse::Header<'b>],
    /// How the body is delimited.
    pub framing: Framing,
    /// Options of the `Connection` field.
    pub connection: ConnectionOptions<'h, 'b>,
    /// The client sent `Expect: 100-continue`.
    pub expect_continue: bool,
    /// Length of the head in bytes, including the blank line.
    pub head_len: usize,
}

impl<'h, 'b> RequestHead<'h, 'b> {
    /// Parses a request head from the start of `buf`.
    ///
    /// `Ok(None)` means the head is not complete yet. `headers` is scratch
    /// space for the fields; [`super::MAX_HEADERS`] entries is the usual size.
    pub fn parse(
        buf: &'b [u8],
        headers: &'h mut [httparse::Header<'b>],
        limits: &RequestLimits,
    ) -> Result<Option<Self>, RequestError> {
        let mut req = httparse::Request::new(headers);
        let head_len = match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) if n <= limits.max_header_bytes => n,
            Ok(httparse::Status::Partial) if buf.len() <= limits.max_header_bytes => {
                return Ok(None)
            }
            Ok(_) | Err(httparse::Error::TooManyHeaders) => {
                return Err(RequestError::HeadersTooLarge)
            }
            Err(e) => return Err(RequestError::Malformed(parse_error_reason(e))),
        };
        let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
        else {
            return Err(RequestError::Malformed("incomplete request line"));
        };
        let headers: &'h [httparse::Header<'b>] = req.headers;
        let version = if version == 0 {
            Version::Http10
        } else {
            Version::Http11
        };
        // httparse accepts only a token here.
        let method_name = method;
        if method_name == "CONNECT" {
            return Err(RequestError::NotImplemented(
                "CONNECT: the gateway does not open tunnels",
            ));
        }
        let method = Method::from_token(method_name);
        let (authority, target) = split_target(method, target)?;
        let framing = request_framing(headers, version, limits)?;
        let mut hosts = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("host"));
        let host = match (hosts.next(), hosts.next()) {
            (_, Some(_)) => return Err(RequestError::Malformed("more than one Host field")),
            (None, None) if version == Version::Http11 => {
                return Err(RequestError::Malformed("missing Host field"))
            }
            (field, _) => field.map_or(&[][..], |h| trim(h.value)),
        };
        let host = authority.map_or(host, str::as_bytes);
        if !is_host(host) {
            return Err(RequestError::Malformed("invalid Host"));
        }
        let connection = ConnectionOptions::from_headers(headers);
        // Only a Connection that names fields can name a protected one.
        if connection.names_fields && connection.lists_protected() {
            return Err(RequestError::Malformed(
                "Connection names a field the gateway relies on",
            ));
        }
        let mut expect_continue = false;
        for h in headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("expect"))
        {
            if !trim(h.value).eq_ignore_ascii_case(b"100-continue") {
                return Err(RequestError::ExpectationFailed);
            }
            expect_continue = version == Version::Http11;
        }
        Ok(Some(Self {
            method,
            method_name,
            target,
            host,
            version,
            headers,
            framing,
            connection,
            expect_continue,
            head_len,
        }))
    }

    /// Whether the client asked for (or by default gets) a persistent
    /// connection.
    pub fn keep_alive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.connection.close,
            Version::Http10 => self.connection.keep_alive && !self.connection.close,
        }
    }
}

fn parse_error_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header field name",
        httparse::Error::HeaderValue => "invalid header field value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in request line",
        httparse::Error::Version => "unsupported HTTP version",
        httparse::Error::TooManyHeaders => "too many header fields",
    }
}

/// The authority of an absolute-form target (none for the other forms)
/// and the target in origin-form: a path, a `?query` (normalised to
/// `/?query` later) or `*`.
fn split_target(method: Method, target: &str) -> Result<(Option<&str>, &str), RequestError> {
    // Compared as bytes: the target is peer-controlled UTF-8, and a `str`
    // cut inside a multi-byte character panics.
    let t = target.as_bytes();
    let scheme = |s: &[u8]| t.len() > s.len() && t[..s.len()].eq_ignore_ascii_case(s);
    let rest = if scheme(b"http://") {
        target.get(7..)
    } else if scheme(b"https://") {
        target.get(8..)
    } else {
        None
    };
    if let Some(rest) = rest {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        // userinfo is deprecated and an error to a recipient (RFC 9110
        // §4.2.4); an empty authority is invalid for http(s).
        if authority.is_empty() || authority.contains('@') {
            return Err(RequestError::Malformed("invalid authority in the target"));
        }
        let path = if path.is_empty() { "/" } else { path };
        return Ok((Some(authority), path));
    }
    // Asterisk-form: OPTIONS (RFC 9112 §3.2.4), and extension methods that
    // use it (SSDP's `M-SEARCH *`).
    let asterisk = target == "*" && matches!(method, Method::Options | Method::Other);
    if target.starts_with('/') || asterisk {
        Ok((None, target))
    } else {
        Err(RequestError::Malformed("invalid request target"))
    }
}

/// RFC 3986 §3.2.2 `host [ ":" port ]`, strictly: a registered name of
/// letters, digits, `-`, `.` and `_` without an empty label, or a
/// bracketed IPv6 literal; a port of up to five digits. Empty is allowed
/// (RFC 9110 §7.2: a target without an authority). Anything else could
/// key or route one request two ways.
fn is_host(host: &[u8]) -> bool {
    let (name, port) = match host.strip_prefix(b"[") {
        Some(rest) => {
            let Some(close) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let (literal, after) = rest.split_at(close);
            let ok = !literal.is_empty()
                && literal
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            if !ok {
                return false;
            }
            match after.get(1..) {
                Some([]) | None => return true,
                Some([b':', port @ ..]) => (&b"x"[..], Some(port)),
                Some(_) => return false,
            }
        }
        None => match host.iter().position(|&b| b == b':') {
            Some(i) => (&host[..i], host.get(i + 1..)),
            None => (host, None),
        },
    };
    let name_ok = name
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && !name.starts_with(b".")
        && !name.windows(2).any(|w| w == b"..");
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit));
    name_ok && port_ok
}

/// Decides the body framing of a request, refusing every ambiguous form
/// that could smuggle a second request past a peer (RFC 9112 §6.1, §6.3).
fn request_framing(
    headers: &[httparse::Header<'_>],
    version: Version,
    limits: &RequestLimits,
) -> Result<Framing, RequestError> {
    let mut length: Option<u64> = None;
    let mut te_fields = 0;
    let (mut chunked, mut chunked_last, mut other) = (0, false, false);
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value)
                .ok_or(RequestError::Malformed("invalid Content-Length"))?;
            if length.is_some_and(|prev| prev != n) {
                return Err(RequestError::Malformed("conflicting Content-Length fields"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te_fields += 1;
            for coding in list_members(h.value) {
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked += 1;
                    chunked_last = true;
                } else {
                    other = true;
                    chunked_last = false;
                }
            }
        }
    }
    if te_fields == 0 {
        return match length {
            Some(n) if n > limits.max_body_bytes => Err(RequestError::BodyTooLarge),
            Some(0) | None => Ok(Framing::Empty),
            Some(n) => Ok(Framing::Length(n)),
        };
    }
    if version == Version::Http10 {
        return Err(RequestError::Malformed(
            "Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    if length.is_some() {
        return Err(RequestError::Malformed(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if !chunked_last || chunked > 1 {
        return Err(RequestError::Malformed(
            "chunked is not the final transfer coding, once",
        ));
    }
    if other {
        return Err(RequestError::NotImplemented("transfer coding"));
    }
    Ok(Framing::Chunked)
}
