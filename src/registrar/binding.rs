//! One binding (contact of an AOR), stored compactly, and the borrowed view lookups hand out.
//!
//! A [`Slot`] keeps every variable-length field of a binding in one boxed byte buffer
//! (`uri | call-id | path entries | user-agent`) plus fixed-size numbers, so a binding costs
//! one allocation and ~64 bytes of struct. [`Binding`] is what the core sees on lookup: string
//! slices into that buffer and the address to send to, already decided at REGISTER time
//! (NAT rule in [`nat_dest`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::config::NatMode;

/// Transport the REGISTER arrived on (stored with the binding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
            Transport::Ws => 3,
            Transport::Wss => 4,
        }
    }

    pub(crate) fn from_code(c: u8) -> Transport {
        match c {
            1 => Transport::Tcp,
            2 => Transport::Tls,
            3 => Transport::Ws,
            4 => Transport::Wss,
            _ => Transport::Udp,
        }
    }

    /// Parse `udp`/`tcp`/... case-insensitively (persistence rows).
    pub fn parse(s: &str) -> Option<Transport> {
        [
            Transport::Udp,
            Transport::Tcp,
            Transport::Tls,
            Transport::Ws,
            Transport::Wss,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

/// Longest Call-ID stored (Kamailio's limit too); longer ones are refused with 400.
pub const MAX_CALL_ID: usize = 255;
/// Longest User-Agent kept; longer ones are truncated.
pub const MAX_USER_AGENT: usize = 255;
/// Longest contact URI accepted.
pub const MAX_CONTACT_URI: usize = 2048;
/// Most bytes of Path stored per binding.
pub const MAX_PATH_BYTES: usize = 4096;

const F_V6: u8 = 1;
const F_NATED: u8 = 2;
const F_Q_SET: u8 = 4;
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
    pub(crate) worker: u16,
    uri_len: u16,
    path_len: u16,
    call_id_len: u8,
    ua_len: u8,
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
    pub worker: u16,
    pub nated: bool,
}

/// Why a [`Slot`] could not be built (maps to 400 upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotError {
    Uri,
    CallId,
    Path,
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
        let ua = truncate_str(p.user_agent, MAX_USER_AGENT);
        let mut buf = Vec::with_capacity(p.uri.len() + p.call_id.len() + path_len + ua.len());
        buf.extend_from_slice(p.uri.as_bytes());
        buf.extend_from_slice(p.call_id.as_bytes());
        for e in p.path {
            // Length checked above: each entry fits in u16.
            buf.extend_from_slice(&(e.len() as u16).to_le_bytes());
            buf.extend_from_slice(e.as_bytes());
        }
        buf.extend_from_slice(ua.as_bytes());
        // The one address kept: where to send (source when NATed, else the Contact's).
        let addr = if p.nated {
            p.source
        } else {
            contact_socket(p.uri).unwrap_or(p.source)
        };
        let (ip, v6) = match addr.ip() {
            IpAddr::V4(a) => (a.to_ipv6_mapped().octets(), false),
            IpAddr::V6(a) => (a.octets(), true),
        };
        let mut flags = p.transport.code() << F_TRANSPORT_SHIFT;
        if v6 {
            flags |= F_V6;
        }
        if p.nated {
            flags |= F_NATED;
        }
        if p.q.is_some() {
            flags |= F_Q_SET;
        }
        Ok(Slot {
            buf: buf.into_boxed_slice(),
            expires_at_ms: p.expires_at_ms,
            cseq: p.cseq,
            since_s: p.since_s,
            ip,
            port: addr.port(),
            q: p.q.unwrap_or(1000).min(1000),
            worker: p.worker,
            uri_len: p.uri.len() as u16,
            path_len: path_len as u16,
            call_id_len: p.call_id.len() as u8,
            ua_len: ua.len() as u8,
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
            worker: self.worker,
            uri_len: self.uri_len,
            path_len: self.path_len,
            call_id_len: self.call_id_len,
            ua_len: self.ua_len,
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

    pub(crate) fn q(&self) -> Option<u16> {
        self.as_ref().q()
    }

    /// Ordering key: unspecified q sorts as 1.0.
    pub(crate) fn q_rank(&self) -> u16 {
        self.q
    }

    /// Same phone location (everything but expiry, CSeq, Call-ID and User-Agent) as `other`.
    pub(crate) fn same_location(&self, other: &Slot) -> bool {
        self.ip == other.ip
            && self.port == other.port
            && self.flags == other.flags
            && self.worker == other.worker
            && self.as_ref().path_bytes() == other.as_ref().path_bytes()
            && self.q == other.q
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

/// Size of the numbers of an encoded slot, without the address.
const FIXED_BASE: usize = 29;

/// The numbers of a slot (everything but the variable-length buffer).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fixed {
    pub(crate) expires_at_ms: u64,
    cseq: u32,
    since_s: u32,
    ip: [u8; 16],
    port: u16,
    q: u16,
    worker: u16,
    uri_len: u16,
    path_len: u16,
    call_id_len: u8,
    ua_len: u8,
    flags: u8,
}

fn take<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
    let (head, tail) = b.split_first_chunk::<N>()?;
    *b = tail;
    Some(*head)
}

impl Fixed {
    fn ip_len(&self) -> usize {
        if self.flags & F_V6 != 0 {
            16
        } else {
            4
        }
    }

    /// Encoded size: 29 bytes of numbers plus 4 (IPv4) or 16 (IPv6) address bytes.
    fn encoded_len(&self) -> usize {
        FIXED_BASE + self.ip_len()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.flags, self.call_id_len, self.ua_len]);
        out.extend_from_slice(&self.expires_at_ms.to_le_bytes());
        out.extend_from_slice(&self.cseq.to_le_bytes());
        out.extend_from_slice(&self.since_s.to_le_bytes());
        for v in [self.port, self.q, self.worker, self.uri_len, self.path_len] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(self.ip.get(16 - self.ip_len()..).unwrap_or(&self.ip));
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
            port: u16_at(19),
            q: u16_at(21),
            worker: u16_at(23),
            uri_len: u16_at(25),
            path_len: u16_at(27),
            ip: [0; 16],
        };
        let mut rest = rest;
        if flags & F_V6 != 0 {
            f.ip = take::<16>(&mut rest)?;
        } else {
            f.ip = Ipv4Addr::from(take::<4>(&mut rest)?)
                .to_ipv6_mapped()
                .octets();
        }
        *b = rest;
        Some(f)
    }

    fn var_len(&self) -> usize {
        self.uri_len as usize
            + self.call_id_len as usize
            + self.path_len as usize
            + self.ua_len as usize
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
            worker: f.worker,
            uri_len: f.uri_len,
            path_len: f.path_len,
            call_id_len: f.call_id_len,
            ua_len: f.ua_len,
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

    /// Where to send requests for this binding (decided at REGISTER time).
    pub(crate) fn dest(&self) -> SocketAddr {
        let ip = if self.f.flags & F_V6 != 0 {
            IpAddr::V6(Ipv6Addr::from(self.f.ip))
        } else {
            let o = self.f.ip;
            IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
        };
        SocketAddr::new(ip, self.f.port)
    }

    pub(crate) fn nated(&self) -> bool {
        self.f.flags & F_NATED != 0
    }

    pub(crate) fn q(&self) -> Option<u16> {
        (self.f.flags & F_Q_SET != 0).then_some(self.f.q)
    }

    pub(crate) fn transport(&self) -> Transport {
        Transport::from_code(self.f.flags >> F_TRANSPORT_SHIFT)
    }

    pub(crate) fn view(&self) -> Binding<'a> {
        Binding {
            uri: self.uri(),
            dest: self.dest(),
            transport: self.transport(),
            worker: self.f.worker,
            path: PathEntries {
                rest: self.path_bytes(),
            },
            q: self.q(),
            expires_at_ms: self.f.expires_at_ms,
            nated: self.nated(),
            raw: *self,
        }
    }
}

