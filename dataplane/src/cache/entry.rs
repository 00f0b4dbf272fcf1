//! A stored response: pre-encoded head and body as `Bytes`, so a hit is
//! one lookup, a copy of the head into the send queue and the body queued
//! as the cache's own memory, plus the freshness facts and the checksum
//! that `verify` checks.

use super::verdict::Served;
use crate::http::output::Output;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Instant, SystemTime};

/// Fixed memory an entry costs beyond its bytes (entry, map node, queue
/// slot), counted against the byte budget.
pub const ENTRY_OVERHEAD: u64 = 464;

/// Freshness and validation facts of a stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The status code.
    pub status: u16,
    /// Wall-clock time of storing (kept across snapshots).
    pub stored_wall: SystemTime,
    /// Age when stored, in seconds.
    pub initial_age: u64,
    /// Freshness lifetime, in seconds.
    pub lifetime: u64,
    /// Stale copies must be revalidated (`must-revalidate`,
    /// `proxy-revalidate`, `s-maxage`).
    pub must_revalidate: bool,
    /// Every use must be revalidated (`no-cache`).
    pub no_cache: bool,
    /// May answer requests carrying `Authorization`.
    pub auth_ok: bool,
    /// `stale-while-revalidate`, in seconds.
    pub stale_while_revalidate: u64,
    /// `stale-if-error`, in seconds.
    pub stale_if_error: u64,
    /// The `ETag` value.
    pub etag: Option<Bytes>,
    /// The `Last-Modified` value.
    pub last_modified: Option<Bytes>,
    /// Id of the `Vary` marker this variant belongs to (0: no `Vary`).
    pub vary_id: u64,
}

/// One stored response.
#[derive(Debug)]
pub struct Entry {
    /// The cache key (host, target, and for variants the varied values).
    pub key: Bytes,
    /// Status line and end-to-end fields, each line ending in CRLF; no
    /// framing, `Age`, `X-Cache` or connection fields.
    pub head: Bytes,
    /// The body, without transfer coding.
    pub body: Bytes,
    /// CRC32C over key, head and body, computed on insert.
    pub crc: u32,
    /// Freshness and validators.
    pub meta: Meta,
    /// Monotonic time of storing, for the resident age.
    pub stored_at: Instant,
    /// Insertion sequence number: tells replaced entries and bans apart.
    pub seq: u64,
    /// Hits since insert or last eviction pass, saturating at 3.
    freq: AtomicU8,
}

impl Entry {
    /// A new entry; computes its checksum.
    pub fn new(key: Bytes, head: Bytes, body: Bytes, meta: Meta, stored_at: Instant) -> Self {
        let crc = checksum(&key, &head, &body);
        Self {
            key,
            head,
            body,
            crc,
            meta,
            stored_at,
            seq: 0,
            freq: AtomicU8::new(0),
        }
    }

    /// Bytes this entry counts against the budget.
    pub fn charge(&self) -> u64 {
        (self.key.len() + self.head.len() + self.body.len()) as u64 + ENTRY_OVERHEAD
    }

    /// Whether the stored bytes still match the checksum.
    pub fn verify(&self) -> bool {
        checksum(&self.key, &self.head, &self.body) == self.crc
    }

    /// Current age in seconds (RFC 9111 §4.2.3).
    pub fn age(&self, now: Instant) -> u64 {
        self.meta
            .initial_age
            .saturating_add(now.saturating_duration_since(self.stored_at).as_secs())
    }

    /// Notes a hit for the eviction policy (one relaxed atomic).
    pub fn touch(&self) {
        let f = self.freq.load(Ordering::Relaxed);
        if f < 3 {
            self.freq.store(f + 1, Ordering::Relaxed);
        }
    }

    pub(crate) fn freq(&self) -> u8 {
        self.freq.load(Ordering::Relaxed)
    }

    pub(crate) fn set_freq(&self, f: u8) {
        self.freq.store(f, Ordering::Relaxed);
    }

    /// The stored response as sent to a client: head, `Content-Length`,
    /// `Age`, `X-Cache` and `Cache-Status` (as `served` says), the
    /// connection field, and (unless `head_only`) the
    /// body. The head is written into `output`'s tail (no allocation beyond
    /// its growth); the body is queued as shared bytes, not copied.
    pub fn write_response(
        &self,
        output: &mut Output,
        now: Instant,
        served: Served,
        connection: &[u8],
        head_only: bool,
    ) {
        let out = output.tail();
        out.reserve(self.head.len() + 160);
        out.put_slice(&self.head);
        out.put_slice(b"Content-Length: ");
        put_decimal(out, self.body.len() as u64);
        let age = self.age(now);
        out.put_slice(b"\r\nAge: ");
        put_decimal(out, age);
        out.put_slice(b"\r\n");
        served.write(out, self.meta.lifetime, age);
        out.put_slice(connection);
        out.put_slice(b"\r\n");
        if !head_only {
            output.push(&self.body);
        }
    }

    /// The stored fields, without the status line, each with its CRLF.
    pub fn stored_fields(&self) -> &[u8] {
        let start = self
            .head
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.head.len(), |p| p + 1);
        &self.head[start..]
    }

    /// The value of a stored field (`name` in lower case), if present.
    pub fn stored_field(&self, name: &[u8]) -> Option<&[u8]> {
        self.stored_fields()
            .split(|&b| b == b'\n')
            .find_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                line[..colon].eq_ignore_ascii_case(name).then(|| {
                    crate::http::trim(
                        line[colon + 1..]
                            .strip_suffix(b"\r")
                            .unwrap_or(&line[colon + 1..]),
                    )
                })
            })
    }

    /// The ranges of the stored response a GET asked for (a `206`, or a
    /// `416` when none can be satisfied), with `Age` and the cache's fields
    /// as in [`Self::write_response`]. See [`super::range`].
    pub fn write_ranges(
        &self,
        output: &mut Output,
        now: Instant,
        served: Served,
        connection: &[u8],
        ranges: super::range::Ranges,
    ) {
        let age = self.age(now);
        let lifetime = self.meta.lifetime;
        super::range::write(
            output,
            self,
            ranges,
            |out| {
                out.put_slice(b"Age: ");
                put_decimal(out, age);
                out.put_slice(b"\r\n");
                served.write(out, lifetime, age);
            },
            connection,
        );
    }

    /// A `304 Not Modified` for a client whose conditional matched.
    pub fn write_not_modified(&self, out: &mut BytesMut, now: Instant, connection: &[u8]) {
        out.put_slice(b"HTTP/1.1 304 Not Modified\r\n");
        for (name, value) in [
            (&b"ETag: "[..], &self.meta.etag),
            (b"Last-Modified: ", &self.meta.last_modified),
        ] {
            if let Some(v) = value {
                out.put_slice(name);
                out.put_slice(v);
                out.put_slice(b"\r\n");
            }
        }
        let age = self.age(now);
        out.put_slice(b"Age: ");
        put_decimal(out, age);
        out.put_slice(b"\r\n");
        Served::Hit.write(out, self.meta.lifetime, age);
        out.put_slice(connection);
        out.put_slice(b"\r\n");
    }
}

/// CRC32C over the stored bytes of an entry.
pub fn checksum(key: &[u8], head: &[u8], body: &[u8]) -> u32 {
    let c = crc32c::crc32c(key);
    let c = crc32c::crc32c_append(c, head);
    crc32c::crc32c_append(c, body)
}

/// Appends `n` in decimal (see [`crate::http::decimal`]).
pub fn put_decimal(out: &mut BytesMut, n: u64) {
    out.put_slice(crate::http::decimal::digits(n, &mut [0; 20]));
}
