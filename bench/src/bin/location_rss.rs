//! Location table at scale: memory per contact, lookup latency, and mixed lookup/update
//! throughput with 1 and 2 threads.
//!
//! `cargo run --release -p sipfront-bench --bin location_rss -- [contacts] [secs] [sqlite]`
//! (defaults 1000000 and 2). With a third argument it instead measures persistence: the
//! REGISTERs go through the write-behind thread into that SQLite file, then a reload. Prints one line per measurement. Inserts `contacts` AORs with one binding each through
//! `Registrar::register`, reads VmRSS from /proc/self/status before and after, then times
//! lookups of random AORs and runs the mixed workload (90 % lookup, 10 % refresh REGISTER)
//! for `secs` seconds per thread count, reporting ops/s of wall time and ops per CPU-second
//! of the worker threads (the latter shows contention even on a shared, noisy machine).
//! Uses mimalloc, like the `sipfront` binary.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sipfront::registrar::{ContactInput, Persister, RegisterRequest, Registrar, RegistrarConfig};
use sipfront::sip::Transport;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const T0: u64 = 1_764_159_377_000;

/// CPU time consumed by the calling thread, in seconds.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

struct Phone {
    aor: String,
    contact: String,
    call_id: String,
}

impl Phone {
    /// Realistic sizes: AOR 20 B, Contact ~34 B, Call-ID 32 B, User-Agent 27 B.
    fn new(i: u32) -> Phone {
        Phone {
            aor: format!("u{i:07}@example.com"),
            contact: format!("sip:u{i:07}@192.168.{}.{}:5060", (i >> 8) & 0xff, i & 0xff),
            call_id: format!(
                "{:016x}{:016x}",
                u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                u64::from(i) ^ 0x5bd1_e995
            ),
        }
    }

    fn register(
        &self,
        r: &Registrar,
        i: u32,
        cseq: u32,
        call_id: &str,
        now: u64,
        out: &mut Vec<u8>,
    ) -> bool {
        let contacts = [ContactInput {
            uri: &self.contact,
            expires: Some(3600),
            q: None,
        }];
        let req = RegisterRequest {
            aor: &self.aor,
            call_id,
            cseq,
            expires_header: None,
            star: false,
            contacts: &contacts,
            source: std::net::SocketAddr::from((
                [203, 0, (i >> 16) as u8, (i >> 8) as u8],
                20_000 + (i & 0x3fff) as u16,
            )),
            transport: Transport::Udp,
            socket: "127.0.0.1:5060".parse().unwrap(),
            conn: 0,
            path: &[],
            user_agent: Some("Yealink SIP-T46S 66.86.0.15"),
        };
        out.clear();
        r.register(&req, now, out).is_ok()
    }
}

/// Look every sample up `rounds` times; returns bindings seen. Not inlined so that
/// `valgrind --tool=callgrind --toggle-collect='*lookup_rounds*'` can count its instructions.
#[inline(never)]
fn lookup_rounds(r: &Registrar, sample: &[(u32, Phone)], rounds: usize) -> usize {
    let mut found = 0usize;
    for _ in 0..rounds {
        for (_, p) in sample {
            r.lookup(&p.aor, T0 + 1000, |b| {
                found += 1;
                black_box(b.dest);
            });
        }
    }
    found
}

