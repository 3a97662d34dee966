//! The real implementations of the core's ports that join two layers: digest checks against
//! the credential cache (`auth` + `db`), REGISTER forwarding and the farm (`asterisk`, with
//! the `registrar` for replays) and the guard. The location table's port is the
//! registrar's own SIP edge (`registrar::SipEdge`).
//!
//! These adapters only translate: SIP views into the other layers' plain inputs (unescaping
//! digest parameters into stack buffers, collecting Contact values into a fixed array), and
//! their results into the core's small enums. None of them blocks or allocates on the
//! forwarding path.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::asterisk::{
    Farm, Forward, Outgoing, Pick, RegFwd, RegisterMode, ReplayBatch, Targets, Via,
};
use crate::auth::client::{random_cnonce, ClientRequest};
use crate::auth::{
    compute_client_response, pick_challenge, Authenticator, ClientSecret, DigestInput, Verdict,
};
use crate::core::ports::{RegFwdRequest, SentBy};
use crate::core::{
    Admission, AuthCheck, AuthFailure, AuthPort, FarmPort, FarmSender, GuardPort, NodeAnswer,
    NodePick, Now, RegFwdPort, RegFwdSender,
};
use crate::db::{CredentialCache, Lookup};
use crate::guard::{Admit, Guard};
use crate::sip::{DigestCredentials, QStr};

/// Digest authentication against the credential cache.
pub struct CacheAuth {
    pub authenticator: Authenticator,
    pub cache: Arc<CredentialCache>,
    pub realm: Box<str>,
}

/// Unescape a quoted value into `buf`; `None` when it does not fit or is malformed.
fn unq<'o>(q: &QStr<'_>, buf: &'o mut [u8]) -> Option<&'o str> {
    q.unescape_into(buf).ok()
}

/// A replayed nonce count (checked after the password) is usually a retransmission of a
/// REGISTER answered statelessly: the core may answer it again, never count it as a failure.
fn map_verdict(v: Verdict) -> AuthCheck {
    match v {
        Verdict::Ok => AuthCheck::Ok,
        Verdict::Stale => AuthCheck::Challenge { stale: true },
        Verdict::WrongPassword => AuthCheck::Failed(AuthFailure::WrongPassword),
        Verdict::UriMismatch => AuthCheck::Failed(AuthFailure::UriMismatch),
        Verdict::Malformed => AuthCheck::Failed(AuthFailure::Malformed),
        Verdict::Replay => AuthCheck::Replayed,
        _ => AuthCheck::Challenge { stale: false },
    }
}

impl AuthPort for CacheAuth {
    fn write_challenge(
        &self,
        out: &mut Vec<u8>,
        proxy: bool,
        stale: bool,
        now_ms: u64,
        src: IpAddr,
    ) {
        self.authenticator
            .write_challenge(out, proxy, stale, now_ms, src);
    }

    fn check(
        &self,
        creds: &DigestCredentials<'_>,
        method: &str,
        request_uri: &str,
        now_ms: u64,
        src: IpAddr,
    ) -> AuthCheck {
        let mut b_user = [0u8; 256];
        let mut b_realm = [0u8; 256];
        let mut b_nonce = [0u8; 256];
        let mut b_uri = [0u8; 2048];
        let mut b_resp = [0u8; 256];
        let mut b_cnonce = [0u8; 256];
        let mut b_opaque = [0u8; 256];
        let (Some(username), Some(realm), Some(nonce), Some(uri), Some(response)) = (
            unq(&creds.username, &mut b_user),
            unq(&creds.realm, &mut b_realm),
            unq(&creds.nonce, &mut b_nonce),
            unq(&creds.uri, &mut b_uri),
            unq(&creds.response, &mut b_resp),
        ) else {
            return AuthCheck::Challenge { stale: false };
        };
        if realm != &*self.realm {
            // Credentials for someone else's realm: challenge for ours.
            return AuthCheck::Challenge { stale: false };
        }
        let cnonce = match &creds.cnonce {
            Some(q) => match unq(q, &mut b_cnonce) {
                Some(s) => Some(s),
                None => return AuthCheck::Failed(AuthFailure::Malformed),
            },
            None => None,
        };
        let opaque = match &creds.opaque {
            Some(q) => unq(q, &mut b_opaque),
            None => None,
        };
        let input = DigestInput {
            username,
            realm,
            nonce,
            uri,
            response,
            algorithm: creds.algorithm,
            cnonce,
            nc: creds.nc,
            qop: creds.qop,
            opaque,
        };
        match self.cache.lookup(username, now_ms) {
            Lookup::Found(cred) => map_verdict(self.authenticator.verify(
                &input,
                method,
                request_uri,
                &cred,
                now_ms,
                src,
            )),
            Lookup::Unknown => AuthCheck::Failed(AuthFailure::UnknownUser),
            Lookup::Miss => AuthCheck::Lookup,
        }
    }

