//! The proxy core forwards requests and responses without heap allocation once a worker is
//! warm: a full call flow (authenticated INVITE from a phone → 100 + INVITE to Asterisk,
//! 180, 200, ACK through the Route set, BYE from Asterisk to the phone and its 200) is run
//! under a counting global allocator, on a virtual clock, with the test ports and with the
//! real Asterisk farm choosing the node.

use std::net::SocketAddr;
use std::sync::Arc;

use sipfront::asterisk::{Farm, FarmSettings, RegFwd, RegFwdSettings, RegisterMode};
use sipfront::core::testing::{call_flow, test_config, CallDriver, Counter, Fakes};
use sipfront::core::{Core, Now};
use sipfront::registrar::{Registrar, RegistrarConfig};
use sipfront::server::{AsteriskFarm, AsteriskRegFwd};

mod counting;

const PHONE: &str = "127.0.0.3:5062";
const AST: &str = "127.0.0.2:5080";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Runs 200 calls through `core` (counting allocations over the last 100); returns the
/// allocations seen.
fn warm_calls_allocate(mut core: Core) -> usize {
    let cfg = core.config().clone();
    let flows: Vec<_> = (0..200).map(|i| call_flow(&cfg, i, PHONE, AST)).collect();
    let mut sink = Counter {
        last: Vec::with_capacity(65_536),
        ..Counter::default()
    };
    let mut driver = CallDriver::new(addr(PHONE), addr(AST));
    let mut now = 1_700_000_000_000u64;

    for (i, f) in flows.iter().enumerate() {
        if i == 100 {
            counting::start();
        }
        let before = sink.datagrams;
        driver.call(&mut core, f, now, &mut sink);
        assert_eq!(
            sink.datagrams - before,
            7,
            "100, INVITE, 180, 200, ACK, BYE, 200"
        );
        assert!(driver
            .last_forwarded()
            .starts_with(b"BYE sip:alice@127.0.0.3:5062 SIP/2.0\r\n"));
        assert!(sink.last.starts_with(b"SIP/2.0 200 OK\r\n"));
        // Let this call's transactions terminate so slots are reused.
        now += 40_000;
        core.handle_timeout(Now::same(now), &mut sink);
    }
    let allocations = counting::stop();
    assert_eq!(sink.datagrams, 200 * 7);
    assert_eq!(core.stats().forwarded_requests, 200 * 3);
    allocations
}

#[test]
fn forwarding_a_call_allocates_nothing_once_warm() {
    let fakes = Fakes::new(&["alice"]);
    let cfg = test_config(&[AST]);
    let core = Core::new(Arc::new(cfg), fakes.ports(), 0, addr("127.0.0.1:6000"));
    assert_eq!(
        warm_calls_allocate(core),
        0,
        "heap allocations while forwarding 100 warm calls"
    );
}

#[test]
fn the_real_farm_adds_no_allocation_to_a_call() {
    // The farm's choice (weighted rendezvous over the node set) and its back-pressure
    // bookkeeping (first answers) run once or twice per call. Pings are off here: nothing
    // answers them in this test, and they are not part of a call.
    let nodes = vec![addr(AST)];
    let farm = Arc::new(
        Farm::new(&FarmSettings {
            nodes: nodes.clone(),
            probe_interval_ms: 0,
            ..FarmSettings::default()
        })
        .unwrap(),
    );
    let regfwd = RegFwd::new(RegFwdSettings {
        nodes,
        advertise: "127.0.0.1:5060".into(),
        mode: RegisterMode::All,
        refresh_min_interval_secs: None,
        user_agent: "t".into(),
        max_users: 10,
    })
    .unwrap();
    let fakes = Fakes::new(&["alice"]);
    let mut ports = fakes.ports();
    ports.farm = Arc::new(AsteriskFarm {
        farm: farm.clone(),
        regfwd: Arc::new(AsteriskRegFwd {
            regfwd,
            farm: farm.clone(),
        }),
        registrar: Arc::new(Registrar::new(RegistrarConfig::default()).unwrap()),
    });
    let core = Core::new(
        Arc::new(test_config(&[AST])),
        ports,
        0,
        addr("127.0.0.1:6000"),
    );
    assert_eq!(
        warm_calls_allocate(core),
        0,
        "heap allocations while forwarding 100 warm calls through the farm"
    );
    assert_eq!(farm.views(0)[0].latency_ms, 0, "100 Trying came at once");
}

#[test]
fn a_cluster_peers_request_for_a_local_phone_allocates_nothing_once_warm() {
    // Another node forwards Asterisk's INVITE for a phone whose flow is here (core/peer.rs):
    // 100 + INVITE down the phone's flow, the phone's 200 back to the node.
    const PEER: &str = "127.0.0.11:5060";
    let fakes = Fakes::new(&["alice"]);
    fakes.location.peers.set(vec![addr(PEER)]).unwrap();
    fakes.location.add(
        "alice",
        "sip:alice@127.0.0.3:5062",
        addr(PHONE),
        u64::MAX / 2,
    );
    let cfg = test_config(&[AST]);
    let mut core = Core::new(Arc::new(cfg), fakes.ports(), 0, addr("127.0.0.1:6000"));
    let invites: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "INVITE sip:alice@127.0.0.3:5062 SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {PEER};branch=z9hG4bKsf.0.{i}.1.0.0.42\r\n\
                 Max-Forwards: 69\r\n\
                 Route: <sip:alice@127.0.0.1:5060;lr;sfn>\r\n\
                 From: <sip:600@127.0.0.2>;tag=a{i}\r\n\
                 To: <sip:alice@example.com>\r\n\
                 Call-ID: peer-call-{i}\r\n\
                 CSeq: 1 INVITE\r\n\
                 Content-Length: 0\r\n\r\n"
            )
        })
        .collect();
    let mut sink = Counter {
        last: Vec::with_capacity(65_536),
        ..Counter::default()
    };
    let mut answer = Vec::with_capacity(65_536);
    let mut now = 1_700_000_000_000u64;
    for (i, inv) in invites.iter().enumerate() {
        if i == 100 {
            counting::start();
        }
        let from_peer = sipfront::core::Flow::new(sipfront::core::Local::Listen(0), addr(PEER));
        let before = sink.datagrams;
        core.handle_datagram(Now::same(now), from_peer, inv.as_bytes(), &mut sink);
        assert_eq!(
            sink.datagrams - before,
            2,
            "100 Trying and the INVITE to the phone"
        );
        assert!(sink
            .last
            .starts_with(b"INVITE sip:alice@127.0.0.3:5062 SIP/2.0\r\n"));
        sipfront::core::testing::response_into(
            &sink.last,
            b"SIP/2.0 200 OK\r\n",
            b"p",
            b"",
            &mut answer,
        );
        let from_phone = sipfront::core::Flow::new(sipfront::core::Local::Listen(0), addr(PHONE));
        core.handle_datagram(Now::same(now), from_phone, &answer, &mut sink);
        assert!(
            sink.last.starts_with(b"SIP/2.0 200 OK\r\n"),
            "the 200 goes back to the peer"
        );
        now += 40_000;
        core.handle_timeout(Now::same(now), &mut sink);
    }
    assert_eq!(
        counting::stop(),
        0,
        "heap allocations while delivering 100 peers' INVITEs"
    );
}
