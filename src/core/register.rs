//! REGISTER from an authenticated phone (RFC 3261 §10.3) and the REGISTERs the proxy sends to
//! Asterisk afterwards (the seed's REGFWD), as client transactions of the upstream socket.
//!
//! The phone's REGISTER is answered statelessly, like Kamailio's `save()` + `sl_send_reply`:
//! the registrar treats a retransmission (same Call-ID and CSeq) as a no-op that lists the
//! current bindings, so no transaction has to be kept for 32 s per registration.

use std::io::Write;
use std::net::SocketAddr;

use crate::sip::{HeaderName, Message, EMPTY_HEADER, MAX_HEADERS};

use super::branch::{write_branch, OurBranch};
use super::build::write_http_date;
use super::ports::{RegFwdSender, RegisterInput, RegisterReply};
use super::request::ReqCtx;
use super::timer::TimerKind;
use super::txn::{ClientState, Purpose};
use super::{Core, Local, Transmit, MAX_USER_LEN};

impl Core {
    pub(super) fn on_register(
        &mut self,
        ctx: &ReqCtx<'_>,
        msg: &Message<'_, '_>,
        user: &str,
        replayed: bool,
        tx: &mut dyn Transmit,
    ) {
        // The AOR being registered must be the authenticated user's own.
        let to_user_ok = msg
            .to()
            .ok()
            .and_then(|t| t.uri().ok())
            .is_some_and(|u| u.user == Some(user));
        if !to_user_ok {
            self.stats.auth_failed += 1;
            self.reply(
                msg,
                ctx.src,
                ctx.sock,
                403,
                "Forbidden (To user is not the authenticated user)",
                false,
                tx,
            );
            return;
        }
        self.extra.clear();
        let input = RegisterInput {
            msg,
            user,
            src: ctx.src,
            sock: ctx.sock,
            worker: self.worker,
            replayed,
        };
        let reply = self
            .ports
            .location
            .register(&input, ctx.now, &mut self.extra);
        match reply {
            RegisterReply::Ok { granted, changed } => {
                self.stats.registrations += 1;
                self.extra.extend_from_slice(b"Date: ");
                write_http_date(ctx.now, &mut self.extra);
                self.extra.extend_from_slice(b"\r\n");
                self.reply(msg, ctx.src, ctx.sock, 200, "OK", true, tx);
                self.reg_cache
                    .insert(ctx.key, ctx.via_id, &self.out, ctx.now);
                if replayed {
                    return;
                }
                let regfwd = self.ports.regfwd.clone();
                let mut out = RegFwdOut {
                    core: self,
                    tx,
                    now: ctx.now,
                    user,
                };
                regfwd.on_saved(user, granted, changed, ctx.now, &mut out);
            }
            RegisterReply::Challenge => self.challenge(ctx, msg, false, false, tx),
            RegisterReply::Reject {
                code,
                reason,
                min_expires,
            } => {
                self.extra.clear();
                if let Some(m) = min_expires {
                    self.extra.extend_from_slice(b"Min-Expires: ");
                    self.extra
                        .extend_from_slice(super::build::itoa_buf(m).as_bytes());
                    self.extra.extend_from_slice(b"\r\n");
                }
                self.reply(
                    msg,
                    ctx.src,
                    ctx.sock,
                    code,
                    reason,
                    min_expires.is_some(),
                    tx,
                );
            }
        }
    }

