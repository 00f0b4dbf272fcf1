//! Checkers the fuzz targets use to judge the engine's output, written
//! independently of the gateway's own codec (which they must be able to
//! catch out): a scanner of HTTP/1.1 request streams and one of response
//! streams. Both are strict and small; neither uses httparse.

/// What a request stream holds, as far as it can be read.
#[derive(Debug, Default)]
pub struct Requests {
    /// One entry per request head found (complete or still partial):
    /// whether its method is HEAD.
    pub head_methods: Vec<bool>,
    /// Complete requests (head and body).
    pub complete: usize,
    /// Bytes of the complete requests: a later scan may resume there.
    pub consumed: usize,
    /// The stream could be read to its end (a partial last request is
    /// fine); false when a part of it is not HTTP this scanner accepts.
    pub readable: bool,
    /// The stream ends inside a request.
    pub partial: bool,
}

/// A `tchar` (RFC 9110 §5.6.2).
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Where a head ends (after its empty line). `strict` heads end lines
/// with CRLF only; others may end a line with a bare LF too, which RFC
/// 9112 §2.2 lets a recipient accept (the gateway does, in requests).
fn head_end(b: &[u8], strict: bool) -> Option<usize> {
    if strict {
        return find(b, b"\r\n\r\n").map(|p| p + 4);
    }
    let mut start = 0;
    while let Some(nl) = b[start..].iter().position(|&c| c == b'\n') {
        let line = &b[start..start + nl];
        start += nl + 1;
        if line.is_empty() || line == b"\r" {
            return Some(start);
        }
    }
    None
}

/// A head's fields as (lower-case name, value) pairs; `None` when a line
/// is not `name: value` (or, when `strict`, does not end with CRLF).
fn fields(lines: &[u8], strict: bool) -> Option<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = match line.strip_suffix(b"\r") {
            Some(l) => l,
            None if strict => return None,
            None => line,
        };
        if line.is_empty() {
            continue;
        }
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| tchar(b)) {
            return None;
        }
        if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return None;
        }
        let name = String::from_utf8(name.to_ascii_lowercase()).ok()?;
        let value = value
            .iter()
            .copied()
            .skip_while(|b| *b == b' ' || *b == b'\t')
            .collect::<Vec<u8>>();
        out.push((name, value));
    }
    Some(out)
}

/// How a message body is delimited.
#[derive(Debug, PartialEq, Eq)]
enum Body {
    Length(usize),
    Chunked,
    UntilClose,
}

/// The framing fields of a head: at most one length, not with chunked.
fn framing(fields: &[(String, Vec<u8>)]) -> Result<Option<Body>, String> {
    let lengths: Vec<&Vec<u8>> = fields
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v)
        .collect();
    let te: Vec<&Vec<u8>> = fields
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .map(|(_, v)| v)
        .collect();
    if !lengths.is_empty() && !te.is_empty() {
        return Err("both Content-Length and Transfer-Encoding".into());
    }
    if lengths.len() > 1 {
        return Err("more than one Content-Length".into());
    }
    if let Some(v) = lengths.first() {
        let v = std::str::from_utf8(v).map_err(|_| "Content-Length not ASCII")?;
        let n: usize = v
            .trim_end()
            .parse()
            .map_err(|_| format!("bad Content-Length {v:?}"))?;
        return Ok(Some(Body::Length(n)));
    }
    if let Some(v) = te.last() {
        let last = v.rsplit(|&b| b == b',').next().unwrap_or_default();
        let last: Vec<u8> = last
            .iter()
            .copied()
            .filter(|b| *b != b' ' && *b != b'\t')
            .collect();
        return Ok(Some(if last.eq_ignore_ascii_case(b"chunked") {
            Body::Chunked
        } else {
            Body::UntilClose
        }));
    }
    Ok(None)
}

/// The length of a complete chunked body at the start of `b`; `Ok(None)`
/// when more bytes are needed.
fn chunked_len(b: &[u8]) -> Result<Option<usize>, String> {
    let mut i = 0;
    loop {
        let Some(eol) = find(&b[i..], b"\r\n") else {
            return Ok(None);
        };
        let line = &b[i..i + eol];
        let size_end = line
            .iter()
            .position(|&c| !c.is_ascii_hexdigit())
            .unwrap_or(line.len());
        if size_end == 0 || size_end > 16 {
            return Err(format!("bad chunk size line {line:?}"));
        }
        let size = usize::from_str_radix(std::str::from_utf8(&line[..size_end]).unwrap_or("x"), 16)
            .map_err(|_| "chunk size")?;
        i += eol + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = find(&b[i..], b"\r\n") else {
                    return Ok(None);
                };
                if eol == 0 {
                    return Ok(Some(i + 2));
                }
                fields(&b[i..i + eol + 2], true).ok_or("bad trailer field")?;
                i += eol + 2;
            }
        }
        if b.len() < i + size + 2 {
            return Ok(None);
        }
        if &b[i + size..i + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        i += size + 2;
    }
}

