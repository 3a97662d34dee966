//! The [`Authenticator`]: verifies digest credentials of requests (server side).
//!
//! The checks run in a fixed order (see the module doc of [`super`]): cheap syntactic checks
//! first, then the nonce MAC, the URI, the password (constant-time), and only then expiry and
//! replay, so `stale=true` is only given to clients that proved the password.

use std::net::IpAddr;

use subtle::ConstantTimeEq;

use super::config::AuthConfig;
use super::hash::{self, QopAuth};
use super::nonce::{NonceCheck, NonceCodec};
use super::replay::{parse_nc, ReplayCheck, ReplayGuard};
use super::uri::{digest_uri_matches, OwnNames, UriCheck};
use super::{Algorithm, AuthError, Credential, DigestInput, Verdict};

/// Verifies digest responses and writes challenges for one realm. Shared by all workers
/// (`Send + Sync`; the replay guard is internally lock-striped).
pub struct Authenticator {
    pub(super) codec: NonceCodec,
    pub(super) replay: ReplayGuard,
    pub(super) realm: Box<str>,
    /// `opaque` value, 16 hex characters derived from the secret (stable across nodes).
    pub(super) opaque: hash::Hex,
    /// Enabled algorithms, strongest first.
    pub(super) algorithms: Vec<Algorithm>,
    allow_no_qop: bool,
    check_from_user: bool,
    uri_check: UriCheck,
    /// The names a digest URI may give for this proxy (`uri_check = "host"`).
    own: OwnNames,
}

fn valid_realm(realm: &str) -> bool {
    !realm.is_empty()
        && realm.len() <= 256
        && realm
            .bytes()
            .all(|b| b >= 0x20 && b != 0x7f && b != b'"' && b != b'\\')
}

impl Authenticator {
    /// Builds the authenticator for `realm`. The nonce secret comes from the config (hex) or,
    /// when empty, from the OS random source.
    pub fn new(cfg: &AuthConfig, realm: &str) -> Result<Self, AuthError> {
        cfg.validate()?;
        if !valid_realm(realm) {
            return Err(AuthError::BadRealm);
        }
        let mut secret = [0u8; 64];
        let secret_len = if cfg.nonce_secret.is_empty() {
            getrandom::getrandom(&mut secret[..32]).map_err(|_| AuthError::Random)?;
            32
        } else {
            hash::decode_hex(&cfg.nonce_secret, &mut secret)
                .ok_or(super::ConfigError::BadNonceSecret)?
        };
        let mut salt = [0u8; 4];
        getrandom::getrandom(&mut salt).map_err(|_| AuthError::Random)?;
        let ttl_ms = cfg.nonce_ttl_secs.saturating_mul(1000);
        let codec = NonceCodec::new(
            &secret[..secret_len],
            realm,
            cfg.bind_nonce_to_ip,
            ttl_ms,
            u32::from_ne_bytes(salt),
        );
        secret.fill(0);
        let opaque = hash::Hex::from_bytes(&codec.derive_opaque());
        Ok(Authenticator {
            codec,
            replay: ReplayGuard::new(cfg.replay_capacity, ttl_ms),
            realm: realm.into(),
            opaque,
            algorithms: cfg.algorithms_strongest_first(),
            allow_no_qop: cfg.allow_no_qop,
            check_from_user: cfg.check_from_user,
            uri_check: cfg.uri_check,
            own: OwnNames::default(),
        })
    }

    /// The names under which phones reach this proxy (local domains, listen addresses): with
    /// `uri_check = "host"` a digest URI naming one of them is accepted for any request.
    pub fn with_own_names(mut self, own: OwnNames) -> Self {
        self.own = own;
        self
    }

    /// The realm challenges are issued for.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Whether REGISTER credentials must name the From user ([`username_matches_from`]).
    pub fn check_from_user(&self) -> bool {
        self.check_from_user
    }

    /// The enabled algorithms, strongest first.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// Verifies `input` (from the request's Authorization or Proxy-Authorization header) for a
    /// request with `method` and `request_uri`, against the stored credential of
    /// `input.username`. `src` is the request's source address (used when nonces are bound to
    /// it).
    pub fn verify(
        &self,
        input: &DigestInput,
        method: &str,
        request_uri: &str,
        cred: &Credential,
        now_ms: u64,
        src: IpAddr,
    ) -> Verdict {
        if input.realm != &*self.realm {
            return Verdict::RealmMismatch;
        }
        let alg = match input.algorithm {
            None => Algorithm::Md5,
            Some(tok) => match Algorithm::parse(tok) {
                Some(a) => a,
                None => return Verdict::Unsupported,
            },
        };
        if !self.algorithms.contains(&alg) {
            return Verdict::Unsupported;
        }
        let qop = match input.qop {
            None if self.allow_no_qop => None,
            None => return Verdict::QopRequired,
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let (Some(nc_text), Some(cnonce)) = (input.nc, input.cnonce) else {
                    return Verdict::Malformed;
                };
                let Some(nc) = parse_nc(nc_text) else {
                    return Verdict::Malformed;
                };
                if cnonce.is_empty() {
                    return Verdict::Malformed;
                }
                Some((
                    nc,
                    QopAuth {
                        nc: nc_text,
                        cnonce,
                    },
                ))
            }
            Some(_) => return Verdict::Unsupported,
        };
        if let Some(op) = input.opaque {
            if !bool::from(op.as_bytes().ct_eq(self.opaque.as_bytes())) {
                return Verdict::BadNonce;
            }
        }
        let (issued_ms, key, expired) = match self.codec.check(input.nonce, now_ms, src) {
            NonceCheck::Forged => return Verdict::BadNonce,
            NonceCheck::Valid { issued_ms, key } => (issued_ms, key, false),
            NonceCheck::Expired { issued_ms, key } => (issued_ms, key, true),
        };
        if !digest_uri_matches(self.uri_check, &self.own, input.uri, request_uri) {
            return Verdict::UriMismatch;
        }
        let Some(ha1) = cred.ha1_hex(alg) else {
            return Verdict::NoCredentialForAlgorithm;
        };
        let given = input.response.as_bytes();
        if given.len() != alg.hex_len() {
            return Verdict::Malformed;
        }
        let mut lower = [0u8; 64];
        for (d, s) in lower.iter_mut().zip(given) {
            *d = s.to_ascii_lowercase();
        }
        let ha2 = hash::ha2(alg, method, input.uri);
        let want = hash::response(alg, &ha1, input.nonce, qop.map(|q| q.1), &ha2);
        if !bool::from(want.as_bytes().ct_eq(&lower[..given.len()])) {
            return Verdict::WrongPassword;
        }
        if expired {
            return Verdict::Stale;
        }
        let nc = qop.map_or(0, |q| q.0);
        match self.replay.check(&key, issued_ms, nc, now_ms) {
            ReplayCheck::Fresh => Verdict::Ok,
            ReplayCheck::Replay => Verdict::Replay,
            ReplayCheck::Forgotten => Verdict::Stale,
        }
    }
}

/// For REGISTER with `check_from_user`: the digest username must be the From URI's user part,
/// compared byte for byte (the core passes the user part of the From URI, `None` when the
/// From URI has no user part, which never matches).
pub fn username_matches_from(digest_username: &str, from_user: Option<&str>) -> bool {
    from_user.is_some_and(|u| bool::from(u.as_bytes().ct_eq(digest_username.as_bytes())))
}
