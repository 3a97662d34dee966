//! `[transport]` configuration: backend choice, socket buffer sizes, batch sizes and the
//! per-worker upstream port. Listen addresses and the worker count come from `[listen]`
//! and are passed to [`super::WorkerSet::spawn`] separately.

use serde::Deserialize;

/// Which receive/send path the workers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// io_uring when the kernel allows it, otherwise `recvmmsg`/`sendmmsg`.
    #[default]
    Auto,
    /// io_uring only; spawning fails if it is unavailable.
    IoUring,
    /// `recvmmsg`/`sendmmsg` with `poll` for waiting.
    Mmsg,
}

impl Backend {
    /// Lower-case name as used in the config file and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::IoUring => "io_uring",
            Backend::Mmsg => "mmsg",
        }
    }
}

/// `[transport]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// `auto` | `io_uring` | `mmsg`.
    pub backend: Backend,
    /// `SO_RCVBUF` per socket, bytes.
    pub recv_buffer_bytes: usize,
    /// `SO_SNDBUF` per socket, bytes.
    pub send_buffer_bytes: usize,
    /// Upstream port of worker `i` is `upstream_port_base + i`; 0 = ephemeral ports.
    pub upstream_port_base: u16,
    /// Receive buffers per socket (io_uring: provided buffers for the multishot receive,
    /// rounded up to a power of two over all sockets; mmsg: `recvmmsg` batch size).
    pub recv_batch: usize,
    /// Largest datagram accepted; longer ones are dropped as truncated.
    pub max_datagram: usize,
    /// Datagrams the outbox holds before it is flushed.
    pub send_slots: usize,
    /// Datagrams one handler call can always queue: the outbox is flushed before a call
    /// when fewer slots than this are free (at most `send_slots`).
    pub send_reserve_slots: usize,
    /// Bytes of the outbox slab (must hold at least one `max_datagram`).
    pub send_slab_bytes: usize,
    /// Work cap: datagrams (own + handed off) processed per loop turn.
    pub max_datagrams_per_turn: usize,
    /// Pooled hand-off buffers per worker (its in-flight hand-offs to other workers).
    pub handoff_buffers: usize,
    /// Pin worker `i` to the `i`-th allowed CPU (failure is logged, not fatal).
    pub pin_cores: bool,
    /// Longest sleep without I/O, timers or wakes, in ms (a safety net).
    pub max_idle_ms: u64,
    /// Attach the reuseport BPF program that steers a response carrying our Via branch to
    /// the worker named in it (`transport/steer.rs`); off = the kernel's 4-tuple hash and a
    /// hand-off.
    pub steer_responses: bool,
}

/// Named defaults.
pub mod defaults {
    /// See [`super::TransportConfig::recv_buffer_bytes`].
    pub const RECV_BUFFER_BYTES: usize = 8 << 20;
    /// See [`super::TransportConfig::send_buffer_bytes`].
    pub const SEND_BUFFER_BYTES: usize = 4 << 20;
    /// See [`super::TransportConfig::recv_batch`].
    pub const RECV_BATCH: usize = 32;
    /// See [`super::TransportConfig::max_datagram`].
    pub const MAX_DATAGRAM: usize = super::super::MAX_DATAGRAM;
    /// See [`super::TransportConfig::send_slots`].
    pub const SEND_SLOTS: usize = 64;
    /// See [`super::TransportConfig::send_reserve_slots`].
    pub const SEND_RESERVE_SLOTS: usize = 16;
    /// See [`super::TransportConfig::send_slab_bytes`].
    pub const SEND_SLAB_BYTES: usize = 256 << 10;
    /// See [`super::TransportConfig::max_datagrams_per_turn`].
    pub const MAX_DATAGRAMS_PER_TURN: usize = 256;
    /// See [`super::TransportConfig::handoff_buffers`].
    pub const HANDOFF_BUFFERS: usize = 256;
    /// See [`super::TransportConfig::max_idle_ms`].
    pub const MAX_IDLE_MS: u64 = 1_000;
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            backend: Backend::Auto,
            recv_buffer_bytes: defaults::RECV_BUFFER_BYTES,
            send_buffer_bytes: defaults::SEND_BUFFER_BYTES,
            upstream_port_base: 0,
            recv_batch: defaults::RECV_BATCH,
            max_datagram: defaults::MAX_DATAGRAM,
            send_slots: defaults::SEND_SLOTS,
            send_reserve_slots: defaults::SEND_RESERVE_SLOTS,
            send_slab_bytes: defaults::SEND_SLAB_BYTES,
            max_datagrams_per_turn: defaults::MAX_DATAGRAMS_PER_TURN,
            handoff_buffers: defaults::HANDOFF_BUFFERS,
            pin_cores: true,
            max_idle_ms: defaults::MAX_IDLE_MS,
            steer_responses: true,
        }
    }
}

