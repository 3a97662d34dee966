//! Comparison of the digest `uri` parameter with the Request-URI (RFC 3261 §22.4 asks that
//! they match; RFC 2617 §3.2.2.5 lets a server check they "identify the same resource").
//!
//! What we accept, from strict to lenient:
//! 1. byte-for-byte equality (what every UA we know sends);
//! 2. otherwise, equality after folding the case of the scheme and of the host part (both are
//!    case-insensitive in SIP URIs, RFC 3261 §19.1.4) — user part, port, parameters and
//!    headers must still match byte for byte.
//!
//! We do not reorder or drop URI parameters: a UA that rewrote them is rejected, which is the
//! safe side (the response hash covers the digest URI, not the Request-URI).

/// True if the digest URI identifies the Request-URI under the rules above.
pub fn digest_uri_matches(digest_uri: &str, request_uri: &str) -> bool {
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

struct Parts<'a> {
    scheme: &'a str,
    user: Option<&'a str>,
    host: &'a str,
    rest: &'a str,
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
    use super::digest_uri_matches as m;

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            ("sip:example.com", "sip:example.com", true),
            ("SIP:Example.COM", "sip:example.com", true),
            (
                "sip:alice@Example.com;transport=udp",
                "sip:alice@example.com;transport=udp",
                true,
            ),
            ("sip:Alice@example.com", "sip:alice@example.com", false),
            ("sip:example.com:5060", "sip:example.com", false),
            ("sip:example.com;transport=tcp", "sip:example.com", false),
            ("sip:[::1]:5060", "sip:[::1]:5060", true),
            ("sip:other.com", "sip:example.com", false),
            ("garbage", "sip:example.com", false),
            ("", "sip:example.com", false),
        ];
        for (d, r, want) in cases {
            assert_eq!(m(d, r), *want, "{d} vs {r}");
        }
    }
}
