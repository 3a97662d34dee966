//! Registrar rules on a virtual clock (RFC 3261 §10.3, RFC 3327, NAT).

use std::net::SocketAddr;

use super::*;
use crate::sip::Transport;

pub(super) const T0: u64 = 1_764_159_377_000;
const SRC: &str = "203.0.113.7:5060";

pub(super) fn cfg() -> RegistrarConfig {
    RegistrarConfig {
        persist: "none".into(),
        use_domain: true,
        ..RegistrarConfig::default()
    }
}

pub(super) fn registrar(c: RegistrarConfig) -> Registrar {
    Registrar::new(c).expect("valid config")
}

pub(super) struct Req<'a> {
    pub(super) aor: &'a str,
    call_id: &'a str,
    cseq: u32,
    expires: Option<u32>,
    star: bool,
    contacts: Vec<ContactInput<'a>>,
    source: SocketAddr,
    path: Vec<&'a str>,
}

pub(super) fn req<'a>(
    call_id: &'a str,
    cseq: u32,
    expires: Option<u32>,
    contacts: &[(&'a str, Option<u32>, Option<u16>)],
) -> Req<'a> {
    Req {
        aor: "alice@example.com",
        call_id,
        cseq,
        expires,
        star: false,
        contacts: contacts
            .iter()
            .map(|&(uri, expires, q)| ContactInput { uri, expires, q })
            .collect(),
        source: SRC.parse().unwrap(),
        path: Vec::new(),
    }
}

pub(super) fn run(
    r: &Registrar,
    q: &Req<'_>,
    now: u64,
) -> Result<(RegisterOutcome, String), RegisterError> {
    let mut out = Vec::new();
    let rr = RegisterRequest {
        aor: q.aor,
        call_id: q.call_id,
        cseq: q.cseq,
        expires_header: q.expires,
        star: q.star,
        contacts: &q.contacts,
        source: q.source,
        transport: Transport::Udp,
        socket: "127.0.0.1:5061".parse().unwrap(),
        conn: 0,
        path: &q.path,
        user_agent: Some("TestPhone/1.0"),
    };
    let o = r.register(&rr, now, &mut out)?;
    Ok((o, String::from_utf8(out).unwrap()))
}

/// (uri, remaining secs, dest) of every live binding, in lookup order.
fn bindings(r: &Registrar, aor: &str, now: u64) -> Vec<(String, u32, SocketAddr)> {
    let mut v = Vec::new();
    r.lookup(aor, now, |b| {
        v.push((b.uri.to_owned(), b.remaining_secs(now), b.dest))
    });
    v
}

pub(super) const PUB: &str = "sip:alice@203.0.113.7:5060";
pub(super) const PRIV: &str = "sip:alice@192.168.1.20:5060";

#[test]
fn add_refresh_remove() {
    let r = registrar(cfg());
    let (o, lines) = run(&r, &req("c1", 1, Some(3600), &[(PUB, None, None)]), T0).unwrap();
    assert_eq!(
        lines,
        "Contact: <sip:alice@203.0.113.7:5060>;expires=3600\r\n"
    );
    assert_eq!(
        o,
        RegisterOutcome {
            bindings: 1,
            expires: 3600,
            changed: true,
            was_empty: true
        }
    );
    // Refresh 30 s later: same contact, same call-id, higher CSeq -> pure refresh.
    let (o, lines) = run(
        &r,
        &req("c1", 2, Some(3600), &[(PUB, None, None)]),
        T0 + 30_000,
    )
    .unwrap();
    assert_eq!(
        o,
        RegisterOutcome {
            bindings: 1,
            expires: 3600,
            changed: false,
            was_empty: false
        }
    );
    assert_eq!(
        lines,
        "Contact: <sip:alice@203.0.113.7:5060>;expires=3600\r\n"
    );
    assert_eq!(bindings(&r, "alice@example.com", T0 + 40_000)[0].1, 3590);
    // Expires: 0 removes it.
    let (o, lines) = run(
        &r,
        &req("c1", 3, Some(0), &[(PUB, None, None)]),
        T0 + 50_000,
    )
    .unwrap();
    assert_eq!(
        o,
        RegisterOutcome {
            bindings: 0,
            expires: 0,
            changed: true,
            was_empty: false
        }
    );
    assert!(o.is_empty());
    assert_eq!(lines, "");
    assert_eq!(
        r.lookup("alice@example.com", T0 + 50_000, |_| {}),
        LookupResult::NotFound
    );
}

