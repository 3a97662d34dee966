//! Transaction state of one worker (RFC 3261 §17): slabs of server and client transactions.
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

use super::Local;

/// Most branches one request forks to.
pub const MAX_FORKS: usize = 8;

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
    /// An Asterisk node: on 503/408/timeout the next node is tried.
    Asterisk { first_node: u8, tries: u8 },
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
    pub src: SocketAddr,
    pub sock: Local,
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
            src: SocketAddr::from(([0, 0, 0, 0], 0)),
            sock: Local::Listen(0),
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

/// What a client transaction was started for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A branch of a proxied request, child of a server transaction.
    Branch { server: u32, server_gen: u32 },
    /// A REGISTER forwarded to Asterisk node `node` for the user kept in `aux`.
    RegFwd { challenged: bool },
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
    pub purpose: Purpose,
    pub dst: SocketAddr,
    pub sock: Local,
    /// The request as sent (retransmitted verbatim).
    pub request: Vec<u8>,
    pub retransmit_ms: u64,
    pub final_code: u16,
    /// Already counted as done by the parent server transaction.
    pub settled: bool,
    pub cancel: CancelState,
    pub cancel_request: Vec<u8>,
    pub cancel_retransmit_ms: u64,
    /// CANCEL retransmissions stop at this time (64*T1 after the first).
    pub cancel_until_ms: u64,
    /// Free-form bytes owned by the purpose (the user of a forwarded REGISTER).
    pub aux: Vec<u8>,
}

impl ClientTxn {
    fn empty() -> Self {
        ClientTxn {
            gen: 0,
            state: ClientState::Free,
            invite: false,
            purpose: Purpose::RegFwd { challenged: false },
            dst: SocketAddr::from(([0, 0, 0, 0], 0)),
            sock: Local::Upstream,
            request: Vec::new(),
            retransmit_ms: 0,
            final_code: 0,
            settled: false,
            cancel: CancelState::None,
            cancel_request: Vec::new(),
            cancel_retransmit_ms: 0,
            cancel_until_ms: 0,
            aux: Vec::new(),
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

    /// Change the limit (a reload): slots already made are kept and reused, but no more
    /// than `limit` are live at once from now on.
    fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }
}

/// All transactions of one worker.
pub struct Transactions {
    pub servers: Slab<ServerTxn>,
    pub clients: Slab<ClientTxn>,
    pub by_key: KeyMap,
}

impl Transactions {
    pub fn new(limit: usize) -> Self {
        let mut by_key = KeyMap::default();
        by_key.reserve(limit.min(65_536));
        Transactions {
            servers: Slab::new(limit),
            clients: Slab::new(limit.saturating_mul(2)),
            by_key,
        }
    }

    /// Change the per-worker limit (servers; clients get twice as many).
    pub fn set_limit(&mut self, limit: usize) {
        self.servers.set_limit(limit);
        self.clients.set_limit(limit.saturating_mul(2));
    }

    /// Find the live server transaction for `key` whose Via id matches.
    pub fn find_server(&self, key: u64, via_id: &[u8]) -> Option<u32> {
        let idx = *self.by_key.get(&key)?;
        let t = self.servers.get(idx)?;
        (t.state != ServerState::Free && t.via_id == via_id).then_some(idx)
    }

    /// Start a server transaction; `None` when the worker is at its limit.
    pub fn new_server(
        &mut self,
        key: u64,
        via_id: &[u8],
        invite: bool,
        src: SocketAddr,
        sock: Local,
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
        t.src = src;
        t.sock = sock;
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

    pub fn free_server(&mut self, idx: u32) {
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

    /// Start a client transaction; `None` when the worker is at its limit.
    pub fn new_client(
        &mut self,
        invite: bool,
        purpose: Purpose,
        dst: SocketAddr,
        sock: Local,
    ) -> Option<(u32, u32)> {
        let idx = self.clients.alloc(ClientTxn::empty)?;
        let t = self.clients.get_mut(idx)?;
        t.gen = t.gen.wrapping_add(1);
        t.state = ClientState::Calling;
        t.invite = invite;
        t.purpose = purpose;
        t.dst = dst;
        t.sock = sock;
        t.request.clear();
        t.final_code = 0;
        t.settled = false;
        t.cancel = CancelState::None;
        t.cancel_request.clear();
        t.aux.clear();
        Some((idx, t.gen))
    }

    /// The live client transaction at `slot` with generation `gen`.
    pub fn client(&mut self, slot: u32, gen: u32) -> Option<&mut ClientTxn> {
        self.clients
            .get_mut(slot)
            .filter(|t| t.gen == gen && t.state != ClientState::Free)
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

    #[test]
    fn slots_are_reused_with_new_generations() {
        let mut t = Transactions::new(2);
        let src: SocketAddr = "127.0.0.3:5060".parse().unwrap();
        let a = t
            .new_server(1, b"x", true, src, Local::Listen(0), b"REQ")
            .unwrap();
        let b = t
            .new_server(2, b"y", false, src, Local::Listen(0), b"REQ")
            .unwrap();
        assert_eq!(
            t.new_server(3, b"z", false, src, Local::Listen(0), b"R"),
            None
        );
        assert_eq!(t.find_server(1, b"x"), Some(a));
        assert_eq!(t.find_server(1, b"other"), None);
        let gen_a = t.servers.get(a).unwrap().gen;
        t.free_server(a);
        assert_eq!(t.find_server(1, b"x"), None);
        let c = t
            .new_server(3, b"z", false, src, Local::Listen(0), b"R")
            .unwrap();
        assert_eq!(c, a);
        assert_eq!(t.servers.get(c).unwrap().gen, gen_a + 1);
        assert_eq!(t.find_server(2, b"y"), Some(b));

        let (slot, gen) = t
            .new_client(
                true,
                Purpose::Branch {
                    server: c,
                    server_gen: 1,
                },
                src,
                Local::Upstream,
            )
            .unwrap();
        assert!(t.client(slot, gen).is_some());
        assert!(t.client(slot, gen + 1).is_none());
        t.free_client(slot);
        assert!(t.client(slot, gen).is_none());
    }
}
