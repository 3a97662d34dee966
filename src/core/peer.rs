//! Requests another node of a cluster forwarded here because the phone's flow is on this
//! node (`crate::cluster` outside the core): the other node found the binding in the shared
//! location, sent the request to this node's address with a Route naming this node and the
//! AOR's user (`<sip:USER@NODE;lr;sfn>`, see [`HOP_PARAM`]) and the binding's Contact as
//! request-URI. This node removes that Route, finds the binding by user and Contact among
//! the bindings whose flow it holds ([`LocationPort::lookup_local`]) and sends the request
//! down the phone's flow, Record-Routed like any request to a phone, so the dialog's later
//! requests pass through both nodes.
//!
//! Only requests from a node of the cluster ([`LocationPort::is_peer`], checked first: one
//! virtual call, `false` without a cluster) take this path; anyone else's Route naming us
//! is an ordinary pre-loaded Route.
//!
//! [`LocationPort::lookup_local`]: super::LocationPort::lookup_local
//! [`LocationPort::is_peer`]: super::LocationPort::is_peer

use crate::sip::{Message, Method, Span};

use super::ports::ContactTarget;
use super::request::ReqCtx;
use super::route::{creates_dialog, split_path, Hop, Leg, MAX_PATH};
use super::{Core, Flow, Transmit};

/// The URI parameter marking a Route as a hop between cluster nodes.
pub const HOP_PARAM: &str = "sfn";

impl Core {
    /// Deliver a request a cluster peer forwarded to one of this node's bindings. False
    /// when the request is not such a hop (it is then handled as usual).
    pub(super) fn forward_from_peer(
        &mut self,
        ctx: &ReqCtx<'_>,
        msg: &Message<'_, '_>,
        method: Method<'_>,
        ruri: &str,
        tx: &mut dyn Transmit,
    ) -> bool {
        if !self.ports.location.is_peer(ctx.from.remote) {
            return false;
        }
        let Some(route) = msg
            .routes()
            .next()
            .and_then(|r| r.ok())
            .and_then(|na| na.uri().ok())
        else {
            return false;
        };
        if route.params.get(HOP_PARAM).is_none() || !self.cfg.is_us(route.host_raw, route.port) {
            return false;
        }
        let user = route.user.unwrap_or("");
        // (Contact URI bytes, Path bytes, flow) of the one binding with this Contact.
        let mut buf = std::mem::take(&mut self.targets_buf);
        buf.clear();
        let mut found: Option<(usize, Flow)> = None;
        self.ports
            .location
            .lookup_local(user, ctx.now.wall_ms, &mut |c: &ContactTarget<'_>| {
                if found.is_some() || c.uri != ruri {
                    return;
                }
                for (i, p) in c.path.iter().enumerate() {
                    if i > 0 {
                        buf.push(b',');
                    }
                    buf.extend_from_slice(p.as_bytes());
                }
                found = Some((buf.len(), c.to));
            });
        let target = found.and_then(|(len, to)| Some((len, self.reach(to)?)));
        match target {
            None => {
                self.reply(msg, ctx.from, 480, "Temporarily Unavailable", tx);
            }
            Some((len, to)) => {
                if let Some(idx) = self.start_server(ctx, msg, method == Method::Invite, tx) {
                    let path = std::str::from_utf8(buf.get(..len).unwrap_or(&[])).unwrap_or("");
                    let mut routes = [""; MAX_PATH];
                    let n = split_path(path, &mut routes);
                    let hop = Hop {
                        to,
                        request_uri: None,
                        push_routes: &routes[..n],
                        remove_routes: 1,
                        record_route: creates_dialog(method),
                        contact_alias: None,
                        drop_lines: &[] as &[Span],
                    };
                    if !self.forward_branch(&Leg::of(ctx), idx, msg, &hop, tx) {
                        self.respond_txn(ctx.now.mono_ms, idx, 503, "Service Unavailable", tx);
                    }
                }
            }
        }
        self.targets_buf = buf;
        true
    }
}
