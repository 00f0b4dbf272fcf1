//! The test origin: a small HTTP/1.1 server with its own parser whose
//! answers are shaped by query parameters, so tests and benchmarks can ask
//! for exactly the response they need:
//!
//! | parameter | effect |
//! | --- | --- |
//! | `size=N` | body of N bytes, at most 8 MiB (default `--body-size`) |
//! | `chunked=1` | chunked transfer coding instead of Content-Length |
//! | `cache=VALUE` | `Cache-Control: VALUE` |
//! | `type=VALUE` | `Content-Type: VALUE` (default `text/plain`) |
//! | `status=N` | status code N |
//! | `delay_ms=N` | wait N ms before answering |
//! | `close=1` | `Connection: close`, then close |
//! | `garbage=1` | answer bytes that are not HTTP |
//! | `hints=1` | a `103 Early Hints` (with a `Link` field) before the answer |
//! | `fields=N1:V1\|N2:V2` | extra response fields (percent-encoded) |
//! | `ranges=1` | honour a single `Range: bytes=A-B` with a 206 |
//!
//! `/echo` answers with the request as received (head and body), `/health`
//! with `ok`, and `/__origin/delay?ms=N` sets the latency of every later
//! answer (a fault injected into a running origin; `--health-fast` keeps
//! `/health` undelayed). `--error-every K` turns every K-th request into a 500.
//! `--decode-paths` reads paths as nginx does (escapes decoded, dots resolved).

use anyhow::Context;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Options of `bench origin`.
#[derive(clap::Args, Debug, Clone)]
pub struct OriginArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Default body size in bytes.
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    /// Latency added to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Answer `/health` at once whatever the delay: an origin that is slow
    /// for its clients but passes its health checks.
    #[arg(long)]
    health_fast: bool,
    /// Answer every K-th request with a 500 (0: never).
    #[arg(long, default_value_t = 0)]
    error_every: u64,
    /// Close keep-alive connections idle for this long, in milliseconds
    /// (0: never), as real servers do; exercises the gateway's retry.
    #[arg(long, default_value_t = 0)]
    idle_close_ms: u64,
    /// Name sent in the `X-Origin` header, to tell origins apart.
    #[arg(long, default_value = "origin")]
    name: String,
    /// Read the path as nginx does before choosing what to serve: every
    /// escape decoded (`%2F` included), `//` merged, dot segments
    /// resolved. The origin a gateway must not disagree with.
    #[arg(long)]
    decode_paths: bool,
}

/// Largest request head accepted, in bytes.
const MAX_HEAD: usize = 64 * 1024;

/// Runs the origin until killed.
pub fn run(args: OriginArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        println!("origin listening on {}", listener.local_addr()?);
        let state = Rc::new(State {
            // Up to 8 MiB: as large as the largest object a cache stores.
            body: vec![b'x'; 8 << 20],
            delay_ms: std::cell::Cell::new(args.delay_ms),
            args,
            served: std::cell::Cell::new(0),
        });
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::task::spawn_local(serve(stream, state.clone()));
        }
    })
}

struct State {
    body: Vec<u8>,
    args: OriginArgs,
    served: std::cell::Cell<u64>,
    /// Latency added to every answer, in milliseconds; starts at
    /// `--delay-ms`, changed by `GET /__origin/delay?ms=N`.
    delay_ms: std::cell::Cell<u64>,
}

/// A request as the origin understood it.
struct Request {
    method: String,
    target: String,
    keep_alive: bool,
    /// The `Range` field, lower-cased.
    range: Option<String>,
    raw: Vec<u8>,
}

