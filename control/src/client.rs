//! A minimal HTTP/1.1 client for the control plane's own requests (health
//! checks, data verify): one GET per connection, parsed with the data
//! plane's response codec.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ultragate_dataplane::cache::rules::field;
use ultragate_dataplane::cache::Scheme;
use ultragate_dataplane::http::chunked::ChunkedDecoder;
use ultragate_dataplane::http::response::ResponseHead;
use ultragate_dataplane::http::{Framing, MAX_HEADERS};

/// Largest response read, in bytes.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// What a server answered.
pub struct Fetched {
    /// The status code.
    pub status: u16,
    /// The `ETag` value.
    pub etag: Option<Vec<u8>>,
    /// The `Last-Modified` value.
    pub last_modified: Option<Vec<u8>>,
    /// The body without transfer coding.
    pub body: Vec<u8>,
}

/// `GET target` with `Host: host` from `server`, told the scheme a client
/// would have come by when `proto` says; the caller bounds the time.
pub async fn get(
    server: SocketAddr,
    host: &str,
    target: &str,
    proto: Option<Scheme>,
) -> std::io::Result<Fetched> {
    let mut s = TcpStream::connect(server).await?;
    let proto = proto.map_or(String::new(), |p| {
        format!("X-Forwarded-Proto: {}\r\n", p.as_str())
    });
    let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{proto}User-Agent: ultragate-control\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE {
            return Err(invalid("response too large"));
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let head = ResponseHead::parse(&buf, &mut headers, 64 * 1024, false)
        .map_err(|_| invalid("invalid response"))?
        .ok_or_else(|| invalid("truncated response"))?;
    let rest = &buf[head.head_len..];
    let body = match head.framing {
        Framing::Empty => Vec::new(),
        Framing::Length(n) => rest
            .get(..n as usize)
            .ok_or_else(|| invalid("truncated body"))?
            .to_vec(),
        Framing::UntilClose => rest.to_vec(),
        Framing::Chunked => {
            let mut body = Vec::new();
            let mut d = ChunkedDecoder::new(64 * 1024);
            d.feed(rest, |b| body.extend_from_slice(b))
                .map_err(|_| invalid("bad chunked body"))?;
            body
        }
    };
    let value = |name| field(head.headers, name).map(<[u8]>::to_vec);
    Ok(Fetched {
        status: head.status,
        etag: value("etag"),
        last_modified: value("last-modified"),
        body,
    })
}

fn invalid(msg: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}
