//! `[cluster]`: the Redis server the nodes share, this node's name and the address the other
//! nodes forward requests to. Without the section the proxy runs alone, as before.

use std::net::SocketAddr;

use serde::Deserialize;

/// Default seconds between this node's heartbeats.
pub const DEFAULT_HEARTBEAT_MS: u64 = 1_000;
/// Default time without a heartbeat after which a node counts as dead.
pub const DEFAULT_DEAD_AFTER_MS: u64 = 3_000;
/// Default pace of the start-up load (AORs read from Redis per second).
pub const DEFAULT_LOAD_RATE: u32 = 50_000;
/// Default bound of the queue of changed AORs waiting to be written to Redis.
pub const DEFAULT_QUEUE: usize = 65_536;
/// Default prefix of every key the cluster keeps in Redis.
pub const DEFAULT_PREFIX: &str = "sipfront";

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://host:port/db` (or `redis+unix:///path`): the shared location and state.
    pub redis_url: String,
    /// This node's unique name (letters, digits, `.`, `-`, `_`).
    pub node_name: String,
    /// How the other nodes reach this one for forwarded requests: one of `[listen] udp`
    /// (default: the first).
    pub node_address: Option<SocketAddr>,
    /// Milliseconds between heartbeats (the node's key in Redis is refreshed).
    pub heartbeat_ms: u64,
    /// A node whose heartbeat is older than this is dead: its bindings are unreachable
    /// until the phones register again.
    pub dead_after_ms: u64,
    /// AORs per second read from Redis at start-up and on a resync.
    pub load_rate: u32,
    /// Changed AORs waiting to be written (beyond it a full rewrite is scheduled).
    pub queue: usize,
    /// Prefix of the Redis keys and channel (several clusters may share one Redis).
    pub key_prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: String::new(),
            node_name: String::new(),
            node_address: None,
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            dead_after_ms: DEFAULT_DEAD_AFTER_MS,
            load_rate: DEFAULT_LOAD_RATE,
            queue: DEFAULT_QUEUE,
            key_prefix: DEFAULT_PREFIX.into(),
        }
    }
}

/// A `[cluster]` key with an unusable value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config key `cluster.redis_url`: {0}")]
    RedisUrl(String),
    #[error("config key `cluster.node_name`: must be 1 to 64 letters, digits, `.`, `-` or `_`")]
    NodeName,
    #[error("config key `cluster.node_address`: {0} is not one of listen.udp")]
    NodeAddress(SocketAddr),
    #[error("config key `cluster.{key}`: {reason}")]
    Range {
        key: &'static str,
        reason: &'static str,
    },
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl ClusterConfig {
    /// Check every key; `listen_udp` is `[listen] udp` (the node address must be one).
    pub fn validate(&self, listen_udp: &[SocketAddr]) -> Result<(), ConfigError> {
        let url = &self.redis_url;
        if !(url.starts_with("redis://") || url.starts_with("redis+unix://")) {
            return Err(ConfigError::RedisUrl(
                "must start with redis:// or redis+unix://".into(),
            ));
        }
        if let Err(e) = redis::Client::open(url.as_str()) {
            return Err(ConfigError::RedisUrl(e.to_string()));
        }
        if !valid_name(&self.node_name) {
            return Err(ConfigError::NodeName);
        }
        if let Some(a) = self.node_address {
            if !listen_udp.contains(&a) {
                return Err(ConfigError::NodeAddress(a));
            }
        }
        let range = |key, ok: bool, reason| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Range { key, reason })
            }
        };
        range(
            "heartbeat_ms",
            (100..=60_000).contains(&self.heartbeat_ms),
            "must be 100..=60000",
        )?;
        range(
            "dead_after_ms",
            self.dead_after_ms >= 2 * self.heartbeat_ms && self.dead_after_ms <= 600_000,
            "must be at least twice heartbeat_ms and at most 600000",
        )?;
        range(
            "load_rate",
            (100..=10_000_000).contains(&self.load_rate),
            "must be 100..=10000000",
        )?;
        range(
            "queue",
            (16..=16_777_216).contains(&self.queue),
            "must be 16..=16777216",
        )?;
        range(
            "key_prefix",
            valid_name(&self.key_prefix),
            "must be 1 to 64 letters, digits, `.`, `-` or `_`",
        )
    }

    /// The address the other nodes forward to.
    pub fn node_address(&self, listen_udp: &[SocketAddr]) -> Option<SocketAddr> {
        self.node_address.or_else(|| listen_udp.first().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> ClusterConfig {
        ClusterConfig {
            redis_url: "redis://127.0.0.1:6379/0".into(),
            node_name: "edge-1".into(),
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn validation_names_the_key() {
        let listen: Vec<SocketAddr> = vec!["10.0.0.1:5060".parse().unwrap()];
        assert_eq!(ok().validate(&listen), Ok(()));
        let cases: Vec<(ClusterConfig, &str)> = vec![
            (
                ClusterConfig {
                    redis_url: "http://x".into(),
                    ..ok()
                },
                "cluster.redis_url",
            ),
            (
                ClusterConfig {
                    node_name: "".into(),
                    ..ok()
                },
                "cluster.node_name",
            ),
            (
                ClusterConfig {
                    node_name: "a b".into(),
                    ..ok()
                },
                "cluster.node_name",
            ),
            (
                ClusterConfig {
                    node_address: Some("10.0.0.2:5060".parse().unwrap()),
                    ..ok()
                },
                "cluster.node_address",
            ),
            (
                ClusterConfig {
                    heartbeat_ms: 10,
                    ..ok()
                },
                "cluster.heartbeat_ms",
            ),
            (
                ClusterConfig {
                    dead_after_ms: 1_500,
                    ..ok()
                },
                "cluster.dead_after_ms",
            ),
            (
                ClusterConfig {
                    load_rate: 0,
                    ..ok()
                },
                "cluster.load_rate",
            ),
            (ClusterConfig { queue: 1, ..ok() }, "cluster.queue"),
            (
                ClusterConfig {
                    key_prefix: "a:b".into(),
                    ..ok()
                },
                "cluster.key_prefix",
            ),
        ];
        for (cfg, key) in cases {
            let e = cfg.validate(&listen).unwrap_err().to_string();
            assert!(e.contains(key), "{e} should name {key}");
        }
    }

    #[test]
    fn node_address_defaults_to_the_first_listen_address() {
        let listen: Vec<SocketAddr> = vec![
            "10.0.0.1:5060".parse().unwrap(),
            "10.0.0.2:5060".parse().unwrap(),
        ];
        assert_eq!(ok().node_address(&listen), Some(listen[0]));
        let set = ClusterConfig {
            node_address: Some(listen[1]),
            ..ok()
        };
        assert_eq!(set.validate(&listen), Ok(()));
        assert_eq!(set.node_address(&listen), Some(listen[1]));
    }
}
