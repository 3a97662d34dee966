//! [`Credential`]: what the proxy keeps in memory to verify one user — the HA1 per algorithm
//! for the proxy's realm, and the plain password only when configured to keep it.
//!
//! Built from a database row by the credential layer (`crate::db`); read by
//! [`super::Authenticator::verify`] and the client side ([`super::client`]).

use super::hash::{self, Hex};
use super::Algorithm;

/// The secret material of one user. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credential {
    md5: Option<[u8; 16]>,
    sha256: Option<[u8; 32]>,
    sha512_256: Option<[u8; 32]>,
    plain: Option<Box<str>>,
}

impl Credential {
    /// From a plain password: HA1s for all algorithms over `user:realm:password`; the password
    /// itself is kept only if `keep_plain`.
    pub fn from_plain(user: &str, realm: &str, password: &str, keep_plain: bool) -> Self {
        let (m, _) = hash::ha1_raw(Algorithm::Md5, user, realm, password);
        let (s, _) = hash::ha1_raw(Algorithm::Sha256, user, realm, password);
        let (t, _) = hash::ha1_raw(Algorithm::Sha512_256, user, realm, password);
        let mut md5 = [0u8; 16];
        md5.copy_from_slice(&m[..16]);
        Credential {
            md5: Some(md5),
            sha256: Some(s),
            sha512_256: Some(t),
            plain: keep_plain.then(|| password.into()),
        }
    }

    /// Adds a precomputed hex HA1 for `alg` (as stored in `md5secret`, `md5_cred` or
    /// `password_digest`). Returns `false` (and changes nothing) if the hex is malformed.
    pub fn set_ha1_hex(&mut self, alg: Algorithm, hex: &str) -> bool {
        let mut raw = [0u8; 32];
        let want = alg.hex_len() / 2;
        match hash::decode_hex(hex.trim(), &mut raw) {
            Some(n) if n == want => {}
            _ => return false,
        }
        match alg {
            Algorithm::Md5 => {
                let mut m = [0u8; 16];
                m.copy_from_slice(&raw[..16]);
                self.md5 = Some(m);
            }
            Algorithm::Sha256 => self.sha256 = Some(raw),
            Algorithm::Sha512_256 => self.sha512_256 = Some(raw),
        }
        true
    }

    /// The hex HA1 for `alg`, if this credential can verify it.
    pub fn ha1_hex(&self, alg: Algorithm) -> Option<Hex> {
        match alg {
            Algorithm::Md5 => self.md5.as_ref().map(|b| Hex::from_bytes(b)),
            Algorithm::Sha256 => self.sha256.as_ref().map(|b| Hex::from_bytes(b)),
            Algorithm::Sha512_256 => self.sha512_256.as_ref().map(|b| Hex::from_bytes(b)),
        }
    }

    /// The algorithms this credential can verify, strongest first.
    pub fn algorithms(&self) -> impl Iterator<Item = Algorithm> + '_ {
        Algorithm::STRONGEST_FIRST
            .into_iter()
            .filter(|a| self.ha1_hex(*a).is_some())
    }

    /// Whether any algorithm can be verified.
    pub fn is_usable(&self) -> bool {
        self.md5.is_some() || self.sha256.is_some() || self.sha512_256.is_some()
    }

    /// The plain password, when kept (`credentials.keep_plain`).
    pub fn plain_password(&self) -> Option<&str> {
        self.plain.as_deref()
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("algorithms", &self.algorithms().collect::<Vec<_>>())
            .field("plain", &self.plain.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hex() {
        let c = Credential::from_plain("alice", "r", "pw", false);
        assert_eq!(
            c.ha1_hex(Algorithm::Md5).unwrap(),
            hash::ha1(Algorithm::Md5, "alice", "r", "pw")
        );
        assert_eq!(
            c.ha1_hex(Algorithm::Sha512_256).unwrap(),
            hash::ha1(Algorithm::Sha512_256, "alice", "r", "pw")
        );
        assert!(c.plain_password().is_none());
        assert!(!format!("{c:?}").contains("pw\""));
        let mut h = Credential::default();
        assert!(!h.is_usable());
        assert!(!h.set_ha1_hex(Algorithm::Md5, "xyz"));
        assert!(!h.set_ha1_hex(Algorithm::Sha256, "00ff"));
        let hex = hash::ha1(Algorithm::Md5, "alice", "r", "pw");
        assert!(h.set_ha1_hex(Algorithm::Md5, &hex.as_str().to_uppercase()));
        assert_eq!(h.algorithms().collect::<Vec<_>>(), vec![Algorithm::Md5]);
        let kept = Credential::from_plain("alice", "r", "pw", true);
        assert_eq!(kept.plain_password(), Some("pw"));
        assert!(!format!("{kept:?}").contains("pw\""));
    }
}
