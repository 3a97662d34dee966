//! Phones behind NAT, the way Kamailio's `set_contact_alias()` / `handle_ruri_alias()` do it.
//!
//! A phone behind NAT puts its private address in Contact; requests sent later inside the
//! dialog (ACK, BYE, re-INVITE from Asterisk) are addressed to that Contact and would be lost.
//! So when a dialog-creating request or its response comes from a phone whose Contact
//! differs from the address the message came from, the proxy appends
//! `;alias=<ip>~<port>~<proto>` (Kamailio's protocol numbers: 1 UDP, 2 TCP, 3 TLS, 5 WS,
//! 6 WSS) to the Contact URI it forwards. The far end copies the
//! Contact into its request-URI; when such a request comes back, the proxy sends it to the
//! alias address and removes the parameter, so the phone sees its own Contact again.
//! Initial requests to a registered phone use the registrar's NAT-fixed destination instead.

use std::net::{IpAddr, SocketAddr};

use crate::sip::{Contact, Message, Transport, Uri};

use super::route::uri_addr;

/// Longest request-URI rebuilt without its alias parameter.
pub(super) const MAX_RURI: usize = 2048;

/// The alias parameter for `src`, written into a stack buffer.
pub(super) struct Alias {
    buf: [u8; 64],
    len: usize,
}

