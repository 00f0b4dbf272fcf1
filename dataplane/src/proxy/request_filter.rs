//! Request filter phase: a parsed head is routed, refused, answered as a
//! probe or an admin call, or handed on to the cache lookup.

use super::*;

/// Where a parsed request head leaves the connection.
pub(super) enum Next {
    /// Nothing more now (more bytes needed, a wait, or an error answered).
    Stop,
    /// Its handling started (an admin call, an exchange): the head is
    /// consumed.
    Started { head_len: usize },
    /// Answered here: the head and any body are consumed.
    Answered {
        head_len: usize,
        framing: Framing,
        close: bool,
    },
}

impl Conn {
    /// Answers a connection over a connection limit before it sends
    /// anything: `503` with `Retry-After`, then close, queued as any other
    /// answer (a TLS session seals it once its handshake is done).
    pub fn refuse_connection(&mut self) {
        local::write_error(
            self.output.tail(),
            503,
            "connection limit reached, try again",
            true,
            false,
            "Retry-After: 1\r\n",
        );
        self.close(Closing::Finished);
    }

    /// Parses the next request head and takes it through the phases:
    /// request filter, probe or admin call, cache lookup, upstream request.
    /// Returns false when the connection cannot go on now (more bytes
    /// needed, a wait, or an error answered).
    pub(super) fn start_request(&mut self, now: Instant) -> bool {
        // Known before the head parses: an error answer to a HEAD (even a
        // malformed one) carries no body, or the client misreads the stream.
        self.head_request = self.input.starts_with(b"HEAD ");
        // The input is lent out while its head is borrowed: the phases
        // below never read it.
        let input = std::mem::take(&mut self.input);
        let mut paths = std::mem::take(&mut self.paths);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let next = match RequestHead::parse(&input, &mut headers, &self.cfg.limits) {
            Ok(Some(head)) => match path::normalize(head.target, &self.cfg.paths, &mut paths) {
                // From here on the request is its normalised form alone.
                Ok(target) => {
                    let head = RequestHead { target, ..head };
                    self.route_request(now, &head, &input[..head.head_len])
                }
                Err(e) => {
                    self.fail(now, 400, &e.to_string());
                    Next::Stop
                }
            },
            Ok(None) => Next::Stop,
            Err(e) => {
                self.fail(now, e.status(), &e.to_string());
                Next::Stop
            }
        };
        self.input = input;
        self.paths = paths;
        match next {
            Next::Stop => false,
            Next::Started { head_len } => {
                self.input.advance(head_len);
                true
            }
            Next::Answered {
                head_len,
                framing,
                close,
            } => self.answered_locally(now, head_len, framing, close),
        }
    }

    /// The phases of a parsed request, up to the upstream request.
    pub(super) fn route_request(
        &mut self,
        now: Instant,
        head: &RequestHead<'_, '_>,
        raw: &[u8],
    ) -> Next {
        self.req_started = self.head_started.unwrap_or(now);
        self.served_since = now;
        self.upstream_took = None;
        self.canary_answer = false;
        self.route = None;
        let close = !head.keep_alive() || self.closes();
        let path = head.target.split('?').next().unwrap_or("");
        self.slots.1 = crate::stats::blame_slot(path.as_bytes());

        #[cfg(feature = "test-hooks")]
        if self.cfg.test_hooks && path == TEST_PANIC_PATH {
            panic!("test hook: a request that panics");
        }
        if matches!(path, "/health/live" | "/health/ready")
            && matches!(head.method, Method::Get | Method::Head)
        {
            return self.answer_probe(now, head, path, close);
        }
        if self.served.as_ref().is_some_and(|s| !s.covers(head.host)) {
            let msg =
                "Misdirected Request: the Host is not a name of this connection's certificate";
            return self.refuse(now, head, (421, msg), "", close);
        }
        if path == "/admin" || path.starts_with("/admin/") {
            return self.start_admin(now, head, close);
        }
        self.open_access(now, head);
        let found = self.cfg.routes.find(head.host, path, head.method_name);
        let route = match found {
            RouteMatch::Route(route) => route,
            RouteMatch::MethodNotAllowed(allow) => {
                let msg = "the route does not take this method";
                let allow = format!("Allow: {allow}\r\n");
                return self.refuse(now, head, (405, msg), &allow, close);
            }
            RouteMatch::None => {
                let msg = "no route takes this request (host, path and method)";
                return self.refuse(now, head, (404, msg), "", close);
            }
        };
        self.route = Some(route);
        if let (Some(d), Some(r)) = (self.access.as_mut(), self.cfg.routes.get(route)) {
            d.record.route = Some(r.name.clone());
        }
        let cached = self.cfg.routes.get(route).is_none_or(|r| r.cache);
        let lookup = if cached {
            self.lookup(now, head, raw, close)
        } else {
            Lookup::Forward(None)
        };
        let fetch = match lookup {
            Lookup::Forward(fetch) => fetch,
            Lookup::Answered => {
                return Next::Answered {
                    head_len: head.head_len,
                    framing: head.framing,
                    close,
                }
            }
            Lookup::Stop => return Next::Stop,
        };
        self.coalesce_until = None;
        self.forward(now, head, fetch, close);
        Next::Started {
            head_len: head.head_len,
        }
    }

