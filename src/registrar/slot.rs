//! One binding as stored: [`Slot`] (owned, what the rules work on) and its encoded form
//! read in place by [`SlotRef`].
//!
//! A slot keeps every variable-length field in one byte buffer (`uri | call-id | path
//! entries | user-agent | +sip.instance`) and the numbers beside it; encoded, it is 34 bytes
//! of numbers (the RFC 5626 `reg-id` among them),
//! two IPs (4 bytes IPv4, 16 IPv6 each: where to send, and the proxy's own socket the
//! REGISTER arrived on) and that buffer. Where to send is decided at REGISTER time (the NAT
//! rule); the local socket is what requests to the phone leave from (its NAT pinhole was
//! opened towards that address).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::binding::{Binding, PathEntries};
use super::uri::contact_socket;
use crate::sip::Transport;

/// Longest Call-ID stored (Kamailio's limit too); longer ones are refused with 400.
pub const MAX_CALL_ID: usize = 255;
/// Longest User-Agent kept; longer ones are truncated.
pub const MAX_USER_AGENT: usize = 255;
/// Longest contact URI accepted.
pub const MAX_CONTACT_URI: usize = 2048;
/// Most bytes of Path stored per binding.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest `+sip.instance` value kept (RFC 5626; a `"<urn:uuid:...>"` is 47 bytes);
/// longer ones are refused with 400.
pub const MAX_INSTANCE: usize = 255;

const F_V6: u8 = 1;
const F_NATED: u8 = 2;
const F_Q_SET: u8 = 4;
const F_SOCK_V6: u8 = 8;
const F_CONN: u8 = 128;
const F_TRANSPORT_SHIFT: u8 = 4;

/// A stored binding. Fields are private; read it through [`Slot::view`].
#[derive(Debug, Clone)]
pub struct Slot {
    buf: Box<[u8]>,
    pub(crate) expires_at_ms: u64,
    pub(crate) cseq: u32,
    /// Registration time (seconds since the epoch) of the first REGISTER that created it.
    pub(crate) since_s: u32,
    ip: [u8; 16],
    port: u16,
    q: u16,
    /// The local socket the REGISTER arrived on (IPv4 mapped) and its port.
    sock_ip: [u8; 16],
    sock_port: u16,
    /// The stream connection it registered over (a packed `core::ConnId`), 0 for none.
    conn: u64,
    /// RFC 5626 `reg-id` (0: none).
    reg_id: u32,
    uri_len: u16,
    path_len: u16,
    call_id_len: u8,
    ua_len: u8,
    inst_len: u8,
    flags: u8,
}

/// Everything needed to create a [`Slot`].
#[derive(Debug, Clone, Copy)]
pub struct SlotParts<'a> {
    pub uri: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    pub path: &'a [&'a str],
    pub user_agent: &'a str,
    pub expires_at_ms: u64,
    pub since_s: u32,
    pub q: Option<u16>,
    pub source: SocketAddr,
    pub transport: Transport,
    /// The proxy's local socket the REGISTER arrived on.
    pub socket: SocketAddr,
    /// The stream connection it arrived over (a packed `core::ConnId`), 0 for none.
    pub conn: u64,
    pub nated: bool,
    /// RFC 5626 `+sip.instance` as the Contact gave it (quotes included), "" for none.
    pub instance: &'a str,
    /// RFC 5626 `reg-id` (0: none).
    pub reg_id: u32,
}

/// Why a [`Slot`] could not be built (maps to 400 upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotError {
    Uri,
    CallId,
    Path,
    Instance,
}

fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

