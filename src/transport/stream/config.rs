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

/// `[ws]` section: the WebSocket listen addresses (`listen.ws`, `listen.wss`, RFC 7118).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WsConfig {
    /// Allowed `Origin` values of the upgrade request (e.g. `"https://phone.example.com"`),
    /// compared case-insensitively; empty allows any (and requests without one).
    pub origins: Vec<String>,
    /// Largest frame accepted; a larger one closes the connection (status 1009).
    pub max_frame_bytes: usize,
    /// Largest data message (one SIP message, fragments reassembled); a larger one closes
    /// the connection (status 1009).
    pub max_message_bytes: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            origins: Vec::new(),
            max_frame_bytes: 65_535,
            max_message_bytes: 65_535,
        }
    }
}

/// An invalid `[ws]` key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WsConfigError {
    #[error("config key `ws.{0}`: {1}")]
    Range(&'static str, &'static str),
}

impl WsConfig {
    pub fn validate(&self) -> Result<(), WsConfigError> {
        let bad = |k, why| Err(WsConfigError::Range(k, why));
        if !(1024..=1 << 24).contains(&self.max_message_bytes) {
            return bad("max_message_bytes", "must be 1024..=16777216");
        }
        if !(125..=self.max_message_bytes).contains(&self.max_frame_bytes) {
            return bad("max_frame_bytes", "must be 125..=ws.max_message_bytes");
        }
        if self
            .origins
            .iter()
            .any(|o| o.is_empty() || o.bytes().any(|b| b.is_ascii_whitespace() || b == b','))
        {
            return bad(
                "origins",
                "an origin is one scheme://host[:port], no spaces or commas",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_limits_are_checked() {
        assert_eq!(WsConfig::default().validate(), Ok(()));
        let c = WsConfig {
            max_frame_bytes: 100_000,
            ..WsConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("ws.max_frame_bytes"));
        let c = WsConfig {
            max_message_bytes: 10,
            ..WsConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("ws.max_message_bytes"));
        let c = WsConfig {
            origins: vec!["https://a.example, https://b.example".into()],
            ..WsConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("ws.origins"));
    }
}
