//! The `[credentials]` config section: where the credentials live (URL), which table layout
//! (a preset for Asterisk's realtime tables, or `custom`), and the cache and pool knobs.
//!
//! [`CredentialsConfig::resolve`] turns presets and overrides into a [`Layout`]: the table,
//! the column names (validated identifiers, so a config file cannot inject SQL) and how a row
//! becomes a [`super::Credential`]. The URL's password never appears in `Debug` output or in
//! errors ([`redact_url`]).

use serde::Deserialize;

/// `schema = ...`: which table layout to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schema {
    /// chan_sip realtime peers: `name`, `secret`, `md5secret`.
    Sippeers,
    /// chan_sip realtime users: same columns as `sippeers`.
    Sipusers,
    /// PJSIP realtime: `username`, `auth_type`, `password`, `md5_cred`, `realm`,
    /// `password_digest`.
    PsAuths,
    /// Any table: `table`, `user_column`, `password_column` required.
    Custom,
}

/// How the password column of a `custom` table is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PasswordKind {
    #[serde(rename = "plain")]
    Plain,
    /// Hex MD5(`user:realm:password`).
    #[serde(rename = "ha1-md5")]
    Ha1Md5,
    /// Hex SHA-256(`user:realm:password`).
    #[serde(rename = "ha1-sha256")]
    Ha1Sha256,
}

/// `[credentials]`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialsConfig {
    /// `mysql://user:pass@host:port/db` (also `mysql://user@localhost/db?socket=/path.sock`)
    /// or `sqlite:///abs/path.db`.
    pub url: String,
    pub schema: Schema,
    /// Defaults: the preset's table (`sippeers`, `sipusers`, `ps_auths`); required for custom.
    pub table: Option<String>,
    /// Defaults: `name` (chan_sip), `username` (ps_auths); required for custom.
    pub user_column: Option<String>,
    /// Defaults: `secret` (chan_sip; set `sippasswd` for the tutorial layout), `password`
    /// (ps_auths); required for custom.
    pub password_column: Option<String>,
    /// chan_sip: the HA1 column used when the password is empty (default `md5secret`; used
    /// only if the table has it). Empty string disables it.
    pub md5_column: Option<String>,
    /// Optional realm column: a stored HA1 whose row realm differs from the proxy realm is
    /// unusable. Default for ps_auths: `realm` (if present).
    pub realm_column: Option<String>,
    /// custom only: how `password_column` is stored.
    pub password_kind: PasswordKind,
    /// Full reload period. 0 disables periodic refresh.
    pub refresh_secs: u64,
    /// How long an unknown user is remembered as unknown.
    pub negative_ttl_secs: u64,
    /// Blocking DB threads serving cache misses.
    pub pool_size: usize,
    /// Bound of the miss queue (full → `PoolFull`, the core answers 503).
    pub queue_size: usize,
    /// Also keep plain passwords in memory (needed only to answer an Asterisk challenge whose
    /// realm differs from the proxy realm).
    pub keep_plain: bool,
    /// Connect / read timeout for database connections.
    pub connect_timeout_secs: u64,
    /// Longest wait between reconnect attempts after a failure (backoff doubles from 50 ms).
    pub reconnect_max_ms: u64,
    /// Most unknown users remembered (negative cache bound).
    pub max_negative: usize,
    /// Start even when the database cannot be read at start (empty cache, retried).
    pub start_without_db: bool,
}

pub const DEFAULT_URL: &str = "sqlite:///var/lib/sipfront/credentials.db";
pub const DEFAULT_REFRESH_SECS: u64 = 60;
pub const DEFAULT_NEGATIVE_TTL_SECS: u64 = 30;
pub const DEFAULT_POOL_SIZE: usize = 2;
pub const DEFAULT_QUEUE_SIZE: usize = 1024;
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 5;
pub const DEFAULT_RECONNECT_MAX_MS: u64 = 5_000;
pub const DEFAULT_MAX_NEGATIVE: usize = 100_000;

