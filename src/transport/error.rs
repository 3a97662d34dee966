//! Errors of the transport layer: setting up sockets, rings and threads. Per-datagram
//! problems (send failures, full hand-off channels) are never errors; they are counted in
//! [`super::WorkerCounters`].

use std::io;
use std::net::SocketAddr;

use super::ConfigError;

/// Failure to start (or cleanly stop) the worker set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The `[transport]` section is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// More workers than [`super::MAX_WORKERS`].
    #[error("listen.workers: {0} exceeds the maximum of {max}", max = super::MAX_WORKERS)]
    TooManyWorkers(usize),
    /// No listen address was given.
    #[error("listen.udp: at least one address is required")]
    NoListenAddress,
    /// Creating, configuring or binding a socket failed.
    #[error("socket {addr}: {op}: {source}")]
    Socket {
        /// Address being bound.
        addr: SocketAddr,
        /// What was being done (`bind`, `SO_REUSEPORT`, ...).
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Upstream port `base + index` does not fit in a u16.
    #[error("transport.upstream_port_base: {base} + worker {index} exceeds 65535")]
    UpstreamPortOverflow {
        /// Configured base.
        base: u16,
        /// Worker index.
        index: usize,
    },
    /// `backend = "io_uring"` was requested but the kernel refused it.
    #[error("transport.backend = \"io_uring\": {0}")]
    IoUringUnavailable(#[from] UringUnavailable),
    /// Creating the worker's eventfd failed.
    #[error("eventfd: {0}")]
    EventFd(io::Error),
    /// Spawning a worker thread failed.
    #[error("spawning worker {index}: {source}")]
    Spawn {
        /// Worker index.
        index: usize,
        /// The OS error.
        source: io::Error,
    },
    /// A worker's loop failed with an I/O error it cannot recover from.
    #[error("worker {index}: {op}: {source}")]
    Worker {
        /// Worker index.
        index: usize,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A worker thread panicked (a bug in the handler or the shell).
    #[error("worker {0} panicked")]
    Panicked(usize),
}

/// Why io_uring cannot be used (the `auto` backend then falls back to mmsg).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UringUnavailable {
    /// `/proc/sys/kernel/io_uring_disabled` forbids it for this process.
    #[error("io_uring disabled by kernel.io_uring_disabled = {0}")]
    DisabledBySysctl(u8),
    /// `io_uring_setup` failed (ENOSYS on old kernels, EPERM under seccomp/sysctl).
    #[error("io_uring setup failed: {0}")]
    Setup(io::Error),
    /// The kernel lacks `IORING_FEAT_EXT_ARG` (needed for timed waits; kernel >= 5.11).
    #[error("io_uring lacks IORING_FEAT_EXT_ARG (kernel too old)")]
    NoExtArg,
    /// Multishot `RecvMsg` with a provided-buffer ring did not work (kernel < 6.0).
    #[error("io_uring multishot recvmsg with a buffer ring failed: {0}")]
    Multishot(io::Error),
}
