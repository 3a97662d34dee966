//! Comparison of the digest `uri` parameter with the Request-URI (RFC 3261 §22.4 asks that
//! they match; RFC 2617 §3.2.2.5 lets a server check they "identify the same resource").
//!
//! How strict the comparison is comes from `[auth] uri_check` ([`UriCheck`]):
//!
//! - `strict`: byte-for-byte equality, or equality after folding the case of the scheme and
//!   of the host part (both are case-insensitive in SIP URIs, RFC 3261 §19.1.4) — user part,
//!   port, parameters and headers must still match byte for byte. Parameters are never
//!   reordered or dropped: a UA that rewrote them is rejected.
//! - `host` (the default): what `strict` accepts, and also a digest URI that names the same
//!   scheme and host as the Request-URI, or this proxy itself ([`OwnNames`]: a local domain or a listen
//!   address), with an absent port standing for the scheme's default (5060, 5061 for `sips`);
//!   user part and parameters are not compared. sipp, for one, sends `uri="sip:HOST:PORT"` of
//!   the address it sends to, whatever the Request-URI; Kamailio and Asterisk accept it.
//! - `off`: the digest URI is not compared at all (the response hash still covers it).
//!
//! Whatever the mode, the response must be computed over the digest URI the client sent, and
//! a captured response cannot be used again with another Request-URI: `qop=auth` nonce
//! counts are single-use ([`super::replay`]).

use std::net::{IpAddr, SocketAddr};

/// `[auth] uri_check`: how the digest `uri` must relate to the Request-URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UriCheck {
    /// Equal (scheme and host compared case-insensitively).
    Strict,
    /// The same host (or this proxy), default ports equivalent.
    #[default]
    Host,
    /// Not compared.
    Off,
}

impl UriCheck {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            UriCheck::Strict => "strict",
            UriCheck::Host => "host",
            UriCheck::Off => "off",
        }
    }
}

/// The names under which phones reach this proxy: `[domain] local` names and the realm
/// (any port), and the listen / advertised addresses (their port; an unspecified listen IP
/// stands for every address of the machine).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnNames {
    pub domains: Vec<String>,
    pub addrs: Vec<SocketAddr>,
}

impl OwnNames {
    /// Whether `host` (an IP literal, brackets allowed, or a domain) with `port` (absent: the
    /// scheme's `default_port`) names this proxy.
    fn names_us(&self, host: &str, port: Option<u16>, default_port: u16) -> bool {
        if let Some(ip) = ip_literal(host) {
            let port = port.unwrap_or(default_port);
            return self.addrs.iter().any(|a| {
                a.port() == port
                    && (a.ip().is_unspecified() || a.ip().to_canonical() == ip.to_canonical())
            });
        }
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(host))
    }
}

/// True if the digest URI is acceptable for the Request-URI under `mode` (see the module doc).
pub fn digest_uri_matches(
    mode: UriCheck,
    own: &OwnNames,
    digest_uri: &str,
    request_uri: &str,
) -> bool {
    match mode {
        UriCheck::Off => true,
        UriCheck::Strict => strict_matches(digest_uri, request_uri),
        UriCheck::Host => {
            strict_matches(digest_uri, request_uri) || host_matches(own, digest_uri, request_uri)
        }
    }
}

fn strict_matches(digest_uri: &str, request_uri: &str) -> bool {
    if digest_uri == request_uri {
        return true;
    }
    let (Some(a), Some(b)) = (split(digest_uri), split(request_uri)) else {
        return false;
    };
    a.scheme.eq_ignore_ascii_case(b.scheme)
        && a.user == b.user
        && a.host.eq_ignore_ascii_case(b.host)
        && a.rest == b.rest
}

fn host_matches(own: &OwnNames, digest_uri: &str, request_uri: &str) -> bool {
    let (Some(d), Some(r)) = (split(digest_uri), split(request_uri)) else {
        return false;
    };
    let (Some(d_default), Some(r_default)) = (default_port(d.scheme), default_port(r.scheme))
    else {
        return false;
    };
    let (Ok(d_port), Ok(r_port)) = (d.port(), r.port()) else {
        return false;
    };
    let same_host = d.scheme.eq_ignore_ascii_case(r.scheme)
        && same_host(d.host, r.host)
        && d_port.unwrap_or(d_default) == r_port.unwrap_or(r_default);
    same_host || own.names_us(d.host, d_port, d_default)
}

/// Host parts equal: IP literals by value (so `[::1]` equals `[0:0::1]`), names by ASCII case.
fn same_host(a: &str, b: &str) -> bool {
    match (ip_literal(a), ip_literal(b)) {
        (Some(x), Some(y)) => x.to_canonical() == y.to_canonical(),
        _ => a.eq_ignore_ascii_case(b),
    }
}

/// The address of an IPv4 or bracketed IPv6 host part.
fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        None => host,
    };
    bare.parse().ok()
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("sip") {
        Some(5060)
    } else if scheme.eq_ignore_ascii_case("sips") {
        Some(5061)
    } else {
        None
    }
}

