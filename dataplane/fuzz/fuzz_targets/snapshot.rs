//! The snapshot reader on arbitrary files: the raw bytes as they are, and
//! the same bytes framed as records with valid checksums so the fuzzer
//! reaches the record decoders. Never a panic; the cache's accounting
//! holds whatever was loaded; what a checksummed file restored verifies
//! clean, and a whole file (its end record counts its entries) leaves no
//! more entries than it restored.

#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use std::time::{Instant, SystemTime};
use ultragate_dataplane::cache::{snapshot, Cache, CacheConfig};

#[derive(Arbitrary, Debug)]
struct Input {
    raw: Vec<u8>,
    records: Vec<(u8, Vec<u8>)>,
    end_count: Option<u64>,
}

/// A snapshot file around `records`: header, checksummed records, end.
fn framed(records: &[(u8, Vec<u8>)], end_count: Option<u64>) -> Vec<u8> {
    let mut out = b"UGSNAP\0\0".to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    let mut record = |tag: u8, payload: &[u8]| {
        let mut frame = vec![tag];
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(payload);
        let crc = crc32c::crc32c(&frame);
        out.extend_from_slice(&frame);
        out.extend_from_slice(&crc.to_le_bytes());
    };
    let entries = records.iter().filter(|(t, _)| *t == 1).count() as u64;
    for (tag, payload) in records.iter().filter(|(t, _)| *t != 0xff) {
        record(*tag, payload);
    }
    record(0xff, &end_count.unwrap_or(entries).to_le_bytes());
    out
}

fuzz_target!(|input: Input| {
    let cache = Cache::new(CacheConfig {
        max_bytes: 1 << 20,
        max_object_bytes: 1 << 16,
    });
    let (now, wall) = (Instant::now(), SystemTime::now());
    let _ = snapshot::load(&cache, Bytes::from(input.raw), now, wall);
    let file = framed(&input.records, input.end_count);
    if let Some((restored, _)) = snapshot::load(&cache, Bytes::from(file), now, wall) {
        let report = cache.verify();
        assert_eq!(report.corrupt, 0, "restored records verify clean");
        if input.end_count.is_none() {
            assert!(
                cache.entries().len() <= restored as usize,
                "a whole file replaces the cache: {} entries, {restored} restored",
                cache.entries().len()
            );
        }
    }
    assert!(cache.bytes() <= 1 << 20, "the budget holds after a restore");
});
