//! Transaction state of one worker (RFC 3261 §17): slabs of server and client transactions,
//! and the timers that drive them. Every state change — start, provisional, final, free —
//! and the timers it arms are methods here, so the rest of the core asks for a transition
//! instead of writing fields.
//!
//! Slots are reused, never freed: each keeps its byte buffers (`Vec<u8>` whose capacity
//! survives `clear()`), so once a worker has warmed up, starting a transaction, storing the
//! request and the last response, and retransmitting them allocate nothing. A slot's `gen`
//! increments on every reuse; timers and branches carry it so stale references are ignored.
//!
//! Server transactions are found by a key hashed from the top Via (branch, sent-by) and the
//! method class; client transactions need no table: the branch we generated encodes the slot.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;

use super::config::Timers;
use super::flow::{Flow, Local};
use super::text::InlineStr;
use super::timer::{TimerEntry, TimerKind, TimerQueue};
use super::MAX_USER_LEN;

/// Most branches one request forks to.
pub const MAX_FORKS: usize = 8;

/// Longest Call-ID of a forwarded REGISTER kept with its transaction.
pub const MAX_REGFWD_CALL_ID: usize = 64;

/// Longest From tag of a forwarded REGISTER.
pub const MAX_REGFWD_TAG: usize = 32;

/// How long an INVITE client transaction absorbs retransmitted final responses (Timer D,
/// at least 32 s over UDP).
const TIMER_D_MS: u64 = 32_000;

/// Hasher for keys that are already hashes.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

pub type KeyMap = HashMap<u64, u32, BuildHasherDefault<IdHasher>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Free,
    /// Request forwarded, no final response yet.
    Proceeding,
    /// Final non-2xx sent; waiting for the ACK (INVITE) or absorbing retransmissions.
    Completed,
    /// INVITE: ACK received; absorbing ACK retransmissions (Timer I).
    Confirmed,
    /// INVITE: a 2xx was forwarded; absorbing INVITE retransmissions (RFC 6026 Timer L).
    Accepted,
}

/// Where the proxy sent a request: decides failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A node of the Asterisk farm, chosen by affinity `key`: on 503/500/408/timeout (or
    /// the node going down) the farm's next node not in `tried` (a mask of farm indices)
    /// is tried.
    Asterisk { key: u64, tried: u64 },
    /// Registered contacts or a dialog's next hop: no failover.
    Direct,
}

pub struct ServerTxn {
    pub gen: u32,
    pub state: ServerState,
    pub invite: bool,
    pub key: u64,
    /// Top Via branch and sent-by of the request, to confirm a key match.
    pub via_id: Vec<u8>,
    /// Where the request came from: its responses go back this way.
    pub from: Flow,
    /// The request as received.
    pub request: Vec<u8>,
    /// The last response sent upstream (re-sent on retransmissions of the request).
    pub response: Vec<u8>,
    pub response_code: u16,
    pub branches: [u32; MAX_FORKS],
    pub n_branches: u8,
    /// Branches without a final response.
    pub pending: u8,
    /// The best final response so far (RFC 3261 §16.7 (6)), as received from downstream.
    pub best: Vec<u8>,
    pub best_code: u16,
    pub cancelled: bool,
    pub target: Target,
    pub retransmit_ms: u64,
}

impl ServerTxn {
    fn empty() -> Self {
        ServerTxn {
            gen: 0,
            state: ServerState::Free,
            invite: false,
            key: 0,
            via_id: Vec::new(),
            from: Flow::new(Local::Listen(0), SocketAddr::from(([0, 0, 0, 0], 0))),
            request: Vec::new(),
            response: Vec::new(),
            response_code: 0,
            branches: [0; MAX_FORKS],
            n_branches: 0,
            pending: 0,
            best: Vec::new(),
            best_code: 0,
            cancelled: false,
            target: Target::Direct,
            retransmit_ms: 0,
        }
    }

