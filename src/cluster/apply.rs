//! Bindings from Redis into the local table, and this node's bindings out of it.
//!
//! A binding whose flow is on another node is kept in the local table like any other, with
//! one extra first Path entry: the hop to its owner, `<sip:USER@OWNER_ADDRESS;lr;sfn>`
//! ([`hop_route`]). Lookups ([`super::ClusterEdge`]) recognise it and send the request to
//! the owner, which finds the binding by user and Contact (`core/peer.rs`). Everything else
//! (expiry, the REGISTER rules, the admin listing) treats it as an ordinary binding, so a
//! phone that registers again through this node simply replaces it.

use std::net::SocketAddr;

use crate::core::HOP_PARAM;
use crate::registrar::persist::Row;
use crate::registrar::slot::{Slot, SlotParts};
use crate::registrar::{aor_user, Binding, Registrar};

use super::wire::{self, Value};

/// The Path entry leading to the owner of a binding of `user`.
pub fn hop_route(user: &str, owner: SocketAddr) -> String {
    format!("<sip:{user}@{owner};lr;{HOP_PARAM}>")
}

/// The owner's address when `entry` (a stored Path entry) is a hop to another node.
pub fn hop_owner(entry: &str) -> Option<SocketAddr> {
    let inner = entry
        .strip_prefix("<sip:")?
        .strip_suffix(">")?
        .strip_suffix(HOP_PARAM)?
        .strip_suffix(";lr;")?;
    inner.rsplit_once('@')?.1.parse().ok()
}

/// Whether a binding is reached through another node.
pub fn is_remote(b: &Binding<'_>) -> bool {
    b.path
        .clone()
        .next()
        .is_some_and(|e| hop_owner(e).is_some())
}

/// Whether the table holds a binding of `aor` (table key) whose flow is on this node.
pub fn has_own(registrar: &Registrar, aor: &str) -> bool {
    let mut own = false;
    registrar.table.snapshot(aor, |b| own |= !is_remote(b));
    own
}

/// This node's live bindings of `aor` (table key) as Redis fields (Contact → value).
pub fn own_fields(
    registrar: &Registrar,
    aor: &str,
    me: &str,
    my_addr: SocketAddr,
    now_ms: u64,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    registrar.table.snapshot(aor, |b| {
        if b.expires_at_ms > now_ms && !is_remote(b) {
            let row = Row::from_binding(aor, b);
            out.push((row.contact.clone(), wire::encode(me, my_addr, &row)));
        }
    });
    out
}

fn slot_of(row: &Row, path: &[&str], socket: SocketAddr) -> Option<Slot> {
    Slot::new(&SlotParts {
        uri: &row.contact,
        call_id: &row.call_id,
        cseq: row.cseq,
        path,
        user_agent: &row.user_agent,
        expires_at_ms: row.expires_at_ms,
        since_s: row.since_s,
        q: row.q,
        source: row.dest,
        transport: row.transport,
        socket,
        conn: 0,
        nated: row.nated,
        instance: &row.instance,
        reg_id: row.reg_id,
    })
    .ok()
}

/// What [`apply`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub added: usize,
    pub removed: usize,
}