impl Alias {
    pub fn new(src: SocketAddr, transport: Transport) -> Alias {
        use std::io::Write;
        let proto = match transport {
            Transport::Tcp => 2,
            Transport::Tls => 3,
            Transport::Ws => 5,
            Transport::Wss => 6,
            _ => 1,
        };
        let mut buf = [0u8; 64];
        let mut cur = std::io::Cursor::new(&mut buf[..]);
        let _ = match src.ip() {
            IpAddr::V4(ip) => write!(cur, ";alias={ip}~{}~{proto}", src.port()),
            IpAddr::V6(ip) => write!(cur, ";alias=[{ip}]~{}~{proto}", src.port()),
        };
        let len = cur.position() as usize;
        Alias { buf, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Whether the first Contact of `msg` names another address than `src` (NAT in between).
pub(super) fn contact_behind_nat(msg: &Message<'_, '_>, src: SocketAddr) -> bool {
    let Some(Ok(Contact::Addr(na))) = msg.contacts().next() else {
        return false;
    };
    let Ok(uri) = na.uri() else {
        return false;
    };
    if uri.params.get("alias").is_some() {
        return false;
    }
    match uri_addr(&uri) {
        Some(addr) => addr != src,
        // A host name in Contact: only the source address is known to work.
        None => true,
    }
}

/// Insert `alias` at the end of the URI of the first Contact header in the message `out`
/// (before `>` of a name-addr, or before the header parameters of an addr-spec). Returns
/// false (and leaves `out` unchanged) if there is no Contact to change.
pub(super) fn add_contact_alias(out: &mut Vec<u8>, alias: &[u8]) -> bool {
    let Some(pos) = contact_uri_end(out) else {
        return false;
    };
    let old = out.len();
    out.resize(old + alias.len(), 0);
    out.copy_within(pos..old, pos + alias.len());
    out[pos..pos + alias.len()].copy_from_slice(alias);
    true
}

/// Byte offset in `msg` where the first Contact's URI ends.
fn contact_uri_end(msg: &[u8]) -> Option<usize> {
    let head_end = msg.windows(4).position(|w| w == b"\r\n\r\n")?;
    let mut line_start = msg.iter().position(|&c| c == b'\n')? + 1;
    while line_start < head_end {
        let line_end = line_start + msg[line_start..].iter().position(|&c| c == b'\n')?;
        let line = &msg[line_start..line_end];
        if let Some(colon) = line.iter().position(|&c| c == b':') {
            let name = line[..colon].trim_ascii();
            if name.eq_ignore_ascii_case(b"contact") || name.eq_ignore_ascii_case(b"m") {
                let value_start = line_start + colon + 1;
                let value = &msg[value_start..line_end];
                if value.trim_ascii().starts_with(b"*") {
                    return None;
                }
                // name-addr: up to '>' of the first '<'.
                if let Some(lt) = value.iter().position(|&c| c == b'<') {
                    let gt = value[lt..].iter().position(|&c| c == b'>')?;
                    return Some(value_start + lt + gt);
                }
                // addr-spec: the URI ends at the first ';' (header params), ',' or CR.
                let end = value
                    .iter()
                    .position(|&c| c == b';' || c == b',' || c == b'\r')
                    .unwrap_or(value.len());
                let trimmed = value[..end].trim_ascii_end().len();
                let lead = value.len() - value.trim_ascii_start().len();
                return Some(value_start + trimmed.max(lead));
            }
        }
        line_start = line_end + 1;
    }
    None
}

/// If `ruri` carries an alias parameter: the address it names, and the request-URI without
/// it (written into `buf`).
pub(super) fn ruri_alias<'a>(
    ruri: &str,
    buf: &'a mut [u8; MAX_RURI],
) -> Option<(SocketAddr, &'a str)> {
    let uri = Uri::parse(ruri).ok()?;
    let value = uri.params.get("alias")??;
    let mut parts = value.split('~');
    let ip: IpAddr = parts
        .next()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    let port: u16 = parts.next()?.parse().ok()?;
    // Remove ";alias=value" from the text.
    let needle_start = ruri.find(";alias=")?;
    let needle_end = needle_start + ";alias=".len() + value.len();
    let (a, b) = (&ruri[..needle_start], ruri.get(needle_end..)?);
    if a.len() + b.len() > MAX_RURI {
        return None;
    }
    buf[..a.len()].copy_from_slice(a.as_bytes());
    buf[a.len()..a.len() + b.len()].copy_from_slice(b.as_bytes());
    let stripped = std::str::from_utf8(&buf[..a.len() + b.len()]).ok()?;
    Some((SocketAddr::new(ip, port), stripped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_contact(contact: &str) -> Vec<u8> {
        format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x\r\nContact: {contact}\r\nContent-Length: 0\r\n\r\n")
            .into_bytes()
    }

    #[test]
    fn alias_goes_at_the_end_of_the_contact_uri() {
        let alias = Alias::new("203.0.113.7:40000".parse().unwrap(), Transport::Udp);
        assert_eq!(alias.as_bytes(), b";alias=203.0.113.7~40000~1");
        let tls = Alias::new("203.0.113.7:40000".parse().unwrap(), Transport::Tls);
        assert_eq!(tls.as_bytes(), b";alias=203.0.113.7~40000~3");
        let cases = [
            (
                "<sip:a@192.168.1.2:5060>;expires=60",
                "<sip:a@192.168.1.2:5060;alias=203.0.113.7~40000~1>;expires=60",
            ),
            (
                "\"A, B\" <sip:a@10.0.0.1;transport=udp>",
                "\"A, B\" <sip:a@10.0.0.1;transport=udp;alias=203.0.113.7~40000~1>",
            ),
            (
                "sip:a@10.0.0.1:5062;expires=60",
                "sip:a@10.0.0.1:5062;alias=203.0.113.7~40000~1;expires=60",
            ),
            ("sip:a@10.0.0.1", "sip:a@10.0.0.1;alias=203.0.113.7~40000~1"),
        ];
        for (before, after) in cases {
            let mut m = with_contact(before);
            assert!(add_contact_alias(&mut m, alias.as_bytes()), "{before}");
            assert_eq!(m, with_contact(after), "{before}");
        }
        let mut star = with_contact("*");
        assert!(!add_contact_alias(&mut star, alias.as_bytes()));
        let mut none = b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n".to_vec();
        assert!(!add_contact_alias(&mut none, alias.as_bytes()));
    }

    #[test]
    fn ruri_alias_is_followed_and_removed() {
        let mut buf = [0u8; MAX_RURI];
        let (addr, stripped) = ruri_alias(
            "sip:a@192.168.1.2:5060;alias=203.0.113.7~40000~1;transport=udp",
            &mut buf,
        )
        .unwrap();
        assert_eq!(addr, "203.0.113.7:40000".parse().unwrap());
        assert_eq!(stripped, "sip:a@192.168.1.2:5060;transport=udp");
        let mut buf = [0u8; MAX_RURI];
        assert!(ruri_alias("sip:a@192.168.1.2:5060", &mut buf).is_none());
        assert!(ruri_alias("sip:a@h;alias=junk", &mut buf).is_none());
    }
}
