//! The sans-IO proxy core (quinn-proto style): one [`Core`] per worker.
//!
//! Data flow: the I/O shell hands every datagram to [`Core::handle_datagram`] with the time,
//! the socket it arrived on and its source; the core parses it (`sip`), decides, and writes
//! whatever must go out through the [`Transmit`] sink it was given. It never reads a clock and
//! never touches a socket: the shell asks [`Core::poll_timeout`] when to call
//! [`Core::handle_timeout`], and drains [`Core::poll_lookup`] for credential lookups that must
//! go to the database pool; their answers come back through [`Core::handle_lookup`].
//!
//! What lives where:
//! - `request.rs`: a request's path (sanity, retransmission, CANCEL, auth, routing);
//! - `route.rs`: stateful forwarding to Asterisk or to registered contacts, in-dialog routing;
//! - `response.rs`: responses from downstream, best-response selection, ACK of non-2xx;
//! - `timeouts.rs`: the §17 timers; `register.rs`: REGISTER and forwarding it to Asterisk;
//! - `txn.rs`, `timer.rs`, `branch.rs`: transaction slabs, the timer heap, branch values;
//! - `ports.rs`: the traits through which auth, location and REGFWD plug in.

mod branch;
mod build;
mod dialog_token;
mod nat;
pub mod ports;
mod regcache;
mod register;
mod request;
mod response;
mod route;
mod timeouts;
mod timer;
mod txn;

#[doc(hidden)]
pub mod testing;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

pub use branch::{owner, parse_branch, write_branch, OurBranch, BRANCH_PREFIX};
pub use ports::{AuthCheck, AuthFailure, AuthPort, LocationPort, Ports, RegFwdPort, RegFwdSender};

use crate::config::{Config, MatchMode, TimerConfig};
use timer::TimerQueue;
use txn::Transactions;

/// Which of this worker's sockets a datagram arrived on or leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Local {
    /// The worker's SO_REUSEPORT socket for listen address `i` (shared port with all workers).
    Listen(u8),
    /// The worker's own upstream socket, used towards Asterisk.
    Upstream,
}

/// Where the core sends bytes. The I/O shell's outbox implements it; tests record.
pub trait Transmit {
    fn send(&mut self, sock: Local, dst: SocketAddr, bytes: &[u8]);
}

/// A credential lookup the shell must hand to the database pool.
#[derive(Debug, Clone, Copy)]
pub struct LookupRequest {
    pub token: u64,
    user: [u8; MAX_USER_LEN],
    user_len: u8,
}

/// Longest user name the proxy authenticates.
pub const MAX_USER_LEN: usize = 128;

impl LookupRequest {
    pub fn user(&self) -> &str {
        std::str::from_utf8(&self.user[..usize::from(self.user_len)]).unwrap_or("")
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

/// Everything a worker's core needs to know that does not change per message.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub listen: Vec<SocketAddr>,
    /// Record-Route URI per listen address: `sip:ip:port;lr`.
    pub record_route: Vec<String>,
    pub local_domains: Vec<String>,
    pub asterisk: Vec<SocketAddr>,
    pub match_mode: MatchMode,
    pub advertise: SocketAddr,
    pub realm: String,
    pub timers: TimerConfig,
    pub max_message_bytes: usize,
    pub max_transactions: usize,
    pub max_parked: usize,
    /// REGISTER responses kept per worker for retransmissions.
    pub register_cache: usize,
    pub n_workers: usize,
    /// The digest user must be the From user of every request from a phone (the To user is
    /// always checked for REGISTER).
    pub check_from_user: bool,
    /// Key of the Record-Route tokens (see `dialog_token.rs`).
    pub dialog_key: dialog_token::DialogKey,
    /// Receive backlog (bytes) above which new requests from phones get 503 (0 = never);
    /// see [`Core::set_backlog`].
    pub shed_backlog_bytes: u64,
}

/// The configuration the workers' cores should run with: a reload publishes a new one and
/// bumps the generation; each worker compares the generation (one relaxed load) before its
/// work and takes the new configuration when it changed.
#[derive(Debug)]
pub struct SharedConfig {
    generation: AtomicU64,
    current: Mutex<Arc<CoreConfig>>,
}

impl SharedConfig {
    pub fn new(cfg: Arc<CoreConfig>) -> Self {
        SharedConfig {
            generation: AtomicU64::new(0),
            current: Mutex::new(cfg),
        }
    }

    /// The generation of the configuration published last.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The configuration published last, and its generation.
    pub fn current(&self) -> (u64, Arc<CoreConfig>) {
        let cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        (self.generation.load(Ordering::Acquire), cur.clone())
    }

