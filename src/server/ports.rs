//! The real implementations of the core's ports: digest checks against the credential cache
//! (`auth` + `db`), the location table (`registrar`) and REGISTER forwarding (`asterisk`).
//!
//! These adapters only translate: SIP views into the other layers' plain inputs (unescaping
//! digest parameters into stack buffers, collecting Contact values into a fixed array), and
//! their results into the core's small enums. None of them blocks or allocates on the
//! forwarding path.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::asterisk::RegFwd;
use crate::auth::client::{random_cnonce, ClientRequest};
use crate::auth::{
    compute_client_response, pick_challenge, Authenticator, ClientSecret, DigestInput, Verdict,
};
use crate::core::ports::{ContactTarget, RegisterInput, RegisterReply};
use crate::core::{
    AuthCheck, AuthFailure, AuthPort, Local, LocationPort, RegFwdPort, RegFwdSender,
};
use crate::db::{CredentialCache, Lookup};
use crate::registrar::{ContactInput, RegisterError, RegisterRequest, Registrar, Transport};
use crate::sip::{Contact, DigestCredentials, QStr};

/// Most Contact values one REGISTER may carry.
const MAX_CONTACTS: usize = 16;
/// Most Path values kept per binding.
const MAX_PATH: usize = 8;
/// Longest AOR key (`user@realm`).
const MAX_AOR: usize = 320;

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

/// The registrar's location table; the AOR given to it is `user@realm` (the registrar keys
/// by the user alone unless `[registrar] use_domain`).
pub struct TableLocation {
    pub registrar: Arc<Registrar>,
    pub realm: Box<str>,
}

/// `user@realm` in a stack buffer.
struct AorBuf {
    buf: [u8; MAX_AOR],
    len: usize,
}

