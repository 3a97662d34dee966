//! The sans-IO proxy core (quinn-proto style): one [`Core`] per worker.
//!
//! Data flow: the I/O shell hands every datagram to [`Core::handle_datagram`] with the
//! clocks ([`Now`]) and the [`Flow`] it came over (local socket, sender); the core parses it
//! (`sip`), decides, and writes whatever must go out through the [`Transmit`] sink it was
//! given, each message with the flow it leaves by. It never reads a clock and never touches
//! a socket: the shell asks [`Core::poll_timeout`] when to call [`Core::handle_timeout`], and
//! drains [`Core::poll_lookup`] for credential lookups that must go to the database pool;
//! their answers come back through [`Core::handle_lookup`].
//!
//! What lives where:
//! - `flow.rs`: the vocabulary shared with the I/O shell ([`Local`], [`Flow`], [`Now`]);
//! - `config.rs`: the core's settings ([`CoreConfig`], the interface table, timers);
//! - `request.rs`: a request's path (sanity, retransmission, CANCEL, auth, routing);
//! - `route.rs`: stateful forwarding to Asterisk or to registered contacts, in-dialog
//!   routing, Record-Route (double when a request changes interface, RFC 5658);
//! - `response.rs`: responses from downstream, best-response selection, ACK of non-2xx;
//! - `build.rs`: the responses, ACKs and CANCELs the core writes itself;
//! - `timeouts.rs`: the §17 timers; `register.rs`: REGISTER and forwarding it to Asterisk;
//! - `farm.rs`: pings, replayed REGISTERs and failing over from nodes that went down;
//! - `keepalive.rs`: NAT keepalives to registered phones, and removing the dead ones;
//! - `txn.rs`, `timer.rs`, `branch.rs`: transaction slabs and their state changes, the timer
//!   heap, branch values (MAC-protected); `response_source.rs`: where a response may come
//!   from; `delayed.rs`: answers held back on a timer (authentication failures);
//! - `ports.rs`: the traits through which auth, location, REGFWD, the farm and the guard
//!   plug in.

mod branch;
mod build;
mod config;
mod delayed;
mod dialog_token;
mod farm;
mod flow;
mod keepalive;
mod nat;
mod peer;
pub mod ports;
mod regcache;
mod register;
mod request;
mod response;
mod response_source;
mod route;
mod text;
mod timeouts;
mod timer;
mod txn;

#[doc(hidden)]
pub mod fuzzing;
#[doc(hidden)]
pub mod testing;

#[cfg(test)]
mod farm_tests;
#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod keepalive_tests;
#[cfg(test)]
mod lifetime_tests;
#[cfg(test)]
mod peer_tests;
#[cfg(test)]
mod security_tests;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

pub use branch::{check_branch, owner, write_branch, BranchKey, Checked, OurBranch, BRANCH_PREFIX};
pub use config::{
    default_port, host_string, same_ip, CoreConfig, Interface, MatchMode, SharedConfig, Timers,
    DEFAULT_SUBSCRIBE_EVENTS,
};
pub use dialog_token::DialogKey;
pub use flow::{ConnId, Flow, Local, Now};
pub use keepalive::{KeepaliveBindings, KeepaliveMethod, NatConfig};
pub use peer::HOP_PARAM;
pub use ports::{
    Admission, AuthCheck, AuthFailure, AuthPort, FarmPort, FarmSender, GuardPort, KeepaliveTarget,
    Links, LocationPort, NodeAnswer, NodePick, Ports, RegFwdPort, RegFwdSender,
};
pub use response_source::ResponseSource;
pub use text::InlineStr;

use txn::Transactions;

/// Where the core sends bytes. The I/O shell's outbox implements it; tests record.
pub trait Transmit {
    /// Send `bytes` to `to.remote` from the local socket `to.local`.
    fn send(&mut self, to: Flow, bytes: &[u8]);
}

/// Longest user name the proxy authenticates.
pub const MAX_USER_LEN: usize = 128;

