//! Responses from downstream (RFC 3261 §16.7): matched to the client transaction by the branch
//! we generated (§17.1.3), provisional and 2xx responses forwarded at once, non-2xx final
//! responses ACKed hop by hop and collected until every branch is done, then the best one goes
//! upstream (503 becomes 500). A 2xx whose transaction is gone is forwarded statelessly.

use std::net::{IpAddr, SocketAddr};

use crate::sip::{
    write_forward, ForwardOps, HeaderName, Message, Method, Rport, EMPTY_HEADER, MAX_HEADERS,
};

use super::branch::parse_branch;
use super::timer::TimerKind;
use super::txn::{CancelState, ClientState, Purpose, ServerState, Target};
use super::{Core, Local, Transmit};

/// §16.7 (6): is `new` a better final response than `old` (0 = none yet)?
pub(super) fn better(new: u16, old: u16) -> bool {
    if old == 0 {
        return true;
    }
    let (cn, co) = (new / 100, old / 100);
    if co == 6 {
        return false;
    }
    cn == 6 || cn < co
}

/// Codes after which an INVITE to Asterisk is retried on the next node.
fn fails_over(code: u16) -> bool {
    matches!(code, 408 | 500 | 503)
}

impl Core {
    pub(super) fn on_response(
        &mut self,
        now: u64,
        src: SocketAddr,
        data: &[u8],
        tx: &mut dyn Transmit,
    ) {
        let mut hdrs = [EMPTY_HEADER; MAX_HEADERS];
        let Ok(msg) = Message::parse_datagram(data, &mut hdrs) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        let (Some(code), Ok(via), Ok(cseq)) = (msg.status_code(), msg.top_via(), msg.cseq()) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        let Some(ours) = via.branch().and_then(parse_branch) else {
            self.stats.dropped_unmatched += 1;
            return;
        };
        let matched = self
            .txns
            .client(ours.slot, ours.gen)
            .map(|ct| (ct.purpose, ct.invite));
        let Some((purpose, invite)) = matched else {
            if cseq.method == Method::Invite && (200..300).contains(&code) {
                self.forward_response_stateless(&msg, tx);
            } else {
                self.stats.dropped_unmatched += 1;
            }
            return;
        };
        if cseq.method == Method::Cancel {
            if let Some(ct) = self.txns.client(ours.slot, ours.gen) {
                ct.cancel_retransmit_ms = 0;
            }
            return;
        }
        if (cseq.method == Method::Invite) != invite {
            self.stats.dropped_unmatched += 1;
            return;
        }
        match purpose {
            Purpose::RegFwd { challenged } => {
                self.on_regfwd_response(now, ours.slot, challenged, &msg, code, tx)
            }
            Purpose::Branch { server, server_gen } => {
                // A phone behind NAT answering: its Contact gets our alias (see nat.rs).
                let alias = if self.cfg.is_asterisk(src) {
                    None
                } else {
                    super::route::nat_alias(&msg, src)
                };
                self.on_branch_response(
                    now, ours.slot, server, server_gen, &msg, data, code, alias, tx,
                )
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_branch_response(
        &mut self,
        now: u64,
        slot: u32,
        server: u32,
        server_gen: u32,
        msg: &Message<'_, '_>,
        data: &[u8],
        code: u16,
        alias: Option<SocketAddr>,
        tx: &mut dyn Transmit,
    ) {
        let t2 = self.cfg.timers.t2_ms;
        let Some(ct) = self.txns.clients.get_mut(slot) else {
            return;
        };
        let invite = ct.invite;
        if ct.state == ClientState::Completed {
            // A retransmitted final response: re-ACK a non-2xx to INVITE.
            if invite && code >= 300 {
                self.send_ack(slot, msg, tx);
            }
            return;
        }
        if code < 200 {
            if ct.state == ClientState::Calling {
                ct.state = ClientState::Proceeding;
                if !invite {
                    ct.retransmit_ms = t2;
                }
            }
            if ct.cancel == CancelState::Wanted {
                self.send_cancel(now, slot, tx);
            }
            if code == 100 {
                return;
            }
            self.forward_upstream(server, server_gen, msg, code, false, alias, tx);
            return;
        }

        // A final response on this branch.
        ct.final_code = code;
        let gen = ct.gen;
        let already_settled = std::mem::replace(&mut ct.settled, true);
        if invite && code >= 300 {
            self.send_ack(slot, msg, tx);
        }
        if invite && code < 300 {
            self.txns.free_client(slot);
        } else {
            if let Some(ct) = self.txns.clients.get_mut(slot) {
                ct.state = ClientState::Completed;
            }
            let linger = if invite {
                32_000
            } else {
                self.cfg.timers.t4_ms
            };
            self.timers
                .arm(now + linger, slot, gen, TimerKind::ClientLinger);
        }

        let Some(t) = self
            .txns
            .servers
            .get_mut(server)
            .filter(|t| t.gen == server_gen)
        else {
            return;
        };
        if !already_settled {
            t.pending = t.pending.saturating_sub(1);
        }
        if (200..300).contains(&code) {
            // Every 2xx goes upstream at once (§16.7 (5)); other branches are cancelled.
            let first_2xx = !t.answered();
            self.forward_upstream(server, server_gen, msg, code, true, alias, tx);
            if first_2xx {
                if let Some(t) = self.txns.servers.get_mut(server) {
                    let sgen = t.gen;
                    let linger = self.cfg.server_linger_ms(t.invite, code);
                    t.state = if t.invite {
                        ServerState::Accepted
                    } else {
                        ServerState::Completed
                    };
                    self.timers
                        .arm(now + linger, server, sgen, TimerKind::ServerLinger);
                }
                self.cancel_branches(now, server, tx);
            }
            return;
        }
        if t.answered() {
            return;
        }
        if better(code, t.best_code) {
            t.best_code = code;
            t.best.clear();
            t.best.extend_from_slice(data);
        }
        if code >= 600 {
            self.cancel_branches(now, server, tx);
        }
        self.maybe_finish(now, server, tx);
    }

    /// A branch ended without a response from downstream (timeout 408, cancelled 487).
    /// With `complete`, the client transaction is finished too; without it (a CANCEL waiting
    /// for a provisional) it lives on, but no longer counts as pending upstream.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn branch_final(
        &mut self,
        now: u64,
        server: u32,
        server_gen: u32,
        slot: u32,
        code: u16,
        complete: bool,
        tx: &mut dyn Transmit,
    ) {
        let Some(ct) = self.txns.clients.get_mut(slot) else {
            return;
        };
        if ct.state == ClientState::Completed || ct.settled {
            return;
        }
        ct.settled = true;
        if complete {
            ct.final_code = code;
            ct.state = ClientState::Completed;
            let gen = ct.gen;
            self.timers.arm(
                now + self.cfg.timers.t4_ms,
                slot,
                gen,
                TimerKind::ClientLinger,
            );
        }
        let Some(t) = self
            .txns
            .servers
            .get_mut(server)
            .filter(|t| t.gen == server_gen)
        else {
            return;
        };
        t.pending = t.pending.saturating_sub(1);
        if t.answered() {
            return;
        }
        if better(code, t.best_code) {
            t.best_code = code;
            t.best.clear();
        }
        self.maybe_finish(now, server, tx);
    }

    /// When every branch is final: fail over to the next Asterisk node, or send the best.
    fn maybe_finish(&mut self, now: u64, server: u32, tx: &mut dyn Transmit) {
        let Some(t) = self.txns.servers.get(server) else {
            return;
        };
        if t.pending > 0 || t.answered() {
            return;
        }
        if matches!(t.target, Target::Asterisk { .. })
            && fails_over(t.best_code)
            && !t.cancelled
            && self.failover(now, server, tx)
        {
            if let Some(t) = self.txns.servers.get_mut(server) {
                t.best_code = 0;
                t.best.clear();
            }
            return;
        }
        let Some(t) = self.txns.servers.get_mut(server) else {
            return;
        };
        let code = t.best_code;
        if t.best.is_empty() || code == 503 {
            let (code, reason) = match code {
                503 => (500, "Server Internal Error (all destinations busy)"),
                487 => (487, "Request Terminated"),
                0 | 408 => (408, "Request Timeout"),
                c => (c, "Error"),
            };
            self.respond_txn(now, server, code, reason, tx);
            return;
        }
        let best = std::mem::take(&mut t.best);
        let mut hdrs = [EMPTY_HEADER; MAX_HEADERS];
        if let Ok(msg) = Message::parse_datagram(&best, &mut hdrs) {
            let gen = t.gen;
            self.forward_upstream(server, gen, &msg, code, true, None, tx);
            let t1 = self.cfg.timers.t1_ms;
            if let Some(t) = self.txns.servers.get_mut(server) {
                t.state = ServerState::Completed;
                t.retransmit_ms = t1;
                if t.invite {
                    self.timers
                        .arm(now + t1, server, gen, TimerKind::ServerRetransmit);
                }
                let linger = self.cfg.server_linger_ms(t.invite, code);
                self.timers
                    .arm(now + linger, server, gen, TimerKind::ServerLinger);
            }
        }
        if let Some(t) = self.txns.servers.get_mut(server) {
            t.best = best;
        }
    }

    /// Send `msg` (minus our Via) to where server transaction `server` came from and keep it
    /// as the transaction's last response.
    #[allow(clippy::too_many_arguments)]
    fn forward_upstream(
        &mut self,
        server: u32,
        server_gen: u32,
        msg: &Message<'_, '_>,
        code: u16,
        final_: bool,
        alias: Option<SocketAddr>,
        tx: &mut dyn Transmit,
    ) {
        let Some(t) = self
            .txns
            .servers
            .get_mut(server)
            .filter(|t| t.gen == server_gen)
        else {
            return;
        };
        if t.answered() && !(final_ && (200..300).contains(&code) && t.invite) {
            return;
        }
        let ops = ForwardOps {
            remove_top_via: true,
            ..ForwardOps::default()
        };
        t.response.clear();
        if write_forward(msg, &ops, &mut t.response).is_err() {
            return;
        }
        if let Some(src) = alias {
            super::nat::add_contact_alias(&mut t.response, super::nat::Alias::new(src).as_bytes());
        }
        t.response_code = t.response_code.max(code);
        tx.send(t.sock, t.src, &t.response);
        self.stats.forwarded_responses += 1;
        self.count_response(code);
    }

    /// Forward a response whose transaction is gone (2xx retransmissions) along the Via.
    fn forward_response_stateless(&mut self, msg: &Message<'_, '_>, tx: &mut dyn Transmit) {
        let mut vias = msg.vias();
        let _ours = vias.next();
        let Some(Ok(next)) = vias.next() else {
            self.stats.dropped_unmatched += 1;
            return;
        };
        let host = next.received().unwrap_or(next.host);
        let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            self.stats.dropped_unmatched += 1;
            return;
        };
        let port = match next.rport() {
            Rport::Value(p) => p,
            _ => next.port.unwrap_or(5060),
        };
        let dst = SocketAddr::new(ip, port);
        let sock = if self.cfg.asterisk_index(dst).is_some() {
            Local::Upstream
        } else {
            Local::Listen(0)
        };
        let ops = ForwardOps {
            remove_top_via: true,
            ..ForwardOps::default()
        };
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        if write_forward(msg, &ops, &mut out).is_ok() {
            tx.send(sock, dst, &out);
            self.stats.forwarded_responses += 1;
        }
        self.out = out;
    }

    /// ACK a non-2xx final response on branch `slot` (§17.1.1.3).
    fn send_ack(&mut self, slot: u32, msg: &Message<'_, '_>, tx: &mut dyn Transmit) {
        let Some(to) = msg.header(HeaderName::To).map(|h| h.value) else {
            return;
        };
        let Some(ct) = self.txns.clients.get(slot) else {
            return;
        };
        let mut out = std::mem::take(&mut self.out);
        if Core::build_ack_or_cancel(&ct.request, Some(to), &mut out) {
            tx.send(ct.sock, ct.dst, &out);
        }
        self.out = out;
    }

    /// CANCEL the INVITE sent on branch `slot` (§9.1) and keep retransmitting it.
    pub(super) fn send_cancel(&mut self, now: u64, slot: u32, tx: &mut dyn Transmit) {
        let t1 = self.cfg.timers.t1_ms;
        let Some(ct) = self.txns.clients.get_mut(slot) else {
            return;
        };
        if ct.cancel == CancelState::Sent || ct.final_code >= 200 {
            return;
        }
        let mut cancel = std::mem::take(&mut ct.cancel_request);
        if Core::build_ack_or_cancel(&ct.request, None, &mut cancel) {
            tx.send(ct.sock, ct.dst, &cancel);
            ct.cancel = CancelState::Sent;
            ct.cancel_retransmit_ms = t1;
            ct.cancel_until_ms = now + 64 * t1;
            let gen = ct.gen;
            self.timers
                .arm(now + t1, slot, gen, TimerKind::CancelRetransmit);
        }
        ct.cancel_request = cancel;
    }
}

#[cfg(test)]
mod tests {
    use super::better;

    #[test]
    fn best_response_order() {
        assert!(better(404, 0));
        assert!(better(603, 404));
        assert!(!better(404, 603));
        assert!(better(302, 486));
        assert!(!better(500, 404));
        assert!(!better(486, 404));
    }
}
