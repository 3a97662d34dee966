//! Child processes of the end-to-end tests: where the binaries are, and [`Proc`], a guard that
//! kills its child by PID and reaps it when dropped (also while a failed test unwinds).

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use super::sys;

/// The `sipfront` binary cargo built for this test run.
pub fn sipfront_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sipfront"))
}

/// `asterisk-standin` (package sipfront-bench) next to the test executable:
/// target/<profile>/deps/e2e_sipp-HASH → target/<profile>/asterisk-standin.
pub fn standin_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable under target/<profile>/deps");
    let bin = profile_dir.join("asterisk-standin");
    assert!(
        bin.is_file(),
        "{} not found: run `cargo build --workspace --bins` first (or `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// A running child process, killed (SIGKILL to its PID) and reaped on drop.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    /// Spawns `cmd`; the child also dies if the spawning thread dies first.
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        sys::die_with_parent(cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (not installed? sipp comes with `apt-get install sip-tester`)"
            } else {
                ""
            };
            panic!("cannot start {name} ({cmd:?}): {e}{hint}")
        });
        Proc {
            name: name.to_owned(),
            child,
        }
    }

    /// The child's PID.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// SIGKILL to the child's PID (`kill -9`), then reaps it.
    pub fn kill_and_reap(&mut self) {
        if self.exited().is_none() {
            // Child::kill sends SIGKILL to this child's own PID.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Sends `signal` to the child's PID (only while it has not been reaped, so the PID is
    /// still the child's).
    pub fn signal(&mut self, signal: i32) {
        assert!(self.exited().is_none(), "{} has exited", self.name);
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid in range");
        // SAFETY: kill(2) only reads its two integer arguments; `pid` is our unreaped child.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// The exit status if the child has already exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the child to exit, at most `limit`; past it the child is killed and `None`
    /// is returned. The child stays unreaped while we wait, so its PID cannot be reused.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        let fd = sys::pidfd(self.child.id()).expect("pidfd_open");
        use std::os::fd::AsRawFd;
        if sys::poll_readable(fd.as_raw_fd(), limit) {
            return self.child.wait().ok();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}
