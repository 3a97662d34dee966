//! Preallocated `mmsghdr`/`iovec`/`sockaddr_storage` arrays shared by both backends
//! (io_uring uses the embedded `msghdr` of each `mmsghdr`), plus the receive buffer slab.
//!
//! The arrays are boxed slices that never move or grow after construction, so the pointers
//! wired between them stay valid for as long as the `MsgArray` lives. A `MsgArray` is built
//! and used inside one worker thread only.

use std::ptr;

use super::sockaddr::{read_sockaddr, write_sockaddr, zeroed_storage};

pub(crate) struct MsgArray {
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
    /// Receive buffers (`len * buf_size` bytes), empty for send arrays.
    bufs: Box<[u8]>,
    buf_size: usize,
}

const STORAGE_LEN: libc::socklen_t =
    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;

impl MsgArray {
    /// `len` message headers; with `buf_size > 0`, each gets its own receive buffer.
    pub(crate) fn new(len: usize, buf_size: usize) -> Self {
        let iov = libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        };
        // SAFETY: mmsghdr is plain old data (pointers, lengths); zero is a valid value.
        let hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let mut a = MsgArray {
            hdrs: vec![hdr; len].into_boxed_slice(),
            iovs: vec![iov; len].into_boxed_slice(),
            addrs: vec![zeroed_storage(); len].into_boxed_slice(),
            bufs: vec![0u8; len * buf_size].into_boxed_slice(),
            buf_size,
        };
        for i in 0..len {
            let h = &mut a.hdrs[i].msg_hdr;
            h.msg_name = (&mut a.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = STORAGE_LEN;
            h.msg_iov = &mut a.iovs[i];
            h.msg_iovlen = 1;
            if buf_size > 0 {
                a.iovs[i].iov_base = a.bufs[i * buf_size..].as_mut_ptr().cast();
                a.iovs[i].iov_len = buf_size;
            }
        }
        a
    }

    pub(crate) fn len(&self) -> usize {
        self.hdrs.len()
    }

    /// Resets header `i` before (re)posting it for a receive.
    pub(crate) fn reset_recv(&mut self, i: usize) {
        if let Some(h) = self.hdrs.get_mut(i) {
            h.msg_hdr.msg_namelen = STORAGE_LEN;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
    }

    /// Points header `i` at `bytes` for `dst`. `bytes` must stay alive and unmoved until
    /// the send using this header completed.
    pub(crate) fn set_send(&mut self, i: usize, dst: std::net::SocketAddr, bytes: &[u8]) {
        let (Some(h), Some(iov), Some(addr)) = (
            self.hdrs.get_mut(i),
            self.iovs.get_mut(i),
            self.addrs.get_mut(i),
        ) else {
            return;
        };
        h.msg_hdr.msg_namelen = write_sockaddr(dst, addr);
        h.msg_hdr.msg_flags = 0;
        iov.iov_base = bytes.as_ptr() as *mut libc::c_void;
        iov.iov_len = bytes.len();
    }

    /// Pointer to the first `mmsghdr` at `i` (for `recvmmsg`/`sendmmsg`).
    pub(crate) fn mmsg_ptr(&mut self, i: usize) -> *mut libc::mmsghdr {
        self.hdrs[i..].as_mut_ptr()
    }

    /// Pointer to the `msghdr` of entry `i` (for io_uring `RecvMsg`/`SendMsg`).
    pub(crate) fn msghdr_ptr(&mut self, i: usize) -> *mut libc::msghdr {
        &mut self.hdrs[i].msg_hdr
    }

    /// The datagram received into entry `i`, given its length `n` and whether it was
    /// truncated (`msg_flags` from the kernel). `None` if truncated or the source address
    /// is unusable.
    pub(crate) fn received(&self, i: usize, n: usize) -> Option<(std::net::SocketAddr, &[u8])> {
        let h = &self.hdrs.get(i)?.msg_hdr;
        if h.msg_flags & libc::MSG_TRUNC != 0 || n > self.buf_size {
            return None;
        }
        let src = read_sockaddr(self.addrs.get(i)?, h.msg_namelen)?;
        let start = i * self.buf_size;
        Some((src, self.bufs.get(start..start + n)?))
    }

    /// `msg_len` the kernel wrote into entry `i` (recvmmsg).
    pub(crate) fn msg_len(&self, i: usize) -> usize {
        self.hdrs.get(i).map_or(0, |h| h.msg_len as usize)
    }
}
