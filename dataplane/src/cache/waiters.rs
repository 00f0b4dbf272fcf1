//! Requests that wait for another connection's fetch of the same key,
//! and the bells that wake their cores when a fetch ends: a waiter is
//! looked at again when something may have changed, not on a poll.

use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// One data core's bell: rung when a fetch ends while requests wait, so
/// the core looks at its waiters again.
#[derive(Default)]
pub struct Bell {
    rung: AtomicBool,
    wake: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Bell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bell").field("rung", &self.rung).finish()
    }
}

impl Bell {
    /// What wakes the core's driver from another thread (an eventfd
    /// write, a notify); set once.
    pub fn on_ring(&self, wake: Box<dyn Fn() + Send + Sync>) {
        let _ = self.wake.set(wake);
    }

    /// Whether it rang since the last [`Self::answer`].
    pub fn is_rung(&self) -> bool {
        self.rung.load(Ordering::Acquire)
    }

    /// Takes the ring: true when it rang since the last call.
    pub fn answer(&self) -> bool {
        self.rung.swap(false, Ordering::AcqRel)
    }

    fn ring(&self) {
        if !self.rung.swap(true, Ordering::AcqRel) {
            if let Some(wake) = self.wake.get() {
                wake();
            }
        }
    }
}

/// How many requests wait, and the bells to ring when a fetch ends.
#[derive(Default)]
pub(super) struct Waiters {
    waiting: AtomicUsize,
    bells: Mutex<Vec<Weak<Bell>>>,
}

/// A request's place among the waiters: counted until dropped.
pub struct Waiting(Arc<Waiters>);

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waiting")
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Waiters {
    /// Counts a waiter. A fetch that ends after this returns rings (the
    /// caller looks at the fetch again after entering: what ended before
    /// is seen there).
    pub(super) fn enter(self: &Arc<Self>) -> Waiting {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        Waiting(self.clone())
    }

    /// A fetch ended: rings every core's bell when requests wait.
    pub(super) fn fetch_ended(&self) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut bells = self.bells.lock().unwrap_or_else(|e| e.into_inner());
        bells.retain(|b| match b.upgrade() {
            Some(bell) => {
                bell.ring();
                true
            }
            None => false,
        });
    }

    /// A new core's bell (dropped with its core).
    pub(super) fn bell(&self) -> Arc<Bell> {
        let bell = Arc::new(Bell::default());
        let mut bells = self.bells.lock().unwrap_or_else(|e| e.into_inner());
        bells.retain(|b| b.strong_count() > 0);
        bells.push(Arc::downgrade(&bell));
        bell
    }
}
