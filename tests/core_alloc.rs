//! The proxy core forwards requests and responses without heap allocation once a worker is
//! warm: a full call flow (authenticated INVITE from a phone → 100 + INVITE to Asterisk,
//! 180, 200, ACK through the Route set, BYE from Asterisk to the phone and its 200) is run
//! under a counting global allocator, on a virtual clock, with the test ports and with the
//! real Asterisk farm choosing the node. Dropping forged and spoofed responses and holding
//! failed authentications for `[auth] failure_delay_ms` allocate nothing either, nor does
//! the NAT keepalive path (the cursor's scan of the real location table, the OPTIONS to
//! each NATed binding, the phones' answers) once warm.

use std::net::SocketAddr;
use std::sync::Arc;

use sipfront::asterisk::{Farm, FarmSettings, RegFwd, RegFwdSettings, RegisterMode};
use sipfront::core::testing::{call_flow, response_into, test_config, CallDriver, Counter, Fakes};
use sipfront::core::{Core, Flow, Local, Now, Transmit};
use sipfront::registrar::{ContactInput, RegisterRequest, Registrar, RegistrarConfig, SipEdge};
use sipfront::server::{AsteriskFarm, AsteriskRegFwd};
use sipfront::sip::Transport;

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

/// Flips the last digit of the first branch of ours in `msg` (its MAC), in place.
fn flip_mac(msg: &mut [u8]) {
    let prefix = b"z9hG4bKsf.";
    let at = msg
        .windows(prefix.len())
        .position(|w| w == prefix)
        .expect("a branch of ours");
    let len = msg[at + prefix.len()..]
        .iter()
        .position(|c| !(c.is_ascii_hexdigit() || *c == b'.'))
        .expect("the branch ends");
    let last = at + prefix.len() + len - 1;
    msg[last] = if msg[last] == b'0' { b'1' } else { b'0' };
}

#[test]
fn dropped_responses_and_held_failures_allocate_nothing_once_warm() {
    let fakes = Fakes::new(&["alice"]);
    let mut cfg = test_config(&[AST]);
    cfg.auth_failure_delay_ms = 100;
    let mut core = Core::new(Arc::new(cfg), fakes.ports(), 0, addr("127.0.0.1:6000"));
    let cfg = core.config().clone();
    let flows: Vec<_> = (0..200).map(|i| call_flow(&cfg, i, PHONE, AST)).collect();
    let wrong: Vec<Vec<u8>> = flows
        .iter()
        .map(|f| {
            String::from_utf8_lossy(&f.invite)
                .replace("response=\"good\"", "response=\"bad\"")
                .replace("z9hG4bKinv", "z9hG4bKbad")
                .into_bytes()
        })
        .collect();
    let mut sink = Counter {
        last: Vec::with_capacity(65_536),
        ..Counter::default()
    };
    let (mut fwd, mut resp) = (Vec::with_capacity(65_536), Vec::with_capacity(65_536));
    let phone = Flow::new(Local::Listen(0), addr(PHONE));
    let node = Flow::new(Local::Upstream, addr(AST));
    let attacker = Flow::new(Local::Upstream, addr("192.0.2.66:5080"));
    let mut now = 1_700_000_000_000u64;
    for (i, f) in flows.iter().enumerate() {
        if i == 100 {
            counting::start();
        }
        // A wrong password: nothing at once, the 407 100 ms later.
        let before = sink.datagrams;
        core.handle_datagram(Now::same(now), phone, &wrong[i], &mut sink);
        assert_eq!(sink.datagrams, before, "held");
        core.handle_timeout(Now::same(now + 100), &mut sink);
        assert_eq!(sink.datagrams, before + 1);
        assert!(sink.last.starts_with(b"SIP/2.0 407 "));
        // A call whose 200 comes from an attacker, then from the node with a wrong MAC.
        core.handle_datagram(Now::same(now + 100), phone, &f.invite, &mut sink);
        fwd.clear();
        fwd.extend_from_slice(&sink.last);
        assert!(fwd.starts_with(b"INVITE "));
        response_into(&fwd, b"SIP/2.0 200 OK\r\n", b"x", b"", &mut resp);
        let sent = sink.datagrams;
        core.handle_datagram(Now::same(now + 100), attacker, &resp, &mut sink);
        flip_mac(&mut resp);
        core.handle_datagram(Now::same(now + 100), node, &resp, &mut sink);
        assert_eq!(sink.datagrams, sent, "nothing relayed");
        // Timer B answers the phone 408, retransmitted until Timer H: all over by then.
        now += 100_000;
        core.handle_timeout(Now::same(now), &mut sink);
    }
    let allocations = counting::stop();
    assert_eq!(core.stats().dropped_spoofed, 200);
    assert_eq!(core.stats().dropped_forged, 200);
    assert_eq!(
        allocations, 0,
        "heap allocations while holding 100 failures and dropping 200 responses"
    );
}

