//! Data verify: each cached response is fetched again from the origin and
//! compared (status, `ETag`, `Last-Modified`, body checksum); the ones
//! that changed are evicted. A plain HTTP/1.1 client over the dataplane's
//! own response parser, one request per connection.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ultragate_dataplane::cache::rules::field;
use ultragate_dataplane::cache::Cache;
use ultragate_dataplane::http::chunked::ChunkedDecoder;
use ultragate_dataplane::http::response::ResponseHead;
use ultragate_dataplane::http::{Framing, MAX_HEADERS};

/// Time allowed for one origin fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest origin response read, in bytes.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// Counts of one data verify pass.
#[derive(Debug, Default, Clone, Copy)]
pub struct DataVerify {
    /// Entries compared with the origin.
    pub checked: u64,
    /// Entries whose origin copy differs; evicted.
    pub changed: u64,
    /// Variants (keyed by request fields the check cannot reproduce).
    pub skipped: u64,
    /// Entries the origin did not answer for; kept.
    pub errors: u64,
}

/// What the origin answered.
struct Fetched {
    status: u16,
    etag: Option<Vec<u8>>,
    last_modified: Option<Vec<u8>>,
    body: Vec<u8>,
}

/// Compares every cached response with the origin's current one.
pub async fn data_verify(cache: &Cache, origins: &[SocketAddr]) -> DataVerify {
    let mut report = DataVerify::default();
    for (i, e) in cache.entries().into_iter().enumerate() {
        if e.meta.vary_id != 0 || origins.is_empty() {
            report.skipped += 1;
            continue;
        }
        let Some(sep) = e
            .key
            .iter()
            .position(|&b| b == ultragate_dataplane::cache::KEY_SEPARATOR)
        else {
            report.skipped += 1;
            continue;
        };
        let (host, target) = (
            String::from_utf8_lossy(&e.key[..sep]),
            String::from_utf8_lossy(&e.key[sep + 1..]),
        );
        let origin = origins[i % origins.len()];
        match tokio::time::timeout(FETCH_TIMEOUT, fetch(origin, &host, &target)).await {
            Ok(Ok(f)) => {
                report.checked += 1;
                let differs = f.status != e.meta.status
                    || (e.meta.etag.is_some() && f.etag.as_deref() != e.meta.etag.as_deref())
                    || (e.meta.last_modified.is_some()
                        && f.last_modified.as_deref() != e.meta.last_modified.as_deref())
                    || crc32c::crc32c(&f.body) != crc32c::crc32c(&e.body);
                if differs {
                    report.changed += 1;
                    cache.remove_entry(&e);
                }
            }
            _ => report.errors += 1,
        }
    }
    report
}

async fn fetch(origin: SocketAddr, host: &str, target: &str) -> std::io::Result<Fetched> {
    let mut s = TcpStream::connect(origin).await?;
    let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ultragate-data-verify\r\nConnection: close\r\n\r\n");
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
            return Err(invalid("origin response too large"));
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let head = ResponseHead::parse(&buf, &mut headers, 64 * 1024, false)
        .map_err(|_| invalid("invalid origin response"))?
        .ok_or_else(|| invalid("truncated origin response"))?;
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
