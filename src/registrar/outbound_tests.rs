//! RFC 5626 at the registrar (instance and reg-id as the binding key, echoed in the 200,
//! kept by persistence rows) and the keepalive scan and removal.

use std::net::SocketAddr;

use super::outbound::OutboundContact;
use super::persist::Row;
use super::tests::{cfg, registrar, T0};
use super::*;
use crate::sip::Transport;

const INST: &str = "\"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>\"";

fn reg(
    r: &Registrar,
    uri: &str,
    source: &str,
    cseq: u32,
    ob: OutboundContact<'_>,
) -> (RegisterOutcome, String) {
    let mut out = Vec::new();
    let contacts = [ContactInput {
        uri,
        expires: Some(600),
        q: None,
    }];
    let req = RegisterRequest {
        aor: "alice@example.com",
        call_id: "ob-call",
        cseq,
        expires_header: None,
        star: false,
        contacts: &contacts,
        source: source.parse().unwrap(),
        transport: Transport::Udp,
        socket: "127.0.0.1:5060".parse().unwrap(),
        conn: 0,
        path: &[],
        user_agent: Some("Outbound/1.0"),
    };
    let o = r.register_outbound(&req, &[ob], T0, &mut out).unwrap();
    (o, String::from_utf8(out).unwrap())
}

fn dests(r: &Registrar) -> Vec<(String, SocketAddr)> {
    let mut v = Vec::new();
    r.lookup("alice@example.com", T0, |b| {
        v.push((b.uri.to_owned(), b.dest))
    });
    v
}

#[test]
fn a_new_flow_with_the_same_instance_and_reg_id_replaces_the_binding() {
    let r = registrar(cfg());
    let ob1 = OutboundContact {
        instance: Some(INST),
        reg_id: Some(1),
    };
    // A public Contact (no NAT by the address rule): outbound still routes over the flow.
    let (o, lines) = reg(
        &r,
        "sip:alice@198.51.100.1:5060;ob",
        "203.0.113.7:4000",
        1,
        ob1,
    );
    assert_eq!(o.bindings, 1);
    assert_eq!(
        lines,
        format!("Contact: <sip:alice@198.51.100.1:5060;ob>;expires=600;+sip.instance={INST};reg-id=1\r\n")
    );
    assert_eq!(dests(&r)[0].1, "203.0.113.7:4000".parse().unwrap());
    // A second flow (reg-id 2) of the same instance is another binding.
    let ob2 = OutboundContact {
        reg_id: Some(2),
        ..ob1
    };
    let (o, _) = reg(
        &r,
        "sip:alice@198.51.100.1:5060;ob",
        "203.0.113.7:4001",
        2,
        ob2,
    );
    assert_eq!(o.bindings, 2);
    // Flow 1 again from a new address and another Contact: replaces flow 1 only.
    let (o, lines) = reg(
        &r,
        "sip:alice@198.51.100.9:5070;ob",
        "203.0.113.8:4100",
        3,
        ob1,
    );
    assert_eq!(o.bindings, 2, "{lines}");
    assert!(o.changed);
    let mut d = dests(&r);
    d.sort();
    assert_eq!(
        d,
        [
            (
                "sip:alice@198.51.100.1:5060;ob".to_owned(),
                "203.0.113.7:4001".parse().unwrap()
            ),
            (
                "sip:alice@198.51.100.9:5070;ob".to_owned(),
                "203.0.113.8:4100".parse().unwrap()
            ),
        ]
    );
    // Persisted rows keep the pair, and turn back into the same binding.
    let mut rows = Vec::new();
    r.lookup("alice@example.com", T0, |b| {
        rows.push(Row::from_binding("alice@example.com", b))
    });
    assert!(rows.iter().all(|row| row.instance == INST));
    let mut ids: Vec<u32> = rows.iter().map(|row| row.reg_id).collect();
    ids.sort();
    assert_eq!(ids, [1, 2]);
    let slot = rows[0].to_slot().unwrap();
    assert_eq!(slot.view().instance(), INST);
    assert_eq!(slot.view().reg_id(), Some(rows[0].reg_id));
}

#[test]
fn a_plain_contact_keeps_rfc_3261_matching() {
    let r = registrar(cfg());
    let plain = OutboundContact::default();
    let (_, lines) = reg(
        &r,
        "sip:alice@192.168.1.5:5060",
        "203.0.113.7:4000",
        1,
        plain,
    );
    assert_eq!(
        lines,
        "Contact: <sip:alice@192.168.1.5:5060>;expires=600\r\n"
    );
    // Turning outbound on with the same Contact replaces the plain binding.
    let ob = OutboundContact {
        instance: Some(INST),
        reg_id: Some(1),
    };
    let (o, _) = reg(&r, "sip:alice@192.168.1.5:5060", "203.0.113.7:4000", 2, ob);
    assert_eq!(o.bindings, 1);
}

#[test]
fn the_keepalive_scan_visits_every_binding_once_and_removal_empties_the_aor() {
    let r = registrar(cfg());
    let mut out = Vec::new();
    for i in 0..500u32 {
        let aor = format!("u{i}@example.com");
        let uri = format!("sip:u{i}@192.168.0.1:5060");
        let contacts = [ContactInput {
            uri: &uri,
            expires: Some(600),
            q: None,
        }];
        out.clear();
        r.register(
            &RegisterRequest {
                aor: &aor,
                call_id: "c",
                cseq: 1,
                expires_header: None,
                star: false,
                contacts: &contacts,
                source: SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 5060)),
                transport: Transport::Udp,
                socket: "127.0.0.1:5060".parse().unwrap(),
                conn: 0,
                path: &[],
                user_agent: None,
            },
            T0,
            &mut out,
        )
        .unwrap();
    }
    // In uneven runs of slices, as the workers' cursors cut them.
    let mut seen = Vec::new();
    let mut at = 0;
    for step in [1u32, 7, 63, 64, 65, 200, 1000].iter().cycle() {
        let end = (at + step).min(KEEPALIVE_SLICES);
        r.keepalive_scan(at, end, T0, |aor, b| {
            assert!(b.nated);
            seen.push(aor.to_owned());
        });
        at = end;
        if at == KEEPALIVE_SLICES {
            break;
        }
    }
    seen.sort();
    let mut want: Vec<String> = (0..500).map(|i| format!("u{i}@example.com")).collect();
    want.sort();
    assert_eq!(seen, want);
    // Expired bindings are not visited.
    let mut late = 0;
    r.keepalive_scan(0, KEEPALIVE_SLICES, T0 + 601_000, |_, _| late += 1);
    assert_eq!(late, 0);
    // Removing the flow of u7's only binding empties it; another flow removes nothing.
    let dest: SocketAddr = "10.0.0.7:5060".parse().unwrap();
    assert_eq!(
        r.remove_where("u7@example.com", T0, |b| b.dest == dest),
        (1, true)
    );
    assert_eq!(
        r.remove_where("u8@example.com", T0, |b| b.dest == dest),
        (0, false)
    );
    assert_eq!(
        r.lookup("u7@example.com", T0, |_| {}),
        LookupResult::NotFound
    );
}
