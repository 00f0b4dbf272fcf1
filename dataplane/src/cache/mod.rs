//! The response cache, shared by every data core.
//!
//! Reads are lock-free: a lock-free hash map (`papaya`) holds
//! `Arc<Entry>`s, and a hit costs one lookup, one reference count and one
//! relaxed atomic for the eviction policy. Writes (inserts, eviction) take
//! one mutex that guards only the S3-FIFO queues, on the miss path. Purges
//! by prefix or pattern are lazy bans checked on lookup and swept in the
//! background, so they never walk the cache under a lock.
//!
//! This file is the store (lookup, insert, S3-FIFO eviction). Beside it:
//! `key` builds keys, `bans` purges, `coalesce` lets one fetch per key
//! run, `verify` checks checksums, `rules` holds the RFC 9111 decisions,
//! `verdict` what the cache did, `entry` the stored form, `range` the
//! byte ranges, `targeted` the CDN fields, `snapshot` the on-disk form.

#![forbid(unsafe_code)]

mod bans;
mod coalesce;
pub mod entry;
mod key;
pub mod range;
pub mod rules;
pub mod snapshot;
pub mod targeted;
pub mod verdict;
mod verify;
mod waiters;

use arc_swap::ArcSwap;
use bans::Ban;
pub use bans::{Pattern, MAX_PENDING_BANS};
use bytes::Bytes;
pub use coalesce::Claim;
use coalesce::Fetch;
use entry::Entry;
pub use key::*;
use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
pub use verify::VerifyReport;
use waiters::Waiters;
pub use waiters::{Bell, Waiting};

/// Entries retired from the map per reclamation batch (the epoch-based
/// reclamation frees them in batches; seize's default is 32).
const RECLAIM_BATCH: usize = 4;

/// Least time between two sweeps of expired uncacheable marks.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Sizes of the cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Budget for all entries including their overhead, in bytes.
    pub max_bytes: u64,
    /// Largest body stored; larger responses pass through, in bytes.
    pub max_object_bytes: u64,
}

/// What the map holds under a key.
#[derive(Debug, Clone)]
enum Slot {
    /// A response.
    Object(Arc<Entry>),
    /// The URL's responses vary on these request fields; the variants sit
    /// under secondary keys.
    Vary(Arc<VaryMarker>),
}

/// A `Vary` marker as snapshots hold it: the URL key, the varied field
/// names, and the id its variants carry.
pub(crate) struct VaryRecord {
    pub url: Bytes,
    pub names: Box<[Box<str>]>,
    pub id: u64,
}

/// A response to store: what [`Cache::insert`] turns into an entry.
pub struct Stored {
    /// Status line and end-to-end fields.
    pub head: Bytes,
    /// The body without transfer coding.
    pub body: Bytes,
    /// Freshness and validators.
    pub meta: entry::Meta,
}

#[derive(Debug)]
struct VaryMarker {
    names: Box<[Box<str>]>,
    id: u64,
    seq: u64,
}

impl VaryMarker {
    /// Bytes a marker under `url` is charged: the key and the overhead,
    /// the same on insert and on every refund.
    fn charge(url: &[u8]) -> u64 {
        url.len() as u64 + entry::ENTRY_OVERHEAD
    }
}

struct QItem {
    key: Bytes,
    seq: u64,
    charge: u64,
}

/// S3-FIFO state: a small probationary FIFO, a main FIFO with
/// reinsertion, and a ghost set of recently evicted keys.
#[derive(Default)]
struct Queues {
    small: VecDeque<QItem>,
    main: VecDeque<QItem>,
    small_bytes: u64,
    main_bytes: u64,
    ghost: VecDeque<u64>,
    ghost_set: HashSet<u64>,
}

/// The shared cache.
pub struct Cache {
    max_bytes: AtomicU64,
    max_object_bytes: AtomicU64,
    map: papaya::HashMap<Bytes, Slot>,
    queues: Mutex<Queues>,
    bytes: AtomicU64,
    seq: AtomicU64,
    inflight: papaya::HashMap<Bytes, Fetch>,
    /// Requests waiting for a running fetch, and their cores' bells.
    waiters: Arc<Waiters>,
    /// Queue items whose entry was replaced or removed; they hold their
    /// key's memory until the queues are compacted.
    stale_items: AtomicUsize,
    /// Key bytes held in `inflight`.
    inflight_bytes: AtomicU64,
    /// When expired marks were last swept (at most once a second).
    swept: Mutex<Option<Instant>>,
    bans: ArcSwap<Vec<Ban>>,
    newest_ban: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
    inserts: AtomicBool,
    bypass: AtomicBool,
    /// The targeted cache-control fields this cache follows, in order
    /// (RFC 9213).
    targeted: Box<[Box<str>]>,
}