    /// Publish `cfg` to every worker (they pick it up at their next datagram, wake or timer).
    pub fn publish(&self, cfg: Arc<CoreConfig>) {
        let mut cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        *cur = cfg;
        self.generation.fetch_add(1, Ordering::Release);
    }
}

impl CoreConfig {
    pub fn from_config(cfg: &Config, n_workers: usize) -> Self {
        let listen = cfg.listen.udp.clone();
        let record_route = listen.iter().map(|a| format!("sip:{a};lr")).collect();
        let mut local_domains = cfg.domain.local.clone();
        for a in listen.iter().chain(std::iter::once(&cfg.advertise())) {
            local_domains.push(a.ip().to_string());
            local_domains.push(a.to_string());
        }
        local_domains.push(cfg.domain.realm.clone());
        CoreConfig {
            listen,
            record_route,
            local_domains,
            asterisk: cfg.asterisk.nodes.clone(),
            match_mode: cfg.asterisk.match_mode,
            advertise: cfg.advertise(),
            realm: cfg.domain.realm.clone(),
            timers: cfg.timers,
            max_message_bytes: cfg.limits.max_message_bytes,
            max_transactions: cfg.limits.max_transactions_per_worker,
            max_parked: cfg.limits.max_parked_per_worker,
            register_cache: cfg.limits.register_cache_per_worker,
            n_workers: n_workers.max(1),
            check_from_user: cfg.auth.check_from_user,
            dialog_key: dialog_token::DialogKey::new(&cfg.auth.nonce_secret),
            shed_backlog_bytes: cfg.limits.shed_backlog_bytes,
        }
    }

    /// The Record-Route URI this proxy writes for dialogs of `call_id` arriving on listen
    /// address `i` (with its token; for tests and tools that build in-dialog requests).
    pub fn dialog_route(&self, i: usize, call_id: &str) -> String {
        let base = self.record_route.get(i).map(String::as_str).unwrap_or("");
        dialog_token::RecordRoute::new(base, &self.dialog_key, call_id)
            .as_str()
            .to_owned()
    }

    /// How long a server transaction stays after its final response `code`: an INVITE
    /// answered with a non-2xx waits up to 64·T1 for the ACK (Timer H, retransmitting);
    /// otherwise it only absorbs retransmissions of the request, for
    /// `[timers] server_linger_ms` (RFC 3261's Timer J / RFC 6026's Timer L are 64·T1; like
    /// Kamailio's `wt_timer` it is kept short so that finished calls do not fill the
    /// transaction table).
    pub fn server_linger_ms(&self, invite: bool, code: u16) -> u64 {
        if invite && code >= 300 {
            64 * self.timers.t1_ms
        } else {
            self.timers.server_linger_ms
        }
    }

    pub fn is_asterisk(&self, src: SocketAddr) -> bool {
        self.asterisk.iter().any(|n| match self.match_mode {
            MatchMode::IpPort => {
                *n == src || (crate::config::same_ip(n.ip(), src.ip()) && n.port() == src.port())
            }
            MatchMode::Ip => crate::config::same_ip(n.ip(), src.ip()),
        })
    }

    /// Index of the Asterisk node at `dst`, if it is one.
    pub fn asterisk_index(&self, dst: SocketAddr) -> Option<usize> {
        self.asterisk.iter().position(|n| *n == dst)
    }

    /// Whether a request-URI host (with optional port) names this proxy or a local domain.
    pub fn is_local_host(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if self
            .local_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(host))
        {
            return match port {
                None => true,
                Some(p) => self.is_our_port(host, p) || !self.is_our_ip(host),
            };
        }
        false
    }

    fn is_our_ip(&self, host: &str) -> bool {
        host.parse::<IpAddr>()
            .map(|ip| {
                self.listen
                    .iter()
                    .chain([&self.advertise])
                    .any(|a| a.ip() == ip)
            })
            .unwrap_or(false)
    }

    fn is_our_port(&self, host: &str, port: u16) -> bool {
        host.parse::<IpAddr>()
            .map(|ip| {
                self.listen
                    .iter()
                    .chain([&self.advertise])
                    .any(|a| a.ip() == ip && a.port() == port)
            })
            .unwrap_or(true)
    }

    /// Whether a URI host:port is this proxy itself (an address we listen on).
    pub fn is_us(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let Ok(ip) = host.parse::<IpAddr>() else {
            return false;
        };
        let port = port.unwrap_or(5060);
        self.listen
            .iter()
            .chain([&self.advertise])
            .any(|a| a.ip() == ip && a.port() == port)
    }
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
}