#[test]
fn expiry_sources_and_limits() {
    let r = registrar(cfg()); // min 60, max 3600, default 3600
                              // Per-contact expires wins over the header; the header over the default.
    let q = req(
        "c1",
        1,
        Some(600),
        &[
            (PUB, Some(120), None),
            ("sip:alice@203.0.113.7:5062", None, None),
        ],
    );
    let (o, _) = run(&r, &q, T0).unwrap();
    let mut got: Vec<u32> = bindings(&r, "alice@example.com", T0)
        .iter()
        .map(|b| b.1)
        .collect();
    got.sort();
    assert_eq!(got, [120, 600]);
    assert_eq!(o.expires, 600);
    // Nothing given -> default; too long -> max.
    let (o, _) = run(
        &r,
        &req("c2", 1, None, &[("sip:bob@203.0.113.9", None, None)]),
        T0,
    )
    .unwrap();
    assert_eq!(o.expires, 3600);
    let (o, _) = run(
        &r,
        &req(
            "c3",
            1,
            Some(99_999),
            &[("sip:carol@203.0.113.9", None, None)],
        ),
        T0,
    )
    .unwrap();
    assert_eq!(o.expires, 3600);
    // Too brief -> 423 with Min-Expires; nothing changed.
    let e = run(&r, &req("c1", 2, Some(30), &[(PUB, None, None)]), T0).unwrap_err();
    assert_eq!(e, RegisterError::IntervalTooBrief { min_expires: 60 });
    assert_eq!(e.status(), (423, "Interval Too Brief"));
    let mut h = Vec::new();
    e.write_headers(&mut h);
    assert_eq!(h, b"Min-Expires: 60\r\n");
    // 0 is not "too brief".
    assert!(run(&r, &req("c1", 3, Some(0), &[(PUB, None, None)]), T0).is_ok());
}

#[test]
fn all_or_nothing() {
    let r = registrar(cfg());
    let q = req(
        "c1",
        1,
        None,
        &[
            (PUB, Some(600), None),
            ("sip:alice@203.0.113.7:5070", Some(5), None),
        ],
    );
    assert!(matches!(
        run(&r, &q, T0),
        Err(RegisterError::IntervalTooBrief { .. })
    ));
    assert!(bindings(&r, "alice@example.com", T0).is_empty());
    let q = req(
        "c1",
        1,
        None,
        &[(PUB, Some(600), None), ("tel:+123", None, None)],
    );
    assert_eq!(run(&r, &q, T0).unwrap_err(), RegisterError::BadContact);
    assert!(bindings(&r, "alice@example.com", T0).is_empty());
}

