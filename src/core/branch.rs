//! Via branch values the proxy generates, and the cheap peeks the I/O shell uses to pick the
//! worker that owns a datagram.
//!
//! A branch the proxy writes is `z9hG4bKsf.<worker>.<slot>.<gen>.<in>.<loop>.<mac>` (hex
//! fields): the worker and transaction slot let a response find its client transaction
//! without a table lookup and tell a worker that received it which worker owns it; `gen`
//! guards against a reused slot; `in` is the local socket the request came in on (its
//! responses go back out there even when the transaction is gone); `loop` is the RFC 3261
//! §16.6 (8) hash used for loop detection (§16.3 (4)).
//!
//! `mac` makes the branch unguessable: SipHash-2-4 (keyed, 64-bit tag, 16 hex digits) of the
//! other five fields under a [`BranchKey`]. Without it a slot and a generation can be
//! guessed, and anyone could inject a response (a 200 OK with their own Contact and SDP)
//! into a live transaction. [`check_branch`] verifies the tag (constant time) before a
//! response touches any transaction; a branch with our prefix and a wrong or missing tag
//! is [`Checked::Forged`]. The key comes from `[auth] nonce_secret` when set (so a restarted
//! or taking-over proxy still recognises branches of its predecessor, e.g. for a 2xx
//! retransmission), else from the per-process random key of `dialog_token.rs`.

use std::hash::Hasher;

use sha2::{Digest, Sha256};
use siphasher::sip::SipHasher24;

use crate::util::fnv::hash_parts;
use crate::util::hex;

use super::flow::Local;

/// Every branch this proxy generates starts with this (RFC 3261 magic cookie + "sf.").
pub const BRANCH_PREFIX: &str = "z9hG4bKsf.";

/// Hex digits of the MAC field.
const MAC_LEN: usize = 16;

/// Longest branch [`write_branch`] produces.
pub const MAX_BRANCH_LEN: usize =
    BRANCH_PREFIX.len() + 4 + 1 + 8 + 1 + 8 + 1 + 4 + 1 + 16 + 1 + MAC_LEN;

/// The key of the branch MACs, derived once per configuration.
#[derive(Clone, Copy)]
pub struct BranchKey([u8; 16]);

impl std::fmt::Debug for BranchKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BranchKey(<redacted>)")
    }
}

impl BranchKey {
    /// From the configured shared secret (any non-empty text), or the per-process key.
    pub fn new(shared_secret: &str) -> BranchKey {
        let mut h = Sha256::new();
        h.update(b"sipfront branch mac\0");
        if shared_secret.is_empty() {
            h.update(super::dialog_token::process_random_key());
        } else {
            h.update(shared_secret.as_bytes());
        }
        let digest = h.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        BranchKey(key)
    }

    /// The tag of a branch's fields (`ingress` as written: `IN_UPSTREAM` for the upstream
    /// socket).
    fn mac(&self, b: &OurBranch, ingress: u16) -> u64 {
        let mut fields = [0u8; 20];
        fields[..2].copy_from_slice(&b.worker.to_le_bytes());
        fields[2..6].copy_from_slice(&b.slot.to_le_bytes());
        fields[6..10].copy_from_slice(&b.gen.to_le_bytes());
        fields[10..12].copy_from_slice(&ingress.to_le_bytes());
        fields[12..].copy_from_slice(&b.loop_hash.to_le_bytes());
        let mut h = SipHasher24::new_with_key(&self.0);
        h.write(&fields);
        h.finish()
    }
}

/// What a branch in a Via is to this proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// One of ours, its MAC verified.
    Ours(OurBranch),
    /// Our prefix, but the fields do not parse or the MAC is wrong: a forgery (or a branch
    /// of a proxy with another key).
    Forged,
    /// Anyone else's branch.
    Foreign,
}

/// The `in` field of a request that came in on the upstream socket.
const IN_UPSTREAM: u16 = u16::MAX;

/// The fields encoded in a branch this proxy generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OurBranch {
    pub worker: u16,
    pub slot: u32,
    pub gen: u32,
    /// The local socket the request came in on.
    pub ingress: Local,
    pub loop_hash: u64,
}

/// A fixed-capacity branch string, so building one never allocates.
#[derive(Clone, Copy)]
pub struct BranchBuf {
    buf: [u8; MAX_BRANCH_LEN],
    len: u8,
}

impl BranchBuf {
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits, dots and the prefix are ever written.
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }
}