/// A binding as lookups see it: borrowed from the table for the duration of the callback.
/// The fields are what routing needs; the rest is read on demand through methods.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The Contact URI as the phone registered it (the new Request-URI).
    pub uri: &'a str,
    /// Where to send requests for this binding: the REGISTER's source address when NATed
    /// (private or differing Contact, or Path), else the Contact's address.
    pub dest: SocketAddr,
    /// Transport the REGISTER arrived on.
    pub transport: Transport,
    /// Worker whose socket received the REGISTER (send from it to keep NAT pinholes).
    pub worker: u16,
    /// Path header entries (RFC 3327), to push as Route in this order.
    pub path: PathEntries<'a>,
    /// q value in thousandths when the phone gave one.
    pub q: Option<u16>,
    pub expires_at_ms: u64,
    /// Whether `dest` is the source address instead of the Contact's.
    pub nated: bool,
    raw: SlotRef<'a>,
}

impl<'a> Binding<'a> {
    /// Seconds left before expiry (rounded up), 0 when expired.
    pub fn remaining_secs(&self, now_ms: u64) -> u32 {
        remaining_secs(self.expires_at_ms, now_ms)
    }

    /// Call-ID of the REGISTER that created or last refreshed it.
    pub fn call_id(&self) -> &'a str {
        self.raw.call_id()
    }

    pub fn cseq(&self) -> u32 {
        self.raw.f.cseq
    }

    /// User-Agent of the phone (at most 255 bytes kept).
    pub fn user_agent(&self) -> &'a str {
        self.raw.user_agent()
    }

    /// When the binding was first registered (seconds since the epoch).
    pub fn registered_at_s(&self) -> u32 {
        self.raw.f.since_s
    }
}