impl Default for CredentialsConfig {
    fn default() -> Self {
        CredentialsConfig {
            url: DEFAULT_URL.into(),
            schema: Schema::Sippeers,
            table: None,
            user_column: None,
            password_column: None,
            md5_column: None,
            realm_column: None,
            password_kind: PasswordKind::Plain,
            refresh_secs: DEFAULT_REFRESH_SECS,
            negative_ttl_secs: DEFAULT_NEGATIVE_TTL_SECS,
            pool_size: DEFAULT_POOL_SIZE,
            queue_size: DEFAULT_QUEUE_SIZE,
            keep_plain: false,
            connect_timeout_secs: DEFAULT_CONNECT_TIMEOUT_SECS,
            reconnect_max_ms: DEFAULT_RECONNECT_MAX_MS,
            max_negative: DEFAULT_MAX_NEGATIVE,
            start_without_db: false,
        }
    }
}

impl std::fmt::Debug for CredentialsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsConfig")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("user_column", &self.user_column)
            .field("password_column", &self.password_column)
            .field("md5_column", &self.md5_column)
            .field("realm_column", &self.realm_column)
            .field("password_kind", &self.password_kind)
            .field("refresh_secs", &self.refresh_secs)
            .field("negative_ttl_secs", &self.negative_ttl_secs)
            .field("pool_size", &self.pool_size)
            .field("queue_size", &self.queue_size)
            .field("keep_plain", &self.keep_plain)
            .field("start_without_db", &self.start_without_db)
            .finish_non_exhaustive()
    }
}

/// A config value that cannot be used; names the offending key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("credentials.url: must start with mysql:// or sqlite:// and name a database")]
    BadUrl,
    #[error("credentials.{key}: not a valid SQL identifier (letters, digits, _; table may be schema.table)")]
    BadIdentifier { key: &'static str },
    #[error("credentials.{key}: required for schema = \"custom\"")]
    MissingForCustom { key: &'static str },
    #[error("credentials.password_kind: only meaningful for schema = \"custom\"")]
    PasswordKindNotCustom,
    #[error("credentials.{key}: out of range")]
    OutOfRange { key: &'static str },
}

/// Which backend a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Mysql,
    /// Path of the SQLite file.
    Sqlite(String),
}

/// Classifies a URL without echoing it.
pub fn backend_of(url: &str) -> Result<Backend, ConfigError> {
    if let Some(rest) = url.strip_prefix("sqlite://") {
        if rest.is_empty() {
            return Err(ConfigError::BadUrl);
        }
        return Ok(Backend::Sqlite(rest.to_string()));
    }
    if let Some(rest) = url.strip_prefix("mysql://") {
        if rest.is_empty() {
            return Err(ConfigError::BadUrl);
        }
        return Ok(Backend::Mysql);
    }
    Err(ConfigError::BadUrl)
}

/// The URL with any password in the userinfo replaced by `***` (and `password=` query values).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparsable url>".into();
    };
    // Userinfo ends at the last '@' before the query (a password may hold '/' or '@').
    let before_query = rest.find('?').unwrap_or(rest.len());
    let (userinfo, tail) = match rest.get(..before_query).and_then(|s| s.rfind('@')) {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let mut out = format!("{scheme}://");
    if let Some(userinfo) = userinfo {
        let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
        out.push_str(user);
        if userinfo.contains(':') {
            out.push_str(":***");
        }
        out.push('@');
    }
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let q: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _))
                        if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("pass") =>
                    {
                        format!("{k}=***")
                    }
                    _ => kv.to_string(),
                })
                .collect();
            out.push_str(&q.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

fn valid_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

fn valid_table(s: &str) -> bool {
    match s.split_once('.') {
        Some((a, b)) => valid_ident(a) && valid_ident(b),
        None => valid_ident(s),
    }
}

/// How a row turns into a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowKind {
    /// chan_sip: plain password, else the MD5 HA1 column.
    ChanSip,
    /// ps_auths: by `auth_type`.
    PsAuths,
    /// custom: the password column holds this.
    Custom(PasswordKind),
}

