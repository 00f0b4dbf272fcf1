//! The response cache, shared by every data core.
//!
//! Reads are lock-free: a lock-free hash map (`papaya`) holds
//! `Arc<Entry>`s, and a hit costs one lookup, one reference count and one
//! relaxed atomic for the eviction policy. Writes (inserts, eviction) take
//! one mutex that guards only the S3-FIFO queues, on the miss path. Purges
//! by prefix or pattern are lazy bans checked on lookup and swept in the
//! background, so they never walk the cache under a lock.
//!
//! `rules` holds the RFC 9111 decisions, `entry` the stored form,
//! `snapshot` the on-disk form.

#![forbid(unsafe_code)]

pub mod entry;
pub mod range;
pub mod rules;
pub mod snapshot;
pub mod targeted;
pub mod verdict;
mod waiters;

use arc_swap::ArcSwap;
use bytes::Bytes;
use entry::Entry;
use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use waiters::Waiters;
pub use waiters::{Bell, Waiting};

/// Entries retired from the map per reclamation batch (the epoch-based
/// reclamation frees them in batches; seize's default is 32).
const RECLAIM_BATCH: usize = 4;

/// Most bytes of keys remembered in the fetch-state map (running fetches
/// and keys found uncacheable). Every unique uncacheable URL a peer sends
/// leaves a mark; past this bound, expired marks are swept and new ones
/// are not remembered (those requests just do not skip coalescing).
pub const MAX_FETCH_STATE_BYTES: u64 = 4 << 20;
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

/// Most purges waiting for the background sweep (which runs every second).
pub const MAX_PENDING_BANS: usize = 256;

/// A lazy purge: entries stored before it whose URL matches are gone.
#[derive(Debug, Clone)]
struct Ban {
    seq: u64,
    pattern: Pattern,
    host: Option<Box<[u8]>>,
}

/// What a purge matches in an entry's request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// The target exactly (every variant).
    Exact(Box<[u8]>),
    /// Targets starting with this.
    Prefix(Box<[u8]>),
    /// A glob where `*` matches any run of bytes (linear time:
    /// [`crate::glob`]).
    Glob(Box<[u8]>),
}

