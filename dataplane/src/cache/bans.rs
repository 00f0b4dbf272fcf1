//! Purges by prefix or pattern: lazy bans, checked on lookup and swept in
//! the background, so a purge never walks the cache under a lock.

use super::*;

/// Most purges waiting for the background sweep (which runs every second).
pub const MAX_PENDING_BANS: usize = 256;

/// A lazy purge: entries stored before it whose URL matches are gone.
#[derive(Debug, Clone)]
pub(super) struct Ban {
    pub(super) seq: u64,
    pub(super) pattern: Pattern,
    pub(super) host: Option<Box<[u8]>>,
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
    pub(super) fn matches(&self, target: &[u8]) -> bool {
        match self {
            Self::Exact(t) => &**t == target,
            Self::Prefix(p) => target.starts_with(p),
            Self::Glob(g) => crate::glob::matches(g, target),
        }
    }
}

impl Cache {
    pub(super) fn banned(&self, e: &Entry) -> bool {
        let bans = self.bans.load();
        let (_, host, target) = url_parts(&e.key);
        bans.iter().any(|b| {
            b.seq > e.seq
                && b.host.as_deref().is_none_or(|h| h == host)
                && b.pattern.matches(target)
        })
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
}
