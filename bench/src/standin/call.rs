//! The call state machine, A-leg side (the incoming INVITE; the stand-in is its UAS).
//!
//! A new INVITE creates a [`Call`] keyed by its Call-ID: 100 Trying at once, then by the
//! extension's mode: 180 + 200 (answer), 180 only (noanswer), 486 (busy), or a B-leg INVITE
//! to the callee's registered Contact (dial, see `bridge.rs`). Final responses to the A-leg are
//! retransmitted (T1 doubling, capped at T2) until the ACK; INVITE retransmissions get the last
//! response again. BYE from either leg is answered 200 and, when the other leg is up, sent on;
//! CANCEL gets 200, the INVITE gets 487 and a pending B-leg is cancelled. A finished call
//! lingers `4*T1` to absorb stray retransmissions, then is reaped.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;

use super::build::{begin_request, begin_response, finish};
use super::config::Mode;
use super::engine::{Engine, Leg, Outbox, Timer, TxSlot};
use super::events::Val;
use super::parse::{uri_addr, uri_of, uri_user, Msg};

/// One of our client transactions (INVITE/CANCEL/BYE) with what to retransmit.
#[derive(Debug)]
pub struct Tx {
    pub dst: SocketAddr,
    pub bytes: Vec<u8>,
    pub started_ms: u64,
    pub interval_ms: u64,
    /// INVITE only: a provisional response stopped retransmissions.
    pub provisional: bool,
}

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Early,
    Up,
    /// We sent a BYE and wait for its response.
    Ending,
    Done,
}

/// The outgoing leg of a bridged call (dial mode).
#[derive(Debug)]
pub struct BLeg {
    pub call_id: String,
    pub uri: String,
    pub dst: SocketAddr,
    pub from_hdr: String,
    /// The To header: without tag until the final response, then the response's To.
    pub to_hdr: String,
    pub remote_uri: Option<String>,
    /// Route set (Record-Route of the 2xx, reversed).
    pub routes: Vec<String>,
    pub cseq: u32,
    pub branch: String,
    pub cancel_pending: bool,
    pub final_code: Option<u16>,
    /// The ACK for its 2xx, re-sent when the 2xx is retransmitted.
    pub ack: Vec<u8>,
}

/// One call through the stand-in.
#[derive(Debug)]
pub struct Call {
    pub mode: Mode,
    pub exten: String,
    pub phase: Phase,
    pub a_call_id: String,
    pub a_src: SocketAddr,
    /// The A-leg INVITE as received; responses and our BYE are built from it.
    pub a_invite: Vec<u8>,
    pub a_to_tag: String,
    pub a_response: Vec<u8>,
    pub a_final: Option<u16>,
    pub a_acked: bool,
    pub a_retx_started_ms: u64,
    pub a_retx_interval_ms: u64,
    pub a_cseq_out: u32,
    pub b: Option<BLeg>,
    pub txs: [Option<Tx>; 3],
}

/// Body of a response to the A-leg.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    None,
    /// The stand-in's own SDP.
    Sdp,
    Bytes(&'a [u8]),
}

/// Every Record-Route entry of `msg`, in order.
pub fn record_routes(msg: &Msg) -> Vec<String> {
    let mut v = Vec::new();
    for h in msg.headers_named("Record-Route") {
        v.extend(
            h.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
        );
    }
    v
}