    fn user_known(&self, user: &str, now_ms: u64) -> bool {
        matches!(self.cache.lookup(user, now_ms), Lookup::Found(_))
    }

    fn answer_challenge(
        &self,
        user: &str,
        challenges: &[&[u8]],
        proxy: bool,
        method: &str,
        uri: &str,
        out: &mut Vec<u8>,
    ) -> bool {
        let values = challenges
            .iter()
            .filter_map(|c| std::str::from_utf8(c).ok());
        let Some(ch) = pick_challenge(values) else {
            return false;
        };
        let Lookup::Found(cred) = self.cache.lookup(user, crate::db::system_now_ms()) else {
            return false;
        };
        let Ok(cnonce) = random_cnonce() else {
            return false;
        };
        let start = out.len();
        out.extend_from_slice(if proxy {
            b"Proxy-Authorization: "
        } else {
            b"Authorization: "
        });
        let req = ClientRequest {
            username: user,
            method,
            uri,
            cnonce: cnonce.as_str(),
            nc: 1,
        };
        let secret = ClientSecret::Stored {
            cred: &cred,
            realm: &self.realm,
        };
        if compute_client_response(&ch, secret, &req, out).is_err() {
            out.truncate(start);
            return false;
        }
        out.extend_from_slice(b"\r\n");
        true
    }
}

/// REGISTER forwarding through the `asterisk` policy, to the nodes the farm says are up.
pub struct AsteriskRegFwd {
    pub regfwd: RegFwd,
    pub farm: Arc<Farm>,
}

/// `fwd`'s REGISTER for `user` to `node`, as the core sends it.
fn request<'a>(fwd: &'a Forward, node: SocketAddr, user: &'a str) -> RegFwdRequest<'a> {
    let o = fwd.to(node, user);
    RegFwdRequest {
        node,
        user,
        call_id: o.call_id,
        from_tag: o.from_tag,
        cseq: o.cseq,
        expires: o.expires,
    }
}

impl AsteriskRegFwd {
    /// Every node that is not down, or (`hash` mode) the user's best-ranked such node:
    /// forwarded REGISTERs never go to a node that is down (it gets them replayed when it
    /// comes back).
    fn send_all(&self, fwd: &Forward, user: &str, out: &mut dyn RegFwdSender) {
        match fwd.targets {
            Targets::All => self
                .farm
                .for_each_up(|node| out.send(&request(fwd, node, user))),
            Targets::One(_) => {
                if let Some(node) = self.farm.register_node(user) {
                    out.send(&request(fwd, node, user));
                }
            }
        }
    }
}

impl RegFwdPort for AsteriskRegFwd {
    fn on_saved(
        &self,
        user: &str,
        granted: u32,
        changed: bool,
        now_ms: u64,
        out: &mut dyn RegFwdSender,
    ) {
        if let Some(fwd) = self.regfwd.on_register(user, granted, changed, now_ms) {
            self.send_all(&fwd, user, out);
        }
    }

    fn on_expired(&self, user: &str, _now_ms: u64, out: &mut dyn RegFwdSender) {
        if let Some(fwd) = self.regfwd.on_aor_empty(user) {
            self.send_all(&fwd, user, out);
        }
    }

    fn write(
        &self,
        req: &RegFwdRequest<'_>,
        via: &SentBy<'_>,
        branch: &str,
        authorization: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> bool {
        let o = Outgoing {
            node: req.node,
            user: req.user,
            call_id: req.call_id,
            from_tag: req.from_tag,
            cseq: req.cseq,
            expires: req.expires,
        };
        let via = Via {
            transport: via.transport,
            host: via.host,
            port: via.port,
        };
        match self.regfwd.write(&o, via, branch, authorization, out) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(user = req.user, error = %e, "cannot write the REGISTER for Asterisk");
                false
            }
        }
    }

    fn retry_cseq(&self, user: &str, call_id: &str, cseq: u32) -> u32 {
        self.regfwd.retry_cseq(user, call_id, cseq)
    }

    fn on_result(
        &self,
        user: &str,
        call_id: &str,
        node: SocketAddr,
        code: u16,
        granted: Option<u32>,
    ) {
        if (200..300).contains(&code) {
            // Asterisk may grant less than asked (PJSIP maximum_expiration): the throttle
            // must refresh before that lapses.
            if let Some(g) = granted {
                self.regfwd.on_asterisk_ok(user, call_id, g);
            }
        } else {
            tracing::warn!(user, %node, code, "forwarded REGISTER failed");
            self.regfwd.on_failed(user, call_id);
        }
    }
}