    /// True once a final response went upstream.
    pub fn answered(&self) -> bool {
        self.response_code >= 200
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Free,
    /// Request sent, nothing heard (retransmitting).
    Calling,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived; absorbing its retransmissions.
    Completed,
}

/// A REGISTER the proxy sends to Asterisk (the seed's REGFWD), kept with its client
/// transaction so that a challenge can be answered and the outcome reported without
/// reading the request again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegFwdCtx {
    pub user: InlineStr<MAX_USER_LEN>,
    pub call_id: InlineStr<MAX_REGFWD_CALL_ID>,
    pub from_tag: InlineStr<MAX_REGFWD_TAG>,
    pub cseq: u32,
    pub expires: u32,
    /// Already sent again with credentials after a 401/407 (no second try).
    pub challenged: bool,
}

/// What a client transaction was started for.
///
/// Kept inline in reused transaction slots: boxing the larger variant would allocate for
/// every forwarded REGISTER; the response path reads the small variant in place.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCtx {
    /// A branch of a proxied request, child of a server transaction.
    Branch { server: u32, server_gen: u32 },
    /// A REGISTER forwarded to the Asterisk node the transaction is sent to.
    RegFwd(RegFwdCtx),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelState {
    None,
    /// CANCEL wanted, but no provisional response yet (RFC 3261 §9.1).
    Wanted,
    Sent,
}

pub struct ClientTxn {
    pub gen: u32,
    pub state: ClientState,
    pub invite: bool,
    pub ctx: ClientCtx,
    /// Where the request goes, from which local socket.
    pub to: Flow,
    /// The request as sent (retransmitted verbatim).
    pub request: Vec<u8>,
    /// When it was first sent (monotonic ms): the time to its first response.
    pub sent_ms: u64,
    pub retransmit_ms: u64,
    pub final_code: u16,
    /// Already counted as done by the parent server transaction.
    pub settled: bool,
    pub cancel: CancelState,
    pub cancel_request: Vec<u8>,
    pub cancel_retransmit_ms: u64,
    /// CANCEL retransmissions stop at this time (64*T1 after the first).
    pub cancel_until_ms: u64,
}

impl ClientTxn {
    fn empty() -> Self {
        ClientTxn {
            gen: 0,
            state: ClientState::Free,
            invite: false,
            ctx: ClientCtx::Branch {
                server: 0,
                server_gen: 0,
            },
            to: Flow::new(Local::Upstream, SocketAddr::from(([0, 0, 0, 0], 0))),
            request: Vec::new(),
            sent_ms: 0,
            retransmit_ms: 0,
            final_code: 0,
            settled: false,
            cancel: CancelState::None,
            cancel_request: Vec::new(),
            cancel_retransmit_ms: 0,
            cancel_until_ms: 0,
        }
    }
}

/// A slab of reusable slots with a free list and a hard limit.
pub struct Slab<T> {
    items: Vec<T>,
    free: Vec<u32>,
    limit: usize,
    live: usize,
}

impl<T> Slab<T> {
    fn new(limit: usize) -> Self {
        Slab {
            items: Vec::with_capacity(limit.min(4096)),
            free: Vec::with_capacity(limit.min(4096)),
            limit,
            live: 0,
        }
    }

    fn alloc(&mut self, make: impl FnOnce() -> T) -> Option<u32> {
        if self.live >= self.limit {
            // (A reload may have lowered the limit below the slots already made.)
            return None;
        }
        let idx = match self.free.pop() {
            Some(i) => i,
            None if self.items.len() < self.limit => {
                self.items.push(make());
                (self.items.len() - 1) as u32
            }
            None => return None,
        };
        self.live += 1;
        Some(idx)
    }

    fn release(&mut self, idx: u32) {
        self.live = self.live.saturating_sub(1);
        self.free.push(idx);
    }

    pub fn get(&self, idx: u32) -> Option<&T> {
        self.items.get(idx as usize)
    }

    pub fn get_mut(&mut self, idx: u32) -> Option<&mut T> {
        self.items.get_mut(idx as usize)
    }

