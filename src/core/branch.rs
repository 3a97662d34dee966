//! Via branch values the proxy generates, and the cheap peeks the I/O shell uses to pick the
//! worker that owns a datagram.
//!
//! A branch the proxy writes is `z9hG4bKsf.<worker>.<slot>.<gen>.<in>.<loop>` (hex fields):
//! the worker and transaction slot let a response find its client transaction without a
//! table lookup and tell a worker that received it which worker owns it; `gen` guards
//! against a reused slot; `in` is the local socket the request came in on (its responses go
//! back out there even when the transaction is gone); `loop` is the RFC 3261 §16.6 (8) hash
//! used for loop detection (§16.3 (4)).

use crate::util::fnv::hash_parts;
use crate::util::hex;

use super::flow::Local;

/// Every branch this proxy generates starts with this (RFC 3261 magic cookie + "sf.").
pub const BRANCH_PREFIX: &str = "z9hG4bKsf.";

/// Longest branch [`write_branch`] produces.
pub const MAX_BRANCH_LEN: usize = BRANCH_PREFIX.len() + 4 + 1 + 8 + 1 + 8 + 1 + 4 + 1 + 16;

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

/// Write `b` as a branch value.
pub fn write_branch(b: &OurBranch) -> BranchBuf {
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
    out.len = pos as u8;
    out
}

/// The branch of a request the proxy itself sends from the upstream socket (a forwarded
/// REGISTER, a ping): no ingress, no loop hash.
pub(super) fn upstream_branch(worker: u16, slot: u32, gen: u32) -> BranchBuf {
    write_branch(&OurBranch {
        worker,
        slot,
        gen,
        ingress: Local::Upstream,
        loop_hash: 0,
    })
}

/// Decode a branch this proxy generated; `None` for anyone else's branch.
pub fn parse_branch(branch: &str) -> Option<OurBranch> {
    let rest = branch.strip_prefix(BRANCH_PREFIX)?;
    let mut it = rest.split('.');
    let worker = u16::try_from(hex::parse_u64(it.next()?)?).ok()?;
    let slot = u32::try_from(hex::parse_u64(it.next()?)?).ok()?;
    let gen = u32::try_from(hex::parse_u64(it.next()?)?).ok()?;
    let ingress = match u16::try_from(hex::parse_u64(it.next()?)?).ok()? {
        IN_UPSTREAM => Local::Upstream,
        i => Local::Listen(i),
    };
    let loop_hash = hex::parse_u64(it.next()?)?;
    if it.next().is_some() {
        return None;
    }
    Some(OurBranch {
        worker,
        slot,
        gen,
        ingress,
        loop_hash,
    })
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
            if let Some(ours) = parse_branch(b) {
                return usize::from(ours.worker) % n_workers;
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

    #[test]
    fn branch_round_trip() {
        let b = OurBranch {
            worker: 3,
            slot: 0xabcdef,
            gen: 7,
            ingress: Local::Listen(1),
            loop_hash: u64::MAX,
        };
        let s = write_branch(&b);
        assert!(s.as_str().starts_with("z9hG4bKsf.3.abcdef.7.1."));
        assert_eq!(parse_branch(s.as_str()), Some(b));
        let up = OurBranch {
            ingress: Local::Upstream,
            ..b
        };
        assert_eq!(parse_branch(write_branch(&up).as_str()), Some(up));
        assert_eq!(parse_branch("z9hG4bK776asdhds"), None);
        assert_eq!(parse_branch("z9hG4bKsf.1.2.3.4"), None);
        assert_eq!(parse_branch("z9hG4bKsf.1.2.3.4.5.6"), None);
        assert_eq!(parse_branch("z9hG4bKsf.fffff.2.3.4.5"), None);
    }

    #[test]
    fn owner_by_branch_and_call_id() {
        let b = write_branch(&OurBranch {
            worker: 1,
            slot: 5,
            gen: 1,
            ingress: Local::Listen(0),
            loop_hash: 9,
        });
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
