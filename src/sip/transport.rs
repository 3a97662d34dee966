//! [`Transport`]: the SIP transport protocols, as written in Via (`SIP/2.0/TCP`), in URI
//! `transport=` parameters and in Kamailio's `location` rows.

/// A SIP transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    const ALL: [Transport; 5] = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Ws,
        Transport::Wss,
    ];

    /// Lowercase name: `udp`, `tcp`, ... (URI `transport=` values, persisted rows).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// The Via token: `UDP`, `TCP`, `TLS`, `WS`, `WSS`.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// Whether messages travel over a connection (everything but UDP).
    pub fn is_stream(self) -> bool {
        self != Transport::Udp
    }

    /// Whether the connection is encrypted.
    pub fn is_secure(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    /// A small stable code (persistence, compact encodings).
    pub fn code(self) -> u8 {
        match self {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
            Transport::Ws => 3,
            Transport::Wss => 4,
        }
    }

    /// The transport of a [`Transport::code`] (UDP for an unknown code).
    pub fn from_code(c: u8) -> Transport {
        Transport::ALL
            .into_iter()
            .find(|t| t.code() == c)
            .unwrap_or(Transport::Udp)
    }

    /// Parse `udp`/`TCP`/... case-insensitively (Via tokens, URI parameters, rows).
    pub fn parse(s: &str) -> Option<Transport> {
        Transport::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_round_trip() {
        for t in Transport::ALL {
            assert_eq!(Transport::parse(t.as_str()), Some(t));
            assert_eq!(Transport::parse(t.via_token()), Some(t));
            assert_eq!(Transport::from_code(t.code()), t);
        }
        assert_eq!(Transport::parse("sctp"), None);
        assert!(Transport::Tls.is_secure() && Transport::Tcp.is_stream());
        assert!(!Transport::Udp.is_stream());
    }
}
