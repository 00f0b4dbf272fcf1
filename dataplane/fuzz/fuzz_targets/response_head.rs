//! Response heads from an upstream: any bytes give a head, "more bytes",
//! or a 502 reason; never a panic, and the framing is consistent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ultragate_dataplane::http::response::ResponseHead;
use ultragate_dataplane::http::{Framing, MAX_HEADERS};

fuzz_target!(|data: &[u8]| {
    for head_request in [false, true] {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        if let Ok(Some(head)) = ResponseHead::parse(data, &mut headers, 4096, head_request) {
            assert!(head.head_len <= data.len());
            assert!((100..=999).contains(&head.status));
            if head_request || head.status < 200 || head.status == 204 || head.status == 304 {
                assert_eq!(head.framing, Framing::Empty);
            }
            if head.framing == Framing::UntilClose {
                assert!(!head.reusable, "a body ended by the close cannot be reused");
            }
        }
    }
});
