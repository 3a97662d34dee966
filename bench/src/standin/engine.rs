//! The sans-IO heart of the stand-in: [`Engine::handle_datagram`] takes `(now_ms, source,
//! bytes)` and appends datagrams to send to an [`Outbox`]; [`Engine::handle_timeout`] fires due
//! timers; [`Engine::next_deadline_ms`] says when to call it next. No sockets, no clock: the
//! server (or a test with a virtual clock) drives it.
//!
//! Dispatch: responses go to the call owning their Call-ID (`call.rs`/`bridge.rs`), answers
//! to our NOTIFYs are counted; REGISTER to the registrar (`register.rs`); SUBSCRIBE and
//! PUBLISH to `subscribe.rs`; OPTIONS and MESSAGE get a stateless 200; INVITE/ACK/BYE/CANCEL
//! go to the call state machine. Unreadable datagrams are dropped and counted; with
//! `silent on` every datagram is (a dead node).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;

use super::build::{begin_response, finish, sdp, tag_for_branch, Ids};
use super::call::Call;
use super::config::Config;
use super::events::{Events, Stats, Val};
use super::parse::{Msg, Start};
use super::register::Registry;

/// Datagrams produced by one engine call: one shared byte buffer plus `(destination, range)`.
#[derive(Debug, Default)]
pub struct Outbox {
    buf: Vec<u8>,
    items: Vec<(SocketAddr, Range<usize>)>,
}

impl Outbox {
    pub fn new() -> Self {
        Outbox {
            buf: Vec::with_capacity(64 * 1024),
            items: Vec::with_capacity(64),
        }
    }

    /// Queues one datagram written by `f`.
    pub fn push_with(&mut self, dst: SocketAddr, f: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        f(&mut self.buf);
        self.items.push((dst, start..self.buf.len()));
    }

    /// Queues a copy of `bytes`.
    pub fn push(&mut self, dst: SocketAddr, bytes: &[u8]) {
        self.push_with(dst, |b| b.extend_from_slice(bytes));
    }

    /// The queued datagrams, in order.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.items
            .iter()
            .map(|(d, r)| (*d, self.buf.get(r.clone()).unwrap_or_default()))
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
    }
}

/// Which dialog of a call a Call-ID names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// The incoming call (from the proxy; the stand-in is UAS).
    A,
    /// The call the stand-in placed in dial mode (the stand-in is UAC).
    B,
}

/// Timer kinds; a timer for a call that moved on is ignored when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// Send the 200 in answer mode.
    Answer,
    /// Retransmit the final response to the A-leg INVITE until its ACK.
    ResponseRetx,
    /// Retransmit (or time out) one of our client transactions.
    Tx(TxSlot),
    /// Answer mode: hang up after `hangup_after_ms`.
    Hangup,
    /// Forget a finished call.
    Reap,
    /// `max_call_ms` reached: end the call whatever its state.
    Expire,
}

/// The client transactions a call can have in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TxSlot {
    Invite = 0,
    Cancel = 1,
    Bye = 2,
}

/// The stand-in's whole state.
#[derive(Debug)]
pub struct Engine {
    pub(super) cfg: Config,
    pub(super) local: SocketAddr,
    pub(super) sdp: Vec<u8>,
    pub(super) ids: Ids,
    pub(super) regs: Registry,
    pub(super) calls: HashMap<u64, Call>,
    pub(super) by_call_id: HashMap<String, (u64, Leg)>,
    pub(super) next_call: u64,
    timers: BinaryHeap<Reverse<(u64, u64, Timer)>>,
    pub(super) stats: Stats,
    pub(super) events: Events,
    /// `silent on`: every SIP datagram is dropped unanswered (a dead Asterisk).
    pub(super) silent: bool,
    /// Voicemail counts (new, old) per user, set by `mwi` (see `subscribe.rs`).
    pub(super) mailboxes: HashMap<String, (u32, u32)>,
}

