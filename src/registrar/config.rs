//! `[registrar]`: expiry limits, contacts per AOR, NAT handling and where bindings persist.
//!
//! Parsed by the lead's `src/config.rs` (embedded as a section), checked by
//! [`RegistrarConfig::validate`] before anything starts.

use serde::Deserialize;

/// A `[registrar]` value serde accepted but the registrar cannot use; names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config key `registrar.{key}`: {reason}")]
    Invalid {
        key: &'static str,
        reason: &'static str,
    },
}

/// What a REGISTER that would exceed `max_contacts` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnMaxContacts {
    /// Drop the AOR's oldest bindings (earliest registered) to make room (Kamailio's
    /// `save(..., "0x04")`-like behaviour).
    #[default]
    ReplaceOldest,
    /// Refuse the REGISTER with 403.
    Reject,
}

/// How the address to reach a phone is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NatMode {
    /// Send to the REGISTER's source address when the Contact host is a private or
    /// unroutable address or differs from the source (Kamailio `fix_nated_register` +
    /// `received`); otherwise to the Contact.
    #[default]
    Auto,
    /// Always send to the REGISTER's source address.
    Source,
    /// Trust the Contact when its host is an IP literal; fall back to the source otherwise.
    Contact,
}

/// `[registrar]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarConfig {
    /// Shortest non-zero expiry accepted; shorter ones get 423 with `Min-Expires`.
    pub min_expires: u32,
    /// Longer requested expiries are lowered to this.
    pub max_expires: u32,
    /// Expiry when neither the contact nor the request says one.
    pub default_expires: u32,
    /// Bindings one AOR may hold (1..=64).
    pub max_contacts: u16,
    pub on_max_contacts: OnMaxContacts,
    /// AORs the table may hold; past it new AORs get 503 (bounds memory).
    pub max_aors: usize,
    pub nat: NatMode,
    /// Key bindings by `user@domain` (true) or by the user part alone (false, default, like
    /// Kamailio's `use_domain = 0`): then an INVITE from Asterisk to `sip:1001@<proxy>`
    /// finds the phone that registered `sip:1001@pbx.example.com`.
    pub use_domain: bool,
    /// Where bindings persist: `sqlite:///path/location.db` (default `sqlite://location.db`),
    /// `mysql://user:pass@host:port/db` (Kamailio `location` layout), or `none`.
    pub persist: String,
    /// Write-behind batching interval: changes reach the store at most this late.
    pub persist_interval_ms: u64,
    /// Capacity of the queue from workers to the persistence thread; when it is full the
    /// change is counted and the next flush rewrites the whole table instead.
    pub persist_queue: usize,
    /// Bindings the expiry tick removes per stripe per call (bounds one tick's work).
    pub expire_batch: usize,
    /// The answer to a phone's MESSAGE/OPTIONS/SUBSCRIBE... for a known user without a
    /// binding: 404 (default, like an unknown user and like Kamailio, so an authenticated
    /// phone cannot tell which users exist) or 480. Asterisk's requests always get 480.
    pub unregistered_answer: u16,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: DEFAULT_MIN_EXPIRES,
            max_expires: DEFAULT_MAX_EXPIRES,
            default_expires: DEFAULT_EXPIRES,
            max_contacts: DEFAULT_MAX_CONTACTS,
            on_max_contacts: OnMaxContacts::ReplaceOldest,
            max_aors: DEFAULT_MAX_AORS,
            nat: NatMode::Auto,
            use_domain: false,
            persist: DEFAULT_PERSIST.to_owned(),
            persist_interval_ms: DEFAULT_PERSIST_INTERVAL_MS,
            persist_queue: DEFAULT_PERSIST_QUEUE,
            expire_batch: DEFAULT_EXPIRE_BATCH,
            unregistered_answer: 404,
        }
    }
}

pub const DEFAULT_MIN_EXPIRES: u32 = 60;
pub const DEFAULT_MAX_EXPIRES: u32 = 3600;
pub const DEFAULT_EXPIRES: u32 = 3600;
pub const DEFAULT_MAX_CONTACTS: u16 = 10;
pub const DEFAULT_MAX_AORS: usize = 2_000_000;
pub const DEFAULT_PERSIST: &str = "sqlite://location.db";
pub const DEFAULT_PERSIST_INTERVAL_MS: u64 = 1000;
pub const DEFAULT_PERSIST_QUEUE: usize = 65_536;
pub const DEFAULT_EXPIRE_BATCH: usize = 512;
/// Upper bound of `max_contacts` (per-AOR work stays small and on the stack).
pub const MAX_CONTACTS_LIMIT: u16 = 64;