impl Cache {
    /// An empty cache with these sizes.
    pub fn new(cfg: CacheConfig) -> Self {
        Self {
            max_bytes: AtomicU64::new(cfg.max_bytes),
            max_object_bytes: AtomicU64::new(cfg.max_object_bytes),
            // Small reclamation batches: a replaced or evicted entry's memory
            // is returned soon after, so the heap tracks the byte budget.
            map: papaya::HashMap::builder()
                .collector(seize::Collector::new().batch_size(RECLAIM_BATCH))
                .build(),
            queues: Mutex::new(Queues::default()),
            bytes: AtomicU64::new(0),
            seq: AtomicU64::new(1),
            inflight: papaya::HashMap::new(),
            waiters: Arc::default(),
            inflight_bytes: AtomicU64::new(0),
            stale_items: AtomicUsize::new(0),
            swept: Mutex::new(None),
            bans: ArcSwap::from_pointee(Vec::new()),
            newest_ban: AtomicU64::new(0),
            hasher: Default::default(),
            inserts: AtomicBool::new(true),
            bypass: AtomicBool::new(false),
            targeted: targeted::DEFAULT.iter().map(|&n| n.into()).collect(),
        }
    }

    /// This cache with its targeted cache-control fields (RFC 9213), first
    /// wins; [`targeted::DEFAULT`] otherwise.
    pub fn with_targeted_fields(mut self, names: &[String]) -> Self {
        self.targeted = names.iter().map(|n| n.as_str().into()).collect();
        self
    }

    /// The targeted cache-control fields this cache follows, in order.
    pub fn targeted_fields(&self) -> &[Box<str>] {
        &self.targeted
    }

    /// The sizes the cache works with now.
    pub fn config(&self) -> CacheConfig {
        CacheConfig {
            max_bytes: self.max_bytes.load(Ordering::Relaxed),
            max_object_bytes: self.max_object_bytes.load(Ordering::Relaxed),
        }
    }

    /// New sizes (a config reload): a smaller budget evicts, by the usual
    /// policy, down to it at once. Returns the bytes freed.
    pub fn set_config(&self, cfg: CacheConfig) -> u64 {
        self.max_object_bytes
            .store(cfg.max_object_bytes, Ordering::Relaxed);
        self.max_bytes.store(cfg.max_bytes, Ordering::Relaxed);
        self.shrink_to(cfg.max_bytes)
    }

    /// Bytes charged by the entries held now, overhead included.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Number of keys held (responses and `Vary` markers).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Turns storing on or off (memory pressure stops inserts).
    pub fn set_inserts(&self, on: bool) {
        self.inserts.store(on, Ordering::Relaxed);
    }

    /// Whether storing is on.
    pub fn inserts_enabled(&self) -> bool {
        self.inserts.load(Ordering::Relaxed)
    }

    /// Stops (or resumes) answering from the cache and storing into it,
    /// while its integrity is in doubt: requests get `X-Cache: BYPASS`.
    pub fn set_bypass(&self, on: bool) {
        self.bypass.store(on, Ordering::Relaxed);
    }

    /// Whether the cache is bypassed.
    pub fn bypassed(&self) -> bool {
        self.bypass.load(Ordering::Relaxed)
    }

    /// Evicts, by the usual policy, until at most `target` bytes are held.
    /// Returns the bytes freed.
    pub fn shrink_to(&self, target: u64) -> u64 {
        let before = self.bytes();
        let mut q = self.queues();
        while self.bytes.load(Ordering::Relaxed) > target
            && (!q.small.is_empty() || !q.main.is_empty())
        {
            self.evict_one(&mut q);
        }
        before.saturating_sub(self.bytes())
    }

