//! The connection's deadlines: the next instant the engine must be
//! called, and what each deadline does when it passes.

use super::*;

impl Conn {
    /// When [`Self::handle_timeout`] must be called next.
    pub fn timeout(&self) -> Option<Instant> {
        let send = self.send_deadline().filter(|_| !self.is_aborted());
        if self.finished() {
            return send;
        }
        let phase = self.phase_timeout();
        match (phase, send) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The deadline of the phase the connection is in.
    pub(super) fn phase_timeout(&self) -> Option<Instant> {
        let cfg = &self.cfg;
        match &self.phase {
            Phase::Idle => Some(match self.head_started {
                Some(t) if !self.input.is_empty() => t + cfg.client_timeout,
                _ => self.idle_since + cfg.keepalive_timeout,
            }),
            Phase::Admin { started, req, .. } => Some(match req {
                Some(_) => *started + cfg.client_timeout,
                None => *started + ADMIN_CALL_TIMEOUT,
            }),
            Phase::Wait { until, .. } => Some(*until),
            Phase::Proxy(ex) => {
                let (connect, response) = ex
                    .timeouts
                    .unwrap_or((cfg.connect_timeout, cfg.response_timeout));
                let response = match ex.canary {
                    Some(deadline) if ex.response.is_none() => response.min(deadline),
                    _ => response,
                };
                Some(match ex.upstream {
                    UpstreamState::Connecting => ex.connect_started + connect,
                    _ if !ex.request.is_done() => ex.client_progress + cfg.client_timeout,
                    _ => ex.upstream_progress + response,
                })
            }
        }
    }

    /// Applies whatever timeout has passed at `now`.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        if self.send_deadline().is_some_and(|t| t <= now) {
            // The client stopped reading: give up on it.
            self.abort_exchange();
            self.close(Closing::Aborted);
            return;
        }
        self.send_clock(now);
        if self.finished() || self.phase_timeout().is_none_or(|t| t > now) {
            return;
        }
        let phase = std::mem::replace(&mut self.phase, Phase::Idle);
        match phase {
            Phase::Idle if self.input.is_empty() => self.close(Closing::Finished),
            Phase::Idle => self.fail(now, 408, "request head not received in time"),
            Phase::Admin { req: Some(_), .. } => {
                self.fail(now, 408, "admin request body not received in time")
            }
            Phase::Admin { req: None, .. } => self.fail(now, 504, "admin call timed out"),
            // Look at the cache again: the request is still in the input.
            Phase::Wait { .. } => {}
            Phase::Proxy(mut ex) => match ex.upstream {
                UpstreamState::Connecting => {
                    ex.connects += 1;
                    if ex.connects < self.cfg.connect_attempts {
                        self.actions.push_back(Action::Release { reuse: false });
                        self.actions.push_back(Action::Connect {
                            fresh: true,
                            attempt: ex.connects,
                        });
                        ex.connect_started = now;
                        self.phase = Phase::Proxy(ex);
                    } else {
                        self.actions.push_back(Action::Release { reuse: false });
                        self.upstream_failed(now, &ex, 504, "upstream connect timeout");
                    }
                }
                _ if ex.response.is_some() => {
                    self.actions.push_back(Action::Release { reuse: false });
                    self.response_cut(now, &ex);
                }
                _ if !ex.request.is_done() => {
                    self.actions.push_back(Action::Release { reuse: false });
                    self.fail(now, 408, "request body not received in time");
                }
                _ if ex.canary.is_some() && !ex.response_bytes_seen => {
                    self.retry_canary(now, &mut ex, 504);
                    self.phase = Phase::Proxy(ex);
                }
                _ => {
                    self.actions.push_back(Action::Release { reuse: false });
                    self.upstream_failed(now, &ex, 504, "upstream response timeout");
                }
            },
        }
        self.advance(now);
    }

    /// Starts the send clock when output is about to be queued on an empty
    /// queue: every entry point that may queue output calls it first.
    pub(super) fn send_clock(&mut self, now: Instant) {
        if self.output.is_empty() {
            self.send_since = now;
        }
    }

    /// When queued output must have made progress by, if any is queued.
    pub(super) fn send_deadline(&self) -> Option<Instant> {
        (!self.output.is_empty()).then(|| self.send_since + self.cfg.send_timeout)
    }
}