/// Reads a stream of requests: as a client may send them (`strict`
/// false: bare LF line ends accepted), or as the gateway must send them
/// (`strict`: CRLF only).
pub fn scan_requests(mut b: &[u8], strict: bool) -> Requests {
    let mut r = Requests {
        readable: true,
        ..Requests::default()
    };
    while !b.is_empty() {
        let Some(body_start) = head_end(b, strict) else {
            r.head_methods.push(b.starts_with(b"HEAD "));
            r.partial = true;
            return r;
        };
        let head = &b[..body_start];
        let line_end = head.iter().position(|&c| c == b'\n').unwrap_or(head.len());
        let line = head[..line_end]
            .strip_suffix(b"\r")
            .unwrap_or(&head[..line_end]);
        let mut parts = line.split(|&c| c == b' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            r.readable = false;
            return r;
        };
        if method.is_empty()
            || !method.iter().all(|&c| tchar(c))
            || target.is_empty()
            || !(version == b"HTTP/1.1" || version == b"HTTP/1.0")
        {
            r.readable = false;
            return r;
        }
        r.head_methods.push(method == b"HEAD");
        let Some(fields) = fields(&head[line_end + 1..], strict) else {
            r.readable = false;
            return r;
        };
        let len = match framing(&fields) {
            Ok(None) => Some(0),
            Ok(Some(Body::Length(n))) => (b.len() >= body_start + n).then_some(n),
            Ok(Some(Body::Chunked)) => match chunked_len(&b[body_start..]) {
                Ok(n) => n,
                Err(_) => {
                    r.readable = false;
                    return r;
                }
            },
            Ok(Some(Body::UntilClose)) | Err(_) => {
                r.readable = false;
                return r;
            }
        };
        let Some(len) = len else {
            r.partial = true;
            return r;
        };
        r.complete += 1;
        r.consumed += body_start + len;
        b = &b[body_start + len..];
    }
    r
}

/// The final responses read from a response stream.
#[derive(Debug, Default)]
pub struct Responses {
    /// Status codes of the final (non-1xx) responses, in order.
    pub statuses: Vec<u16>,
    /// The last one said `Connection: close` or ends with the connection.
    pub last_closes: bool,
    /// The stream ends inside a response.
    pub partial: bool,
    /// Complete final responses.
    pub complete: usize,
    /// Bytes of the complete responses (and interim ones after them): a
    /// later scan may resume there.
    pub consumed: usize,
}

/// Reads a stream of responses to requests whose methods were HEAD as
/// `head_methods` says (requests past its end count as not HEAD). An
/// error says how the stream is not well-framed HTTP/1.1.
pub fn scan_responses(b: &[u8], head_methods: &[bool]) -> Result<Responses, String> {
    let mut r = Responses::default();
    while r.consumed < b.len() {
        let b = &b[r.consumed..];
        if r.last_closes {
            return Err("bytes after a response that closes".into());
        }
        let Some(end) = find(b, b"\r\n\r\n") else {
            let prefix = &b"HTTP/1.1 "[..b.len().min(9)];
            if !b.starts_with(prefix) {
                return Err(format!(
                    "not a status line: {:?}",
                    String::from_utf8_lossy(b)
                ));
            }
            r.partial = true;
            return Ok(r);
        };
        let head = &b[..end + 2];
        let line_end = find(head, b"\r\n").unwrap_or(head.len());
        let line = &head[..line_end];
        if line.len() < 12
            || !line.starts_with(b"HTTP/1.1 ")
            || !line[9..12].iter().all(u8::is_ascii_digit)
            || (line.len() > 12 && line[12] != b' ')
        {
            return Err(format!(
                "bad status line {:?}",
                String::from_utf8_lossy(line)
            ));
        }
        let status: u16 = std::str::from_utf8(&line[9..12])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("status")?;
        let fields = fields(&head[line_end + 2..], true)
            .ok_or("a field line is not `name: value` + CRLF")?;
        let body_start = end + 4;
        if (100..200).contains(&status) {
            if status == 101 {
                return Err("101 relayed".into());
            }
            r.consumed += body_start;
            continue;
        }
        let head_request = head_methods.get(r.statuses.len()).copied().unwrap_or(false);
        let close = fields
            .iter()
            .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case(b"close"));
        r.statuses.push(status);
        let framing = framing(&fields)?;
        if matches!(status, 204 | 304) && matches!(framing, Some(Body::Chunked)) {
            return Err(format!("{status} with Transfer-Encoding"));
        }
        let len = if head_request || matches!(status, 204 | 304) {
            Some(0)
        } else {
            match framing {
                Some(Body::Length(n)) => (b.len() >= body_start + n).then_some(n),
                Some(Body::Chunked) => chunked_len(&b[body_start..])?,
                Some(Body::UntilClose) | None => {
                    if !close {
                        return Err("a body ended by the close without Connection: close".into());
                    }
                    // Complete only at the close: it stays partial.
                    r.last_closes = true;
                    r.partial = true;
                    return Ok(r);
                }
            }
        };
        let Some(len) = len else {
            r.partial = true;
            r.last_closes = close;
            return Ok(r);
        };
        r.last_closes = close;
        r.complete += 1;
        r.consumed += body_start + len;
    }
    Ok(r)
}