/// Keeps every datagram of a turn (flow and bytes) in reused buffers.
struct Turn {
    bytes: Vec<u8>,
    sent: Vec<(Flow, usize, usize)>,
}

impl Transmit for Turn {
    fn send(&mut self, to: Flow, bytes: &[u8]) {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        self.sent.push((to, at, bytes.len()));
    }
}

#[test]
fn nat_keepalives_allocate_nothing_once_warm() {
    // 2,000 NATed phones (private Contacts, other source addresses), pinged every second;
    // every phone answers. Three rounds warm the buffers, three more are counted.
    const PHONES: u32 = 2000;
    let listen = addr("127.0.0.1:5060");
    let registrar = Arc::new(Registrar::new(RegistrarConfig::default()).unwrap());
    let t0 = 1_700_000_000_000u64;
    let mut lines = Vec::new();
    for i in 0..PHONES {
        let user = format!("u{i}");
        let contact = format!("sip:{user}@192.168.{}.{}:5060", i / 250, i % 250 + 1);
        let source = SocketAddr::from((
            [127, 0, 1 + (i / 60_000) as u8, 1],
            1024 + (i % 60_000) as u16,
        ));
        lines.clear();
        registrar
            .register(
                &RegisterRequest {
                    aor: &format!("{user}@test"),
                    call_id: &format!("c{i}"),
                    cseq: 1,
                    expires_header: Some(3600),
                    star: false,
                    contacts: &[ContactInput {
                        uri: &contact,
                        expires: None,
                        q: None,
                    }],
                    source,
                    transport: Transport::Udp,
                    socket: listen,
                    conn: 0,
                    path: &[],
                    user_agent: None,
                },
                t0,
                &mut lines,
            )
            .unwrap();
    }
    let fakes = Fakes::new(&[]);
    let mut ports = fakes.ports();
    ports.location = Arc::new(SipEdge::new(registrar, "test", &[(listen, Transport::Udp)]));
    let mut cfg = test_config(&[AST]);
    cfg.nat.keepalive_interval_secs = 1;
    let mut core = Core::new(Arc::new(cfg), ports, 0, addr("127.0.0.1:6000"));
    let mut turn = Turn {
        bytes: Vec::with_capacity(4 << 20),
        sent: Vec::with_capacity(4 * PHONES as usize),
    };
    let mut answer = Vec::with_capacity(2048);
    let mut quiet = Counter::default();
    let mut now = t0;
    for round in 0..6 {
        if round == 3 {
            counting::start();
        }
        // One round: the 100 ms ticks of a second.
        for _ in 0..10 {
            now += 100;
            turn.bytes.clear();
            turn.sent.clear();
            core.handle_timeout(Now::same(now), &mut turn);
            for &(to, at, len) in &turn.sent {
                let req = &turn.bytes[at..at + len];
                assert!(
                    req.starts_with(b"OPTIONS sip:u"),
                    "{}",
                    String::from_utf8_lossy(req)
                );
                response_into(req, b"SIP/2.0 200 OK\r\n", b"ka", b"", &mut answer);
                core.handle_datagram(
                    Now::same(now),
                    Flow::new(Local::Listen(0), to.remote),
                    &answer,
                    &mut quiet,
                );
            }
        }
    }
    let allocations = counting::stop();
    let stats = core.stats();
    assert_eq!(quiet.datagrams, 0, "nothing answers an answer");
    assert!(
        stats.keepalives_sent >= u64::from(PHONES) * 5,
        "{}",
        stats.keepalives_sent
    );
    assert_eq!(stats.keepalives_answered, stats.keepalives_sent);
    assert_eq!(stats.keepalive_removed, 0);
    assert_eq!(core.keepalives_owing(), 0);
    assert_eq!(
        allocations, 0,
        "heap allocations in 3 warm keepalive rounds"
    );
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
