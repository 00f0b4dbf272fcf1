//! The path normaliser: never panics; what it returns is normal (a
//! second pass returns it unchanged), starts with `/`, and has no `.` or
//! `..` segment, under every policy.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ultragate_dataplane::http::path::{normalize, EscapedSlashes, PathBuf, PathRules};

#[derive(Arbitrary, Debug)]
struct Input {
    target: String,
    merge_slashes: bool,
    slashes: u8,
}

fuzz_target!(|input: Input| {
    let rules = PathRules {
        merge_slashes: input.merge_slashes,
        escaped_slashes: match input.slashes % 3 {
            0 => EscapedSlashes::Reject,
            1 => EscapedSlashes::Keep,
            _ => EscapedSlashes::Decode,
        },
    };
    let target = &input.target;
    if !(target.starts_with('/') || target.starts_with('?')) {
        return;
    }
    let mut buf = PathBuf::default();
    let Ok(once) = normalize(target, &rules, &mut buf) else {
        return;
    };
    let once = once.to_owned();
    let path = once.split('?').next().unwrap_or_default();
    assert!(path.starts_with('/'), "{target:?} -> {once:?}");
    assert!(
        !path.split('/').any(|s| s == "." || s == ".."),
        "{target:?} -> {once:?}"
    );
    if rules.merge_slashes {
        assert!(!path.contains("//"), "{target:?} -> {once:?}");
    }
    let mut again = PathBuf::default();
    assert_eq!(
        normalize(&once, &rules, &mut again).map(str::to_owned),
        Ok(once.clone()),
        "{target:?}: not idempotent"
    );
});