/// One worker's proxy state machine.
pub struct Core {
    cfg: Arc<CoreConfig>,
    ports: Ports,
    worker: u16,
    /// This worker's upstream socket address (Via sent-by towards Asterisk).
    upstream: SocketAddr,
    txns: Transactions,
    timers: TimerQueue,
    parked: request::Parked,
    lookups: std::collections::VecDeque<LookupRequest>,
    /// Output buffer for the message being built.
    out: Vec<u8>,
    /// Scratch for header lines (challenges, contacts, extra headers).
    extra: Vec<u8>,
    next_token: u64,
    stats: Stats,
    /// Our Via hosts, formatted once: per listen address, and the upstream socket's.
    listen_hosts: Vec<String>,
    upstream_host: String,
    /// Reused buffers: a resumed request, collected contacts, expired users.
    resume_buf: Vec<u8>,
    targets_buf: Vec<u8>,
    targets: Vec<route::TargetRec>,
    expired_buf: Vec<u8>,
    next_expiry_ms: u64,
    /// Final responses to recent REGISTERs, for their retransmissions.
    reg_cache: regcache::RegCache,
    /// Which new requests from phones get 503 (receive backlog too high,
    /// [`Core::set_backlog`]).
    shed: Shed,
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

/// An IP as it appears in a Via sent-by or URI host (IPv6 in brackets).
fn host_string(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Capacity reserved for every outgoing message buffer.
const OUT_CAPACITY: usize = 65_536;

impl Core {
    pub fn new(cfg: Arc<CoreConfig>, ports: Ports, worker: u16, upstream: SocketAddr) -> Self {
        let parked = request::Parked::new(cfg.max_parked);
        let listen_hosts = cfg.listen.iter().map(|a| host_string(a.ip())).collect();
        Core {
            listen_hosts,
            upstream_host: host_string(upstream.ip()),
            resume_buf: Vec::with_capacity(OUT_CAPACITY),
            targets_buf: Vec::with_capacity(4096),
            targets: Vec::with_capacity(txn::MAX_FORKS),
            expired_buf: Vec::new(),
            next_expiry_ms: 0,
            reg_cache: regcache::RegCache::new(cfg.register_cache),
            txns: Transactions::new(cfg.max_transactions),
            timers: TimerQueue::with_capacity(cfg.max_transactions.min(65_536) * 2),
            lookups: std::collections::VecDeque::with_capacity(cfg.max_parked.min(4096)),
            parked,
            cfg,
            ports,
            worker,
            upstream,
            out: Vec::with_capacity(OUT_CAPACITY),
            extra: Vec::with_capacity(8192),
            next_token: 1,
            stats: Stats::default(),
            shed: Shed::Off,
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
    /// work. The listen addresses cannot change without a restart: the new configuration's
    /// are ignored (the caller reports them as needing one).
    pub fn reconfigure(&mut self, mut cfg: Arc<CoreConfig>) {
        if cfg.listen != self.cfg.listen {
            let c = Arc::make_mut(&mut cfg);
            c.listen.clone_from(&self.cfg.listen);
            c.record_route.clone_from(&self.cfg.record_route);
        }
        self.txns.set_limit(cfg.max_transactions);
        self.parked.set_limit(cfg.max_parked);
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
    pub fn owner(
        &self,
        on_upstream: bool,
        src: SocketAddr,
        data: &[u8],
        n_workers: usize,
    ) -> usize {
        if on_upstream || n_workers <= 1 {
            // Answers to what this worker sent from its own upstream socket.
            return usize::MAX;
        }
        if data.starts_with(b"SIP/2.0 ") || self.cfg.is_asterisk(src) {
            return owner(data, n_workers);
        }
        usize::MAX
    }

    /// When [`Core::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        Some(self.next_wakeup())
    }

    /// The next credential lookup for the database pool.
    pub fn poll_lookup(&mut self) -> Option<LookupRequest> {
        self.lookups.pop_front()
    }

    /// Process one datagram.
    pub fn handle_datagram(
        &mut self,
        now_ms: u64,
        sock: Local,
        src: SocketAddr,
        data: &[u8],
        tx: &mut dyn Transmit,
    ) {
        let ip = src.ip();
        if self.ports.guard.is_banned(ip, now_ms) {
            self.stats.dropped_banned += 1;
            return;
        }
        if self.ports.guard.admit(ip, now_ms) == crate::guard::Admit::Limited {
            self.stats.dropped_rate_limited += 1;
            return;
        }
        if data.iter().all(|&b| b == b'\r' || b == b'\n') {
            // RFC 5626 CRLF keep-alive: nothing to do over UDP.
            return;
        }
        if data.starts_with(b"SIP/") {
            self.stats.rx_responses += 1;
            self.on_response(now_ms, src, data, tx);
        } else {
            self.stats.rx_requests += 1;
            self.on_request(now_ms, sock, src, data, tx, None);
        }
    }
}
