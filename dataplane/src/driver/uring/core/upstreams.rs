//! Upstream sockets on the ring: connected, written, read one buffer at a
//! time while the endpoint wants bytes, closed once nothing is in flight.

use super::*;

/// Opens a socket to `addr` and queues its connect.
pub(super) fn start_connect(
    ring: &mut IoUring,
    addr: SocketAddr,
    idx: u32,
    gen: u32,
) -> std::io::Result<(TcpStream, Box<SockAddr>)> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nodelay(true)?;
    let sa = Box::new(SockAddr::from(addr));
    let e = opcode::Connect::new(Fd(sock.as_raw_fd()), sa.as_ptr().cast(), sa.len())
        .build()
        .user_data(Op::new(Kind::UpConnect, idx, gen).encode());
    // SAFETY: the address is boxed in the socket's entry until the connect
    // completes (the kernel copies it at submission anyway).
    unsafe { push(ring, e) }?;
    Ok((sock.into(), sa))
}

impl Core {
    pub(super) fn connect(&mut self, up: UpstreamId, addr: SocketAddr, now: Instant) {
        let gen = self.gen();
        match start_connect(&mut self.ring, addr, up.index() as u32, gen) {
            Ok((stream, addr)) => {
                let sock = Box::new(UpSock {
                    gen,
                    id: up,
                    stream,
                    _connect_addr: addr,
                    inflight: 1,
                    connecting: true,
                    connected: false,
                    recv_armed: false,
                    sending: None,
                    send_inflight: false,
                    closing: false,
                });
                crate::driver::put_slot(&mut self.ups, up.index(), Some(sock));
            }
            Err(e) => {
                tracing::warn!(error = %e, %addr, "cannot open an upstream socket");
                self.ep.handle(now, Event::ConnectFailed(up));
            }
        }
    }

    pub(super) fn up_connected(&mut self, op: Op, res: i32, now: Instant) {
        let Some(u) = self.up(op.slot, op.gen) else {
            return;
        };
        u.inflight -= 1;
        u.connecting = false;
        let (id, closing) = (u.id, u.closing);
        if !closing {
            if res == 0 {
                u.connected = true;
                self.ep.handle(now, Event::Connected(id));
            } else {
                self.ep.handle(now, Event::ConnectFailed(id));
            }
        }
        self.settle_up(id, now);
    }

    pub(super) fn up_sent(&mut self, op: Op, res: i32, now: Instant) {
        let Some(u) = self.up(op.slot, op.gen) else {
            return;
        };
        u.inflight -= 1;
        u.send_inflight = false;
        let id = u.id;
        let sending = u.sending.take();
        if !u.closing {
            match (usize::try_from(res), sending) {
                (Err(_), _) => self.ep.handle(now, Event::UpstreamError(id)),
                (Ok(n), Some(mut b)) if n < b.len() => {
                    b.advance(n);
                    u.sending = Some(b);
                }
                (Ok(_), _) => self.ep.handle(now, Event::UpstreamSent(id)),
            }
        }
        self.settle_up(id, now);
    }

    pub(super) fn up_received(&mut self, op: Op, res: i32, flags: u32, now: Instant) {
        let bid = cqueue::buffer_select(flags);
        let Some(u) = self
            .ups
            .get_mut(op.slot as usize)
            .and_then(|s| s.as_deref_mut())
            .filter(|s| s.gen == op.gen)
        else {
            if let Some(b) = bid {
                self.bufs.recycle(b);
            }
            return;
        };
        u.inflight -= 1;
        u.recv_armed = false;
        let (id, closing) = (u.id, u.closing);
        match res {
            n if n > 0 => {
                if let Some(b) = bid {
                    if !closing {
                        let data = self.bufs.get(b, n as usize);
                        self.ep.handle(now, Event::UpstreamBytes(id, data));
                    }
                    self.bufs.recycle(b);
                }
            }
            _ if closing => {}
            e if e == -libc::ENOBUFS => {}
            0 => self.ep.handle(now, Event::UpstreamEof(id)),
            _ => self.ep.handle(now, Event::UpstreamError(id)),
        }
        self.settle_up(id, now);
    }

