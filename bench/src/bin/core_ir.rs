//! A fixed workload for instruction counting: N whole calls through the proxy core in
//! memory (the `core/call_flow` bench's flow), then exit. Under
//! `valgrind --tool=callgrind` the instruction count per call is repeatable on a noisy
//! machine, so hot-path changes can be measured exactly:
//!
//! ```text
//! cargo build --release -p sipfront-bench --bin core_ir
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out target/release/core_ir 20000
//! # Ir per call = (total Ir of the run with N) - (total with 0), divided by N
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use sipfront::core::testing::{call_flow, test_config, CallDriver, Counter, Fakes};
use sipfront::core::{Core, Now};

const PHONE: &str = "127.0.0.3:5062";
const AST: &str = "127.0.0.2:5080";

fn addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let fakes = Fakes::new(&["alice"]);
    let cfg = test_config(&[AST]);
    let flows: Vec<_> = (0..4096).map(|i| call_flow(&cfg, i, PHONE, AST)).collect();
    let mut core = Core::new(Arc::new(cfg), fakes.ports(), 0, addr("127.0.0.1:6000"));
    let mut sink = Counter {
        last: Vec::with_capacity(65_536),
        ..Counter::default()
    };
    let mut driver = CallDriver::new(addr(PHONE), addr(AST));
    let mut now = 1_700_000_000_000u64;
    for i in 0..n {
        driver.call(&mut core, &flows[i % flows.len()], now, &mut sink);
        if i % 1024 == 1023 {
            now += 40_000;
            core.handle_timeout(Now::same(now), &mut sink);
        }
    }
    println!("{} calls, {} datagrams sent", n, sink.datagrams);
}
