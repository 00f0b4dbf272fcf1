//! Drain: no new connections, keep-alive ends, what is still open at the
//! drain deadline is reset, and [`DRAIN_GRACE`] later the driver stops
//! whatever it has not yet reported closed: one bound for every driver.

use super::*;

/// After the drain deadline reset what was open, how long a driver has to
/// report those sockets closed before it stops anyway.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

impl Endpoint {
    pub(super) fn drain(&mut self, now: Instant) {
        if self.drain_deadline.is_some() {
            return;
        }
        self.drain_deadline = Some(now + self.cfg.drain_timeout);
        self.scratch.clear();
        self.scratch.extend(self.clients.handles());
        let open = std::mem::take(&mut self.scratch);
        for &(idx, gen) in &open {
            self.on_client(ClientId { idx, gen }, now, |c| {
                c.handle(now, ConnEvent::Drain)
            });
        }
        self.scratch = open;
    }

    /// At the drain deadline: resets every connection still open, once.
    pub(super) fn drain_expired(&mut self, now: Instant) {
        if self.drain_reset || self.drain_deadline.is_none_or(|d| now < d) {
            return;
        }
        self.drain_reset = true;
        self.scratch.clear();
        self.scratch.extend(self.clients.handles());
        let open = std::mem::take(&mut self.scratch);
        if !open.is_empty() {
            tracing::warn!(
                connections = open.len(),
                "drain timeout: closing connections still busy"
            );
        }
        for &(idx, gen) in &open {
            self.close_client(ClientId { idx, gen }, true);
        }
        self.scratch = open;
    }

    /// The drain's next instant: its deadline, then the driver's give-up.
    pub(super) fn drain_timer(&self) -> Option<Instant> {
        let d = self.drain_deadline?;
        Some(if self.drain_reset { d + DRAIN_GRACE } else { d })
    }

    /// Whether a drain has ended: every client connection is closed.
    pub fn is_drained(&self) -> bool {
        self.drain_deadline.is_some() && self.clients.len() == 0
    }

    /// Whether the driver stops now: the drain has ended, or its deadline
    /// and [`DRAIN_GRACE`] have passed with sockets still unreported.
    pub fn drain_over(&self, now: Instant) -> bool {
        self.is_drained() || self.drain_deadline.is_some_and(|d| now >= d + DRAIN_GRACE)
    }
}