pub(crate) fn remaining_secs(expires_at_ms: u64, now_ms: u64) -> u32 {
    let ms = expires_at_ms.saturating_sub(now_ms);
    u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX)
}

/// Iterator over stored Path entries (each a name-addr such as `<sip:edge;lr>`).
#[derive(Debug, Clone, Copy)]
pub struct PathEntries<'a> {
    rest: &'a [u8],
}

impl<'a> PathEntries<'a> {
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

impl<'a> Iterator for PathEntries<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let (len, tail) = self.rest.split_first_chunk::<2>()?;
        let len = u16::from_le_bytes(*len) as usize;
        let (entry, tail) = tail.split_at_checked(len)?;
        self.rest = tail;
        std::str::from_utf8(entry).ok()
    }
}

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
            worker: 3,
            nated: true,
        })
        .unwrap();
        let v = slot.view();
        assert_eq!(v.uri, "sip:alice@192.168.0.2:5060");
        assert_eq!(v.call_id(), "abc@host");
        assert_eq!(v.user_agent(), "Phone/1.0");
        assert_eq!(v.path.collect::<Vec<_>>(), path);
        assert_eq!(v.dest, sa("[2001:db8::5]:7000"));
        assert_eq!(v.transport, Transport::Tcp);
        assert_eq!((v.q, v.worker, v.cseq()), (Some(500), 3, 7));
        assert_eq!(v.remaining_secs(1_500), 60);
        assert!(
            std::mem::size_of::<Slot>() <= 64,
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
            worker: 0,
            nated: false,
        };
        let s = Slot::new(&p).unwrap();
        assert!(s.user_agent().len() <= MAX_USER_AGENT && !s.user_agent().is_empty());
        assert_eq!(s.view().dest, sa("1.2.3.4:5060"));
        assert_eq!(s.q(), None);
        let long_cid = "x".repeat(MAX_CALL_ID + 1);
        p.call_id = &long_cid;
        assert_eq!(Slot::new(&p).err(), Some(SlotError::CallId));
    }
}
