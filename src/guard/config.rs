//! `[guard]`: rate limiting, failed-authentication bans and scanner drops.
//!
//! Parsed by the lead's `src/config.rs` (embedded as a section), checked by
//! [`GuardConfig::validate`] before anything starts.

use serde::Deserialize;

use super::addr::Cidr;
use super::scanner::{DEFAULT_SCANNER_USER_AGENTS, MAX_NEEDLES, MAX_NEEDLE_LEN};

/// A `[guard]` value serde accepted but the guard cannot use; names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config key `guard.{key}`: {reason}")]
    Invalid {
        key: &'static str,
        reason: &'static str,
    },
    #[error("config key `guard.allow[{index}]`: {entry:?} is not an IP address or CIDR")]
    AllowEntry { index: usize, entry: String },
    #[error("config key `guard.scanner_user_agents[{index}]`: must be 1..=64 bytes")]
    ScannerEntry { index: usize },
}

/// `[guard]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// Addresses and networks (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`) that are never
    /// rate limited, banned or scanner-checked, in addition to the Asterisk nodes.
    pub allow: Vec<String>,
    /// IPv6 sources are limited, counted and banned per prefix of this length (16..=128).
    pub ipv6_prefix: u8,
    /// Lock stripes of each table (rounded up to a power of two, 1..=4096).
    pub shards: usize,

    /// Per-source token bucket on every datagram.
    pub rate_enabled: bool,
    /// Sustained datagrams per second one source may send.
    pub rate_pps: u32,
    /// Datagrams a source may send at once after being idle.
    pub rate_burst: u32,
    /// Sources with a bucket at once; the least recently seen is forgotten past it.
    pub max_tracked_ips: usize,

    /// Ban sources that fail authentication.
    pub ban_enabled: bool,
    /// Failed authentications from one source within the window that ban it.
    pub ban_ip_failures: u32,
    /// Failed authentications for one user (any sources) within the window that put the
    /// user under attack: every source failing for it is then banned.
    pub ban_user_failures: u32,
    /// The counting window, from a source's (or user's) first failure.
    pub ban_window_secs: u32,
    /// How long a ban (and a user's under-attack state) lasts.
    pub ban_secs: u32,
    /// Bans held at once; past it the oldest ban is dropped.
    pub max_bans: usize,
    /// Sources, and separately users, with a failure counter at once.
    pub max_tracked_failures: usize,

    /// A file keeping the bans across restarts (written on change and at shutdown, read at
    /// start); empty: bans live in memory only.
    pub persist: String,

    /// Drop requests whose User-Agent contains one of `scanner_user_agents`.
    pub scanner_enabled: bool,
    /// Case-insensitive substrings (at most 64, each 1..=64 bytes).
    pub scanner_user_agents: Vec<String>,
}

pub const DEFAULT_IPV6_PREFIX: u8 = 64;
pub const DEFAULT_SHARDS: usize = 64;
pub const DEFAULT_RATE_PPS: u32 = 100;
pub const DEFAULT_RATE_BURST: u32 = 400;
pub const DEFAULT_MAX_TRACKED_IPS: usize = 65_536;
pub const DEFAULT_BAN_IP_FAILURES: u32 = 10;
pub const DEFAULT_BAN_USER_FAILURES: u32 = 30;
pub const DEFAULT_BAN_WINDOW_SECS: u32 = 120;
pub const DEFAULT_BAN_SECS: u32 = 900;
pub const DEFAULT_MAX_BANS: usize = 16_384;
pub const DEFAULT_MAX_TRACKED_FAILURES: usize = 16_384;

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            allow: Vec::new(),
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            shards: DEFAULT_SHARDS,
            rate_enabled: true,
            rate_pps: DEFAULT_RATE_PPS,
            rate_burst: DEFAULT_RATE_BURST,
            max_tracked_ips: DEFAULT_MAX_TRACKED_IPS,
            ban_enabled: true,
            ban_ip_failures: DEFAULT_BAN_IP_FAILURES,
            ban_user_failures: DEFAULT_BAN_USER_FAILURES,
            ban_window_secs: DEFAULT_BAN_WINDOW_SECS,
            ban_secs: DEFAULT_BAN_SECS,
            max_bans: DEFAULT_MAX_BANS,
            max_tracked_failures: DEFAULT_MAX_TRACKED_FAILURES,
            persist: String::new(),
            scanner_enabled: true,
            scanner_user_agents: DEFAULT_SCANNER_USER_AGENTS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }
}

