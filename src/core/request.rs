//! A request's path through the core: sanity checks (RFC 3261 §16.3), retransmission
//! absorption (§17.2.3 matching), CANCEL (§16.10), digest authentication of phones (with
//! parking while the credential is looked up) and the routing decision.

use crate::sip::{Message, Method, ParseError, Uri, EMPTY_HEADER, MAX_HEADERS};
use crate::util::fnv::hash_parts;

use super::branch::{check_branch, Checked};
use super::build::Tag;
use super::delayed::Capture;
use super::ports::{AuthCheck, AuthFailure};
use super::response::{BranchEnd, Parent};
use super::text::InlineStr;
use super::txn::{CancelState, ClientState, KeyMap};
use super::{Core, Flow, LookupRequest, LookupResult, Now, Transmit, MAX_USER_LEN};

/// What the routing functions need to know about the request being handled.
pub(super) struct ReqCtx<'a> {
    pub now: Now,
    /// The flow the request came by (its responses go back by it).
    pub from: Flow,
    pub data: &'a [u8],
    /// Server transaction key (§17.2.3) and the Via bytes that confirm it.
    pub key: u64,
    pub via_id: &'a [u8],
    /// The request's loop-detection hash (computed once from the headers parsed here).
    pub loop_hash: u64,
    /// When the request arrived (monotonic ms; earlier than `now` when it resumes after a
    /// credential lookup).
    pub arrived_ms: u64,
}

/// A parked request processed again after its credential lookup.
#[derive(Debug, Clone, Copy)]
pub(super) struct Resumed {
    pub result: LookupResult,
    /// When it first arrived (monotonic ms).
    pub arrived_ms: u64,
}

/// Method class for transaction matching: ACK matches the INVITE transaction.
fn method_class(m: Method<'_>) -> u8 {
    match m {
        Method::Invite | Method::Ack => 1,
        Method::Cancel => 2,
        _ => 3,
    }
}

pub(super) fn txn_key(via_id: &[u8], class: u8, call_id: &str, seq: u32) -> u64 {
    hash_parts(&[via_id, &[class], call_id.as_bytes(), &seq.to_le_bytes()])
}

/// Whether the request carries the credentials a challenge asks for (Authorization for
/// REGISTER, Proxy-Authorization otherwise): the second step of a flow. Presence only.
fn has_credentials(msg: &Message<'_, '_>, method: Method<'_>) -> bool {
    let name = if method == Method::Register {
        crate::sip::HeaderName::Authorization
    } else {
        crate::sip::HeaderName::ProxyAuthorization
    };
    msg.header(name).is_some()
}

/// Requests waiting for a credential lookup, with their bytes.
pub(super) struct Parked {
    slots: Vec<ParkedReq>,
    free: Vec<u32>,
    by_token: KeyMap,
    limit: usize,
}

struct ParkedReq {
    gen: u32,
    token: u64,
    live: bool,
    data: Vec<u8>,
    from: Flow,
    arrived_ms: u64,
}

impl Parked {
    pub fn new(limit: usize) -> Self {
        Parked {
            slots: Vec::new(),
            free: Vec::new(),
            by_token: KeyMap::default(),
            limit,
        }
    }

    /// Change the limit (a reload); requests already parked stay.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    fn park(&mut self, token: u64, data: &[u8], from: Flow, now_ms: u64) -> Option<(u32, u32)> {
        if self.slots.len() - self.free.len() >= self.limit {
            // (A reload may have lowered the limit below the slots already made.)
            return None;
        }
        let idx = match self.free.pop() {
            Some(i) => i,
            None if self.slots.len() < self.limit => {
                self.slots.push(ParkedReq {
                    gen: 0,
                    token: 0,
                    live: false,
                    data: Vec::new(),
                    from,
                    arrived_ms: now_ms,
                });
                (self.slots.len() - 1) as u32
            }
            None => return None,
        };
        let p = &mut self.slots[idx as usize];
        p.gen = p.gen.wrapping_add(1);
        p.token = token;
        p.live = true;
        p.data.clear();
        p.data.extend_from_slice(data);
        p.from = from;
        p.arrived_ms = now_ms;
        self.by_token.insert(token, idx);
        Some((idx, p.gen))
    }

    /// Take the parked request for `token` (its bytes are swapped into `buf`): its flow and
    /// when it arrived.
    fn take(&mut self, token: u64, buf: &mut Vec<u8>) -> Option<(Flow, u64)> {
        let idx = self.by_token.remove(&token)?;
        let p = self.slots.get_mut(idx as usize)?;
        if !p.live {
            return None;
        }
        p.live = false;
        std::mem::swap(&mut p.data, buf);
        self.free.push(idx);
        Some((p.from, p.arrived_ms))
    }

    /// Drop a parked request that waited too long.
    pub fn expire(&mut self, idx: u32, gen: u32) -> bool {
        let Some(p) = self.slots.get_mut(idx as usize) else {
            return false;
        };
        if !p.live || p.gen != gen {
            return false;
        }
        p.live = false;
        self.by_token.remove(&p.token);
        self.free.push(idx);
        true
    }
}

