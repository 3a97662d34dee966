//! One operation in flight (a registration, a call, or an Asterisk-originated call) and the
//! requests it sends. An [`Op`] lives in a slot of the worker's slab; its Call-ID names the
//! slot (`PHASE.THREAD.SLOT.GEN@RUN.lg`), so a response finds its op without a map lookup, and
//! a late response for a reused slot is recognised by its generation. `RUN` (8 hex digits,
//! new for every worker) keeps Call-IDs and Via branches unique across generator runs (RFC
//! 3261 §8.1.1.7: a branch is unique across space and time): Kamailio keeps finished
//! transactions 5 s, and a second run started within that time with the same branches lost
//! calls to it.

use super::build::{write_request, Request};
use super::net::Wire;
use super::stats::Waiting;
use std::io::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};

/// What the op does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// REGISTER, 401, REGISTER with Authorization, 200.
    Register,
    /// INVITE, 407, ACK, INVITE with Proxy-Authorization, 100/180/200, ACK, BYE, 200.
    Call,
    /// From the Asterisk address: INVITE to a registered phone, 180/200, ACK, BYE, 200.
    AsteriskCall,
}

/// Where the op stands (which response it waits for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Free,
    /// First request sent (REGISTER or INVITE without credentials for phones; the INVITE of
    /// an Asterisk call).
    First,
    /// The authenticated request was sent.
    Authed,
    /// 2xx received, ACK sent, BYE waiting for the talk time.
    Talking,
    /// BYE sent.
    Bye,
}

/// A fixed-capacity ASCII string on the stack (Call-IDs, tags, URIs being assembled).
#[derive(Clone, Copy)]
pub struct Small<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Small<N> {
    pub fn new() -> Self {
        Small {
            buf: [0; N],
            len: 0,
        }
    }

    /// Formats `args`; output past the capacity is cut.
    pub fn fmt(args: std::fmt::Arguments<'_>) -> Self {
        let mut s = Self::new();
        let mut w = &mut s.buf[..];
        let _ = w.write_fmt(args);
        s.len = N - w.len();
        s
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl<const N: usize> Default for Small<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> std::fmt::Debug for Small<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// A new run id: the process id, the wall clock and a process-wide counter, mixed, so two
/// workers (of one process or of two processes started in the same nanosecond) differ.
pub fn new_run_id() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 40)
        ^ (u64::from(COUNTER.fetch_add(1, Ordering::Relaxed)) << 20);
    // splitmix64's finaliser: every input bit moves about half of the output bits.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) as u32
}

/// Formats the Call-ID of an op.
pub fn call_id(phase: u32, thread: u32, slot: u32, gen: u32, run: u32) -> Small<64> {
    Small::fmt(format_args!("{phase}.{thread}.{slot}.{gen}@{run:08x}.lg"))
}

/// The op id encoded in a Call-ID: `(phase, thread, slot, generation, run)`.
pub fn parse_call_id(cid: &[u8]) -> Option<(u32, u32, u32, u32, u32)> {
    let cid = cid.strip_suffix(b".lg")?;
    let at = cid.iter().position(|&c| c == b'@')?;
    let (id, run) = (cid.get(..at)?, cid.get(at + 1..)?);
    let run = std::str::from_utf8(run)
        .ok()
        .filter(|r| r.len() == 8)
        .and_then(|r| u32::from_str_radix(r, 16).ok())?;
    let mut it = id.split(|&c| c == b'.').map(super::sip::parse_u32);
    let r = (it.next()??, it.next()??, it.next()??, it.next()??, run);
    it.next().is_none().then_some(r)
}

/// One operation. Buffers keep their capacity when the slot is reused.
#[derive(Debug)]
pub struct Op {
    pub gen: u32,
    pub kind: Kind,
    pub state: State,
    /// Global index of the user (phone) this op plays or calls.
    pub user: u32,
    /// Socket the op's requests leave from.
    pub sock: u16,
    pub call_id: Small<64>,
    /// CSeq of the current INVITE/REGISTER.
    pub cseq: u32,
    /// µs: op start, current request's first send, op deadline.
    pub t_op: u64,
    pub t_req: u64,
    pub deadline: u64,
    /// Retransmission of `req` (0 = off) and its current interval.
    pub rtx_at: u64,
    pub rtx_iv: u64,
    /// The cap of `rtx_iv` (T2 for non-INVITE, none for INVITE).
    pub rtx_cap: u64,
    pub req: Vec<u8>,
    pub seen100: bool,
    pub seen180: bool,
    /// BYE due at (0 = none).
    pub bye_at: u64,
    /// Dialog: To value with the remote tag, remote target, Route lines.
    pub to: Vec<u8>,
    pub target: Vec<u8>,
    pub routes: Vec<u8>,
    /// The phone's side of an Asterisk call: its 200, retransmitted until the ACK.
    pub phone_resp: Vec<u8>,
    pub phone_rtx_at: u64,
    pub phone_iv: u64,
    pub phone_sock: u16,
    pub phone_dst: Option<std::net::SocketAddrV4>,
    /// Bumped at every (re)arm of the op's timer; stale wheel entries do not match.
    pub timer_seq: u32,
}

