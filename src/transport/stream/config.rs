//! `[tcp]`: limits of the stream listen addresses (TCP and TLS).

use serde::Deserialize;

/// `[tcp]` section: bounds on connections, how long they may idle or dribble, and how much
/// output may wait for a slow reader.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Open connections in all (TCP and TLS); further ones are closed at accept.
    pub max_connections: usize,
    /// Open connections from one IP address.
    pub max_connections_per_ip: u32,
    /// A connection with no traffic (messages or keepalives) for this long is closed.
    pub idle_timeout_secs: u64,
    /// Once a message (or a TLS handshake) has started, it must be complete within this
    /// many ms, or the connection is closed (slowloris).
    pub message_timeout_ms: u64,
    /// Output waiting for a connection that does not read; past it the connection is
    /// closed.
    pub max_pending_bytes: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            max_connections: 10_000,
            max_connections_per_ip: 64,
            idle_timeout_secs: 900,
            message_timeout_ms: 5_000,
            max_pending_bytes: 1 << 20,
        }
    }
}

/// An invalid `[tcp]` key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamConfigError {
    #[error("config key `tcp.{0}`: {1}")]
    Range(&'static str, &'static str),
}

impl StreamConfig {
    pub fn validate(&self) -> Result<(), StreamConfigError> {
        let bad = |k, why| Err(StreamConfigError::Range(k, why));
        if !(1..=1_000_000).contains(&self.max_connections) {
            return bad("max_connections", "must be 1..=1000000");
        }
        if self.max_connections_per_ip == 0 {
            return bad("max_connections_per_ip", "must be at least 1");
        }
        if !(1..=86_400).contains(&self.idle_timeout_secs) {
            return bad("idle_timeout_secs", "must be 1..=86400");
        }
        if !(100..=600_000).contains(&self.message_timeout_ms) {
            return bad("message_timeout_ms", "must be 100..=600000");
        }
        if !(65_536..=1 << 30).contains(&self.max_pending_bytes) {
            return bad("max_pending_bytes", "must be 65536..=1073741824");
        }
        Ok(())
    }
}