impl Pattern {
    fn matches(&self, target: &[u8]) -> bool {
        match self {
            Self::Exact(t) => &**t == target,
            Self::Prefix(p) => target.starts_with(p),
            Self::Glob(g) => crate::glob::matches(g, target),
        }
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

/// What [`Cache::claim_fetch`] tells a missing request.
#[derive(Debug)]
pub enum Claim {
    /// Fetch it; others wait for this fetch.
    Claimed,
    /// Another connection fetches it: wait, counted among the waiters
    /// until dropped, and look again when the core's [`Bell`] rings.
    Wait(Waiting),
    /// Its responses are uncacheable: fetch it without holding others.
    Pass,
}

/// The fetch state of a missing key.
#[derive(Debug, Clone, Copy)]
enum Fetch {
    /// Someone fetches it since then.
    Running(Instant),
    /// Uncacheable until then.
    Pass(Instant),
}

/// Counts of one `verify` pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked.
    pub checked: u64,
    /// Entries whose checksum failed; all evicted.
    pub corrupt: u64,
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

    fn banned(&self, e: &Entry) -> bool {
        let bans = self.bans.load();
        let (_, host, target) = url_parts(&e.key);
        bans.iter().any(|b| {
            b.seq > e.seq
                && b.host.as_deref().is_none_or(|h| h == host)
                && b.pattern.matches(target)
        })
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

    /// Purges every entry of `host` (any case; or every host) whose target
    /// matches, by either scheme; lazy: returns at once, entries disappear
    /// on their next lookup or the next [`Cache::sweep`]. False, and
    /// nothing done, while [`MAX_PENDING_BANS`] wait for the sweep: every
    /// lookup checks the pending ones, so their number is bounded.
    pub fn purge(&self, host: Option<&[u8]>, pattern: Pattern) -> bool {
        if self.bans.load().len() >= MAX_PENDING_BANS {
            return false;
        }
        if let (Pattern::Exact(target), Some(host)) = (&pattern, host) {
            let mut url = Vec::new();
            url_key(&mut url, Scheme::Http, host, target);
            self.remove_url(&url);
        }
        let seq = self.next_seq();
        let mut bans = Vec::clone(&self.bans.load());
        bans.push(Ban {
            seq,
            pattern,
            host: host.map(|h| h.to_ascii_lowercase().into()),
        });
        self.bans.store(Arc::new(bans));
        self.newest_ban.store(seq, Ordering::Release);
        true
    }

    /// Applies pending bans to every entry without blocking lookups, then
    /// forgets the bans it has applied. Returns how many entries went.
    pub fn sweep(&self) -> u64 {
        let applied_upto = self.seq.load(Ordering::Relaxed);
        if self.bans.load().is_empty() {
            return 0;
        }
        let mut removed = 0;
        let map = self.map.pin();
        for (_, slot) in map.iter() {
            if let Slot::Object(e) = slot {
                if self.banned(e) && self.remove_entry(e) {
                    removed += 1;
                }
            }
        }
        let bans: Vec<Ban> = self
            .bans
            .load()
            .iter()
            .filter(|b| b.seq >= applied_upto)
            .cloned()
            .collect();
        self.bans.store(Arc::new(bans));
        removed
    }

    /// Checks every entry's checksum and evicts the ones that fail.
    pub fn verify(&self) -> VerifyReport {
        let mut report = VerifyReport::default();
        let map = self.map.pin();
        for (_, slot) in map.iter() {
            if let Slot::Object(e) = slot {
                report.checked += 1;
                if !e.verify() {
                    report.corrupt += 1;
                    self.remove_entry(e);
                }
            }
        }
        report
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

    /// Claims the fetch of a missing key for this caller, unless another
    /// connection fetches it (since less than `wait` ago) or the key's
    /// responses were found uncacheable lately.
    pub fn claim_fetch(&self, key: &[u8], now: Instant, wait: Duration) -> Claim {
        let state = |c: &Self| c.inflight.pin().get(key).copied();
        // Some(true): a running fetch to wait for; Some(false): a pass
        // mark; None: the key is free to claim.
        let decided = |f: Option<Fetch>| match f {
            Some(Fetch::Pass(until)) if now < until => Some(false),
            Some(Fetch::Running(since)) if now.saturating_duration_since(since) < wait => {
                Some(true)
            }
            _ => None,
        };
        match decided(state(self)) {
            Some(false) => return Claim::Pass,
            Some(true) => {
                // Counted, then looked at again: a fetch that ended in
                // between is seen here, one that ends later rings.
                let waiting = self.waiters.enter();
                match decided(state(self)) {
                    Some(true) => return Claim::Wait(waiting),
                    Some(false) => return Claim::Pass,
                    None => {}
                }
            }
            None => {}
        }
        // Running fetches are bounded by the connections; the mark is
        // kept even past the byte bound so that waiters are released.
        self.set_fetch_state(key, Fetch::Running(now));
        Claim::Claimed
    }

    /// Remembers for `ttl` from `now` that `key` answers uncacheable
    /// responses, so requests for it go to the upstream at once instead of
    /// queueing behind each other (Varnish's hit-for-miss). Within
    /// [`MAX_FETCH_STATE_BYTES`]: when full, expired marks are swept first,
    /// and a mark that still does not fit is not remembered.
    pub fn mark_uncacheable(&self, key: &[u8], now: Instant, ttl: Duration) {
        let fits = |c: &Self| {
            c.inflight_bytes.load(Ordering::Relaxed) + key.len() as u64 <= MAX_FETCH_STATE_BYTES
        };
        if !fits(self) {
            // A sweep walks the map: at most once a second, so a flood of
            // unique URLs cannot make every miss pay for one.
            let due = self.swept.try_lock().is_ok_and(|mut at| {
                let due = at.is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY);
                if due {
                    *at = Some(now);
                }
                due
            });
            if due {
                self.retain_fetch_state(|f| !matches!(f, Fetch::Pass(until) if *until <= now));
            }
        }
        if fits(self) {
            self.set_fetch_state(key, Fetch::Pass(now + ttl));
            self.waiters.fetch_ended();
        } else {
            self.release_fetch(key);
        }
    }

    /// Ends a fetch claimed with [`Cache::claim_fetch`].
    pub fn release_fetch(&self, key: &[u8]) {
        let inflight = self.inflight.pin();
        if let Ok(Some((k, _))) = inflight.remove_if(key, |_, v| matches!(v, Fetch::Running(_))) {
            self.inflight_bytes
                .fetch_sub(k.len() as u64, Ordering::Relaxed);
            self.waiters.fetch_ended();
        }
    }

    /// A bell for a data core, rung when a fetch ends while requests wait.
    pub fn bell(&self) -> Arc<Bell> {
        self.waiters.bell()
    }

    /// Forgets that `key` was uncacheable (it just stored a response).
    pub fn clear_fetch_state(&self, key: &[u8]) {
        let inflight = self.inflight.pin();
        if let Some((k, _)) = inflight.remove_entry(key) {
            self.inflight_bytes
                .fetch_sub(k.len() as u64, Ordering::Relaxed);
            self.waiters.fetch_ended();
        }
    }

    /// Key bytes remembered in the fetch-state map now.
    pub fn fetch_state_bytes(&self) -> u64 {
        self.inflight_bytes.load(Ordering::Relaxed)
    }

    fn set_fetch_state(&self, key: &[u8], state: Fetch) {
        let inflight = self.inflight.pin();
        if inflight
            .insert(Bytes::copy_from_slice(key), state)
            .is_none()
        {
            self.inflight_bytes
                .fetch_add(key.len() as u64, Ordering::Relaxed);
        }
    }

    /// Keeps the fetch states for which `keep` says yes, recounting bytes.
    fn retain_fetch_state(&self, keep: impl Fn(&Fetch) -> bool) {
        let inflight = self.inflight.pin();
        inflight.retain(|_, v| keep(v));
        let bytes = inflight.iter().map(|(k, _)| k.len() as u64).sum();
        self.inflight_bytes.store(bytes, Ordering::Relaxed);
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Test hook: replaces the entry under `key` with a copy whose body has
    /// one bit flipped but whose checksum is the original's, as memory
    /// corruption would leave it. Returns false when there is no entry.
    #[cfg(feature = "test-hooks")]
    pub fn corrupt_for_test(&self, key: &[u8]) -> bool {
        let map = self.map.pin();
        let Some(Slot::Object(e)) = map.get(key) else {
            return false;
        };
        let mut body = e.body.to_vec();
        if body.is_empty() {
            return false;
        }
        body[0] ^= 0x01;
        let mut bad = Entry::new(
            e.key.clone(),
            e.head.clone(),
            Bytes::from(body),
            e.meta.clone(),
            e.stored_at,
        );
        bad.crc = e.crc;
        bad.seq = e.seq;
        map.insert(e.key.clone(), Slot::Object(Arc::new(bad)));
        true
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

/// Separates the host from the target in a URL key.
const KEY_SEPARATOR: u8 = b' ';

/// The scheme a request came by. It is part of the URL key, as in nginx's
/// default key (`$scheme$proxy_host$request_uri`): an origin told it
/// (`X-Forwarded-Proto`) may answer each differently, say with a redirect
/// to https on the plain port, which must never be served over https.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// The value of `X-Forwarded-Proto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn other(self) -> Scheme {
        match self {
            Scheme::Http => Scheme::Https,
            Scheme::Https => Scheme::Http,
        }
    }
}

/// Starts the URL key of an https request: a control byte, which no
/// header value (so no host) holds. Plain requests' keys have no mark,
/// so snapshots taken before the scheme was keyed still load as theirs.
const HTTPS_MARK: u8 = 0x01;

/// Writes the URL key of a request (its scheme's mark, the lower-cased
/// host, a space, the target) into `out`, returning its length.
pub fn url_key(out: &mut Vec<u8>, scheme: Scheme, host: &[u8], target: &[u8]) -> usize {
    out.clear();
    if scheme == Scheme::Https {
        out.push(HTTPS_MARK);
    }
    out.extend(host.iter().map(u8::to_ascii_lowercase));
    out.push(KEY_SEPARATOR);
    out.extend_from_slice(target);
    out.len()
}

/// The scheme, host and target of a key (URL or variant key): what
/// [`url_key`] wrote.
pub fn url_parts(key: &[u8]) -> (Scheme, &[u8], &[u8]) {
    let url_end = key.iter().position(|&b| b == 0).unwrap_or(key.len());
    let (scheme, url) = match key[..url_end].split_first() {
        Some((&HTTPS_MARK, rest)) => (Scheme::Https, rest),
        _ => (Scheme::Http, &key[..url_end]),
    };
    match url.iter().position(|&b| b == KEY_SEPARATOR) {
        Some(i) => (scheme, &url[..i], &url[i + 1..]),
        None => (scheme, &[], url),
    }
}

/// Extends a URL key with the request's values of the varied fields.
/// Fields of known list syntax are normalised first, so that equivalent
/// requests share a variant.
fn variant_key(
    key: &mut Vec<u8>,
    url_len: usize,
    names: &[Box<str>],
    headers: &[httparse::Header<'_>],
) {
    key.truncate(url_len);
    for name in names {
        key.push(0);
        if matches!(&**name, "accept-encoding" | "accept-language")
            && normalized_list(key, name, headers)
        {
            continue;
        }
        let mut first = true;
        for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
            if !first {
                key.push(b',');
            }
            key.extend_from_slice(crate::http::trim(h.value));
            first = false;
        }
    }
}

#[cfg(test)]
mod tests;

/// Most members of a list field normalised for a variant key, and the
/// longest; a value past these is keyed as it came.
const NORMAL_MEMBERS: usize = 16;
const NORMAL_MEMBER_LEN: usize = 48;

/// Appends the members of every `name` field (`Accept-Encoding`,
/// `Accept-Language`) normalised: lower case, no whitespace, `q=1` dropped
/// and other q-values without trailing zeros, sorted and deduplicated
/// (`gzip, br` and `BR;q=1.0,gzip` key alike). On the stack, no allocation;
/// false (nothing written) when the value is too long to normalise.
fn normalized_list(key: &mut Vec<u8>, name: &str, headers: &[httparse::Header<'_>]) -> bool {
    let mut members = [([0u8; NORMAL_MEMBER_LEN], 0usize); NORMAL_MEMBERS];
    let mut n = 0;
    let values = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .flat_map(|h| crate::http::list_members(h.value));
    for member in values {
        if n == NORMAL_MEMBERS {
            return false;
        }
        let Some(len) = normalize_member(member, &mut members[n].0) else {
            return false;
        };
        members[n].1 = len;
        n += 1;
    }
    let members = &mut members[..n];
    members.sort_unstable_by(|a, b| a.0[..a.1].cmp(&b.0[..b.1]));
    let mut last: Option<&[u8]> = None;
    for (bytes, len) in members.iter() {
        let m = &bytes[..*len];
        if last == Some(m) {
            continue;
        }
        if last.is_some() {
            key.push(b',');
        }
        key.extend_from_slice(m);
        last = Some(m);
    }
    true
}

/// One list member normalised into `out`; its length, or `None` when it
/// does not fit.
fn normalize_member(member: &[u8], out: &mut [u8; NORMAL_MEMBER_LEN]) -> Option<usize> {
    let mut len = 0;
    let mut put = |bytes: &[u8]| -> Option<()> {
        let end = len + bytes.len();
        out.get_mut(len..end)?.copy_from_slice(bytes);
        len = end;
        Some(())
    };
    let mut parts = member.split(|&b| b == b';');
    let token = crate::http::trim(parts.next().unwrap_or_default());
    for &b in token {
        put(&[b.to_ascii_lowercase()])?;
    }
    for param in parts {
        let param = crate::http::trim(param);
        let Some(q) = param
            .strip_prefix(b"q=")
            .or_else(|| param.strip_prefix(b"Q="))
        else {
            put(b";")?;
            for &b in param {
                if b != b' ' && b != b'\t' {
                    put(&[b.to_ascii_lowercase()])?;
                }
            }
            continue;
        };
        // qvalue = "0" [ "." 0*3DIGIT ] / "1" [ "." 0*3("0") ]
        let q = crate::http::trim(q);
        let (int, frac) = match q.iter().position(|&b| b == b'.') {
            Some(dot) => (&q[..dot], &q[dot + 1..]),
            None => (q, &q[..0]),
        };
        let mut frac = frac;
        while let [rest @ .., b'0'] = frac {
            frac = rest;
        }
        if int == b"1" && frac.is_empty() {
            continue;
        }
        put(b";q=")?;
        put(int)?;
        if !frac.is_empty() {
            put(b".")?;
            put(frac)?;
        }
    }
    Some(len)
}
