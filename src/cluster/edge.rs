//! [`ClusterEdge`]: the registrar's SIP edge ([`SipEdge`]) as the core sees it in a cluster.
//!
//! - REGISTER: handled by [`SipEdge`] as alone; the table tells the writer thread of the
//!   change (its watch: `try_send`, never blocking; a full queue schedules a full
//!   rewrite), as it does for an administrative removal.
//! - Lookup: local bindings as [`SipEdge`] gives them; a binding another node holds
//!   (first Path entry a hop, see [`super::apply`]) becomes a flow to that node's address
//!   from this node's own address, with the hop as Route — or nothing when the owner's
//!   heartbeat expired (unreachable until the phone registers again).
//! - NAT keepalives: [`SipEdge`]'s, over the bindings this node holds only (the owner of
//!   another node's binding pings it).
//! - Expiry: [`SipEdge`]'s. Every node sees a user's last binding expire at the same time
//!   (the expiry travels with the binding) and reports it; REGFWD sends `Expires: 0` only
//!   from the nodes that forwarded a REGISTER of that user (it keeps per-user state only
//!   for those), each for the Contact it registered — so no duplicate and none missing.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::core::ports::{ContactTarget, KeepaliveTarget, RegisterInput, RegisterReply};
use crate::core::{Flow, Local, LocationPort};
use crate::registrar::SipEdge;

use super::apply::{hop_owner, is_remote};
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
}