#[test]
fn star_rules() {
    let r = registrar(cfg());
    run(
        &r,
        &req("c1", 5, Some(600), &[(PUB, None, None), (PRIV, None, None)]),
        T0,
    )
    .unwrap();
    // * with a non-zero expiry or with another contact -> 400.
    let mut q = req("c2", 1, Some(60), &[]);
    q.star = true;
    assert_eq!(run(&r, &q, T0).unwrap_err(), RegisterError::InvalidStar);
    assert_eq!(RegisterError::InvalidStar.status().0, 400);
    let mut q = req("c2", 1, Some(0), &[(PUB, None, None)]);
    q.star = true;
    assert_eq!(run(&r, &q, T0).unwrap_err(), RegisterError::InvalidStar);
    let mut q = req("c2", 1, None, &[]);
    q.star = true;
    assert_eq!(run(&r, &q, T0).unwrap_err(), RegisterError::InvalidStar);
    // Same Call-ID, CSeq not higher -> the request fails.
    let mut q = req("c1", 5, Some(0), &[]);
    q.star = true;
    assert!(matches!(
        run(&r, &q, T0),
        Err(RegisterError::CSeqOutOfOrder { cseq: 5, stored: 5 })
    ));
    assert_eq!(bindings(&r, "alice@example.com", T0).len(), 2);
    // Different Call-ID -> removes everything.
    let mut q = req("c9", 1, Some(0), &[]);
    q.star = true;
    let (o, lines) = run(&r, &q, T0 + 1000).unwrap();
    assert_eq!(
        (o.bindings, o.expires, o.changed, lines.as_str()),
        (0, 0, true, "")
    );
}

#[test]
fn cseq_ordering() {
    let r = registrar(cfg());
    run(&r, &req("c1", 10, Some(600), &[(PUB, None, None)]), T0).unwrap();
    for cseq in [9, 10] {
        let e = run(
            &r,
            &req("c1", cseq, Some(1200), &[(PUB, None, None)]),
            T0 + 1000,
        )
        .unwrap_err();
        assert_eq!(e, RegisterError::CSeqOutOfOrder { cseq, stored: 10 });
        assert_eq!(e.status(), (400, "Invalid CSeq"));
        // Nothing changed.
        assert_eq!(bindings(&r, "alice@example.com", T0 + 1000)[0].1, 599);
    }
    // A new Call-ID (phone rebooted) may use any CSeq.
    let (o, _) = run(
        &r,
        &req("c2", 1, Some(1200), &[(PUB, None, None)]),
        T0 + 2000,
    )
    .unwrap();
    assert_eq!((o.bindings, o.expires), (1, 1200));
    let mut cid = None;
    r.lookup("alice@example.com", T0 + 2000, |b| {
        cid = Some((b.call_id.to_owned(), b.cseq))
    });
    assert_eq!(cid, Some(("c2".to_owned(), 1)));
}

#[test]
fn q_values_order_lookups_and_replies() {
    let r = registrar(cfg());
    let q = req(
        "c1",
        1,
        Some(600),
        &[
            (PUB, None, Some(500)),
            (PRIV, None, Some(1000)),
            ("sip:alice@203.0.113.7:6000", None, Some(125)),
        ],
    );
    let (_, lines) = run(&r, &q, T0).unwrap();
    assert_eq!(
        lines,
        "Contact: <sip:alice@192.168.1.20:5060>;expires=600;q=1\r\n\
         Contact: <sip:alice@203.0.113.7:5060>;expires=600;q=0.5\r\n\
         Contact: <sip:alice@203.0.113.7:6000>;expires=600;q=0.125\r\n"
    );
    let mut qs = Vec::new();
    r.lookup("alice@example.com", T0, |b| qs.push(b.q));
    assert_eq!(qs, [Some(1000), Some(500), Some(125)]);
}

#[test]
fn max_contacts_replace_oldest() {
    let r = registrar(RegistrarConfig {
        max_contacts: 2,
        ..cfg()
    });
    for (i, port) in [5061u16, 5062, 5063].iter().enumerate() {
        let uri = format!("sip:alice@203.0.113.7:{port}");
        let now = T0 + i as u64 * 1000;
        let (o, _) = run(
            &r,
            &req("c1", i as u32 + 1, Some(600), &[(uri.as_str(), None, None)]),
            now,
        )
        .unwrap();
        assert!(o.bindings <= 2);
    }
    let uris: Vec<String> = bindings(&r, "alice@example.com", T0 + 5000)
        .into_iter()
        .map(|b| b.0)
        .collect();
    assert_eq!(
        uris,
        ["sip:alice@203.0.113.7:5062", "sip:alice@203.0.113.7:5063"]
    );
    // A request naming more contacts than allowed is refused.
    let q = req(
        "c1",
        9,
        Some(600),
        &[
            ("sip:a@1.2.3.4", None, None),
            ("sip:b@1.2.3.4", None, None),
            ("sip:c@1.2.3.4", None, None),
        ],
    );
    assert_eq!(
        run(&r, &q, T0 + 6000).unwrap_err(),
        RegisterError::TooManyContacts { max: 2 }
    );
}

