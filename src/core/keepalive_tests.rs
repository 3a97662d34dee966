//! NAT keepalives on a virtual clock: pings every interval at the binding's flow, answers
//! clear the count, a silent flow's binding goes after `keepalive_failures` pings with
//! REGFWD's Expires: 0, CRLF on streams and a closed connection's binding removed.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::keepalive::KeepaliveMethod;
use super::testing::{response_into, test_config, Fakes, Recorder, Sent, ASTERISK};
use super::{ConnId, Core, Flow, Local, Now};
use crate::sip::Transport;

const T0: u64 = 1_700_000_000_000;
const ALIVE: &str = "203.0.113.1:4000";
const SILENT: &str = "203.0.113.2:4000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn setup(method: KeepaliveMethod) -> (Fakes, Core) {
    let fakes = Fakes::new(&["alice", "bob"]);
    fakes.location.keepalives.store(true, Ordering::Relaxed);
    let far = T0 + 3_600_000;
    fakes
        .location
        .add("alice", "sip:alice@192.168.1.2:5060", addr(ALIVE), far);
    fakes
        .location
        .add("bob", "sip:bob@192.168.1.3:5060", addr(SILENT), far);
    let mut cfg = test_config(&["127.0.0.2:5080"]);
    cfg.nat.keepalive_interval_secs = 1;
    cfg.nat.keepalive_failures = 3;
    cfg.nat.keepalive = method;
    let core = Core::new(Arc::new(cfg), fakes.ports(), 0, addr("127.0.0.1:6000"));
    (fakes, core)
}

/// Runs the clock in 100 ms steps to `until`, answering every OPTIONS to `ALIVE`; returns
/// everything sent with the time it left.
fn run(core: &mut Core, from: u64, until: u64) -> Vec<(u64, Sent)> {
    let mut rec = Recorder::default();
    let mut out = Vec::new();
    let mut answer = Vec::new();
    let mut t = from;
    while t < until {
        t += 100;
        core.handle_timeout(Now::same(t), &mut rec);
        for s in rec.take() {
            if s.dst == addr(ALIVE) && s.bytes.starts_with(b"OPTIONS ") {
                response_into(&s.bytes, b"SIP/2.0 200 OK\r\n", b"a", b"", &mut answer);
                let from = Flow::new(Local::Listen(0), addr(ALIVE));
                core.handle_datagram(Now::same(t), from, &answer, &mut Recorder::default());
            }
            out.push((t, s));
        }
    }
    out
}

#[test]
fn a_silent_flow_is_removed_and_unregistered_an_answering_one_is_kept() {
    let (fakes, mut core) = setup(KeepaliveMethod::Options);
    let sent = run(&mut core, T0, T0 + 6_000);
    let pings = |dst: &str| -> Vec<u64> {
        sent.iter()
            .filter(|(_, s)| s.dst == addr(dst) && s.bytes.starts_with(b"OPTIONS "))
            .map(|(t, _)| *t)
            .collect()
    };
    let (alive, silent) = (pings(ALIVE), pings(SILENT));
    // From the listen socket the binding names, to its Contact.
    let first = sent
        .iter()
        .find(|(_, s)| s.dst == addr(SILENT))
        .map(|(_, s)| s)
        .unwrap();
    assert_eq!(first.sock, Local::Listen(0));
    assert!(first
        .text()
        .starts_with("OPTIONS sip:bob@192.168.1.3:5060 SIP/2.0\r\n"));
    assert!(
        first.text().contains(";branch=z9hG4bKsf.0.fffffffd."),
        "{}",
        first.text()
    );
    // Every interval: six to the answering phone, three to the silent one.
    assert!(alive.len() >= 5, "{alive:?}");
    assert!(
        alive
            .windows(2)
            .all(|w| (900..=1100).contains(&(w[1] - w[0]))),
        "{alive:?}"
    );
    assert_eq!(silent.len(), 3, "{silent:?}");
    // Removed when the fourth was due, and Asterisk told: Expires: 0 from the upstream socket.
    let unregister = sent
        .iter()
        .find(|(_, s)| s.sock == Local::Upstream && s.dst == ASTERISK)
        .expect("an Expires: 0 REGISTER");
    assert!(unregister.1.text().contains("Expires: 0\r\n"));
    assert!(unregister.1.text().contains("sip:bob@"));
    assert!(
        unregister.0 - silent[0] <= 3_000 + 1_000,
        "{} ms",
        unregister.0 - silent[0]
    );
    let b = fakes.location.bindings.lock().unwrap();
    assert!(b.get("bob").is_none_or(|l| l.is_empty()));
    assert_eq!(b.get("alice").map(Vec::len), Some(1));
    drop(b);
    let st = core.stats();
    assert_eq!(st.keepalive_removed, 1);
    assert_eq!(st.keepalives_answered, alive.len() as u64);
    assert_eq!(st.keepalives_sent, (alive.len() + silent.len()) as u64);
    // Nothing is owed by the answering flow; the dead one leaves the map by the next round.
    run(&mut core, T0 + 6_000, T0 + 8_000);
    assert_eq!(core.keepalives_owing(), 0);
}

#[test]
fn crlf_keepalives_on_udp_remove_nothing() {
    let (fakes, mut core) = setup(KeepaliveMethod::Crlf);
    let sent = run(&mut core, T0, T0 + 5_000);
    assert!(sent.iter().all(|(_, s)| s.bytes == b"\r\n\r\n"));
    assert!(sent.iter().filter(|(_, s)| s.dst == addr(SILENT)).count() >= 4);
    assert_eq!(core.stats().keepalive_removed, 0);
    assert_eq!(
        fakes
            .location
            .bindings
            .lock()
            .unwrap()
            .get("bob")
            .map(Vec::len),
        Some(1)
    );
}

#[test]
fn streams_get_crlf_and_a_closed_connection_loses_its_binding() {
    let fakes = Fakes::new(&["carol"]);
    fakes.location.keepalives.store(true, Ordering::Relaxed);
    let phone = addr("203.0.113.9:50000");
    let conn = ConnId {
        worker: 0,
        slot: 4,
        gen: 1,
    };
    fakes.links.open(Transport::Tcp, phone, conn);
    let tcp = Flow::on_conn(Local::Listen(1), phone, conn);
    fakes.location.add_on(
        "carol",
        "sip:carol@203.0.113.9:50000;transport=tcp",
        tcp,
        T0 + 3_600_000,
    );
    let mut cfg = test_config(&["127.0.0.2:5080"]);
    cfg.interfaces.push(super::Interface::with_transport(
        addr("127.0.0.1:5060"),
        Transport::Tcp,
    ));
    cfg.nat.keepalive_interval_secs = 1;
    let mut core = Core::new(Arc::new(cfg), fakes.ports(), 0, addr("127.0.0.1:6000"));
    let sent = run(&mut core, T0, T0 + 2_500);
    let pings: Vec<_> = sent.iter().filter(|(_, s)| s.dst == phone).collect();
    assert!(
        pings.len() >= 2
            && pings
                .iter()
                .all(|(_, s)| s.bytes == b"\r\n\r\n" && s.sock == Local::Listen(1))
    );
    fakes.links.close(phone);
    let sent = run(&mut core, T0 + 2_500, T0 + 4_000);
    assert!(
        sent.iter().all(|(_, s)| s.dst != phone),
        "nothing more on a closed connection"
    );
    assert!(sent
        .iter()
        .any(|(_, s)| s.sock == Local::Upstream && s.text().contains("Expires: 0")));
    assert_eq!(core.stats().keepalive_removed, 1);
}