impl Op {
    pub fn new() -> Op {
        Op {
            gen: 0,
            kind: Kind::Register,
            state: State::Free,
            user: 0,
            sock: 0,
            call_id: Small::new(),
            cseq: 1,
            t_op: 0,
            t_req: 0,
            deadline: 0,
            rtx_at: 0,
            rtx_iv: 0,
            rtx_cap: 0,
            req: Vec::new(),
            seen100: false,
            seen180: false,
            bye_at: 0,
            to: Vec::new(),
            target: Vec::new(),
            routes: Vec::new(),
            phone_resp: Vec::new(),
            phone_rtx_at: 0,
            phone_iv: 0,
            phone_sock: 0,
            phone_dst: None,
            timer_seq: 0,
        }
    }

    /// Resets the op for a new operation in the same slot.
    pub fn reset(
        &mut self,
        kind: Kind,
        user: u32,
        sock: u16,
        call_id: Small<64>,
        now: u64,
        timeout: u64,
    ) {
        self.kind = kind;
        self.state = State::First;
        self.user = user;
        self.sock = sock;
        self.call_id = call_id;
        self.cseq = 1;
        self.t_op = now;
        self.t_req = now;
        self.deadline = now + timeout;
        self.rtx_at = 0;
        self.seen100 = false;
        self.seen180 = false;
        self.bye_at = 0;
        self.to.clear();
        self.target.clear();
        self.routes.clear();
        self.phone_resp.clear();
        self.phone_rtx_at = 0;
        self.phone_dst = None;
    }

    /// What the op still waits for (the cause of its timeout).
    pub fn waiting(&self) -> Waiting {
        match self.state {
            State::Talking | State::Bye => Waiting::Bye,
            _ if self.kind == Kind::AsteriskCall && self.seen100 && self.phone_dst.is_none() => {
                Waiting::Phone
            }
            _ if self.seen100 || self.seen180 => Waiting::Final,
            State::Authed => Waiting::AuthResponse,
            State::First | State::Free => Waiting::FirstResponse,
        }
    }

    /// The earliest thing the op's timer must do.
    pub fn next_deadline(&self) -> u64 {
        [self.rtx_at, self.phone_rtx_at, self.bye_at]
            .into_iter()
            .filter(|&t| t != 0)
            .fold(self.deadline, u64::min)
    }
}

impl Default for Op {
    fn default() -> Self {
        Self::new()
    }
}

/// The fixed parts of the requests every op sends.
#[derive(Debug, Clone)]
pub struct Identity<'a> {
    pub user: &'a [u8],
    /// `sip:..` of the From/To (phones: `USER@DOMAIN`; Asterisk: `asterisk@IP`).
    pub from_uri: &'a [u8],
    pub to_uri: &'a [u8],
    pub local: &'a [u8],
    /// The transport of the sending socket (Via, Contact's `transport` parameter).
    pub wire: Wire,
    pub slot: u32,
    pub gen: u32,
}

