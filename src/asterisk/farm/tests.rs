//! The farm on a virtual clock: choice, probing, back-pressure, drain, replay, reload.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;
use crate::asterisk::{RegFwd, RegFwdSettings};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const A: &str = "10.0.0.5:5060";
const B: &str = "10.0.0.6:5060";
const C: &str = "10.0.0.7:5060";

fn settings(nodes: &[&str]) -> FarmSettings {
    FarmSettings {
        nodes: nodes.iter().map(|n| sa(n)).collect(),
        probe_interval_ms: 1000,
        probe_failures: 2,
        probe_successes: 2,
        ..FarmSettings::default()
    }
}

fn node_of(p: Pick) -> SocketAddr {
    match p {
        Pick::Node { addr, .. } => addr,
        other => panic!("no node: {other:?}"),
    }
}

/// Ping every node due at `now`; `answer` says whether (and with which code) each answers.
fn ping_round(f: &Farm, now: u64, answer: impl Fn(SocketAddr) -> Option<u16>) {
    let mut sent = Vec::new();
    f.due_probes(now, |n, seq| sent.push((n, seq)));
    for (n, seq) in sent {
        if let Some(code) = answer(n) {
            f.on_probe_answer(n, seq, code, now + 3);
        }
    }
}

#[test]
fn settings_are_checked() {
    assert_eq!(Farm::new(&settings(&[])).err(), Some(FarmError::Nodes));
    assert_eq!(Farm::new(&settings(&[A, A])).err(), Some(FarmError::Nodes));
    let mut s = settings(&[A, B]);
    s.weights = vec![1];
    assert_eq!(Farm::new(&s).err(), Some(FarmError::Weights));
    s.weights = vec![1, 0];
    assert_eq!(Farm::new(&s).err(), Some(FarmError::Weights));
    s.weights = vec![1, 3];
    assert!(Farm::new(&s).is_ok());
    assert!(FarmError::Weights.to_string().contains("asterisk.weights"));
}

#[test]
fn call_id_or_user_affinity_and_failover_order() {
    let f = Farm::new(&settings(&[A, B, C])).unwrap();
    // Call-ID affinity: the same Call-ID always lands on the same node; the user is ignored.
    let k1 = f.key("alice", "call-1", false);
    assert_eq!(k1, f.key("bob", "call-1", false));
    // Subscriptions follow the subscriber whatever the call affinity.
    assert_eq!(f.key("alice", "x", true), f.key("alice", "y", true));
    let first = f.pick(k1, 0, 0);
    assert_eq!(first, f.pick(k1, 0, 0));
    // Failover: skip what was tried, in rank order, until nothing is left.
    let Pick::Node { index: i1, .. } = first else {
        panic!("{first:?}")
    };
    let second = f.pick(k1, 1 << i1, 0);
    let Pick::Node { index: i2, .. } = second else {
        panic!("{second:?}")
    };
    assert_ne!(i1, i2);
    let third = f.pick(k1, (1 << i1) | (1 << i2), 0);
    assert!(matches!(third, Pick::Node { .. }));
    assert_eq!(f.pick(k1, 0b111, 0), Pick::NoNode);

    let mut s = settings(&[A, B, C]);
    s.affinity = Affinity::User;
    let f = Farm::new(&s).unwrap();
    assert_eq!(
        f.key("alice", "call-1", false),
        f.key("alice", "call-2", false)
    );
    // An empty user (never for an authenticated phone) falls back to the Call-ID.
    assert_ne!(f.key("", "call-1", false), f.key("", "call-2", false));
}

#[test]
fn user_affinity_and_hash_registrations_agree_with_regfwd() {
    let nodes = [A, B, C];
    let f = Farm::new(&settings(&nodes)).unwrap();
    let rs = RegFwdSettings {
        nodes: nodes.iter().map(|n| sa(n)).collect(),
        advertise: "10.0.0.1:5060".into(),
        mode: RegisterMode::Hash,
        refresh_min_interval_secs: None,
        user_agent: "t".into(),
        max_users: 10,
    };
    let regfwd = RegFwd::new(rs).unwrap();
    for i in 0..500 {
        let user = format!("u{i}");
        let want = f.node_set().nodes()[regfwd.node_for(&user)].addr();
        assert_eq!(f.register_node(&user), Some(want), "{user}");
        // A subscription (or a call with user affinity) goes where the user registers.
        assert_eq!(node_of(f.pick(f.key(&user, "c", true), 0, 0)), want);
    }
}

