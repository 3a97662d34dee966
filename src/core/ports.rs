//! The traits through which the core asks for decisions it does not make itself: credential
//! checks (`auth` + `db`), the location table (`registrar`) and forwarded registrations
//! (`asterisk`). The server wires the real implementations (`crate::server::ports`); core
//! tests use in-memory ones. Every method is non-blocking: a credential that is not cached
//! answers [`AuthCheck::Lookup`] and the core parks the request.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::sip::{DigestCredentials, Message};

use super::Local;

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
    pub src: SocketAddr,
    pub sock: Local,
    pub worker: u16,
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
    /// Where to send (the NAT-fixed source address of the REGISTER, or the Contact itself).
    pub dst: SocketAddr,
    /// The socket the phone registered through.
    pub sock: Local,
    /// Path values (name-addrs) to push as Route, in order; possibly empty.
    pub path: &'a [&'a str],
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
}

/// Where a [`RegFwdPort`] sends the REGISTERs it decides on: the core starts one client
/// transaction per call, from this worker's upstream socket.
pub trait RegFwdSender {
    /// Send one REGISTER to the Asterisk node at `node`. `write(via, branch, out)` writes the
    /// whole request with a Via of sent-by `via` and branch `branch`; false when it cannot.
    /// (An address, not an index: the node list may be reloaded between two calls.)
    fn send(
        &mut self,
        node: SocketAddr,
        write: &mut dyn FnMut(SocketAddr, &str, &mut Vec<u8>) -> bool,
    );
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
    /// A REGISTER is re-sent with credentials with this CSeq (same Call-ID).
    fn on_retry(&self, user: &str, call_id: &str, cseq: u32);
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

/// The set of ports one core uses.
#[derive(Clone)]
pub struct Ports {
    pub auth: Arc<dyn AuthPort>,
    pub location: Arc<dyn LocationPort>,
    pub regfwd: Arc<dyn RegFwdPort>,
    /// Rate limits, failed-auth bans, scanner User-Agents (shared by all workers).
    pub guard: Arc<crate::guard::Guard>,
    /// Set on shutdown: new requests get 503, running transactions and dialogs go on.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}