    pub fn live(&self) -> usize {
        self.live
    }

    /// Slots made so far (live or free): `0..slots()` are the valid indices.
    pub fn slots(&self) -> u32 {
        u32::try_from(self.items.len()).unwrap_or(u32::MAX)
    }

    /// Change the limit (a reload): slots already made are kept and reused, but no more
    /// than `limit` are live at once from now on.
    fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }
}

/// All transactions of one worker and their timers.
pub struct Transactions {
    pub servers: Slab<ServerTxn>,
    pub clients: Slab<ClientTxn>,
    by_key: KeyMap,
    timers: TimerQueue,
    cfg: Timers,
}

impl Transactions {
    pub fn new(limit: usize, cfg: Timers) -> Self {
        let mut by_key = KeyMap::default();
        by_key.reserve(limit.min(65_536));
        Transactions {
            servers: Slab::new(limit),
            clients: Slab::new(limit.saturating_mul(2)),
            by_key,
            timers: TimerQueue::with_capacity(limit.min(65_536) * 2),
            cfg,
        }
    }

    /// Change the per-worker limit (servers; clients get twice as many) and the timer
    /// values used from now on (timers already armed keep their deadlines).
    pub fn configure(&mut self, limit: usize, cfg: Timers) {
        self.servers.set_limit(limit);
        self.clients.set_limit(limit.saturating_mul(2));
        self.cfg = cfg;
    }