#[test]
fn a_node_down_moves_only_its_calls_and_registrations() {
    let f = Farm::new(&settings(&[A, B, C])).unwrap();
    let keys: Vec<u64> = (0..3000)
        .map(|i| f.key("", &format!("c{i}"), false))
        .collect();
    let before: Vec<SocketAddr> = keys.iter().map(|k| node_of(f.pick(*k, 0, 0))).collect();
    let regs: Vec<_> = (0..3000)
        .map(|i| f.register_node(&format!("u{i}")))
        .collect();
    // B stops answering: two pings later it is down.
    ping_round(&f, 0, |_| Some(200));
    ping_round(&f, 1000, |n| (n != sa(B)).then_some(200));
    assert!(!f.is_down(sa(B)));
    ping_round(&f, 2000, |n| (n != sa(B)).then_some(200));
    ping_round(&f, 3000, |n| (n != sa(B)).then_some(200));
    assert!(f.is_down(sa(B)));
    let mut moved = 0;
    for (k, was) in keys.iter().zip(&before) {
        let now = node_of(f.pick(*k, 0, 0));
        assert_ne!(now, sa(B));
        if *was == sa(B) {
            moved += 1;
        } else {
            assert_eq!(now, *was, "a call of a live node moved");
        }
    }
    assert!((800..1200).contains(&moved), "{moved}");
    for (i, was) in regs.iter().enumerate() {
        let now = f.register_node(&format!("u{i}"));
        if *was != Some(sa(B)) {
            assert_eq!(now, *was);
        }
        assert_ne!(now, Some(sa(B)));
    }
    let mut up = Vec::new();
    f.for_each_up(|n| up.push(n));
    assert_eq!(up, [sa(A), sa(C)]);
}

#[test]
fn probing_claims_each_ping_once_and_counts_transitions() {
    let f = Arc::new(Farm::new(&settings(&[A, B])).unwrap());
    let wakes = Arc::new(AtomicUsize::new(0));
    let w = wakes.clone();
    f.set_waker(Box::new(move || {
        w.fetch_add(1, Ordering::Relaxed);
    }));
    let mut sent = Vec::new();
    assert_eq!(f.due_probes(0, |n, s| sent.push((n, s))), 1000);
    assert_eq!(sent.len(), 2);
    // A second worker at the same time: nothing left to claim.
    let mut again = Vec::new();
    assert_eq!(f.due_probes(0, |n, s| again.push((n, s))), 1000);
    assert!(again.is_empty());
    assert_eq!(f.next_due(), 1000);
    // Answers: a late answer of an old ping is ignored; the latency is kept.
    f.on_probe_answer(sent[0].0, sent[0].1, 200, 7);
    f.on_probe_answer(sent[0].0, sent[0].1, 200, 9);
    let v = f.views(10);
    assert_eq!(v[0].last_ping_ms, Some(7));
    assert_eq!((v[0].pings_sent, v[0].pings_answered), (1, 1));
    assert_eq!(v[1].last_ping_ms, None);
    // B never answers: failure at 1000 (its first ping), down at 2000; one wake.
    let gen = f.generation();
    ping_round(&f, 1000, |n| (n == sa(A)).then_some(200));
    assert!(!f.is_down(sa(B)));
    ping_round(&f, 2000, |n| (n == sa(A)).then_some(200));
    assert!(f.is_down(sa(B)));
    assert_eq!(f.generation(), gen + 1);
    assert_eq!(wakes.load(Ordering::Relaxed), 1);
    // B answers again: up after two answered pings, and a replay starts for it.
    ping_round(&f, 3000, |_| Some(200));
    assert!(f.is_down(sa(B)));
    ping_round(&f, 4000, |_| Some(200));
    assert!(!f.is_down(sa(B)));
    let v = f.views(4010);
    assert_eq!((v[1].went_down, v[1].came_up), (1, 1));
    assert_eq!(v[1].since_ms, Some(7));
    assert_eq!(v[1].replaying, Some(0));
    assert_eq!(f.replay_claim(4010).map(|b| b.node), Some(sa(B)));
    // 503 answers to pings are failures too.
    ping_round(&f, 5000, |n| Some(if n == sa(A) { 503 } else { 200 }));
    ping_round(&f, 6000, |n| Some(if n == sa(A) { 503 } else { 200 }));
    assert!(f.is_down(sa(A)));
    // A transport error takes a node down at once.
    f.on_transport_error(sa(B), 6100);
    assert!(f.is_down(sa(B)));
    assert_eq!(f.pick(1, 0, 6100), Pick::NoNode);
}

