//! Logging phase: what an answered request leaves behind — its
//! completion for the per-core statistics and its access-log record.

use super::*;

/// A connection's client bytes: received, written, and what the last
/// completion reported of them.
#[derive(Debug, Default)]
pub(super) struct Traffic {
    pub(super) received: u64,
    pub(super) written: u64,
    pub(super) reported: (u64, u64),
}

impl Traffic {
    /// Bytes received and queued (written, plus `queued` still in the
    /// output) since the last call.
    pub(super) fn take(&mut self, queued: usize) -> (u64, u64) {
        let out = self.written + queued as u64;
        let (seen_in, seen_out) = std::mem::replace(&mut self.reported, (self.received, out));
        (
            self.received.saturating_sub(seen_in),
            out.saturating_sub(seen_out),
        )
    }
}

/// The access-log record of the request being answered, while it fills.
#[derive(Debug)]
pub(super) struct AccessDraft {
    pub(super) record: AccessRecord,
    pub(super) head_done: Instant,
    pub(super) cache_done: Option<Instant>,
    pub(super) first_byte: Option<Instant>,
    /// The id was made up here: sent upstream (instead of the client's).
    pub(super) made_id: bool,
    /// The trace was made up here: sent upstream (instead of the client's).
    pub(super) made_trace: bool,
}

impl AccessDraft {
    pub(super) fn new(
        head: &RequestHead<'_, '_>,
        started: Instant,
        now: Instant,
        wall: SystemTime,
    ) -> Self {
        let field = |name| rules::field(head.headers, name);
        let sent_id =
            rewrite::lone(head.headers, "x-request-id").and_then(access::valid_request_id);
        let sent_trace =
            rewrite::lone(head.headers, "traceparent").and_then(access::valid_traceparent);
        // Made up only when not sent; hex digits, so valid text.
        let made_id = sent_id.is_none().then(access::new_request_id);
        let made_trace = sent_trace.is_none().then(access::new_traceparent);
        let id = sent_id
            .or_else(|| made_id.as_ref().and_then(|b| std::str::from_utf8(b).ok()))
            .unwrap_or("");
        let trace = sent_trace
            .or_else(|| {
                made_trace
                    .as_ref()
                    .and_then(|b| std::str::from_utf8(b).ok())
            })
            .unwrap_or("");
        let host = String::from_utf8_lossy(head.host);
        // Bounded: a client's long field costs the log no more.
        let bounded = |name| {
            let v = field(name).unwrap_or_default();
            String::from_utf8_lossy(v.get(..access::MAX_LOGGED_FIELD).unwrap_or(v))
        };
        let (agent, referer) = (bounded("user-agent"), bounded("referer"));
        let mut record = AccessRecord::new(
            wall,
            match head.version {
                Version::Http10 => "HTTP/1.0",
                Version::Http11 => "HTTP/1.1",
            },
            [
                head.method_name,
                &host,
                head.target,
                id,
                trace,
                &agent,
                &referer,
            ],
        );
        record.head_us = micros(now.saturating_duration_since(started));
        AccessDraft {
            record,
            head_done: now,
            cache_done: None,
            first_byte: None,
            made_id: made_id.is_some(),
            made_trace: made_trace.is_some(),
        }
    }

    /// Appends `X-Request-Id: <id>`.
    pub(super) fn push_id(&self, f: &mut Fields) {
        f.push(&[
            b"X-Request-Id: ",
            self.record.request_id().as_bytes(),
            b"\r\n",
        ]);
    }

