//! Cache keys: the URL key (scheme mark, host, normalised path and query)
//! and the variant key a response's `Vary` fields select, with list
//! fields normalised so equal lists make one variant.

/// Separates the host from the target in a URL key.
pub(super) const KEY_SEPARATOR: u8 = b' ';

/// The scheme a request came by. It is part of the URL key, as in nginx's
/// default key (`$scheme$proxy_host$request_uri`): an origin told it
/// (`X-Forwarded-Proto`) may answer each differently, say with a redirect
/// to https on the plain port, which must never be served over https.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// The value of `X-Forwarded-Proto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub(super) fn other(self) -> Scheme {
        match self {
            Scheme::Http => Scheme::Https,
            Scheme::Https => Scheme::Http,
        }
    }
}

/// Starts the URL key of an https request: a control byte, which no
/// header value (so no host) holds. Plain requests' keys have no mark,
/// so snapshots taken before the scheme was keyed still load as theirs.
pub(super) const HTTPS_MARK: u8 = 0x01;

/// Writes the URL key of a request (its scheme's mark, the lower-cased
/// host, a space, the target) into `out`, returning its length.
pub fn url_key(out: &mut Vec<u8>, scheme: Scheme, host: &[u8], target: &[u8]) -> usize {
    out.clear();
    if scheme == Scheme::Https {
        out.push(HTTPS_MARK);
    }
    out.extend(host.iter().map(u8::to_ascii_lowercase));
    out.push(KEY_SEPARATOR);
    out.extend_from_slice(target);
    out.len()
}

/// The scheme, host and target of a key (URL or variant key): what
/// [`url_key`] wrote.
pub fn url_parts(key: &[u8]) -> (Scheme, &[u8], &[u8]) {
    let url_end = key.iter().position(|&b| b == 0).unwrap_or(key.len());
    let (scheme, url) = match key[..url_end].split_first() {
        Some((&HTTPS_MARK, rest)) => (Scheme::Https, rest),
        _ => (Scheme::Http, &key[..url_end]),
    };
    match url.iter().position(|&b| b == KEY_SEPARATOR) {
        Some(i) => (scheme, &url[..i], &url[i + 1..]),
        None => (scheme, &[], url),
    }
}

/// Extends a URL key with the request's values of the varied fields.
/// Fields of known list syntax are normalised first, so that equivalent
/// requests share a variant.
pub(super) fn variant_key(
    key: &mut Vec<u8>,
    url_len: usize,
    names: &[Box<str>],
    headers: &[httparse::Header<'_>],
) {
    key.truncate(url_len);
    for name in names {
        key.push(0);
        if matches!(&**name, "accept-encoding" | "accept-language")
            && normalized_list(key, name, headers)
        {
            continue;
        }
        let mut first = true;
        for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
            if !first {
                key.push(b',');
            }
            key.extend_from_slice(crate::http::trim(h.value));
            first = false;
        }
    }
}

/// Most members of a list field normalised for a variant key, and the
/// longest; a value past these is keyed as it came.
pub(super) const NORMAL_MEMBERS: usize = 16;

pub(super) const NORMAL_MEMBER_LEN: usize = 48;

/// Appends the members of every `name` field (`Accept-Encoding`,
/// `Accept-Language`) normalised: lower case, no whitespace, `q=1` dropped
/// and other q-values without trailing zeros, sorted and deduplicated
/// (`gzip, br` and `BR;q=1.0,gzip` key alike). On the stack, no allocation;
/// false (nothing written) when the value is too long to normalise.
pub(super) fn normalized_list(
    key: &mut Vec<u8>,
    name: &str,
    headers: &[httparse::Header<'_>],
) -> bool {
    let mut members = [([0u8; NORMAL_MEMBER_LEN], 0usize); NORMAL_MEMBERS];
    let mut n = 0;
    let values = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .flat_map(|h| crate::http::list_members(h.value));
    for member in values {
        if n == NORMAL_MEMBERS {
            return false;
        }
        let Some(len) = normalize_member(member, &mut members[n].0) else {
            return false;
        };
        members[n].1 = len;
        n += 1;
    }
    let members = &mut members[..n];
    members.sort_unstable_by(|a, b| a.0[..a.1].cmp(&b.0[..b.1]));
    let mut last: Option<&[u8]> = None;
    for (bytes, len) in members.iter() {
        let m = &bytes[..*len];
        if last == Some(m) {
            continue;
        }
        if last.is_some() {
            key.push(b',');
        }
        key.extend_from_slice(m);
        last = Some(m);
    }
    true
}

/// One list member normalised into `out`; its length, or `None` when it
/// does not fit.
pub(super) fn normalize_member(member: &[u8], out: &mut [u8; NORMAL_MEMBER_LEN]) -> Option<usize> {
    let mut len = 0;
    let mut put = |bytes: &[u8]| -> Option<()> {
        let end = len + bytes.len();
        out.get_mut(len..end)?.copy_from_slice(bytes);
        len = end;
        Some(())
    };
    let mut parts = member.split(|&b| b == b';');
    let token = crate::http::trim(parts.next().unwrap_or_default());
    for &b in token {
        put(&[b.to_ascii_lowercase()])?;
    }
    for param in parts {
        let param = crate::http::trim(param);
        let Some(q) = param
            .strip_prefix(b"q=")
            .or_else(|| param.strip_prefix(b"Q="))
        else {
            put(b";")?;
            for &b in param {
                if b != b' ' && b != b'\t' {
                    put(&[b.to_ascii_lowercase()])?;
                }
            }
            continue;
        };
        // qvalue = "0" [ "." 0*3DIGIT ] / "1" [ "." 0*3("0") ]
        let q = crate::http::trim(q);
        let (int, frac) = match q.iter().position(|&b| b == b'.') {
            Some(dot) => (&q[..dot], &q[dot + 1..]),
            None => (q, &q[..0]),
        };
        let mut frac = frac;
        while let [rest @ .., b'0'] = frac {
            frac = rest;
        }
        if int == b"1" && frac.is_empty() {
            continue;
        }
        put(b";q=")?;
        put(int)?;
        if !frac.is_empty() {
            put(b".")?;
            put(frac)?;
        }
    }
    Some(len)
}
