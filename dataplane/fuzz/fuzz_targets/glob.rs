//! The purge and drop-in glob: agrees with a naive backtracking matcher
//! on short inputs, and never panics on any.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ultragate_dataplane::glob::matches;

#[derive(Arbitrary, Debug)]
struct Input {
    pattern: Vec<u8>,
    text: Vec<u8>,
}

/// The reference: `*` tries every split (exponential, so inputs are kept
/// short).
fn naive(p: &[u8], t: &[u8]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some((b'*', rest)) => (0..=t.len()).any(|i| naive(rest, &t[i..])),
        Some((c, rest)) => t.first() == Some(c) && naive(rest, &t[1..]),
    }
}

fuzz_target!(|input: Input| {
    // A small alphabet makes matches likely.
    let squash = |v: &[u8], n: usize| -> Vec<u8> {
        v.iter()
            .take(n)
            .map(|b| if b % 4 == 0 { b'*' } else { b'a' + b % 3 })
            .collect()
    };
    std::hint::black_box(matches(&input.pattern, &input.text));
    let (p, t) = (squash(&input.pattern, 12), squash(&input.text, 24));
    assert_eq!(matches(&p, &t), naive(&p, &t), "{:?} {:?}", p, t);
});
