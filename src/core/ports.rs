//! The traits through which the core asks for decisions it does not make itself: credential
//! checks (`auth` + `db`), the location table (`registrar`), forwarded registrations and the
//! Asterisk farm (`asterisk`) and the per-source guard (`guard`). The other layers implement them (the
//! server wires them together); core tests use in-memory ones. Every method is
//! non-blocking: a credential that is not cached answers [`AuthCheck::Lookup`] and the core
//! parks the request. Times passed in are wall-clock milliseconds since the UNIX epoch.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::sip::{DigestCredentials, Message, Transport};

use super::flow::{ConnId, Flow, Now};

/// The outcome of checking a request's digest credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthCheck {
    /// Valid credentials for the user named in them.
    Ok,
    /// Nothing usable (other realm, forged or unknown nonce): challenge.
    Challenge { stale: bool },
    /// Wrong password, unknown user, URI mismatch or malformed credentials: challenge again
    /// and count a failure; the reason is logged.
    Failed(AuthFailure),
    /// Right password, but the nonce count was used before: a retransmission of a request
    /// answered statelessly (REGISTER), or a replay. Not a failure.
    Replayed,
    /// The user is not cached: look it up, then check again.
    Lookup,
    /// The credential store cannot answer now (database down on a miss).
    Unavailable,
}

/// Why credentials were refused, for the log line of a refusal (never holds a secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The response does not match the stored password.
    WrongPassword,
    /// No such user in the credential store.
    UnknownUser,
    /// The digest `uri` does not match the Request-URI under `[auth] uri_check`.
    UriMismatch,
    /// Syntactically broken credentials (nc, cnonce, response length).
    Malformed,
    /// The right password with an expired nonce: challenged again with `stale=true`.
    StaleNonce,
    /// The right password with a nonce count used before (not a REGISTER retransmission).
    Replay,
}

impl AuthFailure {
    /// The reason as logged (`reason=...`).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::WrongPassword => "wrong password",
            AuthFailure::UnknownUser => "unknown user",
            AuthFailure::UriMismatch => "uri mismatch",
            AuthFailure::Malformed => "malformed credentials",
            AuthFailure::StaleNonce => "stale nonce",
            AuthFailure::Replay => "replay",
        }
    }
}

impl std::fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Digest authentication backed by the credential cache.
pub trait AuthPort: Send + Sync {
    /// Append `WWW-Authenticate:` (or `Proxy-Authenticate:` when `proxy`) lines.
    fn write_challenge(
        &self,
        out: &mut Vec<u8>,
        proxy: bool,
        stale: bool,
        now_ms: u64,
        src: IpAddr,
    );
    /// Check credentials for a request.
    fn check(
        &self,
        creds: &DigestCredentials<'_>,
        method: &str,
        request_uri: &str,
        now_ms: u64,
        src: IpAddr,
    ) -> AuthCheck;
    /// Whether `user` is a known user (for 480 vs 404 when it has no binding).
    fn user_known(&self, user: &str, now_ms: u64) -> bool;
    /// Write an `Authorization:`/`Proxy-Authorization:` line answering the best of
    /// `challenges` (the WWW-/Proxy-Authenticate values of Asterisk's 401/407) with `user`'s
    /// cached credentials.
    fn answer_challenge(
        &self,
        user: &str,
        challenges: &[&[u8]],
        proxy: bool,
        method: &str,
        uri: &str,
        out: &mut Vec<u8>,
    ) -> bool;
}

/// What the core knows of a REGISTER once it is authenticated.
pub struct RegisterInput<'a, 'h, 'b> {
    pub msg: &'a Message<'h, 'b>,
    /// The AOR key: the authenticated user.
    pub user: &'a str,
    /// Where the REGISTER came from: the phone's address (after RFC 3581) and the local
    /// socket it reached; requests to the phone go back this way.
    pub from: Flow,
    /// The credentials were valid but replayed: only a retransmission of a REGISTER already
    /// applied (same Call-ID and CSeq as a binding) may be answered, nothing may change.
    pub replayed: bool,
}

/// The registrar's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterReply {
    /// Saved; the caller answers 200 with the Contact lines written. `granted` is the longest
    /// remaining expiry of the AOR's bindings (0: none left); `changed` is false for a pure
    /// refresh.
    Ok { granted: u32, changed: bool },
    /// Refused with this status (400, 403, 423 with Min-Expires, 500).
    Reject {
        code: u16,
        reason: &'static str,
        min_expires: Option<u32>,
    },
    /// A replayed REGISTER that is not a retransmission: challenge again.
    Challenge,
}

/// A registered contact to deliver a request to.
pub struct ContactTarget<'a> {
    /// The Contact URI (becomes the request-URI).
    pub uri: &'a str,
    /// Where to send: the NAT-fixed source address of the REGISTER (or the Contact
    /// itself), from the local socket the phone registered through.
    pub to: Flow,
    /// Path values (name-addrs) to push as Route, in order; possibly empty.
    pub path: &'a [&'a str],
}

