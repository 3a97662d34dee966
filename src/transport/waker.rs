//! Per-worker waker: an eventfd plus two flags.
//!
//! `notified` coalesces writes: only the first notifier since the worker last drained the
//! eventfd pays for the `write(2)`. The worker clears `notified` right after draining the
//! eventfd and *then* looks for work (hand-offs, the `user` flag, shutdown), so a notifier
//! that saw `notified == true` is sure its work will be seen.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug)]
struct Inner {
    efd: OwnedFd,
    notified: AtomicBool,
    user: AtomicBool,
}

/// Wakes one worker's loop from any thread; the worker then calls
/// [`super::DatagramHandler::on_wake`]. Cheap to clone; `wake` is async-signal-unsafe
/// but lock-free (one atomic swap, at most one `write(2)`).
#[derive(Debug, Clone)]
pub struct Waker {
    inner: Arc<Inner>,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor nobody else owns.
        let efd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker {
            inner: Arc::new(Inner {
                efd,
                notified: AtomicBool::new(false),
                user: AtomicBool::new(false),
            }),
        })
    }

    /// Asks the worker to call `on_wake` soon (coalesced: several wakes before the worker
    /// runs give one `on_wake`).
    pub fn wake(&self) {
        self.inner.user.store(true, Ordering::Release);
        self.notify();
    }

    /// Wakes the loop without requesting `on_wake` (hand-offs, shutdown).
    pub(crate) fn notify(&self) {
        if !self.inner.notified.swap(true, Ordering::AcqRel) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to our eventfd. A failure can only be
            // EAGAIN (counter saturated), which still leaves the eventfd readable.
            unsafe {
                libc::write(
                    self.inner.efd.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.inner.efd.as_raw_fd()
    }

    /// Worker side: drain the eventfd (nonblocking) and re-arm notifications.
    pub(crate) fn drain(&self) {
        let mut val: u64 = 0;
        // SAFETY: reads at most 8 bytes into a valid u64; EAGAIN (nothing pending) is fine.
        unsafe {
            libc::read(
                self.fd(),
                (&mut val as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        self.inner.notified.store(false, Ordering::SeqCst);
    }

    /// Worker side: was `wake` called since the last check?
    pub(crate) fn take_user_wake(&self) -> bool {
        self.inner.user.load(Ordering::Relaxed) && self.inner.user.swap(false, Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn wake_coalesces_and_drain_rearms() {
        let w = Waker::new().unwrap();
        assert!(!readable(w.fd()));
        w.wake();
        w.clone().wake();
        assert!(readable(w.fd()));
        w.drain();
        assert!(!readable(w.fd()));
        assert!(w.take_user_wake());
        assert!(!w.take_user_wake());
        w.notify();
        assert!(readable(w.fd()));
        w.drain();
        assert!(!w.take_user_wake());
    }
}