/// How long a request may wait for its credential lookup.
const PARK_TIMEOUT_MS: u64 = 8_000;

impl Core {
    pub(super) fn on_request(
        &mut self,
        now: Now,
        from: Flow,
        data: &[u8],
        tx: &mut dyn Transmit,
        resumption: Option<Resumed>,
    ) {
        let resumed = resumption.map(|r| r.result);
        let mut hdrs = [EMPTY_HEADER; MAX_HEADERS];
        let msg = match Message::parse_datagram(data, &mut hdrs) {
            Ok(m) => m,
            Err(e) => {
                self.stats.dropped_malformed += 1;
                self.reply_unparsed(e, from, data, tx);
                return;
            }
        };
        let Some(method) = msg.method() else {
            return;
        };
        // Known scanners get no answer at all (Asterisk and allow-listed sources excepted).
        if msg
            .user_agent()
            .is_some_and(|ua| self.ports.guard.is_scanner(ua.as_bytes()))
            && !self.ports.guard.is_exempt(from.remote.ip())
        {
            self.stats.dropped_scanner += 1;
            return;
        }
        let Ok(via) = msg.top_via() else {
            // A malformed Via: answered (raw lines copied) to where the datagram came from;
            // without any Via line nothing is answered.
            self.stats.dropped_malformed += 1;
            if method != Method::Ack {
                self.reply(&msg, from, 400, "Bad Request (malformed Via)", tx);
            }
            return;
        };
        // From and To are parsed once here and their parts reused below.
        let (call_id, cseq, from_hdr, to) = match (msg.call_id(), msg.cseq(), msg.from(), msg.to())
        {
            (Ok(c), Ok(s), Ok(f), Ok(t)) => (c, s, f, t),
            _ => {
                if method != Method::Ack {
                    let reason = "Bad Request (missing or malformed header)";
                    self.reply(&msg, from, 400, reason, tx);
                }
                self.stats.dropped_malformed += 1;
                return;
            }
        };
        if data.len() > self.cfg.max_message_bytes {
            if method != Method::Ack {
                self.reply(&msg, from, 513, "Message Too Large", tx);
            }
            return;
        }
        if cseq.method != method {
            if method != Method::Ack {
                self.reply(&msg, from, 400, "Bad Request (CSeq method)", tx);
            }
            return;
        }
        let ruri_str = msg.request_uri().unwrap_or("");
        let ruri = match Uri::parse(ruri_str) {
            Ok(u) => u,
            Err(e) => {
                if method != Method::Ack {
                    let (code, reason) = match e {
                        ParseError::UnsupportedScheme => (416, "Unsupported URI Scheme"),
                        _ => (400, "Bad Request-URI"),
                    };
                    self.reply(&msg, from, code, reason, tx);
                }
                return;
            }
        };

        let via_id = &data[via.span.range()];
        let class = method_class(method);
        let key = txn_key(via_id, class, call_id, cseq.seq);
        let ctx = ReqCtx {
            now,
            from,
            data,
            key,
            via_id,
            loop_hash: loop_hash_of(ruri_str, from_hdr.tag(), to.tag(), call_id, cseq.seq),
            arrived_ms: resumption.map_or(now.mono_ms, |r| r.arrived_ms),
        };

        if method == Method::Ack {
            if let Some(idx) = self.txns.find_server(key, via_id) {
                self.txns.server_acked(idx, now.mono_ms);
                self.stats.retransmissions_absorbed += 1;
                return;
            }
            // The ACK of a response the proxy sent statelessly (the 407/401 challenge of
            // every call, a 403, 404, ...): its To tag is the one that response carried,
            // derived from the same Via, From and Call-ID. Absorbed like Kamailio's sl
            // module does, so the challenge needs no transaction (RFC 3261 §16.2 lets a
            // proxy challenge statelessly; a retransmitted INVITE just gets a fresh 407).
            if to.tag().is_some_and(|t| {
                t.len() == Tag::LEN && t.as_bytes() == Tag::for_request(&msg).as_str().as_bytes()
            }) {
                self.stats.retransmissions_absorbed += 1;
                return;
            }
            // An ACK for a 2xx is its own transaction: route it within the dialog.
            self.route_in_dialog(&ctx, &msg, method, ruri_str, true, tx);
            return;
        }
        if method == Method::Register {
            let max_age = 64 * self.cfg.timers.t1_ms;
            if let Some(resp) = self.reg_cache.get(key, via_id, now.mono_ms, max_age) {
                self.stats.retransmissions_absorbed += 1;
                tx.send(from, resp);
                return;
            }
        }
        if resumption.is_none() && self.delayed.holds(key) {
            // Its failed authentication is answered when due (`delayed.rs`).
            self.stats.retransmissions_absorbed += 1;
            return;
        }
        if let Some(idx) = self.txns.find_server(key, via_id) {
            self.stats.retransmissions_absorbed += 1;
            if let Some(t) = self.txns.servers.get(idx) {
                if !t.response.is_empty() {
                    tx.send(t.from, &t.response);
                }
            }
            return;
        }
        if method == Method::Cancel {
            let invite_key = txn_key(via_id, 1, call_id, cseq.seq);
            self.on_cancel(&ctx, &msg, invite_key, tx);
            return;
        }

        // RFC 3261 §16.3 (5): this proxy supports no extension a Proxy-Require can name.
        if msg.header(crate::sip::HeaderName::ProxyRequire).is_some() {
            self.reply_bad_extension(&msg, from, tx);
            return;
        }
        match msg.max_forwards() {
            Ok(Some(0)) => {
                if method == Method::Options
                    && ruri.user.is_none()
                    && self.cfg.is_local_host(ruri.host_raw, ruri.port)
                {
                    self.reply_options(&msg, from, tx);
                } else {
                    self.reply(&msg, from, 483, "Too Many Hops", tx);
                }
                return;
            }
            Ok(_) => {}
            Err(_) => {
                self.reply(&msg, from, 400, "Bad Max-Forwards", tx);
                return;
            }
        }
        if self.is_loop(&msg, ctx.loop_hash) {
            self.reply(&msg, from, 482, "Loop Detected", tx);
            return;
        }

        let from_asterisk = self.cfg.is_asterisk(from.remote);
        if to.tag().is_some() {
            self.route_in_dialog(&ctx, &msg, method, ruri_str, false, tx);
            return;
        }
        // A cluster peer's request for a phone whose flow is on this node (`peer.rs`).
        if self.forward_from_peer(&ctx, &msg, method, ruri_str, tx) {
            return;
        }
        let to_us = self.cfg.is_local_host(ruri.host_raw, ruri.port);
        if method == Method::Options && ruri.user.is_none() && to_us {
            self.reply_options(&msg, from, tx);
            return;
        }

        // Shutting down: no new work; transactions and dialogs in progress go on.
        if self
            .ports
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.reply_unavailable(&msg, &ctx, tx);
            return;
        }
        // Overloaded (receive backlog, `Core::set_backlog`): a new request from a phone is
        // refused before any digest work, at the first level only if it carries no
        // credentials (it would start a new flow). What keeps existing work going passed
        // above (ACK, CANCEL, retransmissions, in-dialog requests, keep-alive OPTIONS);
        // Asterisk's requests and requests resuming after a credential lookup pass too.
        if self.shed != super::Shed::Off
            && !from_asterisk
            && resumed.is_none()
            && (self.shed == super::Shed::All || !has_credentials(&msg, method))
        {
            self.stats.shed_overload += 1;
            self.reply_unavailable(&msg, &ctx, tx);
            return;
        }
        let mut user_buf = [0u8; MAX_USER_LEN];
        let mut user_len = 0;
        let mut replayed = false;
        if !from_asterisk {
            if !to_us {
                self.reply(&msg, from, 403, "Not relaying", tx);
                return;
            }
            match self.authenticate(&ctx, &msg, method, ruri_str, resumed, tx) {
                Some((u, r)) if u.len() <= MAX_USER_LEN => {
                    replayed = r;
                    user_buf[..u.len()].copy_from_slice(u.as_bytes());
                    user_len = u.len();
                }
                Some(_) => {
                    self.reply(&msg, from, 403, "Forbidden (user name too long)", tx);
                    return;
                }
                None => return,
            }
        }
        let user = std::str::from_utf8(&user_buf[..user_len]).unwrap_or("");
        // Like Kamailio's auth_check(.., 1): a phone may only send as itself.
        if !from_asterisk && self.cfg.check_from_user && method != Method::Register {
            let from_user = from_hdr.uri().ok().and_then(|u| u.user);
            if from_user != Some(user) {
                self.stats.auth_failed += 1;
                let reason = "Forbidden (From user is not the authenticated user)";
                self.reply(&msg, from, 403, reason, tx);
                return;
            }
        }