/// A credential lookup the shell must hand to the database pool.
#[derive(Debug, Clone, Copy)]
pub struct LookupRequest {
    pub token: u64,
    user: InlineStr<MAX_USER_LEN>,
}

impl LookupRequest {
    pub fn user(&self) -> &str {
        self.user.as_str()
    }
}

/// The answer to a [`LookupRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupResult {
    /// The credential cache now knows the user (or knows it does not exist): check again.
    Ready,
    /// The database could not answer: the request gets 503.
    Failed,
}

/// Per-worker counters, read by the metrics layer at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub rx_requests: u64,
    pub rx_responses: u64,
    pub tx_responses: [u64; 7],
    pub forwarded_requests: u64,
    pub forwarded_responses: u64,
    pub retransmissions_absorbed: u64,
    pub retransmissions_sent: u64,
    pub dropped_malformed: u64,
    pub dropped_unmatched: u64,
    pub dropped_overload: u64,
    pub dropped_banned: u64,
    pub dropped_rate_limited: u64,
    pub dropped_scanner: u64,
    /// Responses whose top branch has our prefix but not our MAC (`branch.rs`).
    pub dropped_forged: u64,
    /// Responses for a live client transaction from another address than its request
    /// went to (`response_source.rs`).
    pub dropped_spoofed: u64,
    pub auth_ok: u64,
    pub auth_failed: u64,
    pub auth_challenges: u64,
    pub lookups_started: u64,
    pub registrations: u64,
    pub regfwd_sent: u64,
    pub regfwd_ok: u64,
    pub regfwd_failed: u64,
    pub timeouts: u64,
    /// New requests answered 503 because the receive backlog was over
    /// `[limits] shed_backlog_bytes` ([`Core::set_backlog`]).
    pub shed_overload: u64,
    /// A gauge, not a counter: 1 while this worker sheds at any level (summed over
    /// workers: how many shed).
    pub shedding: u64,
    /// NAT keepalives sent to phones (OPTIONS or CRLF), answers to the OPTIONS, and
    /// bindings removed because their phone stopped answering or its connection closed.
    pub keepalives_sent: u64,
    pub keepalives_answered: u64,
    pub keepalive_removed: u64,
}

/// One worker's proxy state machine.
pub struct Core {
    cfg: Arc<CoreConfig>,
    ports: Ports,
    worker: u16,
    /// This worker's upstream socket address (its port goes into the Via towards Asterisk).
    upstream: SocketAddr,
    /// Transactions and their timers.
    txns: Transactions,
    parked: request::Parked,
    /// Answers held back on a timer (failed authentications, `delayed.rs`).
    delayed: delayed::Delayed,
    lookups: std::collections::VecDeque<LookupRequest>,
    /// Output buffer for the message being built.
    out: Vec<u8>,
    /// Scratch for header lines (challenges, contacts, extra headers).
    extra: Vec<u8>,
    next_token: u64,
    stats: Stats,
    /// Reused buffers: a resumed request, collected contacts, expired users.
    resume_buf: Vec<u8>,
    targets_buf: Vec<u8>,
    targets: Vec<route::TargetRec>,
    expired_buf: Vec<u8>,
    /// Next location expiry sweep (monotonic).
    next_expiry_ms: u64,
    /// Final responses to recent REGISTERs, for their retransmissions.
    reg_cache: regcache::RegCache,
    /// Which new requests from phones get 503 (receive backlog too high,
    /// [`Core::set_backlog`]).
    shed: Shed,
    /// Client transactions sent over a stream connection (slot, generation): checked every
    /// [`timeouts::STREAM_CHECK_MS`] so that a connection that closed fails its branches at
    /// once instead of after Timer B.
    stream_branches: Vec<(u32, u32)>,
    next_stream_check_ms: u64,
    /// The farm generation last seen, and when the farm next has work (see farm.rs).
    farm_gen: u64,
    farm_due_ms: u64,
    /// NAT keepalives: the cursor over this worker's share of the location table and the
    /// flows owing an answer.
    keepalive: keepalive::Keepalive,
}