#[test]
fn back_pressure_503_and_slow_answers() {
    let mut s = settings(&[A, B]);
    s.busy_latency_ms = 500;
    s.busy_backoff_ms = 2000;
    let f = Farm::new(&s).unwrap();
    let key = f.key("", "c1", false);
    let first = node_of(f.pick(key, 0, 0));
    let other = if first == sa(A) { sa(B) } else { sa(A) };
    // A 503 with Retry-After: 3 keeps new calls off the node for 3 s.
    f.on_answer(first, 503, Some(2), Some(3), 100);
    assert_eq!(node_of(f.pick(key, 0, 200)), other);
    assert_eq!(node_of(f.pick(key, 0, 3100)), first);
    // Both busy: 503 at the edge with the shortest Retry-After.
    let busy = |node, at| f.on_answer(node, 503, None, None, at);
    busy(sa(A), 4000);
    assert_eq!(
        f.pick(key, 0, 4100),
        Pick::Node {
            index: 1,
            addr: sa(B)
        }
    );
    busy(sa(B), 5000);
    assert_eq!(
        f.pick(key, 0, 5500),
        Pick::Busy {
            retry_after_secs: 1
        }
    );
    // Slow first answers: the smoothed latency passes 500 ms after a few slow ones.
    let slow = |at| f.on_answer(sa(A), 100, Some(3000), None, at);
    slow(10_000);
    assert!(matches!(
        f.pick(f.key("", "x", false), 0b10, 10_001),
        Pick::Node { .. }
    ));
    slow(10_002);
    assert!(matches!(
        f.pick(f.key("", "x", false), 0b10, 10_003),
        Pick::Busy { .. }
    ));
    assert!(matches!(
        f.pick(f.key("", "x", false), 0b10, 12_003),
        Pick::Node { .. }
    ));
    let v = f.views(12_003);
    // The 503 at 100 counted for A only if A was the first choice.
    assert_eq!(v[0].busy_count, 2 + u64::from(first == sa(A)));
    assert_eq!(v[0].latency_ms, 250);
}

#[test]
fn drained_nodes_get_no_new_calls_but_keep_registrations() {
    let f = Farm::new(&settings(&[A, B])).unwrap();
    assert_eq!(f.set_drained(sa(A), true), Some(true));
    assert_eq!(f.set_drained(sa(A), true), Some(false));
    assert_eq!(f.set_drained(sa(C), true), None);
    for i in 0..200 {
        assert_eq!(
            node_of(f.pick(f.key("", &format!("c{i}"), false), 0, 0)),
            sa(B)
        );
    }
    let mut up = Vec::new();
    f.for_each_up(|n| up.push(n));
    assert_eq!(up, [sa(A), sa(B)], "REGISTERs still reach a drained node");
    assert_eq!(f.pick(1, 0b10, 0), Pick::NoNode);
    assert_eq!(f.set_drained(sa(A), false), Some(true));
    assert!((0..200).any(|i| node_of(f.pick(f.key("", &format!("c{i}"), false), 0, 0)) == sa(A)));
}

#[test]
fn reload_keeps_state_replays_to_new_nodes_and_can_stop_probing() {
    let f = Farm::new(&settings(&[A, B])).unwrap();
    f.set_drained(sa(A), true);
    ping_round(&f, 0, |_| None);
    ping_round(&f, 1000, |_| None);
    ping_round(&f, 2000, |_| None);
    assert!(f.is_down(sa(B)));
    let gen = f.generation();
    let mut s = settings(&[A, B, C]);
    s.weights = vec![1, 1, 5];
    f.reconfigure(&s, 2500).unwrap();
    assert!(f.generation() > gen);
    let v = f.views(2500);
    assert!(v[0].drained && !v[0].up && !v[1].up && v[2].up);
    assert_eq!(v[2].weight, 5);
    // The new node gets the registrations.
    let b = f.replay_claim(2500).expect("replay to the new node");
    assert_eq!((b.node, b.limit), (sa(C), 50));
    f.replay_done(sa(C), None, 12);
    assert_eq!(f.views(2600)[2].replayed, 12);
    // Probing off: every node counts as up, and no ping is due.
    s.probe_interval_ms = 0;
    f.reconfigure(&s, 3000).unwrap();
    assert!(!f.is_down(sa(A)) && !f.is_down(sa(B)));
    assert_eq!(f.due_probes(10_000, |_, _| panic!("no pings")), u64::MAX);
    // Invalid settings change nothing.
    assert!(f.reconfigure(&settings(&[]), 3100).is_err());
    assert_eq!(f.node_set().nodes().len(), 3);
}

#[test]
fn replays_in_hash_mode_list_more_per_batch() {
    let mut s = settings(&[A, B, C]);
    s.register_mode = RegisterMode::Hash;
    s.replay_rate_per_sec = 100;
    let f = Farm::new(&s).unwrap();
    f.reconfigure(&settings(&[A, B, C, "10.0.0.8:5060"]), 0)
        .unwrap();
    // (The reload above went back to mode all: a batch is the paced count.)
    assert_eq!(f.replay_claim(0).map(|b| b.limit), Some(50));
    let f = Farm::new(&s).unwrap();
    let mut s4 = s.clone();
    s4.nodes.push(sa("10.0.0.8:5060"));
    f.reconfigure(&s4, 0).unwrap();
    // 100/s: 10 REGISTERs per 100 ms; four nodes each holding a quarter: list 40 AORs.
    assert_eq!(f.replay_claim(0).map(|b| b.limit), Some(40));
    // A node that went down meanwhile loses its job.
    f.on_transport_error(sa("10.0.0.8:5060"), 1);
    assert_eq!(f.replay_claim(200), None);
}