/// A binding the keepalive scan found ([`LocationPort::keepalive_scan`]).
pub struct KeepaliveTarget<'a> {
    /// Its user (the AOR's user part).
    pub user: &'a str,
    /// Its Contact URI.
    pub uri: &'a str,
    /// The flow that reaches it: where requests to it go, from the local socket it
    /// registered through (and its connection, on a stream).
    pub to: Flow,
    /// Whether it is behind NAT (its requests go to the REGISTER's source, not its Contact).
    pub nated: bool,
}

/// The location table.
pub trait LocationPort: Send + Sync {
    fn register(
        &self,
        input: &RegisterInput<'_, '_, '_>,
        now_ms: u64,
        contact_lines: &mut Vec<u8>,
    ) -> RegisterReply;
    /// Call `f` for every live binding of `user`, best q first.
    fn lookup(&self, user: &str, now_ms: u64, f: &mut dyn FnMut(&ContactTarget<'_>));
    /// Remove expired bindings; call `f` for each user left with none.
    fn expire(&self, now_ms: u64, f: &mut dyn FnMut(&str));
    /// How many slices the table is cut into for keepalives (0: none to visit).
    fn keepalive_slices(&self) -> u32 {
        0
    }
    /// Call `f` for every live binding in slices `[first, end)` (under the table's read
    /// locks: `f` copies what it needs and returns).
    fn keepalive_scan(
        &self,
        _first: u32,
        _end: u32,
        _now_ms: u64,
        _f: &mut dyn FnMut(&KeepaliveTarget<'_>),
    ) {
    }
    /// Remove `user`'s live bindings reached by `flow` (its phone stopped answering):
    /// how many went, and whether `user` has no live binding left.
    fn remove_flow(&self, _user: &str, _flow: Flow, _now_ms: u64) -> (usize, bool) {
        (0, false)
    }
    /// In a cluster: whether `addr` is another node, whose forwarded requests for this
    /// node's phones are delivered without authentication (`core/peer.rs`). Alone: never.
    fn is_peer(&self, _addr: SocketAddr) -> bool {
        false
    }
    /// In a cluster: like [`LocationPort::lookup`], but only the bindings whose flow this
    /// node holds (never one reached through another node).
    fn lookup_local(&self, user: &str, now_ms: u64, f: &mut dyn FnMut(&ContactTarget<'_>)) {
        self.lookup(user, now_ms, f);
    }
}

/// One REGISTER to send to an Asterisk node, as REGFWD decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegFwdRequest<'a> {
    /// The node (an address, not an index: the node list may be reloaded meanwhile).
    pub node: SocketAddr,
    pub user: &'a str,
    pub call_id: &'a str,
    pub from_tag: &'a str,
    pub cseq: u32,
    pub expires: u32,
}

/// Our Via for a message the proxy sends itself: transport token and sent-by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentBy<'a> {
    /// `UDP`, `TCP`, ...
    pub transport: &'a str,
    /// Host or IP (IPv6 in brackets).
    pub host: &'a str,
    pub port: u16,
}

/// Where a [`RegFwdPort`] sends the REGISTERs it decides on: the core starts one client
/// transaction per call, from this worker's upstream socket.
pub trait RegFwdSender {
    fn send(&mut self, req: &RegFwdRequest<'_>);
}

/// Forwarding registrations to Asterisk (the seed's REGFWD).
pub trait RegFwdPort: Send + Sync {
    /// After a REGISTER was saved (`granted`: the AOR's longest remaining expiry, 0 when it
    /// has no binding left; `changed`: false for a pure refresh): send what is due.
    fn on_saved(
        &self,
        user: &str,
        granted: u32,
        changed: bool,
        now_ms: u64,
        out: &mut dyn RegFwdSender,
    );
    /// After `user` lost its last binding by expiry: the Expires: 0 REGISTERs.
    fn on_expired(&self, user: &str, now_ms: u64, out: &mut dyn RegFwdSender);
    /// Write the REGISTER `req` into `out` (cleared first) with our Via `via` and branch
    /// `branch`, and the `Authorization:` line(s) answering a challenge; the one writer of
    /// forwarded REGISTERs, for the first send and the retry. False when it cannot.
    fn write(
        &self,
        req: &RegFwdRequest<'_>,
        via: &SentBy<'_>,
        branch: &str,
        authorization: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> bool;
    /// Asterisk challenged the REGISTER sent with `cseq`: the CSeq to send it again with
    /// credentials (same Call-ID; later refreshes continue above it).
    fn retry_cseq(&self, user: &str, call_id: &str, cseq: u32) -> u32;
    /// The outcome of a forwarded REGISTER sent to `node`: a final status, or 408 on
    /// timeout; for a 2xx, the expiry Asterisk granted (its Contact's `expires` or its
    /// Expires header).
    fn on_result(
        &self,
        user: &str,
        call_id: &str,
        node: SocketAddr,
        code: u16,
        granted: Option<u32>,
    );
}

/// Where a new call or subscription to Asterisk goes ([`FarmPort::pick`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodePick {
    /// Node number `index` of the farm (its bit goes into the tried mask) at `addr`.
    Node { index: u8, addr: SocketAddr },
    /// Every usable node is overloaded: answer 503 with this Retry-After.
    Busy { retry_after_secs: u32 },
    /// No node is up and undrained, or every one was tried.
    NoNode,
}

/// What an Asterisk node answered to a request the core sent it (back-pressure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeAnswer {
    pub node: SocketAddr,
    pub code: u16,
    /// Milliseconds from the request to its first response, when this is the first.
    pub first_answer_ms: Option<u64>,
    /// The Retry-After of a 503, in seconds.
    pub retry_after_secs: Option<u32>,
}

/// What the farm asks a worker to send from its upstream socket ([`FarmPort::poll`]).
pub trait FarmSender {
    /// An OPTIONS ping to `node`, identified by `seq` (its answer goes to
    /// [`FarmPort::on_ping_answer`] with it).
    fn ping(&mut self, node: SocketAddr, seq: u32);
    /// A REGISTER replayed to a node that missed it (a client transaction like REGFWD's).
    fn register(&mut self, req: &RegFwdRequest<'_>);
}

/// The Asterisk farm, shared by all workers: which node takes a new call or subscription,
/// which nodes are down, and the pings and replayed REGISTERs due.
pub trait FarmPort: Send + Sync {
    /// The affinity key of a request from `user` (the authenticated phone) with
    /// `call_id`; `subscription` for SUBSCRIBE/PUBLISH (always the subscriber).
    fn affinity(&self, user: &str, call_id: &str, subscription: bool) -> u64;
    /// The node for a request with affinity `key`, skipping the farm indices set in `tried`.
    fn pick(&self, key: u64, tried: u64, now_ms: u64) -> NodePick;
    /// Changes whenever a node goes down or up, or the farm is reconfigured: the core then
    /// fails over what waits on nodes now down.
    fn generation(&self) -> u64;
    /// Whether `node` is a farm node that is down.
    fn is_down(&self, node: SocketAddr) -> bool;
    /// A node's first response to a request, or a 503 from it.
    fn on_answer(&self, answer: &NodeAnswer, now_ms: u64);
    /// The final response `code` to ping `seq` sent to `node`.
    fn on_ping_answer(&self, node: SocketAddr, seq: u32, code: u16, now_ms: u64);
    /// Send the pings and replayed REGISTERs due at `now` that fall to this worker;
    /// returns when to call again (monotonic ms).
    fn poll(&self, now: Now, out: &mut dyn FarmSender) -> u64;
}

/// Whether a datagram from a source may be processed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// The source is banned: drop silently.
    Banned,
    /// The source is over its rate: drop silently.
    Limited,
}

/// Per-source protections (rate limits, failed-authentication bans, scanner User-Agents),
/// shared by all workers.
pub trait GuardPort: Send + Sync {
    /// Checked before a datagram is parsed.
    fn admit(&self, ip: IpAddr, now_ms: u64) -> Admission;
    /// Whether a User-Agent is a known scanner's (such requests get no answer).
    fn is_scanner(&self, user_agent: &[u8]) -> bool;
    /// Sources no protection applies to (Asterisk nodes, the allow list).
    fn is_exempt(&self, ip: IpAddr) -> bool;
    fn on_auth_success(&self, ip: IpAddr, user: &str, now_ms: u64);
    /// A failed authentication; true when the source is banned now (send nothing more).
    fn on_auth_failure(&self, ip: IpAddr, user: &str, now_ms: u64) -> bool;
}

/// The transport's stream connections, as far as the core needs to know them: whether one is
/// still open, and which one reaches an address (connection reuse, RFC 5923 §2; RFC 3261
/// §18.2.2). Implemented by the transport's shared connection registry.
pub trait Links: Send + Sync {
    /// Whether `conn` is still open.
    fn is_open(&self, conn: ConnId) -> bool;
    /// An open connection of `transport` from (or to) `remote`.
    fn find(&self, transport: Transport, remote: SocketAddr) -> Option<ConnId>;
}

/// The set of ports one core uses.
#[derive(Clone)]
pub struct Ports {
    pub auth: Arc<dyn AuthPort>,
    pub location: Arc<dyn LocationPort>,
    pub regfwd: Arc<dyn RegFwdPort>,
    /// Rate limits, failed-auth bans, scanner User-Agents (shared by all workers).
    pub guard: Arc<dyn GuardPort>,
    /// Stream connections (open or closed, which one reaches an address).
    pub links: Arc<dyn Links>,
    /// The Asterisk nodes: choice, health, pings, replays (shared by all workers).
    pub farm: Arc<dyn FarmPort>,
    /// Set on shutdown: new requests get 503, running transactions and dialogs go on.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}
