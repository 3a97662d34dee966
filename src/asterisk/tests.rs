//! REGFWD policy on a virtual clock: throttle, Call-ID/CSeq, node choice, Expires: 0.

use std::net::SocketAddr;

use super::*;

const T0: u64 = 1_764_159_377_000;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const VIA: Via<'static> = Via {
    transport: "UDP",
    host: "10.0.0.1",
    port: 5071,
};

fn settings(nodes: &[&str], mode: RegisterMode) -> RegFwdSettings {
    RegFwdSettings {
        nodes: nodes.iter().map(|n| sa(n)).collect(),
        advertise: "10.0.0.1:5060".into(),
        mode,
        refresh_min_interval_secs: None,
        user_agent: "sipfront".into(),
        max_users: 1000,
    }
}

fn one() -> RegFwd {
    RegFwd::new(settings(&["10.0.0.5:5060"], RegisterMode::All)).unwrap()
}

#[test]
fn first_register_then_throttled_refreshes() {
    let f = one();
    let a = f
        .on_register("alice", 3600, true, T0)
        .expect("first is forwarded");
    assert_eq!((a.expires, a.cseq, a.targets), (3600, 1, Targets::One(0)));
    // A phone refreshing every 30 s with Expires 3600: nothing until half of 3600 s passed.
    let mut sent = vec![a.clone()];
    for i in 1..=130u64 {
        if let Some(fw) = f.on_register("alice", 3600, false, T0 + i * 30_000) {
            sent.push(fw);
        }
    }
    // 130 * 30 s = 3900 s: forwarded at t=0, t=1800 s, t=3600 s.
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent
        .iter()
        .all(|s| s.call_id == a.call_id && s.from_tag == a.from_tag));
    assert_eq!(sent.iter().map(|s| s.cseq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        f.stats()
            .throttled
            .load(std::sync::atomic::Ordering::Relaxed),
        128
    );
}

#[test]
fn changes_are_forwarded_at_once() {
    let f = one();
    f.on_register("alice", 3600, true, T0).unwrap();
    assert!(f.on_register("alice", 3600, false, T0 + 1000).is_none());
    let b = f
        .on_register("alice", 3600, true, T0 + 2000)
        .expect("changed binding set");
    assert_eq!(b.cseq, 2);
}

#[test]
fn longer_phone_expiry_is_not_left_to_lapse() {
    let f = one();
    f.on_register("alice", 60, true, T0).unwrap();
    // 10 s later the phone asks for 3600 s: Asterisk would lapse at T0+60 s long before the
    // phone's next refresh -> forward now.
    let fw = f
        .on_register("alice", 3600, false, T0 + 10_000)
        .expect("forwarded");
    assert_eq!(fw.expires, 3600);
    // Phone with Expires 60 refreshing every 20 s: forwarded once per 30 s window.
    let f = one();
    f.on_register("bob", 60, true, T0).unwrap();
    let sent: Vec<u64> = (1..=9u64)
        .filter(|i| f.on_register("bob", 60, false, T0 + i * 20_000).is_some())
        .map(|i| i * 20)
        .collect();
    assert_eq!(sent, [40, 80, 120, 160]);
}

#[test]
fn configured_interval_caps_the_window() {
    let mut s = settings(&["10.0.0.5:5060"], RegisterMode::All);
    s.refresh_min_interval_secs = Some(0);
    let f = RegFwd::new(s.clone()).unwrap();
    f.on_register("alice", 3600, true, T0).unwrap();
    assert!(f.on_register("alice", 3600, false, T0 + 1).is_some());
    s.refresh_min_interval_secs = Some(300);
    let f = RegFwd::new(s).unwrap();
    f.on_register("alice", 3600, true, T0).unwrap();
    assert!(f.on_register("alice", 3600, false, T0 + 299_000).is_none());
    assert!(f.on_register("alice", 3600, false, T0 + 300_000).is_some());
}

#[test]
fn unregister_and_expiry_send_expires_zero_once() {
    let f = one();
    let a = f.on_register("alice", 600, true, T0).unwrap();
    f.on_register("alice", 600, false, T0 + 400_000).unwrap();
    let z = f.on_aor_empty("alice").expect("expires 0");
    assert_eq!((z.expires, z.cseq, &z.call_id), (0, 3, &a.call_id));
    assert!(f.on_aor_empty("alice").is_none(), "only once");
    // The phone unregistering itself (outcome.expires == 0) is the same.
    f.on_register("bob", 600, true, T0).unwrap();
    assert_eq!(
        f.on_register("bob", 0, true, T0 + 1).map(|z| z.expires),
        Some(0)
    );
    assert!(f.on_register("bob", 0, true, T0 + 2).is_none());
    // A user never forwarded is not unregistered.
    assert!(f.on_aor_empty("carol").is_none());
    // After unregistering, a new registration starts a new Call-ID at CSeq 1.
    let again = f.on_register("alice", 600, true, T0 + 500_000).unwrap();
    assert_ne!(again.call_id, a.call_id);
    assert_eq!(again.cseq, 1);
}

