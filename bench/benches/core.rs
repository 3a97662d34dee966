//! Core decisions per second: the sans-IO proxy core driven in memory (no sockets), with the
//! in-memory ports of `core::testing` (the digest check itself is measured by the
//! `credentials` bench).
//!
//! - `core/call_flow`: one whole call through the proxy — the phone's authenticated INVITE
//!   (100 Trying + INVITE to Asterisk), 180, 200, the ACK through the Route, Asterisk's BYE to
//!   the phone and its 200: 6 datagrams in, 7 out. Reported per call; divide by 6 for the
//!   cost per message.
//! - `core/options_keepalive`: an OPTIONS to the proxy answered with 200 (parse, checks,
//!   response).
//!
//! Run: `cargo bench -p sipfront-bench --bench core`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sipfront::core::testing::{call_flow, test_config, CallDriver, CallFlow, Counter, Fakes};
use sipfront::core::{Core, Flow, Local, Now};

const PHONE: &str = "127.0.0.3:5062";
const AST: &str = "127.0.0.2:5080";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

struct Rig {
    core: Core,
    _fakes: Fakes,
    sink: Counter,
    driver: CallDriver,
    now: u64,
}

impl Rig {
    fn new() -> Rig {
        let fakes = Fakes::new(&["alice"]);
        let core = Core::new(
            Arc::new(test_config(&[AST])),
            fakes.ports(),
            0,
            addr("127.0.0.1:6000"),
        );
        Rig {
            core,
            _fakes: fakes,
            sink: Counter {
                last: Vec::with_capacity(65_536),
                ..Counter::default()
            },
            driver: CallDriver::new(addr(PHONE), addr(AST)),
            now: 1_700_000_000_000,
        }
    }

    /// One call; transactions of earlier calls are let expire every 1024 calls.
    fn call(&mut self, flow: &CallFlow, n: u64) {
        self.driver
            .call(&mut self.core, flow, self.now, &mut self.sink);
        if n % 1024 == 1023 {
            self.now += 40_000;
            self.core
                .handle_timeout(Now::same(self.now), &mut self.sink);
        }
    }
}

fn bench_core(c: &mut Criterion) {
    let cfg = test_config(&[AST]);
    let flows: Vec<_> = (0..4096).map(|i| call_flow(&cfg, i, PHONE, AST)).collect();
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(1));
    g.bench_function("call_flow", |b| {
        b.iter_custom(|iters| {
            let mut rig = Rig::new();
            let mut n = 0u64;
            // Warm the slabs first.
            for f in &flows[..1024] {
                rig.call(f, n);
                n += 1;
            }
            let start = Instant::now();
            for i in 0..iters {
                rig.call(&flows[(i % flows.len() as u64) as usize], n);
                n += 1;
            }
            start.elapsed()
        })
    });
    let options = format!(
        "OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKopt;rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=k1\r\nTo: <sip:127.0.0.1:5060>\r\nCall-ID: keepalive-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    g.throughput(Throughput::Bytes(options.len() as u64));
    g.bench_function("options_keepalive", |b| {
        let mut rig = Rig::new();
        b.iter(|| {
            rig.core.handle_datagram(
                Now::same(rig.now),
                Flow::new(Local::Listen(0), addr(PHONE)),
                options.as_bytes(),
                &mut rig.sink,
            )
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = bench_core
}
criterion_main!(benches);
