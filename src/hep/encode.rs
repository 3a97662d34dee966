//! HEPv3 (the Homer Encapsulation Protocol, version 3) encoding of one captured SIP message:
//! the `HEP3` magic, the total length, then chunks of `vendor (u16) | type (u16) | length
//! (u16, header included) | value`, all big-endian, vendor 0 (generic):
//!
//! | type | value |
//! |---|---|
//! | 0x0001 | IP family (u8: 2 = IPv4, 10 = IPv6) |
//! | 0x0002 | IP protocol (u8: 17 = UDP) |
//! | 0x0003 / 0x0004 | IPv4 source / destination (4 bytes) |
//! | 0x0005 / 0x0006 | IPv6 source / destination (16 bytes) |
//! | 0x0007 / 0x0008 | source / destination port (u16) |
//! | 0x0009 / 0x000a | timestamp seconds / microseconds (u32) |
//! | 0x000b | protocol type (u8: 1 = SIP) |
//! | 0x000c | capture agent id (u32) |
//! | 0x000e | authentication key (the collector's password, when set) |
//! | 0x000f | payload (the SIP message) |
//!
//! A message whose addresses are of different families (an IPv4 socket talking to an
//! IPv4-mapped IPv6 peer) is encoded as IPv6 with both addresses mapped.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Bytes of the `HEP3` header (magic and total length).
const HEADER: usize = 6;
/// Bytes of a chunk header.
const CHUNK: usize = 6;

/// The chunk types written.
pub mod chunk {
    pub const IP_FAMILY: u16 = 0x0001;
    pub const IP_PROTO: u16 = 0x0002;
    pub const IPV4_SRC: u16 = 0x0003;
    pub const IPV4_DST: u16 = 0x0004;
    pub const IPV6_SRC: u16 = 0x0005;
    pub const IPV6_DST: u16 = 0x0006;
    pub const SRC_PORT: u16 = 0x0007;
    pub const DST_PORT: u16 = 0x0008;
    pub const TIME_SEC: u16 = 0x0009;
    pub const TIME_USEC: u16 = 0x000a;
    pub const PROTO_TYPE: u16 = 0x000b;
    pub const CAPTURE_ID: u16 = 0x000c;
    pub const AUTH_KEY: u16 = 0x000e;
    pub const PAYLOAD: u16 = 0x000f;
}

/// `AF_INET` / `AF_INET6` as HEP writes them.
const FAMILY_V4: u8 = 2;
const FAMILY_V6: u8 = 10;
/// IPPROTO_UDP.
pub const PROTO_UDP: u8 = 17;
/// IPPROTO_TCP (SIP over TCP or TLS).
pub const PROTO_TCP: u8 = 6;
/// HEP protocol type of SIP.
const PROTO_SIP: u8 = 1;

/// One captured message, as the encoder needs it.
#[derive(Debug, Clone, Copy)]
pub struct Captured<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Capture time since the UNIX epoch.
    pub secs: u32,
    pub micros: u32,
    /// IP protocol: [`PROTO_UDP`] or [`PROTO_TCP`].
    pub proto: u8,
    pub payload: &'a [u8],
}

/// The largest payload that fits one HEP packet with `password` (the total length is a u16).
pub fn max_payload(password: Option<&str>) -> usize {
    usize::from(u16::MAX) - overhead(true, password)
}

/// Header and chunk bytes besides the payload.
fn overhead(v6: bool, password: Option<&str>) -> usize {
    let addr = if v6 { 16 } else { 4 };
    HEADER
        + (CHUNK + 1) * 3 // family, protocol, protocol type
        + (CHUNK + addr) * 2
        + (CHUNK + 2) * 2
        + (CHUNK + 4) * 3 // seconds, microseconds, capture id
        + password.map_or(0, |p| CHUNK + p.len())
        + CHUNK
}