/// Write `b` as a branch value, with its MAC under `key`.
pub fn write_branch(key: &BranchKey, b: &OurBranch) -> BranchBuf {
    let mut out = BranchBuf {
        buf: [0; MAX_BRANCH_LEN],
        len: 0,
    };
    let mut pos = 0;
    let mut put = |bytes: &[u8]| {
        let end = pos + bytes.len();
        if end <= out.buf.len() {
            out.buf[pos..end].copy_from_slice(bytes);
            pos = end;
        }
    };
    let ingress = match b.ingress {
        Local::Listen(i) => i.min(IN_UPSTREAM - 1),
        Local::Upstream => IN_UPSTREAM,
    };
    put(BRANCH_PREFIX.as_bytes());
    let mut buf = [0u8; 16];
    for (i, v) in [
        u64::from(b.worker),
        u64::from(b.slot),
        u64::from(b.gen),
        u64::from(ingress),
        b.loop_hash,
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            put(b".");
        }
        put(hex::u64_short(v, &mut buf));
    }
    put(b".");
    put(&hex::u64_fixed(key.mac(b, ingress)));
    out.len = pos as u8;
    out
}

/// The branch of a request the proxy itself sends from the upstream socket (a forwarded
/// REGISTER, a ping): no ingress, no loop hash.
pub(super) fn upstream_branch(key: &BranchKey, worker: u16, slot: u32, gen: u32) -> BranchBuf {
    write_branch(
        key,
        &OurBranch {
            worker,
            slot,
            gen,
            ingress: Local::Upstream,
            loop_hash: 0,
        },
    )
}

/// Decode and verify a branch: ours (MAC checked under `key`), forged, or someone else's.
pub fn check_branch(key: &BranchKey, branch: &str) -> Checked {
    let Some(rest) = branch.strip_prefix(BRANCH_PREFIX) else {
        return Checked::Foreign;
    };
    match parse_fields(rest) {
        Some((b, ingress, mac)) if mac_matches(key.mac(&b, ingress), mac) => Checked::Ours(b),
        _ => Checked::Forged,
    }
}

/// Constant-time comparison of a computed tag with the one received.
fn mac_matches(expected: u64, got: u64) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(expected.to_le_bytes().ct_eq(&got.to_le_bytes()))
}

/// The fields after the prefix, the `in` field as written, and the MAC as received: one
/// pass over the bytes (five hex fields of 1 to 16 digits, then the MAC of exactly 16).
fn parse_fields(rest: &str) -> Option<(OurBranch, u16, u64)> {
    let mut vals = [0u64; 6];
    let (mut field, mut digits) = (0usize, 0usize);
    for &c in rest.as_bytes() {
        if c == b'.' {
            if digits == 0 || field == 5 {
                return None;
            }
            field += 1;
            digits = 0;
            continue;
        }
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        digits += 1;
        if digits > 16 {
            return None;
        }
        vals[field] = vals[field] << 4 | u64::from(d);
    }
    if field != 5 || digits != MAC_LEN {
        return None;
    }
    let [worker, slot, gen, raw_in, loop_hash, mac] = vals;
    let raw_in = u16::try_from(raw_in).ok()?;
    let b = OurBranch {
        worker: u16::try_from(worker).ok()?,
        slot: u32::try_from(slot).ok()?,
        gen: u32::try_from(gen).ok()?,
        ingress: match raw_in {
            IN_UPSTREAM => Local::Upstream,
            i => Local::Listen(i),
        },
        loop_hash,
    };
    Some((b, raw_in, mac))
}

/// The worker field of a branch with our prefix, unverified: only for choosing the worker
/// that will verify it ([`owner`]).
fn peek_worker(branch: &str) -> Option<u16> {
    let rest = branch.strip_prefix(BRANCH_PREFIX)?;
    let field = rest.split('.').next()?;
    u16::try_from(hex::parse_u64(field)?).ok()
}

/// Which worker owns a datagram, without a full parse: responses carrying one of our branches
/// in the first Via go to the worker that sent the request; everything else goes to the worker
/// chosen by a hash of its Call-ID, so all messages of a dialog meet on one worker.
pub fn owner(data: &[u8], n_workers: usize) -> usize {
    if n_workers <= 1 {
        return 0;
    }
    let is_response = data.starts_with(b"SIP/2.0 ");
    if is_response {
        if let Some(b) = find_header_value(data, b"via", b"v").and_then(first_branch) {
            if let Some(worker) = peek_worker(b) {
                return usize::from(worker) % n_workers;
            }
        }
    }
    match crate::sip::peek_call_id(data) {
        Some(cid) => (hash_parts(&[cid.trim_ascii()]) % n_workers as u64) as usize,
        None => 0,
    }
}

/// The value of the first header named `long` or `short` (case-insensitive), up to its line end.
fn find_header_value<'a>(data: &'a [u8], long: &[u8], short: &[u8]) -> Option<&'a [u8]> {
    let mut rest = data;
    // Skip the start line.
    let nl = rest.iter().position(|&c| c == b'\n')?;
    rest = &rest[nl + 1..];
    loop {
        if rest.is_empty() || rest[0] == b'\r' || rest[0] == b'\n' {
            return None;
        }
        let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
        let line = &rest[..end];
        if let Some(colon) = line.iter().position(|&c| c == b':') {
            let name = line[..colon].trim_ascii();
            if name.eq_ignore_ascii_case(long) || name.eq_ignore_ascii_case(short) {
                return Some(line[colon + 1..].trim_ascii());
            }
        }
        if end >= rest.len() {
            return None;
        }
        rest = &rest[end + 1..];
    }
}

