//! What the cache did for a response, as the client is told: `X-Cache`
//! (the runbook's and dashboards' field) and the standard `Cache-Status`
//! (RFC 9211), written from fixed parts so a hit stays allocation-free.

use super::entry::put_decimal;
use bytes::{BufMut, BytesMut};

/// The cache's name in `Cache-Status`.
const NAME: &[u8] = b"ultragate";

/// How a stored response answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Fresh: `hit; ttl=N`.
    Hit,
    /// Fresh, after waiting for another connection's fetch of the same
    /// key: `hit; ttl=N; collapsed`.
    Collapsed,
    /// Stale within `stale-while-revalidate`, refreshed behind:
    /// `hit; ttl=-N; detail=stale-while-revalidate`.
    StaleWhileRevalidate,
    /// Stale instead of an upstream error (`stale-if-error`).
    StaleIfError,
    /// Revalidated with the upstream, which answered 304:
    /// `fwd=stale; fwd-status=304`.
    Revalidated,
}

impl Served {
    /// The `X-Cache` value.
    pub fn x_cache(self) -> &'static [u8] {
        match self {
            Self::Hit | Self::Collapsed | Self::Revalidated => b"HIT",
            Self::StaleWhileRevalidate | Self::StaleIfError => b"STALE",
        }
    }

    /// The statistics' name for it.
    pub fn result(self) -> CacheResult {
        match self {
            Self::Hit | Self::Collapsed | Self::Revalidated => CacheResult::Hit,
            Self::StaleWhileRevalidate | Self::StaleIfError => CacheResult::Stale,
        }
    }

    /// Writes both fields for a stored response of freshness `lifetime`
    /// and `age`, in seconds. On every hit: whole fixed parts, so it costs
    /// a few copies and one number.
    pub fn write(self, out: &mut BytesMut, lifetime: u64, age: u64) {
        let (prefix, suffix): (&[u8], &[u8]) = match self {
            Self::Revalidated => {
                out.put_slice(
                    b"X-Cache: HIT\r\nCache-Status: ultragate; fwd=stale; fwd-status=304\r\n",
                );
                return;
            }
            Self::Hit => (
                b"X-Cache: HIT\r\nCache-Status: ultragate; hit; ttl=",
                b"\r\n",
            ),
            Self::Collapsed => (
                b"X-Cache: HIT\r\nCache-Status: ultragate; hit; ttl=",
                b"; collapsed\r\n",
            ),
            Self::StaleWhileRevalidate => (
                b"X-Cache: STALE\r\nCache-Status: ultragate; hit; ttl=",
                b"; detail=stale-while-revalidate\r\n",
            ),
            Self::StaleIfError => (
                b"X-Cache: STALE\r\nCache-Status: ultragate; hit; ttl=",
                b"; detail=stale-if-error\r\n",
            ),
        };
        out.put_slice(prefix);
        if age > lifetime {
            out.put_u8(b'-');
            put_decimal(out, age - lifetime);
        } else {
            put_decimal(out, lifetime - age);
        }
        out.put_slice(suffix);
    }
}

/// Why a request went to the upstream (RFC 9211 `fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    /// Nothing stored for the URI.
    UriMiss,
    /// A stored response had to be revalidated.
    Stale,
    /// The client asked for it (`no-cache`, `max-age=0`).
    Request,
    /// The cache is bypassed (after a failed verify).
    Bypass,
    /// The method is not one the cache answers.
    Method,
}

impl Forwarded {
    /// The `X-Cache` value.
    pub fn x_cache(self) -> &'static [u8] {
        match self {
            Self::Bypass | Self::Method => b"BYPASS",
            _ => b"MISS",
        }
    }

    /// The statistics' name for it.
    pub fn result(self) -> CacheResult {
        match self {
            Self::Bypass | Self::Method => CacheResult::Bypass,
            _ => CacheResult::Miss,
        }
    }

    fn fwd(self) -> &'static [u8] {
        match self {
            Self::UriMiss => b"uri-miss",
            Self::Stale => b"stale",
            Self::Request => b"request",
            Self::Bypass => b"bypass",
            Self::Method => b"method",
        }
    }

    /// Writes both fields for a forwarded response: `stored` when it goes
    /// into the cache, else `detail` says why not (when known);
    /// `fwd_status` is what the upstream answered (none for an answer the
    /// gateway made itself).
    pub fn write(
        self,
        out: &mut BytesMut,
        fwd_status: Option<u16>,
        stored: bool,
        detail: Option<&str>,
    ) {
        out.put_slice(b"X-Cache: ");
        out.put_slice(self.x_cache());
        out.put_slice(b"\r\nCache-Status: ");
        out.put_slice(NAME);
        out.put_slice(b"; fwd=");
        out.put_slice(self.fwd());
        if let Some(s) = fwd_status {
            out.put_slice(b"; fwd-status=");
            put_decimal(out, u64::from(s));
        }
        if stored {
            out.put_slice(b"; stored");
        } else if let Some(d) = detail {
            out.put_slice(b"; detail=");
            out.put_slice(d.as_bytes());
        }
        out.put_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(s: Served, lifetime: u64, age: u64) -> String {
        let mut out = BytesMut::new();
        s.write(&mut out, lifetime, age);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn rfc9211_values() {
        assert_eq!(
            served(Served::Hit, 60, 7),
            "X-Cache: HIT\r\nCache-Status: ultragate; hit; ttl=53\r\n"
        );
        assert_eq!(
            served(Served::Collapsed, 60, 0),
            "X-Cache: HIT\r\nCache-Status: ultragate; hit; ttl=60; collapsed\r\n"
        );
        assert_eq!(
            served(Served::StaleWhileRevalidate, 1, 5),
            "X-Cache: STALE\r\nCache-Status: ultragate; hit; ttl=-4; detail=stale-while-revalidate\r\n"
        );
        assert_eq!(
            served(Served::Revalidated, 100, 0),
            "X-Cache: HIT\r\nCache-Status: ultragate; fwd=stale; fwd-status=304\r\n"
        );
        let mut out = BytesMut::new();
        Forwarded::UriMiss.write(&mut out, Some(200), true, None);
        Forwarded::Method.write(&mut out, Some(201), false, None);
        Forwarded::Request.write(&mut out, None, false, Some("upstream-failed"));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "X-Cache: MISS\r\nCache-Status: ultragate; fwd=uri-miss; fwd-status=200; stored\r\n\
             X-Cache: BYPASS\r\nCache-Status: ultragate; fwd=method; fwd-status=201\r\n\
             X-Cache: MISS\r\nCache-Status: ultragate; fwd=request; detail=upstream-failed\r\n"
        );
    }
}

/// How the cache took part in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// Served from the cache.
    Hit,
    /// Looked up, not found (or revalidated), fetched.
    Miss,
    /// Served stale (`stale-while-revalidate`, `stale-if-error`).
    Stale,
    /// The cache was not consulted.
    Bypass,
    /// No cache configured, or not a proxied request.
    None,
}

impl CacheResult {
    /// All results, in the order of the per-core stats' `cache` counts.
    pub const ALL: [CacheResult; 5] =
        [Self::Hit, Self::Miss, Self::Stale, Self::Bypass, Self::None];

    /// The label used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Stale => "stale",
            Self::Bypass => "bypass",
            Self::None => "none",
        }
    }
}