    /// The earliest timer deadline (monotonic ms), stale or not.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.next_deadline()
    }

    /// The next timer due at `now_ms`.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<TimerEntry> {
        self.timers.pop_due(now_ms)
    }

    /// Arm the sending of an answer held in slot `slot` of `delayed.rs`.
    pub fn arm_delayed(&mut self, at_ms: u64, slot: u32, gen: u32) {
        self.timers.arm(at_ms, slot, gen, TimerKind::DelayedAnswer);
    }

    /// Arm the timeout of a request parked for a credential lookup.
    pub fn arm_parked(&mut self, at_ms: u64, slot: u32, gen: u32) {
        self.timers.arm(at_ms, slot, gen, TimerKind::ParkedTimeout);
    }

    // ---- server transactions ----

    /// Find the live server transaction for `key` whose Via id matches.
    pub fn find_server(&self, key: u64, via_id: &[u8]) -> Option<u32> {
        let idx = *self.by_key.get(&key)?;
        let t = self.servers.get(idx)?;
        (t.state != ServerState::Free && t.via_id == via_id).then_some(idx)
    }

    /// Start a server transaction; `None` when the worker is at its limit.
    pub fn start_server(
        &mut self,
        key: u64,
        via_id: &[u8],
        invite: bool,
        from: Flow,
        request: &[u8],
    ) -> Option<u32> {
        let idx = self.servers.alloc(ServerTxn::empty)?;
        let t = self.servers.get_mut(idx)?;
        t.gen = t.gen.wrapping_add(1);
        t.state = ServerState::Proceeding;
        t.invite = invite;
        t.key = key;
        t.via_id.clear();
        t.via_id.extend_from_slice(via_id);
        t.from = from;
        t.request.clear();
        t.request.extend_from_slice(request);
        t.response.clear();
        t.response_code = 0;
        t.n_branches = 0;
        t.pending = 0;
        t.best.clear();
        t.best_code = 0;
        t.cancelled = false;
        t.target = Target::Direct;
        t.retransmit_ms = 0;
        // A key collision with a live transaction replaces the map entry; the older one is
        // then only reachable through its branches and timers, which is harmless.
        self.by_key.insert(key, idx);
        Some(idx)
    }

    /// The final response `code` went upstream (stored in `response`): an INVITE answered
    /// with a 2xx absorbs retransmissions of the request (Accepted, RFC 6026 Timer L);
    /// any other final response to an INVITE is retransmitted until the ACK (Timer G, not
    /// over a connection, which is reliable), given up by Timer H; a non-INVITE absorbs
    /// retransmissions of its request (Timer J, zero over a connection). Timers L and J are
    /// `[timers] server_linger_ms`, like Kamailio's `wt_timer` (RFC 3261 makes them 64·T1;
    /// a retransmission after them is handled as a new request and absorbed downstream).
    pub fn server_final_sent(&mut self, idx: u32, code: u16, now_ms: u64) {
        let cfg = self.cfg;
        let Some(t) = self.servers.get_mut(idx) else {
            return;
        };
        let gen = t.gen;
        let invite = t.invite;
        let reliable = t.from.conn.is_some();
        let linger = match (invite, code) {
            (true, 300..) => 64 * cfg.t1_ms,
            (true, _) => cfg.server_linger_ms,
            (false, _) if reliable => 0,
            (false, _) => cfg.server_linger_ms,
        };
        if invite && code < 300 {
            t.state = ServerState::Accepted;
        } else {
            t.state = ServerState::Completed;
            t.retransmit_ms = cfg.t1_ms;
            if invite && !reliable {
                self.timers
                    .arm(now_ms + cfg.t1_ms, idx, gen, TimerKind::ServerRetransmit);
            }
        }
        self.timers
            .arm(now_ms + linger, idx, gen, TimerKind::ServerLinger);
    }

    /// The ACK of a non-2xx final response to an INVITE arrived: absorb its
    /// retransmissions for T4 (Timer I; zero over a connection), then free. Timer H, armed
    /// with the final response, is then stale.
    pub fn server_acked(&mut self, idx: u32, now_ms: u64) {
        let t4 = self.cfg.t4_ms;
        if let Some(t) = self.servers.get_mut(idx) {
            if t.invite && t.state == ServerState::Completed {
                t.state = ServerState::Confirmed;
                let gen = t.gen;
                let timer_i = if t.from.conn.is_some() { 0 } else { t4 };
                self.timers
                    .arm(now_ms + timer_i, idx, gen, TimerKind::ServerLinger);
            }
        }
    }

    /// Timer G fired for (`idx`, `gen`): the final response to retransmit, if the INVITE
    /// transaction still waits for its ACK (the next retransmission is armed).
    pub fn server_retransmit_due(&mut self, idx: u32, gen: u32, now_ms: u64) -> Option<&ServerTxn> {
        let t2 = self.cfg.t2_ms;
        let t = self.servers.get_mut(idx)?;
        if t.gen != gen || t.state != ServerState::Completed || !t.invite {
            return None;
        }
        t.retransmit_ms = t.retransmit_ms.saturating_mul(2).min(t2);
        let next = t.retransmit_ms;
        self.timers
            .arm(now_ms + next, idx, gen, TimerKind::ServerRetransmit);
        self.servers.get(idx)
    }

    /// The linger timer of (`idx`, `gen`) fired: the transaction ends.
    pub fn server_linger_over(&mut self, idx: u32, gen: u32) {
        if self.servers.get(idx).is_some_and(|t| t.gen == gen) {
            self.free_server(idx);
        }
    }

    fn free_server(&mut self, idx: u32) {
        let Some(t) = self.servers.get_mut(idx) else {
            return;
        };
        if t.state == ServerState::Free {
            return;
        }
        t.state = ServerState::Free;
        let key = t.key;
        if self.by_key.get(&key) == Some(&idx) {
            self.by_key.remove(&key);
        }
        self.servers.release(idx);
    }

    // ---- client transactions ----

    /// Start a client transaction towards `to`; `None` when the worker is at its limit.
    /// Write the request into its `request` buffer, then call [`Transactions::client_sent`].
    pub fn start_client(&mut self, invite: bool, ctx: ClientCtx, to: Flow) -> Option<(u32, u32)> {
        let idx = self.clients.alloc(ClientTxn::empty)?;
        let t = self.clients.get_mut(idx)?;
        t.gen = t.gen.wrapping_add(1);
        t.state = ClientState::Calling;
        t.invite = invite;
        t.ctx = ctx;
        t.to = to;
        t.request.clear();
        t.final_code = 0;
        t.settled = false;
        t.cancel = CancelState::None;
        t.cancel_request.clear();
        Some((idx, t.gen))
    }

    /// The request of client transaction `slot` went out: arm its retransmission (Timer
    /// A/E, unreliable transports only), its timeout (B/F) and, for an INVITE, Timer C
    /// (RFC 3261 §16.6 (11)).
    pub fn client_sent(&mut self, slot: u32, now_ms: u64) {
        let cfg = self.cfg;
        let Some(ct) = self.clients.get_mut(slot) else {
            return;
        };
        let gen = ct.gen;
        ct.retransmit_ms = cfg.t1_ms;
        ct.sent_ms = now_ms;
        let invite = ct.invite;
        if ct.to.conn.is_none() {
            self.timers
                .arm(now_ms + cfg.t1_ms, slot, gen, TimerKind::ClientRetransmit);
        }
        self.timers
            .arm(now_ms + 64 * cfg.t1_ms, slot, gen, TimerKind::ClientTimeout);
        if invite {
            self.timers
                .arm(now_ms + cfg.timer_c_ms, slot, gen, TimerKind::TimerC);
        }
    }

    /// The live client transaction at `slot` with generation `gen`.
    pub fn client(&mut self, slot: u32, gen: u32) -> Option<&mut ClientTxn> {
        self.clients
            .get_mut(slot)
            .filter(|t| t.gen == gen && t.state != ClientState::Free)
    }

    /// A provisional response arrived: Calling → Proceeding (a non-INVITE request is then
    /// retransmitted at T2, Timer E).
    pub fn client_provisional(&mut self, slot: u32) {
        let t2 = self.cfg.t2_ms;
        if let Some(ct) = self.clients.get_mut(slot) {
            if ct.state == ClientState::Calling {
                ct.state = ClientState::Proceeding;
                if !ct.invite {
                    ct.retransmit_ms = t2;
                }
            }
        }
    }

    /// A final response `code` arrived: a 2xx to an INVITE ends the transaction (the ACK
    /// is end to end); otherwise it absorbs retransmitted responses for Timer D (INVITE,
    /// 32 s: a retransmitted non-2xx is ACKed again) or K (T4), both zero over a
    /// connection (RFC 3261 §17.1.1.2, §17.1.2.2).
    pub fn client_final(&mut self, slot: u32, code: u16, now_ms: u64) {
        let t4 = self.cfg.t4_ms;
        let Some(ct) = self.clients.get_mut(slot) else {
            return;
        };
        ct.final_code = code;
        if ct.invite && (200..300).contains(&code) {
            self.free_client(slot);
            return;
        }
        ct.state = ClientState::Completed;
        let gen = ct.gen;
        let linger = match (ct.to.conn.is_some(), ct.invite) {
            (true, _) => 0,
            (false, true) => TIMER_D_MS,
            (false, false) => t4,
        };
        self.timers
            .arm(now_ms + linger, slot, gen, TimerKind::ClientLinger);
    }

    /// The transaction ends without a response (timeout, local 487): it lingers for T4
    /// to absorb a late one.
    pub fn client_given_up(&mut self, slot: u32, code: u16, now_ms: u64) {
        let t4 = self.cfg.t4_ms;
        let Some(ct) = self.clients.get_mut(slot) else {
            return;
        };
        ct.final_code = code;
        ct.state = ClientState::Completed;
        let gen = ct.gen;
        self.timers
            .arm(now_ms + t4, slot, gen, TimerKind::ClientLinger);
    }

    /// Timer A/E fired: the request to send again if still unanswered (the next
    /// retransmission is armed: doubling for INVITE, capped at T2 otherwise).
    pub fn client_retransmit_due(
        &mut self,
        slot: u32,
        gen: u32,
        now_ms: u64,
    ) -> Option<&ClientTxn> {
        let t2 = self.cfg.t2_ms;
        let ct = self.client(slot, gen)?;
        let resend = match ct.state {
            // A branch given up before any provisional (another branch answered, or the
            // caller cancelled) stops retransmitting, as Kamailio's tm does by default
            // (`cancel_b_method` 0): its target is most often a stale binding that will
            // never answer. The transaction stays until Timer B so that a late provisional
            // still gets its CANCEL (§9.1).
            ClientState::Calling => ct.cancel != CancelState::Wanted,
            // Non-INVITE keeps retransmitting at T2 after a provisional (Timer E).
            ClientState::Proceeding => !ct.invite,
            _ => false,
        };
        if !resend {
            return None;
        }
        ct.retransmit_ms = if ct.invite {
            ct.retransmit_ms.saturating_mul(2)
        } else {
            ct.retransmit_ms.saturating_mul(2).min(t2)
        };
        let next = ct.retransmit_ms;
        self.timers
            .arm(now_ms + next, slot, gen, TimerKind::ClientRetransmit);
        self.clients.get(slot)
    }

    /// Timer B/F fired: whether the transaction timed out (no final response, and for an
    /// INVITE not even a provisional one).
    pub fn client_timed_out(&mut self, slot: u32, gen: u32) -> bool {
        self.client(slot, gen).is_some_and(|ct| match ct.state {
            ClientState::Calling => true,
            ClientState::Proceeding => !ct.invite,
            _ => false,
        })
    }

    /// The CANCEL of `slot` was sent: retransmit it (doubling up to T2) for 64·T1.
    pub fn cancel_sent(&mut self, slot: u32, now_ms: u64) {
        let t1 = self.cfg.t1_ms;
        let Some(ct) = self.clients.get_mut(slot) else {
            return;
        };
        ct.cancel = CancelState::Sent;
        ct.cancel_retransmit_ms = t1;
        ct.cancel_until_ms = now_ms + 64 * t1;
        let gen = ct.gen;
        self.timers
            .arm(now_ms + t1, slot, gen, TimerKind::CancelRetransmit);
    }

    /// The CANCEL's retransmission timer fired: the CANCEL to send again, if still due.
    pub fn cancel_retransmit_due(
        &mut self,
        slot: u32,
        gen: u32,
        now_ms: u64,
    ) -> Option<&ClientTxn> {
        let t2 = self.cfg.t2_ms;
        let ct = self.client(slot, gen)?;
        if ct.cancel != CancelState::Sent
            || ct.cancel_retransmit_ms == 0
            || ct.final_code >= 200
            || now_ms >= ct.cancel_until_ms
        {
            return None;
        }
        ct.cancel_retransmit_ms = ct.cancel_retransmit_ms.saturating_mul(2).min(t2);
        let next = ct.cancel_retransmit_ms;
        self.timers
            .arm(now_ms + next, slot, gen, TimerKind::CancelRetransmit);
        self.clients.get(slot)
    }

    /// Whether the INVITE of (`slot`, `gen`) was CANCELled and, 64·T1 later, still has no
    /// final response: RFC 3261 §9.1 says to consider it cancelled and end its transaction
    /// (its destination is gone).
    pub fn cancel_unanswered(&mut self, slot: u32, gen: u32, now_ms: u64) -> bool {
        self.client(slot, gen).is_some_and(|ct| {
            ct.cancel == CancelState::Sent
                && ct.cancel_retransmit_ms != 0
                && ct.final_code < 200
                && ct.state == ClientState::Proceeding
                && now_ms >= ct.cancel_until_ms
        })
    }

    /// The linger timer of (`slot`, `gen`) fired.
    pub fn client_linger_over(&mut self, slot: u32, gen: u32) {
        if self
            .client(slot, gen)
            .is_some_and(|c| c.state == ClientState::Completed)
        {
            self.free_client(slot);
        }
    }

    pub fn free_client(&mut self, idx: u32) {
        let Some(t) = self.clients.get_mut(idx) else {
            return;
        };
        if t.state == ClientState::Free {
            return;
        }
        t.state = ClientState::Free;
        self.clients.release(idx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(local: Local) -> Flow {
        Flow::new(local, "127.0.0.3:5060".parse().unwrap())
    }

    #[test]
    fn slots_are_reused_with_new_generations() {
        let mut t = Transactions::new(2, Timers::default());
        let f = flow(Local::Listen(0));
        let a = t.start_server(1, b"x", true, f, b"REQ").unwrap();
        let b = t.start_server(2, b"y", false, f, b"REQ").unwrap();
        assert_eq!(t.start_server(3, b"z", false, f, b"R"), None);
        assert_eq!(t.find_server(1, b"x"), Some(a));
        assert_eq!(t.find_server(1, b"other"), None);
        let gen_a = t.servers.get(a).unwrap().gen;
        t.server_linger_over(a, gen_a);
        assert_eq!(t.find_server(1, b"x"), None);
        let c = t.start_server(3, b"z", false, f, b"R").unwrap();
        assert_eq!(c, a);
        assert_eq!(t.servers.get(c).unwrap().gen, gen_a + 1);
        assert_eq!(t.find_server(2, b"y"), Some(b));

        let ctx = ClientCtx::Branch {
            server: c,
            server_gen: 1,
        };
        let (slot, gen) = t.start_client(true, ctx, flow(Local::Upstream)).unwrap();
        assert!(t.client(slot, gen).is_some());
        assert!(t.client(slot, gen + 1).is_none());
        t.free_client(slot);
        assert!(t.client(slot, gen).is_none());
    }

    #[test]
    fn final_responses_arm_the_right_timers() {
        let cfg = Timers::default();
        let mut t = Transactions::new(4, cfg);
        let f = flow(Local::Listen(0));
        // INVITE answered 486: Timer G at T1, then H at 64·T1.
        let i = t.start_server(1, b"a", true, f, b"INVITE").unwrap();
        t.server_final_sent(i, 486, 0);
        assert_eq!(t.servers.get(i).unwrap().state, ServerState::Completed);
        let g = t.pop_due(cfg.t1_ms).unwrap();
        assert_eq!(g.kind, TimerKind::ServerRetransmit);
        assert!(t.server_retransmit_due(i, g.gen, cfg.t1_ms).is_some());
        t.server_acked(i, cfg.t1_ms);
        assert_eq!(t.servers.get(i).unwrap().state, ServerState::Confirmed);
        // Retransmission timer after the ACK: nothing to send.
        let g2 = t.pop_due(3 * cfg.t1_ms).unwrap();
        assert!(t.server_retransmit_due(i, g2.gen, 3 * cfg.t1_ms).is_none());
        // INVITE answered 200: Accepted, no retransmission.
        let j = t.start_server(2, b"b", true, f, b"INVITE").unwrap();
        t.server_final_sent(j, 200, 0);
        assert_eq!(t.servers.get(j).unwrap().state, ServerState::Accepted);

        // Client: an INVITE 2xx frees at once; a non-INVITE final lingers T4.
        let ctx = ClientCtx::Branch {
            server: j,
            server_gen: 1,
        };
        let (c, cg) = t.start_client(true, ctx, flow(Local::Upstream)).unwrap();
        t.client_sent(c, 0);
        t.client_provisional(c);
        assert!(!t.client_timed_out(c, cg));
        t.client_final(c, 200, 10);
        assert!(t.client(c, cg).is_none());
        let (d, dg) = t.start_client(false, ctx, flow(Local::Upstream)).unwrap();
        t.client_sent(d, 0);
        assert!(t.client_timed_out(d, dg));
        t.client_final(d, 404, 10);
        assert!(!t.client_timed_out(d, dg));
        t.client_linger_over(d, dg);
        assert!(t.client(d, dg).is_none());
    }
}
