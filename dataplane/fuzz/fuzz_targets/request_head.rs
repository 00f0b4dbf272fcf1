//! Request heads: any bytes give a head, "more bytes", or an error status;
//! never a panic, and a parsed head stays inside the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ultragate_dataplane::http::request::{RequestHead, RequestLimits};
use ultragate_dataplane::http::{Framing, MAX_HEADERS};

fuzz_target!(|data: &[u8]| {
    let limits = RequestLimits {
        max_header_bytes: 4096,
        max_body_bytes: 1 << 20,
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match RequestHead::parse(data, &mut headers, &limits) {
        Ok(Some(head)) => {
            assert!(head.head_len <= data.len() && head.head_len <= limits.max_header_bytes);
            assert!(data[..head.head_len].ends_with(b"\n"));
            if let Framing::Length(n) = head.framing {
                assert!(n > 0 && n <= limits.max_body_bytes);
            }
            assert!(
                head.target.starts_with('/') || head.target.contains("://") || head.target == "*"
            );
        }
        Ok(None) => assert!(data.len() <= limits.max_header_bytes),
        Err(e) => assert!(matches!(e.status(), 400 | 413 | 417 | 431 | 501)),
    }
});
