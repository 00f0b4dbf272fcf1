//! The store: lookups, variants, eviction, budget, integrity, snapshots,
//! purges, fetch claims.

use super::entry::Meta;
use super::snapshot;
use super::*;
use std::time::SystemTime;

fn meta() -> Meta {
    Meta {
        status: 200,
        stored_wall: SystemTime::now(),
        initial_age: 0,
        lifetime: 60,
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

fn stored(body: &[u8]) -> Stored {
    Stored {
        head: Bytes::from_static(b"HTTP/1.1 200 OK\r\n"),
        body: Bytes::copy_from_slice(body),
        meta: meta(),
    }
}

fn cache(max: u64) -> Cache {
    Cache::new(CacheConfig {
        max_bytes: max,
        max_object_bytes: 1 << 20,
    })
}

fn put(c: &Cache, path: &str, body: &[u8]) {
    let mut key = Vec::new();
    url_key(&mut key, Scheme::Http, b"Example.COM", path.as_bytes());
    assert!(c.insert(&key, None, &[], stored(body), Instant::now()));
}

fn get(c: &Cache, path: &str) -> Option<Arc<Entry>> {
    let mut key = Vec::new();
    let n = url_key(&mut key, Scheme::Http, b"example.com", path.as_bytes());
    c.lookup(&mut key, n, &[])
}

#[test]
fn stores_and_finds_by_host_and_target() {
    let c = cache(1 << 20);
    put(&c, "/a?x=1", b"hello");
    assert_eq!(&get(&c, "/a?x=1").unwrap().body[..], b"hello");
    assert!(get(&c, "/a?x=2").is_none());
    let mut key = Vec::new();
    let n = url_key(&mut key, Scheme::Http, b"other.example", b"/a?x=1");
    assert!(
        c.lookup(&mut key, n, &[]).is_none(),
        "the host is part of the key"
    );
}

#[test]
fn the_scheme_is_in_the_key_and_a_removal_takes_both() {
    let c = cache(1 << 20);
    let (mut http, mut https) = (Vec::new(), Vec::new());
    let n = url_key(&mut http, Scheme::Http, b"Example.COM", b"/r");
    let m = url_key(&mut https, Scheme::Https, b"Example.COM", b"/r");
    assert_eq!(
        url_parts(&http),
        (Scheme::Http, &b"example.com"[..], &b"/r"[..])
    );
    assert_eq!(
        url_parts(&https),
        (Scheme::Https, &b"example.com"[..], &b"/r"[..])
    );
    assert!(c.insert(&http, None, &[], stored(b"to https://"), Instant::now()));
    assert!(c.lookup(&mut https, m, &[]).is_none(), "not the other's");
    assert!(c.insert(&https, None, &[], stored(b"page"), Instant::now()));
    assert_eq!(&c.lookup(&mut https, m, &[]).unwrap().body[..], b"page");
    assert_eq!(
        &c.lookup(&mut http, n, &[]).unwrap().body[..],
        b"to https://"
    );
    // A change to the resource (an unsafe method by either scheme) stales
    // both.
    assert!(c.remove_url(&https[..m]));
    assert!(c.lookup(&mut http, n, &[]).is_none());
    assert!(c.lookup(&mut https, m, &[]).is_none());
    // So does a purge of the URL, and a ban of its host.
    for purge in [true, false] {
        assert!(c.insert(&http, None, &[], stored(b"a"), Instant::now()));
        assert!(c.insert(&https, None, &[], stored(b"b"), Instant::now()));
        if purge {
            assert!(c.purge(Some(b"example.com"), Pattern::Exact(b"/r"[..].into())));
        } else {
            assert!(c.purge(Some(b"Example.com"), Pattern::Prefix(b"/"[..].into())));
        }
        assert!(c.lookup(&mut http, n, &[]).is_none(), "purge {purge}");
        assert!(c.lookup(&mut https, m, &[]).is_none(), "purge {purge}");
    }
}

#[test]
fn variants_are_kept_apart() {
    let c = cache(1 << 20);
    let names: Vec<Box<str>> = vec!["accept-encoding".into()];
    let mut key = Vec::new();
    let n = url_key(&mut key, Scheme::Http, b"h", b"/v");
    let gzip = [httparse::Header {
        name: "Accept-Encoding",
        value: b"gzip",
    }];
    let br = [httparse::Header {
        name: "accept-encoding",
        value: b"br",
    }];
    assert!(c.insert(
        &key[..n],
        Some(&names),
        &gzip,
        stored(b"gz"),
        Instant::now()
    ));
    assert!(c.insert(
        &key[..n],
        Some(&names),
        &br,
        stored(b"brotli"),
        Instant::now()
    ));
    assert_eq!(&c.lookup(&mut key, n, &gzip).unwrap().body[..], b"gz");
    assert_eq!(&c.lookup(&mut key, n, &br).unwrap().body[..], b"brotli");
    assert!(
        c.lookup(&mut key, n, &[]).is_none(),
        "no stored variant without the field"
    );
}

#[test]
fn vary_markers_are_refunded_what_they_were_charged() {
    let c = cache(1 << 20);
    let long = format!("/v/{}", "p".repeat(2000));
    let accept: Vec<Box<str>> = vec!["accept".into()];
    let lang: Vec<Box<str>> = vec!["accept-language".into()];
    let mut key = Vec::new();
    let n = url_key(&mut key, Scheme::Http, b"h", long.as_bytes());
    // Each insert with other Vary names replaces the marker.
    for i in 0..200 {
        let names = if i % 2 == 0 { &accept } else { &lang };
        c.insert(&key[..n], Some(names), &[], stored(b"x"), Instant::now());
    }
    let markers: u64 = c
        .vary_markers()
        .iter()
        .map(|m| m.url.len() as u64 + crate::cache::entry::ENTRY_OVERHEAD)
        .sum();
    let objects: u64 = c.entries().iter().map(|e| e.charge()).sum();
    assert_eq!(c.bytes(), markers + objects, "charged exactly what is held");
    c.remove_url(&key[..n]);
    let objects: u64 = c.entries().iter().map(|e| e.charge()).sum();
    assert_eq!(c.bytes(), objects, "the marker's whole charge came back");
    c.shrink_to(0);
    assert_eq!(c.bytes(), 0);
}

#[test]
fn uncacheable_marks_are_bounded_and_cleared() {
    let c = cache(1 << 20);
    let now = Instant::now();
    let ttl = Duration::from_secs(30);
    let mut key = Vec::new();
    for i in 0..100_000 {
        let n = url_key(
            &mut key,
            Scheme::Http,
            b"h",
            format!("/unique/{i}/{}", "q".repeat(100)).as_bytes(),
        );
        c.mark_uncacheable(&key[..n], now, ttl);
        assert!(c.fetch_state_bytes() <= crate::cache::coalesce::MAX_FETCH_STATE_BYTES);
    }
    assert!(c.fetch_state_bytes() > crate::cache::coalesce::MAX_FETCH_STATE_BYTES / 2);
    // Expired marks make room again.
    let later = now + ttl + Duration::from_secs(1);
    let n = url_key(
        &mut key,
        Scheme::Http,
        b"h",
        format!("/fresh/{}", "q".repeat(200)).as_bytes(),
    );
    c.mark_uncacheable(&key[..n], later, ttl);
    assert!(matches!(c.claim_fetch(&key[..n], later, ttl), Claim::Pass));
    assert!(
        c.fetch_state_bytes() < 1024,
        "swept: {}",
        c.fetch_state_bytes()
    );
    c.clear();
    assert_eq!(c.fetch_state_bytes(), 0, "a clear forgets the marks");
    assert!(matches!(
        c.claim_fetch(&key[..n], later, ttl),
        Claim::Claimed
    ));
}

#[test]
fn budget_holds_including_overhead() {
    let max = 200_000;
    let c = cache(max);
    for i in 0..2000 {
        put(&c, &format!("/obj/{i}"), &[b'x'; 700]);
        assert!(c.bytes() <= max, "{} > {max} after {i}", c.bytes());
    }
    let held: u64 = c.entries().iter().map(|e| e.charge()).sum();
    assert_eq!(held, c.bytes());
    assert!(held > max * 9 / 10, "the budget is used: {held}");
}

#[test]
fn hot_objects_survive_a_scan() {
    let c = cache(100 * 1400);
    for i in 0..20 {
        put(&c, &format!("/hot/{i}"), &[b'h'; 1000]);
    }
    for round in 0..2000 {
        for i in 0..20 {
            assert!(
                get(&c, &format!("/hot/{i}")).is_some() || round == 0,
                "hot object {i} evicted"
            );
        }
        // A scan of one-hit objects passes through, 5 per round.
        for j in 0..5 {
            put(&c, &format!("/scan/{round}/{j}"), &[b's'; 1000]);
        }
    }
    let hot = (0..20)
        .filter(|i| get(&c, &format!("/hot/{i}")).is_some())
        .count();
    assert_eq!(
        hot, 20,
        "every hot object is still cached after a scan of 10000"
    );
}

#[test]
fn verify_finds_exactly_the_corrupted_entry() {
    let c = cache(1 << 20);
    for i in 0..50 {
        put(&c, &format!("/e/{i}"), format!("body {i}").as_bytes());
    }
    let victim = get(&c, "/e/17").unwrap();
    assert!(c.corrupt_for_test(&victim.key));
    assert_eq!(
        c.verify(),
        VerifyReport {
            checked: 50,
            corrupt: 1
        }
    );
    assert!(get(&c, "/e/17").is_none(), "evicted");
    assert_eq!(
        c.verify(),
        VerifyReport {
            checked: 49,
            corrupt: 0
        }
    );
}

#[test]
fn clear_empties() {
    let c = cache(1 << 20);
    put(&c, "/a", b"1");
    put(&c, "/b", b"2");
    assert_eq!(c.clear(), 2);
    assert_eq!((c.len(), c.bytes()), (0, 0));
    assert!(get(&c, "/a").is_none());
}

#[test]
fn purge_by_prefix_and_pattern_is_lazy_and_swept() {
    let c = cache(1 << 20);
    for p in ["/img/a.png", "/img/b.jpg", "/img/c.png", "/api/x", "/imgx"] {
        put(&c, p, b"data");
    }
    assert!(c.purge(None, Pattern::Prefix(b"/img/"[..].into())));
    assert!(get(&c, "/img/a.png").is_none());
    assert!(get(&c, "/imgx").is_some() && get(&c, "/api/x").is_some());
    assert_eq!(c.sweep(), 2, "the rest of the prefix goes in the sweep");
    put(&c, "/img/a.png", b"new");
    assert!(
        get(&c, "/img/a.png").is_some(),
        "a ban does not touch newer entries"
    );

    put(&c, "/img/d.png", b"d");
    put(&c, "/img/e.gif", b"e");
    assert!(c.purge(
        Some(b"example.com"),
        Pattern::Glob(b"/img/*.png"[..].into()),
    ));
    assert!(get(&c, "/img/d.png").is_none() && get(&c, "/img/a.png").is_none());
    assert!(get(&c, "/img/e.gif").is_some());
    assert!(c.purge(Some(b"example.com"), Pattern::Exact(b"/api/x"[..].into())));
    assert!(get(&c, "/api/x").is_none());
    // Pending purges are bounded until the sweep applies them.
    c.sweep();
    for _ in 0..MAX_PENDING_BANS {
        assert!(c.purge(None, Pattern::Prefix(b"/none/"[..].into())));
    }
    assert!(
        !c.purge(None, Pattern::Prefix(b"/none/"[..].into())),
        "full"
    );
    c.sweep();
    assert!(
        c.purge(None, Pattern::Prefix(b"/none/"[..].into())),
        "swept"
    );
}

#[test]
fn one_fetch_per_missing_key() {
    let c = cache(1 << 20);
    let now = Instant::now();
    let wait = Duration::from_secs(2);
    assert!(matches!(c.claim_fetch(b"k", now, wait), Claim::Claimed));
    assert!(
        matches!(c.claim_fetch(b"k", now, wait), Claim::Wait(_)),
        "a second miss waits"
    );
    assert!(
        matches!(c.claim_fetch(b"k", now + wait, wait), Claim::Claimed),
        "a stuck fetch stops holding others after the wait"
    );
    c.release_fetch(b"k");
    assert!(matches!(c.claim_fetch(b"k", now, wait), Claim::Claimed));
    c.mark_uncacheable(b"k", now, Duration::from_secs(30));
    assert!(
        matches!(c.claim_fetch(b"k", now, wait), Claim::Pass),
        "uncacheable: nobody waits"
    );
    c.release_fetch(b"k");
    assert!(
        matches!(c.claim_fetch(b"k", now, wait), Claim::Pass),
        "a release keeps the pass mark"
    );
    assert!(
        matches!(
            c.claim_fetch(b"k", now + Duration::from_secs(31), wait),
            Claim::Claimed
        ),
        "until it expires"
    );
}

fn snapdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ug-snap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn snapshot_round_trip_with_variants() {
    let dir = snapdir("rt");
    let c = cache(1 << 20);
    put(&c, "/a", b"alpha");
    let names: Vec<Box<str>> = vec!["accept-language".into()];
    let mut key = Vec::new();
    let n = url_key(&mut key, Scheme::Http, b"example.com", b"/v");
    let de = [httparse::Header {
        name: "Accept-Language",
        value: b"de",
    }];
    c.insert(
        &key[..n],
        Some(&names),
        &de,
        stored(b"hallo"),
        Instant::now(),
    );
    let w = snapshot::write(&c, &dir).unwrap();
    assert_eq!(w.entries, 2);

    let restored = cache(1 << 20);
    let r = snapshot::restore(&restored, &dir).unwrap();
    assert_eq!((r.restored, r.skipped), (2, 0));
    assert_eq!(&get(&restored, "/a").unwrap().body[..], b"alpha");
    assert_eq!(
        &restored.lookup(&mut key, n, &de).unwrap().body[..],
        b"hallo"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A writer that dies after `left` bytes, like a process killed mid-write.
struct Dies {
    left: usize,
}

impl std::io::Write for Dies {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("killed"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn writer_killed_mid_write_leaves_previous_snapshot_restorable() {
    let dir = snapdir("killed");
    let c = cache(1 << 20);
    put(&c, "/old", b"old");
    snapshot::write(&c, &dir).unwrap();
    put(&c, "/new", b"new");
    assert!(snapshot::write_to(&c, &mut Dies { left: 100 }, 0).is_err());
    // What a killed writer leaves: a partial temporary file, and even a
    // truncated file under a snapshot name.
    let mut partial = Vec::new();
    let _ = snapshot::write_to(&c, &mut partial, 0);
    std::fs::write(
        dir.join(".cache-9999999999999999.snap.tmp"),
        &partial[..partial.len() / 2],
    )
    .unwrap();
    std::fs::write(
        dir.join("cache-9999999999999999.snap"),
        &partial[..partial.len() - 3],
    )
    .unwrap();

    let restored = cache(1 << 20);
    let r = snapshot::restore(&restored, &dir).unwrap();
    assert_eq!((r.restored, r.rejected_files), (1, 1));
    assert!(get(&restored, "/old").is_some() && get(&restored, "/new").is_none());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_records_are_skipped_and_counted() {
    let dir = snapdir("bad");
    let c = cache(1 << 20);
    put(&c, "/a", b"aaaaaaaaaaaaaaaa");
    put(&c, "/b", b"bbbbbbbbbbbbbbbb");
    let w = snapshot::write(&c, &dir).unwrap();
    let mut data = std::fs::read(&w.file).unwrap();
    let at = data
        .windows(16)
        .position(|x| x == b"bbbbbbbbbbbbbbbb")
        .unwrap();
    data[at] ^= 0x20;
    std::fs::write(&w.file, data).unwrap();
    let restored = cache(1 << 20);
    let r = snapshot::restore(&restored, &dir).unwrap();
    assert_eq!((r.restored, r.skipped), (1, 1));
    assert!(snapshot::restore(&restored, &snapdir("none")).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn shrink_evicts_down_to_the_target() {
    let c = cache(1 << 20);
    for i in 0..100 {
        put(&c, &format!("/s/{i}"), &[b'x'; 1000]);
    }
    let before = c.bytes();
    let freed = c.shrink_to(before / 2);
    assert!(
        c.bytes() <= before / 2 && freed >= before / 2 - 2000,
        "{before} {freed}"
    );
}

#[test]
fn a_snapshot_with_an_id_at_the_top_of_the_range_is_skipped_not_a_crash() {
    // Found by the snapshot fuzzer: a marker record with id u64::MAX made
    // the restore's `id + 1` overflow.
    let frame = |tag: u8, payload: &[u8]| {
        let mut f = vec![tag];
        f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        f.extend_from_slice(payload);
        let crc = crc32c::crc32c(&f);
        f.extend_from_slice(&crc.to_le_bytes());
        f
    };
    let mut file = b"UGSNAP\0\0".to_vec();
    file.extend_from_slice(&1u32.to_le_bytes());
    file.extend_from_slice(&0u64.to_le_bytes());
    let crc = crc32c::crc32c(&file);
    file.extend_from_slice(&crc.to_le_bytes());
    let mut marker = Vec::new();
    marker.extend_from_slice(&2u32.to_le_bytes());
    marker.extend_from_slice(b"h ");
    marker.extend_from_slice(&u64::MAX.to_le_bytes());
    marker.extend_from_slice(&0u16.to_le_bytes());
    file.extend(frame(2, &marker));
    file.extend(frame(0xff, &0u64.to_le_bytes()));
    let c = cache(1 << 20);
    let loaded = snapshot::load(
        &c,
        Bytes::from(file),
        Instant::now(),
        std::time::SystemTime::now(),
    );
    assert_eq!(loaded, Some((0, 1)), "the record is skipped as damaged");
}

/// Found by the `snapshot` fuzz target: a record's age, lifetime and
/// stale windows are whatever the file says, and an age near `u64::MAX`
/// plus the time on disk overflowed. They saturate now.
#[test]
fn snapshot_with_extreme_ages_loads_without_overflow() {
    let c = cache(1 << 20);
    let mut key = Vec::new();
    url_key(&mut key, Scheme::Http, b"example.com", b"/old");
    let mut s = stored(b"x");
    s.meta.stored_wall = std::time::UNIX_EPOCH;
    s.meta.initial_age = u64::MAX - 1;
    s.meta.lifetime = u64::MAX;
    s.meta.stale_while_revalidate = u64::MAX;
    s.meta.stale_if_error = u64::MAX;
    assert!(c.insert(&key, None, &[], s, Instant::now()));
    let mut file = Vec::new();
    snapshot::write_to(&c, &mut file, 0).unwrap();

    let restored = cache(1 << 20);
    let now = Instant::now();
    let loaded = snapshot::load(&restored, Bytes::from(file), now, SystemTime::now());
    assert_eq!(loaded, Some((1, 0)));
    let e = get(&restored, "/old").unwrap();
    assert_eq!(e.age(now + std::time::Duration::from_secs(5)), u64::MAX);
}

/// A reload's smaller budget evicts down to it at once, and a smaller
/// object limit refuses larger bodies from then on.
#[test]
fn set_config_shrinks_to_the_new_budget() {
    let c = cache(1 << 20);
    for i in 0..64 {
        put(&c, &format!("/{i}"), &[b'x'; 8 << 10]);
    }
    let before = c.bytes();
    assert!(before > 256 << 10);
    let freed = c.set_config(CacheConfig {
        max_bytes: 256 << 10,
        max_object_bytes: 1 << 10,
    });
    assert!(c.bytes() <= 256 << 10 && freed == before - c.bytes());
    assert_eq!(c.config().max_bytes, 256 << 10);
    let mut key = Vec::new();
    url_key(&mut key, Scheme::Http, b"example.com", b"/big");
    assert!(!c.insert(&key, None, &[], stored(&[b'y'; 2 << 10]), Instant::now()));
}