/// Write `n` bindings through the write-behind thread into a fresh SQLite file, then time
/// a restart's reload.
fn persist_round_trip(n: u32, path: &str) {
    let _ = std::fs::remove_file(path);
    let cfg = RegistrarConfig {
        persist: format!("sqlite://{path}"),
        use_domain: true,
        max_aors: 4_000_000,
        ..RegistrarConfig::default()
    };
    let r = Arc::new(Registrar::new(cfg.clone()).expect("config"));
    let p = Persister::start(&r, T0).expect("persistence");
    let mut out = Vec::with_capacity(256);
    let t = Instant::now();
    for i in 0..n {
        let ph = Phone::new(i);
        ph.register(&r, i, 1, &ph.call_id, T0, &mut out);
    }
    let reg = t.elapsed();
    let t = Instant::now();
    p.flush(Duration::from_secs(600)).expect("flush");
    let flush = t.elapsed();
    let st = p.stats();
    println!(
        "persist: {n} REGISTERs in {:.2} s with write-behind attached; final flush {:.2} s; rows written {}, flushes {}, full rewrites {}, queue-full events {}",
        reg.as_secs_f64(),
        flush.as_secs_f64(),
        st.rows_written.load(Ordering::Relaxed),
        st.flushes.load(Ordering::Relaxed),
        st.full_rewrites.load(Ordering::Relaxed),
        st.dropped.load(Ordering::Relaxed),
    );
    p.stop().expect("stop");
    drop(r);
    let r2 = Arc::new(Registrar::new(cfg).expect("config"));
    let t = Instant::now();
    let p2 = Persister::start(&r2, T0 + 1000).expect("reload");
    println!(
        "reload: {} bindings in {:.2} s",
        p2.stats().loaded.load(Ordering::Relaxed),
        t.elapsed().as_secs_f64()
    );
    p2.stop().expect("stop");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    if let Some(path) = args.next() {
        persist_round_trip(n, &path);
        return;
    }
    let cfg = RegistrarConfig {
        persist: "none".into(),
        use_domain: true, // full user@domain keys: the larger, conservative case
        max_aors: 4_000_000,
        ..RegistrarConfig::default()
    };
    let r = Arc::new(Registrar::new(cfg).expect("config"));
    let mut out = Vec::with_capacity(256);

    let rss0 = vm_rss_kib();
    let t = Instant::now();
    for i in 0..n {
        let p = Phone::new(i);
        assert!(p.register(&r, i, 1, &p.call_id, T0, &mut out));
    }
    let insert = t.elapsed();
    let rss1 = vm_rss_kib();
    let (aors, contacts) = r.counts();
    assert_eq!(contacts, n as usize);
    let per = (rss1.saturating_sub(rss0) * 1024) as f64 / f64::from(n);
    println!("contacts={contacts} aors={aors} rss_before={rss0}KiB rss_after={rss1}KiB bytes_per_contact={per:.1}");
    println!(
        "insert: {:.0} ns/REGISTER (single thread, new AOR)",
        insert.as_nanos() as f64 / f64::from(n)
    );

    // Lookup latency: random AORs (cache-missing, like real traffic).
    let sample: Vec<(u32, Phone)> = (0..100_000u32)
        .map(|k| {
            let i = k.wrapping_mul(2_654_435_761) % n;
            (i, Phone::new(i))
        })
        .collect();
    let rounds = 10;
    let t = Instant::now();
    let found = lookup_rounds(&r, &sample, rounds);
    let lookups = rounds * sample.len();
    assert_eq!(found, lookups);
    println!(
        "lookup: {:.0} ns/op over {lookups} random lookups (1 thread)",
        t.elapsed().as_nanos() as f64 / lookups as f64
    );

    // Hot lookups: 1000 AORs whose records stay in cache (CPU cost without DRAM misses).
    let t = Instant::now();
    let hot = lookup_rounds(&r, &sample[..1000.min(sample.len())], 1000);
    println!(
        "lookup (hot set of 1000 AORs): {:.0} ns/op",
        t.elapsed().as_nanos() as f64 / hot as f64
    );

    // Mixed 90/10 lookup/refresh, 1 then 2 threads.
    let sample = Arc::new(sample);
    for threads in [1usize, 2] {
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (r, sample, stop) = (Arc::clone(&r), Arc::clone(&sample), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let call_id = format!("bench-thread-{t}-{threads}");
                    let mut out = Vec::with_capacity(256);
                    let mut ops = 0u64;
                    let mut cseq = 1u32;
                    let mut k = t * 7919;
                    let deadline = Instant::now() + Duration::from_secs(secs);
                    let cpu0 = thread_cpu_secs();
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..1000 {
                            k = (k + 104_729) % sample.len();
                            let (i, p) = &sample[k];
                            if ops % 10 == 9 {
                                cseq += 1;
                                p.register(&r, *i, cseq, &call_id, T0 + 2000, &mut out);
                            } else {
                                r.lookup(&p.aor, T0 + 2000, |b| {
                                    black_box(b.dest);
                                });
                            }
                            ops += 1;
                        }
                        if Instant::now() >= deadline {
                            break;
                        }
                    }
                    stop.store(true, Ordering::Relaxed);
                    (ops, thread_cpu_secs() - cpu0)
                })
            })
            .collect();
        let t = Instant::now();
        let (total, cpu) = handles
            .into_iter()
            .map(|h| h.join().unwrap_or((0, 0.0)))
            .fold((0u64, 0.0f64), |(o, c), (o2, c2)| (o + o2, c + c2));
        let el = t.elapsed().as_secs_f64();
        println!(
            "mixed 90/10 threads={threads}: {:.2} Mops/s wall, {:.2} Mops per CPU-second ({total} ops in {el:.2} s, {cpu:.2} CPU-s)",
            total as f64 / el / 1e6,
            total as f64 / cpu.max(1e-9) / 1e6
        );
    }
}
