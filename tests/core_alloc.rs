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
