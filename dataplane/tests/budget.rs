//! The cache's byte budget against the heap it really uses: a counting
//! allocator measures every byte the cache holds, overhead included.

use bytes::Bytes;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Instant, SystemTime};
use ultragate_dataplane::cache::entry::Meta;
use ultragate_dataplane::cache::{url_key, Cache, CacheConfig, Scheme, Stored};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: ptr came from alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn meta() -> Meta {
    Meta {
        status: 200,
        stored_wall: SystemTime::now(),
        initial_age: 0,
        lifetime: 600,
        must_revalidate: false,
        no_cache: false,
        auth_ok: false,
        stale_while_revalidate: 0,
        stale_if_error: 0,
        etag: None,
        last_modified: None,
        vary_id: 0,
    }
}

#[test]
fn heap_held_by_a_full_cache_stays_within_five_percent_of_the_budget() {
    for (object, max, vary) in [
        (1024usize, 4u64 << 20, false),
        (100, 2 << 20, false),
        (16 * 1024, 8 << 20, false),
        // Variants under long URLs whose Vary changes, so markers are
        // replaced and evicted all along: each must be refunded in full.
        (1024, 4 << 20, true),
    ] {
        let before = LIVE.load(Ordering::Relaxed);
        let cache = Cache::new(CacheConfig {
            max_bytes: max,
            max_object_bytes: 1 << 20,
        });
        let head = Bytes::from_static(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: max-age=600\r\n",
        );
        let mut key = Vec::new();
        // Three times the budget, so eviction runs all along.
        let n = 3 * max as usize / (object + 200);
        let padding = if vary {
            "p".repeat(1500)
        } else {
            String::new()
        };
        let names: [Vec<Box<str>>; 2] = [vec!["accept".into()], vec!["accept-language".into()]];
        for i in 0..n {
            let len = url_key(
                &mut key,
                Scheme::Http,
                b"example.com",
                format!("/objects/{}?v=1{padding}", if vary { i / 4 } else { i }).as_bytes(),
            );
            let body = Bytes::from(vec![b'x'; object]);
            let head = Bytes::copy_from_slice(&head);
            let request = [httparse::Header {
                name: "Accept",
                value: if i % 2 == 0 { b"a" } else { b"b" },
            }];
            cache.insert(
                &key[..len],
                vary.then(|| &names[i % 2][..]),
                &request,
                Stored {
                    head,
                    body,
                    meta: meta(),
                },
                Instant::now(),
            );
        }
        // Let deferred reclamation of replaced map nodes catch up.
        for _ in 0..3 {
            let _ = cache.len();
        }
        let used = (LIVE.load(Ordering::Relaxed) - before) as f64;
        let ratio = used / max as f64;
        eprintln!(
            "{object}: entries {} heap/entry {:.0} charged/entry {:.0}",
            cache.len(),
            used / cache.len() as f64,
            cache.bytes() as f64 / cache.len() as f64
        );
        assert!(cache.bytes() <= max, "accounting over budget");
        if vary {
            assert!(
                cache.bytes() >= max / 2,
                "the budget is not leaked: {} charged",
                cache.bytes()
            );
        }
        assert!(
            ratio <= 1.05,
            "{object}-byte objects: heap {used} is {:.1}% of the {max} budget",
            ratio * 100.0
        );
        assert!(ratio >= 0.5, "the budget is used: {:.1}%", ratio * 100.0);
        drop(cache);
    }
}
