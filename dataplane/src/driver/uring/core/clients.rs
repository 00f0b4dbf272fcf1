//! Client sockets on the ring: accepted, read one buffer at a time while
//! the endpoint wants bytes, written from the engine's output, closed once
//! nothing is in flight.

use super::*;

impl Core {
    pub(super) fn accepted(&mut self, res: i32, flags: u32, tls: bool, now: Instant) {
        if !cqueue::more(flags) {
            self.accepting[usize::from(tls)] = false;
        }
        if res < 0 {
            if res != -libc::ECANCELED {
                tracing::debug!(error = %std::io::Error::from_raw_os_error(-res), "accept failed");
            }
            return;
        }
        // SAFETY: the kernel gave us this new socket.
        let stream = unsafe { TcpStream::from_raw_fd(res) };
        if self.draining {
            return;
        }
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let id = match tls {
            true => self.ep.accept_tls(now, peer),
            false => self.ep.accept(now, peer),
        };
        let Some(id) = id else {
            // Over the limit with every 503 slot busy: refused at once.
            crate::driver::reset_on_close(&stream);
            return;
        };
        let _ = stream.set_nodelay(true);
        let gen = self.gen();
        // SAFETY: an all-zero msghdr and iovec are valid empty values.
        let (msg, iov) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        let sock = Box::new(ClientSock {
            gen,
            id,
            stream,
            inflight: 0,
            recv_armed: false,
            cancel_sent: false,
            sending: false,
            closing: false,
            iov,
            msg,
        });
        crate::driver::put_slot(&mut self.clients, id.index(), Some(sock));
    }

    pub(super) fn received(&mut self, op: Op, res: i32, flags: u32, now: Instant) {
        let bid = cqueue::buffer_select(flags);
        let Some(s) = self
            .clients
            .get_mut(op.slot as usize)
            .and_then(|s| s.as_deref_mut())
            .filter(|s| s.gen == op.gen)
        else {
            if let Some(b) = bid {
                self.bufs.recycle(b);
            }
            return;
        };
        if !cqueue::more(flags) {
            s.recv_armed = false;
            s.inflight -= 1;
        }
        let (id, closing) = (s.id, s.closing);
        match res {
            n if n > 0 => {
                if let Some(b) = bid {
                    if !closing {
                        let data = self.bufs.get(b, n as usize);
                        self.ep.handle(now, Event::ClientBytes(id, data));
                    }
                    self.bufs.recycle(b);
                }
            }
            _ if closing => {}
            0 => self.ep.handle(now, Event::ClientEof(id)),
            e if e == -libc::ENOBUFS || e == -libc::ECANCELED => {}
            _ => self.ep.handle(now, Event::ClientError(id)),
        }
        self.settle_client(id, now);
    }

    pub(super) fn sent(&mut self, op: Op, res: i32, now: Instant) {
        let Some(s) = self.client(op.slot, op.gen) else {
            return;
        };
        s.inflight -= 1;
        s.sending = false;
        let (id, closing) = (s.id, s.closing);
        if !closing {
            let event = match usize::try_from(res) {
                Ok(n) => Event::ClientWritten(id, n),
                Err(_) => Event::ClientError(id),
            };
            self.ep.handle(now, event);
        }
        self.settle_client(id, now);
    }

    /// Re-arms what the client still needs after a completion, or frees its
    /// socket once it is closing and idle.
    pub(super) fn settle_client(&mut self, id: ClientId, now: Instant) {
        let Some(s) = self.clients.get(id.index()).and_then(|s| s.as_deref()) else {
            return;
        };
        if !s.closing {
            return self.update_client(id, now);
        }
        if s.inflight == 0 {
            // Dropping the socket closes it.
            self.clients[id.index()] = None;
            self.ep.handle(now, Event::ClientClosed(id));
        }
    }

    /// Arms the reads and writes the endpoint wants for client `id`.
    pub(super) fn update_client(&mut self, id: ClientId, now: Instant) {
        let Some(s) = self
            .clients
            .get_mut(id.index())
            .and_then(|s| s.as_deref_mut())
            .filter(|s| s.id == id && !s.closing)
        else {
            return;
        };
        let want = self.ep.client_interest(id);
        let fd = Fd(s.stream.as_raw_fd());
        let mut failed = false;
        if want.write && !s.sending {
            self.ep.pin_client_output(id);
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let n = self.ep.client_slices(id, &mut slices);
            for (iov, sl) in s.iov.iter_mut().zip(&slices[..n]) {
                *iov = libc::iovec {
                    iov_base: sl.as_ptr() as *mut _,
                    iov_len: sl.len(),
                };
            }
            let data = Op::new(Kind::Send, id.index() as u32, s.gen).encode();
            let e = if n == 1 {
                opcode::Send::new(fd, s.iov[0].iov_base.cast(), s.iov[0].iov_len as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            } else {
                s.msg.msg_iov = s.iov.as_mut_ptr();
                s.msg.msg_iovlen = n as _;
                opcode::SendMsg::new(fd, &s.msg)
                    .flags(libc::MSG_NOSIGNAL as u32)
                    .build()
            };
            // SAFETY: the chunks are pinned in the endpoint until written
            // (its connection lives until `ClientClosed`, which waits for
            // this send); `iov` and `msg` live in the boxed socket.
            match unsafe { push(&mut self.ring, e.user_data(data)) } {
                Ok(()) => {
                    s.sending = true;
                    s.inflight += 1;
                }
                Err(_) => failed = true,
            }
        }
        if want.read && !s.recv_armed {
            // One buffer per receive, armed again only while the endpoint
            // wants bytes: a multishot receive goes on draining the socket
            // (up to 32 buffers a pass) after the bound is reached, and a
            // client that pipelines without reading would park them all
            // here.
            let e = opcode::Recv::new(fd, std::ptr::null_mut(), BUF_SIZE as u32)
                .buf_group(BGID)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
                .user_data(Op::new(Kind::Recv, id.index() as u32, s.gen).encode());
            // SAFETY: buffers come from the registered buffer ring.
            match unsafe { push(&mut self.ring, e) } {
                Ok(()) => {
                    s.recv_armed = true;
                    s.cancel_sent = false;
                    s.inflight += 1;
                }
                Err(_) => failed = true,
            }
        } else if !want.read && s.recv_armed && !s.cancel_sent {
            cancel_recv(&mut self.ring, s);
        }
        if failed {
            tracing::warn!("io_uring refused an operation; closing the client connection");
            self.ep.handle(now, Event::ClientError(id));
        }
    }

    /// Closes client `id`: a FIN, or a reset that drops what is unsent;
    /// the socket goes once its operations have ended.
    pub(super) fn close_client(&mut self, id: ClientId, reset: bool, now: Instant) {
        let Some(s) = self
            .clients
            .get_mut(id.index())
            .and_then(|s| s.as_deref_mut())
            .filter(|s| s.id == id)
        else {
            return self.ep.handle(now, Event::ClientClosed(id));
        };
        s.closing = true;
        if reset {
            crate::driver::reset_on_close(&s.stream);
            shut(s.stream.as_raw_fd());
        } else {
            // SAFETY: plain syscall: a FIN after the last response.
            unsafe { libc::shutdown(s.stream.as_raw_fd(), libc::SHUT_WR) };
            if s.recv_armed && !s.cancel_sent {
                cancel_recv(&mut self.ring, s);
            }
        }
        self.settle_client(id, now);
    }
}
