//! The heads the proxy writes: a client request re-encoded for the
//! upstream, and an upstream response re-encoded for the client. Both drop
//! hop-by-hop fields, add `Via`, and set framing the receiver understands.

use super::forward::ForwardRules;
use crate::cache::entry::Meta;
use crate::cache::verdict::Forwarded;
use crate::cache::{rules, Scheme};
use crate::http::request::{Method, RequestHead};
use crate::http::response::ResponseHead;
use crate::http::{decimal, trim, Framing, Version};
use bytes::{BufMut, BytesMut};
use std::fmt::Write;
use std::net::IpAddr;

/// The pseudonym this gateway adds to `Via`.
const VIA_NAME: &str = "ultragate";

fn via_version(v: Version) -> &'static str {
    match v {
        Version::Http10 => "1.0",
        Version::Http11 => "1.1",
    }
}

fn put_field(out: &mut BytesMut, name: &str, value: &[u8]) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Appends to `out` a list field merging every existing value of `name`
/// with `extra` (`Via`, `X-Forwarded-For`).
fn put_appended(
    out: &mut BytesMut,
    headers: &[httparse::Header<'_>],
    name: &str,
    extra: std::fmt::Arguments<'_>,
) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
        let v = trim(h.value);
        if !v.is_empty() {
            out.put_slice(v);
            out.put_slice(b", ");
        }
    }
    let _ = out.write_fmt(extra);
    out.put_slice(b"\r\n");
}

/// Who sent a request, as the upstream is told.
#[derive(Debug, Clone, Copy)]
pub struct ClientSide<'a> {
    /// The peer's address (`X-Forwarded-For`).
    pub peer: IpAddr,
    /// How it came (`X-Forwarded-Proto`).
    pub scheme: Scheme,
    /// The peer is a trusted proxy: its forwarding fields are kept.
    pub trusted: bool,
    /// The forwarding rules.
    pub rules: &'a ForwardRules,
}

/// Encodes the request to send upstream: HTTP/1.1, the normalised target,
/// the client's fields minus hop-by-hop ones, `Host` the request's host
/// (or `default_host` for an HTTP/1.0 client that sent none), `Via`
/// appended, the forwarding fields (see [`forward_fields`]), and the body
/// framing restated. With `whole`, `Range` and `If-Range` are left out:
/// the cache fetches the whole object to answer a range from.
///
/// With `validators` (a stored response's `ETag` and `Last-Modified`), the
/// request becomes a conditional one for revalidation, replacing any
/// condition the client sent.
pub fn upstream_request(
    out: &mut BytesMut,
    head: &RequestHead<'_, '_>,
    client: &ClientSide<'_>,
    default_host: &str,
    validators: Option<&Meta>,
    whole: bool,
    (extra, replaced): (&[u8], &[&str]),
) {
    out.put_slice(head.method_name.as_bytes());
    out.put_u8(b' ');
    out.put_slice(head.target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    // The host the request was routed and keyed by: an absolute-form
    // target's authority wins over the client's `Host` (RFC 9112 §3.2.2).
    let host = if head.host.is_empty() {
        default_host.as_bytes()
    } else {
        head.host
    };
    let mut has_host = false;
    for h in head.headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            put_field(out, name, host);
            has_host = true;
            continue;
        }
        if head.connection.is_hop_by_hop(name)
            || name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("via")
            || name.eq_ignore_ascii_case("x-forwarded-for")
            || name.eq_ignore_ascii_case("x-forwarded-proto")
            || (!client.trusted && client.rules.strips(name))
            || (client.rules.forwarded && name.eq_ignore_ascii_case("forwarded"))
            || (validators.is_some()
                && (name.eq_ignore_ascii_case("if-none-match")
                    || name.eq_ignore_ascii_case("if-modified-since")))
            || (whole
                && (name.eq_ignore_ascii_case("range") || name.eq_ignore_ascii_case("if-range")))
            || replaced.iter().any(|r| name.eq_ignore_ascii_case(r))
            || !lone_or_absent(head.headers, name)
        {
            continue;
        }
        put_field(out, name, h.value);
    }
    if !has_host {
        put_field(out, "Host", host);
    }
    if let Some(meta) = validators {
        if let Some(etag) = &meta.etag {
            put_field(out, "If-None-Match", etag);
        }
        if let Some(lm) = &meta.last_modified {
            put_field(out, "If-Modified-Since", lm);
        }
    }
    put_appended(
        out,
        head.headers,
        "Via",
        format_args!("{} {VIA_NAME}", via_version(head.version)),
    );
    forward_fields(out, head, client, host);
    out.put_slice(extra);
    match head.framing {
        Framing::Length(n) => {
            content_length(out, n);
        }
        Framing::Chunked => out.put_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Empty | Framing::UntilClose => {
            if matches!(head.method, Method::Post | Method::Put | Method::Patch) {
                out.put_slice(b"Content-Length: 0\r\n");
            }
        }
    }
    out.put_slice(b"\r\n");
}

