//! The stand-in's registrar, like a chan_sip peer with `host=dynamic`: a REGISTER (optionally
//! after a 401 digest challenge) records `user → Contact`; `Expires: 0` or `Contact: *` removes
//! it. The INVITE path in dial mode looks the callee up here.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;

use super::build::{begin_response, finish, tag_for_branch};
use super::digest;
use super::engine::{hex16, Engine, Outbox};
use super::events::Val;
use super::parse::{uri_addr, uri_of, uri_user, Msg};

/// Where one user is reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The registered Contact URI.
    pub contact: String,
    /// Where calls to the user are sent: the Contact's IP literal, else the REGISTER's source.
    pub target: SocketAddr,
    /// Where the REGISTER came from.
    pub source: SocketAddr,
    pub expires_at_ms: u64,
    /// REGISTERs accepted for this user so far.
    pub count: u64,
}

/// `user → Binding`.
#[derive(Debug, Default)]
pub struct Registry {
    map: HashMap<String, Binding>,
}

impl Registry {
    /// The live binding of `user`.
    pub fn get(&self, user: &str, now_ms: u64) -> Option<&Binding> {
        self.map.get(user).filter(|b| b.expires_at_ms > now_ms)
    }

    /// Every binding, live or expired.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Binding)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn upsert(
        &mut self,
        user: &str,
        contact: &str,
        target: SocketAddr,
        source: SocketAddr,
        expires_at_ms: u64,
    ) {
        if let Some(b) = self.map.get_mut(user) {
            b.contact.clear();
            b.contact.push_str(contact);
            b.target = target;
            b.source = source;
            b.expires_at_ms = expires_at_ms;
            b.count += 1;
        } else {
            let b = Binding {
                contact: contact.to_owned(),
                target,
                source,
                expires_at_ms,
                count: 1,
            };
            self.map.insert(user.to_owned(), b);
        }
    }

    fn remove(&mut self, user: &str) -> bool {
        self.map.remove(user).is_some()
    }
}

/// Outcome of the digest check.
enum AuthCheck {
    Ok,
    Challenge,
    Forbidden,
}

impl Engine {
    /// Sends a 401 (`proxy` false) or 407 digest challenge with a fresh nonce.
    fn challenge(&mut self, src: SocketAddr, msg: &Msg, proxy: bool, out: &mut Outbox) {
        let nonce = self.ids.nonce();
        let realm = &self.cfg.realm;
        let (code, reason, header) = if proxy {
            (407, "Proxy Authentication Required", "Proxy-Authenticate")
        } else {
            (401, "Unauthorized", "WWW-Authenticate")
        };
        let mut tag = [0u8; 16];
        let tag = hex16(tag_for_branch(msg.branch().unwrap_or_default()), &mut tag);
        out.push_with(src, |b| {
            begin_response(b, msg, code, reason, Some(tag));
            let _ = write!(
                b,
                "{header}: Digest algorithm=MD5, realm=\"{realm}\", nonce=\"{nonce}\"\r\n"
            );
            finish(b, None, b"");
        });
    }

    /// `--challenge-calls`: whether a new INVITE or a MESSAGE may proceed; otherwise a 407
    /// (missing/stale credentials) or 403 (wrong password) has been sent.
    pub(super) fn admit_call(
        &mut self,
        src: SocketAddr,
        method: &str,
        msg: &Msg,
        out: &mut Outbox,
    ) -> bool {
        if !self.cfg.challenge_calls {
            return true;
        }
        let user = msg
            .header("From")
            .map(uri_of)
            .and_then(uri_user)
            .unwrap_or_default();
        match self.check_auth(user, msg, "Proxy-Authorization", method) {
            AuthCheck::Ok => true,
            AuthCheck::Challenge => {
                self.stats.call_challenged += 1;
                self.challenge(src, msg, true, out);
                false
            }
            AuthCheck::Forbidden => {
                self.stats.call_forbidden += 1;
                self.respond_stateless(src, msg, 403, "Forbidden", out);
                false
            }
        }
    }
    /// Digest check of `msg` (header `Authorization` or `Proxy-Authorization`) for `user`.
    fn check_auth(&self, user: &str, msg: &Msg, header: &str, method: &str) -> AuthCheck {
        let Some(creds) = msg.header(header).and_then(digest::parse_authorization) else {
            return AuthCheck::Challenge;
        };
        if !self.ids.is_our_nonce(creds.nonce) || creds.realm != self.cfg.realm {
            return AuthCheck::Challenge;
        }
        match self.cfg.password_for(user) {
            Some(pw) if creds.username == user && digest::verify(&creds, method, pw) => {
                AuthCheck::Ok
            }
            _ => AuthCheck::Forbidden,
        }
    }

    pub(super) fn on_register(
        &mut self,
        now_ms: u64,
        src: SocketAddr,
        msg: &Msg,
        out: &mut Outbox,
    ) {
        self.stats.register += 1;
        let user = msg
            .header("To")
            .map(uri_of)
            .and_then(uri_user)
            .unwrap_or_default();
        let contact_hdr = msg.header("Contact").unwrap_or_default();
        let star = contact_hdr.trim() == "*";
        let contact = if star { "" } else { uri_of(contact_hdr) };
        let expires = msg.expires().unwrap_or(self.cfg.default_expires);
        let fields = [
            ("user", Val::Str(user)),
            ("contact", Val::Str(contact_hdr)),
            ("expires", Val::Num(u64::from(expires))),
            ("call_id", Val::Str(msg.call_id().unwrap_or_default())),
        ];
        self.events
            .record(now_ms, "register", src, &fields, Some(msg));
        if user.is_empty() {
            return self.respond_stateless(src, msg, 400, "Bad Request", out);
        }
        let check = if self.cfg.challenge {
            self.check_auth(user, msg, "Authorization", "REGISTER")
        } else {
            AuthCheck::Ok
        };
        match check {
            AuthCheck::Ok => {}
            AuthCheck::Challenge => {
                self.stats.register_challenged += 1;
                return self.challenge(src, msg, false, out);
            }
            AuthCheck::Forbidden => {
                self.stats.register_forbidden += 1;
                return self.respond_stateless(src, msg, 403, "Forbidden", out);
            }
        }
        self.stats.register_ok += 1;
        let mut contact_line = String::new();
        if star || expires == 0 || contact.is_empty() {
            if (star || expires == 0) && self.regs.remove(user) {
                self.stats.unregister += 1;
                self.events
                    .record(now_ms, "unregister", src, &[("user", Val::Str(user))], None);
            } else if !contact.is_empty() || star {
                // Removing a binding that does not exist is still a success.
            } else if let Some(b) = self.regs.get(user, now_ms) {
                // A query (no Contact): list the current binding.
                let left = b.expires_at_ms.saturating_sub(now_ms) / 1000;
                let _ = write!(contact_line, "Contact: <{}>;expires={left}\r\n", b.contact);
            }
        } else {
            let target = uri_addr(contact).unwrap_or(src);
            self.regs.upsert(
                user,
                contact,
                target,
                src,
                now_ms + u64::from(expires) * 1000,
            );
            let _ = write!(
                contact_line,
                "Contact: <{contact}>;expires={expires}\r\nExpires: {expires}\r\n"
            );
        }
        let mut tag = [0u8; 16];
        let tag = hex16(tag_for_branch(msg.branch().unwrap_or_default()), &mut tag);
        out.push_with(src, |b| {
            begin_response(b, msg, 200, "OK", Some(tag));
            b.extend_from_slice(contact_line.as_bytes());
            finish(b, None, b"");
        });
    }
}