impl Slot {
    pub(crate) fn new(p: &SlotParts<'_>) -> Result<Slot, SlotError> {
        if p.uri.len() > MAX_CONTACT_URI {
            return Err(SlotError::Uri);
        }
        if p.call_id.len() > MAX_CALL_ID {
            return Err(SlotError::CallId);
        }
        let path_len: usize = p.path.iter().map(|e| 2 + e.len()).sum();
        if path_len > MAX_PATH_BYTES || p.path.iter().any(|e| e.len() > MAX_PATH_BYTES) {
            return Err(SlotError::Path);
        }
        if p.instance.len() > MAX_INSTANCE {
            return Err(SlotError::Instance);
        }
        let ua = truncate_str(p.user_agent, MAX_USER_AGENT);
        let mut buf = Vec::with_capacity(
            p.uri.len() + p.call_id.len() + path_len + ua.len() + p.instance.len(),
        );
        buf.extend_from_slice(p.uri.as_bytes());
        buf.extend_from_slice(p.call_id.as_bytes());
        for e in p.path {
            // Length checked above: each entry fits in u16.
            buf.extend_from_slice(&(e.len() as u16).to_le_bytes());
            buf.extend_from_slice(e.as_bytes());
        }
        buf.extend_from_slice(ua.as_bytes());
        buf.extend_from_slice(p.instance.as_bytes());
        // The one address kept: where to send (source when NATed, else the Contact's).
        let addr = if p.nated {
            p.source
        } else {
            contact_socket(p.uri).unwrap_or(p.source)
        };
        let (ip, v6) = ip16(addr.ip());
        let (sock_ip, sock_v6) = ip16(p.socket.ip());
        let mut flags = p.transport.code() << F_TRANSPORT_SHIFT;
        if v6 {
            flags |= F_V6;
        }
        if sock_v6 {
            flags |= F_SOCK_V6;
        }
        if p.nated {
            flags |= F_NATED;
        }
        if p.q.is_some() {
            flags |= F_Q_SET;
        }
        if p.conn != 0 {
            flags |= F_CONN;
        }
        Ok(Slot {
            buf: buf.into_boxed_slice(),
            expires_at_ms: p.expires_at_ms,
            cseq: p.cseq,
            since_s: p.since_s,
            ip,
            port: addr.port(),
            q: p.q.unwrap_or(1000).min(1000),
            sock_ip,
            sock_port: p.socket.port(),
            conn: p.conn,
            reg_id: p.reg_id,
            uri_len: p.uri.len() as u16,
            path_len: path_len as u16,
            call_id_len: p.call_id.len() as u8,
            ua_len: ua.len() as u8,
            inst_len: p.instance.len() as u8,
            flags,
        })
    }

    fn fixed(&self) -> Fixed {
        Fixed {
            expires_at_ms: self.expires_at_ms,
            cseq: self.cseq,
            since_s: self.since_s,
            ip: self.ip,
            port: self.port,
            q: self.q,
            sock_ip: self.sock_ip,
            sock_port: self.sock_port,
            conn: self.conn,
            reg_id: self.reg_id,
            uri_len: self.uri_len,
            path_len: self.path_len,
            call_id_len: self.call_id_len,
            ua_len: self.ua_len,
            inst_len: self.inst_len,
            flags: self.flags,
        }
    }

    /// Borrowed form (all accessors live there).
    pub(crate) fn as_ref(&self) -> SlotRef<'_> {
        SlotRef {
            f: self.fixed(),
            var: &self.buf,
        }
    }

    pub(crate) fn uri(&self) -> &str {
        self.as_ref().uri()
    }

    pub(crate) fn call_id(&self) -> &str {
        self.as_ref().call_id()
    }

    pub(crate) fn user_agent(&self) -> &str {
        self.as_ref().user_agent()
    }

    /// RFC 5626 `+sip.instance` ("" for none) and `reg-id` (0 for none).
    pub(crate) fn outbound(&self) -> (&str, u32) {
        (self.as_ref().instance(), self.reg_id)
    }

    /// Ordering key: unspecified q sorts as 1.0.
    pub(crate) fn q_rank(&self) -> u16 {
        self.q
    }

    /// The connection the phone registered over now (it may reconnect between refreshes).
    pub(crate) fn set_conn(&mut self, conn: u64) {
        self.conn = conn;
        if conn == 0 {
            self.flags &= !F_CONN;
        } else {
            self.flags |= F_CONN;
        }
    }

    /// Same phone location (everything but expiry, CSeq, Call-ID, User-Agent and the
    /// connection) as `other`.
    pub(crate) fn same_location(&self, other: &Slot) -> bool {
        self.ip == other.ip
            && self.port == other.port
            && (self.flags & !F_CONN) == (other.flags & !F_CONN)
            && self.sock_ip == other.sock_ip
            && self.sock_port == other.sock_port
            && self.as_ref().path_bytes() == other.as_ref().path_bytes()
            && self.q == other.q
            && self.outbound() == other.outbound()
    }

    /// The borrowed view handed to lookup callbacks.
    pub fn view(&self) -> Binding<'_> {
        self.as_ref().view()
    }

    /// Length of the encoded form.
    pub(crate) fn encoded_len(&self) -> usize {
        self.fixed().encoded_len() + self.buf.len()
    }

    /// Append the encoded form (numbers, address, then the buffer).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        self.fixed().encode(out);
        out.extend_from_slice(&self.buf);
    }
}