/// `X-Request-Id` and `traceparent` identify one request: sent on only
/// when the client sent exactly one, and a valid one (the access log,
/// when on, makes one up otherwise).
fn lone_or_absent(headers: &[httparse::Header<'_>], name: &str) -> bool {
    if name.eq_ignore_ascii_case("x-request-id") {
        return lone(headers, name)
            .and_then(crate::access::valid_request_id)
            .is_some();
    }
    if name.eq_ignore_ascii_case("traceparent") {
        return lone(headers, name)
            .and_then(crate::access::valid_traceparent)
            .is_some();
    }
    true
}

/// The value of `name` when the request has exactly one such field.
pub fn lone<'b>(headers: &[httparse::Header<'b>], name: &str) -> Option<&'b [u8]> {
    let mut all = headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
    match (all.next(), all.next()) {
        (Some(h), None) => Some(trim(h.value)),
        _ => None,
    }
}

/// The forwarding fields: `X-Forwarded-For` the peer (appended to a
/// trusted proxy's chain, replacing an untrusted client's, which an
/// origin reading its first entry would believe), `X-Forwarded-Proto`
/// and `X-Forwarded-Host` as the gateway saw them (a trusted proxy's
/// kept), and `Forwarded` (RFC 7239) when configured.
fn forward_fields(
    out: &mut BytesMut,
    head: &RequestHead<'_, '_>,
    client: &ClientSide<'_>,
    host: &[u8],
) {
    let peer = client.peer.to_canonical();
    if client.trusted {
        put_appended(out, head.headers, "X-Forwarded-For", format_args!("{peer}"));
    } else {
        let _ = write!(out, "X-Forwarded-For: {peer}\r\n");
    }
    let kept = |name| client.trusted && rules::field(head.headers, name).is_some();
    match rules::field(head.headers, "x-forwarded-proto") {
        Some(v) if client.trusted => put_field(out, "X-Forwarded-Proto", v),
        _ => put_field(out, "X-Forwarded-Proto", client.scheme.as_str().as_bytes()),
    }
    if !kept("x-forwarded-host") {
        put_field(out, "X-Forwarded-Host", host);
    }
    if client.rules.forwarded {
        let node = match peer {
            IpAddr::V4(a) => format!("{a}"),
            IpAddr::V6(a) => format!("\"[{a}]\""),
        };
        // A host that is not a token is quoted (RFC 7239 §4).
        let host = String::from_utf8_lossy(host);
        put_appended(
            out,
            if client.trusted { head.headers } else { &[] },
            "Forwarded",
            format_args!(
                "for={node};proto={};host=\"{host}\"",
                client.scheme.as_str()
            ),
        );
    }
}

/// How the response body is passed to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFraming {
    /// Bytes are relayed as received (length-delimited, chunked to an
    /// HTTP/1.1 client, or no body).
    Relay,
    /// Chunked from upstream to an HTTP/1.0 client: payload only, and the
    /// connection closes to mark the end.
    Dechunk,
    /// No length known: relayed, and the connection closes to mark the end.
    UntilClose,
}