/// The farm as the core's port, with what replays need: the location table (which users
/// a node should hold, with their remaining expiry) and REGFWD (each user's Call-ID and
/// CSeq).
pub struct AsteriskFarm {
    pub farm: Arc<Farm>,
    pub regfwd: Arc<AsteriskRegFwd>,
    pub registrar: Arc<crate::registrar::Registrar>,
}

impl AsteriskFarm {
    /// Send one replay batch: the users of the next page of the location table that
    /// `batch.node` should hold (all, or in `hash` mode those ranking it first), each with
    /// its longest remaining expiry.
    fn replay(&self, batch: &ReplayBatch, now_wall_ms: u64, out: &mut dyn FarmSender) {
        let hash = self.farm.node_set().settings().register_mode == RegisterMode::Hash;
        let mut users: Vec<(String, u32)> = Vec::new();
        let page = self.registrar.list(
            batch.after.as_deref(),
            batch.limit,
            now_wall_ms,
            |key, b| {
                let user = crate::registrar::aor_user(key);
                let secs = b.remaining_secs(now_wall_ms);
                match users.last_mut() {
                    Some((u, e)) if u == user => *e = (*e).max(secs),
                    _ => users.push((user.to_owned(), secs)),
                }
            },
        );
        let mut sent = 0;
        for (user, expires) in users {
            if expires == 0 || (hash && self.farm.register_node(&user) != Some(batch.node)) {
                continue;
            }
            let fwd = self.regfwd.regfwd.on_replay(&user, expires);
            out.register(&request(&fwd, batch.node, &user));
            sent += 1;
        }
        self.farm.replay_done(batch.node, page.next, sent);
    }
}

impl FarmPort for AsteriskFarm {
    fn affinity(&self, user: &str, call_id: &str, subscription: bool) -> u64 {
        self.farm.key(user, call_id, subscription)
    }

    fn pick(&self, key: u64, tried: u64, now_ms: u64) -> NodePick {
        match self.farm.pick(key, tried, now_ms) {
            Pick::Node { index, addr } => NodePick::Node {
                index: u8::try_from(index).unwrap_or(u8::MAX),
                addr,
            },
            Pick::Busy { retry_after_secs } => NodePick::Busy { retry_after_secs },
            Pick::NoNode => NodePick::NoNode,
        }
    }

    fn generation(&self) -> u64 {
        self.farm.generation()
    }

    fn is_down(&self, node: SocketAddr) -> bool {
        self.farm.is_down(node)
    }

    fn on_answer(&self, a: &NodeAnswer, now_ms: u64) {
        self.farm.on_answer(
            a.node,
            a.code,
            a.first_answer_ms,
            a.retry_after_secs,
            now_ms,
        );
    }

    fn on_ping_answer(&self, node: SocketAddr, seq: u32, code: u16, now_ms: u64) {
        self.farm.on_probe_answer(node, seq, code, now_ms);
    }

    fn poll(&self, now: Now, out: &mut dyn FarmSender) -> u64 {
        self.farm
            .due_probes(now.mono_ms, |node, seq| out.ping(node, seq));
        if let Some(batch) = self.farm.replay_claim(now.mono_ms) {
            self.replay(&batch, now.wall_ms, out);
        }
        self.farm.next_due()
    }
}

/// The guard as the core's port.
impl GuardPort for Guard {
    fn admit(&self, ip: IpAddr, now_ms: u64) -> Admission {
        if self.is_banned(ip, now_ms) {
            return Admission::Banned;
        }
        match Guard::admit(self, ip, now_ms) {
            Admit::Ok => Admission::Admit,
            Admit::Limited => Admission::Limited,
        }
    }
    fn is_scanner(&self, user_agent: &[u8]) -> bool {
        Guard::is_scanner(self, user_agent)
    }
    fn is_exempt(&self, ip: IpAddr) -> bool {
        Guard::is_exempt(self, ip)
    }
    fn on_auth_success(&self, ip: IpAddr, user: &str, now_ms: u64) {
        Guard::on_auth_success(self, ip, user, now_ms);
    }
    fn on_auth_failure(&self, ip: IpAddr, user: &str, now_ms: u64) -> bool {
        Guard::on_auth_failure(self, ip, user, now_ms)
    }
}