/// Size of the numbers of an encoded slot, without the addresses.
const FIXED_BASE: usize = 34;

/// An IP as 16 bytes (IPv4 mapped) and whether it is IPv6.
fn ip16(ip: IpAddr) -> ([u8; 16], bool) {
    match ip {
        IpAddr::V4(a) => (a.to_ipv6_mapped().octets(), false),
        IpAddr::V6(a) => (a.octets(), true),
    }
}

/// The IP of 16 stored bytes.
fn ip_of(b: [u8; 16], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[12], b[13], b[14], b[15]))
    }
}

fn ip_len(v6: bool) -> usize {
    if v6 {
        16
    } else {
        4
    }
}

fn take_ip(rest: &mut &[u8], v6: bool) -> Option<[u8; 16]> {
    if v6 {
        take::<16>(rest)
    } else {
        Some(Ipv4Addr::from(take::<4>(rest)?).to_ipv6_mapped().octets())
    }
}

/// The numbers of a slot (everything but the variable-length buffer).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fixed {
    pub(crate) expires_at_ms: u64,
    pub(crate) cseq: u32,
    pub(crate) since_s: u32,
    ip: [u8; 16],
    port: u16,
    q: u16,
    sock_ip: [u8; 16],
    sock_port: u16,
    conn: u64,
    pub(crate) reg_id: u32,
    uri_len: u16,
    path_len: u16,
    call_id_len: u8,
    ua_len: u8,
    inst_len: u8,
    flags: u8,
}

fn take<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
    let (head, tail) = b.split_first_chunk::<N>()?;
    *b = tail;
    Some(*head)
}

