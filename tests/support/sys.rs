//! The two Linux waits the end-to-end tests block on instead of sleeping: a child process's
//! exit (a pidfd) and a change inside a directory (inotify). Both end in one `poll(2)` with a
//! timeout, so every wait is bounded and wakes as soon as the awaited thing happens.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Waits until `fd` is readable or `timeout` passes; true when readable.
pub fn poll_readable(fd: RawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `pfd` is a valid, initialised pollfd that outlives the call; nfds is 1.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    n > 0 && pfd.revents != 0
}

/// A descriptor that becomes readable when process `pid` exits (Linux ≥ 5.3).
pub fn pidfd(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: pidfd_open(pid, flags = 0) only reads its two integer arguments and returns a new
    // descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("descriptor out of range"))?;
    // SAFETY: `fd` was just returned by the kernel for us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes a spawned child receive SIGKILL when the spawning thread dies, so a test runner killed
/// hard does not leave proxies and stand-ins behind (normal ends kill them by PID first).
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which
    // is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// An inotify watch on one directory: wakes when a file in it is created or written.
pub struct DirWatch {
    file: File,
}

impl DirWatch {
    pub fn new(dir: &Path) -> io::Result<DirWatch> {
        // SAFETY: inotify_init1 takes flags only and returns a new descriptor or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::other("directory path with a NUL byte"))?;
        let mask = libc::IN_MODIFY | libc::IN_CREATE | libc::IN_CLOSE_WRITE;
        // SAFETY: `path` is a valid NUL-terminated string alive for the call; `fd` is open.
        let wd = unsafe { libc::inotify_add_watch(file.as_raw_fd(), path.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(DirWatch { file })
    }

    /// Blocks until something in the directory changed or `timeout` passed, then discards the
    /// queued notifications (the caller re-reads whatever it is interested in).
    pub fn wait(&self, timeout: Duration) {
        if poll_readable(self.file.as_raw_fd(), timeout) {
            let mut buf = [0u8; 4096];
            // Non-blocking: reads until the queue is empty (WouldBlock) or fails.
            while matches!((&self.file).read(&mut buf), Ok(n) if n > 0) {}
        }
    }
}
