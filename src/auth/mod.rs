//! SIP digest authentication (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).
//!
//! Server side, for phones: the core asks an [`Authenticator`] to write challenges
//! ([`Authenticator::write_challenge`]) into the response it is building, and to check the
//! credentials of a request ([`Authenticator::verify`]) against a [`Credential`] it got from the
//! credential cache (`crate::db`). The outcome is a [`Verdict`] the core maps to a SIP answer.
//!
//! Data flow of one verification: the core unescapes the Authorization header into a
//! [`DigestInput`] → realm/algorithm/qop checks → the stateless nonce is authenticated with
//! HMAC ([`nonce`]) → the digest URI is compared with the request URI (as strictly as
//! `[auth] uri_check` says, [`uri`]) → the expected response
//! is computed from the stored HA1 ([`hash`]) and compared in constant time → expiry (stale) and
//! the nonce-count replay guard ([`replay`]) are applied last, so `stale=true` is only ever
//! offered to a client that knew the password.
//!
//! Client side, for the proxy's REGISTERs forwarded to an Asterisk that challenges:
//! [`challenge_parse`] reads a WWW-Authenticate value and [`client`] writes the Authorization
//! value that answers it.
//!
//! Nothing here does I/O or reads a clock: time is passed in as `now_ms`.

pub mod challenge;
pub mod challenge_parse;
pub mod client;
pub mod config;
mod credential;
pub mod hash;
pub mod nonce;
pub mod replay;
pub mod uri;
pub mod verify;

pub use challenge_parse::{parse_challenge, pick_challenge, Challenge, ChallengeParseError};
pub use client::{compute_client_response, ClientError, ClientSecret};
pub use config::{AuthConfig, ConfigError};
pub use uri::{OwnNames, UriCheck};
pub use verify::{username_matches_from, Authenticator};

pub use credential::Credential;

/// A digest algorithm (RFC 7616 §3.3, RFC 8760). The `-sess` variants are not supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
pub enum Algorithm {
    #[serde(rename = "MD5", alias = "md5")]
    Md5,
    #[serde(
        rename = "SHA-256",
        alias = "sha-256",
        alias = "SHA256",
        alias = "sha256"
    )]
    Sha256,
    #[serde(rename = "SHA-512-256", alias = "sha-512-256")]
    Sha512_256,
}

impl Algorithm {
    /// All algorithms, strongest first (the order challenges are written in).
    pub const STRONGEST_FIRST: [Algorithm; 3] =
        [Algorithm::Sha512_256, Algorithm::Sha256, Algorithm::Md5];

    /// The token used in `algorithm=` parameters.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha512_256 => "SHA-512-256",
        }
    }

    /// Parses an `algorithm=` token, case-insensitively. `-sess` variants and unknown tokens
    /// give `None`.
    pub fn parse(token: &str) -> Option<Self> {
        Algorithm::STRONGEST_FIRST
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(token))
    }

    /// Length of the hex digest this algorithm produces.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha256 | Algorithm::Sha512_256 => 64,
        }
    }

    /// Relative strength, higher is stronger.
    pub fn strength(self) -> u8 {
        match self {
            Algorithm::Md5 => 0,
            Algorithm::Sha256 => 1,
            Algorithm::Sha512_256 => 2,
        }
    }
}

/// The digest parameters of an Authorization / Proxy-Authorization header, already unescaped
/// by the core (built from `sip::DigestCredentials`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DigestInput<'a> {
    pub username: &'a str,
    pub realm: &'a str,
    pub nonce: &'a str,
    pub uri: &'a str,
    pub response: &'a str,
    pub algorithm: Option<&'a str>,
    pub cnonce: Option<&'a str>,
    pub nc: Option<&'a str>,
    pub qop: Option<&'a str>,
    pub opaque: Option<&'a str>,
}

/// The outcome of [`Authenticator::verify`].
///
/// Suggested SIP mapping for the core: `Ok` → proceed; `Stale` → fresh challenge with
/// `stale=true`; `BadNonce`, `Replay`, `RealmMismatch`, `QopRequired` → fresh challenge (401/407);
/// `WrongPassword` → 403 (or a fresh challenge, as Kamailio does); `UriMismatch`,
/// `Malformed` → 400; `Unsupported` → fresh challenge listing the enabled algorithms;
/// `NoCredentialForAlgorithm` → fresh challenge restricted to MD5, or 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The password is right, the nonce is fresh and was not replayed.
    Ok,
    /// The password is right but the nonce has expired: challenge again with `stale=true`.
    Stale,
    /// The nonce (or opaque) was not issued by us (or by a node sharing our secret).
    BadNonce,
    /// The response does not match: wrong password (or wrong method/URI in the hash).
    WrongPassword,
    /// The digest `uri` does not match the request URI.
    UriMismatch,
    /// The nonce count is not greater than the last one seen for this nonce.
    Replay,
    /// The credentials are for another realm.
    RealmMismatch,
    /// An algorithm or qop we do not offer (`-sess`, `auth-int`, a disabled algorithm).
    Unsupported,
    /// No qop in the response and `allow_no_qop` is off.
    QopRequired,
    /// `nc`/`cnonce` missing or malformed for `qop=auth`, or a response of the wrong length.
    Malformed,
    /// The stored credential cannot verify this algorithm (e.g. only an MD5 HA1 is stored).
    NoCredentialForAlgorithm,
}

/// Errors building an [`Authenticator`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("auth config: {0}")]
    Config(#[from] ConfigError),
    #[error("realm contains a quote, backslash or control character, or is empty")]
    BadRealm,
    #[error("no random source for the nonce secret")]
    Random,
}
