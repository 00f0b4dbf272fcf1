//! One normalised path: the form of a request target that routes, method
//! rules, the cache key and the request line sent upstream all use, so
//! what was routed and keyed is what the origin sees.
//!
//! Like Envoy's `normalize_path` with `merge_slashes` and
//! `path_with_escaped_slashes_action`: percent-encoded unreserved
//! characters are decoded (RFC 3986 §6.2.2.2), other escapes kept with
//! uppercase hex, dot segments removed (RFC 3986 §5.2.4), empty segments
//! merged when configured. A `..` that would climb above the root, a
//! malformed or NUL escape, and (by default) an encoded `/` or `\` or a
//! raw `\` are refused: an origin may decode them into separators the
//! gateway's routes never saw. The query is left as sent.

use thiserror::Error;

/// What becomes of `%2F`, `%5C` and a raw `\` in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    /// 400: the origin might read a separator the routes did not.
    #[default]
    Reject,
    /// Forwarded as they came (escapes with uppercase hex); for origins
    /// known to keep them opaque.
    Keep,
    /// Read as `/` before routing, so the routes see the separators an
    /// origin that decodes them would.
    Decode,
}

/// How paths are normalised (`[api_gateway] merge_slashes`,
/// `escaped_slashes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathRules {
    /// `//` is read as `/`.
    pub merge_slashes: bool,
    /// What becomes of encoded slashes and backslashes.
    pub escaped_slashes: EscapedSlashes,
}

/// Why a path was refused; every one is answered 400.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `%` not followed by two hex digits.
    #[error("malformed percent-encoding in the path")]
    BadEscape,
    /// `%00`.
    #[error("an encoded NUL in the path")]
    Nul,
    /// `%2F`, `%5C` or `\` under the `reject` policy.
    #[error("an encoded slash or a backslash in the path")]
    EscapedSlash,
    /// A `..` segment with nothing left to remove.
    #[error("the path climbs above the root")]
    AboveRoot,
}

/// Reusable buffers for [`normalize`], kept per connection so a request
/// whose path needs rewriting allocates only until they have grown.
#[derive(Debug, Default)]
pub struct PathBuf {
    decoded: Vec<u8>,
    out: String,
}

/// The normalised form of an origin-form `target` (`/path?query`, or a
/// bare `?query`): `target` itself when it is normal already, else a
/// rewrite held in `buf`. Other forms (`*`) are returned as they are.
pub fn normalize<'a>(
    target: &'a str,
    rules: &PathRules,
    buf: &'a mut PathBuf,
) -> Result<&'a str, PathError> {
    let (path, query) = match target.find('?') {
        Some(i) => target.split_at(i),
        None => (target, ""),
    };
    if !(path.is_empty() || path.starts_with('/')) {
        return Ok(target);
    }
    if !path.is_empty() && is_normal(path.as_bytes(), rules) {
        return Ok(target);
    }
    decode(path.as_bytes(), rules.escaped_slashes, &mut buf.decoded)?;
    // Only ASCII was decoded, so UTF-8 in stays UTF-8.
    let decoded = std::str::from_utf8(&buf.decoded).map_err(|_| PathError::BadEscape)?;
    let out = &mut buf.out;
    out.clear();
    remove_dots(decoded, rules.merge_slashes, out)?;
    if out.as_str() == path {
        return Ok(target);
    }
    out.push_str(query);
    Ok(out.as_str())
}

/// True when `path` has nothing to rewrite: no escape, no backslash, no
/// dot segment and (when merging) no empty segment.
fn is_normal(path: &[u8], rules: &PathRules) -> bool {
    let mut prev = 0u8;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' | b'\\' => return false,
            b'/' if rules.merge_slashes && prev == b'/' => return false,
            b'.' if prev == b'/' => {
                // `/.` starts a dot segment when `.` or `..` ends there.
                let rest = &path[i + 1..];
                let seg_end = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
                if seg_end == 0 || (seg_end == 1 && rest[0] == b'.') {
                    return false;
                }
            }
            _ => {}
        }
        prev = b;
    }
    true
}

