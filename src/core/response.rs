//! Responses from downstream (RFC 3261 §16.7): matched to the client transaction by the branch
//! we generated (§17.1.3), provisional and 2xx responses forwarded at once, non-2xx final
//! responses ACKed hop by hop and collected until every branch is done, then the best one goes
//! upstream (503 becomes 500). A 2xx whose transaction is gone is forwarded statelessly.
//!
//! Before a response touches any transaction its top branch must carry our MAC (a forgery
//! is dropped and counted, `branch.rs`), and a response matched to a transaction must come
//! from where the request went (`response_source.rs`; dropped and counted as spoofed).

use std::net::{IpAddr, SocketAddr};

use crate::sip::{
    write_forward, ForwardOps, HeaderName, Message, Method, Rport, Transport, EMPTY_HEADER,
    MAX_HEADERS,
};

use super::branch::{check_branch, Checked, OurBranch};
use super::farm::{retry_after, PING_SLOT};
use super::ports::NodeAnswer;
use super::txn::{CancelState, ClientCtx, ClientState, Target};
use super::{Core, Flow, Local, Now, Transmit};

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
    pub(super) fn on_response(&mut self, now: Now, from: Flow, data: &[u8], tx: &mut dyn Transmit) {
        let src = from.remote;
        let mut hdrs = [EMPTY_HEADER; MAX_HEADERS];
        let Ok(msg) = Message::parse_datagram(data, &mut hdrs) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        let (Some(code), Ok(via), Ok(cseq)) = (msg.status_code(), msg.top_via(), msg.cseq()) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        let ours = match via.branch().map(|b| check_branch(&self.cfg.branch_key, b)) {
            Some(Checked::Ours(b)) => b,
            Some(Checked::Forged) => {
                self.stats.dropped_forged += 1;
                return;
            }
            Some(Checked::Foreign) | None => {
                self.stats.dropped_unmatched += 1;
                return;
            }
        };
        if ours.slot == super::keepalive::KEEPALIVE_SLOT {
            // A phone answering a NAT keepalive (stateless, see keepalive.rs).
            if cseq.method == Method::Options {
                self.on_keepalive_answer(from);
            }
            return;
        }
        if ours.slot == PING_SLOT {
            // The answer to one of the farm's pings (stateless, see farm.rs).
            if code >= 200 && cseq.method == Method::Options {
                self.ports
                    .farm
                    .on_ping_answer(src, ours.gen, code, now.mono_ms);
            }
            return;
        }
        // The branch's parent (None for a forwarded REGISTER), without copying the context.
        let matched = self.txns.client(ours.slot, ours.gen).map(|ct| {
            let parent = match ct.ctx {
                ClientCtx::Branch { server, server_gen } => Some(Parent {
                    idx: server,
                    gen: server_gen,
                }),
                ClientCtx::RegFwd(_) => None,
            };
            (parent, ct.invite, ct.to)
        });
        let Some((parent, invite, sent_to)) = matched else {
            if cseq.method == Method::Invite && (200..300).contains(&code) {
                self.forward_response_stateless(&msg, &ours, tx);
            } else {
                self.stats.dropped_unmatched += 1;
            }
            return;
        };
        if !super::response_source::accepts(&self.cfg, sent_to, src) {
            self.stats.dropped_spoofed += 1;
            tracing::debug!(%src, expected = %sent_to.remote, "response from another address dropped");
            return;
        }
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
        let now = now.mono_ms;
        match parent {
            None => {
                let rf = match self.txns.clients.get(ours.slot).map(|c| c.ctx) {
                    Some(ClientCtx::RegFwd(rf)) => rf,
                    _ => return,
                };
                self.on_regfwd_response(now, ours.slot, &rf, &msg, code, tx);
            }
            Some(server) => {
                // A phone behind NAT answering: its Contact gets our alias (see nat.rs).
                let alias = if self.cfg.is_asterisk(src) {
                    None
                } else {
                    // (Never a cluster peer's: its Contact is the phone's, behind that node.)
                    super::route::nat_alias(&msg, src)
                        .filter(|_| !self.ports.location.is_peer(src))
                        .map(|a| (a, self.cfg.transport_of(from.local)))
                };
                let r = BranchResponse {
                    slot: ours.slot,
                    server,
                    code,
                    alias,
                };
                self.on_branch_response(now, &r, &msg, data, tx)
            }
        }
    }

    fn on_branch_response(
        &mut self,
        now: u64,
        r: &BranchResponse,
        msg: &Message<'_, '_>,
        data: &[u8],
        tx: &mut dyn Transmit,
    ) {
        let (slot, code) = (r.slot, r.code);
        let Some(ct) = self.txns.clients.get_mut(slot) else {
            return;
        };
        let invite = ct.invite;
        // Back-pressure: what a node answered first, and every 503 of it.
        let first = ct.state == ClientState::Calling;
        if ct.to.local == Local::Upstream && (first || code == 503) {
            let answer = NodeAnswer {
                node: ct.to.remote,
                code,
                first_answer_ms: first.then(|| now.saturating_sub(ct.sent_ms)),
                retry_after_secs: if code == 503 { retry_after(msg) } else { None },
            };
            self.ports.farm.on_answer(&answer, now);
        }
        if ct.state == ClientState::Completed {
            // A retransmitted final response: re-ACK a non-2xx to INVITE.
            if invite && code >= 300 {
                self.send_ack(slot, msg, tx);
            }
            return;
        }
        if code < 200 {
            let cancel_wanted = ct.cancel == CancelState::Wanted;
            self.txns.client_provisional(slot);
            if cancel_wanted {
                // A branch given up (cancelled early, or its node went down): its CANCEL
                // goes now, its provisional nowhere.
                self.send_cancel(now, slot, tx);
                return;
            }
            if code == 100 {
                return;
            }
            self.forward_upstream(r.server, msg, Relay::Provisional(code), r.alias, tx);
            return;
        }

        // A final response on this branch.
        let already_settled = std::mem::replace(&mut ct.settled, true);
        if invite && code >= 300 {
            self.send_ack(slot, msg, tx);
        }
        self.txns.client_final(slot, code, now);

        let Some(t) = self
            .txns
            .servers
            .get_mut(r.server.idx)
            .filter(|t| t.gen == r.server.gen)
        else {
            return;
        };
        if !already_settled {
            t.pending = t.pending.saturating_sub(1);
        }
        if (200..300).contains(&code) {
            // Every 2xx goes upstream at once (§16.7 (5)); other branches are cancelled.
            let first_2xx = !t.answered();
            self.forward_upstream(r.server, msg, Relay::Final(code), r.alias, tx);
            if first_2xx {
                self.txns.server_final_sent(r.server.idx, code, now);
                self.cancel_branches(now, r.server.idx, tx);
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
            self.cancel_branches(now, r.server.idx, tx);
        }
        self.maybe_finish(now, r.server.idx, tx);
    }

    /// A branch ended without a response from downstream (timeout 408, cancelled 487, node
    /// down 503). A timeout finishes the client transaction too (also when the branch was
    /// settled before); otherwise (a CANCEL waiting for a provisional) it lives on, but no
    /// longer counts as pending upstream.
    pub(super) fn branch_final(
        &mut self,
        now: u64,
        server: Parent,
        slot: u32,
        outcome: BranchEnd,
        tx: &mut dyn Transmit,
    ) {
        let Some(ct) = self.txns.clients.get_mut(slot) else {
            return;
        };
        if ct.state == ClientState::Completed {
            return;
        }
        let already_settled = std::mem::replace(&mut ct.settled, true);
        let code = outcome.code();
        if let BranchEnd::TimedOut = outcome {
            // Also for a branch settled before (cancelled early, its node gone down) that
            // never got an answer: its transaction ends here.
            self.txns.client_given_up(slot, code, now);
        }
        if already_settled {
            return;
        }
        let Some(t) = self
            .txns
            .servers
            .get_mut(server.idx)
            .filter(|t| t.gen == server.gen)
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
        self.maybe_finish(now, server.idx, tx);
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
        let parent = Parent {
            idx: server,
            gen: t.gen,
        };
        let mut hdrs = [EMPTY_HEADER; MAX_HEADERS];
        if let Ok(msg) = Message::parse_datagram(&best, &mut hdrs) {
            self.forward_upstream(parent, &msg, Relay::Final(code), None, tx);
            self.txns.server_final_sent(server, code, now);
        }
        if let Some(t) = self.txns.servers.get_mut(server) {
            t.best = best;
        }
    }

    /// Send `msg` (minus our Via) back over the flow server transaction `server` came by,
    /// and keep it as the transaction's last response.
    fn forward_upstream(
        &mut self,
        server: Parent,
        msg: &Message<'_, '_>,
        relay: Relay,
        alias: Option<(SocketAddr, Transport)>,
        tx: &mut dyn Transmit,
    ) {
        let Some(t) = self
            .txns
            .servers
            .get_mut(server.idx)
            .filter(|t| t.gen == server.gen)
        else {
            return;
        };
        let (code, final_) = match relay {
            Relay::Provisional(c) => (c, false),
            Relay::Final(c) => (c, true),
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
        if let Some((src, transport)) = alias {
            let alias = super::nat::Alias::new(src, transport);
            super::nat::add_contact_alias(&mut t.response, alias.as_bytes());
        }
        t.response_code = t.response_code.max(code);
        tx.send(t.from, &t.response);
        self.stats.forwarded_responses += 1;
        self.count_response(code);
    }

    /// Forward a response whose transaction is gone (2xx retransmissions) along the Via,
    /// from the local socket its request came in on (named in our branch).
    fn forward_response_stateless(
        &mut self,
        msg: &Message<'_, '_>,
        ours: &OurBranch,
        tx: &mut dyn Transmit,
    ) {
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
        let local = match ours.ingress {
            Local::Listen(i) if usize::from(i) < self.cfg.interfaces.len() => Local::Listen(i),
            _ => Local::Listen(self.cfg.asterisk_side),
        };
        let to = Flow::new(local, SocketAddr::new(ip, port));
        let ops = ForwardOps {
            remove_top_via: true,
            ..ForwardOps::default()
        };
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        if write_forward(msg, &ops, &mut out).is_ok() {
            tx.send(to, &out);
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
            tx.send(ct.to, &out);
        }
        self.out = out;
    }

    /// CANCEL the INVITE sent on branch `slot` (§9.1) and keep retransmitting it.
    pub(super) fn send_cancel(&mut self, now: u64, slot: u32, tx: &mut dyn Transmit) {
        let Some(ct) = self.txns.clients.get_mut(slot) else {
            return;
        };
        if ct.cancel == CancelState::Sent || ct.final_code >= 200 {
            return;
        }
        let mut cancel = std::mem::take(&mut ct.cancel_request);
        let built = Core::build_ack_or_cancel(&ct.request, None, &mut cancel);
        if built {
            tx.send(ct.to, &cancel);
        }
        ct.cancel_request = cancel;
        if built {
            self.txns.cancel_sent(slot, now);
        }
    }
}

/// A server transaction, by slot and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Parent {
    pub idx: u32,
    pub gen: u32,
}

/// A response on one branch, as matched to its transactions.
struct BranchResponse {
    slot: u32,
    server: Parent,
    code: u16,
    /// The NAT alias to add to its Contact (a phone behind NAT answering) and the transport
    /// it answered over.
    alias: Option<(SocketAddr, Transport)>,
}

/// How a response goes upstream.
#[derive(Debug, Clone, Copy)]
enum Relay {
    Provisional(u16),
    Final(u16),
}

/// How a branch ended without a response of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BranchEnd {
    /// No final response in time (Timer B / C): 408; the client transaction ends too.
    TimedOut,
    /// Cancelled before any provisional: 487 upstream now; the transaction lives on to
    /// send its CANCEL once a provisional arrives (§9.1).
    CancelledEarly,
    /// Its Asterisk node went down: counts as a 503 (the server transaction fails over);
    /// the transaction lives on like a cancelled one.
    NodeDown,
}

impl BranchEnd {
    fn code(self) -> u16 {
        match self {
            BranchEnd::TimedOut => 408,
            BranchEnd::CancelledEarly => 487,
            BranchEnd::NodeDown => 503,
        }
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