        match method {
            Method::Register if from_asterisk => {
                self.reply(&msg, from, 403, "Forbidden (REGISTER from Asterisk)", tx);
            }
            Method::Register => self.on_register(&ctx, &msg, user, replayed, tx),
            Method::Invite if !from_asterisk => {
                self.forward_to_asterisk(&ctx, &msg, user, call_id, tx)
            }
            // BLF, presence, MWI, feature events: Asterisk holds hints and mailboxes.
            Method::Subscribe | Method::Publish
                if !from_asterisk && self.event_for_asterisk(&msg) =>
            {
                self.forward_to_asterisk(&ctx, &msg, user, call_id, tx)
            }
            _ => self.forward_to_user(&ctx, &msg, method, &ruri, tx),
        }
    }

    /// Check a phone's credentials; the authenticated user name (and whether its nonce count
    /// was replayed, which only a REGISTER retransmission may be), or `None` when the request
    /// was answered (challenge, 503) or parked.
    fn authenticate<'b>(
        &mut self,
        ctx: &ReqCtx<'_>,
        msg: &Message<'_, 'b>,
        method: Method<'_>,
        ruri: &str,
        resumed: Option<LookupResult>,
        tx: &mut dyn Transmit,
    ) -> Option<(&'b str, bool)> {
        let proxy = method != Method::Register;
        let creds = match msg.authorization(proxy) {
            Some(Ok(c)) => c,
            Some(Err(_)) | None => {
                self.challenge(ctx, msg, proxy, false, tx);
                return None;
            }
        };
        let verdict = self.ports.auth.check(
            &creds,
            method.as_str(),
            ruri,
            ctx.now.wall_ms,
            ctx.from.remote.ip(),
        );
        match verdict {
            AuthCheck::Ok => {
                self.stats.auth_ok += 1;
                self.ports.guard.on_auth_success(
                    ctx.from.remote.ip(),
                    creds.username.raw(),
                    ctx.now.wall_ms,
                );
                Some((creds.username.raw(), false))
            }
            AuthCheck::Replayed if !proxy => Some((creds.username.raw(), true)),
            AuthCheck::Replayed => {
                log_refusal(ctx, creds.username.raw(), AuthFailure::Replay);
                self.challenge(ctx, msg, proxy, false, tx);
                None
            }
            AuthCheck::Challenge { stale } => {
                if stale {
                    log_refusal(ctx, creds.username.raw(), AuthFailure::StaleNonce);
                }
                self.challenge(ctx, msg, proxy, stale, tx);
                None
            }
            AuthCheck::Failed(reason) => {
                self.auth_failed(ctx, msg, creds.username.raw(), reason, proxy, tx);
                None
            }
            AuthCheck::Lookup => {
                match resumed {
                    Some(LookupResult::Failed) => self.reply_unavailable(msg, ctx, tx),
                    Some(LookupResult::Ready) => {
                        // Looked up and still unknown: a wrong user name.
                        let reason = AuthFailure::UnknownUser;
                        self.auth_failed(ctx, msg, creds.username.raw(), reason, proxy, tx);
                    }
                    None => self.park(ctx, msg, creds.username.raw(), tx),
                }
                None
            }
            AuthCheck::Unavailable => {
                self.reply_unavailable(msg, ctx, tx);
                None
            }
        }
    }

    /// Wrong password or unknown user: count it (the guard may ban the source) and challenge
    /// again, unless the source was just banned.
    fn auth_failed(
        &mut self,
        ctx: &ReqCtx<'_>,
        msg: &Message<'_, '_>,
        user: &str,
        reason: AuthFailure,
        proxy: bool,
        tx: &mut dyn Transmit,
    ) {
        self.stats.auth_failed += 1;
        log_refusal(ctx, user, reason);
        if self
            .ports
            .guard
            .on_auth_failure(ctx.from.remote.ip(), user, ctx.now.wall_ms)
        {
            return;
        }
        let delay = self.cfg.auth_failure_delay_ms;
        if delay == 0 {
            self.challenge(ctx, msg, proxy, false, tx);
            return;
        }
        // The new challenge leaves `delay` after the request arrived, whatever the failure
        // cost (`delayed.rs`); when no slot is free it is dropped, never sent early.
        let Some((idx, gen, bytes)) = self.delayed.take(ctx.key) else {
            self.stats.dropped_overload += 1;
            return;
        };
        let mut capture = Capture { bytes, to: None };
        self.challenge(ctx, msg, proxy, false, &mut capture);
        if self.delayed.fill(idx, capture) {
            let due = (ctx.arrived_ms + delay).max(ctx.now.mono_ms);
            self.txns.arm_delayed(due, idx, gen);
        }
    }

    /// 420 listing every option-tag of the Proxy-Require headers as Unsupported.
    fn reply_bad_extension(&mut self, msg: &Message<'_, '_>, to: Flow, tx: &mut dyn Transmit) {
        self.extra.clear();
        self.extra.extend_from_slice(b"Unsupported: ");
        let mut first = true;
        for tag in msg.proxy_require().flatten() {
            let safe = !tag.is_empty()
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
            if safe && self.extra.len() < 1024 {
                if !first {
                    self.extra.extend_from_slice(b", ");
                }
                self.extra.extend_from_slice(tag.as_bytes());
                first = false;
            }
        }
        if first {
            self.extra.clear();
        } else {
            self.extra.extend_from_slice(b"\r\n");
        }
        self.reply_with_extra(msg, to, 420, "Bad Extension", tx);
    }

    fn reply_unavailable(
        &mut self,
        msg: &Message<'_, '_>,
        ctx: &ReqCtx<'_>,
        tx: &mut dyn Transmit,
    ) {
        self.reply_503(msg, ctx.from, 5, "Service Unavailable", tx);
    }

    pub(super) fn challenge(
        &mut self,
        ctx: &ReqCtx<'_>,
        msg: &Message<'_, '_>,
        proxy: bool,
        stale: bool,
        tx: &mut dyn Transmit,
    ) {
        self.stats.auth_challenges += 1;
        self.extra.clear();
        self.ports.auth.write_challenge(
            &mut self.extra,
            proxy,
            stale,
            ctx.now.wall_ms,
            ctx.from.remote.ip(),
        );
        let (code, reason) = if proxy {
            (407, "Proxy Authentication Required")
        } else {
            (401, "Unauthorized")
        };
        self.reply_with_extra(msg, ctx.from, code, reason, tx);
    }

    /// Keep the request until the credential pool answers for `user`.
    fn park(&mut self, ctx: &ReqCtx<'_>, msg: &Message<'_, '_>, user: &str, tx: &mut dyn Transmit) {
        let Some(user) = InlineStr::<MAX_USER_LEN>::new(user).filter(|u| !u.is_empty()) else {
            self.challenge(ctx, msg, msg.method() != Some(Method::Register), false, tx);
            return;
        };
        let token = self.next_token;
        self.next_token += 1;
        match self.parked.park(token, ctx.data, ctx.from, ctx.now.mono_ms) {
            Some((idx, gen)) => {
                self.lookups.push_back(LookupRequest { token, user });
                self.stats.lookups_started += 1;
                self.txns
                    .arm_parked(ctx.now.mono_ms + PARK_TIMEOUT_MS, idx, gen);
            }
            None => {
                self.stats.dropped_overload += 1;
                self.reply_unavailable(msg, ctx, tx);
            }
        }
    }

    /// The credential pool answered for a parked request: process it again.
    pub fn handle_lookup(
        &mut self,
        now: Now,
        token: u64,
        result: LookupResult,
        tx: &mut dyn Transmit,
    ) {
        let mut buf = std::mem::take(&mut self.resume_buf);
        if let Some((from, arrived_ms)) = self.parked.take(token, &mut buf) {
            let resumed = Resumed { result, arrived_ms };
            self.on_request(now, from, &buf, tx, Some(resumed));
        }
        self.resume_buf = buf;
    }

    /// RFC 3261 §16.10: answer the CANCEL, cancel every pending branch.
    fn on_cancel(
        &mut self,
        ctx: &ReqCtx<'_>,
        msg: &Message<'_, '_>,
        invite_key: u64,
        tx: &mut dyn Transmit,
    ) {
        let Some(idx) = self.txns.find_server(invite_key, ctx.via_id) else {
            self.reply(msg, ctx.from, 481, "Call/Transaction Does Not Exist", tx);
            return;
        };
        self.reply(msg, ctx.from, 200, "OK", tx);
        let Some(t) = self.txns.servers.get_mut(idx) else {
            return;
        };
        if t.answered() || t.cancelled {
            return;
        }
        t.cancelled = true;
        self.cancel_branches(ctx.now.mono_ms, idx, tx);
    }

    /// Send CANCEL on every branch of server transaction `idx` still without a final
    /// response; branches that have not answered at all end now with a local 487.
    pub(super) fn cancel_branches(&mut self, now_ms: u64, idx: u32, tx: &mut dyn Transmit) {
        let Some(t) = self.txns.servers.get(idx) else {
            return;
        };
        let (branches, n, sgen) = (t.branches, usize::from(t.n_branches), t.gen);
        for &slot in &branches[..n] {
            let Some(ct) = self.txns.clients.get(slot) else {
                continue;
            };
            if !ct.invite || ct.cancel != CancelState::None {
                continue;
            }
            match ct.state {
                ClientState::Proceeding => self.send_cancel(now_ms, slot, tx),
                ClientState::Calling => {
                    // §9.1: the CANCEL waits for a provisional; upstream gets its 487 now.
                    if let Some(ct) = self.txns.clients.get_mut(slot) {
                        ct.cancel = CancelState::Wanted;
                    }
                    let parent = Parent { idx, gen: sgen };
                    self.branch_final(now_ms, parent, slot, BranchEnd::CancelledEarly, tx);
                }
                _ => {}
            }
        }
    }

    /// §16.3 (4): a Via of ours whose loop hash equals this request's means a loop.
    fn is_loop(&self, msg: &Message<'_, '_>, h: u64) -> bool {
        // Only a request that passed through this proxy can loop: skip parsing the Vias
        // unless one of them carries a branch of ours.
        let ours = msg.headers_named(crate::sip::HeaderName::Via).any(|h| {
            memchr::memmem::find(h.value, super::branch::BRANCH_PREFIX.as_bytes()).is_some()
        });
        if !ours {
            return false;
        }
        msg.vias().flatten().any(|v| {
            v.branch().is_some_and(|b| {
                matches!(check_branch(&self.cfg.branch_key, b),
                    Checked::Ours(b) if b.loop_hash == h && b.slot != u32::MAX)
            }) && !self.peer_via(&v)
        })
    }

    /// Whether a Via was written by another node of a cluster (same branch format, same
    /// request at each node: not a loop).
    fn peer_via(&self, v: &crate::sip::Via<'_>) -> bool {
        let ip = v.host.trim_start_matches('[').trim_end_matches(']');
        ip.parse::<std::net::IpAddr>().is_ok_and(|ip| {
            let addr = std::net::SocketAddr::new(ip, v.port.unwrap_or(5060));
            self.ports.location.is_peer(addr)
        })
    }

    /// RFC 3261 §16.6 (8): hash of what identifies the request at this hop (for a request
    /// parsed again, e.g. on failover; the first pass keeps it in [`ReqCtx::loop_hash`]).
    pub(super) fn loop_hash(&self, msg: &Message<'_, '_>) -> u64 {
        let from = msg.from().ok();
        let to = msg.to().ok();
        loop_hash_of(
            msg.request_uri().unwrap_or(""),
            from.as_ref().and_then(|f| f.tag()),
            to.as_ref().and_then(|t| t.tag()),
            msg.call_id().unwrap_or(""),
            msg.cseq().map(|c| c.seq).unwrap_or(0),
        )
    }
}

/// The loop-detection hash of a request from its parts (see [`Core::loop_hash`]).
fn loop_hash_of(
    ruri: &str,
    from_tag: Option<&str>,
    to_tag: Option<&str>,
    call_id: &str,
    seq: u32,
) -> u64 {
    hash_parts(&[
        ruri.as_bytes(),
        from_tag.unwrap_or("").as_bytes(),
        to_tag.unwrap_or("").as_bytes(),
        call_id.as_bytes(),
        &seq.to_le_bytes(),
    ])
}

/// The info line of a refused credential: source, user name and why; never the response,
/// the nonce or anything else of the Authorization header.
fn log_refusal(ctx: &ReqCtx<'_>, user: &str, reason: AuthFailure) {
    tracing::info!(src = %ctx.from.remote, user, reason = reason.as_str(), "authentication failed");
}
