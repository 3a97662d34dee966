//! Stateless nonces: the server remembers nothing per challenge.
//!
//! A nonce is 28 bytes, base64url without padding (38 characters):
//! `issued_ms (u64 BE) ‖ salt (u32 BE) ‖ HMAC-SHA256(secret, issued_ms ‖ salt ‖ realm ‖ 0 ‖ ip)[..16]`.
//! `ip` (16 bytes, IPv4 mapped into IPv6) is only mixed in when nonces are bound to the source
//! address. The salt is a per-process counter starting at a random value, so two challenges in
//! the same millisecond still get distinct nonces (the replay guard keys on the nonce).
//!
//! Checking recomputes the MAC and compares it in constant time: a nonce that fails is
//! [`NonceCheck::Forged`]; one that is authentic but older than the TTL is
//! [`NonceCheck::Expired`] (the caller answers `stale=true` once the password checked out).
//! Several nodes configured with the same secret accept each other's nonces.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Raw nonce length in bytes.
pub const NONCE_RAW_LEN: usize = 28;
/// Encoded nonce length in characters.
pub const NONCE_LEN: usize = 38;
/// How far in the future a nonce timestamp may be (clock skew between nodes).
const MAX_FUTURE_MS: u64 = 30_000;

/// The replay-guard key of a nonce: its MAC bytes (unique per issued nonce).
pub type NonceKey = [u8; 16];

/// Result of checking a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Valid { issued_ms: u64, key: NonceKey },
    Expired { issued_ms: u64, key: NonceKey },
    Forged,
}

/// Issues and checks nonces for one realm.
pub struct NonceCodec {
    mac: HmacSha256,
    realm: Box<str>,
    bind_ip: bool,
    ttl_ms: u64,
    salt: AtomicU32,
}

/// An encoded nonce held inline.
#[derive(Clone, Copy)]
pub struct Nonce {
    buf: [u8; NONCE_LEN],
}

impl Nonce {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf).unwrap_or("")
    }
}

impl NonceCodec {
    /// `secret` keys the HMAC; `initial_salt` should be random (any value is correct).
    pub fn new(secret: &[u8], realm: &str, bind_ip: bool, ttl_ms: u64, initial_salt: u32) -> Self {
        // HMAC accepts keys of any length; new_from_slice cannot fail for Hmac<Sha256>.
        let mac = match HmacSha256::new_from_slice(secret) {
            Ok(m) => m,
            Err(_) => HmacSha256::new(&Default::default()),
        };
        NonceCodec {
            mac,
            realm: realm.into(),
            bind_ip,
            ttl_ms,
            salt: AtomicU32::new(initial_salt),
        }
    }

    fn tag(&self, head: &[u8; 12], src: IpAddr) -> [u8; 16] {
        let mut m = self.mac.clone();
        m.update(head);
        m.update(self.realm.as_bytes());
        m.update(&[0]);
        if self.bind_ip {
            let v6 = match src {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            m.update(&v6.octets());
        }
        let full = m.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// A keyed value derived from the secret, usable as the `opaque` parameter.
    pub fn derive_opaque(&self) -> [u8; 8] {
        let mut m = self.mac.clone();
        m.update(b"opaque\0");
        m.update(self.realm.as_bytes());
        let full = m.finalize().into_bytes();
        let mut out = [0u8; 8];
        out.copy_from_slice(&full[..8]);
        out
    }

    /// Issues a fresh nonce.
    pub fn issue(&self, now_ms: u64, src: IpAddr) -> Nonce {
        let salt = self.salt.fetch_add(1, Ordering::Relaxed);
        let mut raw = [0u8; NONCE_RAW_LEN];
        raw[..8].copy_from_slice(&now_ms.to_be_bytes());
        raw[8..12].copy_from_slice(&salt.to_be_bytes());
        let mut head = [0u8; 12];
        head.copy_from_slice(&raw[..12]);
        raw[12..].copy_from_slice(&self.tag(&head, src));
        let mut buf = [0u8; NONCE_LEN];
        // 28 bytes always encode to exactly 38 characters.
        let _ = URL_SAFE_NO_PAD.encode_slice(raw, &mut buf);
        Nonce { buf }
    }

    /// Checks a nonce received in credentials.
    pub fn check(&self, nonce: &str, now_ms: u64, src: IpAddr) -> NonceCheck {
        if nonce.len() != NONCE_LEN {
            return NonceCheck::Forged;
        }
        let mut raw = [0u8; 30];
        match URL_SAFE_NO_PAD.decode_slice(nonce.as_bytes(), &mut raw) {
            Ok(NONCE_RAW_LEN) => {}
            _ => return NonceCheck::Forged,
        }
        let mut head = [0u8; 12];
        head.copy_from_slice(&raw[..12]);
        let want = self.tag(&head, src);
        let mut key = [0u8; 16];
        key.copy_from_slice(&raw[12..NONCE_RAW_LEN]);
        if !bool::from(want.ct_eq(&key)) {
            return NonceCheck::Forged;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[..8]);
        let issued_ms = u64::from_be_bytes(ts);
        if issued_ms > now_ms.saturating_add(MAX_FUTURE_MS) {
            return NonceCheck::Forged;
        }
        if now_ms.saturating_sub(issued_ms) > self.ttl_ms {
            NonceCheck::Expired { issued_ms, key }
        } else {
            NonceCheck::Valid { issued_ms, key }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn issue_check_expire() {
        let c = NonceCodec::new(b"secret", "example.com", false, 1000, 7);
        let n = c.issue(5_000, A);
        assert_eq!(n.as_str().len(), NONCE_LEN);
        assert!(matches!(
            c.check(n.as_str(), 5_500, B),
            NonceCheck::Valid {
                issued_ms: 5_000,
                ..
            }
        ));
        assert!(matches!(
            c.check(n.as_str(), 6_001, A),
            NonceCheck::Expired { .. }
        ));
        // distinct nonces in the same millisecond
        assert_ne!(c.issue(5_000, A).as_str(), c.issue(5_000, A).as_str());
    }

    #[test]
    fn forged_and_foreign() {
        let c = NonceCodec::new(b"secret", "example.com", true, 1000, 7);
        let n = c.issue(5_000, A);
        assert_eq!(c.check(n.as_str(), 5_000, B), NonceCheck::Forged);
        let other_realm = NonceCodec::new(b"secret", "other", true, 1000, 7);
        assert_eq!(other_realm.check(n.as_str(), 5_000, A), NonceCheck::Forged);
        let other_secret = NonceCodec::new(b"secret2", "example.com", true, 1000, 7);
        assert_eq!(other_secret.check(n.as_str(), 5_000, A), NonceCheck::Forged);
        let shared = NonceCodec::new(b"secret", "example.com", true, 1000, 99);
        assert!(matches!(
            shared.check(n.as_str(), 5_000, A),
            NonceCheck::Valid { .. }
        ));
        let mut s = n.as_str().to_string();
        s.replace_range(0..1, if s.starts_with('A') { "B" } else { "A" });
        assert_eq!(c.check(&s, 5_000, A), NonceCheck::Forged);
        for bad in [
            "",
            "short",
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
            &"A".repeat(39),
        ] {
            assert_eq!(c.check(bad, 5_000, A), NonceCheck::Forged);
        }
        // far-future timestamps are not accepted even with a valid MAC
        let future = c.issue(1_000_000, A);
        assert_eq!(c.check(future.as_str(), 5_000, A), NonceCheck::Forged);
    }
}