    /// Fields for the upstream request (what was made up here), and the
    /// names of the client's fields they replace.
    pub(super) fn upstream_fields(&self) -> (Fields, &'static [&'static str]) {
        let mut f = Fields::default();
        if self.made_id {
            self.push_id(&mut f);
        }
        if self.made_trace {
            f.push(&[
                b"traceparent: ",
                self.record.traceparent().as_bytes(),
                b"\r\n",
            ]);
        }
        let replaced: &'static [&'static str] = match (self.made_id, self.made_trace) {
            (true, true) => &["x-request-id", "traceparent"],
            (true, false) => &["x-request-id"],
            (false, true) => &["traceparent"],
            (false, false) => &[],
        };
        (f, replaced)
    }

    /// The finished record.
    pub(super) fn finish(
        mut self,
        started: Instant,
        now: Instant,
        status: u16,
        cache: CacheResult,
        bytes: (u64, u64),
    ) -> AccessRecord {
        let r = &mut self.record;
        r.status = status;
        r.cache = cache.label();
        (r.request_bytes, r.response_bytes) = bytes;
        r.cache_us = self
            .cache_done
            .map(|t| micros(t.saturating_duration_since(self.head_done)));
        r.upstream_first_byte_us = self
            .first_byte
            .map(|t| micros(t.saturating_duration_since(started)));
        r.total_us = micros(now.saturating_duration_since(started));
        self.record
    }
}

/// A few header lines assembled on the stack (no allocation): the
/// connection field, `X-Request-Id` and `traceparent` at most.
pub(super) struct Fields {
    pub(super) buf: [u8; 256],
    pub(super) len: usize,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            buf: [0; 256],
            len: 0,
        }
    }
}

impl Fields {
    /// Appends one line's parts; a line that does not fit is left out
    /// (ids are bounded well below the room).
    pub(super) fn push(&mut self, parts: &[&[u8]]) {
        let n: usize = parts.iter().map(|p| p.len()).sum();
        let Some(dst) = self.buf.get_mut(self.len..self.len + n) else {
            return;
        };
        let mut at = 0;
        for p in parts {
            dst[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        self.len += n;
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

pub(super) fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// The slot of a client address in the statistics' blame counts.
pub(super) fn client_slot(peer: IpAddr) -> u8 {
    match peer {
        IpAddr::V4(a) => crate::stats::blame_slot(&a.octets()),
        IpAddr::V6(a) => crate::stats::blame_slot(&a.octets()),
    }
}

/// What an answered request was, for its completion record: built by
/// saying where the answer came from, then what went wrong.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answer {
    status: u16,
    cache: CacheResult,
    upstream_error: bool,
    proxied: bool,
}

impl Answer {
    /// Answered by the gateway itself: an error, an admin call, a probe.
    pub(super) fn local(status: u16) -> Self {
        Self::cached(status, CacheResult::None)
    }

    /// Answered from the cache, `cache` saying how.
    pub(super) fn cached(status: u16, cache: CacheResult) -> Self {
        Answer {
            status,
            cache,
            upstream_error: false,
            proxied: false,
        }
    }

    /// Answered from an upstream's response.
    pub(super) fn proxied(status: u16, cache: CacheResult) -> Self {
        Answer {
            proxied: true,
            ..Self::cached(status, cache)
        }
    }

    /// The same answer, owed to an upstream's failure.
    pub(super) fn upstream_failed(self) -> Self {
        Answer {
            upstream_error: true,
            ..self
        }
    }
}

impl Conn {
    /// The next answered request, for the per-core statistics.
    pub fn poll_completion(&mut self) -> Option<Completion> {
        self.completions.pop_front()
    }

    /// Notes an answered request.
    pub(super) fn complete(&mut self, now: Instant, answer: Answer) {
        let done = self.completion(now, answer);
        self.completions.push_back(done);
    }

    /// The record of an answered request.
    pub(super) fn completion(&mut self, now: Instant, answer: Answer) -> Completion {
        let Answer {
            status,
            cache,
            upstream_error,
            proxied,
        } = answer;
        let (bytes_in, bytes_out) = self.traffic.take(self.output.len());
        let access = self.access.take().map(|d| {
            Box::new(d.finish(self.req_started, now, status, cache, (bytes_in, bytes_out)))
        });
        Completion {
            latency: now.saturating_duration_since(self.served_since),
            upstream_latency: self.upstream_took.take(),
            client_slot: self.slots.0,
            url_slot: self.slots.1,
            canary: std::mem::take(&mut self.canary_answer),
            attempt_only: false,
            status,
            cache,
            upstream_error,
            transport_error: false,
            proxied,
            probe: false,
            route: self.route.and_then(|r| u16::try_from(r).ok()),
            bytes_in,
            bytes_out,
            access,
        }
    }
}