#[test]
fn failure_and_challenge_retry() {
    let f = one();
    let a = f.on_register("alice", 3600, true, T0).unwrap();
    // 401 from Asterisk: resend with the same Call-ID, CSeq + 1; later refreshes go above.
    assert_eq!(f.retry_cseq("alice", &a.call_id, a.cseq), 2);
    let b = f.on_register("alice", 3600, true, T0 + 1000).unwrap();
    assert_eq!((b.cseq, &b.call_id), (3, &a.call_id));
    // A failed forward clears the throttle: the next refresh goes out.
    f.on_failed("alice", &b.call_id);
    assert!(f.on_register("alice", 3600, false, T0 + 2000).is_some());
}

#[test]
fn state_is_bounded() {
    let mut s = settings(&["10.0.0.5:5060"], RegisterMode::All);
    s.max_users = 2;
    let f = RegFwd::new(s).unwrap();
    for u in ["a", "b", "c"] {
        assert!(f.on_register(u, 600, true, T0).is_some());
    }
    // "c" is untracked: each refresh is forwarded statelessly.
    assert!(f.on_register("c", 600, false, T0 + 1).is_some());
    assert!(f.on_register("a", 600, false, T0 + 1).is_none());
    assert_eq!(
        f.stats()
            .untracked
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[test]
fn node_selection() {
    let nodes = ["10.0.0.5:5060", "10.0.0.6:5060", "10.0.0.7:5060"];
    let all = RegFwd::new(settings(&nodes, RegisterMode::All)).unwrap();
    let fw = all.on_register("alice", 600, true, T0).unwrap();
    assert_eq!(fw.targets, Targets::All);
    assert_eq!(
        all.target_nodes(&fw)
            .into_iter()
            .map(|(i, _)| i)
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );

    let h1 = RegFwd::new(settings(&nodes, RegisterMode::Hash)).unwrap();
    let h2 = RegFwd::new(settings(&nodes, RegisterMode::Hash)).unwrap();
    let users: Vec<String> = (0..3000).map(|i| format!("user{i}")).collect();
    let mut per_node = [0usize; 3];
    for u in &users {
        let n = h1.node_for(u);
        assert_eq!(n, h2.node_for(u), "stable across instances");
        per_node[n] += 1;
    }
    assert!(per_node.iter().all(|&c| c > 800), "{per_node:?}");
    // Fixed values: stable across processes and releases (FNV-1a + rendezvous).
    // A change here means node choice changed for deployed users.
    assert_eq!(
        [
            h1.node_for("alice"),
            h1.node_for("bob"),
            h1.node_for("1001")
        ],
        [1, 0, 1]
    );
    // Removing a node moves only that node's users.
    let h3 = RegFwd::new(settings(&nodes[..2], RegisterMode::Hash)).unwrap();
    for u in &users {
        let before = h1.node_for(u);
        if before < 2 {
            assert_eq!(h3.node_for(u), before, "{u}");
        }
    }
    let fw = h1.on_register("alice", 600, true, T0).unwrap();
    assert_eq!(fw.targets, Targets::One(h1.node_for("alice")));
}

#[test]
fn replays_continue_the_users_cseq() {
    let f = one();
    let a = f.on_register("alice", 3600, true, T0).unwrap();
    let r = f.on_replay("alice", 1200);
    assert_eq!((&r.call_id, r.cseq, r.expires), (&a.call_id, 2, 1200));
    assert_eq!(r.from_tag, a.from_tag);
    // The phone's next change continues above the replay.
    assert_eq!(f.on_register("alice", 3600, true, T0 + 1).unwrap().cseq, 3);
    // Unknown user: a fresh identity, no state (its next REGISTER is a first one).
    let b = f.on_replay("bob", 60);
    assert_eq!(b.cseq, 1);
    assert_ne!(b.call_id, a.call_id);
    assert_eq!(f.on_register("bob", 60, false, T0).unwrap().cseq, 1);
}

#[test]
fn writes_the_tutorial_register() {
    let f = one();
    let fw = f.on_register("alice", 3600, true, T0).unwrap();
    let branch = branch_for("w1", &fw.call_id, fw.cseq, 0);
    assert!(branch.as_str().starts_with("z9hG4bKw1"));
    assert_eq!(branch.as_str().len(), "z9hG4bKw1".len() + 16);
    let mut out = Vec::with_capacity(1024);
    f.write(
        &fw.to(sa("10.0.0.5:5060"), "alice"),
        VIA,
        branch.as_str(),
        None,
        &mut out,
    )
    .unwrap();
    let want = format!(
        "REGISTER sip:10.0.0.5:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.1:5071;branch={b};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@10.0.0.5>;tag={t}\r\n\
         To: <sip:alice@10.0.0.5>\r\n\
         Call-ID: {c}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:alice@10.0.0.1:5060>\r\n\
         Expires: 3600\r\n\
         User-Agent: sipfront\r\n\
         Content-Length: 0\r\n\r\n",
        b = branch.as_str(),
        t = fw.from_tag.as_str(),
        c = fw.call_id
    );
    assert_eq!(String::from_utf8(out.clone()).unwrap(), want);
    assert!(fw.call_id.ends_with("@sipfront") && fw.from_tag.as_str().len() == 16);
    // Expires: 0 after expiry, same Call-ID, next CSeq.
    let z = f.on_aor_empty("alice").unwrap();
    f.write(
        &z.to(sa("10.0.0.5:5060"), "alice"),
        VIA,
        "z9hG4bKx",
        None,
        &mut out,
    )
    .unwrap();
    let s = String::from_utf8(out).unwrap();
    assert!(s.contains("\r\nExpires: 0\r\n") && s.contains("\r\nCSeq: 2 REGISTER\r\n"));
    assert!(s.contains(&format!("\r\nCall-ID: {}\r\n", fw.call_id)));
    let mut out = Vec::new();
    assert_eq!(
        f.write(
            &z.to(sa("10.0.0.5:5060"), "al ice"),
            VIA,
            "z9hG4bKx",
            None,
            &mut out
        ),
        Err(BuildError::BadUser)
    );
}

#[test]
fn settings_are_checked() {
    let mut s = settings(&[], RegisterMode::All);
    assert_eq!(RegFwd::new(s.clone()).err(), Some(RegFwdError::Nodes));
    s.nodes = vec![sa("10.0.0.5:5060")];
    s.advertise = "0.0.0.0:5060".into();
    assert_eq!(RegFwd::new(s.clone()).err(), Some(RegFwdError::Advertise));
    s.advertise = "sip.example.com:0".into();
    assert_eq!(RegFwd::new(s.clone()).err(), Some(RegFwdError::Advertise));
    s.advertise = "sip.example.com:5060".into();
    assert!(RegFwd::new(s.clone()).is_ok());
    s.advertise = "10.0.0.1:5060".into();
    s.user_agent = "a\r\nb".into();
    assert_eq!(RegFwd::new(s).err(), Some(RegFwdError::UserAgent));
}

#[test]
fn asterisk_granting_less_shortens_the_window() {
    let f = one();
    let a = f.on_register("alice", 3600, true, T0).unwrap();
    // Asterisk (PJSIP maximum_expiration = 300) granted only 300 s.
    f.on_asterisk_ok("alice", &a.call_id, 300);
    f.on_asterisk_ok("alice", "other-call-id", 10); // stale: ignored
    assert!(f.on_register("alice", 3600, false, T0 + 149_000).is_none());
    assert!(
        f.on_register("alice", 3600, false, T0 + 150_000).is_some(),
        "half of 300 s"
    );
}

#[test]
fn reconfigure_swaps_nodes_and_forgets_throttle_state() {
    let f = RegFwd::new(settings(&["10.0.0.5:5060"], RegisterMode::All)).unwrap();
    f.on_register("alice", 3600, true, T0).expect("first");
    assert!(f.on_register("alice", 3600, false, T0 + 1000).is_none());

    // Same nodes, new throttle: state kept (still throttled).
    let mut same = settings(&["10.0.0.5:5060"], RegisterMode::All);
    same.refresh_min_interval_secs = Some(600);
    f.reconfigure(&same).unwrap();
    assert!(f.on_register("alice", 3600, false, T0 + 2000).is_none());

    // New nodes: the next refresh is forwarded at once, to both new nodes.
    f.reconfigure(&settings(
        &["10.0.0.6:5060", "10.0.0.7:5060"],
        RegisterMode::All,
    ))
    .unwrap();
    let fw = f
        .on_register("alice", 3600, false, T0 + 3000)
        .expect("forwarded after the node change");
    let t = f.targeting();
    let to: Vec<SocketAddr> = t.target_nodes(&fw).map(|(_, a)| a).collect();
    assert_eq!(to, [sa("10.0.0.6:5060"), sa("10.0.0.7:5060")]);
    let mut out = Vec::new();
    f.write(&fw.to(to[0], "alice"), VIA, "z9hG4bKx", None, &mut out)
        .unwrap();
    assert!(String::from_utf8(out)
        .unwrap()
        .starts_with("REGISTER sip:10.0.0.6:5060 "));

    // Invalid settings change nothing.
    assert!(f.reconfigure(&settings(&[], RegisterMode::All)).is_err());
    assert_eq!(f.nodes(), [sa("10.0.0.6:5060"), sa("10.0.0.7:5060")]);
}

#[test]
fn regfwd_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<RegFwd>();
}
