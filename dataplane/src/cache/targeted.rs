//! Targeted cache control (RFC 9213): fields such as `CDN-Cache-Control`
//! that an origin addresses to a class of caches. When one of the fields
//! this cache targets is present with a valid, non-empty value, the first
//! of them (in the configured order) decides freshness and storability, and
//! the response's `Cache-Control` and `Expires` are ignored by this cache
//! (they stay for the caches downstream). A targeted field is a Structured
//! Field Dictionary (RFC 8941 §3.2); one that does not parse is ignored as
//! a whole. Targeted fields are end-to-end: they are forwarded and stored
//! as the origin sent them, for the other caches they may address.

use super::rules::CacheControl;

/// The targeted fields a cache uses when none are configured.
pub const DEFAULT: &[&str] = &["CDN-Cache-Control"];

/// The directives of the first valid targeted field among `names`, in
/// their order; `None` when none is present and valid.
pub fn directives(headers: &[httparse::Header<'_>], names: &[Box<str>]) -> Option<CacheControl> {
    names.iter().find_map(|name| {
        let mut fields = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .peekable();
        fields.peek()?;
        // Several lines of one field are one comma-separated value.
        let mut cc = CacheControl {
            targeted: true,
            ..CacheControl::default()
        };
        let mut any = false;
        for h in fields {
            for (key, value) in dictionary(h.value)? {
                any = true;
                apply(&mut cc, key, value);
            }
        }
        any.then_some(cc)
    })
}

/// A member's value as far as cache directives care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    /// Absent or `?1`.
    True,
    /// `?0`.
    False,
    /// A non-negative integer.
    Integer(u64),
    /// Anything else (string, token, decimal, byte sequence, inner list).
    Other,
}

fn apply(cc: &mut CacheControl, key: &[u8], value: Value) {
    let seconds = match value {
        // RFC 9111 §1.2.2: saturate.
        Value::Integer(n) => Some(n.min(1 << 31)),
        _ => None,
    };
    let flag = value == Value::True;
    match key {
        b"no-store" => cc.no_store |= flag,
        b"no-cache" => cc.no_cache |= flag || matches!(value, Value::Other),
        b"private" => cc.private |= flag || matches!(value, Value::Other),
        b"public" => cc.public |= flag,
        b"must-revalidate" => cc.must_revalidate |= flag,
        b"proxy-revalidate" => cc.proxy_revalidate |= flag,
        b"max-age" => cc.max_age = seconds.or(cc.max_age),
        b"s-maxage" => cc.s_maxage = seconds.or(cc.s_maxage),
        b"stale-while-revalidate" => {
            cc.stale_while_revalidate = seconds.or(cc.stale_while_revalidate)
        }
        b"stale-if-error" => cc.stale_if_error = seconds.or(cc.stale_if_error),
        _ => {}
    }
}

