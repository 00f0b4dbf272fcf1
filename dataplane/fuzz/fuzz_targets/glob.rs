//! The purge and drop-in glob: agrees with the textbook dynamic programme
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

/// The reference: the textbook dynamic programme over (pattern prefix,
/// text prefix), O(pattern × text), so inputs are kept short.
fn naive(p: &[u8], t: &[u8]) -> bool {
    // m[j]: pattern[..i] matches text[..j], row by row.
    let mut m = vec![false; t.len() + 1];
    m[0] = true;
    for &c in p {
        let mut next = vec![false; t.len() + 1];
        if c == b'*' {
            let mut any = false;
            for j in 0..=t.len() {
                any |= m[j];
                next[j] = any;
            }
        } else {
            for j in 1..=t.len() {
                next[j] = m[j - 1] && t[j - 1] == c;
            }
        }
        m = next;
    }
    m[t.len()]
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
    let (p, t) = (squash(&input.pattern, 16), squash(&input.text, 64));
    assert_eq!(matches(&p, &t), naive(&p, &t), "{:?} {:?}", p, t);
});
