//! Location table benchmarks (criterion): lookup hit/miss, REGISTER refresh, and mixed
//! 90 % lookup / 10 % refresh with 1 and 2 threads (ops/s via `Throughput::Elements`).
//!
//! `cargo bench -p sipfront-bench --bench location`. The table holds 100,000 AORs with one
//! binding each; memory per contact at 1,000,000 is measured by the `location_rss` binary.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sipfront::registrar::{ContactInput, RegisterRequest, Registrar, RegistrarConfig};
use sipfront::sip::Transport;

const T0: u64 = 1_764_159_377_000;
const AORS: u32 = 100_000;

struct Phone {
    aor: String,
    contact: String,
}

fn phone(i: u32) -> Phone {
    Phone {
        aor: format!("u{i:07}@example.com"),
        contact: format!("sip:u{i:07}@192.168.{}.{}:5060", (i >> 8) & 0xff, i & 0xff),
    }
}

fn register(r: &Registrar, p: &Phone, call_id: &str, cseq: u32, out: &mut Vec<u8>) -> bool {
    let contacts = [ContactInput {
        uri: &p.contact,
        expires: Some(3600),
        q: None,
    }];
    let req = RegisterRequest {
        aor: &p.aor,
        call_id,
        cseq,
        expires_header: None,
        star: false,
        contacts: &contacts,
        source: std::net::SocketAddr::from(([203, 0, 113, 9], 40_000)),
        transport: Transport::Udp,
        socket: "127.0.0.1:5060".parse().unwrap(),
        conn: 0,
        path: &[],
        user_agent: Some("Yealink SIP-T46S 66.86.0.15"),
    };
    out.clear();
    r.register(&req, T0 + u64::from(cseq), out).is_ok()
}

fn table() -> (Arc<Registrar>, Vec<Phone>) {
    let cfg = RegistrarConfig {
        persist: "none".into(),
        use_domain: true,
        ..RegistrarConfig::default()
    };
    let r = Arc::new(Registrar::new(cfg).expect("config"));
    let phones: Vec<Phone> = (0..AORS).map(phone).collect();
    let mut out = Vec::with_capacity(256);
    for p in &phones {
        assert!(register(&r, p, "initial-call-id@bench", 1, &mut out));
    }
    (r, phones)
}

fn benches(c: &mut Criterion) {
    let (r, phones) = table();
    let mut g = c.benchmark_group("location");
    g.throughput(Throughput::Elements(1));
    let mut k = 0usize;
    // Hot: 1,000 AORs whose records stay in cache (the CPU cost of a lookup).
    g.bench_function("lookup_hit_hot", |b| {
        b.iter(|| {
            k = (k + 7919) % 1000;
            r.lookup(&phones[k].aor, T0 + 10, |b| {
                black_box(b.dest);
            })
        })
    });
    // Cold: random AORs over the whole table (DRAM misses dominate).
    g.bench_function("lookup_hit_random", |b| {
        b.iter(|| {
            k = (k + 7919) % phones.len();
            r.lookup(&phones[k].aor, T0 + 10, |b| {
                black_box(b.dest);
            })
        })
    });
    g.bench_function("lookup_miss", |b| {
        b.iter(|| r.lookup(black_box("nobody@example.com"), T0, |_| {}))
    });
    let mut cseq = 1u32;
    let mut out = Vec::with_capacity(256);
    g.bench_function("register_refresh", |b| {
        b.iter(|| {
            cseq += 1;
            k = (k + 7919) % phones.len();
            register(&r, &phones[k], "refresh-call-id@bench", cseq, &mut out)
        })
    });
    g.finish();

    // Mixed workload, 1 and 2 threads; each iteration is one operation per thread.
    let phones = Arc::new(phones);
    let mut g = c.benchmark_group("location_mixed_90_10");
    for threads in [1usize, 2] {
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for t in 0..threads {
                            let (r, phones) = (&r, &phones);
                            s.spawn(move || {
                                let call_id = format!("mixed-{t}@bench");
                                let mut out = Vec::with_capacity(256);
                                let mut k = t * 104_729;
                                let base = 1_000_000 * (t as u32 + 1);
                                for i in 0..iters {
                                    k = (k + 7919) % phones.len();
                                    if i % 10 == 9 {
                                        register(
                                            r,
                                            &phones[k],
                                            &call_id,
                                            base + i as u32,
                                            &mut out,
                                        );
                                    } else {
                                        r.lookup(&phones[k].aor, T0 + 10, |b| {
                                            black_box(b.dest);
                                        });
                                    }
                                }
                            });
                        }
                    });
                    start.elapsed()
                })
            },
        );
    }
    g.finish();
}

criterion_group! {
    name = location;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(location);