/// Parses a Structured Field Dictionary (RFC 8941 §4.2.2) into its
/// members; `None` when the value does not parse (the field is then
/// ignored as a whole).
fn dictionary(input: &[u8]) -> Option<Vec<(&[u8], Value)>> {
    let mut p = Parser { b: input, i: 0 };
    p.skip(b" \t");
    let mut members = Vec::new();
    while p.i < p.b.len() {
        let key = p.key()?;
        let value = if p.eat(b'=') {
            p.member_value()?
        } else {
            p.parameters()?;
            Value::True
        };
        members.push((key, value));
        p.skip(b" \t");
        if p.i == p.b.len() {
            break;
        }
        if !p.eat(b',') {
            return None;
        }
        p.skip(b" \t");
        if p.i == p.b.len() {
            return None; // a trailing comma
        }
    }
    Some(members)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn skip(&mut self, set: &[u8]) {
        while self.peek().is_some_and(|c| set.contains(&c)) {
            self.i += 1;
        }
    }

    fn key(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        if !self
            .peek()
            .is_some_and(|c| c.is_ascii_lowercase() || c == b'*')
        {
            return None;
        }
        self.i += 1;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.*".contains(&c))
        {
            self.i += 1;
        }
        self.b.get(start..self.i)
    }

    fn member_value(&mut self) -> Option<Value> {
        let value = if self.eat(b'(') {
            // An inner list: items separated by spaces, then parameters.
            loop {
                self.skip(b" ");
                if self.eat(b')') {
                    break;
                }
                self.bare_item()?;
                self.parameters()?;
                if !matches!(self.peek(), Some(b' ' | b')')) {
                    return None;
                }
            }
            Value::Other
        } else {
            self.bare_item()?
        };
        self.parameters()?;
        Some(value)
    }

    fn parameters(&mut self) -> Option<()> {
        while self.eat(b';') {
            self.skip(b" ");
            self.key()?;
            if self.eat(b'=') {
                self.bare_item()?;
            }
        }
        Some(())
    }

    fn bare_item(&mut self) -> Option<Value> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => {
                self.i += 1;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.i += 1;
                            return Some(Value::Other);
                        }
                        b'\\' => {
                            self.i += 1;
                            if !matches!(self.peek()?, b'"' | b'\\') {
                                return None;
                            }
                            self.i += 1;
                        }
                        0x20..=0x7e => self.i += 1,
                        _ => return None,
                    }
                }
            }
            b'?' => {
                self.i += 1;
                let v = match self.peek()? {
                    b'1' => Value::True,
                    b'0' => Value::False,
                    _ => return None,
                };
                self.i += 1;
                Some(v)
            }
            b':' => {
                self.i += 1;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
                {
                    self.i += 1;
                }
                self.eat(b':').then_some(Value::Other)
            }
            c if c.is_ascii_alphabetic() || c == b'*' => {
                self.i += 1;
                while self
                    .peek()
                    .is_some_and(|c| crate::http::chunked::is_tchar(c) || c == b':' || c == b'/')
                {
                    self.i += 1;
                }
                Some(Value::Other)
            }
            _ => None,
        }
    }

    fn number(&mut self) -> Option<Value> {
        let negative = self.eat(b'-');
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        let digits = self.b.get(start..self.i)?;
        if digits.is_empty() || digits.len() > 15 {
            return None;
        }
        if self.eat(b'.') {
            let frac = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
            let n = self.i - frac;
            if n == 0 || n > 3 || digits.len() > 12 {
                return None;
            }
            return Some(Value::Other);
        }
        if negative {
            return Some(Value::Other);
        }
        let n = digits
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        Some(Value::Integer(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(list: &[(&'a str, &'a str)]) -> Vec<httparse::Header<'a>> {
        list.iter()
            .map(|(n, v)| httparse::Header {
                name: n,
                value: v.as_bytes(),
            })
            .collect()
    }

    fn names(list: &[&str]) -> Vec<Box<str>> {
        list.iter().map(|n| (*n).into()).collect()
    }

    #[test]
    fn rfc9213_2_1_the_first_valid_targeted_field_wins() {
        let cdn = names(DEFAULT);
        let headers = h(&[
            ("Cache-Control", "no-store"),
            ("CDN-Cache-Control", "max-age=600, stale-if-error=30"),
        ]);
        let cc = directives(&headers, &cdn).unwrap();
        assert!(cc.targeted && !cc.no_store);
        assert_eq!((cc.max_age, cc.stale_if_error), (Some(600), Some(30)));
        // An operator's own field goes first when present.
        let own = names(&["Ultragate-Cache-Control", "CDN-Cache-Control"]);
        let mut both = headers.clone();
        both.push(httparse::Header {
            name: "ultragate-cache-control",
            value: b"no-store",
        });
        assert!(directives(&both, &own).unwrap().no_store);
        assert_eq!(directives(&headers, &own).unwrap().max_age, Some(600));
        assert!(directives(&h(&[("Cache-Control", "max-age=1")]), &cdn).is_none());
    }

    #[test]
    fn rfc9213_2_1_an_invalid_field_is_ignored_as_a_whole() {
        let cdn = names(DEFAULT);
        for bad in [
            "Max-Age=600",
            "max-age=600,",
            "max-age=600;",
            "max-age=\"600",
            "max-age=600 no-store",
            "",
            "max-age=12345678901234567",
            ", max-age=5",
        ] {
            assert!(
                directives(&h(&[("CDN-Cache-Control", bad)]), &cdn).is_none(),
                "{bad:?}"
            );
        }
        for good in [
            "no-store",
            "max-age=60, private",
            "no-cache=\"set-cookie\", max-age=5",
            "s-maxage=5;x=1, stale-while-revalidate=?0",
            "foo=(a b), bar=1.5, baz=:YWJj:, max-age=1",
        ] {
            assert!(
                directives(&h(&[("CDN-Cache-Control", good)]), &cdn).is_some(),
                "{good:?}"
            );
        }
        let cc = directives(
            &h(&[("CDN-Cache-Control", "max-age=\"60\", private=?0")]),
            &cdn,
        )
        .unwrap();
        assert_eq!(
            cc.max_age, None,
            "a max-age that is not an integer is no max-age"
        );
        assert!(!cc.private, "private=?0 is false");
    }
}