impl Fixed {
    /// Encoded size: 34 bytes of numbers plus 4 (IPv4) or 16 (IPv6) bytes per address,
    /// plus 8 for a connection.
    fn encoded_len(&self) -> usize {
        let conn = if self.flags & F_CONN != 0 { 8 } else { 0 };
        FIXED_BASE + ip_len(self.flags & F_V6 != 0) + ip_len(self.flags & F_SOCK_V6 != 0) + conn
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.flags, self.call_id_len, self.ua_len]);
        out.extend_from_slice(&self.expires_at_ms.to_le_bytes());
        out.extend_from_slice(&self.cseq.to_le_bytes());
        out.extend_from_slice(&self.since_s.to_le_bytes());
        out.extend_from_slice(&self.reg_id.to_le_bytes());
        out.push(self.inst_len);
        for v in [
            self.port,
            self.q,
            self.sock_port,
            self.uri_len,
            self.path_len,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for (ip, v6) in [
            (&self.ip, self.flags & F_V6 != 0),
            (&self.sock_ip, self.flags & F_SOCK_V6 != 0),
        ] {
            // IPv4 addresses are stored as their last 4 bytes (mapped form).
            out.extend_from_slice(ip.get(16 - ip_len(v6)..).unwrap_or(ip));
        }
        if self.flags & F_CONN != 0 {
            out.extend_from_slice(&self.conn.to_le_bytes());
        }
    }

    fn decode(b: &mut &[u8]) -> Option<Fixed> {
        let (a, rest) = b.split_first_chunk::<FIXED_BASE>()?;
        // Constant indices into a fixed-size array: checked at compile time.
        let u16_at = |i: usize| u16::from_le_bytes([a[i], a[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
        let flags = a[0];
        let mut f = Fixed {
            flags,
            call_id_len: a[1],
            ua_len: a[2],
            expires_at_ms: u64::from(u32_at(3)) | (u64::from(u32_at(7)) << 32),
            cseq: u32_at(11),
            since_s: u32_at(15),
            reg_id: u32_at(19),
            inst_len: a[23],
            port: u16_at(24),
            q: u16_at(26),
            sock_port: u16_at(28),
            sock_ip: [0; 16],
            conn: 0,
            uri_len: u16_at(30),
            path_len: u16_at(32),
            ip: [0; 16],
        };
        let mut rest = rest;
        f.ip = take_ip(&mut rest, flags & F_V6 != 0)?;
        f.sock_ip = take_ip(&mut rest, flags & F_SOCK_V6 != 0)?;
        if flags & F_CONN != 0 {
            f.conn = u64::from_le_bytes(take::<8>(&mut rest)?);
        }
        *b = rest;
        Some(f)
    }

    fn var_len(&self) -> usize {
        self.uri_len as usize
            + self.call_id_len as usize
            + self.path_len as usize
            + self.ua_len as usize
            + self.inst_len as usize
    }
}

/// Bytes stored from a `&str` back as `&str` (ASCII fast path: SIP URIs are ASCII).
fn as_str(b: &[u8]) -> &str {
    if b.is_ascii() {
        // SAFETY: every byte is ASCII, and ASCII bytes are valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(b) }
    } else {
        std::str::from_utf8(b).unwrap_or("")
    }
}

/// A slot read in place from an encoded record (or borrowed from a [`Slot`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotRef<'a> {
    pub(crate) f: Fixed,
    var: &'a [u8],
}

impl<'a> SlotRef<'a> {
    /// Decode one slot from the front of `b`, advancing it.
    pub(crate) fn decode(b: &mut &'a [u8]) -> Option<SlotRef<'a>> {
        let f = Fixed::decode(b)?;
        let (var, tail) = b.split_at_checked(f.var_len())?;
        *b = tail;
        Some(SlotRef { f, var })
    }

    /// Owned copy (for the rules, which rebuild the AOR's bindings).
    pub(crate) fn to_slot(self) -> Slot {
        let f = self.f;
        Slot {
            buf: self.var.into(),
            expires_at_ms: f.expires_at_ms,
            cseq: f.cseq,
            since_s: f.since_s,
            ip: f.ip,
            port: f.port,
            q: f.q,
            sock_ip: f.sock_ip,
            sock_port: f.sock_port,
            conn: f.conn,
            reg_id: f.reg_id,
            uri_len: f.uri_len,
            path_len: f.path_len,
            call_id_len: f.call_id_len,
            ua_len: f.ua_len,
            inst_len: f.inst_len,
            flags: f.flags,
        }
    }

    /// Length of the encoded form.
    pub(crate) fn encoded_len(&self) -> usize {
        self.f.encoded_len() + self.var.len()
    }

    fn str_at(&self, start: usize, len: usize) -> &'a str {
        self.var.get(start..start + len).map_or("", as_str)
    }

    pub(crate) fn uri(&self) -> &'a str {
        self.str_at(0, self.f.uri_len as usize)
    }

    pub(crate) fn call_id(&self) -> &'a str {
        self.str_at(self.f.uri_len as usize, self.f.call_id_len as usize)
    }

    fn path_bytes(&self) -> &'a [u8] {
        let start = self.f.uri_len as usize + self.f.call_id_len as usize;
        self.var
            .get(start..start + self.f.path_len as usize)
            .unwrap_or(&[])
    }

    pub(crate) fn user_agent(&self) -> &'a str {
        let start =
            self.f.uri_len as usize + self.f.call_id_len as usize + self.f.path_len as usize;
        self.str_at(start, self.f.ua_len as usize)
    }

    /// RFC 5626 `+sip.instance` as registered ("" for none).
    pub(crate) fn instance(&self) -> &'a str {
        let start = self.f.uri_len as usize
            + self.f.call_id_len as usize
            + self.f.path_len as usize
            + self.f.ua_len as usize;
        self.str_at(start, self.f.inst_len as usize)
    }

    /// Where to send requests for this binding (decided at REGISTER time).
    pub(crate) fn dest(&self) -> SocketAddr {
        SocketAddr::new(ip_of(self.f.ip, self.f.flags & F_V6 != 0), self.f.port)
    }

    /// The proxy's local socket the REGISTER arrived on.
    pub(crate) fn socket(&self) -> SocketAddr {
        let v6 = self.f.flags & F_SOCK_V6 != 0;
        SocketAddr::new(ip_of(self.f.sock_ip, v6), self.f.sock_port)
    }

    pub(crate) fn nated(&self) -> bool {
        self.f.flags & F_NATED != 0
    }

    pub(crate) fn q(&self) -> Option<u16> {
        (self.f.flags & F_Q_SET != 0).then_some(self.f.q)
    }

    pub(crate) fn transport(&self) -> Transport {
        Transport::from_code((self.f.flags >> F_TRANSPORT_SHIFT) & 0x7)
    }

    pub(crate) fn view(&self) -> Binding<'a> {
        Binding {
            uri: self.uri(),
            dest: self.dest(),
            transport: self.transport(),
            socket: self.socket(),
            conn: self.f.conn,
            path: PathEntries {
                rest: self.path_bytes(),
            },
            q: self.q(),
            expires_at_ms: self.f.expires_at_ms,
            nated: self.nated(),
            call_id: self.call_id(),
            cseq: self.f.cseq,
            raw: *self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn slot_round_trip() {
        let path = ["<sip:edge1.example;lr>", "<sip:edge2.example;lr>"];
        let slot = Slot::new(&SlotParts {
            uri: "sip:alice@192.168.0.2:5060",
            call_id: "abc@host",
            cseq: 7,
            path: &path,
            user_agent: "Phone/1.0",
            expires_at_ms: 61_000,
            since_s: 1,
            q: Some(500),
            source: sa("[2001:db8::5]:7000"),
            transport: Transport::Tcp,
            socket: sa("10.0.0.5:5060"),
            conn: 0x8000_1234_5678_9abc,
            nated: true,
            instance: "\"<urn:uuid:1>\"",
            reg_id: 3,
        })
        .unwrap();
        let v = slot.view();
        assert_eq!(v.uri, "sip:alice@192.168.0.2:5060");
        assert_eq!(v.call_id, "abc@host");
        assert_eq!(v.user_agent(), "Phone/1.0");
        assert_eq!(v.path.collect::<Vec<_>>(), path);
        assert_eq!(v.dest, sa("[2001:db8::5]:7000"));
        assert_eq!(v.transport, Transport::Tcp);
        assert_eq!((v.q, v.socket, v.cseq), (Some(500), sa("10.0.0.5:5060"), 7));
        assert_eq!(v.remaining_secs(1_500), 60);
        let mut enc = Vec::new();
        slot.encode(&mut enc);
        assert_eq!(enc.len(), slot.encoded_len());
        let back = SlotRef::decode(&mut enc.as_slice()).unwrap();
        assert_eq!(back.view().socket, sa("10.0.0.5:5060"));
        assert_eq!(back.view().conn, 0x8000_1234_5678_9abc);
        assert_eq!(back.view().dest, sa("[2001:db8::5]:7000"));
        assert_eq!(back.view().instance(), "\"<urn:uuid:1>\"");
        assert_eq!(back.view().reg_id(), Some(3));
        assert_eq!(back.view().user_agent(), "Phone/1.0");
        // The owned form only lives while the rules run (the table keeps encoded records).
        assert!(
            std::mem::size_of::<Slot>() <= 96,
            "{}",
            std::mem::size_of::<Slot>()
        );
    }

    #[test]
    fn slot_limits_and_truncation() {
        let long_ua = "é".repeat(200);
        let mut p = SlotParts {
            uri: "sip:a@1.2.3.4",
            call_id: "c",
            cseq: 1,
            path: &[],
            user_agent: &long_ua,
            expires_at_ms: 0,
            since_s: 0,
            q: None,
            source: sa("1.2.3.4:5060"),
            transport: Transport::Udp,
            socket: sa("[2001:db8::1]:5060"),
            conn: 0,
            nated: false,
            instance: "",
            reg_id: 0,
        };
        let s = Slot::new(&p).unwrap();
        assert!(s.user_agent().len() <= MAX_USER_AGENT && !s.user_agent().is_empty());
        assert_eq!(s.view().dest, sa("1.2.3.4:5060"));
        assert_eq!(s.view().q, None);
        let long_cid = "x".repeat(MAX_CALL_ID + 1);
        p.call_id = &long_cid;
        assert_eq!(Slot::new(&p).err(), Some(SlotError::CallId));
    }
}
