//! The bytes queued for the client, as a list of shared chunks.
//!
//! A cache hit's body is an `Arc`-backed [`Bytes`] owned by the cache: it is
//! queued as it is, next to the head the engine formats, so it reaches the
//! socket without being copied into a second buffer (`writev` on epoll, a
//! `sendmsg` with an iovec per chunk on io_uring). Bytes the engine writes
//! itself go to a growable tail, which [`Output::freeze`] turns into a chunk
//! when a driver needs the memory to stay put while the kernel reads it.

use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::IoSlice;

/// Chunks smaller than this are copied into the tail instead: one more
/// iovec costs more than copying a few hundred bytes.
const COPY_BELOW: usize = 512;

/// Bytes queued for the client, in order.
#[derive(Debug, Default)]
pub struct Output {
    /// Frozen chunks, oldest first; the kernel may be reading them.
    chunks: VecDeque<Bytes>,
    /// Total length of `chunks`.
    chunks_len: usize,
    /// Bytes written by the engine after the last chunk.
    tail: BytesMut,
}

impl Output {
    /// An empty queue with room for `capacity` bytes in the tail.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            chunks: VecDeque::new(),
            chunks_len: 0,
            tail: BytesMut::with_capacity(capacity),
        }
    }

    /// The tail, where the engine encodes heads and relayed bodies.
    pub fn tail(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Queues shared bytes without copying them (small ones are copied).
    pub fn push(&mut self, bytes: &Bytes) {
        if bytes.len() < COPY_BELOW {
            self.tail.extend_from_slice(bytes);
            return;
        }
        self.freeze();
        self.chunks_len += bytes.len();
        self.chunks.push_back(bytes.clone());
    }

    /// Moves the tail into the chunk list, so every queued byte stays at its
    /// address until it is written.
    pub fn freeze(&mut self) {
        if !self.tail.is_empty() {
            let t = self.tail.split().freeze();
            self.chunks_len += t.len();
            self.chunks.push_back(t);
        }
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.chunks_len + self.tail.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the oldest queued bytes (one chunk, or the tail frozen).
    pub fn take_first(&mut self) -> Bytes {
        self.freeze();
        match self.chunks.pop_front() {
            Some(c) => {
                self.chunks_len -= c.len();
                c
            }
            None => Bytes::new(),
        }
    }

    /// The oldest queued bytes (one chunk or the tail).
    pub fn first(&self) -> &[u8] {
        self.chunks.front().map_or(&self.tail[..], |c| &c[..])
    }

    /// Fills `dst` with the queued bytes in order, as many chunks as fit;
    /// returns how many slices it filled.
    pub fn slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let tail = (!self.tail.is_empty()).then_some(&self.tail[..]);
        let all = self.chunks.iter().map(|c| &c[..]).chain(tail);
        let mut n = 0;
        for (slot, s) in dst.iter_mut().zip(all) {
            *slot = IoSlice::new(s);
            n += 1;
        }
        n
    }

    /// `n` queued bytes were written.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                self.tail.advance(n.min(self.tail.len()));
                return;
            };
            let k = n.min(front.len());
            front.advance(k);
            self.chunks_len -= k;
            n -= k;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(o: &Output) -> Vec<u8> {
        let mut s = [IoSlice::new(&[]); 8];
        let n = o.slices(&mut s);
        s[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn large_chunks_are_shared_and_order_is_kept() {
        let body = Bytes::from(vec![b'x'; 4096]);
        let mut o = Output::with_capacity(64);
        o.tail().extend_from_slice(b"head\r\n\r\n");
        o.push(&body);
        o.tail().extend_from_slice(b"next");
        assert_eq!(o.len(), 8 + 4096 + 4);
        let mut s = [IoSlice::new(&[]); 8];
        assert_eq!(o.slices(&mut s), 3);
        // The body is the cache's memory, not a copy.
        assert_eq!(s[1].as_ptr(), body.as_ptr());
        assert_eq!(&all(&o)[..8], b"head\r\n\r\n");

        o.advance(10);
        assert_eq!(o.len(), 4096 - 2 + 4);
        assert_eq!(o.first().len(), 4094);
        o.advance(4094 + 1);
        assert_eq!(all(&o), b"ext");
        o.advance(3);
        assert!(o.is_empty());
    }

    #[test]
    fn small_chunks_are_copied_and_freeze_pins_the_tail() {
        let mut o = Output::default();
        o.tail().extend_from_slice(b"ab");
        o.push(&Bytes::from_static(b"cd"));
        let mut s = [IoSlice::new(&[]); 4];
        assert_eq!(o.slices(&mut s), 1);
        o.freeze();
        let p = o.first().as_ptr();
        o.tail().extend_from_slice(&[b'z'; 10_000]);
        assert_eq!(o.first().as_ptr(), p, "frozen bytes do not move");
        assert_eq!(o.len(), 10_004);
    }
}