fn first_branch(via: &[u8]) -> Option<&str> {
    let via = std::str::from_utf8(via).ok()?;
    let first = via.split(',').next()?;
    for param in first.split(';').skip(1) {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        if name.trim().eq_ignore_ascii_case("branch") {
            return Some(value.trim());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> BranchKey {
        BranchKey::new("test secret")
    }

    #[test]
    fn branch_round_trip() {
        let k = key();
        let b = OurBranch {
            worker: 3,
            slot: 0xabcdef,
            gen: 7,
            ingress: Local::Listen(1),
            loop_hash: u64::MAX,
        };
        let s = write_branch(&k, &b);
        assert!(s
            .as_str()
            .starts_with("z9hG4bKsf.3.abcdef.7.1.ffffffffffffffff."));
        assert_eq!(check_branch(&k, s.as_str()), Checked::Ours(b));
        let up = OurBranch {
            ingress: Local::Upstream,
            ..b
        };
        let s_up = write_branch(&k, &up);
        assert_eq!(check_branch(&k, s_up.as_str()), Checked::Ours(up));
        let long = OurBranch {
            worker: u16::MAX,
            slot: u32::MAX,
            gen: u32::MAX,
            ..b
        };
        // Only the `in` field (1 of 4 digits) is short of the longest branch.
        assert_eq!(write_branch(&k, &long).as_str().len(), MAX_BRANCH_LEN - 3);
        assert_eq!(check_branch(&k, "z9hG4bK776asdhds"), Checked::Foreign);
        assert_eq!(check_branch(&k, "z9hG4bKsf1234"), Checked::Foreign);
        for forged in [
            "z9hG4bKsf.1.2.3.4",
            "z9hG4bKsf.1.2.3.4.5",
            "z9hG4bKsf.1.2.3.4.5.6",
            "z9hG4bKsf.fffff.2.3.4.5.0000000000000000",
            "z9hG4bKsf.",
            "z9hG4bKsf.1.2.3.4.5.0123456789abcdeg",
            "z9hG4bKsf.1..3.4.5.0123456789abcdef",
            "z9hG4bKsf.1.2.3.4.00000000000000005.0123456789abcdef",
            "z9hG4bKsf.1.2.3.10000.5.0123456789abcdef",
        ] {
            assert_eq!(check_branch(&k, forged), Checked::Forged, "{forged}");
        }
    }

    #[test]
    fn a_changed_field_or_another_key_is_forged() {
        let k = key();
        let b = OurBranch {
            worker: 0,
            slot: 5,
            gen: 9,
            ingress: Local::Listen(0),
            loop_hash: 0x1234,
        };
        let s = write_branch(&k, &b);
        let s = s.as_str();
        // Another generation (the guess an attacker would make) with the same tag.
        let guessed = s.replacen(".5.9.", ".5.a.", 1);
        assert_ne!(guessed, s);
        assert_eq!(check_branch(&k, &guessed), Checked::Forged);
        // A flipped tag digit.
        let mut flipped = s.as_bytes().to_vec();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(check_branch(&k, &flipped), Checked::Forged);
        // A trailing extra field, a shortened tag.
        assert_eq!(check_branch(&k, &format!("{s}.0")), Checked::Forged);
        assert_eq!(check_branch(&k, &s[..s.len() - 1]), Checked::Forged);
        // Another proxy's key.
        assert_eq!(check_branch(&BranchKey::new("other"), s), Checked::Forged);
        // The same secret gives the same key; without one the key is per process.
        assert_eq!(
            check_branch(&BranchKey::new("test secret"), s),
            Checked::Ours(b)
        );
        let p = write_branch(&BranchKey::new(""), &b);
        assert_eq!(
            check_branch(&BranchKey::new(""), p.as_str()),
            Checked::Ours(b)
        );
    }

    #[test]
    fn owner_by_branch_and_call_id() {
        let b = write_branch(
            &key(),
            &OurBranch {
                worker: 1,
                slot: 5,
                gen: 1,
                ingress: Local::Listen(0),
                loop_hash: 9,
            },
        );
        let resp = format!(
            "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 127.0.0.1:5060;branch={};rport\r\nCall-ID: x\r\n\r\n",
            b.as_str()
        );
        assert_eq!(owner(resp.as_bytes(), 2), 1);
        assert_eq!(owner(resp.as_bytes(), 1), 0);
        let req = |cid: &str| {
            format!("BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\ni: {cid}\r\n\r\n")
        };
        let a = owner(req("abc").as_bytes(), 4);
        assert_eq!(a, owner(req(" abc ").as_bytes(), 4));
        let spread: std::collections::HashSet<usize> = (0..64)
            .map(|i| owner(req(&format!("call-{i}")).as_bytes(), 4))
            .collect();
        assert_eq!(spread.len(), 4);
        assert_eq!(owner(b"garbage", 4), 0);
        assert_eq!(owner(b"", 4), 0);
    }
}
