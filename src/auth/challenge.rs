//! Writing challenges: `WWW-Authenticate` (401, REGISTER) or `Proxy-Authenticate` (407, any
//! other request) header lines, appended to a caller-owned buffer.
//!
//! One header line per enabled algorithm, strongest first (RFC 8760 §2.4: a UA picks the first
//! it supports), all carrying the same fresh nonce:
//!
//! ```text
//! WWW-Authenticate: Digest realm="example.com", nonce="…38 chars…", opaque="…16 hex…", algorithm=SHA-256, qop="auth"[, stale=true]\r\n
//! ```
//!
//! Nothing is allocated when `out` has spare capacity (about 170 bytes per line plus the
//! realm).

use std::net::IpAddr;

use super::{Algorithm, Authenticator};

impl Authenticator {
    /// Appends the challenge header lines for all enabled algorithms.
    /// `proxy`: write `Proxy-Authenticate` (for a 407) instead of `WWW-Authenticate` (401).
    /// `stale`: add `stale=true` (after [`super::Verdict::Stale`]).
    pub fn write_challenge(
        &self,
        out: &mut Vec<u8>,
        proxy: bool,
        stale: bool,
        now_ms: u64,
        src: IpAddr,
    ) {
        self.write_challenge_for(out, proxy, stale, now_ms, src, &[]);
    }

    /// Like [`Authenticator::write_challenge`], restricted to the enabled algorithms that are
    /// also in `only` (empty `only`: all enabled). Useful after
    /// [`super::Verdict::NoCredentialForAlgorithm`] to offer only what the user's stored
    /// credential can verify. If the intersection is empty, all enabled algorithms are offered.
    pub fn write_challenge_for(
        &self,
        out: &mut Vec<u8>,
        proxy: bool,
        stale: bool,
        now_ms: u64,
        src: IpAddr,
        only: &[Algorithm],
    ) {
        let nonce = self.codec.issue(now_ms, src);
        let any = only.is_empty() || self.algorithms.iter().any(|a| only.contains(a));
        let name: &[u8] = if proxy {
            b"Proxy-Authenticate: Digest realm=\""
        } else {
            b"WWW-Authenticate: Digest realm=\""
        };
        for alg in &self.algorithms {
            if any && !only.is_empty() && !only.contains(alg) {
                continue;
            }
            out.extend_from_slice(name);
            out.extend_from_slice(self.realm.as_bytes());
            out.extend_from_slice(b"\", nonce=\"");
            out.extend_from_slice(nonce.as_str().as_bytes());
            out.extend_from_slice(b"\", opaque=\"");
            out.extend_from_slice(self.opaque.as_bytes());
            out.extend_from_slice(b"\", algorithm=");
            out.extend_from_slice(alg.as_str().as_bytes());
            out.extend_from_slice(b", qop=\"auth\"");
            if stale {
                out.extend_from_slice(b", stale=true");
            }
            out.extend_from_slice(b"\r\n");
        }
    }
}