    /// Re-arms what the upstream still needs after a completion, or frees
    /// its socket once it is closing and idle.
    pub(super) fn settle_up(&mut self, id: UpstreamId, now: Instant) {
        let Some(u) = self.ups.get(id.index()).and_then(|s| s.as_deref()) else {
            return;
        };
        if !u.closing {
            return self.update_up(id, now);
        }
        if u.inflight == 0 {
            // Dropping the socket closes it: no operation on it is left,
            // so its fd number cannot be reused under one.
            self.ups[id.index()] = None;
            self.ep.handle(now, Event::UpstreamClosed(id));
        }
    }

    /// Arms the reads and writes the endpoint wants for upstream `id`.
    pub(super) fn update_up(&mut self, id: UpstreamId, now: Instant) {
        let Some(u) = self
            .ups
            .get_mut(id.index())
            .and_then(|s| s.as_deref_mut())
            .filter(|s| s.id == id && s.connected && !s.closing)
        else {
            return;
        };
        let want = self.ep.upstream_interest(id);
        if want.write && u.sending.is_none() {
            let b = self.ep.take_upstream_output(id);
            u.sending = (!b.is_empty()).then_some(b);
        }
        let fd = Fd(u.stream.as_raw_fd());
        let mut failed = false;
        if let (Some(b), false) = (&u.sending, u.send_inflight) {
            let e = opcode::Send::new(fd, b.as_ptr(), b.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(Op::new(Kind::UpSend, id.index() as u32, u.gen).encode());
            // SAFETY: the bytes stay in `u.sending` until the send
            // completes; the socket is not freed while it is in flight.
            match unsafe { push(&mut self.ring, e) } {
                Ok(()) => {
                    u.send_inflight = true;
                    u.inflight += 1;
                }
                Err(_) => failed = true,
            }
        }
        if want.read && !u.recv_armed {
            // The answer cannot be there before the request went out:
            // wait for readiness instead of trying first.
            let e = opcode::Recv::new(fd, std::ptr::null_mut(), BUF_SIZE as u32)
                .buf_group(BGID)
                .ioprio(RECVSEND_POLL_FIRST)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
                .user_data(Op::new(Kind::UpRecv, id.index() as u32, u.gen).encode());
            // SAFETY: the buffer comes from the registered buffer ring.
            match unsafe { push(&mut self.ring, e) } {
                Ok(()) => {
                    u.recv_armed = true;
                    u.inflight += 1;
                }
                Err(_) => failed = true,
            }
        }
        if failed {
            tracing::warn!("io_uring refused an operation; closing the upstream connection");
            self.ep.handle(now, Event::UpstreamError(id));
        }
    }

    /// Closes upstream `id`: shut down (ending its receive and send) and a
    /// connect in flight cancelled; the socket goes once they have ended.
    pub(super) fn close_up(&mut self, id: UpstreamId, now: Instant) {
        let Some(u) = self
            .ups
            .get_mut(id.index())
            .and_then(|s| s.as_deref_mut())
            .filter(|s| s.id == id)
        else {
            return self.ep.handle(now, Event::UpstreamClosed(id));
        };
        u.closing = true;
        if u.inflight > 0 {
            shut(u.stream.as_raw_fd());
        }
        if u.connecting {
            let target = Op::new(Kind::UpConnect, id.index() as u32, u.gen).encode();
            let e = opcode::AsyncCancel::new(target)
                .build()
                .user_data(Op::new(Kind::UpCancel, id.index() as u32, u.gen).encode());
            // SAFETY: cancel points to no memory. When it cannot be queued
            // the connect still ends by itself (refused or timed out).
            if unsafe { push(&mut self.ring, e) }.is_ok() {
                u.inflight += 1;
            }
        }
        self.settle_up(id, now);
    }
}
