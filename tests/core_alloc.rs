//! The proxy core forwards requests and responses without heap allocation once a worker is
//! warm: a full call flow (authenticated INVITE from a phone → 100 + INVITE to Asterisk,
//! 180, 200, ACK through the Route set, BYE from Asterisk to the phone and its 200) is run
//! under a counting global allocator, on a virtual clock.

use std::net::SocketAddr;
use std::sync::Arc;

use sipfront::core::testing::{call_flow, test_config, CallDriver, Counter, Fakes};
use sipfront::core::{Core, Now};

mod counting;

const PHONE: &str = "127.0.0.3:5062";
const AST: &str = "127.0.0.2:5080";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn forwarding_a_call_allocates_nothing_once_warm() {
    let fakes = Fakes::new(&["alice"]);
    let cfg = test_config(&[AST]);
    let flows: Vec<_> = (0..200).map(|i| call_flow(&cfg, i, PHONE, AST)).collect();
    let mut core = Core::new(Arc::new(cfg), fakes.ports(), 0, addr("127.0.0.1:6000"));
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
    assert_eq!(
        allocations, 0,
        "heap allocations while forwarding 100 warm calls"
    );
}