    /// Send one REGISTER for `user` to the Asterisk node at `dst` as a new client
    /// transaction; `write` builds it given our Via sent-by and branch.
    fn send_regfwd(
        &mut self,
        now: u64,
        user: &str,
        dst: SocketAddr,
        challenged: bool,
        write: &mut dyn FnMut(SocketAddr, &str, &mut Vec<u8>) -> bool,
        tx: &mut dyn Transmit,
    ) {
        let purpose = Purpose::RegFwd { challenged };
        let Some((slot, gen)) = self.txns.new_client(false, purpose, dst, Local::Upstream) else {
            self.stats.dropped_overload += 1;
            self.stats.regfwd_failed += 1;
            return;
        };
        let branch = write_branch(&OurBranch {
            worker: self.worker,
            slot,
            gen,
            loop_hash: 0,
        });
        let Some(ct) = self.txns.clients.get_mut(slot) else {
            return;
        };
        ct.request.clear();
        if !write(self.upstream, branch.as_str(), &mut ct.request) {
            self.txns.free_client(slot);
            self.stats.regfwd_failed += 1;
            return;
        }
        ct.aux.clear();
        ct.aux.extend_from_slice(user.as_bytes());
        tx.send(Local::Upstream, dst, &ct.request);
        self.stats.regfwd_sent += 1;
        let t1 = self.cfg.timers.t1_ms;
        ct.retransmit_ms = t1;
        self.timers
            .arm(now + t1, slot, gen, TimerKind::ClientRetransmit);
        self.timers
            .arm(now + 64 * t1, slot, gen, TimerKind::ClientTimeout);
    }

    /// A response to a forwarded REGISTER: answer one challenge with the user's cached
    /// credentials (same Call-ID, CSeq + 1), report everything else.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_regfwd_response(
        &mut self,
        now: u64,
        slot: u32,
        challenged: bool,
        msg: &Message<'_, '_>,
        code: u16,
        tx: &mut dyn Transmit,
    ) {
        let t2 = self.cfg.timers.t2_ms;
        let Some(ct) = self.txns.clients.get_mut(slot) else {
            return;
        };
        if code < 200 {
            ct.state = ClientState::Proceeding;
            ct.retransmit_ms = t2;
            return;
        }
        let mut user_buf = [0u8; MAX_USER_LEN];
        let n = ct.aux.len().min(MAX_USER_LEN);
        user_buf[..n].copy_from_slice(&ct.aux[..n]);
        let user = std::str::from_utf8(&user_buf[..n]).unwrap_or("");
        let node = ct.dst;
        // The request we sent: its Call-ID, CSeq and request-URI.
        let prev = std::mem::take(&mut ct.request);
        self.txns.free_client(slot);
        let mut hdrs = [EMPTY_HEADER; MAX_HEADERS];
        let parsed = Message::parse_datagram(&prev, &mut hdrs).ok();
        let call_id = parsed.as_ref().and_then(|m| m.call_id().ok()).unwrap_or("");

        if (code == 401 || code == 407) && !challenged {
            let proxy = code == 407;
            let name = if proxy {
                HeaderName::ProxyAuthenticate
            } else {
                HeaderName::WwwAuthenticate
            };
            let uri = parsed.as_ref().and_then(|m| m.request_uri()).unwrap_or("");
            let mut auth = std::mem::take(&mut self.extra);
            auth.clear();
            let mut values: [&[u8]; 4] = [b""; 4];
            let mut n = 0;
            for h in msg.headers_named(name) {
                if n < values.len() {
                    values[n] = h.value;
                    n += 1;
                }
            }
            let answered = n > 0
                && self.ports.auth.answer_challenge(
                    user,
                    &values[..n],
                    proxy,
                    "REGISTER",
                    uri,
                    &mut auth,
                );
            let next_cseq = parsed
                .as_ref()
                .and_then(|m| m.cseq().ok())
                .map_or(1, |c| c.seq.wrapping_add(1).max(1));
            if answered {
                if let Some(m) = &parsed {
                    self.ports.regfwd.on_retry(user, call_id, next_cseq);
                    self.send_regfwd(
                        now,
                        user,
                        node,
                        true,
                        &mut |via, branch, out| {
                            rewrite_for_retry(m, via, branch, next_cseq, &auth, out)
                        },
                        tx,
                    );
                }
            } else {
                self.stats.regfwd_failed += 1;
                tracing::warn!(
                    user,
                    code,
                    "Asterisk challenged a forwarded REGISTER and it cannot be answered"
                );
                self.ports.regfwd.on_result(user, call_id, node, code, None);
            }
            self.extra = auth;
            self.put_back_request(slot, prev);
            return;
        }
        let mut granted = None;
        if (200..300).contains(&code) {
            self.stats.regfwd_ok += 1;
            granted = granted_expiry(msg);
        } else {
            self.stats.regfwd_failed += 1;
            tracing::warn!(user, code, %node, "Asterisk refused a forwarded REGISTER");
        }
        self.ports
            .regfwd
            .on_result(user, call_id, node, code, granted);
        self.put_back_request(slot, prev);
    }

    /// Return a request buffer taken out of a (now free) slot, keeping its capacity.
    fn put_back_request(&mut self, slot: u32, buf: Vec<u8>) {
        if let Some(ct) = self.txns.clients.get_mut(slot) {
            if ct.request.capacity() < buf.capacity() {
                ct.request = buf;
            }
        }
    }

    /// Drop expired bindings; tell Asterisk about users left with none.
    pub(super) fn expire_bindings(&mut self, now: u64, tx: &mut dyn Transmit) {
        let mut users = std::mem::take(&mut self.expired_buf);
        users.clear();
        self.ports.location.expire(now, &mut |user: &str| {
            users.extend_from_slice(user.as_bytes());
            users.push(b'\n');
        });
        let regfwd = self.ports.regfwd.clone();
        for user in users.split(|&c| c == b'\n').filter(|u| !u.is_empty()) {
            let Ok(user) = std::str::from_utf8(user) else {
                continue;
            };
            let mut out = RegFwdOut {
                core: self,
                tx,
                now,
                user,
            };
            regfwd.on_expired(user, now, &mut out);
        }
        self.expired_buf = users;
    }
}

