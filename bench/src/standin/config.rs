//! Stand-in configuration: what each dialled extension does, the REGISTER challenge, passwords,
//! timers. Built by the `asterisk-standin` binary from its command line (or by tests directly),
//! checked by [`Config::validate`], then owned by the engine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// What the stand-in does with an INVITE for an extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// IVR-like: 100, 180, then 200 with SDP after `answer_delay_ms`; waits for ACK and BYE.
    Answer,
    /// 100 and 180, never a final response (tests the proxy's timeout/CANCEL paths).
    NoAnswer,
    /// 486 Busy Here.
    Busy,
    /// No response at all, not even 100 (the proxy's INVITE client transaction times out: 408).
    Drop,
    /// Like Asterisk's `Dial(SIP/X)`: call the Contact registered for X and bridge the legs.
    Dial,
}

impl FromStr for Mode {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "answer" => Ok(Mode::Answer),
            "noanswer" | "no-answer" => Ok(Mode::NoAnswer),
            "busy" => Ok(Mode::Busy),
            "drop" | "silent" => Ok(Mode::Drop),
            "dial" => Ok(Mode::Dial),
            _ => Err(ConfigError::Invalid {
                key: "mode",
                reason: "expected answer, noanswer, busy, drop or dial",
            }),
        }
    }
}

/// Configuration errors; each names the offending option.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("invalid --{key}: {reason}")]
    Invalid {
        key: &'static str,
        reason: &'static str,
    },
    #[error("cannot read users file {path}: {source}")]
    UsersFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("users file {path} line {line}: expected user;domain;password or user;password")]
    UsersLine { path: PathBuf, line: usize },
}

pub const DEFAULT_LISTEN: &str = "127.0.0.2:5080";
pub const DEFAULT_REALM: &str = "asterisk";
pub const DEFAULT_T1_MS: u64 = 500;
pub const DEFAULT_T2_MS: u64 = 4000;
pub const DEFAULT_EXPIRES: u32 = 3600;
pub const DEFAULT_MAX_CALL_MS: u64 = 600_000;

/// Everything the engine needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// Mode for extensions without a `routes` entry.
    pub default_mode: Mode,
    /// Per-extension modes (`--route 600=answer`).
    pub routes: HashMap<String, Mode>,
    /// Delay between 180 and 200 in answer mode.
    pub answer_delay_ms: u64,
    /// In answer mode, send BYE to the caller this long after the ACK (0 = never).
    pub hangup_after_ms: u64,
    /// Answer REGISTER with a 401 digest challenge first.
    pub challenge: bool,
    /// Challenge new INVITEs and MESSAGEs with 407 (stands in for the proxy when sipp phone
    /// scenarios are checked against the stand-in alone).
    pub challenge_calls: bool,
    /// Realm of the challenges.
    pub realm: String,
    /// Password for users absent from `passwords`.
    pub default_password: Option<String>,
    /// Per-user passwords (from the users CSV).
    pub passwords: HashMap<String, String>,
    /// A call still open after this long is ended (480 or BYE) and forgotten, so callers that
    /// vanish cannot grow the call table without bound (0 = never).
    pub max_call_ms: u64,
    /// Expires granted when a REGISTER carries none.
    pub default_expires: u32,
    /// RFC 3261 T1/T2 for retransmitting our own requests and 2xx responses.
    pub t1_ms: u64,
    pub t2_ms: u64,
    /// Append one JSON line per event to this file.
    pub events: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_mode: Mode::Dial,
            routes: HashMap::new(),
            answer_delay_ms: 0,
            hangup_after_ms: 0,
            challenge: false,
            challenge_calls: false,
            realm: DEFAULT_REALM.to_owned(),
            default_password: None,
            passwords: HashMap::new(),
            default_expires: DEFAULT_EXPIRES,
            max_call_ms: DEFAULT_MAX_CALL_MS,
            t1_ms: DEFAULT_T1_MS,
            t2_ms: DEFAULT_T2_MS,
            events: None,
        }
    }
}

