//! The `[auth]` config section: which algorithms to offer, the nonce secret and lifetime, and
//! the policy switches (`allow_no_qop`, `check_from_user`, `bind_nonce_to_ip`).
//!
//! The realm itself lives in the lead's `[domain]` section and is passed to
//! [`super::Authenticator::new`].

use serde::Deserialize;

use super::uri::UriCheck;
use super::Algorithm;

/// `[auth]`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Algorithms offered in challenges, written strongest first whatever the order here.
    /// Default: `["MD5"]` (what every phone supports; many old phones take the first challenge
    /// only, so add SHA-256 / SHA-512-256 when the phones support it).
    pub algorithms: Vec<Algorithm>,
    /// Hex secret (at least 32 hex digits = 16 bytes) shared by the nodes of a cluster so any
    /// node accepts another's nonces. Empty: a random secret is generated at start.
    pub nonce_secret: String,
    /// How long a nonce is accepted; older but otherwise valid ones give `stale=true`.
    pub nonce_ttl_secs: u64,
    /// Accept RFC 2069-style responses without `qop` (no replay protection beyond the nonce).
    pub allow_no_qop: bool,
    /// For a phone's requests other than REGISTER, require the From user to equal the
    /// authenticated user (the core answers 403 otherwise; a REGISTER's To user is always
    /// checked).
    pub check_from_user: bool,
    /// Bind nonces to the source IP address they were issued to.
    pub bind_nonce_to_ip: bool,
    /// Nonces tracked by the replay guard (memory bound: about 40 bytes each).
    pub replay_capacity: usize,
    /// How the digest `uri` must relate to the Request-URI: `strict`, `host` (default) or
    /// `off` (see [`super::uri`]).
    pub uri_check: UriCheck,
    /// Every failed authentication (wrong password, unknown user, URI mismatch) is answered
    /// this long after its request arrived, so an unknown user (a database lookup) and a
    /// known one take the same time; 0 = answer at once. At most 5000.
    pub failure_delay_ms: u64,
}

pub const DEFAULT_NONCE_TTL_SECS: u64 = 300;
pub const DEFAULT_REPLAY_CAPACITY: usize = 1 << 18;
/// Above a credential lookup in MariaDB or SQLite (milliseconds to tens), below T1.
pub const DEFAULT_FAILURE_DELAY_MS: u64 = 250;
/// Longest `failure_delay_ms` (a phone waits this long for its new challenge).
pub const MAX_FAILURE_DELAY_MS: u64 = 5000;

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            algorithms: vec![Algorithm::Md5],
            nonce_secret: String::new(),
            nonce_ttl_secs: DEFAULT_NONCE_TTL_SECS,
            allow_no_qop: false,
            check_from_user: true,
            bind_nonce_to_ip: false,
            replay_capacity: DEFAULT_REPLAY_CAPACITY,
            uri_check: UriCheck::default(),
            failure_delay_ms: DEFAULT_FAILURE_DELAY_MS,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("algorithms", &self.algorithms)
            .field(
                "nonce_secret",
                &if self.nonce_secret.is_empty() {
                    "<random>"
                } else {
                    "<redacted>"
                },
            )
            .field("nonce_ttl_secs", &self.nonce_ttl_secs)
            .field("allow_no_qop", &self.allow_no_qop)
            .field("check_from_user", &self.check_from_user)
            .field("bind_nonce_to_ip", &self.bind_nonce_to_ip)
            .field("replay_capacity", &self.replay_capacity)
            .field("uri_check", &self.uri_check)
            .field("failure_delay_ms", &self.failure_delay_ms)
            .finish()
    }
}

/// A config value that cannot be used; names the offending key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("auth.algorithms: at least one algorithm must be enabled")]
    NoAlgorithm,
    #[error("auth.nonce_secret: must be hex, at least 32 and at most 128 digits")]
    BadNonceSecret,
    #[error("auth.nonce_ttl_secs: must be between 1 and 86400")]
    BadNonceTtl,
    #[error("auth.replay_capacity: must be between 1024 and 67108864")]
    BadReplayCapacity,
    #[error("auth.failure_delay_ms: must be at most 5000")]
    BadFailureDelay,
}

impl AuthConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.algorithms.is_empty() {
            return Err(ConfigError::NoAlgorithm);
        }
        if !self.nonce_secret.is_empty() {
            let s = &self.nonce_secret;
            if s.len() < 32 || s.len() > 128 || !s.len().is_multiple_of(2) {
                return Err(ConfigError::BadNonceSecret);
            }
            if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::BadNonceSecret);
            }
        }
        if self.nonce_ttl_secs == 0 || self.nonce_ttl_secs > 86_400 {
            return Err(ConfigError::BadNonceTtl);
        }
        if !(1024..=(1 << 26)).contains(&self.replay_capacity) {
            return Err(ConfigError::BadReplayCapacity);
        }
        if self.failure_delay_ms > MAX_FAILURE_DELAY_MS {
            return Err(ConfigError::BadFailureDelay);
        }
        Ok(())
    }

    /// The enabled algorithms, deduplicated, strongest first.
    pub fn algorithms_strongest_first(&self) -> Vec<Algorithm> {
        Algorithm::STRONGEST_FIRST
            .into_iter()
            .filter(|a| self.algorithms.contains(a))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        AuthConfig::default().validate().unwrap();
    }

    #[test]
    fn parses_and_rejects() {
        let c: AuthConfig = toml::from_str(
            "algorithms = [\"MD5\", \"SHA-512-256\"]\nnonce_secret = \"00112233445566778899aabbccddeeff\"",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.algorithms_strongest_first(),
            vec![Algorithm::Sha512_256, Algorithm::Md5]
        );
        assert!(toml::from_str::<AuthConfig>("bogus = 1").is_err());
        let strict: AuthConfig = toml::from_str("uri_check = \"strict\"").unwrap();
        assert_eq!(strict.uri_check, UriCheck::Strict);
        assert_eq!(AuthConfig::default().uri_check, UriCheck::Host);
        assert!(toml::from_str::<AuthConfig>("uri_check = \"hostname\"").is_err());
        let delay: AuthConfig = toml::from_str("failure_delay_ms = 0").unwrap();
        delay.validate().unwrap();
        assert_eq!(AuthConfig::default().failure_delay_ms, 250);
        let slow: AuthConfig = toml::from_str("failure_delay_ms = 5001").unwrap();
        assert_eq!(slow.validate(), Err(ConfigError::BadFailureDelay));
        let lower: AuthConfig = toml::from_str("algorithms = [\"md5\", \"sha256\"]").unwrap();
        assert_eq!(lower.algorithms, vec![Algorithm::Md5, Algorithm::Sha256]);
        assert!(toml::from_str::<AuthConfig>("algorithms = [\"MD5-sess\"]").is_err());
        let cases: [(&str, ConfigError); 4] = [
            ("algorithms = []", ConfigError::NoAlgorithm),
            ("nonce_secret = \"abc\"", ConfigError::BadNonceSecret),
            ("nonce_ttl_secs = 0", ConfigError::BadNonceTtl),
            ("replay_capacity = 1", ConfigError::BadReplayCapacity),
        ];
        for (text, want) in cases {
            let c: AuthConfig = toml::from_str(text).unwrap();
            assert_eq!(c.validate(), Err(want), "{text}");
        }
        let secret = AuthConfig {
            nonce_secret: "zz112233445566778899aabbccddeeff".into(),
            ..AuthConfig::default()
        };
        assert_eq!(secret.validate(), Err(ConfigError::BadNonceSecret));
        assert!(!format!("{secret:?}").contains("zz11"));
    }
}