impl GuardConfig {
    /// Check ranges and entries; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason| Err(ConfigError::Invalid { key, reason });
        self.allow_nets()?;
        if !(16..=128).contains(&self.ipv6_prefix) {
            return bad("ipv6_prefix", "must be 16..=128");
        }
        if !(1..=4096).contains(&self.shards) {
            return bad("shards", "must be 1..=4096");
        }
        if !(1..=1_000_000).contains(&self.rate_pps) {
            return bad("rate_pps", "must be 1..=1000000");
        }
        if !(1..=10_000_000).contains(&self.rate_burst) {
            return bad("rate_burst", "must be 1..=10000000");
        }
        if !(1..=100_000_000).contains(&self.max_tracked_ips) {
            return bad("max_tracked_ips", "must be 1..=100000000");
        }
        if !(1..=1_000_000).contains(&self.ban_ip_failures) {
            return bad("ban_ip_failures", "must be 1..=1000000");
        }
        if !(1..=1_000_000).contains(&self.ban_user_failures) {
            return bad("ban_user_failures", "must be 1..=1000000");
        }
        if !(1..=86_400).contains(&self.ban_window_secs) {
            return bad("ban_window_secs", "must be 1..=86400");
        }
        if !(1..=30 * 86_400).contains(&self.ban_secs) {
            return bad("ban_secs", "must be 1..=2592000");
        }
        if !(1..=10_000_000).contains(&self.max_bans) {
            return bad("max_bans", "must be 1..=10000000");
        }
        if !(1..=100_000_000).contains(&self.max_tracked_failures) {
            return bad("max_tracked_failures", "must be 1..=100000000");
        }
        if !self.persist.is_empty() && self.persist.trim() != self.persist {
            return bad("persist", "must be a file path without surrounding spaces");
        }
        if self.scanner_user_agents.len() > MAX_NEEDLES {
            return bad("scanner_user_agents", "at most 64 entries");
        }
        for (index, ua) in self.scanner_user_agents.iter().enumerate() {
            let len = ua.trim().len();
            if len == 0 || len > MAX_NEEDLE_LEN {
                return Err(ConfigError::ScannerEntry { index });
            }
        }
        Ok(())
    }

    /// The `allow` entries, parsed.
    pub fn allow_nets(&self) -> Result<Vec<Cidr>, ConfigError> {
        self.allow
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                Cidr::parse(entry).ok_or_else(|| ConfigError::AllowEntry {
                    index,
                    entry: entry.clone(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(toml_text: &str) -> String {
        let cfg: GuardConfig = toml::from_str(toml_text).expect("parses");
        match cfg.validate() {
            Ok(()) => "ok".to_owned(),
            Err(ConfigError::Invalid { key, .. }) => key.to_owned(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_validate() {
        assert_eq!(key_of(""), "ok");
        let c = GuardConfig::default();
        assert!(c
            .scanner_user_agents
            .iter()
            .any(|s| s == "friendly-scanner"));
        assert!(c.rate_enabled && c.ban_enabled && c.scanner_enabled);
    }

    #[test]
    fn bad_values_name_their_key() {
        let many_needles = format!("scanner_user_agents = [{}]", vec!["\"x\""; 65].join(","));
        let cases = [
            ("ipv6_prefix = 8", "ipv6_prefix"),
            ("ipv6_prefix = 129", "ipv6_prefix"),
            ("shards = 0", "shards"),
            ("rate_pps = 0", "rate_pps"),
            ("rate_burst = 0", "rate_burst"),
            ("max_tracked_ips = 0", "max_tracked_ips"),
            ("ban_ip_failures = 0", "ban_ip_failures"),
            ("ban_user_failures = 0", "ban_user_failures"),
            ("ban_window_secs = 0", "ban_window_secs"),
            ("ban_secs = 0", "ban_secs"),
            ("max_bans = 0", "max_bans"),
            ("max_tracked_failures = 0", "max_tracked_failures"),
            (
                "allow = [\"10.0.0.0/8\", \"bogus\"]",
                "config key `guard.allow[1]`: \"bogus\" is not an IP address or CIDR",
            ),
            (
                "scanner_user_agents = [\"ok\", \"\"]",
                "config key `guard.scanner_user_agents[1]`: must be 1..=64 bytes",
            ),
            (
                "allow = [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"]\nrate_enabled = false",
                "ok",
            ),
            ("scanner_user_agents = []\nscanner_enabled = false", "ok"),
            (&many_needles, "scanner_user_agents"),
        ];
        for (text, key) in cases {
            assert_eq!(key_of(text), key, "{text}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let r: Result<GuardConfig, _> = toml::from_str("rate = 5");
        assert!(r.is_err());
    }
}