impl AorBuf {
    fn new(user: &str, realm: &str) -> Option<AorBuf> {
        let len = user.len() + 1 + realm.len();
        if len > MAX_AOR || user.is_empty() {
            return None;
        }
        let mut buf = [0u8; MAX_AOR];
        buf[..user.len()].copy_from_slice(user.as_bytes());
        buf[user.len()] = b'@';
        buf[user.len() + 1..len].copy_from_slice(realm.as_bytes());
        Some(AorBuf { buf, len })
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

fn reject(e: RegisterError) -> RegisterReply {
    let (code, reason) = e.status();
    let min_expires = match e {
        RegisterError::IntervalTooBrief { min_expires } => Some(min_expires),
        _ => None,
    };
    RegisterReply::Reject {
        code,
        reason,
        min_expires,
    }
}

const BAD_REQUEST: RegisterReply = RegisterReply::Reject {
    code: 400,
    reason: "Bad Request",
    min_expires: None,
};

impl TableLocation {
    /// A REGISTER seen before (a binding carries its Call-ID and CSeq): list the current
    /// bindings, change nothing. Anything else is not a retransmission: challenge.
    fn answer_retransmission(
        &self,
        aor: &str,
        call_id: &str,
        cseq: u32,
        now_ms: u64,
        contact_lines: &mut Vec<u8>,
    ) -> RegisterReply {
        contact_lines.clear();
        let mut granted = 0;
        let mut seen = false;
        self.registrar.lookup(aor, now_ms, |b| {
            seen |= b.call_id == call_id && b.cseq == cseq;
            let left = b.remaining_secs(now_ms);
            granted = granted.max(left);
            contact_lines.extend_from_slice(b"Contact: <");
            contact_lines.extend_from_slice(b.uri.as_bytes());
            let _ = write!(contact_lines, ">;expires={left}\r\n");
        });
        if seen {
            RegisterReply::Ok {
                granted,
                changed: false,
            }
        } else {
            contact_lines.clear();
            RegisterReply::Challenge
        }
    }
}

impl LocationPort for TableLocation {
    fn register(
        &self,
        input: &RegisterInput<'_, '_, '_>,
        now_ms: u64,
        contact_lines: &mut Vec<u8>,
    ) -> RegisterReply {
        let msg = input.msg;
        let Some(aor) = AorBuf::new(input.user, &self.realm) else {
            return BAD_REQUEST;
        };
        let (Ok(call_id), Ok(cseq), Ok(expires_header)) =
            (msg.call_id(), msg.cseq(), msg.expires())
        else {
            return BAD_REQUEST;
        };
        let mut contacts = [ContactInput {
            uri: "",
            expires: None,
            q: None,
        }; MAX_CONTACTS];
        let mut n = 0;
        let mut star = false;
        for c in msg.contacts() {
            match c {
                Ok(Contact::Star) => star = true,
                Ok(Contact::Addr(na)) => {
                    if n == MAX_CONTACTS {
                        return reject(RegisterError::TooManyContacts {
                            max: MAX_CONTACTS as u16,
                        });
                    }
                    // A malformed expires (`-5`) is refused like a malformed Expires.
                    let Ok(expires) = na.expires() else {
                        return BAD_REQUEST;
                    };
                    contacts[n] = ContactInput {
                        uri: na.uri,
                        expires,
                        q: na.q(),
                    };
                    n += 1;
                }
                Err(_) => return BAD_REQUEST,
            }
        }
        let mut path = [""; MAX_PATH];
        let mut n_path = 0;
        for p in msg.paths() {
            let Ok(na) = p else {
                return BAD_REQUEST;
            };
            if n_path < MAX_PATH {
                path[n_path] = msg
                    .buf
                    .get(na.span.range())
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .unwrap_or(na.uri);
                n_path += 1;
            }
        }
        if input.replayed {
            return self.answer_retransmission(
                aor.as_str(),
                call_id,
                cseq.seq,
                now_ms,
                contact_lines,
            );
        }
        let req = RegisterRequest {
            aor: aor.as_str(),
            call_id,
            cseq: cseq.seq,
            expires_header,
            star,
            contacts: &contacts[..n],
            source: input.src,
            transport: Transport::Udp,
            worker: input.worker,
            path: &path[..n_path],
            user_agent: msg.user_agent(),
        };
        match self.registrar.register(&req, now_ms, contact_lines) {
            Ok(outcome) => RegisterReply::Ok {
                granted: outcome.expires,
                changed: outcome.changed,
            },
            // A retransmission of the REGISTER already applied (same Call-ID and CSeq):
            // answer with the current bindings again instead of failing it.
            Err(RegisterError::CSeqOutOfOrder { cseq, stored }) if cseq == stored => {
                self.answer_retransmission(aor.as_str(), call_id, cseq, now_ms, contact_lines)
            }
            Err(e) => reject(e),
        }
    }

    fn lookup(&self, user: &str, now_ms: u64, f: &mut dyn FnMut(&ContactTarget<'_>)) {
        let Some(aor) = AorBuf::new(user, &self.realm) else {
            return;
        };
        self.registrar.lookup(aor.as_str(), now_ms, |b| {
            let mut path = [""; MAX_PATH];
            let mut n = 0;
            for p in b.path {
                if n < MAX_PATH {
                    path[n] = p;
                    n += 1;
                }
            }
            f(&ContactTarget {
                uri: b.uri,
                dst: b.dest,
                sock: Local::Listen(0),
                path: &path[..n],
            });
        });
    }

    fn expire(&self, now_ms: u64, f: &mut dyn FnMut(&str)) {
        self.registrar
            .expire(now_ms, |aor| f(crate::registrar::aor_user(aor)));
    }
}

/// REGISTER forwarding through the `asterisk` policy.
pub struct AsteriskRegFwd {
    pub regfwd: RegFwd,
}

impl AsteriskRegFwd {
    fn send_all(&self, fwd: &crate::asterisk::Forward, user: &str, out: &mut dyn RegFwdSender) {
        // One snapshot of the node list for the whole forward (a reload may swap it).
        let targeting = self.regfwd.targeting();
        for (_, addr) in targeting.target_nodes(fwd) {
            out.send(
                addr,
                &mut |via: SocketAddr, branch: &str, buf: &mut Vec<u8>| {
                    self.regfwd
                        .write_to(&targeting, fwd, user, addr, via, branch, None, buf)
                        .is_ok()
                },
            );
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

    fn on_retry(&self, user: &str, call_id: &str, cseq: u32) {
        self.regfwd
            .retry_cseq(user, call_id, cseq.saturating_sub(1));
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
