//! REGISTER from an authenticated phone (RFC 3261 §10.3) and the REGISTERs the proxy sends to
//! Asterisk afterwards (the seed's REGFWD), as client transactions of the upstream socket.
//!
//! The phone's REGISTER is answered statelessly, like Kamailio's `save()` + `sl_send_reply`:
//! the registrar treats a retransmission (same Call-ID and CSeq) as a no-op that lists the
//! current bindings, so no transaction has to be kept for 32 s per registration.

use crate::sip::{HeaderName, Message, ViaSpec};

use super::branch::{write_branch, OurBranch};
use super::build::write_http_date;
use super::ports::{RegisterInput, RegisterReply};
use super::request::ReqCtx;
use super::timer::TimerKind;
use super::txn::{ClientState, Purpose};
use super::{Core, Local, Transmit, MAX_USER_LEN};

/// Most REGISTERs one save may trigger (one per Asterisk node).
const MAX_REGFWD: usize = 16;

impl Core {
    pub(super) fn on_register(
        &mut self,
        ctx: &ReqCtx<'_>,
        msg: &Message<'_, '_>,
        user: &str,
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
                let mut jobs = [(0usize, 0u32); MAX_REGFWD];
                let mut n = 0;
                self.ports.regfwd.on_saved(
                    user,
                    granted,
                    changed,
                    ctx.now,
                    &mut |node, expires| {
                        if n < MAX_REGFWD {
                            jobs[n] = (node, expires);
                            n += 1;
                        }
                    },
                );
                for &(node, expires) in &jobs[..n] {
                    self.send_regfwd(ctx.now, user, node, expires, None, tx);
                }
            }
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

    /// Send one REGISTER for `user` to Asterisk node `node` as a new client transaction.
    pub(super) fn send_regfwd(
        &mut self,
        now: u64,
        user: &str,
        node: usize,
        expires: u32,
        authorization: Option<&[u8]>,
        tx: &mut dyn Transmit,
    ) {
        let Some(&dst) = self.cfg.asterisk.get(node) else {
            return;
        };
        let purpose = Purpose::RegFwd {
            node: node as u8,
            challenged: authorization.is_some(),
            expires,
        };
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
        let via = ViaSpec {
            transport: "UDP",
            host: &self.upstream_host,
            port: self.upstream.port(),
            branch: branch.as_str(),
        };
        let Some(ct) = self.txns.clients.get_mut(slot) else {
            return;
        };
        ct.request.clear();
        if !self.ports.regfwd.write_register(
            user,
            node,
            expires,
            &via,
            authorization,
            &mut ct.request,
        ) {
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

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_regfwd_response(
        &mut self,
        now: u64,
        slot: u32,
        node: u8,
        challenged: bool,
        expires: u32,
        msg: &Message<'_, '_>,
        code: u16,
        tx: &mut dyn Transmit,
    ) {
        let mut user_buf = [0u8; MAX_USER_LEN];
        let Some(ct) = self.txns.clients.get_mut(slot) else {
            return;
        };
        let n = ct.aux.len().min(MAX_USER_LEN);
        user_buf[..n].copy_from_slice(&ct.aux[..n]);
        let user = std::str::from_utf8(&user_buf[..n]).unwrap_or("");
        if code < 200 {
            ct.state = ClientState::Proceeding;
            ct.retransmit_ms = self.cfg.timers.t2_ms;
            return;
        }
        self.txns.free_client(slot);
        if (code == 401 || code == 407) && !challenged {
            let proxy = code == 407;
            let name = if proxy {
                HeaderName::ProxyAuthenticate
            } else {
                HeaderName::WwwAuthenticate
            };
            let node_addr = self.cfg.asterisk[usize::from(node)];
            let mut uri = [0u8; 64];
            let uri = fmt_sip_uri(node_addr, &mut uri);
            let mut auth = std::mem::take(&mut self.extra);
            auth.clear();
            let answered = msg.header(name).is_some_and(|h| {
                self.ports
                    .auth
                    .answer_challenge(user, h.value, proxy, "REGISTER", uri, &mut auth)
            });
            if answered {
                self.send_regfwd(now, user, usize::from(node), expires, Some(&auth), tx);
            } else {
                self.stats.regfwd_failed += 1;
                tracing::warn!(
                    user,
                    code,
                    "Asterisk challenged a forwarded REGISTER and it cannot be answered"
                );
                self.ports.regfwd.on_result(user, usize::from(node), code);
            }
            self.extra = auth;
            return;
        }
        if (200..300).contains(&code) {
            self.stats.regfwd_ok += 1;
        } else {
            self.stats.regfwd_failed += 1;
            tracing::warn!(user, code, node, "Asterisk refused a forwarded REGISTER");
        }
        self.ports.regfwd.on_result(user, usize::from(node), code);
    }

    /// Drop expired bindings; tell Asterisk about users left with none.
    pub(super) fn expire_bindings(&mut self, now: u64, tx: &mut dyn Transmit) {
        let mut users = std::mem::take(&mut self.expired_buf);
        users.clear();
        self.ports.location.expire(now, &mut |user: &str| {
            users.extend_from_slice(user.as_bytes());
            users.push(b'\n');
        });
        for user in users.split(|&c| c == b'\n').filter(|u| !u.is_empty()) {
            let Ok(user) = std::str::from_utf8(user) else {
                continue;
            };
            let mut jobs = [(0usize, 0u32); MAX_REGFWD];
            let mut n = 0;
            self.ports
                .regfwd
                .on_expired(user, now, &mut |node, expires| {
                    if n < MAX_REGFWD {
                        jobs[n] = (node, expires);
                        n += 1;
                    }
                });
            for &(node, expires) in &jobs[..n] {
                self.send_regfwd(now, user, node, expires, None, tx);
            }
        }
        self.expired_buf = users;
    }
}

/// `sip:ip:port` of an Asterisk node, into a stack buffer.
fn fmt_sip_uri(addr: std::net::SocketAddr, buf: &mut [u8; 64]) -> &str {
    use std::io::Write;
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cur, "sip:{addr}");
    let n = cur.position() as usize;
    std::str::from_utf8(&buf[..n]).unwrap_or("sip:")
}
