//! Drain: no new connections, keep-alive ends, and what is still open at
//! the deadline is reset.

use super::*;

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
            self.on_client(ClientId { idx, gen }, now, |c| c.drain(now));
        }
        self.scratch = open;
    }

    /// Whether a drain has ended: every client connection is closed.
    pub fn is_drained(&self) -> bool {
        self.drain_deadline.is_some() && self.clients.len() == 0
    }
}
