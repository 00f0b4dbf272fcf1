//! Data verify: each cached response is fetched again from the origin and
//! compared (status, `ETag`, `Last-Modified`, body checksum); the ones
//! that changed are evicted.

use crate::client;
use std::net::SocketAddr;
use std::time::Duration;
use ultragate_dataplane::cache::{url_parts, Cache};

/// Time allowed for one origin fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Counts of one data verify pass.
#[derive(Debug, Default, Clone, Copy)]
pub struct DataVerify {
    /// Entries compared with the origin.
    pub checked: u64,
    /// Entries whose origin copy differs; evicted.
    pub changed: u64,
    /// Variants (keyed by request fields the check cannot reproduce).
    pub skipped: u64,
    /// Entries the origin did not answer for; kept.
    pub errors: u64,
}

/// Compares every cached response with the origin's current one.
pub async fn data_verify(cache: &Cache, origins: &[SocketAddr]) -> DataVerify {
    let mut report = DataVerify::default();
    for (i, e) in cache.entries().into_iter().enumerate() {
        if e.meta.vary_id != 0 || origins.is_empty() {
            report.skipped += 1;
            continue;
        }
        let (scheme, host, target) = url_parts(&e.key);
        if host.is_empty() {
            report.skipped += 1;
            continue;
        }
        let (host, target) = (
            String::from_utf8_lossy(host),
            String::from_utf8_lossy(target),
        );
        let origin = origins[i % origins.len()];
        match tokio::time::timeout(
            FETCH_TIMEOUT,
            client::get(origin, &host, &target, Some(scheme)),
        )
        .await
        {
            Ok(Ok(f)) => {
                report.checked += 1;
                let differs = f.status != e.meta.status
                    || (e.meta.etag.is_some() && f.etag.as_deref() != e.meta.etag.as_deref())
                    || (e.meta.last_modified.is_some()
                        && f.last_modified.as_deref() != e.meta.last_modified.as_deref())
                    || crc32c::crc32c(&f.body) != crc32c::crc32c(&e.body);
                if differs {
                    report.changed += 1;
                    cache.remove_entry(&e);
                }
            }
            _ => report.errors += 1,
        }
    }
    report
}