    /// Answers a request no route takes (404) or whose route refuses its
    /// method (405, `extra` carrying `Allow`).
    pub(super) fn refuse(
        &mut self,
        now: Instant,
        head: &RequestHead<'_, '_>,
        (status, msg): (u16, &str),
        extra: &str,
        close: bool,
    ) -> Next {
        let head_only = head.method == Method::Head;
        local::write_error(self.output.tail(), status, msg, close, head_only, extra);
        self.complete(now, Answer::local(status));
        Next::Answered {
            head_len: head.head_len,
            framing: head.framing,
            close,
        }
    }

    /// `/health/live` and `/health/ready`, answered on the data port.
    pub(super) fn answer_probe(
        &mut self,
        now: Instant,
        head: &RequestHead<'_, '_>,
        path: &str,
        close: bool,
    ) -> Next {
        let resp = match path {
            "/health/live" => local::probe::LIVE,
            _ if self.status.is_ready() => local::probe::READY,
            _ => local::probe::NOT_READY,
        };
        let resp = if head.method == Method::Head {
            &resp[..local::probe::head_len(resp)]
        } else {
            resp
        };
        let status = if resp.starts_with(b"HTTP/1.1 200") {
            200
        } else {
            503
        };
        self.output.tail().put_slice(resp);
        let mut probe = self.completion(now, Answer::local(status));
        probe.probe = true;
        self.completions.push_back(probe);
        Next::Answered {
            head_len: head.head_len,
            framing: head.framing,
            close,
        }
    }

    /// An `/admin/*` call on the data port: loopback peers only; its body
    /// is read, then it goes to the control plane as an action.
    pub(super) fn start_admin(
        &mut self,
        now: Instant,
        head: &RequestHead<'_, '_>,
        close: bool,
    ) -> Next {
        if !self.local_admin {
            self.fail(
                now,
                403,
                "admin endpoints on the data port answer loopback peers only",
            );
            return Next::Stop;
        }
        if matches!(head.framing, Framing::Length(n) if n > MAX_ADMIN_BODY) {
            self.fail(now, 413, "admin request body too large");
            return Next::Stop;
        }
        let req = AdminRequest {
            method: head.method.as_str(),
            target: head.target.to_owned(),
            peer: self.peer,
            authorization: rules::field(head.headers, "authorization").map(Bytes::copy_from_slice),
            host: (!head.host.is_empty()).then(|| Bytes::copy_from_slice(head.host)),
            from_browser: crate::admin::from_browser(
                rules::field(head.headers, "origin"),
                rules::field(head.headers, "sec-fetch-site"),
            ),
            simple_body: crate::admin::simple_body(
                rules::field(head.headers, "content-type"),
                rules::field(head.headers, "x-ultragate-admin"),
            ),
            body: Bytes::new(),
        };
        let reader = BodyReader::request(head.framing);
        if head.expect_continue && !reader.is_done() {
            local::write_continue(self.output.tail());
        }
        if close {
            self.close(Closing::AfterResponse);
        }
        self.phase = Phase::Admin {
            started: now,
            req: Some(Box::new(req)),
            body: BytesMut::new(),
            reader,
            head_only: head.method == Method::Head,
            close,
        };
        Next::Started {
            head_len: head.head_len,
        }
    }

    /// The admin service answered the call handed out by [`Action::Admin`].
    pub(super) fn admin_response(&mut self, now: Instant, resp: AdminResponse) {
        self.send_clock(now);
        let Phase::Admin {
            head_only, close, ..
        } = self.phase
        else {
            return;
        };
        self.phase = Phase::Idle;
        let allow = resp
            .allow
            .map(|a| format!("Allow: {a}\r\n"))
            .unwrap_or_default();
        local::write_response(
            self.output.tail(),
            resp.status,
            resp.content_type,
            &resp.body,
            close,
            head_only,
            &allow,
        );
        self.complete(now, Answer::local(resp.status));
        self.end_of_response(now, close);
    }

    /// Starts the access-log record when the log wants this request.
    pub(super) fn open_access(&mut self, now: Instant, head: &RequestHead<'_, '_>) {
        let wanted = |log: &Arc<AccessLog>| log.wanted() || self.status.log_requests();
        if self.access.is_none() && self.cfg.access.as_ref().is_some_and(wanted) {
            let wall = self.cfg.wall(self.req_started);
            self.access = Some(AccessDraft::new(head, self.req_started, now, wall));
        }
    }

    /// The request was answered without the upstream: consume its head and
    /// any body, then go on with the next one.
    pub(super) fn answered_locally(
        &mut self,
        now: Instant,
        head_len: usize,
        framing: Framing,
        close: bool,
    ) -> bool {
        self.input.advance(head_len);
        self.coalesce_until = None;
        self.skip_local_body(now, framing, close)
    }

    /// A locally answered request may still carry a body: skip it before
    /// the next request, or close when it is not all here.
    pub(super) fn skip_local_body(&mut self, now: Instant, framing: Framing, close: bool) -> bool {
        let mut reader = BodyReader::request(framing);
        match reader.read(&self.input, self.cfg.limits.max_body_bytes, |_| {}) {
            Ok(n) => self.input.advance(n),
            Err(_) => {
                self.close(Closing::Finished);
                return false;
            }
        }
        let close = close || !reader.is_done();
        self.end_of_response(now, close);
        !self.finished()
    }
}
