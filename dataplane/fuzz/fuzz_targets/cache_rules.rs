//! The cache's rules on arbitrary header sets: Cache-Control parsing,
//! storability, freshness and age never panic and stay in range; a
//! response stored under a request's values of its Vary fields is found
//! again by the same request, and never by one whose values differ.

#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant, SystemTime};
use ultragate_dataplane::cache::entry::Meta;
use ultragate_dataplane::cache::rules::{self, CacheControl};
use ultragate_dataplane::cache::{url_key, Cache, CacheConfig, Scheme, Stored};

#[derive(Arbitrary, Debug)]
struct Input {
    request: Vec<(String, Vec<u8>)>,
    other_request: Vec<(String, Vec<u8>)>,
    response: Vec<(String, Vec<u8>)>,
    status: u16,
    get: bool,
    authorization: bool,
    vary: Vec<String>,
    target: Vec<u8>,
    https: bool,
}

/// Header fields as a parsed head can hold them: values without NUL, CR
/// or LF (httparse refuses those).
fn fields(list: &[(String, Vec<u8>)]) -> Vec<httparse::Header<'_>> {
    list.iter()
        .filter(|(_, v)| !v.iter().any(|b| matches!(b, 0 | b'\r' | b'\n')))
        .take(64)
        .map(|(n, v)| httparse::Header {
            name: n.as_str(),
            value: v.as_slice(),
        })
        .collect()
}

/// Optional whitespace around a field value (SP and HTAB only).
fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fuzz_target!(|input: Input| {
    let request = fields(&input.request);
    let response = fields(&input.response);
    let req_cc = CacheControl::parse(&request);
    let targeted: Vec<Box<str>> = input
        .vary
        .iter()
        .take(3)
        .map(|n| n.as_str().into())
        .collect();
    let resp_cc = CacheControl::of_response(&response, &targeted);
    let _ = CacheControl::of_response(&response, &["CDN-Cache-Control".into()]);
    let _ = rules::storable(
        input.get,
        &req_cc,
        input.authorization,
        input.status,
        &response,
        &resp_cc,
        SystemTime::now(),
    );
    let lifetime = rules::freshness_lifetime(&response, &resp_cc, SystemTime::now());
    assert!(lifetime <= Duration::from_secs(1 << 31));
    let age = rules::initial_age(&response, SystemTime::now(), Duration::from_secs(1));
    assert!(age <= Duration::from_secs(1 << 32));

    // Vary keys.
    let cache = Cache::new(CacheConfig {
        max_bytes: 1 << 20,
        max_object_bytes: 1 << 16,
    });
    let names: Vec<Box<str>> = input
        .vary
        .iter()
        .take(8)
        .map(|n| n.to_ascii_lowercase().into_boxed_str())
        .collect();
    let mut key = Vec::new();
    let scheme = if input.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let url_len = url_key(&mut key, scheme, b"h", &input.target);
    let url = key[..url_len].to_vec();
    let meta = Meta {
        status: 200,
        stored_wall: SystemTime::now(),
        initial_age: 0,
        lifetime: 60,
        must_revalidate: false,
        no_cache: false,
        auth_ok: false,
        stale_while_revalidate: 0,
        stale_if_error: 0,
        etag: None,
        last_modified: None,
        vary_id: 0,
    };
    let stored = Stored {
        head: Bytes::from_static(b"HTTP/1.1 200 OK\r\n"),
        body: Bytes::from_static(b"x"),
        meta,
    };
    let vary = (!names.is_empty()).then_some(&names[..]);
    let now = Instant::now();
    assert!(cache.insert(&url, vary, &request, stored, now));
    let found = cache.lookup(&mut key, url_len, &request);
    assert!(found.is_some(), "the same request finds its variant");
    let other = fields(&input.other_request);
    let value = |hs: &[httparse::Header<'_>], n: &str| -> Vec<Vec<u8>> {
        hs.iter()
            .filter(|h| h.name.eq_ignore_ascii_case(n))
            .map(|h| trim(h.value).to_vec())
            .collect()
    };
    if cache.lookup(&mut key, url_len, &other).is_some() {
        // Found by another request: it must have the same varied values.
        // Accept-Encoding and Accept-Language key normalised (case, order,
        // q=1): equivalent values may share a variant by design.
        for n in names
            .iter()
            .filter(|n| !matches!(&***n, "accept-encoding" | "accept-language"))
        {
            let (a, b) = (value(&request, n), value(&other, n));
            assert!(
                a.concat() == b.concat() || a.join(&b","[..]) == b.join(&b","[..]),
                "variant for {n}: {a:?} served to {b:?}"
            );
        }
    }
});
