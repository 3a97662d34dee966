//! Stateful forwarding (RFC 3261 §16.6): to an Asterisk node (calls from phones), to every
//! registered contact of a user (requests from Asterisk and non-call requests between phones),
//! and within a dialog along the Route set the proxy Record-Routed (§16.4, §16.12).
//!
//! Each next hop is a [`Flow`]: requests to Asterisk leave from the worker's upstream socket,
//! requests to a phone from the local socket it registered through, in-dialog requests from
//! the interface their Route names. When a request leaves on another interface than it came
//! in on, the proxy Record-Routes twice (RFC 5658): the entry on top names the outgoing
//! interface, the one below the incoming one, so each side's in-dialog requests reach the
//! proxy on its own interface; both entries are removed again when such a request passes.

use std::net::{IpAddr, SocketAddr};

use crate::sip::{
    write_forward, ForwardOps, HeaderName, Host, Message, Method, Scheme, Span, Transport, Uri,
    ViaSpec,
};

use super::branch::{write_branch, OurBranch};
use super::dialog_token::{self, RecordRoute};
use super::ports::{ContactTarget, NodePick};
use super::request::ReqCtx;
use super::txn::{ClientCtx, Target, MAX_FORKS};
use super::{default_port, nat, Core, CoreConfig, Flow, Local, Transmit};

/// One next hop of a request.
pub(super) struct Hop<'a> {
    pub to: Flow,
    pub request_uri: Option<&'a str>,
    pub push_routes: &'a [&'a str],
    /// Our own Route entries to remove from the top (1, or 2 after a double Record-Route).
    pub remove_routes: u8,
    pub record_route: bool,
    /// Append `;alias=` of this address to the Contact (a phone behind NAT; see `nat.rs`).
    pub contact_alias: Option<SocketAddr>,
    /// Header lines to leave out: the phone's credentials for our realm, once checked.
    pub drop_lines: &'a [Span],
}

impl<'a> Hop<'a> {
    /// The rewrite that forwards a request over this hop: our Via on top, RFC 3581
    /// received/rport on the sender's Via, Max-Forwards − 1, Route and Record-Route as asked.
    fn ops<'o>(
        &'o self,
        via: ViaSpec<'o>,
        src: SocketAddr,
        record_routes: &'o [&'o str],
    ) -> ForwardOps<'o> {
        ForwardOps {
            request_uri: self.request_uri,
            add_via: Some(via),
            top_via_received: Some((src.ip(), src.port())),
            remove_routes: self.remove_routes,
            push_routes: self.push_routes,
            record_routes,
            decrement_max_forwards: true,
            drop_lines: self.drop_lines,
            ..ForwardOps::default()
        }
    }
}

/// A contact collected from the location table: ranges into `Core::targets_buf`.
#[derive(Clone, Copy)]
pub(super) struct TargetRec {
    uri: (u32, u32),
    path: (u32, u32),
    to: Flow,
}

/// Most Path entries of one binding turned into Route headers.
pub(super) const MAX_PATH: usize = 8;

/// Split a comma-joined list of Path name-addrs into bare URIs (`<` `>` removed).
pub(super) fn split_path<'a>(path: &'a str, out: &mut [&'a str; MAX_PATH]) -> usize {
    let mut n = 0;
    let mut depth_quote = false;
    let mut in_angle = false;
    let mut start = 0;
    let bytes = path.as_bytes();
    let mut push = |part: &'a str, n: &mut usize| {
        let part = part.trim();
        let uri = match (part.find('<'), part.rfind('>')) {
            (Some(a), Some(b)) if a < b => &part[a + 1..b],
            _ => part.split(';').next().unwrap_or(part),
        };
        if !uri.is_empty() && *n < MAX_PATH {
            out[*n] = uri;
            *n += 1;
        }
    };
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            b'"' if !in_angle => depth_quote = !depth_quote,
            b'<' if !depth_quote => in_angle = true,
            b'>' if !depth_quote => in_angle = false,
            b',' if !depth_quote && !in_angle => {
                push(&path[start..i], &mut n);
                start = i + 1;
            }
            _ => {}
        }
    }
    push(&path[start..], &mut n);
    n
}