impl Config {
    /// Checks values the command line cannot express as types.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.t1_ms == 0 || self.t1_ms > 60_000 {
            return Err(ConfigError::Invalid {
                key: "t1-ms",
                reason: "must be 1..=60000",
            });
        }
        if self.t2_ms < self.t1_ms {
            return Err(ConfigError::Invalid {
                key: "t2-ms",
                reason: "must be >= t1-ms",
            });
        }
        if self.realm.is_empty() || self.realm.contains('"') {
            return Err(ConfigError::Invalid {
                key: "realm",
                reason: "must be non-empty without quotes",
            });
        }
        if self.answer_delay_ms > 3_600_000 || self.hangup_after_ms > 86_400_000 {
            return Err(ConfigError::Invalid {
                key: "answer-delay-ms",
                reason: "too large",
            });
        }
        Ok(())
    }

    /// Mode for extension `exten`.
    pub fn mode_for(&self, exten: &str) -> Mode {
        self.routes.get(exten).copied().unwrap_or(self.default_mode)
    }

    /// Password of `user`, if known.
    pub fn password_for(&self, user: &str) -> Option<&str> {
        self.passwords
            .get(user)
            .map(String::as_str)
            .or(self.default_password.as_deref())
    }

    /// Parses `EXT=MODE`.
    pub fn parse_route(s: &str) -> Result<(String, Mode), ConfigError> {
        let (ext, mode) = s.split_once('=').ok_or(ConfigError::Invalid {
            key: "route",
            reason: "expected EXTENSION=MODE",
        })?;
        Ok((ext.to_owned(), mode.parse()?))
    }
}

/// Reads a users file: a sipp injection CSV (`SEQUENTIAL` first line, then `user;domain;password`)
/// or plain `user;password` / `user,password` lines. `#` comments and blank lines are skipped.
pub fn load_users(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::UsersFile {
        path: path.to_owned(),
        source,
    })?;
    parse_users(&text).map_err(|line| ConfigError::UsersLine {
        path: path.to_owned(),
        line,
    })
}

/// Parses users text; the error is the 1-based line number.
pub fn parse_users(text: &str) -> Result<HashMap<String, String>, usize> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty()
            || line.starts_with('#')
            || matches!(line, "SEQUENTIAL" | "RANDOM" | "USER")
        {
            continue;
        }
        let fields: Vec<&str> = line.split([';', ',']).map(str::trim).collect();
        match fields.as_slice() {
            [user, _, password, ..] | [user, password] if !user.is_empty() => {
                out.insert((*user).to_owned(), (*password).to_owned());
            }
            _ => return Err(i + 1),
        }
    }
    Ok(out)
}

/// The address the binary binds by default.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2], 5080))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_csv_forms() {
        let u = parse_users("SEQUENTIAL\n# c\nalice;example.com;pw1\nbob,pw2\n\n").unwrap();
        assert_eq!(u.get("alice").map(String::as_str), Some("pw1"));
        assert_eq!(u.get("bob").map(String::as_str), Some("pw2"));
        assert_eq!(parse_users("ok;pw\nlonely\n"), Err(2));
    }

    #[test]
    fn routes_and_validation() {
        assert_eq!(
            Config::parse_route("600=answer").unwrap(),
            ("600".to_owned(), Mode::Answer)
        );
        assert!(Config::parse_route("600").is_err());
        assert!(Config::parse_route("600=dance").is_err());
        let mut c = Config::default();
        c.validate().unwrap();
        c.routes.insert("600".into(), Mode::Busy);
        assert_eq!(c.mode_for("600"), Mode::Busy);
        assert_eq!(c.mode_for("601"), Mode::Dial);
        c.t2_ms = 1;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid { key: "t2-ms", .. })
        ));
        assert_eq!(
            DEFAULT_LISTEN.parse::<SocketAddr>().unwrap(),
            default_listen()
        );
    }
}