/// Writes a request of `op` into `op.req`: `method` to `ruri`, CSeq `cseq`, with `extra` lines
/// (credentials, Route set) and the dialog's To when there is one.
#[allow(clippy::too_many_arguments)]
pub fn compose(
    op_req: &mut Vec<u8>,
    id: &Identity<'_>,
    call_id: &[u8],
    dialog_to: &[u8],
    method: &[u8],
    ruri: &[u8],
    cseq: u32,
    branch_tag: u8,
    extra: &[u8],
    register_expires: Option<u32>,
) {
    let from = Small::<160>::fmt(format_args!(
        "<{}>;tag=f{}x{}",
        String::from_utf8_lossy(id.from_uri),
        id.slot,
        id.gen
    ));
    let to_plain = Small::<160>::fmt(format_args!("<{}>", String::from_utf8_lossy(id.to_uri)));
    let to = if dialog_to.is_empty() {
        to_plain.as_bytes()
    } else {
        dialog_to
    };
    // The branch: the Call-ID's op id and run (`@` and `.lg` left out), the CSeq and a tag.
    let cid = call_id.strip_suffix(b".lg").unwrap_or(call_id);
    let (id_part, run) = match cid.iter().position(|&c| c == b'@') {
        Some(at) => (
            cid.get(..at).unwrap_or_default(),
            cid.get(at + 1..).unwrap_or_default(),
        ),
        None => (cid, &b""[..]),
    };
    let branch = Small::<80>::fmt(format_args!(
        "{}.{}.{}{}",
        String::from_utf8_lossy(id_part),
        String::from_utf8_lossy(run),
        cseq,
        branch_tag as char
    ));
    let contact = Small::<128>::fmt(format_args!(
        "sip:{}@{}{}",
        String::from_utf8_lossy(id.user),
        String::from_utf8_lossy(id.local),
        String::from_utf8_lossy(id.wire.uri_param())
    ));
    let invite = method == b"INVITE";
    write_request(
        op_req,
        &Request {
            method,
            request_uri: ruri,
            local: id.local,
            transport: id.wire.via(),
            branch: branch.as_bytes(),
            from: from.as_bytes(),
            to,
            call_id,
            cseq,
            contact: (invite || register_expires.is_some()).then_some(contact.as_bytes()),
            expires: register_expires,
            extra,
            sdp: invite,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::sip::Msg;

    #[test]
    fn call_ids_round_trip() {
        let c = call_id(7, 1, 65535, 3, 0xdead_beef);
        assert_eq!(c.as_bytes(), b"7.1.65535.3@deadbeef.lg");
        assert_eq!(
            parse_call_id(c.as_bytes()),
            Some((7, 1, 65535, 3, 0xdead_beef))
        );
        let max = call_id(u32::MAX, u32::MAX, u32::MAX, u32::MAX, u32::MAX);
        assert_eq!(
            parse_call_id(max.as_bytes()),
            Some((u32::MAX, u32::MAX, u32::MAX, u32::MAX, u32::MAX)),
            "the longest Call-ID fits its buffer"
        );
        assert_eq!(parse_call_id(b"7.1.2@0000000a.lg"), None);
        assert_eq!(parse_call_id(b"7.1.2.3.4@0000000a.lg"), None);
        assert_eq!(parse_call_id(b"7.1.2.3@0000000a.other"), None);
        assert_eq!(parse_call_id(b"7.1.2.3@a.lg"), None);
        assert_eq!(parse_call_id(b"7.1.2.3@lg"), None, "the old form");
        assert_eq!(parse_call_id(b"a.1.2.3@0000000a.lg"), None);
    }

    #[test]
    fn run_ids_differ() {
        let ids: std::collections::HashSet<u32> = (0..1000).map(|_| new_run_id()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn timeouts_name_what_was_awaited() {
        let mut op = Op::new();
        op.reset(Kind::Call, 1, 0, Small::new(), 0, 5000);
        assert_eq!(op.waiting(), Waiting::FirstResponse);
        op.state = State::Authed;
        assert_eq!(op.waiting(), Waiting::AuthResponse);
        op.seen100 = true;
        assert_eq!(op.waiting(), Waiting::Final);
        op.state = State::Bye;
        assert_eq!(op.waiting(), Waiting::Bye);
        op.reset(Kind::AsteriskCall, 1, 0, Small::new(), 0, 5000);
        op.seen100 = true;
        assert_eq!(op.waiting(), Waiting::Phone);
        op.phone_dst = Some(std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::LOCALHOST,
            5,
        ));
        assert_eq!(op.waiting(), Waiting::Final);
    }

    #[test]
    fn composes_an_invite() {
        let id = Identity {
            user: b"1001",
            from_uri: b"sip:1001@sipfront.test",
            to_uri: b"sip:600@sipfront.test",
            local: b"127.0.0.1:40000",
            wire: Wire::Udp,
            slot: 5,
            gen: 2,
        };
        let mut req = Vec::new();
        compose(
            &mut req,
            &id,
            b"1.0.5.2@0000abcd.lg",
            b"",
            b"INVITE",
            b"sip:600@sipfront.test",
            1,
            b'i',
            b"",
            None,
        );
        let m = Msg::parse(&req).expect("parses");
        assert_eq!(m.method, b"INVITE");
        assert_eq!(
            m.first(b"from"),
            Some(&b"<sip:1001@sipfront.test>;tag=f5x2"[..])
        );
        assert_eq!(m.first(b"to"), Some(&b"<sip:600@sipfront.test>"[..]));
        assert_eq!(m.contact_uri(), Some(&b"sip:1001@127.0.0.1:40000"[..]));
        assert!(m
            .first(b"via")
            .is_some_and(|v| v.ends_with(b"branch=z9hG4bK1.0.5.2.0000abcd.1i;rport")));
        assert!(!m.body.is_empty());
        let mut op = Op::new();
        op.reset(Kind::Call, 1, 0, Small::fmt(format_args!("x")), 1000, 5000);
        op.bye_at = 3000;
        assert_eq!(op.next_deadline(), 3000);
    }
}
