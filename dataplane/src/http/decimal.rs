//! Decimal numbers written without the formatting machinery or an
//! allocation: the one writer every head field (`Content-Length`, `Age`,
//! `Content-Range`) and the access log's numbers use.

/// The digits of `n`, written into the end of `buf`.
pub fn digits(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut v = n;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// The digits of `n`, left-padded with zeros to at least `width` (at
/// most 20).
pub fn padded(n: u64, width: usize, buf: &mut [u8; 20]) -> &[u8] {
    let end = buf.len();
    let len = digits(n, buf).len();
    let start = end - len.max(width.min(end));
    buf[start..end - len].fill(b'0');
    &buf[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_and_padding_match_the_formatter() {
        for n in [0, 7, 10, 999_999, 1_000_000, u64::MAX] {
            let mut buf = [0; 20];
            assert_eq!(digits(n, &mut buf), n.to_string().as_bytes());
            assert_eq!(padded(n, 6, &mut buf), format!("{n:06}").as_bytes());
        }
    }
}