/// Make the local copy of AOR `aor` (table key) match `values`, the whole hash Redis holds
/// for it: remote bindings are replaced by the given ones (those no longer listed are
/// dropped); a local binding with the same Contact stays unless the other node's copy
/// expires later (the phone registered there since). This node's own values are skipped,
/// unless `take_own` (start-up: a restarted node takes back the flows it held) and the
/// table has no binding with that Contact. Expired values are skipped.
pub fn apply(
    registrar: &Registrar,
    aor: &str,
    values: &[Value],
    me: &str,
    take_own: bool,
    now_ms: u64,
) -> Applied {
    let user = aor_user(aor);
    let mut incoming: Vec<(Slot, bool)> = Vec::with_capacity(values.len());
    for v in values.iter().filter(|v| v.row.expires_at_ms > now_ms) {
        let own = v.owner == me;
        if own && !take_own {
            continue;
        }
        let slot = if own {
            slot_of(
                &v.row,
                &v.row.path.iter().map(String::as_str).collect::<Vec<_>>(),
                v.row.socket,
            )
        } else {
            let hop = hop_route(user, v.owner_addr);
            let mut path: Vec<&str> = vec![&hop];
            path.extend(v.row.path.iter().map(String::as_str));
            slot_of(&v.row, &path, v.owner_addr)
        };
        if let Some(s) = slot {
            incoming.push((s, own));
        }
    }
    let mut applied = Applied::default();
    let _ = registrar.table.modify(
        aor,
        |slots| {
            let before = slots.len();
            slots.retain(|s| {
                !is_remote(&s.view()) || incoming.iter().any(|(n, _)| n.uri() == s.uri())
            });
            applied.removed = before - slots.len();
            for (n, own) in incoming.drain(..) {
                match slots.iter().position(|s| s.uri() == n.uri()) {
                    Some(_) if own => {}
                    Some(i) => {
                        let cur = &slots[i];
                        if is_remote(&cur.view()) || cur.expires_at_ms < n.expires_at_ms {
                            slots[i] = n;
                        }
                    }
                    None => {
                        slots.push(n);
                        applied.added += 1;
                    }
                }
            }
            slots.sort_by_key(|s| std::cmp::Reverse(s.q_rank()));
            // Not announced to local persistence: these came from the shared store.
            Ok::<_, ()>(((), false))
        },
        |_| (),
    );
    applied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registrar::{ContactInput, RegisterRequest, RegistrarConfig};
    use crate::sip::Transport;

    fn registrar() -> Registrar {
        Registrar::new(RegistrarConfig {
            persist: "none".into(),
            ..RegistrarConfig::default()
        })
        .unwrap()
    }

    fn register(r: &Registrar, contact: &str, cseq: u32, now_ms: u64) {
        let contacts = [ContactInput {
            uri: contact,
            expires: Some(600),
            q: None,
        }];
        let req = RegisterRequest {
            aor: "alice@example.com",
            call_id: "c1",
            cseq,
            expires_header: None,
            star: false,
            contacts: &contacts,
            source: "198.51.100.1:5060".parse().unwrap(),
            transport: Transport::Udp,
            socket: "10.0.0.1:5060".parse().unwrap(),
            conn: 0,
            path: &[],
            user_agent: None,
        };
        r.register(&req, now_ms, &mut Vec::new()).unwrap();
    }

    #[test]
    fn hop_routes_round_trip() {
        let a: SocketAddr = "127.0.0.11:5060".parse().unwrap();
        let h = hop_route("alice", a);
        assert_eq!(h, "<sip:alice@127.0.0.11:5060;lr;sfn>");
        assert_eq!(hop_owner(&h), Some(a));
        let v6: SocketAddr = "[2001:db8::1]:5060".parse().unwrap();
        assert_eq!(hop_owner(&hop_route("a@b", v6)), Some(v6));
        assert_eq!(hop_owner("<sip:edge;lr>"), None);
        assert_eq!(hop_owner("<sip:x@nothost;lr;sfn>"), None);
    }

    #[test]
    fn remote_bindings_come_and_go_and_local_newer_ones_stay() {
        let r = registrar();
        let now = 1_000_000;
        register(&r, "sip:alice@192.0.2.1", 1, now);
        let own = own_fields(&r, "alice", "a", "10.0.0.1:5060".parse().unwrap(), now);
        assert_eq!(own.len(), 1);
        // Node b holds another phone of alice.
        let b_addr: SocketAddr = "10.0.0.2:5060".parse().unwrap();
        let mut row = wire::decode("alice", own[0].1.as_bytes()).unwrap().row;
        row.contact = "sip:alice@192.0.2.2".into();
        let theirs = Value {
            owner: "b".into(),
            owner_addr: b_addr,
            row: row.clone(),
        };
        let mine = wire::decode("alice", own[0].1.as_bytes()).unwrap();
        let got = apply(
            &r,
            "alice",
            &[mine.clone(), theirs.clone()],
            "a",
            false,
            now,
        );
        assert_eq!(
            got,
            Applied {
                added: 1,
                removed: 0
            }
        );
        let mut seen = Vec::new();
        r.lookup("alice", now, |b| {
            seen.push((b.uri.to_owned(), is_remote(b)))
        });
        assert_eq!(
            seen,
            [
                ("sip:alice@192.0.2.1".to_owned(), false),
                ("sip:alice@192.0.2.2".to_owned(), true)
            ]
        );
        // This node's own fields never include the remote one.
        assert_eq!(own_fields(&r, "alice", "a", b_addr, now).len(), 1);
        // b dropped it: gone here too; the local one stays.
        let got = apply(&r, "alice", std::slice::from_ref(&mine), "a", false, now);
        assert_eq!(
            got,
            Applied {
                added: 0,
                removed: 1
            }
        );
        let mut n = 0;
        r.lookup("alice", now, |b| {
            assert!(!is_remote(b));
            n += 1;
        });
        assert_eq!(n, 1);
        // The local phone moved to b (b's copy expires later): replaced by the remote one.
        let mut moved = mine.row.clone();
        moved.expires_at_ms += 5_000;
        let moved = Value {
            owner: "b".into(),
            owner_addr: b_addr,
            row: moved,
        };
        assert!(has_own(&r, "alice"));
        apply(&r, "alice", &[moved], "a", false, now);
        r.lookup("alice", now, |b| assert!(is_remote(b)));
        assert!(!has_own(&r, "alice"), "a full rewrite leaves this AOR to b");
        // An older copy from elsewhere does not replace a newer local binding.
        register(&r, "sip:alice@192.0.2.1", 2, now + 10_000);
        let stale = Value {
            owner: "b".into(),
            owner_addr: b_addr,
            row: mine.row.clone(),
        };
        apply(&r, "alice", &[stale], "a", false, now + 10_000);
        r.lookup("alice", now + 10_000, |b| assert!(!is_remote(b)));
    }

    #[test]
    fn own_values_are_taken_back_only_at_start() {
        let r = registrar();
        let now = 1_000_000;
        let src = registrar();
        register(&src, "sip:alice@192.0.2.1", 1, now);
        let own = own_fields(&src, "alice", "a", "10.0.0.1:5060".parse().unwrap(), now);
        let v = wire::decode("alice", own[0].1.as_bytes()).unwrap();
        apply(&r, "alice", std::slice::from_ref(&v), "a", false, now);
        assert_eq!(r.counts(), (0, 0));
        apply(&r, "alice", std::slice::from_ref(&v), "a", true, now);
        let mut n = 0;
        r.lookup("alice", now, |b| {
            assert!(!is_remote(b));
            n += 1;
        });
        assert_eq!(n, 1);
        // Expired values are never taken.
        let r2 = registrar();
        apply(&r2, "alice", &[v], "b", false, now + 700_000);
        assert_eq!(r2.counts(), (0, 0));
    }
}