    fn queues(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Looks up the response for a request. `key` holds the URL key
    /// (`url_len` bytes) and is extended in place with the varied field
    /// values when the URL has variants; `headers` are the request's.
    pub fn lookup(
        &self,
        key: &mut Vec<u8>,
        url_len: usize,
        headers: &[httparse::Header<'_>],
    ) -> Option<Arc<Entry>> {
        let map = self.map.pin();
        let entry = match map.get(&key[..url_len])? {
            Slot::Object(e) if e.meta.vary_id == 0 => e.clone(),
            Slot::Object(_) => return None,
            Slot::Vary(marker) => {
                variant_key(key, url_len, &marker.names, headers);
                match map.get(&key[..])? {
                    Slot::Object(e) if e.meta.vary_id == marker.id => e.clone(),
                    _ => return None,
                }
            }
        };
        if entry.seq < self.newest_ban.load(Ordering::Acquire) && self.banned(&entry) {
            self.remove_entry(&entry);
            return None;
        }
        entry.touch();
        Some(entry)
    }

    /// Whether the responses stored under `url` vary on a field for which
    /// `named` says yes (the request's `Connection` options).
    pub fn varies_on(&self, url: &[u8], named: impl Fn(&str) -> bool) -> bool {
        matches!(self.map.pin().get(url), Some(Slot::Vary(m)) if m.names.iter().any(|n| named(n)))
    }

    /// Stores a response under `url` (the URL key). With `vary` names the
    /// response is a variant keyed by the request's values of them
    /// (`request` headers). Evicts until the budget holds. Returns false
    /// when not stored (too large, or inserts are off).
    pub fn insert(
        &self,
        url: &[u8],
        vary: Option<&[Box<str>]>,
        request: &[httparse::Header<'_>],
        stored: Stored,
        now: Instant,
    ) -> bool {
        let Stored {
            head,
            body,
            mut meta,
        } = stored;
        if body.len() as u64 > self.max_object_bytes.load(Ordering::Relaxed)
            || !self.inserts.load(Ordering::Relaxed)
        {
            return false;
        }
        let mut key = url.to_vec();
        if let Some(names) = vary {
            let map = self.map.pin();
            let marker = match map.get(url) {
                Some(Slot::Vary(m)) if &*m.names == names => m.clone(),
                _ => {
                    let seq = self.next_seq();
                    let m = Arc::new(VaryMarker {
                        names: names.into(),
                        id: seq,
                        seq,
                    });
                    let charge = VaryMarker::charge(url);
                    self.put(
                        Bytes::copy_from_slice(url),
                        Slot::Vary(m.clone()),
                        seq,
                        charge,
                    );
                    m
                }
            };
            meta.vary_id = marker.id;
            variant_key(&mut key, url.len(), &marker.names, request);
        }
        // A copy of exactly the key: the growing Vec has spare capacity that
        // `Bytes::from` would keep, uncharged.
        let mut e = Entry::new(Bytes::copy_from_slice(&key), head, body, meta, now);
        e.seq = self.next_seq();
        let (seq, charge, key) = (e.seq, e.charge(), e.key.clone());
        self.put(key, Slot::Object(Arc::new(e)), seq, charge);
        true
    }

    /// Inserts an entry restored from a snapshot as it was.
    pub(crate) fn restore_entry(&self, mut e: Entry) {
        self.seq
            .fetch_max(e.meta.vary_id.saturating_add(1), Ordering::Relaxed);
        e.seq = self.next_seq();
        let (seq, charge, key) = (e.seq, e.charge(), e.key.clone());
        self.put(key, Slot::Object(Arc::new(e)), seq, charge);
    }

    /// Inserts a `Vary` marker restored from a snapshot, keeping its id.
    pub(crate) fn restore_marker(&self, VaryRecord { url, names, id }: VaryRecord) {
        self.seq.fetch_max(id.saturating_add(1), Ordering::Relaxed);
        let seq = self.next_seq();
        let charge = VaryMarker::charge(&url);
        self.put(
            url,
            Slot::Vary(Arc::new(VaryMarker { names, id, seq })),
            seq,
            charge,
        );
    }

    fn put(&self, key: Bytes, slot: Slot, seq: u64, charge: u64) {
        let hash = self.hash(&key);
        let mut q = self.queues();
        let map = self.map.pin();
        if let Some(old) = map.insert(key.clone(), slot) {
            self.bytes
                .fetch_sub(slot_charge(&key, old), Ordering::Relaxed);
            self.stale_items.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes.fetch_add(charge, Ordering::Relaxed);
        let item = QItem { key, seq, charge };
        if q.ghost_set.remove(&hash) {
            q.main_bytes += charge;
            q.main.push_back(item);
        } else {
            q.small_bytes += charge;
            q.small.push_back(item);
        }
        while self.bytes.load(Ordering::Relaxed) > self.max_bytes.load(Ordering::Relaxed)
            && (!q.small.is_empty() || !q.main.is_empty())
        {
            self.evict_one(&mut q);
        }
        // Items of replaced or removed entries linger in the queues, each
        // holding its key: drop them once they pass 1/32 of the live ones,
        // so the heap stays within the budget (compaction is amortised
        // over the puts that made them).
        if self.stale_items.load(Ordering::Relaxed) > map.len() / 32 + 16 {
            self.stale_items.store(0, Ordering::Relaxed);
            let live = |i: &QItem| slot_seq(map.get(&i.key)) == Some(i.seq);
            q.small.retain(live);
            q.main.retain(live);
            q.small_bytes = q.small.iter().map(|i| i.charge).sum();
            q.main_bytes = q.main.iter().map(|i| i.charge).sum();
        }
    }

    fn evict_one(&self, q: &mut Queues) {
        let map = self.map.pin();
        let from_small =
            q.small_bytes > self.max_bytes.load(Ordering::Relaxed) / 10 || q.main.is_empty();
        if from_small {
            let Some(item) = q.small.pop_front() else {
                return;
            };
            q.small_bytes -= item.charge;
            match map.get(&item.key) {
                Some(Slot::Object(e)) if e.seq == item.seq && e.freq() > 0 => {
                    e.set_freq(0);
                    q.main_bytes += item.charge;
                    q.main.push_back(item);
                }
                Some(slot) if slot_seq(Some(slot)) == Some(item.seq) => {
                    self.remove_if_seq(&item.key, item.seq);
                    let hash = self.hash(&item.key);
                    q.ghost.push_back(hash);
                    q.ghost_set.insert(hash);
                    while q.ghost.len() > q.main.len().max(64) {
                        if let Some(old) = q.ghost.pop_front() {
                            q.ghost_set.remove(&old);
                        }
                    }
                }
                _ => {}
            }
        } else {
            let Some(item) = q.main.pop_front() else {
                return;
            };
            q.main_bytes -= item.charge;
            match map.get(&item.key) {
                Some(Slot::Object(e)) if e.seq == item.seq && e.freq() > 0 => {
                    e.set_freq(e.freq() - 1);
                    q.main_bytes += item.charge;
                    q.main.push_back(item);
                }
                Some(slot) if slot_seq(Some(slot)) == Some(item.seq) => {
                    self.remove_if_seq(&item.key, item.seq);
                }
                _ => {}
            }
        }
    }

    fn remove_if_seq(&self, key: &[u8], seq: u64) -> bool {
        let map = self.map.pin();
        match map.remove_if(key, |_, v| slot_seq(Some(v)) == Some(seq)) {
            Ok(Some((_, old))) => {
                self.bytes
                    .fetch_sub(slot_charge(key, old), Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Removes this very entry (not a newer one under the same key).
    pub fn remove_entry(&self, e: &Entry) -> bool {
        let removed = self.remove_if_seq(&e.key, e.seq);
        if removed {
            self.stale_items.fetch_add(1, Ordering::Relaxed);
        }
        removed
    }

    /// Removes whatever is stored under a URL key and under the same URL
    /// by the other scheme (a change to the resource staled both; the
    /// variants become unreachable and are swept with a ban).
    pub fn remove_url(&self, url: &[u8]) -> bool {
        let (scheme, host, target) = url_parts(url);
        let mut twin = Vec::with_capacity(url.len() + 1);
        url_key(&mut twin, scheme.other(), host, target);
        self.remove_key(url) | self.remove_key(&twin)
    }

    fn remove_key(&self, url: &[u8]) -> bool {
        let map = self.map.pin();
        match map.remove(url) {
            Some(old) => {
                self.bytes
                    .fetch_sub(slot_charge(url, old), Ordering::Relaxed);
                self.stale_items.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Empties the cache. Returns how many keys went.
    pub fn clear(&self) -> usize {
        let mut q = self.queues();
        let n = self.map.len();
        self.map.pin().clear();
        *q = Queues::default();
        self.bytes.store(0, Ordering::Relaxed);
        // What was learnt about uncacheable keys goes too; running fetches
        // stay so that their waiters are still released.
        self.retain_fetch_state(|f| matches!(f, Fetch::Running(_)));
        n
    }

    /// Every response held now (for snapshots and data verify).
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        let map = self.map.pin();
        map.iter()
            .filter_map(|(_, s)| match s {
                Slot::Object(e) => Some(e.clone()),
                Slot::Vary(_) => None,
            })
            .collect()
    }

    /// Every `Vary` marker held now.
    pub(crate) fn vary_markers(&self) -> Vec<VaryRecord> {
        let map = self.map.pin();
        map.iter()
            .filter_map(|(k, s)| match s {
                Slot::Vary(m) => Some(VaryRecord {
                    url: k.clone(),
                    names: m.names.clone(),
                    id: m.id,
                }),
                Slot::Object(_) => None,
            })
            .collect()
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }
}

fn slot_seq(slot: Option<&Slot>) -> Option<u64> {
    match slot? {
        Slot::Object(e) => Some(e.seq),
        Slot::Vary(m) => Some(m.seq),
    }
}

fn slot_charge(key: &[u8], slot: &Slot) -> u64 {
    match slot {
        Slot::Object(e) => e.charge(),
        Slot::Vary(_) => VaryMarker::charge(key),
    }
}

#[cfg(test)]
mod tests;