/// Load shedding level (see [`Core::set_backlog`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Everything is processed.
    Off,
    /// New requests without credentials get 503: no new flow starts, flows already
    /// challenged (their request with credentials) complete.
    NewFlows,
    /// Every new request from a phone gets 503.
    All,
}

/// Capacity reserved for every outgoing message buffer.
const OUT_CAPACITY: usize = 65_536;

impl Core {
    pub fn new(cfg: Arc<CoreConfig>, ports: Ports, worker: u16, upstream: SocketAddr) -> Self {
        let parked = request::Parked::new(cfg.max_parked);
        Core {
            resume_buf: Vec::with_capacity(OUT_CAPACITY),
            targets_buf: Vec::with_capacity(4096),
            targets: Vec::with_capacity(txn::MAX_FORKS),
            expired_buf: Vec::new(),
            next_expiry_ms: 0,
            reg_cache: regcache::RegCache::new(cfg.register_cache),
            txns: Transactions::new(cfg.max_transactions, cfg.timers),
            lookups: std::collections::VecDeque::with_capacity(cfg.max_parked.min(4096)),
            parked,
            delayed: delayed::Delayed::new(cfg.max_parked),
            cfg,
            ports,
            worker,
            upstream,
            out: Vec::with_capacity(OUT_CAPACITY),
            extra: Vec::with_capacity(8192),
            next_token: 1,
            stats: Stats::default(),
            shed: Shed::Off,
            stream_branches: Vec::with_capacity(256),
            next_stream_check_ms: 0,
            farm_gen: 0,
            farm_due_ms: 0,
            keepalive: keepalive::Keepalive::new(),
        }
    }

    /// The transport's reading of the received bytes waiting for this worker (its sockets'
    /// queues plus datagrams taken off them and not processed yet), and the smallest
    /// receive buffer among its sockets (0 = unknown). Load shedding in two levels, each
    /// with hysteresis, against the threshold `L` = `[limits] shed_backlog_bytes`, lowered
    /// to a quarter of the smallest receive buffer when that is smaller (a socket drops at
    /// its buffer size, so a higher threshold would never be reached); `L` = 0 disables:
    /// - above `L` ([`Shed::NewFlows`]) new out-of-dialog requests from phones that carry
    ///   no credentials get a stateless 503 + Retry-After, so no new flow starts while the
    ///   ones already challenged (their request with credentials) still complete and the
    ///   work spent on their challenge is not wasted; back to normal below `L / 2`;
    /// - above `2 L` ([`Shed::All`]) every new request from a phone gets 503 before any
    ///   digest work; back to [`Shed::NewFlows`] below `L`.
    pub fn set_backlog(&mut self, backlog_bytes: u64, min_rcvbuf: u64) {
        let mut limit = self.cfg.shed_backlog_bytes;
        if min_rcvbuf > 0 {
            limit = limit.min(min_rcvbuf / 4);
        }
        let b = backlog_bytes;
        let shed = match self.shed {
            _ if limit == 0 => Shed::Off,
            _ if b > limit.saturating_mul(2) => Shed::All,
            _ if b < limit / 2 => Shed::Off,
            Shed::All if b < limit => Shed::NewFlows,
            Shed::Off if b > limit => Shed::NewFlows,
            current => current,
        };
        if shed != self.shed {
            self.shed = shed;
            self.stats.shedding = u64::from(shed != Shed::Off);
            tracing::debug!(
                worker = self.worker,
                backlog_bytes,
                limit,
                ?shed,
                "receive backlog"
            );
        }
    }

    /// The current shedding level (see [`Core::set_backlog`]).
    pub fn shed_level(&self) -> Shed {
        self.shed
    }

