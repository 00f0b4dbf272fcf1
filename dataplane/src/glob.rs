//! Globs where `*` matches any run of bytes (purge patterns, drop-in file
//! names), matched in linear time: the pattern splits at its stars into
//! literals; the first must start the text, the last must end it, and
//! each one between is found leftmost after the one before (leftmost is
//! always right when `*` is the only wildcard), with a linear-time
//! substring search. No backtracking, whatever the input.

use memchr::memmem;

/// Whether `text` matches `pattern`, in O(pattern + text) time.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let mut parts = pattern.split(|&b| b == b'*');
    let first = parts.next().unwrap_or_default();
    let Some(rest) = text.strip_prefix(first) else {
        return false;
    };
    let middle: Vec<&[u8]> = parts.collect();
    let Some((last, middle)) = middle.split_last() else {
        // No star: the whole text.
        return rest.is_empty();
    };
    if rest.len() < last.len() {
        return false;
    }
    // The last literal ends the text; the middle ones fit before it.
    let (mut window, tail) = rest.split_at(rest.len() - last.len());
    if tail != *last {
        return false;
    }
    for literal in middle.iter().filter(|l| !l.is_empty()) {
        match memmem::find(window, literal) {
            Some(at) => window = window.get(at + literal.len()..).unwrap_or_default(),
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_match_any_run() {
        for (p, t, m) in [
            ("/img/*.png", "/img/a/b.png", true),
            ("/img/*.png", "/img/a.jpg", false),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("a*", "a", true),
            ("*a", "ba", true),
            ("a*a", "a", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "acb", false),
            ("a*b*c", "aXbYbc", true),
            ("*.toml", "a.toml.bak", false),
            ("**x**", "yx", true),
            ("/x", "/x", true),
            ("/x", "/xy", false),
        ] {
            assert_eq!(matches(p.as_bytes(), t.as_bytes()), m, "{p:?} {t:?}");
        }
    }

    #[test]
    fn many_stars_against_a_long_text_do_not_backtrack() {
        // Exponential for a backtracking matcher (the old purge's hung a
        // data core for over a minute on four stars).
        let text = vec![b'a'; 100_000];
        assert!(!matches(b"*a*a*a*a*a*a*a*a*b", &text));
        assert!(matches(b"*a*a*a*a*a*a*a*a*", &text));
    }
}