fn put(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    // Callers keep every value far below u16::MAX - CHUNK (see `max_payload`).
    let len = u16::try_from(CHUNK + value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// Encode `m` into `out` (cleared first). `None` when the payload is too large for one
/// packet (see [`max_payload`]); `out` is reused, so encoding allocates only while it grows.
pub fn encode(
    out: &mut Vec<u8>,
    m: &Captured<'_>,
    capture_id: u32,
    password: Option<&str>,
) -> Option<()> {
    let (src, dst) = (m.src.ip().to_canonical(), m.dst.ip().to_canonical());
    let both_v4 = src.is_ipv4() && dst.is_ipv4();
    let total = overhead(!both_v4, password) + m.payload.len();
    let total = u16::try_from(total).ok()?;
    out.clear();
    out.extend_from_slice(b"HEP3");
    out.extend_from_slice(&total.to_be_bytes());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            put(out, chunk::IP_FAMILY, &[FAMILY_V4]);
            put(out, chunk::IP_PROTO, &[m.proto]);
            put(out, chunk::IPV4_SRC, &s.octets());
            put(out, chunk::IPV4_DST, &d.octets());
        }
        (s, d) => {
            put(out, chunk::IP_FAMILY, &[FAMILY_V6]);
            put(out, chunk::IP_PROTO, &[m.proto]);
            put(out, chunk::IPV6_SRC, &v6(s).octets());
            put(out, chunk::IPV6_DST, &v6(d).octets());
        }
    }
    put(out, chunk::SRC_PORT, &m.src.port().to_be_bytes());
    put(out, chunk::DST_PORT, &m.dst.port().to_be_bytes());
    put(out, chunk::TIME_SEC, &m.secs.to_be_bytes());
    put(out, chunk::TIME_USEC, &m.micros.to_be_bytes());
    put(out, chunk::PROTO_TYPE, &[PROTO_SIP]);
    put(out, chunk::CAPTURE_ID, &capture_id.to_be_bytes());
    if let Some(p) = password {
        put(out, chunk::AUTH_KEY, p.as_bytes());
    }
    put(out, chunk::PAYLOAD, m.payload);
    debug_assert_eq!(out.len(), usize::from(total));
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (type, value) of every chunk, checking the framing on the way.
    fn chunks(p: &[u8]) -> Vec<(u16, Vec<u8>)> {
        assert_eq!(&p[..4], b"HEP3");
        assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), p.len());
        let mut out = Vec::new();
        let mut at = HEADER;
        while at < p.len() {
            assert_eq!(&p[at..at + 2], &[0, 0], "vendor 0");
            let kind = u16::from_be_bytes([p[at + 2], p[at + 3]]);
            let len = usize::from(u16::from_be_bytes([p[at + 4], p[at + 5]]));
            out.push((kind, p[at + CHUNK..at + len].to_vec()));
            at += len;
        }
        assert_eq!(at, p.len());
        out
    }

    fn value(c: &[(u16, Vec<u8>)], kind: u16) -> Vec<u8> {
        c.iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no chunk {kind:#06x}"))
    }

    #[test]
    fn ipv4_message_with_password() {
        let m = Captured {
            src: "192.0.2.1:5062".parse().unwrap(),
            dst: "127.0.0.1:5060".parse().unwrap(),
            secs: 1_700_000_000,
            micros: 123_456,
            proto: PROTO_UDP,
            payload: b"OPTIONS sip:x SIP/2.0\r\n\r\n",
        };
        let mut out = Vec::new();
        encode(&mut out, &m, 2001, Some("homer")).unwrap();
        let c = chunks(&out);
        assert_eq!(value(&c, chunk::IP_FAMILY), [2]);
        assert_eq!(value(&c, chunk::IP_PROTO), [17]);
        assert_eq!(value(&c, chunk::IPV4_SRC), [192, 0, 2, 1]);
        assert_eq!(value(&c, chunk::IPV4_DST), [127, 0, 0, 1]);
        assert_eq!(value(&c, chunk::SRC_PORT), 5062u16.to_be_bytes());
        assert_eq!(value(&c, chunk::DST_PORT), 5060u16.to_be_bytes());
        assert_eq!(value(&c, chunk::TIME_SEC), 1_700_000_000u32.to_be_bytes());
        assert_eq!(value(&c, chunk::TIME_USEC), 123_456u32.to_be_bytes());
        assert_eq!(value(&c, chunk::PROTO_TYPE), [1]);
        assert_eq!(value(&c, chunk::CAPTURE_ID), 2001u32.to_be_bytes());
        assert_eq!(value(&c, chunk::AUTH_KEY), b"homer");
        assert_eq!(value(&c, chunk::PAYLOAD), m.payload);
    }

    #[test]
    fn mixed_families_are_ipv6_and_oversize_is_refused() {
        let m = Captured {
            src: "[2001:db8::1]:5060".parse().unwrap(),
            dst: "10.0.0.1:5080".parse().unwrap(),
            secs: 1,
            micros: 2,
            proto: PROTO_TCP,
            payload: b"x",
        };
        let mut out = Vec::new();
        encode(&mut out, &m, 1, None).unwrap();
        let c = chunks(&out);
        assert_eq!(value(&c, chunk::IP_FAMILY), [10]);
        let dst: Ipv6Addr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(value(&c, chunk::IPV6_DST), dst.octets());
        assert!(!c.iter().any(|(k, _)| *k == chunk::AUTH_KEY));
        let big = vec![b'a'; max_payload(None) + 1];
        let m = Captured { payload: &big, ..m };
        assert!(encode(&mut out, &m, 1, None).is_none());
        let fits = vec![b'a'; max_payload(None)];
        let m = Captured {
            payload: &fits,
            ..m
        };
        assert!(encode(&mut out, &m, 1, None).is_some());
    }
}