struct Parts<'a> {
    scheme: &'a str,
    user: Option<&'a str>,
    host: &'a str,
    rest: &'a str,
}

impl Parts<'_> {
    /// The port after the host: `Ok(None)` when there is none, `Err` when malformed.
    fn port(&self) -> Result<Option<u16>, ()> {
        let Some(after) = self.rest.strip_prefix(':') else {
            return Ok(None);
        };
        let digits = after.split([';', '?']).next().unwrap_or("");
        digits.parse().map(Some).map_err(|_| ())
    }
}

fn split(uri: &str) -> Option<Parts<'_>> {
    let (scheme, after) = uri.split_once(':')?;
    // The host part ends at the port, a parameter or headers.
    let end_of_userinfo = after.find(['@']);
    let (user, hostpart) = match end_of_userinfo {
        Some(at) => (Some(after.get(..at)?), after.get(at + 1..)?),
        None => (None, after),
    };
    let host_end = if hostpart.starts_with('[') {
        hostpart.find(']').map(|i| i + 1)?
    } else {
        hostpart.find([':', ';', '?']).unwrap_or(hostpart.len())
    };
    Some(Parts {
        scheme,
        user,
        host: hostpart.get(..host_end)?,
        rest: hostpart.get(host_end..)?,
    })
}

#[cfg(test)]
mod tests {
    use super::{digest_uri_matches, OwnNames, UriCheck};

    fn own() -> OwnNames {
        OwnNames {
            domains: vec!["sipfront.test".into()],
            addrs: vec![
                "127.0.0.1:5070".parse().unwrap(),
                "[::1]:5060".parse().unwrap(),
            ],
        }
    }

    /// (digest uri, request uri, strict, host); `off` accepts every row.
    const CASES: &[(&str, &str, bool, bool)] = &[
        ("sip:example.com", "sip:example.com", true, true),
        ("SIP:Example.COM", "sip:example.com", true, true),
        (
            "sip:alice@Example.com;transport=udp",
            "sip:alice@example.com;transport=udp",
            true,
            true,
        ),
        // Another user part or parameters: the same host all the same.
        (
            "sip:Alice@example.com",
            "sip:alice@example.com",
            false,
            true,
        ),
        (
            "sip:example.com;transport=tcp",
            "sip:example.com",
            false,
            true,
        ),
        // Default port equivalence.
        ("sip:example.com:5060", "sip:example.com", false, true),
        ("sips:example.com:5061", "sips:bob@example.com", false, true),
        ("sip:example.com:5080", "sip:example.com", false, false),
        ("sips:example.com", "sip:example.com:5061", false, false),
        ("sip:[::1]:5060", "sip:[::1]:5060", true, true),
        ("sip:[0:0::1]", "sip:u@[::1]", false, true),
        // sipp's default: the address it sends to, while the Request-URI names the domain.
        ("sip:127.0.0.1:5070", "sip:sipfront.test", false, true),
        ("sip:127.0.0.1:5070", "sip:600@sipfront.test", false, true),
        ("sip:SIPFRONT.test", "sip:600@127.0.0.1:5070", false, true),
        // Not us, not the same host.
        ("sip:127.0.0.1:5071", "sip:sipfront.test", false, false),
        ("sip:127.0.0.1", "sip:sipfront.test", false, false),
        ("sip:other.com", "sip:example.com", false, false),
        ("sip:example.com:99999", "sip:example.com", false, false),
        ("tel:+4930123", "sip:example.com", false, false),
        ("garbage", "sip:example.com", false, false),
        ("", "sip:example.com", false, false),
    ];

    #[test]
    fn each_mode() {
        let own = own();
        for &(d, r, strict, host) in CASES {
            assert_eq!(
                digest_uri_matches(UriCheck::Strict, &own, d, r),
                strict,
                "strict: {d} vs {r}"
            );
            assert_eq!(
                digest_uri_matches(UriCheck::Host, &own, d, r),
                host,
                "host: {d} vs {r}"
            );
            assert!(digest_uri_matches(UriCheck::Off, &own, d, r), "off: {d}");
        }
    }

    #[test]
    fn an_unspecified_listen_address_is_every_address() {
        let own = OwnNames {
            domains: Vec::new(),
            addrs: vec!["0.0.0.0:5060".parse().unwrap()],
        };
        let m = |d| digest_uri_matches(UriCheck::Host, &own, d, "sip:pbx.example");
        assert!(m("sip:203.0.113.7"));
        assert!(m("sip:203.0.113.7:5060"));
        assert!(!m("sip:203.0.113.7:5062"));
    }

    #[test]
    fn config_spelling() {
        #[derive(serde::Deserialize)]
        struct T {
            m: UriCheck,
        }
        for mode in [UriCheck::Strict, UriCheck::Host, UriCheck::Off] {
            let t: T = toml::from_str(&format!("m = \"{}\"", mode.as_str())).unwrap();
            assert_eq!(t.m, mode);
        }
        assert!(toml::from_str::<T>("m = \"loose\"").is_err());
        assert_eq!(UriCheck::default(), UriCheck::Host);
    }
}