/// The resolved table layout: validated identifiers. `None` optional columns are not read;
/// optional columns missing from the actual table are dropped at connect time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub table: String,
    pub user: String,
    pub password: String,
    pub kind: RowKind,
    /// Optional columns: (column, required-by-config).
    pub md5: Option<(String, bool)>,
    pub realm: Option<(String, bool)>,
    pub auth_type: Option<(String, bool)>,
    pub digest: Option<(String, bool)>,
}

impl CredentialsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        backend_of(&self.url)?;
        self.resolve().map(|_| ())?;
        let ranges: [(&'static str, u64, u64, u64); 6] = [
            ("refresh_secs", self.refresh_secs, 0, 86_400),
            ("negative_ttl_secs", self.negative_ttl_secs, 0, 86_400),
            ("pool_size", self.pool_size as u64, 1, 64),
            ("queue_size", self.queue_size as u64, 1, 1 << 20),
            ("connect_timeout_secs", self.connect_timeout_secs, 1, 300),
            ("reconnect_max_ms", self.reconnect_max_ms, 1, 600_000),
        ];
        for (key, v, lo, hi) in ranges {
            if v < lo || v > hi {
                return Err(ConfigError::OutOfRange { key });
            }
        }
        if self.max_negative > 10_000_000 {
            return Err(ConfigError::OutOfRange {
                key: "max_negative",
            });
        }
        Ok(())
    }

    /// Applies the preset defaults and overrides; validates every identifier.
    pub fn resolve(&self) -> Result<Layout, ConfigError> {
        let explicit = |v: &Option<String>| v.as_ref().filter(|s| !s.is_empty()).cloned();
        let (table, user, password, kind) = match self.schema {
            Schema::Sippeers | Schema::Sipusers | Schema::PsAuths => {
                if self.password_kind != PasswordKind::Plain {
                    return Err(ConfigError::PasswordKindNotCustom);
                }
                let (t, u, p, k) = match self.schema {
                    Schema::Sippeers => ("sippeers", "name", "secret", RowKind::ChanSip),
                    Schema::Sipusers => ("sipusers", "name", "secret", RowKind::ChanSip),
                    _ => ("ps_auths", "username", "password", RowKind::PsAuths),
                };
                (
                    explicit(&self.table).unwrap_or_else(|| t.into()),
                    explicit(&self.user_column).unwrap_or_else(|| u.into()),
                    explicit(&self.password_column).unwrap_or_else(|| p.into()),
                    k,
                )
            }
            Schema::Custom => (
                explicit(&self.table).ok_or(ConfigError::MissingForCustom { key: "table" })?,
                explicit(&self.user_column)
                    .ok_or(ConfigError::MissingForCustom { key: "user_column" })?,
                explicit(&self.password_column).ok_or(ConfigError::MissingForCustom {
                    key: "password_column",
                })?,
                RowKind::Custom(self.password_kind),
            ),
        };
        if !valid_table(&table) {
            return Err(ConfigError::BadIdentifier { key: "table" });
        }
        for (key, v) in [("user_column", &user), ("password_column", &password)] {
            if !valid_ident(v) {
                return Err(ConfigError::BadIdentifier { key });
            }
        }
        // Optional columns: an explicit setting is required to exist; a preset default is
        // used only if present. An explicit empty string disables the column.
        let opt = |key: &'static str, v: &Option<String>, default: Option<&str>| match v {
            Some(s) if s.is_empty() => Ok(None),
            Some(s) if valid_ident(s) => Ok(Some((s.clone(), true))),
            Some(_) => Err(ConfigError::BadIdentifier { key }),
            None => Ok(default.map(|d| (d.to_string(), false))),
        };
        let (md5_d, realm_d, at_d, dg_d) = match kind {
            RowKind::ChanSip => (Some("md5secret"), None, None, None),
            RowKind::PsAuths => (
                Some("md5_cred"),
                Some("realm"),
                Some("auth_type"),
                Some("password_digest"),
            ),
            RowKind::Custom(_) => (None, None, None, None),
        };
        Ok(Layout {
            table,
            user,
            password,
            md5: opt("md5_column", &self.md5_column, md5_d)?,
            realm: opt("realm_column", &self.realm_column, realm_d)?,
            auth_type: at_d.map(|d| (d.to_string(), true)),
            digest: dg_d.map(|d| (d.to_string(), false)),
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_need_nothing_else() {
        let c = CredentialsConfig::default();
        c.validate().unwrap();
        let l = c.resolve().unwrap();
        assert_eq!(
            (l.table.as_str(), l.user.as_str(), l.password.as_str()),
            ("sippeers", "name", "secret")
        );
        assert_eq!(l.md5, Some(("md5secret".into(), false)));
        let p: CredentialsConfig = toml::from_str("schema = \"ps_auths\"").unwrap();
        let l = p.resolve().unwrap();
        assert_eq!(
            (l.table.as_str(), l.user.as_str()),
            ("ps_auths", "username")
        );
        assert_eq!(l.auth_type, Some(("auth_type".into(), true)));
        let t: CredentialsConfig = toml::from_str(
            "schema = \"sipusers\"\npassword_column = \"sippasswd\"\nmd5_column = \"\"",
        )
        .unwrap();
        let l = t.resolve().unwrap();
        assert_eq!(
            (l.table.as_str(), l.password.as_str(), l.md5.clone()),
            ("sipusers", "sippasswd", None)
        );
    }

    #[test]
    fn rejects() {
        let cases: &[(&str, ConfigError)] = &[
            ("url = \"postgres://x\"", ConfigError::BadUrl),
            (
                "schema = \"custom\"",
                ConfigError::MissingForCustom { key: "table" },
            ),
            (
                "table = \"t; DROP TABLE x\"",
                ConfigError::BadIdentifier { key: "table" },
            ),
            (
                "user_column = \"a`b\"",
                ConfigError::BadIdentifier { key: "user_column" },
            ),
            (
                "md5_column = \"1x\"",
                ConfigError::BadIdentifier { key: "md5_column" },
            ),
            (
                "password_kind = \"ha1-md5\"",
                ConfigError::PasswordKindNotCustom,
            ),
            (
                "pool_size = 0",
                ConfigError::OutOfRange { key: "pool_size" },
            ),
            (
                "queue_size = 0",
                ConfigError::OutOfRange { key: "queue_size" },
            ),
        ];
        for (text, want) in cases {
            let c: CredentialsConfig = toml::from_str(text).unwrap();
            assert_eq!(c.validate().as_ref(), Err(want), "{text}");
        }
        assert!(toml::from_str::<CredentialsConfig>("nope = 1").is_err());
        let ok: CredentialsConfig = toml::from_str(
            "schema = \"custom\"\ntable = \"asterisk.users\"\nuser_column = \"u\"\npassword_column = \"h\"\npassword_kind = \"ha1-sha256\"\nrealm_column = \"r\"",
        )
        .unwrap();
        ok.validate().unwrap();
    }

    #[test]
    fn url_password_never_shown() {
        let c = CredentialsConfig {
            url: "mysql://asterisk:s3cr3t@db:3306/ast?socket=/x&password=s3cr3t".into(),
            ..CredentialsConfig::default()
        };
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert!(
            dbg.contains("mysql://asterisk:***@db:3306/ast?socket=/x&password=***"),
            "{dbg}"
        );
        assert_eq!(
            redact_url("mysql://root@localhost/db"),
            "mysql://root@localhost/db"
        );
        assert_eq!(redact_url("sqlite:///var/x.db"), "sqlite:///var/x.db");
        assert_eq!(redact_url("garbage"), "<unparsable url>");
        assert_eq!(redact_url("mysql://u:p/a@ss@h/db"), "mysql://u:***@h/db");
        assert_eq!(
            backend_of("sqlite:///a.db"),
            Ok(Backend::Sqlite("/a.db".into()))
        );
        assert_eq!(backend_of("mysql://"), Err(ConfigError::BadUrl));
    }
}