#[test]
fn max_contacts_reject() {
    let r = registrar(RegistrarConfig {
        max_contacts: 1,
        on_max_contacts: OnMaxContacts::Reject,
        ..cfg()
    });
    run(&r, &req("c1", 1, Some(600), &[(PUB, None, None)]), T0).unwrap();
    let e = run(&r, &req("c2", 1, Some(600), &[(PRIV, None, None)]), T0).unwrap_err();
    assert_eq!(e.status(), (403, "Too Many Contacts"));
    // Replacing within the limit is fine: remove one, add one.
    let q = req(
        "c1",
        2,
        None,
        &[(PUB, Some(0), None), (PRIV, Some(600), None)],
    );
    let (o, _) = run(&r, &q, T0).unwrap();
    assert_eq!(o.bindings, 1);
    assert_eq!(bindings(&r, "alice@example.com", T0)[0].0, PRIV);
}

#[test]
fn no_contact_lists_bindings() {
    let r = registrar(cfg());
    let (o, lines) = run(&r, &req("q", 1, None, &[]), T0).unwrap();
    assert_eq!(
        (o.bindings, o.expires, o.changed, lines.as_str()),
        (0, 0, false, "")
    );
    run(&r, &req("c1", 1, Some(600), &[(PUB, None, None)]), T0).unwrap();
    let (o, lines) = run(&r, &req("q", 2, None, &[]), T0 + 100_000).unwrap();
    assert_eq!(
        (o.bindings, o.expires, o.changed, o.was_empty),
        (1, 500, false, false)
    );
    assert_eq!(
        lines,
        "Contact: <sip:alice@203.0.113.7:5060>;expires=500\r\n"
    );
}

#[test]
fn nat_and_path() {
    let r = registrar(cfg());
    let src: SocketAddr = SRC.parse().unwrap();
    run(
        &r,
        &req(
            "c1",
            1,
            Some(600),
            &[(PRIV, None, Some(900)), (PUB, None, Some(800))],
        ),
        T0,
    )
    .unwrap();
    let mut seen = Vec::new();
    r.lookup("alice@example.com", T0, |b| {
        seen.push((
            b.uri.to_owned(),
            b.dest,
            b.nated,
            b.socket.port(),
            b.transport,
        ))
    });
    assert_eq!(
        seen,
        [
            (PRIV.to_owned(), src, true, 5061, Transport::Udp),
            (PUB.to_owned(), src, false, 5061, Transport::Udp)
        ]
    );
    // Public contact differing from the source -> source.
    let mut q = req(
        "c2",
        1,
        Some(600),
        &[("sip:bob@198.51.100.4:5060", None, None)],
    );
    q.aor = "bob@example.com";
    run(&r, &q, T0).unwrap();
    assert_eq!(bindings(&r, "bob@example.com", T0)[0].2, src);
    // NatMode::Contact trusts it.
    let r2 = registrar(RegistrarConfig {
        nat: NatMode::Contact,
        ..cfg()
    });
    run(&r2, &q, T0).unwrap();
    assert_eq!(
        bindings(&r2, "bob@example.com", T0)[0].2,
        "198.51.100.4:5060".parse().unwrap()
    );
    // Path: stored, returned in order, destination is the hop that sent the REGISTER.
    let mut q = req(
        "c3",
        1,
        Some(600),
        &[("sip:carol@198.51.100.4:5060", None, None)],
    );
    q.aor = "carol@example.com";
    q.path = vec!["<sip:edge1.example.net;lr>", "<sip:edge2.example.net;lr>"];
    run(&r2, &q, T0).unwrap();
    let mut got = Vec::new();
    r2.lookup("carol@example.com", T0, |b| {
        got.push((b.path.map(str::to_owned).collect::<Vec<_>>(), b.dest))
    });
    assert_eq!(
        got,
        [(
            vec![
                "<sip:edge1.example.net;lr>".to_owned(),
                "<sip:edge2.example.net;lr>".to_owned()
            ],
            src
        )]
    );
}