/// The expiry a registrar granted in its 2xx: the first Contact's `expires`, else the
/// Expires header.
fn granted_expiry(msg: &Message<'_, '_>) -> Option<u32> {
    let from_contact = msg.contacts().find_map(|c| match c {
        Ok(crate::sip::Contact::Addr(na)) => na.expires().ok().flatten(),
        _ => None,
    });
    from_contact.or_else(|| msg.expires().ok().flatten())
}

/// The core as the [`RegFwdSender`] of one user's REGISTERs.
struct RegFwdOut<'c, 't> {
    core: &'c mut Core,
    tx: &'t mut dyn Transmit,
    now: u64,
    user: &'c str,
}

impl RegFwdSender for RegFwdOut<'_, '_> {
    fn send(
        &mut self,
        node: SocketAddr,
        write: &mut dyn FnMut(SocketAddr, &str, &mut Vec<u8>) -> bool,
    ) {
        self.core
            .send_regfwd(self.now, self.user, node, false, write, self.tx);
    }
}

/// The REGISTER `prev` again with a new Via, CSeq `cseq` and the authorization line(s)
/// `auth` in place of any earlier ones.
fn rewrite_for_retry(
    prev: &Message<'_, '_>,
    via: SocketAddr,
    branch: &str,
    cseq: u32,
    auth: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let Some(uri) = prev.request_uri() else {
        return false;
    };
    out.clear();
    out.extend_from_slice(b"REGISTER ");
    out.extend_from_slice(uri.as_bytes());
    out.extend_from_slice(b" SIP/2.0\r\n");
    let _ = write!(out, "Via: SIP/2.0/UDP {via};branch={branch};rport\r\n");
    for h in prev.headers {
        match h.name {
            HeaderName::Via
            | HeaderName::Authorization
            | HeaderName::ProxyAuthorization
            | HeaderName::ContentLength => {}
            HeaderName::CSeq => {
                let _ = write!(out, "CSeq: {cseq} REGISTER\r\n");
            }
            _ => out.extend_from_slice(&prev.buf[h.line.range()]),
        }
    }
    out.extend_from_slice(auth);
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    true
}
