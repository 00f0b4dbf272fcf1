//! The chunked decoder: the same input, whole or split at arbitrary
//! points, gives the same payload, the same end and the same trailers; what
//! a relay forwards is itself a valid chunked body, in canonical form.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ultragate_dataplane::http::chunked::ChunkedDecoder;

#[derive(Arbitrary, Debug)]
struct Input {
    body: Vec<u8>,
    splits: Vec<u16>,
}

/// (payload, consumed, done, relayed bytes) or the error.
fn decode(body: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, usize, bool, Vec<u8>), ()> {
    let mut d = ChunkedDecoder::new(256);
    let (mut payload, mut relayed, mut used) = (Vec::new(), Vec::new(), 0);
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&body.len())) {
        if end < start || d.is_done() {
            continue;
        }
        let part = &body[start..end];
        let n = d
            .relay(part, &mut relayed, |p| payload.extend_from_slice(p))
            .map_err(|_| ())?;
        used += n;
        if n < part.len() {
            assert!(d.is_done(), "bytes are left over only after the end");
        }
        start = end;
    }
    assert_eq!(d.decoded(), payload.len() as u64);
    Ok((payload, used, d.is_done(), relayed))
}

fuzz_target!(|input: Input| {
    let body = &input.body;
    let whole = decode(body, &[]);
    let mut cuts: Vec<usize> = input
        .splits
        .iter()
        .map(|&s| usize::from(s) % (body.len() + 1))
        .collect();
    cuts.sort_unstable();
    let split = decode(body, &cuts);
    assert_eq!(whole, split, "whole and split at {cuts:?} disagree");
    if let Ok((payload, _, true, relayed)) = whole {
        // What a relay forwards decodes to the same payload, and is
        // canonical: relaying it again changes nothing.
        let again = decode(&relayed, &[]).expect("the relayed body is valid chunked");
        assert!(again.2 && again.0 == payload && again.1 == relayed.len());
        assert_eq!(again.3, relayed, "a relayed body is canonical");
    }
});