#[test]
fn expiry_reports_emptied_aors() {
    let r = registrar(cfg());
    run(
        &r,
        &req(
            "c1",
            1,
            None,
            &[(PUB, Some(60), None), (PRIV, Some(120), None)],
        ),
        T0,
    )
    .unwrap();
    let mut q = req(
        "c2",
        1,
        Some(90),
        &[("sip:bob@203.0.113.7:5070", None, None)],
    );
    q.aor = "bob@example.com";
    run(&r, &q, T0).unwrap();
    assert_eq!(r.next_expiry_ms(), Some(T0 + 60_000));
    // Expired bindings vanish from lookups before any sweep.
    assert_eq!(bindings(&r, "alice@example.com", T0 + 60_000).len(), 1);
    let mut emptied = Vec::new();
    assert_eq!(r.expire(T0 + 59_999, |a| emptied.push(a.to_owned())), 0);
    assert_eq!(r.expire(T0 + 60_000, |a| emptied.push(a.to_owned())), 1);
    assert!(emptied.is_empty(), "alice still has one binding");
    assert_eq!(r.expire(T0 + 90_000, |a| emptied.push(a.to_owned())), 1);
    assert_eq!(emptied, ["bob@example.com"]);
    assert_eq!(r.expire(T0 + 200_000, |a| emptied.push(a.to_owned())), 1);
    assert_eq!(emptied, ["bob@example.com", "alice@example.com"]);
    assert_eq!(r.counts(), (0, 0));
    assert_eq!(r.next_expiry_ms(), None);
}

#[test]
fn expiry_work_is_bounded_per_call() {
    let r = registrar(RegistrarConfig {
        expire_batch: 1,
        ..cfg()
    });
    let users: Vec<String> = (0..300).map(|i| format!("u{i}@example.com")).collect();
    for u in &users {
        let mut q = req("c", 1, Some(60), &[("sip:x@203.0.113.7:5060", None, None)]);
        q.aor = u;
        run(&r, &q, T0).unwrap();
    }
    let mut total = 0;
    let mut calls = 0;
    while total < 300 && calls < 1000 {
        let n = r.expire(T0 + 61_000, |_| {});
        assert!(n <= table::SHARDS, "{n}");
        total += n;
        calls += 1;
    }
    assert_eq!(total, 300);
    assert!(calls > 1);
}

#[test]
fn refresh_keeps_expiry_index_consistent() {
    let r = registrar(cfg());
    run(&r, &req("c1", 1, Some(60), &[(PUB, None, None)]), T0).unwrap();
    run(
        &r,
        &req("c1", 2, Some(600), &[(PUB, None, None)]),
        T0 + 50_000,
    )
    .unwrap();
    let mut emptied = Vec::new();
    assert_eq!(r.expire(T0 + 61_000, |a| emptied.push(a.to_owned())), 0);
    assert_eq!(r.next_expiry_ms(), Some(T0 + 650_000));
    assert_eq!(r.expire(T0 + 650_000, |a| emptied.push(a.to_owned())), 1);
    assert_eq!(emptied, ["alice@example.com"]);
}