impl Engine {
    /// A new engine answering at `local` (used in Via, Contact and SDP). `seed` varies the
    /// generated tags between runs.
    pub fn new(cfg: Config, local: SocketAddr, seed: u64) -> Self {
        let events = Events::new(cfg.events.is_some());
        Engine {
            cfg,
            local,
            sdp: sdp(local),
            ids: Ids::new(seed),
            regs: Registry::default(),
            calls: HashMap::new(),
            by_call_id: HashMap::new(),
            next_call: 1,
            timers: BinaryHeap::new(),
            stats: Stats::default(),
            events,
            silent: false,
            mailboxes: HashMap::new(),
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn registry(&self) -> &Registry {
        &self.regs
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Enables the event log even without a file (tests read it through [`Engine::drain_events`]).
    pub fn enable_events(&mut self) {
        self.events = Events::new(true);
    }

    /// Hands pending JSON event lines to `f`.
    pub fn drain_events(&mut self, f: impl FnOnce(&[u8])) {
        self.events.drain(f);
    }

    /// Earliest pending timer.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.timers.peek().map(|Reverse((t, _, _))| *t)
    }

    pub(super) fn arm(&mut self, at_ms: u64, call: u64, timer: Timer) {
        self.timers.push(Reverse((at_ms, call, timer)));
    }

    /// Handles one received datagram.
    pub fn handle_datagram(&mut self, now_ms: u64, src: SocketAddr, data: &[u8], out: &mut Outbox) {
        self.stats.received += 1;
        let Ok(msg) = Msg::parse(data) else {
            self.stats.dropped += 1;
            return;
        };
        let (Some(call_id), Some((_, cseq_method))) = (msg.call_id(), msg.cseq()) else {
            self.stats.dropped += 1;
            return;
        };
        if self.silent {
            self.stats.ignored += 1;
            let what = msg.method().unwrap_or("response");
            let fields = [("method", Val::Str(what)), ("call_id", Val::Str(call_id))];
            self.events.record(now_ms, "ignored", src, &fields, None);
            return;
        }
        match msg.start {
            Start::Response { code, .. } => match self.by_call_id.get(call_id).copied() {
                Some((id, leg)) => self.on_response(now_ms, id, leg, code, cseq_method, &msg, out),
                None if cseq_method == "NOTIFY" => self.on_notify_response(now_ms, src, code, &msg),
                None => self.stats.dropped += 1,
            },
            Start::Request { method, .. } => match method {
                "REGISTER" => self.on_register(now_ms, src, &msg, out),
                "SUBSCRIBE" => self.on_subscribe(now_ms, src, &msg, out),
                "PUBLISH" => self.on_publish(now_ms, src, &msg, out),
                "OPTIONS" => self.on_simple(now_ms, src, method, &msg, out),
                "MESSAGE" => {
                    if self.admit_call(src, method, &msg, out) {
                        self.on_simple(now_ms, src, method, &msg, out);
                    }
                }
                "INVITE" | "ACK" | "BYE" | "CANCEL" => {
                    let known = self.by_call_id.get(call_id).copied();
                    let new_invite =
                        method == "INVITE" && known.is_none() && msg.to_tag().is_none();
                    if new_invite && !self.admit_call(src, method, &msg, out) {
                        return;
                    }
                    self.on_call_request(now_ms, src, method, known, data, &msg, out);
                }
                _ => {
                    self.stats.other += 1;
                    let known = self.by_call_id.contains_key(call_id);
                    let (code, reason) = if known {
                        (200, "OK")
                    } else {
                        (405, "Method Not Allowed")
                    };
                    self.respond_stateless(src, &msg, code, reason, out);
                }
            },
        }
    }

    /// Fires every timer due at `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64, out: &mut Outbox) {
        while let Some(Reverse((at, call, timer))) = self.timers.peek().copied() {
            if at > now_ms {
                break;
            }
            self.timers.pop();
            self.on_timer(now_ms, call, timer, out);
        }
    }

    /// OPTIONS (keepalive) and MESSAGE: 200 OK, counted and logged.
    fn on_simple(
        &mut self,
        now_ms: u64,
        src: SocketAddr,
        method: &str,
        msg: &Msg,
        out: &mut Outbox,
    ) {
        if method == "OPTIONS" {
            self.stats.options += 1;
        } else {
            self.stats.message += 1;
        }
        let ev = if method == "OPTIONS" {
            "options"
        } else {
            "message"
        };
        let fields = [("call_id", Val::Str(msg.call_id().unwrap_or_default()))];
        self.events.record(now_ms, ev, src, &fields, Some(msg));
        self.respond_stateless(src, msg, 200, "OK", out);
    }

    /// A response needing no state: the To tag derives from the branch so a retransmitted
    /// request gets an identical answer.
    pub(super) fn respond_stateless(
        &mut self,
        src: SocketAddr,
        msg: &Msg,
        code: u16,
        reason: &str,
        out: &mut Outbox,
    ) {
        let mut tag = [0u8; 16];
        let h = tag_for_branch(msg.branch().unwrap_or_default());
        let tag = hex16(h, &mut tag);
        out.push_with(src, |b| {
            begin_response(b, msg, code, reason, Some(tag));
            if code == 405 || msg.method() == Some("OPTIONS") {
                b.extend_from_slice(
                    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH\r\n",
                );
            }
            finish(b, None, b"");
        });
    }
}

/// `v` as 16 lowercase hex digits in `buf`.
pub(super) fn hex16(v: u64, buf: &mut [u8; 16]) -> &str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, slot) in buf.iter_mut().enumerate() {
        *slot = HEX[((v >> (60 - 4 * i)) & 15) as usize];
    }
    std::str::from_utf8(buf).unwrap_or_default()
}