/// The bit of farm node `index` in a tried mask.
fn tried_bit(index: u8) -> u64 {
    1u64.checked_shl(u32::from(index)).unwrap_or(0)
}

/// Methods that create a dialog and so are Record-Routed (§16.6 (4)).
pub(super) fn creates_dialog(m: Method<'_>) -> bool {
    matches!(
        m,
        Method::Invite | Method::Subscribe | Method::Refer | Method::Notify
    )
}

/// Most credential headers of one request removed when forwarding.
const MAX_OWN_CREDENTIALS: usize = 4;

/// The lines of `msg`'s `Proxy-Authorization` headers for `realm` (our own challenge,
/// already checked): like Kamailio's `consume_credentials`, they are not passed on.
fn own_credentials(
    msg: &Message<'_, '_>,
    realm: &str,
    out: &mut [Span; MAX_OWN_CREDENTIALS],
) -> usize {
    let mut n = 0;
    for h in msg.headers_named(HeaderName::ProxyAuthorization) {
        let ours = crate::sip::parse_digest(h.value).is_ok_and(|d| d.realm.eq_str(realm));
        if ours && n < out.len() {
            out[n] = h.line;
            n += 1;
        }
    }
    n
}

/// `Some(src)` when the request's Contact hides behind NAT (see `nat.rs`).
pub(super) fn nat_alias(msg: &Message<'_, '_>, src: SocketAddr) -> Option<SocketAddr> {
    nat::contact_behind_nat(msg, src).then_some(src)
}

/// The transport a URI asks for: its `transport=` parameter, TLS for `sips:`, else UDP.
pub(super) fn uri_transport(uri: &Uri<'_>) -> Transport {
    match uri
        .params
        .get("transport")
        .flatten()
        .and_then(Transport::parse)
    {
        Some(t) => t,
        None if uri.scheme == Scheme::Sips => Transport::Tls,
        None => Transport::Udp,
    }
}

/// The socket address a URI points at, if its host is an IP literal (the transport's
/// default port when it names none).
pub(super) fn uri_addr(uri: &Uri<'_>) -> Option<SocketAddr> {
    let ip = match uri.host {
        Host::V4(ip) => IpAddr::V4(ip),
        Host::V6(ip) => IpAddr::V6(ip),
        Host::Name(_) => return None,
    };
    let port = uri.port.unwrap_or(default_port(uri_transport(uri)));
    Some(SocketAddr::new(ip, port))
}

/// Where a request goes in, where it goes out, and how it is identified at this hop: what
/// [`Core::forward_branch`] needs besides the request and its next hop.
#[derive(Clone, Copy)]
pub(super) struct Leg {
    pub now_ms: u64,
    /// The flow the request came by.
    pub from: Flow,
    /// Its loop-detection hash (§16.6 (8)).
    pub loop_hash: u64,
}

impl Leg {
    pub(super) fn of(ctx: &ReqCtx<'_>) -> Leg {
        Leg {
            now_ms: ctx.now.mono_ms,
            from: ctx.from,
            loop_hash: ctx.loop_hash,
        }
    }
}

impl Core {
    /// Start a server transaction for the request in `ctx` (100 Trying at once for INVITE).
    /// `None` (after answering 503) when the worker is at its transaction limit.
    pub(super) fn start_server(
        &mut self,
        ctx: &ReqCtx<'_>,
        msg: &Message<'_, '_>,
        invite: bool,
        tx: &mut dyn Transmit,
    ) -> Option<u32> {
        match self
            .txns
            .start_server(ctx.key, ctx.via_id, invite, ctx.from, ctx.data)
        {
            Some(idx) => {
                if invite {
                    self.respond_txn(ctx.now.mono_ms, idx, 100, "Trying", tx);
                }
                Some(idx)
            }
            None => {
                self.stats.dropped_overload += 1;
                self.reply_503(msg, ctx.from, 5, "Service Unavailable", tx);
                None
            }
        }
    }

