//! Via header values (RFC 3261 section 20.42, RFC 3581 rport).
//!
//! `SIP / 2.0 / UDP host:port ;branch=...;received=...;rport`, with LWS allowed around
//! the slashes, before the parameters and around `;` / `=`. One [`Via`] is one via-parm;
//! a header holding several comma-separated via-parms is split by the message accessors.

use super::params::Params;
use super::scan::{parse_port, trim_start_str, trim_str};
use super::uri::parse_hostport;
use super::{ParseError, Span};

/// The RFC 3581 `rport` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rport {
    /// No `rport` parameter.
    Absent,
    /// `;rport` without a value (the client asks for symmetric response routing), or a
    /// value that is not a port number.
    Empty,
    /// `;rport=N`.
    Value(u16),
}

/// One via-parm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'b> {
    /// Transport token as written (`UDP`, `TCP`, `TLS`, `WS`, ...).
    pub transport: &'b str,
    /// sent-by host as written (IPv6 with brackets).
    pub host: &'b str,
    /// sent-by port.
    pub port: Option<u16>,
    /// Via parameters.
    pub params: Params<'b>,
    /// This via-parm's bytes: relative to the parsed string for [`Via::parse`], absolute in
    /// the message buffer when obtained from a `Message`.
    pub span: Span,
}

impl<'b> Via<'b> {
    /// Parses one via-parm (no commas).
    pub fn parse(s: &'b str) -> Result<Via<'b>, ParseError> {
        let lead = s.len() - trim_start_str(s).len();
        let t = trim_str(s);
        let span = Span::new(lead, lead + t.len());
        let rest = expect_ci(t, "SIP")?;
        let rest = expect_ci(slash(rest)?, "2.0")?;
        let rest = slash(rest)?;
        let tlen = rest
            .bytes()
            .position(|b| !super::scan::is_token(b))
            .unwrap_or(rest.len());
        let transport = rest.get(..tlen).unwrap_or("");
        let after = rest.get(tlen..).unwrap_or("");
        let rest = trim_start_str(after);
        if transport.is_empty() || rest.len() == after.len() {
            return Err(ParseError::BadVia);
        }
        // sent-by ends at LWS or ';'; an LWS-separated ":port" is tolerated too.
        let end = rest
            .bytes()
            .position(|b| b == b';' || super::scan::is_lws(b))
            .unwrap_or(rest.len());
        let (_, host, mut port) =
            parse_hostport(rest.get(..end).unwrap_or("")).map_err(|_| ParseError::BadVia)?;
        let mut tail = trim_start_str(rest.get(end..).unwrap_or(""));
        if port.is_none() {
            if let Some(p) = tail.strip_prefix(':') {
                let p = trim_start_str(p);
                let plen = p
                    .bytes()
                    .position(|b| !b.is_ascii_digit())
                    .unwrap_or(p.len());
                port = Some(
                    parse_port(p.get(..plen).unwrap_or("").as_bytes()).ok_or(ParseError::BadVia)?,
                );
                tail = trim_start_str(p.get(plen..).unwrap_or(""));
            }
        }
        finish(transport, host, port, tail, span)
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&'b str> {
        self.params.get("branch").flatten()
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<&'b str> {
        self.params.get("received").flatten()
    }

    /// The `rport` parameter.
    pub fn rport(&self) -> Rport {
        match self.params.get("rport") {
            None => Rport::Absent,
            Some(None) => Rport::Empty,
            Some(Some(v)) => parse_port(v.as_bytes()).map_or(Rport::Empty, Rport::Value),
        }
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&'b str> {
        self.params.get("maddr").flatten()
    }

    /// The `ttl` parameter, when it is a number in 0..=255.
    pub fn ttl(&self) -> Option<u8> {
        self.params
            .get("ttl")
            .flatten()
            .and_then(|v| v.parse::<u8>().ok())
    }
}

fn finish<'b>(
    transport: &'b str,
    host: &'b str,
    port: Option<u16>,
    tail: &'b str,
    span: Span,
) -> Result<Via<'b>, ParseError> {
    let params = if tail.is_empty() {
        Params::empty()
    } else if tail.starts_with(';') {
        Params::parse(tail).map_err(|_| ParseError::BadVia)?
    } else {
        return Err(ParseError::BadVia);
    };
    Ok(Via {
        transport,
        host,
        port,
        params,
        span,
    })
}

fn expect_ci<'b>(s: &'b str, word: &str) -> Result<&'b str, ParseError> {
    match s.get(..word.len()) {
        Some(p) if p.eq_ignore_ascii_case(word) => Ok(s.get(word.len()..).unwrap_or("")),
        _ => Err(ParseError::BadVia),
    }
}

fn slash(s: &str) -> Result<&str, ParseError> {
    trim_start_str(s)
        .strip_prefix('/')
        .map(trim_start_str)
        .ok_or(ParseError::BadVia)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        type Case = (
            &'static str,
            &'static str,
            &'static str,
            Option<u16>,
            Option<&'static str>,
            Rport,
        );
        let cases: &[Case] = &[
            (
                "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1",
                "UDP",
                "192.0.2.1",
                Some(5060),
                Some("z9hG4bK1"),
                Rport::Absent,
            ),
            (
                "SIP/2.0/TCP host.example.com;rport;branch=z9hG4bK2",
                "TCP",
                "host.example.com",
                None,
                Some("z9hG4bK2"),
                Rport::Empty,
            ),
            (
                "sip/2.0/tls [2001:db8::1]:5061;rport=4000",
                "tls",
                "[2001:db8::1]",
                Some(5061),
                None,
                Rport::Value(4000),
            ),
            (
                "SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw",
                "UDP",
                "192.0.2.2",
                None,
                Some("390skdjuw"),
                Rport::Absent,
            ),
            (
                "SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8",
                "TCP",
                "spindle.example.com",
                None,
                Some("z9hG4bK9ikj8"),
                Rport::Absent,
            ),
            (
                "SIP/2.0/UNKNOWN 192.0.2.3 : 5070 ;branch=z9hG4bK3",
                "UNKNOWN",
                "192.0.2.3",
                Some(5070),
                Some("z9hG4bK3"),
                Rport::Absent,
            ),
        ];
        for &(s, transport, host, port, branch, rport) in cases {
            let v = Via::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!(
                (v.transport, v.host, v.port, v.branch(), v.rport()),
                (transport, host, port, branch, rport),
                "{s:?}"
            );
        }
        let v = Via::parse("SIP/2.0/UDP h;received=192.0.2.9;maddr=224.2.0.1;ttl=16").unwrap();
        assert_eq!(
            (v.received(), v.maddr(), v.ttl()),
            (Some("192.0.2.9"), Some("224.2.0.1"), Some(16))
        );
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP ",
            "SIP/3.0/UDP host",
            "SIP/2.0 host",
            "SIP/2.0/UDPhost",
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/2.0/UDP host:70000",
            "SIP/2.0/UDP host junk",
        ] {
            assert_eq!(Via::parse(bad), Err(ParseError::BadVia), "{bad:?}");
        }
    }
}