impl LocationPort for ClusterEdge {
    fn register(
        &self,
        input: &RegisterInput<'_, '_, '_>,
        now_ms: u64,
        contact_lines: &mut Vec<u8>,
    ) -> RegisterReply {
        // The table's watch queues the AOR for the writer (see the module doc).
        self.edge.register(input, now_ms, contact_lines)
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

    // NAT keepalives: each node pings the phones whose flows it holds.
    fn keepalive_slices(&self) -> u32 {
        self.edge.keepalive_slices()
    }

    fn keepalive_scan(
        &self,
        first: u32,
        end: u32,
        now_ms: u64,
        f: &mut dyn FnMut(&KeepaliveTarget<'_>),
    ) {
        self.edge
            .keepalive_scan_where(first, end, now_ms, &|b| !is_remote(b), f);
    }

    fn remove_flow(&self, user: &str, flow: Flow, now_ms: u64) -> (usize, bool) {
        // The table's watch tells the writer, as for any removal.
        self.edge.remove_flow(user, flow, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::RwLock;

    use super::*;
    use crate::cluster::apply::{apply, own_fields};
    use crate::cluster::{wire, Peers};
    use crate::registrar::{ContactInput, RegisterRequest, Registrar, RegistrarConfig};
    use crate::sip::Transport;

    const NOW: u64 = 1_000_000;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn registrar() -> Arc<Registrar> {
        let cfg = RegistrarConfig {
            persist: "none".into(),
            ..RegistrarConfig::default()
        };
        Arc::new(Registrar::new(cfg).unwrap())
    }

    fn register(r: &Registrar, contact: &str, source: &str) {
        let contacts = [ContactInput {
            uri: contact,
            expires: Some(600),
            q: None,
        }];
        let req = RegisterRequest {
            aor: "alice@example.com",
            call_id: contact,
            cseq: 1,
            expires_header: None,
            star: false,
            contacts: &contacts,
            source: addr(source),
            transport: Transport::Udp,
            socket: addr("10.0.0.1:5060"),
            conn: 0,
            path: &[],
            user_agent: None,
        };
        r.register(&req, NOW, &mut Vec::new()).unwrap();
    }

    /// Node `a` (10.0.0.1:5060) holding alice's first phone; node `b` (10.0.0.2:5060) her
    /// second, learnt through Redis.
    fn node_a() -> (ClusterEdge, Arc<Shared>) {
        let r = registrar();
        register(&r, "sip:alice@192.0.2.1:5060", "192.0.2.1:5060");
        // b's phone, as b wrote it.
        let rb = registrar();
        register(&rb, "sip:alice@192.0.2.2:5060", "192.0.2.2:5060");
        let theirs: Vec<wire::Value> = own_fields(&rb, "alice", "b", addr("10.0.0.2:5060"), NOW)
            .iter()
            .map(|(_, v)| wire::decode("alice", v.as_bytes()).unwrap())
            .collect();
        apply(&r, "alice", &theirs, "a", false, NOW);
        let (tx, _rx) = crossbeam_channel::bounded(16);
        let shared = Arc::new(Shared {
            me: "a".into(),
            my_addr: addr("10.0.0.1:5060"),
            realm: "example.com".into(),
            registrar: r.clone(),
            stats: Default::default(),
            peers: RwLock::new(Arc::new(Peers::default())),
            changes: tx,
            overflow: Arc::new(AtomicBool::new(false)),
            dropped: Default::default(),
        });
        let listen = [(addr("10.0.0.1:5060"), Transport::Udp)];
        let edge = SipEdge::new(r, "example.com", &listen);
        (
            ClusterEdge::new(edge, shared.clone(), Local::Listen(0)),
            shared,
        )
    }

    fn targets(f: impl Fn(&mut dyn FnMut(&ContactTarget<'_>))) -> Vec<(String, Flow, Vec<String>)> {
        let mut out = Vec::new();
        f(&mut |c: &ContactTarget<'_>| {
            out.push((
                c.uri.to_owned(),
                c.to,
                c.path.iter().map(|p| p.to_string()).collect(),
            ));
        });
        out
    }

    #[test]
    fn another_live_nodes_binding_is_a_flow_to_that_node_with_the_hop() {
        let (edge, shared) = node_a();
        shared.set_peers(Peers {
            live: vec![
                ("a".into(), addr("10.0.0.1:5060")),
                ("b".into(), addr("10.0.0.2:5060")),
            ],
        });
        let all = targets(|f| edge.lookup("alice", NOW, f));
        assert_eq!(all.len(), 2, "{all:?}");
        let (uri, to, path) = &all[0];
        assert_eq!(uri, "sip:alice@192.0.2.1:5060");
        assert_eq!(*to, Flow::new(Local::Listen(0), addr("192.0.2.1:5060")));
        assert!(path.is_empty());
        let (uri, to, path) = &all[1];
        assert_eq!(uri, "sip:alice@192.0.2.2:5060");
        assert_eq!(*to, Flow::new(Local::Listen(0), addr("10.0.0.2:5060")));
        assert_eq!(path, &["<sip:alice@10.0.0.2:5060;lr;sfn>"]);
        // Only its own phone for a peer's request; peers are the live nodes but itself.
        let local = targets(|f| edge.lookup_local("alice", NOW, f));
        assert_eq!(local.len(), 1);
        assert_eq!(local[0].0, "sip:alice@192.0.2.1:5060");
        assert!(edge.is_peer(addr("10.0.0.2:5060")));
        assert!(!edge.is_peer(addr("10.0.0.1:5060")));
        assert!(!edge.is_peer(addr("192.0.2.2:5060")));
        assert_eq!(shared.stats.forwarded.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_dead_nodes_binding_is_unreachable() {
        let (edge, shared) = node_a();
        shared.set_peers(Peers {
            live: vec![("a".into(), addr("10.0.0.1:5060"))],
        });
        let all = targets(|f| edge.lookup("alice", NOW, f));
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, "sip:alice@192.0.2.1:5060");
        assert_eq!(shared.stats.unreachable.load(Ordering::Relaxed), 1);
        assert!(!edge.is_peer(addr("10.0.0.2:5060")));
    }

    #[test]
    fn keepalives_go_only_to_the_phones_this_node_holds() {
        let (edge, _shared) = node_a();
        let slices = edge.keepalive_slices();
        assert!(slices > 0, "keepalives are on in a cluster");
        let mut pinged = Vec::new();
        edge.keepalive_scan(0, slices, NOW, &mut |t: &KeepaliveTarget<'_>| {
            pinged.push((t.uri.to_owned(), t.to));
        });
        assert_eq!(
            pinged,
            [(
                "sip:alice@192.0.2.1:5060".to_owned(),
                Flow::new(Local::Listen(0), addr("192.0.2.1:5060"))
            )]
        );
        // The phone stops answering: its binding goes, b's stays.
        let flow = Flow::new(Local::Listen(0), addr("192.0.2.1:5060"));
        assert_eq!(edge.remove_flow("alice", flow, NOW), (1, false));
        let left = targets(|f| edge.edge.lookup("alice", NOW, f));
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, "sip:alice@192.0.2.2:5060");
    }
}