/// Where the location table persists, parsed from [`RegistrarConfig::persist`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistTarget<'a> {
    None,
    Sqlite(&'a str),
    Mysql(&'a str),
}

impl RegistrarConfig {
    /// Check ranges and consistency; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason| Err(ConfigError::Invalid { key, reason });
        if self.min_expires == 0 || self.min_expires > 86_400 {
            return bad("min_expires", "must be 1..=86400");
        }
        if self.max_expires > 7 * 86_400 {
            return bad("max_expires", "must be at most 604800");
        }
        // A min/max conflict names the key that was moved away from its default.
        let d = RegistrarConfig::default();
        if self.max_expires < self.min_expires {
            return if self.max_expires == d.max_expires {
                bad(
                    "min_expires",
                    "must not exceed max_expires (3600 unless set): raise max_expires too",
                )
            } else {
                bad(
                    "max_expires",
                    "must be at least min_expires (60 unless set)",
                )
            };
        }
        if self.default_expires < self.min_expires {
            return if self.default_expires == d.default_expires {
                bad(
                    "min_expires",
                    "must not exceed default_expires (3600 unless set): raise default_expires too",
                )
            } else {
                bad(
                    "default_expires",
                    "must be at least min_expires (60 unless set)",
                )
            };
        }
        if self.default_expires > self.max_expires {
            return if self.default_expires == d.default_expires {
                bad(
                    "max_expires",
                    "must not be below default_expires (3600 unless set): lower default_expires too",
                )
            } else {
                bad(
                    "default_expires",
                    "must be at most max_expires (3600 unless set)",
                )
            };
        }
        if !matches!(self.unregistered_answer, 404 | 480) {
            return bad("unregistered_answer", "must be 404 or 480");
        }
        if self.max_contacts == 0 || self.max_contacts > MAX_CONTACTS_LIMIT {
            return bad("max_contacts", "must be 1..=64");
        }
        if self.max_aors == 0 || self.max_aors > 100_000_000 {
            return bad("max_aors", "must be 1..=100000000");
        }
        if self.persist_target().is_none() {
            return bad(
                "persist",
                "must be \"none\", \"sqlite://<path>\" or \"mysql://user:pass@host:port/db\"",
            );
        }
        if !(10..=60_000).contains(&self.persist_interval_ms) {
            return bad("persist_interval_ms", "must be 10..=60000");
        }
        if !(16..=16_777_216).contains(&self.persist_queue) {
            return bad("persist_queue", "must be 16..=16777216");
        }
        if !(1..=1_000_000).contains(&self.expire_batch) {
            return bad("expire_batch", "must be 1..=1000000");
        }
        Ok(())
    }

    /// The persistence backend, or `None` when `persist` is not understood.
    pub fn persist_target(&self) -> Option<PersistTarget<'_>> {
        let p = self.persist.as_str();
        if p == "none" || p.is_empty() {
            Some(PersistTarget::None)
        } else if let Some(path) = p.strip_prefix("sqlite://") {
            (!path.is_empty()).then_some(PersistTarget::Sqlite(path))
        } else if p.starts_with("mysql://") && p.len() > "mysql://".len() {
            Some(PersistTarget::Mysql(p))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(toml_text: &str) -> &'static str {
        let cfg: RegistrarConfig = toml::from_str(toml_text).expect("parses");
        match cfg.validate() {
            Ok(()) => "ok",
            Err(ConfigError::Invalid { key, .. }) => key,
        }
    }

    #[test]
    fn defaults_validate() {
        assert_eq!(key_of(""), "ok");
        let c = RegistrarConfig::default();
        assert_eq!(
            c.persist_target(),
            Some(PersistTarget::Sqlite("location.db"))
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("unregistered_answer = 403", "unregistered_answer"),
            ("unregistered_answer = 480", "ok"),
            ("min_expires = 0", "min_expires"),
            ("min_expires = 100\nmax_expires = 50", "max_expires"),
            ("default_expires = 10", "default_expires"),
            ("max_contacts = 0", "max_contacts"),
            ("max_contacts = 65", "max_contacts"),
            ("max_aors = 0", "max_aors"),
            ("persist = \"redis://x\"", "persist"),
            ("persist = \"sqlite://\"", "persist"),
            ("persist_interval_ms = 0", "persist_interval_ms"),
            ("persist_queue = 1", "persist_queue"),
            ("expire_batch = 0", "expire_batch"),
            (
                "persist = \"none\"\non_max_contacts = \"reject\"\nnat = \"source\"",
                "ok",
            ),
            ("persist = \"mysql://root@127.0.0.1:3306/kam\"", "ok"),
        ];
        for (text, key) in cases {
            assert_eq!(key_of(text), key, "{text}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let r: Result<RegistrarConfig, _> = toml::from_str("min_expire = 5");
        assert!(r.is_err());
    }
}
