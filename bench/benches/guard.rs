//! The guard's per-datagram costs (single thread, virtual clock):
//!
//! - `guard/admit/known_ip`: one source well under its rate (bucket found, refilled, spent);
//! - `guard/admit/limited`: one source over its rate (the drop path);
//! - `guard/admit/flood_distinct`: every call a source never seen before, the table full, so
//!   every call evicts the least recently seen bucket (a spoofed-source flood);
//! - `guard/admit/exempt`: an Asterisk node (exempt list check only);
//! - `guard/is_banned/{no_bans,not_banned,banned}`: nothing banned (one atomic load); 10,000
//!   bans but not this source; this source banned;
//! - `guard/is_scanner/{phone,scanner,long_300b}`: a phone's User-Agent (no match, the usual
//!   case), `friendly-scanner`, and a 300-byte value (two windows).
//!
//! Before criterion runs, a counting allocator checks that none of these calls allocates once
//! warm, and reports the heap a default `[guard]` reserves up front.
//!
//! Run: `cargo bench -p sipfront-bench --bench guard`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sipfront::guard::{Admit, Guard, GuardConfig};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const T0: u64 = 1_764_000_000_000;
const ASTERISK: &str = "10.0.0.5";
const PHONE_UA: &[u8] = b"Yealink SIP-T46S 66.86.0.15";
const SCANNER_UA: &[u8] = b"friendly-scanner";

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

fn fast_guard() -> Guard {
    let cfg = GuardConfig {
        rate_pps: 1_000_000,
        rate_burst: 10_000_000,
        ..GuardConfig::default()
    };
    Guard::new(&cfg, &[ASTERISK.parse().expect("address")]).expect("config")
}

fn slow_guard() -> Guard {
    let cfg = GuardConfig {
        rate_pps: 1,
        rate_burst: 1,
        ..GuardConfig::default()
    };
    Guard::new(&cfg, &[]).expect("config")
}

fn with_bans(n: u32) -> Guard {
    let g = fast_guard();
    for i in 0..n {
        g.ban(v4(0xc000_0000 + i), T0);
    }
    g
}

/// Allocations made by `f` run `n` times (after one warm-up round).
fn allocations(n: u64, mut f: impl FnMut(u64)) -> u64 {
    for i in 0..n {
        f(i);
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for i in n..2 * n {
        f(i);
    }
    ALLOCS.load(Ordering::Relaxed) - before
}

fn check_allocations() {
    let b0 = BYTES.load(Ordering::Relaxed);
    let g = Guard::new(&GuardConfig::default(), &[]).expect("config");
    let reserved = BYTES.load(Ordering::Relaxed) - b0;
    println!(
        "heap reserved by a default [guard] (65,536 buckets, 16,384 × 2 counters, 16,384 bans): {:.1} MiB",
        reserved as f64 / (1 << 20) as f64
    );
    drop(g);
    let g = fast_guard();
    let slow = slow_guard();
    let banned = with_bans(10_000);
    let phone = v4(0xcb00_7101);
    let checks: [(&str, u64); 6] = [
        (
            "admit known ip",
            allocations(100_000, |i| {
                let _ = black_box(g.admit(phone, T0 + i));
            }),
        ),
        (
            "admit limited",
            allocations(100_000, |i| {
                let _ = black_box(slow.admit(phone, T0 + i / 1000));
            }),
        ),
        (
            "admit flood (evicting)",
            allocations(200_000, |i| {
                let _ = black_box(g.admit(v4(0x0100_0000 + i as u32), T0));
            }),
        ),
        (
            "is_banned",
            allocations(100_000, |i| {
                black_box(banned.is_banned(v4(0xc000_0000 + (i % 20_000) as u32), T0));
            }),
        ),
        (
            "is_scanner",
            allocations(100_000, |_| {
                black_box(g.is_scanner(black_box(PHONE_UA)));
            }),
        ),
        (
            "on_auth_failure (no ban)",
            allocations(100_000, |i| {
                // One failure per 200 s of virtual time: windows restart, no ban.
                let src = v4(0x0200_0000 + (i % 100) as u32);
                black_box(g.on_auth_failure(src, "u", T0 + i * 200_000));
            }),
        ),
    ];
    for (what, n) in checks {
        println!("allocations in steady state, {what}: {n}");
        assert_eq!(n, 0, "{what} allocated");
    }
}

fn bench(c: &mut Criterion) {
    check_allocations();
    let mut group = c.benchmark_group("guard");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    let g = fast_guard();
    let phone = v4(0xcb00_7101);
    let mut now = T0;
    group.bench_function("admit/known_ip", |b| {
        b.iter(|| {
            now += 1;
            black_box(g.admit(black_box(phone), now))
        })
    });
    let slow = slow_guard();
    assert_eq!(slow.admit(phone, T0), Admit::Ok);
    group.bench_function("admit/limited", |b| {
        b.iter(|| black_box(slow.admit(black_box(phone), T0)))
    });
    let flood = fast_guard();
    let mut n: u32 = 0x0100_0000;
    group.bench_function("admit/flood_distinct", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            black_box(flood.admit(v4(n), T0))
        })
    });
    let asterisk: IpAddr = ASTERISK.parse().expect("address");
    group.bench_function("admit/exempt", |b| {
        b.iter(|| black_box(g.admit(black_box(asterisk), T0)))
    });

    group.bench_function("is_banned/no_bans", |b| {
        b.iter(|| black_box(g.is_banned(black_box(phone), T0)))
    });
    let banned = with_bans(10_000);
    group.bench_function("is_banned/not_banned", |b| {
        b.iter(|| black_box(banned.is_banned(black_box(phone), T0)))
    });
    let hit = v4(0xc000_0000 + 1234);
    group.bench_function("is_banned/banned", |b| {
        b.iter(|| black_box(banned.is_banned(black_box(hit), T0)))
    });

    group.bench_function("is_scanner/phone", |b| {
        b.iter(|| black_box(g.is_scanner(black_box(PHONE_UA))))
    });
    group.bench_function("is_scanner/scanner", |b| {
        b.iter(|| black_box(g.is_scanner(black_box(SCANNER_UA))))
    });
    let long: Vec<u8> = PHONE_UA.iter().copied().cycle().take(300).collect();
    group.bench_function("is_scanner/long_300b", |b| {
        b.iter(|| black_box(g.is_scanner(black_box(&long))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
