//! Upstream latency: the time from a request the worker sends to an Asterisk node until the
//! node's first (usually 100 Trying) and final response, per node, without touching the core.
//!
//! How: every request the proxy sends upstream carries a Via branch the core generated
//! (`core::BRANCH_PREFIX`, unique per client transaction: slot, generation). On send,
//! the tracker finds that branch with one SIMD substring search, hashes its bytes and stores
//! the send time in a direct-mapped table indexed by the hash (fixed size, allocated once; a
//! collision only loses a sample). A response arriving on the upstream socket carries the same branch in its top Via:
//! the entry gives the elapsed time, recorded once for the first response and once for the
//! final one. Retransmissions find their entry already present and keep the first send time;
//! ACK and CANCEL are not timed (a CANCEL's response has another CSeq method and is ignored).

use std::net::SocketAddr;

use memchr::memmem::Finder;

use super::{classify::MsgClass, Latency};
use crate::core::BRANCH_PREFIX;

/// Table entries (power of two).
const TABLE: usize = 4096;

/// Longest head searched for the branch.
const MAX_SCAN: usize = 2048;

/// Which response a latency sample is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    /// The first response of any code (100 Trying included).
    First = 0,
    /// The final (≥ 200) response.
    Final = 1,
}

impl UpstreamKind {
    pub fn label(self) -> &'static str {
        match self {
            UpstreamKind::First => "first",
            UpstreamKind::Final => "final",
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Pending {
    /// Hash of the branch; 0 = free.
    key: u64,
    sent_ns: u64,
    node: u16,
    /// The request's [`MsgClass`] method (as the matching response class).
    class: u8,
    first_seen: bool,
}

/// A worker's upstream timer (see the module docs).
pub struct UpstreamTracker {
    nodes: Vec<SocketAddr>,
    table: Box<[Pending]>,
    finder: Finder<'static>,
    hists: Vec<[Latency; 2]>,
}

/// FxHash-style hash of a branch's bytes after the prefix (the slot, generation and loop
/// hash the core encoded there): a few multiplications, no parsing.
fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    for &b in chunks.remainder() {
        h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
    }
    h
}

/// The response class matching a request class.
fn response_class(req: MsgClass) -> Option<MsgClass> {
    match req {
        MsgClass::RequestInvite => Some(MsgClass::ResponseInvite),
        MsgClass::RequestRegister => Some(MsgClass::ResponseRegister),
        MsgClass::RequestOther => Some(MsgClass::ResponseOther),
        _ => None,
    }
}

impl UpstreamTracker {
    pub fn new(nodes: Vec<SocketAddr>) -> Self {
        let hists = nodes.iter().map(|_| Default::default()).collect();
        UpstreamTracker {
            nodes,
            table: vec![Pending::default(); TABLE].into_boxed_slice(),
            finder: Finder::new(BRANCH_PREFIX.as_bytes()),
            hists,
        }
    }

    /// Per node: (first, final) response latency in ns, cumulative.
    pub fn histograms(&self) -> &[[Latency; 2]] {
        &self.hists
    }

    /// The nodes tracked, in the order of [`UpstreamTracker::histograms`].
    pub fn nodes(&self) -> &[SocketAddr] {
        &self.nodes
    }

    /// Track `nodes` from now on (a reload): a node kept keeps its histograms, a new node
    /// starts empty, a removed node's are dropped; requests in flight are forgotten.
    pub fn set_nodes(&mut self, nodes: &[SocketAddr]) {
        if nodes == self.nodes.as_slice() {
            return;
        }
        let mut old: Vec<_> = self.nodes.drain(..).zip(self.hists.drain(..)).collect();
        for n in nodes {
            let h = match old.iter().position(|(a, _)| a == n) {
                Some(i) => old.swap_remove(i).1,
                None => Default::default(),
            };
            self.nodes.push(*n);
            self.hists.push(h);
        }
        self.table.fill(Pending::default());
    }

    /// A hash of the first branch of ours in `data` (never 0), and its table index.
    fn key(&self, data: &[u8]) -> Option<(u64, usize)> {
        let head = data.get(..data.len().min(MAX_SCAN))?;
        let at = self.finder.find(head)?;
        let rest = head.get(at + BRANCH_PREFIX.len()..)?;
        let end = rest
            .iter()
            .position(|&b| matches!(b, b';' | b',' | b' ' | b'\t' | b'\r' | b'\n' | b'>'))
            .unwrap_or(rest.len());
        let key = hash(rest.get(..end)?).max(1);
        Some((key, (key as usize) & (TABLE - 1)))
    }

    /// A datagram is being sent to `dst` at `now_ns` (any monotonic ns clock, the same as
    /// for [`UpstreamTracker::on_response`]).
    #[inline]
    pub fn on_send(&mut self, dst: SocketAddr, data: &[u8], now_ns: u64) {
        if self.nodes.is_empty() || data.starts_with(b"SIP/") {
            return;
        }
        let Some(node) = self.nodes.iter().position(|n| *n == dst) else {
            return;
        };
        if data.starts_with(b"ACK ") || data.starts_with(b"CANCEL ") {
            return;
        }
        let Some(class) = response_class(super::classify(data)) else {
            return;
        };
        let Some((key, idx)) = self.key(data) else {
            return;
        };
        let Some(e) = self.table.get_mut(idx) else {
            return;
        };
        if e.key == key {
            return; // a retransmission: keep the first send time
        }
        *e = Pending {
            key,
            sent_ns: now_ns,
            node: u16::try_from(node).unwrap_or(u16::MAX),
            class: class as u8,
            first_seen: false,
        };
    }

    /// A response arrived on the upstream socket at `now_ns`; `class` is its
    /// [`super::classify`] result.
    #[inline]
    pub fn on_response(&mut self, data: &[u8], class: MsgClass, now_ns: u64) {
        let Some((key, idx)) = self.key(data) else {
            return;
        };
        let Some(e) = self.table.get_mut(idx) else {
            return;
        };
        if e.key != key || e.class != class as u8 {
            return;
        }
        let code = data
            .get(8..11)
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<u16>().ok())
            .unwrap_or(0);
        let elapsed = now_ns.saturating_sub(e.sent_ns).max(1);
        let Some(h) = self.hists.get_mut(usize::from(e.node)) else {
            return;
        };
        if !e.first_seen {
            e.first_seen = true;
            h[UpstreamKind::First as usize].record(elapsed);
        }
        if code >= 200 {
            h[UpstreamKind::Final as usize].record(elapsed);
            e.key = 0;
        }
    }
}
