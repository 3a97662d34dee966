//! [`ClusterEdge`]: the registrar's SIP edge ([`SipEdge`]) as the core sees it in a cluster.
//!
//! - REGISTER: handled by [`SipEdge`] as alone; a successful one queues the AOR for the
//!   writer thread (`try_send`, never blocking; a full queue schedules a full rewrite).
//! - Lookup: local bindings as [`SipEdge`] gives them; a binding another node holds
//!   (first Path entry a hop, see [`super::apply`]) becomes a flow to that node's address
//!   from this node's own address, with the hop as Route — or nothing when the owner's
//!   heartbeat expired (unreachable until the phone registers again).
//! - Expiry: [`SipEdge`]'s. Every node sees a user's last binding expire at the same time
//!   (the expiry travels with the binding) and reports it; REGFWD sends `Expires: 0` only
//!   from the nodes that forwarded a REGISTER of that user (it keeps per-user state only
//!   for those), each for the Contact it registered — so no duplicate and none missing.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::core::ports::{ContactTarget, RegisterInput, RegisterReply};
use crate::core::{Flow, Local, LocationPort};
use crate::registrar::SipEdge;

use super::apply::hop_owner;
use super::Shared;

/// The location port of a node in a cluster.
pub struct ClusterEdge {
    edge: SipEdge,
    shared: Arc<Shared>,
    /// The listen address other nodes are reached from and reach us at.
    node_local: Local,
}

impl ClusterEdge {
    /// `edge` shared through `cluster`; `node_local` is the listen index of the node address.
    pub fn new(edge: SipEdge, shared: Arc<Shared>, node_local: Local) -> ClusterEdge {
        ClusterEdge {
            edge,
            shared,
            node_local,
        }
    }

    fn queue(&self, user: &str) {
        let aor = format!("{user}@{}", self.shared.realm);
        let key: Box<str> = self.shared.registrar.key(&aor).into();
        if self.shared.changes.try_send(key).is_err() {
            self.shared.stats.queue_full.fetch_add(1, Ordering::Relaxed);
            self.shared.overflow.store(true, Ordering::Release);
        }
    }
}

impl LocationPort for ClusterEdge {
    fn register(
        &self,
        input: &RegisterInput<'_, '_, '_>,
        now_ms: u64,
        contact_lines: &mut Vec<u8>,
    ) -> RegisterReply {
        let reply = self.edge.register(input, now_ms, contact_lines);
        // Every saved REGISTER moves an expiry, so the shared copy is written, unless it was
        // only a retransmission answered from the table.
        if matches!(reply, RegisterReply::Ok { .. }) && !input.replayed {
            self.queue(input.user);
        }
        reply
    }

    fn lookup(&self, user: &str, now_ms: u64, f: &mut dyn FnMut(&ContactTarget<'_>)) {
        self.edge
            .lookup(user, now_ms, &mut |c: &ContactTarget<'_>| {
                let Some(owner) = c.path.first().and_then(|e| hop_owner(e)) else {
                    f(c);
                    return;
                };
                if !self.shared.is_live(owner) {
                    self.shared
                        .stats
                        .unreachable
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.shared.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                f(&ContactTarget {
                    uri: c.uri,
                    to: Flow::new(self.node_local, owner),
                    path: c.path,
                });
            });
    }

    fn lookup_local(&self, user: &str, now_ms: u64, f: &mut dyn FnMut(&ContactTarget<'_>)) {
        self.edge
            .lookup(user, now_ms, &mut |c: &ContactTarget<'_>| {
                if c.path.first().and_then(|e| hop_owner(e)).is_none() {
                    f(c);
                }
            });
        self.shared.stats.delivered.fetch_add(1, Ordering::Relaxed);
    }

    fn expire(&self, now_ms: u64, f: &mut dyn FnMut(&str)) {
        self.edge.expire(now_ms, f);
    }

    fn is_peer(&self, addr: SocketAddr) -> bool {
        self.shared.is_live(addr)
    }
}
