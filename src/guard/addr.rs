//! Source addresses as the guard sees them: a 128-bit key per client and the exempt set.
//!
//! Every IPv4 address (and every IPv4-mapped IPv6 address, which is the same host) becomes
//! its IPv4-mapped IPv6 form; a native IPv6 address is cut to `ipv6_prefix` bits, because one
//! subscriber usually holds a whole /64 and could otherwise rotate addresses to escape its
//! bucket, its failure counter and its ban. The exempt set (Asterisk nodes and `allow`) is a
//! short list of CIDRs compared before anything is hashed.

use std::net::{IpAddr, Ipv6Addr};

/// The 128-bit identity of one client (one IPv4 host, or one IPv6 prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct ClientId(pub u128);

/// Bits of an IPv4 address in its IPv4-mapped IPv6 form (`::ffff:a.b.c.d`).
const V4_MAPPED: u128 = 0xffff_0000_0000;

fn v4_bits(v4: std::net::Ipv4Addr) -> u128 {
    V4_MAPPED | u128::from(u32::from(v4))
}

/// Mask keeping the first `len` bits of a 128-bit address.
fn prefix_mask(len: u8) -> u128 {
    match len {
        0 => 0,
        l if l >= 128 => u128::MAX,
        l => u128::MAX << (128 - u32::from(l)),
    }
}

impl ClientId {
    /// The client `ip` belongs to, IPv6 cut to `ipv6_prefix` bits.
    pub fn of(ip: IpAddr, ipv6_prefix: u8) -> ClientId {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientId(v4_bits(v4)),
            IpAddr::V6(v6) => ClientId(u128::from(v6) & prefix_mask(ipv6_prefix)),
        }
    }

    /// The address this client is shown as, and its prefix length (32 for IPv4).
    pub fn display(self, ipv6_prefix: u8) -> (IpAddr, u8) {
        let v6 = Ipv6Addr::from(self.0);
        match v6.to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), 32),
            None => (IpAddr::V6(v6), ipv6_prefix),
        }
    }
}

/// One `allow` entry or Asterisk address: an address with a prefix length, both normalized
/// to the 128-bit mapped space (an IPv4 /8 is a /104 there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: u128,
    mask: u128,
}

impl Cidr {
    /// A single host.
    pub fn host(ip: IpAddr) -> Cidr {
        Cidr::new(ip, 128)
    }

    /// `ip/len` where `len` counts bits of the address family given (IPv4: 0..=32).
    fn new(ip: IpAddr, len: u8) -> Cidr {
        let (bits, len) = match ip.to_canonical() {
            IpAddr::V4(v4) => (v4_bits(v4), 96 + len.min(32)),
            IpAddr::V6(v6) => (u128::from(v6), len.min(128)),
        };
        let mask = prefix_mask(len);
        Cidr {
            net: bits & mask,
            mask,
        }
    }

    /// Parse `a.b.c.d`, `a.b.c.d/n`, `x::y` or `x::y/n`; `None` when it is neither.
    pub fn parse(text: &str) -> Option<Cidr> {
        let text = text.trim();
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = addr.parse().ok()?;
        let max = if ip.to_canonical().is_ipv4() { 32 } else { 128 };
        // A mapped IPv6 literal with an IPv6-length prefix: count it in mapped space.
        let len = match (len, ip) {
            (Some(l), IpAddr::V6(_)) if max == 32 => {
                if !(96..=128).contains(&l) {
                    return None;
                }
                l - 96
            }
            (Some(l), _) if l > max => return None,
            (Some(l), _) => l,
            (None, _) => max,
        };
        Some(Cidr::new(ip, len))
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = match ip.to_canonical() {
            IpAddr::V4(v4) => v4_bits(v4),
            IpAddr::V6(v6) => u128::from(v6),
        };
        bits & self.mask == self.net
    }
}

/// Addresses the guard never limits, bans or counts.
#[derive(Debug, Clone, Default)]
pub(super) struct Exempt {
    nets: Vec<Cidr>,
}

impl Exempt {
    pub fn new(nets: Vec<Cidr>) -> Exempt {
        Exempt { nets }
    }

    /// Linear over a short list (the Asterisk nodes and a few allow entries).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    pub fn len(&self) -> usize {
        self.nets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.200.1.1", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
            ("192.0.2.7/32", "192.0.2.7", true),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("[2001:db8::1]", "2001:db8::1", true),
            ("::ffff:10.0.0.0/104", "10.9.9.9", true),
            ("::/0", "10.0.0.1", true),
        ];
        for &(net, addr, want) in cases {
            let c = Cidr::parse(net).unwrap_or_else(|| panic!("{net} parses"));
            assert_eq!(c.contains(ip(addr)), want, "{net} ∋ {addr}");
        }
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "host.example",
            "2001:db8::/129",
            "1.2.3.4/x",
            "::ffff:1.2.3.4/64",
        ] {
            assert!(Cidr::parse(bad).is_none(), "{bad:?} rejected");
        }
    }

    #[test]
    fn client_ids_fold_mapped_addresses_and_ipv6_prefixes() {
        assert_eq!(
            ClientId::of(ip("192.0.2.1"), 64),
            ClientId::of(ip("::ffff:192.0.2.1"), 64)
        );
        assert_ne!(
            ClientId::of(ip("192.0.2.1"), 64),
            ClientId::of(ip("192.0.2.2"), 64)
        );
        assert_eq!(
            ClientId::of(ip("2001:db8:1:2::1"), 64),
            ClientId::of(ip("2001:db8:1:2:ffff::9"), 64)
        );
        assert_ne!(
            ClientId::of(ip("2001:db8:1:2::1"), 128),
            ClientId::of(ip("2001:db8:1:2::2"), 128)
        );
        let id = ClientId::of(ip("2001:db8:1:2:3:4:5:6"), 64);
        assert_eq!(id.display(64), (ip("2001:db8:1:2::"), 64));
        assert_eq!(
            ClientId::of(ip("198.51.100.4"), 64).display(64),
            (ip("198.51.100.4"), 32)
        );
    }
}