/// Where an in-dialog request goes: the first Route (loose routing), else the remote target.
pub fn next_hop(routes: &[String], target: &str, fallback: SocketAddr) -> SocketAddr {
    match routes.first() {
        Some(r) => uri_addr(uri_of(r)).unwrap_or(fallback),
        None => uri_addr(target).unwrap_or(fallback),
    }
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_call_request(
        &mut self,
        now_ms: u64,
        src: SocketAddr,
        method: &str,
        known: Option<(u64, Leg)>,
        data: &[u8],
        msg: &Msg,
        out: &mut Outbox,
    ) {
        match (method, known) {
            ("INVITE", None) if msg.to_tag().is_none() => {
                self.new_call(now_ms, src, data, msg, out)
            }
            ("INVITE", Some(_)) if msg.to_tag().is_some() => {
                // re-INVITE (session refresh, hold): accept with our SDP.
                out.push_with(src, |b| {
                    begin_response(b, msg, 200, "OK", None);
                    for rr in msg.headers_named("Record-Route") {
                        let _ = write!(b, "Record-Route: {rr}\r\n");
                    }
                    let _ = write!(b, "Contact: <sip:standin@{}>\r\n", self.local);
                    finish(b, Some("application/sdp"), &self.sdp);
                });
            }
            ("INVITE", Some((id, Leg::A))) => {
                self.stats.invite_retransmit += 1;
                if let Some(c) = self.calls.get(&id) {
                    out.push(c.a_src, &c.a_response);
                }
            }
            ("ACK", Some((id, Leg::A))) => self.on_ack(now_ms, id),
            ("ACK", _) => {}
            ("BYE", Some((id, leg))) => {
                self.stats.bye += 1;
                let fields = [
                    ("call_id", Val::Str(msg.call_id().unwrap_or_default())),
                    ("leg", Val::Str(leg_name(leg))),
                ];
                self.events.record(now_ms, "bye", src, &fields, None);
                self.respond_stateless(src, msg, 200, "OK", out);
                self.on_bye(now_ms, id, leg, out);
            }
            ("CANCEL", Some((id, Leg::A))) => self.on_cancel(now_ms, src, id, msg, out),
            _ => self.respond_stateless(src, msg, 481, "Call/Transaction Does Not Exist", out),
        }
    }

    fn new_call(&mut self, now_ms: u64, src: SocketAddr, data: &[u8], msg: &Msg, out: &mut Outbox) {
        let ruri = match msg.start {
            super::parse::Start::Request { uri, .. } => uri,
            super::parse::Start::Response { .. } => return,
        };
        let exten = uri_user(ruri)
            .or_else(|| msg.header("To").map(uri_of).and_then(uri_user))
            .unwrap_or_default();
        let mode = self.cfg.mode_for(exten);
        if mode == Mode::Drop {
            self.stats.invite_dropped += 1;
            let fields = [
                ("call_id", Val::Str(msg.call_id().unwrap_or_default())),
                ("exten", Val::Str(exten)),
            ];
            self.events
                .record(now_ms, "invite_dropped", src, &fields, None);
            return;
        }
        let id = self.next_call;
        self.next_call += 1;
        let call_id = msg.call_id().unwrap_or_default().to_owned();
        self.stats.invite += 1;
        self.stats.calls_active += 1;
        let fields = [
            ("call_id", Val::Str(&call_id)),
            ("exten", Val::Str(exten)),
            ("mode", Val::Str(mode_name(mode))),
            ("from", Val::Str(msg.header("From").unwrap_or_default())),
        ];
        self.events
            .record(now_ms, "invite", src, &fields, Some(msg));
        let call = Call {
            mode,
            exten: exten.to_owned(),
            phase: Phase::Early,
            a_call_id: call_id.clone(),
            a_src: src,
            a_invite: data.to_vec(),
            a_to_tag: self.ids.tag(),
            a_response: Vec::with_capacity(512),
            a_final: None,
            a_acked: false,
            a_retx_started_ms: 0,
            a_retx_interval_ms: 0,
            a_cseq_out: 1,
            b: None,
            txs: [None, None, None],
        };
        self.calls.insert(id, call);
        self.by_call_id.insert(call_id, (id, Leg::A));
        if self.cfg.max_call_ms > 0 {
            self.arm(now_ms + self.cfg.max_call_ms, id, Timer::Expire);
        }
        self.respond_a(now_ms, id, 100, "Trying", Body::None, out);
        match mode {
            Mode::Answer => {
                self.respond_a(now_ms, id, 180, "Ringing", Body::None, out);
                if self.cfg.answer_delay_ms == 0 {
                    self.answer(now_ms, id, out);
                } else {
                    self.arm(now_ms + self.cfg.answer_delay_ms, id, Timer::Answer);
                }
            }
            Mode::NoAnswer => self.respond_a(now_ms, id, 180, "Ringing", Body::None, out),
            Mode::Drop => {}
            Mode::Busy => {
                self.stats.busy += 1;
                self.respond_a(now_ms, id, 486, "Busy Here", Body::None, out);
            }
            Mode::Dial => match self.regs.get(exten, now_ms).cloned() {
                Some(binding) => self.start_b(now_ms, id, &binding, out),
                None => {
                    self.stats.not_found += 1;
                    self.respond_a(now_ms, id, 404, "Not Found", Body::None, out);
                }
            },
        }
    }

    /// Answer mode: the 200 with our SDP.
    pub(super) fn answer(&mut self, now_ms: u64, id: u64, out: &mut Outbox) {
        if self.calls.get(&id).is_some_and(|c| c.a_final.is_none()) {
            self.stats.answered += 1;
            self.respond_a(now_ms, id, 200, "OK", Body::Sdp, out);
            if let Some(c) = self.calls.get_mut(&id) {
                c.phase = Phase::Up;
            }
        }
    }

    /// Sends (and remembers, for retransmission) a response to the A-leg INVITE.
    pub(super) fn respond_a(
        &mut self,
        now_ms: u64,
        id: u64,
        code: u16,
        reason: &str,
        body: Body,
        out: &mut Outbox,
    ) {
        let t1 = self.cfg.t1_ms;
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.a_final.is_some() {
            return;
        }
        let Ok(inv) = Msg::parse(&call.a_invite) else {
            return;
        };
        let r = &mut call.a_response;
        r.clear();
        begin_response(
            r,
            &inv,
            code,
            reason,
            (code > 100).then_some(call.a_to_tag.as_str()),
        );
        if (101..300).contains(&code) {
            // RFC 3261 §12.1.1: a dialog-creating response echoes the Record-Route set, so the
            // caller's ACK and BYE come back through the proxy.
            for rr in inv.headers_named("Record-Route") {
                let _ = write!(r, "Record-Route: {rr}\r\n");
            }
            let _ = write!(r, "Contact: <sip:{}@{}>\r\n", call.exten, self.local);
        }
        // A WebRTC offer (a browser through sipfront's WSS) gets a WebRTC-shaped answer.
        let webrtc = match body {
            Body::Sdp => super::build::webrtc_answer(&call.a_invite, self.local),
            _ => None,
        };
        let body = match (body, &webrtc) {
            (_, Some(w)) => &w[..],
            (Body::None, None) => &[][..],
            (Body::Sdp, None) => &self.sdp[..],
            (Body::Bytes(b), None) => b,
        };
        finish(r, Some("application/sdp"), body);
        out.push(call.a_src, &call.a_response);
        if code >= 200 {
            call.a_final = Some(code);
            call.a_retx_started_ms = now_ms;
            call.a_retx_interval_ms = t1;
            self.arm(now_ms + t1, id, Timer::ResponseRetx);
        }
    }

    fn on_ack(&mut self, now_ms: u64, id: u64) {
        self.stats.ack += 1;
        let hangup = self.cfg.hangup_after_ms;
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.a_acked {
            return;
        }
        c.a_acked = true;
        match c.a_final {
            Some(code) if code >= 300 => self.set_done(now_ms, id),
            Some(_) if c.mode == Mode::Answer && hangup > 0 => {
                self.arm(now_ms + hangup, id, Timer::Hangup)
            }
            _ => {}
        }
    }

    fn on_bye(&mut self, now_ms: u64, id: u64, leg: Leg, out: &mut Outbox) {
        let Some(c) = self.calls.get(&id) else { return };
        if matches!(c.phase, Phase::Ending | Phase::Done) {
            return;
        }
        let b_up =
            c.b.as_ref()
                .is_some_and(|b| b.final_code.is_some_and(|f| f < 300));
        let a_up = c.a_final.is_some_and(|f| f < 300);
        match leg {
            Leg::A if b_up => self.send_bye_b(now_ms, id, out),
            Leg::B if a_up => self.send_bye_a(now_ms, id, out),
            _ => self.set_done(now_ms, id),
        }
    }

    fn on_cancel(&mut self, now_ms: u64, src: SocketAddr, id: u64, msg: &Msg, out: &mut Outbox) {
        self.stats.cancel += 1;
        let fields = [("call_id", Val::Str(msg.call_id().unwrap_or_default()))];
        self.events.record(now_ms, "cancel", src, &fields, None);
        let Some(c) = self.calls.get(&id) else { return };
        let tag = c.a_to_tag.as_str();
        out.push_with(src, |b| {
            begin_response(b, msg, 200, "OK", Some(tag));
            finish(b, None, b"");
        });
        if c.a_final.is_some() {
            return;
        }
        self.respond_a(now_ms, id, 487, "Request Terminated", Body::None, out);
        self.cancel_b(now_ms, id, out);
    }

    /// BYE to the A-leg caller, through its Record-Route set.
    pub(super) fn send_bye_a(&mut self, now_ms: u64, id: u64, out: &mut Outbox) {
        let branch = self.ids.branch();
        let local = self.local;
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Ok(inv) = Msg::parse(&c.a_invite) else {
            return;
        };
        let routes = record_routes(&inv);
        let target = inv.header("Contact").map(uri_of).unwrap_or_default();
        let dst = next_hop(&routes, target, c.a_src);
        let seq = c.a_cseq_out;
        c.a_cseq_out += 1;
        let mut bytes = Vec::with_capacity(512);
        begin_request(&mut bytes, "BYE", target, local, &branch);
        for r in &routes {
            let _ = write!(bytes, "Route: {r}\r\n");
        }
        let mut line = String::new();
        let _ = write!(
            line,
            "{};tag={}",
            inv.header("To").unwrap_or_default(),
            c.a_to_tag
        );
        let _ = write!(
            bytes,
            "From: {line}\r\nTo: {}\r\n",
            inv.header("From").unwrap_or_default()
        );
        let _ = write!(bytes, "Call-ID: {}\r\nCSeq: {seq} BYE\r\n", c.a_call_id);
        finish(&mut bytes, None, b"");
        c.phase = Phase::Ending;
        self.start_tx(now_ms, id, TxSlot::Bye, dst, bytes, out);
    }

    /// Ends a call that outlived `max_call_ms`: 480 to an unanswered caller (and CANCEL of a
    /// pending B-leg), BYE to both legs of an established call.
    fn expire(&mut self, now_ms: u64, id: u64, out: &mut Outbox) {
        let Some(c) = self.calls.get(&id) else { return };
        if c.phase == Phase::Done {
            return;
        }
        self.stats.timeouts += 1;
        let (open, up) = (c.a_final.is_none(), c.phase == Phase::Up);
        let b_up =
            c.b.as_ref()
                .is_some_and(|b| b.final_code.is_some_and(|f| f < 300));
        if open {
            self.cancel_b(now_ms, id, out);
            self.respond_a(now_ms, id, 480, "Temporarily Unavailable", Body::None, out);
        } else if up {
            if b_up {
                self.send_bye_b(now_ms, id, out);
            }
            // The A-leg BYE takes the BYE slot; the B-leg one above is sent once, unretried.
            self.send_bye_a(now_ms, id, out);
        }
        self.set_done(now_ms, id);
    }

    /// Sends a new client transaction and arms its retransmission timer.
    pub(super) fn start_tx(
        &mut self,
        now_ms: u64,
        id: u64,
        slot: TxSlot,
        dst: SocketAddr,
        bytes: Vec<u8>,
        out: &mut Outbox,
    ) {
        let t1 = self.cfg.t1_ms;
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        out.push(dst, &bytes);
        if slot == TxSlot::Bye {
            self.stats.bye_sent += 1;
        }
        let tx = Tx {
            dst,
            bytes,
            started_ms: now_ms,
            interval_ms: t1,
            provisional: false,
        };
        if let Some(s) = c.txs.get_mut(slot as usize) {
            *s = Some(tx);
        }
        self.arm(now_ms + t1, id, Timer::Tx(slot));
    }

    /// Marks the call finished and schedules its removal.
    pub(super) fn set_done(&mut self, now_ms: u64, id: u64) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.phase != Phase::Done {
            c.phase = Phase::Done;
            self.stats.calls_active = self.stats.calls_active.saturating_sub(1);
            self.arm(now_ms + 4 * self.cfg.t1_ms, id, Timer::Reap);
        }
    }

    pub(super) fn on_timer(&mut self, now_ms: u64, id: u64, timer: Timer, out: &mut Outbox) {
        let (t1, t2) = (self.cfg.t1_ms, self.cfg.t2_ms);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        match timer {
            Timer::Answer => self.answer(now_ms, id, out),
            Timer::ResponseRetx => {
                if c.a_acked || c.phase == Phase::Done {
                    return;
                }
                if now_ms.saturating_sub(c.a_retx_started_ms) >= 64 * t1 {
                    self.stats.timeouts += 1;
                    let up =
                        c.b.as_ref()
                            .is_some_and(|b| b.final_code.is_some_and(|f| f < 300));
                    if up && c.phase == Phase::Up {
                        self.send_bye_b(now_ms, id, out);
                    } else {
                        self.set_done(now_ms, id);
                    }
                    return;
                }
                out.push(c.a_src, &c.a_response);
                self.stats.retransmits_sent += 1;
                c.a_retx_interval_ms = (c.a_retx_interval_ms * 2).min(t2);
                let at = now_ms + c.a_retx_interval_ms;
                self.arm(at, id, Timer::ResponseRetx);
            }
            Timer::Tx(slot) => self.on_tx_timer(now_ms, id, slot, out),
            Timer::Hangup => {
                if c.phase == Phase::Up {
                    self.send_bye_a(now_ms, id, out);
                }
            }
            Timer::Expire => self.expire(now_ms, id, out),
            Timer::Reap => {
                if c.phase == Phase::Done {
                    if let Some(c) = self.calls.remove(&id) {
                        self.by_call_id.remove(&c.a_call_id);
                        if let Some(b) = c.b {
                            self.by_call_id.remove(&b.call_id);
                        }
                    }
                }
            }
        }
    }
}

pub fn leg_name(leg: Leg) -> &'static str {
    match leg {
        Leg::A => "a",
        Leg::B => "b",
    }
}

pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Answer => "answer",
        Mode::NoAnswer => "noanswer",
        Mode::Busy => "busy",
        Mode::Drop => "drop",
        Mode::Dial => "dial",
    }
}
