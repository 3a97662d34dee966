//! What lookups hand out: the borrowed [`Binding`] view of one stored binding, its Path
//! entries, and the transport it was registered over.
//!
//! The storage side (one encoded byte record per AOR) is in [`super::slot`]; a `Binding`
//! borrows from it for the duration of a lookup callback.

use std::net::SocketAddr;

use super::slot::SlotRef;
use crate::sip::Transport;

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
    /// The proxy's local socket the REGISTER arrived on: requests to the phone leave from
    /// it (the phone's NAT pinhole is open towards that address).
    pub socket: SocketAddr,
    /// The stream connection it registered over (a packed `core::ConnId`), 0 for none.
    pub conn: u64,
    /// Path header entries (RFC 3327), to push as Route in this order.
    pub path: PathEntries<'a>,
    /// q value in thousandths when the phone gave one.
    pub q: Option<u16>,
    pub expires_at_ms: u64,
    /// Whether `dest` is the source address instead of the Contact's.
    pub nated: bool,
    /// Call-ID of the REGISTER that created or last refreshed it.
    pub call_id: &'a str,
    /// Its CSeq.
    pub cseq: u32,
    pub(crate) raw: SlotRef<'a>,
}

impl<'a> Binding<'a> {
    /// Seconds left before expiry (rounded up), 0 when expired.
    pub fn remaining_secs(&self, now_ms: u64) -> u32 {
        remaining_secs(self.expires_at_ms, now_ms)
    }

    /// User-Agent of the phone (at most 255 bytes kept).
    pub fn user_agent(&self) -> &'a str {
        self.raw.user_agent()
    }

    /// RFC 5626 `+sip.instance` as registered, quotes included ("" for none).
    pub fn instance(&self) -> &'a str {
        self.raw.instance()
    }

    /// RFC 5626 `reg-id` (outbound applied to this binding), `None` for none.
    pub fn reg_id(&self) -> Option<u32> {
        Some(self.raw.f.reg_id).filter(|&r| r != 0)
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
    pub(crate) rest: &'a [u8],
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