#[test]
fn table_full_and_bad_input() {
    let r = registrar(RegistrarConfig {
        max_aors: 1,
        ..cfg()
    });
    // max_aors is per stripe rounded up; fill until refused.
    let mut refused = None;
    for i in 0..1000 {
        let aor = format!("u{i}@example.com");
        let mut q = req("c", 1, Some(600), &[(PUB, None, None)]);
        q.aor = &aor;
        if let Err(e) = run(&r, &q, T0) {
            refused = Some(e);
            break;
        }
    }
    assert_eq!(refused, Some(RegisterError::TableFull));
    assert_eq!(RegisterError::TableFull.status().0, 503);
    let r = registrar(cfg());
    let mut q = req("c", 1, Some(600), &[(PUB, None, None)]);
    q.aor = "nodomain";
    assert_eq!(run(&r, &q, T0).unwrap_err(), RegisterError::BadAor);
    let long = "x".repeat(300);
    let q = req(&long, 1, Some(600), &[(PUB, None, None)]);
    assert_eq!(run(&r, &q, T0).unwrap_err(), RegisterError::CallIdTooLong);
}

#[test]
fn hash_collisions_keep_aors_apart() {
    let mut r = registrar(cfg());
    r.table.force_collisions(); // every AOR in one record
    let users = ["alice", "bob", "carol"];
    for (i, u) in users.iter().enumerate() {
        let aor = format!("{u}@example.com");
        let uri = format!("sip:{u}@203.0.113.7:5060");
        let mut q = req(
            "c1",
            1,
            Some(60 * (i as u32 + 1)),
            &[(uri.as_str(), None, None)],
        );
        q.aor = &aor;
        run(&r, &q, T0).unwrap();
    }
    assert_eq!(r.counts(), (3, 3));
    assert_eq!(
        bindings(&r, "bob@example.com", T0)[0].0,
        "sip:bob@203.0.113.7:5060"
    );
    assert!(bindings(&r, "dave@example.com", T0).is_empty());
    let mut emptied = Vec::new();
    assert_eq!(r.expire(T0 + 60_000, |a| emptied.push(a.to_owned())), 1);
    assert_eq!(emptied, ["alice@example.com"]);
    assert_eq!(bindings(&r, "carol@example.com", T0 + 60_000)[0].1, 120);
    assert!(r.remove("bob@example.com", None, T0 + 60_000).emptied);
    assert_eq!(r.counts(), (1, 1));
    assert_eq!(r.expire(T0 + 180_000, |a| emptied.push(a.to_owned())), 1);
    // bob, removed administratively, is reported by the next sweep, before what it expires.
    assert_eq!(
        emptied,
        ["alice@example.com", "bob@example.com", "carol@example.com"]
    );
    assert_eq!(r.counts(), (0, 0));
}

#[test]
fn shared_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Registrar>();
    fn send<T: Send>() {}
    send::<Persister>();
}

#[test]
fn without_use_domain_the_user_part_is_the_key() {
    let r = registrar(RegistrarConfig {
        use_domain: false,
        ..cfg()
    });
    run(&r, &req("c1", 1, Some(60), &[(PUB, None, None)]), T0).unwrap();
    // Asterisk calls the Contact it was given: sip:alice@<proxy address>.
    assert_eq!(bindings(&r, "alice@10.0.0.1", T0).len(), 1);
    assert_eq!(bindings(&r, "alice", T0).len(), 1);
    let mut emptied = Vec::new();
    r.expire(T0 + 60_000, |a| emptied.push(a.to_owned()));
    assert_eq!(emptied, ["alice"]);
    let with = registrar(cfg());
    run(&with, &req("c1", 1, Some(60), &[(PUB, None, None)]), T0).unwrap();
    assert!(bindings(&with, "alice@10.0.0.1", T0).is_empty());
    let mut q = req("c", 1, Some(600), &[(PUB, None, None)]);
    q.aor = "alice";
    assert_eq!(run(&with, &q, T0).unwrap_err(), RegisterError::BadAor);
    assert!(run(&r, &q, T0).is_ok());
}