/// Decodes the escapes of unreserved characters, applies the slash
/// policy, and keeps every other escape with uppercase hex.
fn decode(path: &[u8], slashes: EscapedSlashes, out: &mut Vec<u8>) -> Result<(), PathError> {
    out.clear();
    if path.is_empty() {
        out.push(b'/');
    }
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        i += 1;
        let byte = match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    path.get(i).and_then(|&c| hex(c)),
                    path.get(i + 1).and_then(|&c| hex(c)),
                ) else {
                    return Err(PathError::BadEscape);
                };
                i += 2;
                let d = h << 4 | l;
                if d == 0 {
                    return Err(PathError::Nul);
                }
                if !(is_unreserved(d) || d == b'/' || d == b'\\') {
                    out.extend_from_slice(&[b'%', HEX[usize::from(h)], HEX[usize::from(l)]]);
                    continue;
                }
                if is_unreserved(d) {
                    out.push(d);
                    continue;
                }
                match slashes {
                    EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                    EscapedSlashes::Keep => {
                        out.extend_from_slice(&[b'%', HEX[usize::from(h)], HEX[usize::from(l)]]);
                        continue;
                    }
                    EscapedSlashes::Decode => b'/',
                }
            }
            b'\\' => match slashes {
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Keep => b'\\',
                EscapedSlashes::Decode => b'/',
            },
            b => b,
        };
        out.push(byte);
    }
    Ok(())
}

/// RFC 3986 §5.2.4 on a path starting with `/`, with empty segments
/// dropped when `merge`; a `..` with nothing to remove is an error.
fn remove_dots(path: &str, merge: bool, out: &mut String) -> Result<(), PathError> {
    // Ends with `/`: the last segment was a dot segment or (merged) empty.
    let mut trailing = false;
    for seg in path.split('/').skip(1) {
        match seg {
            "." => trailing = true,
            ".." => {
                if out.is_empty() {
                    return Err(PathError::AboveRoot);
                }
                let cut = out.rfind('/').unwrap_or(0);
                out.truncate(cut);
                trailing = true;
            }
            "" if merge => trailing = true,
            seg => {
                out.push('/');
                out.push_str(seg);
                trailing = false;
            }
        }
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    Ok(())
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// RFC 3986 §2.3: ALPHA / DIGIT / `-` / `.` / `_` / `~`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(target: &str, rules: PathRules) -> Result<String, PathError> {
        let mut buf = PathBuf::default();
        normalize(target, &rules, &mut buf).map(str::to_owned)
    }

    fn default(target: &str) -> Result<String, PathError> {
        norm(target, PathRules::default())
    }

    #[test]
    fn normal_paths_are_returned_as_they_are() {
        for t in [
            "/",
            "/a/b",
            "/a/b/",
            "/.well-known/x",
            "/a..b/c.",
            "/x?a=%2F&b=..",
            "*",
        ] {
            assert_eq!(default(t).as_deref(), Ok(t));
        }
    }

    #[test]
    fn dot_segments_and_unreserved_escapes() {
        let cases = [
            ("/a/./b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/../c?q=1", "/a/c?q=1"),
            ("/assets/%2e%2e/private", "/private"),
            ("/assets/.%2E/private", "/private"),
            ("/%61%62%7e", "/ab~"),
            ("/a%2fb", "/a%2Fb"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("//../x", "/x"),
            ("/a//b", "/a//b"),
            ("?q", "/?q"),
            ("/.", "/"),
        ];
        let keep = PathRules {
            escaped_slashes: EscapedSlashes::Keep,
            ..PathRules::default()
        };
        for (t, want) in cases {
            assert_eq!(norm(t, keep).as_deref(), Ok(want), "{t}");
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(default("/.."), Err(PathError::AboveRoot));
        assert_eq!(default("/a/../.."), Err(PathError::AboveRoot));
        assert_eq!(default("/%2e%2e/etc"), Err(PathError::AboveRoot));
        assert_eq!(default("/a/..%2f..%2fetc"), Err(PathError::EscapedSlash));
        assert_eq!(default("/a\\b"), Err(PathError::EscapedSlash));
        assert_eq!(default("/a%5cb"), Err(PathError::EscapedSlash));
        assert_eq!(default("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(default("/a%4"), Err(PathError::BadEscape));
        assert_eq!(default("/a%00b"), Err(PathError::Nul));
    }

    #[test]
    fn decoding_and_merging_slashes() {
        let rules = PathRules {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Decode,
        };
        assert_eq!(norm("/a//b///c", rules).as_deref(), Ok("/a/b/c"));
        assert_eq!(norm("//", rules).as_deref(), Ok("/"));
        assert_eq!(norm("/a/", rules).as_deref(), Ok("/a/"));
        assert_eq!(
            norm("/norm/assets/..%2fprivate/me", rules).as_deref(),
            Ok("/norm/private/me")
        );
        assert_eq!(norm("/a\\..\\b", rules).as_deref(), Ok("/b"));
        assert_eq!(
            norm("/a%2F%2E%2E%2F..%2F..", rules),
            Err(PathError::AboveRoot)
        );
    }
}