    /// The hop to Asterisk node `node` for a request from a phone: from the upstream
    /// socket, Record-Routed when it creates a dialog, without the phone's credentials for
    /// our realm.
    fn asterisk_hop<'a>(
        node: SocketAddr,
        msg: &Message<'_, '_>,
        src: SocketAddr,
        creds: &'a [Span],
    ) -> Hop<'a> {
        Hop {
            to: Flow::new(Local::Upstream, node),
            request_uri: None,
            push_routes: &[],
            remove_routes: 0,
            record_route: msg.method().is_some_and(creates_dialog),
            contact_alias: nat_alias(msg, src),
            drop_lines: creds,
        }
    }

    /// A new request from the authenticated phone `user` for Asterisk (an initial INVITE,
    /// or a SUBSCRIBE/PUBLISH of an event Asterisk serves): to the farm node its affinity
    /// key picks (Call-ID or caller for a call, the subscriber for a subscription), from
    /// this worker's upstream socket. No usable node: 503 with Retry-After at once.
    pub(super) fn forward_to_asterisk(
        &mut self,
        ctx: &ReqCtx<'_>,
        msg: &Message<'_, '_>,
        user: &str,
        call_id: &str,
        tx: &mut dyn Transmit,
    ) {
        let invite = msg.method() == Some(Method::Invite);
        let key = self.ports.farm.affinity(user, call_id, !invite);
        let (index, node) = match self.ports.farm.pick(key, 0, ctx.now.mono_ms) {
            NodePick::Node { index, addr } => (index, addr),
            NodePick::Busy { retry_after_secs } => {
                let reason = "Service Unavailable (Asterisk overloaded)";
                self.reply_503(msg, ctx.from, retry_after_secs, reason, tx);
                return;
            }
            NodePick::NoNode => {
                let reason = "Service Unavailable (no Asterisk node up)";
                self.reply_503(msg, ctx.from, 5, reason, tx);
                return;
            }
        };
        let Some(idx) = self.start_server(ctx, msg, invite, tx) else {
            return;
        };
        if let Some(t) = self.txns.servers.get_mut(idx) {
            t.target = Target::Asterisk {
                key,
                tried: tried_bit(index),
            };
        }
        let mut creds = [Span::default(); MAX_OWN_CREDENTIALS];
        let n_creds = own_credentials(msg, &self.cfg.realm, &mut creds);
        let hop = Core::asterisk_hop(node, msg, ctx.from.remote, &creds[..n_creds]);
        if !self.forward_branch(&Leg::of(ctx), idx, msg, &hop, tx) {
            self.respond_txn(ctx.now.mono_ms, idx, 503, "Service Unavailable", tx);
        }
    }

    /// Forward to the next Asterisk node after a 503/500/408 from the previous one (or its
    /// going down). False when the farm has no other node to offer.
    pub(super) fn failover(&mut self, now_ms: u64, idx: u32, tx: &mut dyn Transmit) -> bool {
        let Some(t) = self.txns.servers.get_mut(idx) else {
            return false;
        };
        let Target::Asterisk { key, tried } = t.target else {
            return false;
        };
        if t.cancelled || t.n_branches as usize >= MAX_FORKS {
            return false;
        }
        let NodePick::Node { index, addr: node } = self.ports.farm.pick(key, tried, now_ms) else {
            return false;
        };
        t.target = Target::Asterisk {
            key,
            tried: tried | tried_bit(index),
        };
        let from = t.from;
        let request = std::mem::take(&mut t.request);
        let mut hdrs = [crate::sip::EMPTY_HEADER; crate::sip::MAX_HEADERS];
        let ok = match Message::parse_datagram(&request, &mut hdrs) {
            Ok(msg) => {
                let mut creds = [Span::default(); MAX_OWN_CREDENTIALS];
                let n_creds = own_credentials(&msg, &self.cfg.realm, &mut creds);
                let leg = Leg {
                    now_ms,
                    from,
                    loop_hash: self.loop_hash(&msg),
                };
                let hop = Core::asterisk_hop(node, &msg, from.remote, &creds[..n_creds]);
                tracing::info!(%node, "failing over to the next Asterisk node");
                self.forward_branch(&leg, idx, &msg, &hop, tx)
            }
            Err(_) => false,
        };
        if let Some(t) = self.txns.servers.get_mut(idx) {
            t.request = request;
        }
        ok
    }

    /// Deliver to every registered contact of the request-URI user (parallel fork), each
    /// over the flow it registered through.
    pub(super) fn forward_to_user(
        &mut self,
        ctx: &ReqCtx<'_>,
        msg: &Message<'_, '_>,
        method: Method<'_>,
        ruri: &Uri<'_>,
        tx: &mut dyn Transmit,
    ) {
        let user = ruri.user.unwrap_or("");
        if user.is_empty() {
            self.reply(msg, ctx.from, 404, "Not Found", tx);
            return;
        }
        let mut buf = std::mem::take(&mut self.targets_buf);
        let mut recs = std::mem::take(&mut self.targets);
        buf.clear();
        recs.clear();
        self.ports
            .location
            .lookup(user, ctx.now.wall_ms, &mut |c: &ContactTarget<'_>| {
                if recs.len() >= MAX_FORKS {
                    return;
                }
                let u0 = buf.len() as u32;
                buf.extend_from_slice(c.uri.as_bytes());
                let p0 = buf.len() as u32;
                for (i, p) in c.path.iter().enumerate() {
                    if i > 0 {
                        buf.push(b',');
                    }
                    buf.extend_from_slice(p.as_bytes());
                }
                recs.push(TargetRec {
                    uri: (u0, p0),
                    path: (p0, buf.len() as u32),
                    to: c.to,
                });
            });
        // Bindings over a stream are reached over their connection only: one that closed is
        // unreachable now (no waiting for Timer B). A sips: request goes over TLS only.
        let total = recs.len();
        let secure_only = ruri.scheme == Scheme::Sips;
        let mut insecure = 0;
        recs.retain_mut(|r| {
            let secure = self.cfg.transport_of(r.to.local).is_secure();
            match self.reach(r.to) {
                Some(f) if secure || !secure_only => {
                    r.to = f;
                    true
                }
                Some(_) => {
                    insecure += 1;
                    false
                }
                None => false,
            }
        });
        if recs.is_empty() && insecure > 0 {
            // RFC 5630 §3.3: the phone is there, but not over TLS, as sips: demands.
            self.reply_lines(
                msg,
                ctx.from,
                480,
                "Temporarily Unavailable",
                b"Warning: 380 sipfront \"SIPS Not Allowed\"\r\n",
                tx,
            );
        } else if recs.is_empty() && total > 0 {
            self.reply(msg, ctx.from, 480, "Temporarily Unavailable", tx);
        } else if recs.is_empty() {
            // A known user without a binding: 480 for Asterisk; for a phone what
            // `[registrar] unregistered_answer` says (404 by default, like an unknown user,
            // so phones cannot enumerate users).
            let known = self.ports.auth.user_known(user, ctx.now.wall_ms);
            let code = if !known {
                404
            } else if self.cfg.is_asterisk(ctx.from.remote) {
                480
            } else {
                self.cfg.unregistered_code
            };
            let reason = match code {
                480 => "Temporarily Unavailable",
                _ => "Not Found",
            };
            self.reply(msg, ctx.from, code, reason, tx);
        } else if let Some(idx) = self.start_server(ctx, msg, method == Method::Invite, tx) {
            let from_asterisk = self.cfg.is_asterisk(ctx.from.remote);
            let mut creds = [Span::default(); MAX_OWN_CREDENTIALS];
            let n_creds = if from_asterisk {
                0
            } else {
                own_credentials(msg, &self.cfg.realm, &mut creds)
            };
            let leg = Leg::of(ctx);
            let mut sent = 0;
            for r in recs.iter() {
                let s = |(a, b): (u32, u32)| {
                    std::str::from_utf8(&buf[a as usize..b as usize]).unwrap_or("")
                };
                let mut routes = [""; MAX_PATH];
                let n_routes = split_path(s(r.path), &mut routes);
                let hop = Hop {
                    to: r.to,
                    request_uri: Some(s(r.uri)),
                    push_routes: &routes[..n_routes],
                    remove_routes: 0,
                    record_route: creates_dialog(method),
                    contact_alias: if from_asterisk {
                        None
                    } else {
                        nat_alias(msg, ctx.from.remote)
                    },
                    drop_lines: &creds[..n_creds],
                };
                if self.forward_branch(&leg, idx, msg, &hop, tx) {
                    sent += 1;
                }
            }
            if sent == 0 {
                self.respond_txn(ctx.now.mono_ms, idx, 503, "Service Unavailable", tx);
            }
        }
        self.targets_buf = buf;
        self.targets = recs;
    }

    /// A request inside a dialog (To-tag), or an ACK for a 2xx: loose routing through the
    /// Route set; stateless for ACK, stateful otherwise. No Route of ours: 404.
    ///
    /// The first Route must name this proxy; after a double Record-Route the second one
    /// does too, and names the interface the request leaves on. The next hop is the next
    /// Route or the request-URI (following a NAT alias of ours); a request to an Asterisk
    /// node leaves from the upstream socket.
    pub(super) fn route_in_dialog(
        &mut self,
        ctx: &ReqCtx<'_>,
        msg: &Message<'_, '_>,
        method: Method<'_>,
        ruri: &str,
        stateless: bool,
        tx: &mut dyn Transmit,
    ) {
        let mut routes = msg.routes();
        let first = routes
            .next()
            .and_then(|r| r.ok())
            .and_then(|na| na.uri().ok());
        let first_is_us = first
            .as_ref()
            .is_some_and(|u| self.cfg.is_us(u.host_raw, u.port));
        if !first_is_us {
            if !stateless {
                self.reply(msg, ctx.from, 404, "Not Here", tx);
            } else {
                self.stats.dropped_unmatched += 1;
            }
            return;
        }
        // Only dialogs this proxy Record-Routed are relayed for phones (no open relay).
        if !self.cfg.is_asterisk(ctx.from.remote) {
            let token = first
                .as_ref()
                .and_then(|u| u.params.get(dialog_token::PARAM))
                .flatten();
            let call_id = msg.call_id().unwrap_or("");
            if !token.is_some_and(|t| self.cfg.dialog_key.verify(call_id, t)) {
                self.stats.dropped_unmatched += 1;
                if !stateless {
                    let reason = "Forbidden (not a dialog of this proxy)";
                    self.reply(msg, ctx.from, 403, reason, tx);
                }
                return;
            }
        }
        let mut next = routes.next();
        // RFC 5658: the second entry of a double Record-Route is ours too; it names the
        // interface towards the next hop.
        let mut remove_routes = 1;
        let mut out_iface = None;
        if let Some(Ok(na)) = &next {
            if let Ok(u) = na.uri() {
                if let Some(i) = self
                    .cfg
                    .interface_named(u.host_raw, u.port, uri_transport(&u))
                {
                    remove_routes = 2;
                    out_iface = Some(i);
                    next = routes.next();
                }
            }
        }
        let mut routes_left = true;
        let next = match next {
            Some(Ok(na)) => na.uri,
            Some(Err(_)) => {
                if !stateless {
                    self.reply(msg, ctx.from, 400, "Bad Route", tx);
                }
                return;
            }
            None => {
                routes_left = false;
                ruri
            }
        };
        // The far end's request-URI may carry our NAT alias of a phone: follow it.
        let mut ruri_buf = [0u8; nat::MAX_RURI];
        let alias = if routes_left {
            None
        } else {
            nat::ruri_alias(ruri, &mut ruri_buf)
        };
        let (dst, new_ruri) = match alias {
            Some((addr, stripped)) => (Some(addr), Some(stripped)),
            None => (Uri::parse(next).ok().and_then(|u| uri_addr(&u)), None),
        };
        let Some(dst) = dst else {
            if !stateless {
                self.reply(msg, ctx.from, 404, "Unresolvable destination", tx);
            }
            return;
        };
        let local = if self.cfg.asterisk_index(dst).is_some() {
            Local::Upstream
        } else {
            match (out_iface, ctx.from.local) {
                (Some(i), _) => Local::Listen(i),
                (None, Local::Listen(i)) => Local::Listen(i),
                (None, Local::Upstream) => Local::Listen(self.cfg.asterisk_side),
            }
        };
        // Over a stream the far end is reached over its connection only.
        let Some(to) = self.reach(Flow::new(local, dst)) else {
            if !stateless {
                self.reply(
                    msg,
                    ctx.from,
                    408,
                    "Request Timeout (connection closed)",
                    tx,
                );
            }
            return;
        };
        let hop = Hop {
            to,
            request_uri: new_ruri,
            push_routes: &[],
            remove_routes,
            record_route: false,
            contact_alias: if self.cfg.is_asterisk(ctx.from.remote) {
                None
            } else {
                nat_alias(msg, ctx.from.remote)
                    .filter(|_| !self.ports.location.is_peer(ctx.from.remote))
            },
            drop_lines: &[],
        };
        if stateless {
            self.forward_stateless(msg, &Leg::of(ctx), &hop, tx);
            return;
        }
        let Some(idx) = self.start_server(ctx, msg, method == Method::Invite, tx) else {
            return;
        };
        if !self.forward_branch(&Leg::of(ctx), idx, msg, &hop, tx) {
            self.respond_txn(ctx.now.mono_ms, idx, 503, "Service Unavailable", tx);
        }
    }

    /// The flow that reaches `to`: a datagram flow as it is; on a stream interface, its
    /// connection while open, else an open connection to the same address. `None` when none
    /// is open (the phone is unreachable until it connects again).
    pub(super) fn reach(&self, to: Flow) -> Option<Flow> {
        let t = self.cfg.transport_of(to.local);
        if !t.is_stream() {
            return Some(to);
        }
        let links = &self.ports.links;
        let conn = to
            .conn
            .filter(|c| links.is_open(*c))
            .or_else(|| links.find(t, to.remote))?;
        Some(Flow {
            conn: Some(conn),
            ..to
        })
    }

    /// Start a client transaction for one branch of server transaction `idx` and send.
    pub(super) fn forward_branch(
        &mut self,
        leg: &Leg,
        idx: u32,
        msg: &Message<'_, '_>,
        hop: &Hop<'_>,
        tx: &mut dyn Transmit,
    ) -> bool {
        let invite = msg.method() == Some(Method::Invite);
        let Some(server_gen) = self.txns.servers.get(idx).map(|t| t.gen) else {
            return false;
        };
        let ctx = ClientCtx::Branch {
            server: idx,
            server_gen,
        };
        let Some((slot, gen)) = self.txns.start_client(invite, ctx, hop.to) else {
            self.stats.dropped_overload += 1;
            return false;
        };
        let branch = write_branch(
            &self.cfg.branch_key,
            &OurBranch {
                worker: self.worker,
                slot,
                gen,
                ingress: leg.from.local,
                loop_hash: leg.loop_hash,
            },
        );
        // RFC 5658: a request changing interface is Record-Routed on both.
        let call_id = msg.call_id().unwrap_or("");
        let (in_if, out_if) = (
            self.cfg.interface_index(leg.from.local),
            self.cfg.interface_index(hop.to.local),
        );
        let double = in_if != out_if;
        let rr_of = |local: Local| {
            RecordRoute::new(
                self.cfg
                    .interface(local)
                    .map_or("", |i| i.record_route.as_str()),
                double,
                &self.cfg.dialog_key,
                call_id,
            )
        };
        let rr_in = rr_of(leg.from.local);
        let rr_out = rr_of(hop.to.local);
        let rr_pair = [rr_out.as_str(), rr_in.as_str()];
        let record_routes: &[&str] = match (hop.record_route, double) {
            (false, _) => &[],
            (true, false) => &rr_pair[1..],
            (true, true) => &rr_pair,
        };
        let (host, port) = sent_by(&self.cfg, self.upstream.port(), hop.to.local);
        let via = ViaSpec {
            transport: self.cfg.transport_of(hop.to.local).via_token(),
            host,
            port,
            branch: branch.as_str(),
        };
        let ops = hop.ops(via, leg.from.remote, record_routes);
        let Some(ct) = self.txns.clients.get_mut(slot) else {
            return false;
        };
        ct.request.clear();
        if let Err(e) = write_forward(msg, &ops, &mut ct.request) {
            tracing::debug!(error = %e, "cannot forward request");
            self.txns.free_client(slot);
            return false;
        }
        if let Some(src) = hop.contact_alias {
            let alias = nat::Alias::new(src, self.cfg.transport_of(leg.from.local));
            nat::add_contact_alias(&mut ct.request, alias.as_bytes());
        }
        tx.send(hop.to, &ct.request);
        self.stats.forwarded_requests += 1;
        self.txns.client_sent(slot, leg.now_ms);
        if hop.to.conn.is_some() {
            if self.stream_branches.is_empty() {
                self.next_stream_check_ms = leg.now_ms + super::timeouts::STREAM_CHECK_MS;
            }
            self.stream_branches.push((slot, gen));
        }
        if let Some(t) = self.txns.servers.get_mut(idx) {
            let n = usize::from(t.n_branches);
            if n < MAX_FORKS {
                t.branches[n] = slot;
                t.n_branches += 1;
                t.pending += 1;
            }
        }
        true
    }

    /// Forward without a transaction (ACK for a 2xx): our Via gets a branch marked stateless.
    fn forward_stateless(
        &mut self,
        msg: &Message<'_, '_>,
        leg: &Leg,
        hop: &Hop<'_>,
        tx: &mut dyn Transmit,
    ) {
        let branch = write_branch(
            &self.cfg.branch_key,
            &OurBranch {
                worker: self.worker,
                slot: u32::MAX,
                gen: 0,
                ingress: leg.from.local,
                loop_hash: leg.loop_hash,
            },
        );
        let (host, port) = sent_by(&self.cfg, self.upstream.port(), hop.to.local);
        let via = ViaSpec {
            transport: self.cfg.transport_of(hop.to.local).via_token(),
            host,
            port,
            branch: branch.as_str(),
        };
        let ops = hop.ops(via, leg.from.remote, &[]);
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        if write_forward(msg, &ops, &mut out).is_ok() {
            if let Some(src) = hop.contact_alias {
                let alias = nat::Alias::new(src, self.cfg.transport_of(leg.from.local));
                nat::add_contact_alias(&mut out, alias.as_bytes());
            }
            tx.send(hop.to, &out);
            self.stats.forwarded_requests += 1;
        }
        self.out = out;
    }
}

/// Our Via sent-by for a message leaving from `local`: the interface's (advertised) host,
/// with its port, or with this worker's upstream port.
pub(super) fn sent_by(cfg: &CoreConfig, upstream_port: u16, local: Local) -> (&str, u16) {
    let iface = cfg.interface(local);
    let host = iface.map_or("", |i| i.host.as_str());
    match local {
        Local::Upstream => (host, upstream_port),
        Local::Listen(_) => (host, iface.map_or(5060, |i| i.port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_splitting() {
        let mut out = [""; MAX_PATH];
        assert_eq!(split_path("", &mut out), 0);
        let n = split_path(
            "<sip:p1.example.com;lr>, \"a,b\" <sip:p2;lr>,sip:p3",
            &mut out,
        );
        assert_eq!(&out[..n], &["sip:p1.example.com;lr", "sip:p2;lr", "sip:p3"]);
    }
}
