//! The B-leg of dial mode, as Asterisk's `Dial(SIP/X)` does it: a new INVITE (new Call-ID,
//! From tag, Via branch) to the Contact registered for X, i.e. back through the proxy.
//!
//! Its provisional responses are relayed to the A-leg (under the A-leg's own To tag), its 2xx
//! is ACKed at once (through the Record-Route set) and relayed as the A-leg's 200, a non-2xx
//! final is ACKed hop by hop and relayed. A CANCEL of the A-leg cancels the B-leg (deferred
//! until a provisional arrived, per RFC 3261 §9.1). Our INVITE/CANCEL/BYE are retransmitted
//! (Timer A/E: T1 doubling, E capped at T2) and time out after 64*T1 (Timer B/F).

use std::io::Write as _;

use super::build::{begin_request, finish};
use super::call::{next_hop, record_routes, BLeg, Body, Phase};
use super::engine::{Engine, Leg, Outbox, TxSlot};
use super::parse::{param, uri_hostport, uri_of, uri_user, Msg, Start};
use super::register::Binding;

impl Engine {
    /// Places the B-leg call for call `id` to `binding`.
    pub(super) fn start_b(&mut self, now_ms: u64, id: u64, binding: &Binding, out: &mut Outbox) {
        let local = self.local;
        let call_id = self.ids.call_id(local);
        let tag = self.ids.tag();
        let branch = self.ids.branch();
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Ok(inv) = Msg::parse(&c.a_invite) else {
            return;
        };
        let caller = inv
            .header("From")
            .map(uri_of)
            .and_then(uri_user)
            .unwrap_or("anonymous");
        let from_hdr = format!("\"{caller}\" <sip:{caller}@{}>;tag={tag}", local.ip());
        let to_hdr = format!("<sip:{}@{}>", c.exten, uri_hostport(&binding.contact));
        let body = if inv.body.is_empty() {
            &self.sdp[..]
        } else {
            inv.body
        };
        let mut bytes = Vec::with_capacity(1024);
        begin_request(&mut bytes, "INVITE", &binding.contact, local, &branch);
        let _ = write!(
            bytes,
            "From: {from_hdr}\r\nTo: {to_hdr}\r\nContact: <sip:{caller}@{local}>\r\n"
        );
        let _ = write!(bytes, "Call-ID: {call_id}\r\nCSeq: 102 INVITE\r\n");
        finish(&mut bytes, Some("application/sdp"), body);
        self.by_call_id.insert(call_id.clone(), (id, Leg::B));
        c.b = Some(BLeg {
            call_id,
            uri: binding.contact.clone(),
            dst: binding.target,
            from_hdr,
            to_hdr,
            remote_uri: None,
            routes: Vec::new(),
            cseq: 102,
            branch,
            cancel_pending: false,
            final_code: None,
            ack: Vec::new(),
        });
        self.stats.b_legs += 1;
        self.start_tx(now_ms, id, TxSlot::Invite, binding.target, bytes, out);
    }

