//! The default transaction table (`[limits] max_transactions_per_worker`) holds what one
//! worker's calls leave behind at the call rate it is sized for: 12,000 calls/s through one
//! core for 6 s of virtual time (each call's transactions linger 5 s after it, so the table
//! reaches its steady state of about 2 × 5 s × 12,000 = 120,000 server transactions) without
//! a single 503. With the former default of 65,536 the table is full after 2.7 s and the
//! same run refuses 54,464 requests with 503.
//!
//! Run with `--nocapture` to see the peak occupancy and the memory the slots took (RSS).

use std::net::SocketAddr;
use std::sync::Arc;

use sipfront::config::LimitsConfig;
use sipfront::core::testing::{call_flow, test_config, CallDriver, Counter, Fakes};
use sipfront::core::{Core, Now};

const PHONE: &str = "127.0.0.3:5062";
const AST: &str = "127.0.0.2:5080";

/// Calls per second through the worker, and for how long (virtual time).
const RATE: u64 = 12_000;
const SECS: u64 = 6;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// This process's resident set in kB (Linux), for the report only.
fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn the_default_table_sustains_twelve_thousand_calls_per_second_per_worker() {
    let fakes = Fakes::new(&["alice"]);
    let mut cfg = test_config(&[AST]);
    cfg.max_transactions = LimitsConfig::default().max_transactions_per_worker;
    let mut core = Core::new(Arc::new(cfg), fakes.ports(), 0, addr("127.0.0.1:6000"));
    let cfg = core.config().clone();
    let mut driver = CallDriver::new(addr(PHONE), addr(AST));
    let mut sink = Counter {
        last: Vec::with_capacity(65_536),
        ..Counter::default()
    };
    let t0 = 1_700_000_000_000u64;
    let rss_before = rss_kb();
    let mut peak = (0, 0);
    for i in 0..RATE * SECS {
        let now = t0 + i * 1000 / RATE;
        core.handle_timeout(Now::same(now), &mut sink);
        let flow = call_flow(&cfg, usize::try_from(i).unwrap(), PHONE, AST);
        driver.call(&mut core, &flow, now, &mut sink);
        let (servers, clients) = core.transactions_in_flight();
        peak = (peak.0.max(servers), peak.1.max(clients));
    }
    let stats = core.stats();
    assert_eq!(
        stats.dropped_overload, 0,
        "no request refused for a full table"
    );
    assert_eq!(stats.tx_responses[5], 0, "no 5xx");
    assert_eq!(
        stats.forwarded_requests,
        3 * RATE * SECS,
        "INVITE, ACK, BYE each"
    );
    // The table really held the steady state: two server transactions per call for 5 s.
    let steady = usize::try_from(2 * 5 * RATE).unwrap();
    assert!(peak.0 >= steady * 95 / 100, "peak {peak:?}");
    let grown = rss_kb().zip(rss_before).map(|(a, b)| a.saturating_sub(b));
    eprintln!(
        "{RATE} calls/s for {SECS} s: peak {} server + {} client transactions (limit {}); \
         RSS grew {grown:?} kB = {:?} bytes per server transaction (with its share of clients)",
        peak.0,
        peak.1,
        LimitsConfig::default().max_transactions_per_worker,
        grown.map(|g| g * 1024 / peak.0 as u64),
    );
}
