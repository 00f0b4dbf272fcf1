//! A provided-buffer ring: memory the kernel picks receive buffers from,
//! so a `recv` needs no buffer per connection. Every buffer the
//! kernel hands out comes back with [`BufRing::recycle`] once its bytes are
//! consumed.

use io_uring::types::BufRingEntry;
use io_uring::IoUring;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

/// An anonymous, private, page-aligned mapping.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous mapping with no address hint.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Receive buffers shared with one ring under one buffer group id.
pub(super) struct BufRing {
    entries: Mapping,
    buffers: Mapping,
    count: u16,
    size: usize,
    tail: u16,
}

impl BufRing {
    /// Registers `count` (a power of two) buffers of `size` bytes as group
    /// `bgid` of `ring`. The ring must be dropped before this value.
    pub(super) fn register(ring: &IoUring, bgid: u16, count: u16, size: usize) -> io::Result<Self> {
        assert!(count.is_power_of_two());
        let entries = Mapping::new(usize::from(count) * std::mem::size_of::<BufRingEntry>())?;
        let buffers = Mapping::new(usize::from(count) * size)?;
        // SAFETY: `entries` is page aligned, sized for `count` entries and
        // outlives the registration (the ring is dropped first).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.ptr.as_ptr() as u64,
                count,
                bgid,
                0,
            )?
        };
        let mut ring = Self {
            entries,
            buffers,
            count,
            size,
            tail: 0,
        };
        for bid in 0..count {
            ring.recycle(bid);
        }
        Ok(ring)
    }

    /// The first `len` bytes the kernel put into buffer `bid`.
    pub(super) fn get(&self, bid: u16, len: usize) -> &[u8] {
        let bid = usize::from(bid % self.count);
        let len = len.min(self.size);
        // SAFETY: buffer `bid` lies inside the mapping; the kernel wrote
        // `len` bytes into it and does not touch it until it is recycled.
        unsafe { std::slice::from_raw_parts(self.buffers.ptr.as_ptr().add(bid * self.size), len) }
    }

    /// Gives buffer `bid` back to the kernel.
    pub(super) fn recycle(&mut self, bid: u16) {
        let bid = bid % self.count;
        let base = self.entries.ptr.as_ptr().cast::<BufRingEntry>();
        let slot = usize::from(self.tail & (self.count - 1));
        // SAFETY: `slot` < `count` entries of the mapping; the kernel reads
        // the entry only after the tail store below publishes it.
        unsafe {
            let e = &mut *base.add(slot);
            e.set_addr(self.buffers.ptr.as_ptr().add(usize::from(bid) * self.size) as u64);
            e.set_len(self.size as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field overlays entry 0's reserved field, a
        // naturally aligned u16 the kernel reads atomically.
        let tail = unsafe { &*(BufRingEntry::tail(base).cast_mut().cast::<AtomicU16>()) };
        tail.store(self.tail, Ordering::Release);
    }
}