async fn serve(mut stream: TcpStream, state: Rc<State>) {
    let mut buf = Vec::with_capacity(8192);
    loop {
        let idle = buf.is_empty();
        let read = read_request(&mut stream, &mut buf);
        let req = if state.args.idle_close_ms > 0 && idle {
            match tokio::time::timeout(Duration::from_millis(state.args.idle_close_ms), read).await
            {
                Ok(r) => r,
                Err(_) => return,
            }
        } else {
            read.await
        };
        let req = match req {
            Ok(Some(req)) => req,
            Ok(None) | Err(_) => return,
        };
        let n = state.served.get() + 1;
        state.served.set(n);
        let keep = match respond(&mut stream, &state, &req, n).await {
            Ok(keep) => keep,
            Err(_) => return,
        };
        if !keep {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

fn query<'a>(target: &'a str, key: &str) -> Option<&'a str> {
    let q = target.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

async fn respond(
    stream: &mut TcpStream,
    state: &State,
    req: &Request,
    n: u64,
) -> std::io::Result<bool> {
    let t = &req.target;
    if t.starts_with("/__origin/delay") {
        let ms = query(t, "ms").and_then(|v| v.parse().ok()).unwrap_or(0);
        state.delay_ms.set(ms);
        let body = format!("delay {ms} ms\n");
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(resp.as_bytes()).await?;
        return Ok(req.keep_alive);
    }
    let delay = query(t, "delay_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(state.delay_ms.get());
    let health = t.split('?').next() == Some("/health");
    if delay > 0 && !(health && state.args.health_fast) {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if query(t, "garbage").is_some() {
        stream
            .write_all(b"this is not an HTTP response\r\n\r\n")
            .await?;
        return Ok(false);
    }
    let raw_path = t.split('?').next().unwrap_or("");
    let decoded;
    let path = if state.args.decode_paths {
        decoded = resolve_path(&percent_decode(raw_path));
        decoded.as_str()
    } else {
        raw_path
    };
    let injected = state.args.error_every > 0 && n.is_multiple_of(state.args.error_every);
    let mut status: u16 = query(t, "status")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    if injected {
        status = 500;
    }
    let echo;
    let body: &[u8] = match path {
        "/health" => b"ok\n",
        "/echo" => {
            echo = req.raw.clone();
            &echo
        }
        _ if injected => b"injected error\n",
        _ => {
            let size = query(t, "size")
                .and_then(|v| v.parse().ok())
                .unwrap_or(state.args.body_size);
            &state.body[..size.min(state.body.len())]
        }
    };
    let close = !req.keep_alive || query(t, "close").is_some();
    let chunked = query(t, "chunked").is_some();
    let mut body = body;
    let mut content_range = None;
    if let (Some(_), Some(range)) = (query(t, "ranges"), &req.range) {
        let (a, b) = range
            .strip_prefix("bytes=")
            .and_then(|r| r.split_once('-'))
            .unwrap_or(("", ""));
        let len = body.len();
        if let (Ok(a), Ok(b)) = (
            a.parse::<usize>(),
            b.parse::<usize>().or(Ok::<_, ()>(len.saturating_sub(1))),
        ) {
            if a <= b && a < len {
                let b = b.min(len - 1);
                content_range = Some(format!("bytes {a}-{b}/{len}"));
                body = &body[a..=b];
                status = 206;
            }
        }
    }
    let mut head = String::new();
    if query(t, "hints").is_some() {
        head.push_str(
            "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n",
        );
    }
    let content_type = query(t, "type").map_or_else(|| "text/plain".into(), percent_decode);
    head.push_str(&format!(
        "HTTP/1.1 {status} {}\r\nX-Origin: {}\r\nContent-Type: {content_type}\r\n",
        reason(status),
        state.args.name
    ));
    if let Some(cr) = content_range {
        head.push_str(&format!("Content-Range: {cr}\r\n"));
    }
    if let Some(cc) = query(t, "cache") {
        head.push_str(&format!("Cache-Control: {}\r\n", percent_decode(cc)));
    }
    if let Some(fields) = query(t, "fields") {
        for field in percent_decode(fields)
            .split('|')
            .filter(|f| f.contains(':'))
        {
            head.push_str(field);
            head.push_str("\r\n");
        }
    }
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n");
    } else {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if req.method != "HEAD" {
        if chunked {
            for piece in body.chunks(4096) {
                out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                out.extend_from_slice(piece);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        } else {
            out.extend_from_slice(body);
        }
    }
    stream.write_all(&out).await?;
    Ok(!close)
}

/// Decodes `%XX` escapes and `+` of a query value.
/// A decoded path with `//` merged and dot segments resolved, clamped at
/// the root, as nginx reads it.
fn resolve_path(path: &str) -> String {
    let mut segs: Vec<&str> = Vec::new();
    for seg in path.split(['/', '\\']) {
        match seg {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    format!("/{}", segs.join("/"))
}

fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => match b.get(i + 1..i + 3).and_then(|h| {
                std::str::from_utf8(h)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            }) {
                Some(c) => {
                    out.push(c);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Reads one request (head and body) from the stream; `None` at a clean
/// end of the connection.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Request>> {
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("request head too large"));
        }
        if !fill(stream, buf).await? {
            return Ok(None);
        }
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| invalid("head is not UTF-8"))?
        .to_owned();
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (method, target, version) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let mut length = 0usize;
    let mut chunked = false;
    let mut conn_close = version == "HTTP/1.0";
    let mut range = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid("bad header line"));
        };
        let (name, value) = (
            name.trim().to_ascii_lowercase(),
            value.trim().to_ascii_lowercase(),
        );
        match name.as_str() {
            "content-length" => {
                length = value.parse().map_err(|_| invalid("bad content-length"))?
            }
            "transfer-encoding" => chunked = value.ends_with("chunked"),
            "connection" if value.contains("close") => conn_close = true,
            "connection" if value.contains("keep-alive") => conn_close = false,
            "range" => range = Some(value),
            _ => {}
        }
    }
    let mut raw: Vec<u8> = buf.drain(..head_end).collect();
    if chunked {
        read_chunked(stream, buf, &mut raw).await?;
    } else {
        while buf.len() < length {
            if !fill(stream, buf).await? {
                return Err(invalid("body cut short"));
            }
        }
        raw.extend(buf.drain(..length));
    }
    Ok(Some(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        keep_alive: !conn_close,
        range,
        raw,
    }))
}

/// Reads a chunked body; appends the decoded payload to `out`.
async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    loop {
        let line_end = loop {
            if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                break p;
            }
            if !fill(stream, buf).await? {
                return Err(invalid("chunked body cut short"));
            }
        };
        let line = std::str::from_utf8(&buf[..line_end]).map_err(|_| invalid("bad chunk line"))?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| invalid("bad chunk size"))?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailer section: lines until an empty one.
            loop {
                while !buf.windows(2).any(|w| w == b"\r\n") {
                    if !fill(stream, buf).await? {
                        return Err(invalid("trailers cut short"));
                    }
                }
                let p = buf.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
                buf.drain(..p + 2);
                if p == 0 {
                    return Ok(());
                }
            }
        }
        while buf.len() < size + 2 {
            if !fill(stream, buf).await? {
                return Err(invalid("chunk cut short"));
            }
        }
        out.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut tmp = [0u8; 16384];
    let n = stream.read(&mut tmp).await?;
    buf.extend_from_slice(&tmp[..n]);
    Ok(n > 0)
}

fn invalid(msg: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}
