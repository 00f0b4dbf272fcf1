//! The endpoint's timers: connection deadlines, requests waiting for
//! another fetch, idle pooled connections.

use super::*;

impl Endpoint {
    pub(super) fn on_timer(&mut self, now: Instant) {
        if self.bell.as_ref().is_some_and(|b| b.answer()) {
            self.wake_waiters(now);
        }
        while let Some(&Reverse((t, idx, gen))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let id = ClientId { idx, gen };
            match self.clients.get_mut(idx, gen) {
                Some(c) if c.closed && c.linger_at.is_some_and(|l| l <= now) => {
                    c.linger_at = None;
                    self.commands.push_back(Command::CloseClient {
                        client: id,
                        reset: true,
                    });
                    continue;
                }
                Some(c) if !c.closed && c.timer_at == Some(t) => c.timer_at = None,
                _ => continue,
            }
            if self.tls_expired(id, now) {
                continue;
            }
            self.on_client(id, now, |c| {
                if c.timeout().is_some_and(|d| d <= now) {
                    c.handle(now, ConnEvent::Timeout);
                }
            });
        }
        if now >= self.next_stats {
            self.sweep_idle(now);
            self.sweep_waiting();
            self.hand_over();
            self.next_stats = now + self.cfg.stats_interval;
        }
        self.drain_expired(now);
    }

    /// A fetch ended: every waiting request looks at the cache again (and
    /// is listed again if its key's fetch still runs).
    pub(super) fn wake_waiters(&mut self, now: Instant) {
        let mut list = std::mem::take(&mut self.waiting);
        for id in list.drain(..) {
            if let Some(c) = self.clients.get_mut(id.idx, id.gen) {
                c.listed = false;
                self.on_client(id, now, |c| c.handle(now, ConnEvent::FetchEnded));
            }
        }
        list.append(&mut self.waiting);
        self.waiting = list;
    }

    /// Forgets listed waiters that are gone or no longer wait (gave up at
    /// their deadline), so the list stays as long as the waiters.
    pub(super) fn sweep_waiting(&mut self) {
        let clients = &mut self.clients;
        self.waiting
            .retain(|id| match clients.get_mut(id.idx, id.gen) {
                Some(c) if c.conn.is_waiting() => true,
                Some(c) => {
                    c.listed = false;
                    false
                }
                None => false,
            });
    }

    /// Closes pooled connections past their idle timeout, and those of
    /// pools a reload replaced.
    pub(super) fn sweep_idle(&mut self, now: Instant) {
        self.peers.refresh(&self.parts.live);
        self.peers.evict_expired(now);
        self.scratch.clear();
        self.scratch.extend(self.ups.handles());
        let handles = std::mem::take(&mut self.scratch);
        for &(idx, gen) in &handles {
            let Some(up) = self.ups.get(idx, gen) else {
                continue;
            };
            let UpState::Idle(since) = up.state else {
                continue;
            };
            let keep = self
                .peers
                .idle_timeout(up.target)
                .is_some_and(|t| now.saturating_duration_since(since) < t);
            if !keep {
                self.close_upstream(UpstreamId { idx, gen });
            }
        }
        self.scratch = handles;
    }
}
