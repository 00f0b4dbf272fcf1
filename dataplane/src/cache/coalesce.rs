//! Request coalescing: one fetch per missing key at a time, the others
//! waiting for it; and what the cache remembers of keys it must not store.

use super::*;

/// Most bytes of keys remembered in the fetch-state map (running fetches
/// and keys found uncacheable). Every unique uncacheable URL a peer sends
/// leaves a mark; past this bound, expired marks are swept and new ones
/// are not remembered (those requests just do not skip coalescing).
pub const MAX_FETCH_STATE_BYTES: u64 = 4 << 20;

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
pub(super) enum Fetch {
    /// Someone fetches it since then.
    Running(Instant),
    /// Uncacheable until then.
    Pass(Instant),
}

impl Cache {
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
    /// `MAX_FETCH_STATE_BYTES`: when full, expired marks are swept first,
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

    pub(super) fn set_fetch_state(&self, key: &[u8], state: Fetch) {
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
    pub(super) fn retain_fetch_state(&self, keep: impl Fn(&Fetch) -> bool) {
        let inflight = self.inflight.pin();
        inflight.retain(|_, v| keep(v));
        let bytes = inflight.iter().map(|(k, _)| k.len() as u64).sum();
        self.inflight_bytes.store(bytes, Ordering::Relaxed);
    }
}
