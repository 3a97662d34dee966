//! Record-Route tokens: the proxy only relays in-dialog requests for dialogs it created.
//!
//! A request with a To-tag and the proxy's Route is routed without authentication (the
//! phone authenticated when the dialog was made). Without a check, anyone could put the
//! proxy's address in a Route and have it relay a "BYE" anywhere: an open relay. So the
//! Record-Route the proxy inserts carries `sft=` + a keyed hash (SipHash-2-4 with a 128-bit
//! key, a PRF built for exactly this: short inputs, 64-bit tags, cheap) of the Call-ID, and an in-dialog request from a phone is relayed only when its first Route
//! carries the token of its own Call-ID. Requests from Asterisk are trusted and not checked.
//!
//! The key comes from `[auth] nonce_secret` when set (so tokens survive restarts and are
//! shared by a cluster), else from a random key drawn once per process: then dialogs made
//! before a restart can no longer be continued through the proxy.

use std::sync::OnceLock;

use std::hash::Hasher;

use sha2::{Digest, Sha256};
use siphasher::sip::SipHasher24;

/// The URI parameter carrying the token.
pub const PARAM: &str = "sft";

/// Hex digits of a token.
pub const TOKEN_LEN: usize = 16;

/// The key, derived once.
#[derive(Clone, Copy)]
pub struct DialogKey([u8; 16]);

impl std::fmt::Debug for DialogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DialogKey(<redacted>)")
    }
}

pub(super) fn process_random_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        if getrandom::getrandom(&mut k).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            k[..16].copy_from_slice(&t.to_le_bytes());
        }
        k
    })
}

impl DialogKey {
    /// From the configured shared secret (any non-empty text), or the per-process key.
    pub fn new(shared_secret: &str) -> DialogKey {
        // The SipHash key is derived from the secret with SHA-256 (domain-separated).
        let mut h = Sha256::new();
        h.update(b"sipfront dialog token\0");
        if shared_secret.is_empty() {
            h.update(process_random_key());
        } else {
            h.update(shared_secret.as_bytes());
        }
        let digest = h.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        DialogKey(key)
    }

    /// The token of `call_id`, as lowercase hex.
    pub fn token(&self, call_id: &str) -> [u8; TOKEN_LEN] {
        let mut h = SipHasher24::new_with_key(&self.0);
        h.write(call_id.as_bytes());
        crate::util::hex::u64_fixed(h.finish())
    }

    /// Whether `token` (from a Route) is the one of `call_id` (constant time).
    pub fn verify(&self, call_id: &str, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        token.len() == TOKEN_LEN && bool::from(self.token(call_id).ct_eq(token.as_bytes()))
    }
}

/// A Record-Route URI `sip:host:port;lr[;r2=on];sft=<token>` on the stack.
pub struct RecordRoute {
    buf: [u8; 320],
    len: usize,
}

/// The parameter Kamailio's rr module puts on both entries of a double Record-Route
/// (RFC 5658), kept for interoperability with tools that look for it.
const DOUBLE: &str = ";r2=on";

impl RecordRoute {
    /// `base` is the URI without the token (`sip:host:port;lr`); `double` marks one entry
    /// of a double Record-Route (RFC 5658).
    pub fn new(base: &str, double: bool, key: &DialogKey, call_id: &str) -> RecordRoute {
        let mut buf = [0u8; 320];
        let token = key.token(call_id);
        let r2 = if double { DOUBLE } else { "" };
        let parts: [&[u8]; 5] = [base.as_bytes(), r2.as_bytes(), b";", PARAM.as_bytes(), b"="];
        let mut len = 0;
        for p in parts.iter().chain(std::iter::once(&&token[..])) {
            let end = (len + p.len()).min(buf.len());
            buf[len..end].copy_from_slice(&p[..end - len]);
            len = end;
        }
        RecordRoute { buf, len }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_to_the_call_id_and_the_key() {
        let k = DialogKey::new("shared");
        let t = k.token("abc@host");
        let t = std::str::from_utf8(&t).unwrap();
        assert!(k.verify("abc@host", t));
        assert!(!k.verify("abd@host", t));
        assert!(!k.verify("abc@host", &t[..15]));
        assert!(!DialogKey::new("other").verify("abc@host", t));
        assert_eq!(
            DialogKey::new("shared").token("abc@host"),
            k.token("abc@host")
        );
        // Without a shared secret the key is per process but stable within it.
        assert_eq!(DialogKey::new("").token("x"), DialogKey::new("").token("x"));
        let rr = RecordRoute::new("sip:127.0.0.1:5060;lr", false, &k, "abc@host");
        assert_eq!(rr.as_str(), format!("sip:127.0.0.1:5060;lr;sft={t}"));
        let rr = RecordRoute::new("sip:127.0.0.1:5060;lr", true, &k, "abc@host");
        assert_eq!(rr.as_str(), format!("sip:127.0.0.1:5060;lr;r2=on;sft={t}"));
    }
}