/// Decides how to frame a response for a client of `client_version`.
pub fn client_framing(resp: &ResponseHead<'_, '_>, client_version: Version) -> ClientFraming {
    match resp.framing {
        Framing::Chunked if client_version == Version::Http10 => ClientFraming::Dechunk,
        Framing::UntilClose => ClientFraming::UntilClose,
        _ => ClientFraming::Relay,
    }
}

/// Encodes an interim (1xx) response for the client: its status line and
/// end-to-end fields, as the upstream sent them.
pub fn interim_response(out: &mut BytesMut, resp: &ResponseHead<'_, '_>) {
    status_line(out, resp);
    for h in resp.headers {
        if !resp.connection.is_hop_by_hop(h.name) {
            put_field(out, h.name, h.value);
        }
    }
    out.put_slice(b"\r\n");
}

/// Encodes the status line and the end-to-end fields of a response, with
/// `Via` appended: the part of the head a cache stores. Framing,
/// connection, `Age` and `X-Cache` fields are left out; a `Content-Length`
/// is kept only for `keep_length` (responses without a body, e.g. to HEAD).
pub fn response_fields(out: &mut BytesMut, resp: &ResponseHead<'_, '_>, keep_length: bool) {
    status_line(out, resp);
    let mut length_kept = false;
    for h in resp.headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            // Kept once, as one number: an upstream may send the same
            // length twice or as a list (RFC 9110 §8.6), a downstream
            // parser may refuse either.
            if keep_length && !length_kept {
                if let Some(n) = crate::http::parse_content_length(h.value) {
                    content_length(out, n);
                    length_kept = true;
                }
            }
            continue;
        }
        if resp.connection.is_hop_by_hop(name)
            || name.eq_ignore_ascii_case("via")
            || name.eq_ignore_ascii_case("age")
            || name.eq_ignore_ascii_case("x-cache")
        {
            continue;
        }
        put_field(out, name, h.value);
    }
    put_appended(
        out,
        resp.headers,
        "Via",
        format_args!("{} {VIA_NAME}", via_version(resp.version)),
    );
}

/// Encodes the response head for the client. `close` says whether the
/// client connection ends after this response; `verdict` is the cache's
/// part when a cache is configured: why the request was forwarded, whether
/// the response is being stored, and if not, why not.
pub fn client_response(
    out: &mut BytesMut,
    resp: &ResponseHead<'_, '_>,
    framing: ClientFraming,
    client_version: Version,
    close: bool,
    verdict: Option<(Forwarded, bool, Option<&str>)>,
    extra: &[u8],
) {
    response_fields(out, resp, resp.framing == Framing::Empty);
    if let Some(age) = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("age"))
    {
        put_field(out, "Age", age.value);
    }
    if let Some((fwd, stored, detail)) = verdict {
        fwd.write(out, Some(resp.status), stored, detail);
    }
    match (resp.framing, framing) {
        (Framing::Length(n), _) => {
            content_length(out, n);
        }
        (Framing::Chunked, ClientFraming::Relay) => {
            out.put_slice(b"Transfer-Encoding: chunked\r\n")
        }
        _ => {}
    }
    if close {
        out.put_slice(b"Connection: close\r\n");
    } else if client_version == Version::Http10 {
        out.put_slice(b"Connection: keep-alive\r\n");
    }
    out.put_slice(extra);
    out.put_slice(b"\r\n");
}

/// `Content-Length: N`, written by the one decimal writer.
fn content_length(out: &mut BytesMut, n: u64) {
    out.put_slice(b"Content-Length: ");
    out.put_slice(decimal::digits(n, &mut [0; 20]));
    out.put_slice(b"\r\n");
}

/// The status line of a relayed response: the upstream's status and
/// reason phrase, in HTTP/1.1.
fn status_line(out: &mut BytesMut, resp: &ResponseHead<'_, '_>) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(decimal::digits(u64::from(resp.status), &mut [0; 20]));
    out.put_slice(b" ");
    out.put_slice(resp.reason.as_bytes());
    out.put_slice(b"\r\n");
}