    /// CANCEL the B-leg if it has no final response yet (now, or once a provisional came).
    pub(super) fn cancel_b(&mut self, now_ms: u64, id: u64, out: &mut Outbox) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let provisional = c.txs[TxSlot::Invite as usize]
            .as_ref()
            .is_some_and(|t| t.provisional);
        let Some(b) = c.b.as_mut() else { return };
        if b.final_code.is_some() {
            return;
        }
        if !provisional {
            b.cancel_pending = true;
            return;
        }
        let mut bytes = Vec::with_capacity(512);
        begin_request(&mut bytes, "CANCEL", &b.uri, self.local, &b.branch);
        let _ = write!(
            bytes,
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} CANCEL\r\n",
            b.from_hdr, b.to_hdr, b.call_id, b.cseq
        );
        finish(&mut bytes, None, b"");
        let dst = b.dst;
        self.stats.cancel_sent += 1;
        self.start_tx(now_ms, id, TxSlot::Cancel, dst, bytes, out);
    }

    /// An in-dialog request to the B-leg (ACK for its 2xx, BYE), through its route set.
    fn b_request(
        &mut self,
        id: u64,
        method: &str,
        seq: u32,
    ) -> Option<(std::net::SocketAddr, Vec<u8>)> {
        let branch = self.ids.branch();
        let b = self.calls.get(&id)?.b.as_ref()?;
        let target = b.remote_uri.as_deref().unwrap_or(&b.uri);
        let dst = next_hop(&b.routes, target, b.dst);
        let mut bytes = Vec::with_capacity(512);
        begin_request(&mut bytes, method, target, self.local, &branch);
        for r in &b.routes {
            let _ = write!(bytes, "Route: {r}\r\n");
        }
        let _ = write!(
            bytes,
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {seq} {method}\r\n",
            b.from_hdr, b.to_hdr, b.call_id
        );
        finish(&mut bytes, None, b"");
        Some((dst, bytes))
    }

    /// A 2xx from a second fork of the B-leg (the proxy forked to several contacts): ACK it
    /// and hang that dialog up at once (RFC 3261 §13.2.2.4); neither is retransmitted.
    fn drop_forked_dialog(&mut self, id: u64, msg: &Msg, out: &mut Outbox) {
        let branches = [self.ids.branch(), self.ids.branch()];
        let local = self.local;
        let Some(b) = self.calls.get(&id).and_then(|c| c.b.as_ref()) else {
            return;
        };
        let mut routes = record_routes(msg);
        routes.reverse();
        let target = msg.header("Contact").map(uri_of).unwrap_or(&b.uri);
        let dst = next_hop(&routes, target, b.dst);
        let to = msg.header("To").unwrap_or_default();
        for (method, branch, seq) in [
            ("ACK", &branches[0], b.cseq),
            ("BYE", &branches[1], b.cseq + 1),
        ] {
            out.push_with(dst, |bytes| {
                begin_request(bytes, method, target, local, branch);
                for r in &routes {
                    let _ = write!(bytes, "Route: {r}\r\n");
                }
                let _ = write!(
                    bytes,
                    "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {seq} {method}\r\n",
                    b.from_hdr, b.call_id
                );
                finish(bytes, None, b"");
            });
        }
        self.stats.bye_sent += 1;
    }

    /// BYE to the B-leg callee.
    pub(super) fn send_bye_b(&mut self, now_ms: u64, id: u64, out: &mut Outbox) {
        let Some(seq) = self
            .calls
            .get(&id)
            .and_then(|c| c.b.as_ref())
            .map(|b| b.cseq + 1)
        else {
            return;
        };
        if let Some((dst, bytes)) = self.b_request(id, "BYE", seq) {
            if let Some(c) = self.calls.get_mut(&id) {
                c.phase = Phase::Ending;
            }
            self.start_tx(now_ms, id, TxSlot::Bye, dst, bytes, out);
        }
    }

    /// A response on either leg of call `id`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_response(
        &mut self,
        now_ms: u64,
        id: u64,
        leg: Leg,
        code: u16,
        method: &str,
        msg: &Msg,
        out: &mut Outbox,
    ) {
        let slot = match method {
            "INVITE" => TxSlot::Invite,
            "CANCEL" => TxSlot::Cancel,
            "BYE" => TxSlot::Bye,
            _ => return,
        };
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        // Whether this answers a transaction we track (the BYE of a dropped fork does not).
        let mut had_tx = false;
        if let Some(s) = c.txs.get_mut(slot as usize) {
            had_tx = s.is_some();
            if code >= 200 {
                *s = None;
            } else if let Some(t) = s {
                t.provisional = true;
            }
        }
        match (leg, slot) {
            (Leg::B, TxSlot::Invite) => self.on_b_invite_response(now_ms, id, code, msg, out),
            (_, TxSlot::Bye) if code >= 200 && had_tx => self.set_done(now_ms, id),
            _ => {}
        }
    }

    fn on_b_invite_response(
        &mut self,
        now_ms: u64,
        id: u64,
        code: u16,
        msg: &Msg,
        out: &mut Outbox,
    ) {
        let reason = match msg.start {
            Start::Response { reason, .. } => reason,
            Start::Request { .. } => return,
        };
        let body = if msg.body.is_empty() {
            Body::None
        } else {
            Body::Bytes(msg.body)
        };
        let local = self.local;
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let a_open = c.a_final.is_none();
        let Some(b) = c.b.as_mut() else { return };
        if code < 200 {
            if b.cancel_pending {
                b.cancel_pending = false;
                self.cancel_b(now_ms, id, out);
            } else if code > 100 && a_open {
                self.respond_a(now_ms, id, code, reason, body, out);
            }
            return;
        }
        if code >= 300 {
            // Hop-by-hop ACK: same branch as the INVITE, To from the response.
            let mut ack = Vec::with_capacity(512);
            begin_request(&mut ack, "ACK", &b.uri, local, &b.branch);
            let to = msg.header("To").unwrap_or_default();
            let _ = write!(
                ack,
                "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {} ACK\r\n",
                b.from_hdr, b.call_id, b.cseq
            );
            finish(&mut ack, None, b"");
            out.push(b.dst, &ack);
            if b.final_code.is_none() {
                b.final_code = Some(code);
                self.stats.b_failed += 1;
                if a_open {
                    self.respond_a(now_ms, id, code, reason, Body::None, out);
                }
            }
            return;
        }
        if b.final_code.is_some() {
            let same_dialog = param(&b.to_hdr, "tag") == msg.to_tag();
            if same_dialog {
                // A retransmitted 2xx: our ACK got lost.
                let dst = next_hop(&b.routes, b.remote_uri.as_deref().unwrap_or(&b.uri), b.dst);
                out.push(dst, &b.ack);
            } else {
                self.drop_forked_dialog(id, msg, out);
            }
            return;
        }
        b.final_code = Some(code);
        b.remote_uri = msg.header("Contact").map(|v| uri_of(v).to_owned());
        b.routes = record_routes(msg);
        b.routes.reverse();
        b.to_hdr = msg.header("To").unwrap_or_default().to_owned();
        let cseq = b.cseq;
        self.stats.b_answered += 1;
        if let Some((dst, ack)) = self.b_request(id, "ACK", cseq) {
            out.push(dst, &ack);
            if let Some(b) = self.calls.get_mut(&id).and_then(|c| c.b.as_mut()) {
                b.ack = ack;
            }
        }
        if a_open {
            self.stats.answered += 1;
            let body = if let Body::Bytes(_) = body {
                body
            } else {
                Body::Sdp
            };
            self.respond_a(now_ms, id, 200, "OK", body, out);
            if let Some(c) = self.calls.get_mut(&id) {
                c.phase = Phase::Up;
            }
        } else {
            // The caller cancelled while the callee answered: hang the callee up.
            self.send_bye_b(now_ms, id, out);
        }
    }

    /// Retransmission or timeout of one of our client transactions.
    pub(super) fn on_tx_timer(&mut self, now_ms: u64, id: u64, slot: TxSlot, out: &mut Outbox) {
        let (t1, t2) = (self.cfg.t1_ms, self.cfg.t2_ms);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(Some(tx)) = c.txs.get_mut(slot as usize) else {
            return;
        };
        if now_ms.saturating_sub(tx.started_ms) >= 64 * t1 {
            if let Some(s) = c.txs.get_mut(slot as usize) {
                *s = None;
            }
            self.stats.timeouts += 1;
            match slot {
                TxSlot::Invite => {
                    self.stats.b_failed += 1;
                    self.respond_a(now_ms, id, 408, "Request Timeout", Body::None, out);
                }
                TxSlot::Bye => self.set_done(now_ms, id),
                TxSlot::Cancel => {}
            }
            return;
        }
        if slot == TxSlot::Invite && tx.provisional {
            return;
        }
        out.push(tx.dst, &tx.bytes);
        self.stats.retransmits_sent += 1;
        tx.interval_ms = if slot == TxSlot::Invite {
            tx.interval_ms * 2
        } else {
            (tx.interval_ms * 2).min(t2)
        };
        // Timer B/F fires at 64*T1 whatever the retransmission interval.
        let at = (now_ms + tx.interval_ms).min(tx.started_ms + 64 * t1);
        self.arm(at, id, super::engine::Timer::Tx(slot));
    }
}
