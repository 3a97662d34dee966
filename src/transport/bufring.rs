//! A provided-buffer ring for io_uring multishot `RecvMsg`: `entries` receive buffers
//! the kernel picks from, one per datagram, and the worker gives back once the datagram
//! was processed (or handed off, which copies it).
//!
//! Memory: the ring of `io_uring_buf` descriptors (page-aligned, as the kernel requires)
//! and one slab of `entries * buf_size` bytes. Both must outlive the registration; the
//! owner unregisters (or leaks them if the kernel may still write, see `uring::run`).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

pub(crate) struct BufRing {
    ring: *mut BufRingEntry,
    layout: Layout,
    entries: u16,
    tail: u16,
    bufs: Box<[u8]>,
    buf_size: usize,
    pub(crate) bgid: u16,
}

impl BufRing {
    /// `entries` (a power of two, at most 32768) buffers of `buf_size` bytes.
    pub(crate) fn new(entries: u16, buf_size: usize, bgid: u16) -> io::Result<Self> {
        if !entries.is_power_of_two() || entries > 32_768 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let layout = Layout::from_size_align(
            usize::from(entries) * std::mem::size_of::<BufRingEntry>(),
            4096,
        )
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: the layout has a nonzero size (entries >= 1).
        let ring = unsafe { alloc_zeroed(layout) }.cast::<BufRingEntry>();
        if ring.is_null() {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        let mut br = BufRing {
            ring,
            layout,
            entries,
            tail: 0,
            bufs: vec![0u8; usize::from(entries) * buf_size].into_boxed_slice(),
            buf_size,
            bgid,
        };
        for bid in 0..entries {
            br.push(bid);
        }
        br.publish();
        Ok(br)
    }

    /// Registers the ring with `uring` under `self.bgid`.
    pub(crate) fn register(&self, uring: &IoUring) -> io::Result<()> {
        // SAFETY: `ring` points at `entries` descriptors, page-aligned, that live until
        // `self` is dropped; the owner unregisters (or leaks) before that.
        unsafe {
            uring.submitter().register_buf_ring_with_flags(
                self.ring as u64,
                self.entries,
                self.bgid,
                0,
            )
        }
    }

    /// Number of buffers in the ring.
    pub(crate) fn entries(&self) -> u16 {
        self.entries
    }

    /// Queues buffer `bid` for the kernel (visible after [`BufRing::publish`]).
    pub(crate) fn push(&mut self, bid: u16) {
        if bid >= self.entries {
            return;
        }
        let idx = usize::from(self.tail & (self.entries - 1));
        let addr = self.bufs[usize::from(bid) * self.buf_size..].as_ptr() as u64;
        // SAFETY: idx < entries, inside the ring allocation; the kernel does not read a
        // descriptor until the tail moves past it.
        let e = unsafe { &mut *self.ring.add(idx) };
        e.set_addr(addr);
        e.set_len(self.buf_size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed buffer visible to the kernel.
    pub(crate) fn publish(&self) {
        // SAFETY: the tail field lives inside the first descriptor of our ring, suitably
        // aligned for a u16; the kernel reads it concurrently, hence the atomic store.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring).cast::<AtomicU16>()) };
        tail.store(self.tail, Ordering::Release);
    }

    /// The first `len` bytes of buffer `bid` (what the kernel wrote there).
    pub(crate) fn data(&self, bid: u16, len: usize) -> Option<&[u8]> {
        let start = usize::from(bid) * self.buf_size;
        if bid >= self.entries || len > self.buf_size {
            return None;
        }
        self.bufs.get(start..start + len)
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ring.cast(), self.layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_sizes_and_bounds_buffers() {
        assert!(BufRing::new(3, 16, 0).is_err());
        let br = BufRing::new(4, 16, 0).unwrap();
        assert_eq!(br.data(3, 16).map(<[u8]>::len), Some(16));
        assert!(br.data(4, 1).is_none());
        assert!(br.data(0, 17).is_none());
    }
}
