//! Minimal SIP URI helpers the registrar needs without the full parser: host and port of
//! a Contact, private-address detection, the NAT decision, and Contact equality.

use std::net::{IpAddr, SocketAddr};

use super::config::NatMode;

/// Host and port of a `sip:`/`sips:` URI (optionally in `<...>`), parsed minimally.
/// Returns the host text (brackets stripped for IPv6) and the explicit port if any.
pub fn uri_host_port(uri: &str) -> Option<(&str, Option<u16>)> {
    let u = uri.trim();
    let u = u.strip_prefix('<').unwrap_or(u);
    let (scheme, rest) = u.split_once(':')?;
    if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
        return None;
    }
    // hostport ends at the first ';', '?' or '>' after the userinfo.
    let end = rest.find([';', '?', '>']).unwrap_or(rest.len());
    let before_params = rest.get(..end)?;
    let hostport = match before_params.rfind('@') {
        Some(at) => before_params.get(at + 1..)?,
        None => before_params,
    };
    if let Some(v6) = hostport.strip_prefix('[') {
        let close = v6.find(']')?;
        let host = v6.get(..close)?;
        let after = v6.get(close + 1..)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host, port));
    }
    match hostport.split_once(':') {
        Some((h, p)) => Some((h, Some(p.parse().ok()?))),
        None => Some((hostport, None)),
    }
    .filter(|(h, _)| !h.is_empty())
}

fn default_port(uri: &str) -> u16 {
    let u = uri.trim_start().trim_start_matches('<');
    if u.len() >= 5 && u.get(..5).is_some_and(|s| s.eq_ignore_ascii_case("sips:")) {
        5061
    } else {
        5060
    }
}

/// The Contact's address when its host is an IP literal.
pub fn contact_socket(uri: &str) -> Option<SocketAddr> {
    let (host, port) = uri_host_port(uri)?;
    let ip: IpAddr = host.parse().ok()?;
    Some(SocketAddr::new(
        ip,
        port.unwrap_or_else(|| default_port(uri)),
    ))
}

/// Private, shared, link-local, loopback or otherwise not reachable from the internet.
pub fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 CGNAT
                || o[0] == 0
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            a.is_loopback()
                || a.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
        }
    }
}

/// Whether requests for `contact_uri` must go to `source` instead of the Contact.
pub fn nat_dest(mode: NatMode, contact_uri: &str, source: SocketAddr) -> bool {
    let contact = contact_socket(contact_uri);
    match mode {
        NatMode::Source => true,
        NatMode::Contact => contact.is_none(),
        NatMode::Auto => match contact {
            None => true, // a host name: it differs from the source address
            Some(c) => {
                is_private(c.ip())
                    || c.ip().to_canonical() != source.ip().to_canonical()
                    || c.port() != source.port()
            }
        },
    }
}

/// Contact URI equality as far as bindings go: scheme, host and parameters compared
/// case-insensitively, the user part exactly (RFC 3261 §19.1.4, simplified: parameter
/// order matters).
pub fn same_contact(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let split = |s: &str| -> (usize, usize) {
        let colon = s.find(':').unwrap_or(0);
        let at = s.rfind('@').filter(|&at| at > colon).unwrap_or(colon);
        (colon, at)
    };
    let (ca, aa) = split(a);
    let (cb, ab) = split(b);
    if ca != cb || aa != ab {
        return false;
    }
    let (ab_, bb_) = (a.as_bytes(), b.as_bytes());
    ab_.get(..=ca)
        .zip(bb_.get(..=cb))
        .is_some_and(|(x, y)| x.eq_ignore_ascii_case(y))
        && ab_.get(ca + 1..aa) == bb_.get(cb + 1..ab)
        && ab_
            .get(aa..)
            .zip(bb_.get(ab..))
            .is_some_and(|(x, y)| x.eq_ignore_ascii_case(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn host_port_parsing() {
        type HostPort<'a> = Option<(&'a str, Option<u16>)>;
        let cases: &[(&str, HostPort<'_>)] = &[
            (
                "sip:alice@10.0.0.1:5062;transport=udp",
                Some(("10.0.0.1", Some(5062))),
            ),
            ("sip:alice@example.com", Some(("example.com", None))),
            (
                "<sips:bob@[2001:db8::1]:5071>",
                Some(("2001:db8::1", Some(5071))),
            ),
            ("sip:[::1]", Some(("::1", None))),
            ("sip:1.2.3.4?subject=x", Some(("1.2.3.4", None))),
            ("sip:a:pw@1.2.3.4:99", Some(("1.2.3.4", Some(99)))),
            ("tel:+123", None),
            ("sip:alice@1.2.3.4:99999", None),
            ("sip:alice@", None),
            ("garbage", None),
        ];
        for (uri, want) in cases {
            assert_eq!(uri_host_port(uri), *want, "{uri}");
        }
        assert_eq!(contact_socket("sips:x@1.2.3.4"), Some(sa("1.2.3.4:5061")));
        assert_eq!(contact_socket("sip:x@host.example"), None);
    }

    #[test]
    fn nat_detection() {
        let src = sa("203.0.113.5:40000");
        // private contact -> source
        assert!(nat_dest(NatMode::Auto, "sip:a@192.168.1.10:5060", src));
        // public contact equal to source -> contact
        assert!(!nat_dest(NatMode::Auto, "sip:a@203.0.113.5:40000", src));
        // public but different port -> source
        assert!(nat_dest(NatMode::Auto, "sip:a@203.0.113.5", src));
        // host name -> source
        assert!(nat_dest(NatMode::Auto, "sip:a@phone.example.com", src));
        assert!(nat_dest(NatMode::Source, "sip:a@203.0.113.5:40000", src));
        assert!(!nat_dest(NatMode::Contact, "sip:a@198.51.100.1", src));
        assert!(nat_dest(NatMode::Contact, "sip:a@phone.example.com", src));
        for ip in [
            "10.1.1.1",
            "172.20.0.1",
            "100.64.3.3",
            "169.254.0.1",
            "127.0.0.1",
            "fd00::1",
            "fe80::1",
            "::ffff:192.168.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2001:db8::1", "172.32.0.1", "100.128.0.1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn contact_equality() {
        assert!(same_contact(
            "sip:alice@Example.COM;Transport=UDP",
            "SIP:alice@example.com;transport=udp"
        ));
        assert!(!same_contact(
            "sip:Alice@example.com",
            "sip:alice@example.com"
        ));
        assert!(!same_contact("sip:alice@a.com", "sip:alice@b.com"));
        assert!(same_contact("sip:1.2.3.4:5060", "sip:1.2.3.4:5060"));
    }
}
