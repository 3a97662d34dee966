//! REGISTER from an authenticated phone (RFC 3261 §10.3) and the REGISTERs the proxy sends to
//! Asterisk afterwards (the seed's REGFWD), as client transactions of the upstream socket.
//!
//! The phone's REGISTER is answered statelessly, like Kamailio's `save()` + `sl_send_reply`:
//! the registrar treats a retransmission (same Call-ID and CSeq) as a no-op that lists the
//! current bindings, so no transaction has to be kept for 32 s per registration.
//!
//! A forwarded REGISTER keeps what REGFWD decided ([`RegFwdCtx`]) with its client
//! transaction; the REGFWD port writes it (once, or again with credentials after Asterisk's
//! 401/407), and hears the outcome.

use crate::sip::{HeaderName, Message};

use super::branch::upstream_branch;
use super::ports::{FarmSender, RegFwdRequest, RegFwdSender, RegisterInput, RegisterReply, SentBy};
use super::request::ReqCtx;
use super::route::sent_by;
use super::text::InlineStr;
use super::txn::{ClientCtx, RegFwdCtx};
use super::{Core, Flow, Local, Now, Transmit};

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
            let reason = "Forbidden (To user is not the authenticated user)";
            self.reply(msg, ctx.from, 403, reason, tx);
            return;
        }
        self.extra.clear();
        let input = RegisterInput {
            msg,
            user,
            from: ctx.from,
            replayed,
        };
        let reply = self
            .ports
            .location
            .register(&input, ctx.now.wall_ms, &mut self.extra);
        match reply {
            RegisterReply::Ok { granted, changed } => {
                self.stats.registrations += 1;
                self.extra.extend_from_slice(b"Date: ");
                crate::util::date::write_rfc1123(ctx.now.wall_ms, &mut self.extra);
                self.extra.extend_from_slice(b"\r\n");
                self.reply_with_extra(msg, ctx.from, 200, "OK", tx);
                self.reg_cache
                    .insert(ctx.key, ctx.via_id, &self.out, ctx.now.mono_ms);
                if replayed {
                    return;
                }
                let regfwd = self.ports.regfwd.clone();
                let mut out = PortOut {
                    core: self,
                    tx,
                    now: ctx.now,
                };
                regfwd.on_saved(user, granted, changed, ctx.now.wall_ms, &mut out);
            }
            RegisterReply::Challenge => self.challenge(ctx, msg, false, false, tx),
            RegisterReply::Reject {
                code,
                reason,
                min_expires: Some(m),
            } => {
                self.extra.clear();
                self.extra.extend_from_slice(b"Min-Expires: ");
                self.extra
                    .extend_from_slice(super::build::itoa_buf(m).as_bytes());
                self.extra.extend_from_slice(b"\r\n");
                self.reply_with_extra(msg, ctx.from, code, reason, tx);
            }
            RegisterReply::Reject {
                code,
                reason,
                min_expires: None,
            } => self.reply(msg, ctx.from, code, reason, tx),
        }
    }

    /// Send one REGISTER to Asterisk as a new client transaction from this worker's
    /// upstream socket, with the `Authorization:` lines `auth` when answering a challenge.
    fn send_regfwd(
        &mut self,
        now_ms: u64,
        rf: RegFwdCtx,
        node: std::net::SocketAddr,
        auth: Option<&[u8]>,
        tx: &mut dyn Transmit,
    ) {
        let to = Flow::new(Local::Upstream, node);
        let Some((slot, gen)) = self.txns.start_client(false, ClientCtx::RegFwd(rf), to) else {
            self.stats.dropped_overload += 1;
            self.stats.regfwd_failed += 1;
            return;
        };
        let branch = upstream_branch(&self.cfg.branch_key, self.worker, slot, gen);
        let (host, port) = sent_by(&self.cfg, self.upstream.port(), Local::Upstream);
        let via = SentBy {
            transport: "UDP",
            host,
            port,
        };
        let req = RegFwdRequest {
            node,
            user: rf.user.as_str(),
            call_id: rf.call_id.as_str(),
            from_tag: rf.from_tag.as_str(),
            cseq: rf.cseq,
            expires: rf.expires,
        };
        let Some(ct) = self.txns.clients.get_mut(slot) else {
            return;
        };
        if !self
            .ports
            .regfwd
            .write(&req, &via, branch.as_str(), auth, &mut ct.request)
        {
            self.txns.free_client(slot);
            self.stats.regfwd_failed += 1;
            return;
        }
        tx.send(to, &ct.request);
        self.stats.regfwd_sent += 1;
        self.txns.client_sent(slot, now_ms);
    }

    /// A response to a forwarded REGISTER: answer one challenge with the user's cached
    /// credentials (same Call-ID, the CSeq REGFWD gives), report everything else.
    pub(super) fn on_regfwd_response(
        &mut self,
        now_ms: u64,
        slot: u32,
        rf: &RegFwdCtx,
        msg: &Message<'_, '_>,
        code: u16,
        tx: &mut dyn Transmit,
    ) {
        if code < 200 {
            self.txns.client_provisional(slot);
            return;
        }
        let Some(ct) = self.txns.clients.get(slot) else {
            return;
        };
        let node = ct.to.remote;
        // The digest uri of an answer to a challenge is our request-URI.
        let mut uri_buf = [0u8; 256];
        let uri = request_uri_of(&ct.request, &mut uri_buf);
        self.txns.free_client(slot);
        let (user, call_id) = (rf.user.as_str(), rf.call_id.as_str());

        if (code == 401 || code == 407) && !rf.challenged {
            let proxy = code == 407;
            let name = if proxy {
                HeaderName::ProxyAuthenticate
            } else {
                HeaderName::WwwAuthenticate
            };
            let mut values: [&[u8]; 4] = [b""; 4];
            let mut n = 0;
            for h in msg.headers_named(name) {
                if n < values.len() {
                    values[n] = h.value;
                    n += 1;
                }
            }
            let mut auth = std::mem::take(&mut self.extra);
            auth.clear();
            let answered = n > 0
                && self.ports.auth.answer_challenge(
                    user,
                    &values[..n],
                    proxy,
                    "REGISTER",
                    uri,
                    &mut auth,
                );
            if answered {
                let retry = RegFwdCtx {
                    cseq: self.ports.regfwd.retry_cseq(user, call_id, rf.cseq),
                    challenged: true,
                    ..*rf
                };
                self.send_regfwd(now_ms, retry, node, Some(&auth), tx);
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
    }

    /// Drop expired bindings; tell Asterisk about users left with none.
    pub(super) fn expire_bindings(&mut self, now: Now, tx: &mut dyn Transmit) {
        let mut users = std::mem::take(&mut self.expired_buf);
        users.clear();
        self.ports.location.expire(now.wall_ms, &mut |user: &str| {
            users.extend_from_slice(user.as_bytes());
            users.push(b'\n');
        });
        let regfwd = self.ports.regfwd.clone();
        for user in users.split(|&c| c == b'\n').filter(|u| !u.is_empty()) {
            let Ok(user) = std::str::from_utf8(user) else {
                continue;
            };
            let mut out = PortOut {
                core: self,
                tx,
                now,
            };
            regfwd.on_expired(user, now.wall_ms, &mut out);
        }
        self.expired_buf = users;
    }
}

/// The request-URI of the request in `request` (the second word of its first line), copied
/// into `buf` ("" when it does not fit).
fn request_uri_of<'b>(request: &[u8], buf: &'b mut [u8; 256]) -> &'b str {
    let line = request.split(|&c| c == b'\r').next().unwrap_or(&[]);
    let uri = line.split(|&c| c == b' ').nth(1).unwrap_or(&[]);
    match buf.get_mut(..uri.len()) {
        Some(dst) => {
            dst.copy_from_slice(uri);
            std::str::from_utf8(dst).unwrap_or("")
        }
        None => "",
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

/// The core as the sender of what a shared port decides on: REGFWD's REGISTERs
/// ([`RegFwdSender`]), the farm's pings and replayed REGISTERs ([`FarmSender`]).
pub(super) struct PortOut<'c, 't> {
    pub core: &'c mut Core,
    pub tx: &'t mut dyn Transmit,
    pub now: Now,
}

impl FarmSender for PortOut<'_, '_> {
    fn ping(&mut self, node: std::net::SocketAddr, seq: u32) {
        self.core.send_ping(node, seq, self.tx);
    }

    fn register(&mut self, req: &RegFwdRequest<'_>) {
        RegFwdSender::send(self, req);
    }
}

impl RegFwdSender for PortOut<'_, '_> {
    fn send(&mut self, req: &RegFwdRequest<'_>) {
        let (Some(user), Some(call_id), Some(from_tag)) = (
            InlineStr::new(req.user),
            InlineStr::new(req.call_id),
            InlineStr::new(req.from_tag),
        ) else {
            self.core.stats.regfwd_failed += 1;
            tracing::warn!(
                user = req.user,
                "forwarded REGISTER not sent: identifiers too long"
            );
            return;
        };
        let rf = RegFwdCtx {
            user,
            call_id,
            from_tag,
            cseq: req.cseq,
            expires: req.expires,
            challenged: false,
        };
        self.core
            .send_regfwd(self.now.mono_ms, rf, req.node, None, self.tx);
    }
}