/// A `[transport]` value out of range; the variant names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A numeric key outside its allowed range.
    #[error("transport.{key}: {value} is out of range ({min}..={max})")]
    OutOfRange {
        /// Key name inside `[transport]`.
        key: &'static str,
        /// The configured value.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// `send_slab_bytes` cannot hold one `max_datagram`.
    #[error("transport.send_slab_bytes: {slab} must be at least transport.max_datagram ({max_datagram})")]
    SlabTooSmall {
        /// Configured slab size.
        slab: usize,
        /// Configured largest datagram.
        max_datagram: usize,
    },
}

fn range(key: &'static str, value: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            key,
            value: value as u64,
            min: min as u64,
            max: max as u64,
        })
    }
}

impl TransportConfig {
    /// Checks every key; the error names the first offending one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        range("recv_buffer_bytes", self.recv_buffer_bytes, 4096, 1 << 30)?;
        range("send_buffer_bytes", self.send_buffer_bytes, 4096, 1 << 30)?;
        range("recv_batch", self.recv_batch, 1, 1024)?;
        range("max_datagram", self.max_datagram, 512, super::MAX_DATAGRAM)?;
        range("send_slots", self.send_slots, 1, 4096)?;
        range(
            "send_reserve_slots",
            self.send_reserve_slots,
            1,
            self.send_slots,
        )?;
        range("send_slab_bytes", self.send_slab_bytes, 512, 64 << 20)?;
        range(
            "max_datagrams_per_turn",
            self.max_datagrams_per_turn,
            1,
            1 << 20,
        )?;
        range("handoff_buffers", self.handoff_buffers, 1, 1 << 16)?;
        range("max_idle_ms", self.max_idle_ms as usize, 1, 60_000)?;
        if self.send_slab_bytes < self.max_datagram {
            return Err(ConfigError::SlabTooSmall {
                slab: self.send_slab_bytes,
                max_datagram: self.max_datagram,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(TransportConfig::default().validate(), Ok(()));
    }

    #[test]
    fn parses_toml_and_rejects_unknown_keys() {
        let cfg: TransportConfig =
            toml::from_str("backend = \"mmsg\"\nupstream_port_base = 7000").unwrap();
        assert_eq!(cfg.backend, Backend::Mmsg);
        assert_eq!(cfg.upstream_port_base, 7000);
        assert_eq!(cfg.recv_batch, defaults::RECV_BATCH);
        assert!(toml::from_str::<TransportConfig>("bogus = 1").is_err());
        assert!(toml::from_str::<TransportConfig>("backend = \"epoll\"").is_err());
        let cfg: TransportConfig = toml::from_str("backend = \"io_uring\"").unwrap();
        assert_eq!(cfg.backend, Backend::IoUring);
        assert!(cfg.steer_responses);
        let cfg: TransportConfig = toml::from_str("steer_responses = false").unwrap();
        assert!(!cfg.steer_responses);
        assert!(toml::from_str::<TransportConfig>("steer_responses = 1").is_err());
    }

    #[test]
    fn validate_names_the_key() {
        type Case = (fn(&mut TransportConfig), &'static str);
        let cases: &[Case] = &[
            (|c| c.recv_batch = 0, "transport.recv_batch"),
            (|c| c.max_datagram = 70_000, "transport.max_datagram"),
            (|c| c.send_slots = 0, "transport.send_slots"),
            (
                |c| c.send_reserve_slots = 65,
                "transport.send_reserve_slots",
            ),
            (|c| c.recv_buffer_bytes = 1, "transport.recv_buffer_bytes"),
            (|c| c.max_idle_ms = 0, "transport.max_idle_ms"),
            (|c| c.handoff_buffers = 0, "transport.handoff_buffers"),
            (
                |c| {
                    c.send_slab_bytes = 1024;
                    c.max_datagram = 2048
                },
                "transport.send_slab_bytes",
            ),
        ];
        for (mutate, key) in cases {
            let mut cfg = TransportConfig::default();
            mutate(&mut cfg);
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.starts_with(key), "{err} should name {key}");
        }
    }
}
