//! RFC 9111 rules for a shared cache: `Cache-Control` directives, whether a
//! response may be stored, how long it stays fresh, and how old it is.
//! Pure functions over header fields, tested one rule at a time.

use crate::http::{list_members, trim};
use std::time::{Duration, SystemTime};

/// The directives of every `Cache-Control` field of a message.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store`
    pub no_store: bool,
    /// `no-cache` (also its field-qualified form, taken as unqualified)
    pub no_cache: bool,
    /// `private` (also its field-qualified form)
    pub private: bool,
    /// `public`
    pub public: bool,
    /// `must-revalidate`
    pub must_revalidate: bool,
    /// `proxy-revalidate`
    pub proxy_revalidate: bool,
    /// `max-age`, in seconds
    pub max_age: Option<u64>,
    /// `s-maxage`, in seconds
    pub s_maxage: Option<u64>,
    /// `stale-while-revalidate`, in seconds
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error`, in seconds
    pub stale_if_error: Option<u64>,
    /// The directives come from a targeted field (RFC 9213): the response's
    /// `Expires` does not count for this cache.
    pub targeted: bool,
}

impl CacheControl {
    /// The directives this cache follows for a response: those of the
    /// first valid field among `targeted` (RFC 9213), else its
    /// `Cache-Control`.
    pub fn of_response(headers: &[httparse::Header<'_>], targeted: &[Box<str>]) -> Self {
        super::targeted::directives(headers, targeted).unwrap_or_else(|| Self::parse(headers))
    }

    /// Collects the directives of all `Cache-Control` fields in `headers`.
    /// Unknown directives are ignored; a malformed number makes the
    /// directive count as present with value 0 (the conservative reading).
    pub fn parse(headers: &[httparse::Header<'_>]) -> Self {
        let mut cc = Self::default();
        for h in headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cache-control"))
        {
            for d in list_members(h.value) {
                let (name, value) = match d.iter().position(|&b| b == b'=') {
                    Some(i) => (trim(&d[..i]), Some(trim(&d[i + 1..]))),
                    None => (d, None),
                };
                let secs = || value.map(|v| parse_delta(v).unwrap_or(0));
                let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
                if is("no-store") {
                    cc.no_store = true;
                } else if is("no-cache") {
                    cc.no_cache = true;
                } else if is("private") {
                    cc.private = true;
                } else if is("public") {
                    cc.public = true;
                } else if is("must-revalidate") {
                    cc.must_revalidate = true;
                } else if is("proxy-revalidate") {
                    cc.proxy_revalidate = true;
                } else if is("max-age") {
                    cc.max_age = secs().or(Some(0));
                } else if is("s-maxage") {
                    cc.s_maxage = secs().or(Some(0));
                } else if is("stale-while-revalidate") {
                    cc.stale_while_revalidate = secs();
                } else if is("stale-if-error") {
                    cc.stale_if_error = secs();
                }
            }
        }
        cc
    }
}

/// Parses a delta-seconds value (quotes tolerated); saturates at 2^31 as
/// RFC 9111 §1.2.2 asks.
fn parse_delta(v: &[u8]) -> Option<u64> {
    let v = v
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(v);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        v.iter()
            .fold(0u64, |n, &d| (n * 10 + u64::from(d - b'0')).min(1 << 31)),
    )
}

/// The first value of a field, if present.
pub fn field<'b>(headers: &[httparse::Header<'b>], name: &str) -> Option<&'b [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| trim(h.value))
}

/// Parses an HTTP-date field value.
///
/// All three formats a recipient must accept (RFC 9110 §5.6.7: IMF-fixdate,
/// RFC 850, asctime), in any letter case (`sun, 06 nov 1994 ...`).
pub fn http_date(v: &[u8]) -> Option<SystemTime> {
    let v = crate::http::trim(v);
    if v.len() > 64 {
        return None;
    }
    // Canonical case: a capital after a non-letter, small letters after a
    // letter, and GMT in capitals.
    let mut buf = [0u8; 64];
    let mut prev_alpha = false;
    for (o, &c) in buf.iter_mut().zip(v) {
        *o = if prev_alpha {
            c.to_ascii_lowercase()
        } else {
            c.to_ascii_uppercase()
        };
        prev_alpha = c.is_ascii_alphabetic();
    }
    let s = &mut buf[..v.len()];
    if s.ends_with(b"Gmt") {
        let n = s.len();
        s[n - 2..].copy_from_slice(b"MT");
    }
    httpdate::parse_http_date(std::str::from_utf8(s).ok()?).ok()
}

/// Status codes a cache may store with heuristic freshness
/// (RFC 9110 §15.1); 206 is left out because ranges are not stored.
pub fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Why a response is not stored; `None` from [`storable`] means it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// The request method is not GET.
    Method,
    /// `no-store` in the request or the response.
    NoStore,
    /// `private`: for one user only.
    Private,
    /// The request had `Authorization` and the response does not allow
    /// sharing it.
    Authorization,
    /// A status that needs explicit freshness, without it.
    Status,
    /// `Vary: *`.
    VaryStar,
    /// `Set-Cookie`: per-client state that a shared cache must not replay.
    SetCookie,
    /// Neither fresh for a while nor revalidatable.
    NoFreshness,
}

impl NotStored {
    /// The reason as `Cache-Status`'s `detail` says it.
    pub fn detail(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::NoStore => "no-store",
            Self::Private => "private",
            Self::Authorization => "authorization",
            Self::Status => "status",
            Self::VaryStar => "vary-star",
            Self::SetCookie => "set-cookie",
            Self::NoFreshness => "no-freshness",
        }
    }
}

/// Whether a shared cache may store a response (RFC 9111 §3, §3.5);
/// `now` is the wall time a response without a `Date` is judged at.
pub fn storable(
    get: bool,
    request: &CacheControl,
    authorization: bool,
    status: u16,
    resp_headers: &[httparse::Header<'_>],
    resp: &CacheControl,
    now: SystemTime,
) -> Result<(), NotStored> {
    if !get {
        return Err(NotStored::Method);
    }
    if request.no_store || resp.no_store {
        return Err(NotStored::NoStore);
    }
    if resp.private {
        return Err(NotStored::Private);
    }
    if authorization && !(resp.public || resp.must_revalidate || resp.s_maxage.is_some()) {
        return Err(NotStored::Authorization);
    }
    let explicit = resp.s_maxage.is_some()
        || resp.max_age.is_some()
        || resp.public
        || (!resp.targeted && field(resp_headers, "expires").is_some());
    if !(explicit || heuristically_cacheable(status)) || status == 206 || status < 200 {
        return Err(NotStored::Status);
    }
    if resp_headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("vary"))
        .any(|h| list_members(h.value).any(|m| m == b"*"))
    {
        return Err(NotStored::VaryStar);
    }
    // A Set-Cookie is one client's state: a response carrying one is never
    // stored, whatever else it says, so it is never replayed to another.
    if resp_headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("set-cookie"))
    {
        return Err(NotStored::SetCookie);
    }
    let validators =
        field(resp_headers, "etag").is_some() || field(resp_headers, "last-modified").is_some();
    if freshness_lifetime(resp_headers, resp, now).is_zero() && !validators {
        return Err(NotStored::NoFreshness);
    }
    Ok(())
}

/// Most heuristic freshness given, whatever `Last-Modified` says.
const MAX_HEURISTIC: Duration = Duration::from_secs(24 * 3600);

/// The freshness lifetime of a response for a shared cache (RFC 9111
/// §4.2.1): `s-maxage`, else `max-age`, else `Expires` − `Date` (unless
/// the directives are targeted), else 10% of the time since
/// `Last-Modified` (at most a day). `now` stands in for a missing `Date`
/// (the caller's clock: the engine reads none).
pub fn freshness_lifetime(
    headers: &[httparse::Header<'_>],
    cc: &CacheControl,
    now: SystemTime,
) -> Duration {
    if let Some(s) = cc.s_maxage.or(cc.max_age) {
        return Duration::from_secs(s);
    }
    let date = field(headers, "date").and_then(http_date);
    if let Some(expires) = field(headers, "expires").filter(|_| !cc.targeted) {
        // An invalid Expires (e.g. "0") means already expired.
        let Some(expires) = http_date(expires) else {
            return Duration::ZERO;
        };
        let base = date.unwrap_or(now);
        return expires.duration_since(base).unwrap_or(Duration::ZERO);
    }
    if let Some(lm) = field(headers, "last-modified").and_then(http_date) {
        let base = date.unwrap_or(now);
        let since = base.duration_since(lm).unwrap_or(Duration::ZERO);
        return (since / 10).min(MAX_HEURISTIC);
    }
    Duration::ZERO
}

/// The age of a response when it was received (RFC 9111 §4.2.3):
/// the larger of its `Age` field (plus the time the request took) and
/// the gap between its `Date` and `now`.
pub fn initial_age(
    headers: &[httparse::Header<'_>],
    now: SystemTime,
    response_delay: Duration,
) -> Duration {
    // RFC 9111 §5.1: a list-based Age counts by its first member; an
    // invalid value is ignored.
    let age_value = field(headers, "age")
        .and_then(|v| list_members(v).next())
        .and_then(parse_delta)
        .map_or(Duration::ZERO, Duration::from_secs);
    let apparent = field(headers, "date")
        .and_then(http_date)
        .and_then(|d| now.duration_since(d).ok())
        .unwrap_or(Duration::ZERO);
    apparent.max(age_value + response_delay)
}

/// Whether an `If-None-Match` value matches an entity tag, by the weak
/// comparison RFC 9110 §13.1.2 prescribes for GET.
pub fn etag_matches(if_none_match: &[u8], etag: &[u8]) -> bool {
    let strip = |t: &[u8]| -> Vec<u8> { t.strip_prefix(b"W/").unwrap_or(t).to_vec() };
    let etag = strip(trim(etag));
    list_members(if_none_match).any(|m| m == b"*" || strip(m) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(pairs: &'a [(&'a str, &'a str)]) -> Vec<httparse::Header<'a>> {
        pairs
            .iter()
            .map(|(n, v)| httparse::Header {
                name: n,
                value: v.as_bytes(),
            })
            .collect()
    }

    fn store(status: u16, pairs: &[(&str, &str)]) -> Result<(), NotStored> {
        let headers = h(pairs);
        storable(
            true,
            &CacheControl::default(),
            false,
            status,
            &headers,
            &CacheControl::parse(&headers),
            SystemTime::now(),
        )
    }

    #[test]
    fn parses_directives_across_fields() {
        let headers = h(&[
            ("Cache-Control", "public, max-age=60"),
            (
                "cache-control",
                "s-maxage=\"120\", stale-if-error=30, no-cache=\"Set-Cookie\"",
            ),
        ]);
        let cc = CacheControl::parse(&headers);
        assert!(cc.public && cc.no_cache);
        assert_eq!(
            (cc.max_age, cc.s_maxage, cc.stale_if_error),
            (Some(60), Some(120), Some(30))
        );
        assert_eq!(
            CacheControl::parse(&h(&[("Cache-Control", "max-age=abc")])).max_age,
            Some(0)
        );
    }

    #[test]
    fn s_maxage_wins_over_max_age() {
        let headers = h(&[("Cache-Control", "max-age=10, s-maxage=100")]);
        assert_eq!(
            freshness_lifetime(&headers, &CacheControl::parse(&headers), SystemTime::now()),
            Duration::from_secs(100)
        );
    }

    #[test]
    fn max_age_gives_lifetime() {
        let headers = h(&[("Cache-Control", "max-age=10")]);
        assert_eq!(
            freshness_lifetime(&headers, &CacheControl::parse(&headers), SystemTime::now()),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn expires_minus_date_gives_lifetime() {
        let headers = h(&[
            ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("Expires", "Sun, 06 Nov 1994 08:50:37 GMT"),
        ]);
        assert_eq!(
            freshness_lifetime(&headers, &CacheControl::default(), SystemTime::now()),
            Duration::from_secs(60)
        );
        let bad = h(&[("Expires", "0")]);
        assert_eq!(
            freshness_lifetime(&bad, &CacheControl::default(), SystemTime::now()),
            Duration::ZERO
        );
    }

    #[test]
    fn heuristic_is_a_tenth_of_last_modified_age() {
        let headers = h(&[
            ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("Last-Modified", "Sun, 06 Nov 1994 07:49:37 GMT"),
        ]);
        assert_eq!(
            freshness_lifetime(&headers, &CacheControl::default(), SystemTime::now()),
            Duration::from_secs(360)
        );
        assert_eq!(
            store(200, &[("Last-Modified", "Sun, 06 Nov 1994 07:49:37 GMT")]),
            Ok(())
        );
        assert_eq!(
            store(302, &[("Last-Modified", "Sun, 06 Nov 1994 07:49:37 GMT")]),
            Err(NotStored::Status)
        );
    }

    #[test]
    fn no_store_private_set_cookie_and_vary_star_are_not_stored() {
        assert_eq!(
            store(200, &[("Cache-Control", "no-store, max-age=60")]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            store(200, &[("Cache-Control", "private, max-age=60")]),
            Err(NotStored::Private)
        );
        assert_eq!(
            store(200, &[("Cache-Control", "max-age=60"), ("Vary", "*")]),
            Err(NotStored::VaryStar)
        );
        assert_eq!(
            store(
                200,
                &[("Cache-Control", "max-age=60"), ("Set-Cookie", "a=1")]
            ),
            Err(NotStored::SetCookie)
        );
        assert_eq!(store(200, &[]), Err(NotStored::NoFreshness));
        assert_eq!(
            store(200, &[("ETag", "\"v1\"")]),
            Ok(()),
            "validators alone allow storing for revalidation"
        );
        let req = CacheControl {
            no_store: true,
            ..Default::default()
        };
        let headers = h(&[("Cache-Control", "max-age=60")]);
        assert_eq!(
            storable(
                true,
                &req,
                false,
                200,
                &headers,
                &CacheControl::parse(&headers),
                SystemTime::now(),
            ),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            storable(
                false,
                &CacheControl::default(),
                false,
                200,
                &headers,
                &CacheControl::parse(&headers),
                SystemTime::now(),
            ),
            Err(NotStored::Method)
        );
    }

    #[test]
    fn authorization_needs_explicit_permission() {
        let check = |cc: &str| {
            let pairs = [("Cache-Control", cc)];
            let headers = h(&pairs);
            storable(
                true,
                &CacheControl::default(),
                true,
                200,
                &headers,
                &CacheControl::parse(&headers),
                SystemTime::now(),
            )
        };
        assert_eq!(check("max-age=60"), Err(NotStored::Authorization));
        assert_eq!(check("public, max-age=60"), Ok(()));
        assert_eq!(check("s-maxage=60"), Ok(()));
        assert_eq!(check("must-revalidate, max-age=60"), Ok(()));
    }

    #[test]
    fn age_takes_the_larger_of_age_field_and_date_gap() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:47 GMT").unwrap();
        let headers = h(&[("Date", "Sun, 06 Nov 1994 08:49:37 GMT"), ("Age", "3")]);
        assert_eq!(
            initial_age(&headers, now, Duration::ZERO),
            Duration::from_secs(10)
        );
        let headers = h(&[("Date", "Sun, 06 Nov 1994 08:49:37 GMT"), ("Age", "30")]);
        assert_eq!(
            initial_age(&headers, now, Duration::from_secs(1)),
            Duration::from_secs(31)
        );
    }

    #[test]
    fn weak_etag_comparison() {
        assert!(etag_matches(b"\"a\", W/\"b\"", b"\"b\""));
        assert!(etag_matches(b"*", b"\"x\""));
        assert!(!etag_matches(b"\"a\"", b"\"b\""));
    }
}