    /// Whether new requests from phones are being refused (see [`Core::set_backlog`]).
    pub fn is_shedding(&self) -> bool {
        self.shed != Shed::Off
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The configuration in force.
    pub fn config(&self) -> &Arc<CoreConfig> {
        &self.cfg
    }

    /// Take a reloaded configuration. Transactions, dialogs and parked requests in progress
    /// go on (their timers keep the values they were armed with); new limits apply to new
    /// work. The interfaces cannot change without a restart (the sockets are bound): the
    /// new configuration's are ignored (the caller reports them as needing one).
    pub fn reconfigure(&mut self, mut cfg: Arc<CoreConfig>) {
        if cfg.interfaces != self.cfg.interfaces || cfg.asterisk_side != self.cfg.asterisk_side {
            let c = Arc::make_mut(&mut cfg);
            c.interfaces.clone_from(&self.cfg.interfaces);
            c.asterisk_side = self.cfg.asterisk_side;
        }
        self.txns.configure(cfg.max_transactions, cfg.timers);
        self.parked.set_limit(cfg.max_parked);
        self.delayed.set_limit(cfg.max_parked);
        if cfg.register_cache != self.cfg.register_cache {
            // Losing the cached answers is harmless: a retransmitted REGISTER is then
            // processed again, which the registrar treats as a no-op refresh.
            self.reg_cache = regcache::RegCache::new(cfg.register_cache);
        }
        self.cfg = cfg;
    }

    pub fn worker(&self) -> u16 {
        self.worker
    }

    /// Transactions currently alive (server, client).
    pub fn transactions_in_flight(&self) -> (usize, usize) {
        (self.txns.servers.live(), self.txns.clients.live())
    }

    /// Which worker should process a datagram (the transport's hand-off decision; see
    /// docs/ARCHITECTURE.md). Responses go to the worker named in our Via branch; requests
    /// from Asterisk are spread by a hash of their Call-ID, so one Asterisk does not pin one
    /// core; everything else stays where the kernel put it (`usize::MAX` = this worker): a
    /// phone's retransmissions, CANCEL and ACK come from the same address, so the kernel's
    /// SO_REUSEPORT hash already brings them to the worker holding the transaction.
    pub fn owner(&self, from: Flow, data: &[u8], n_workers: usize) -> usize {
        if from.local == Local::Upstream || n_workers <= 1 {
            // Answers to what this worker sent from its own upstream socket.
            return usize::MAX;
        }
        if data.starts_with(b"SIP/2.0 ") || self.cfg.is_asterisk(from.remote) {
            return owner(data, n_workers);
        }
        usize::MAX
    }

    /// When [`Core::handle_timeout`] should next be called (monotonic ms).
    pub fn poll_timeout(&self) -> Option<u64> {
        Some(self.next_wakeup())
    }

    /// The next credential lookup for the database pool.
    pub fn poll_lookup(&mut self) -> Option<LookupRequest> {
        self.lookups.pop_front()
    }

    /// Whether a new stream connection from `remote` may be kept: not from a banned source,
    /// within its rate (Asterisk and the allow list are exempt).
    pub fn admits_connection(&mut self, now: Now, remote: SocketAddr) -> bool {
        match self.ports.guard.admit(remote.ip(), now.wall_ms) {
            Admission::Admit => true,
            Admission::Banned => {
                self.stats.dropped_banned += 1;
                false
            }
            Admission::Limited => {
                self.stats.dropped_rate_limited += 1;
                false
            }
        }
    }

    /// Process one datagram that came over `from`.
    pub fn handle_datagram(&mut self, now: Now, from: Flow, data: &[u8], tx: &mut dyn Transmit) {
        match self.ports.guard.admit(from.remote.ip(), now.wall_ms) {
            Admission::Admit => {}
            Admission::Banned => {
                self.stats.dropped_banned += 1;
                return;
            }
            Admission::Limited => {
                self.stats.dropped_rate_limited += 1;
                return;
            }
        }
        if data.iter().all(|&b| b == b'\r' || b == b'\n') {
            // RFC 5626 CRLF keep-alive: nothing to do over UDP.
            return;
        }
        if data.starts_with(b"SIP/") {
            self.stats.rx_responses += 1;
            self.on_response(now, from, data, tx);
        } else {
            self.stats.rx_requests += 1;
            self.on_request(now, from, data, tx, None);
        }
    }
}
