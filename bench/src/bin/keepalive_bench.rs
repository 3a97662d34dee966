//! The CPU cost of NAT keepalives: N NATed bindings in the real location table (private
//! Contacts, other source addresses), one worker's core walking them with its keepalive
//! cursor on a virtual clock (`[nat] keepalive_interval_secs`, 100 ms ticks), every OPTIONS
//! answered 200 by its phone (the answer parsed and matched by the core like a real one).
//! Measured: the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) over whole rounds, divided
//! by the simulated seconds — the CPU one keepalive interval of N bindings costs per second
//! of wall time. With `--send`, each keepalive also goes through one real `sendto` on a
//! loopback UDP socket (the kernel's share of the sending side; what the transport batches
//! with `sendmmsg`/io_uring is cheaper).
//!
//! ```text
//! cargo run --release -p sipfront-bench --bin keepalive_bench -- --bindings 100000 --runs 5
//! cargo run --release -p sipfront-bench --bin keepalive_bench -- --bindings 100000 --runs 5 --send
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use clap::Parser;
use sipfront::core::testing::{response_into, test_config, Counter, Fakes};
use sipfront::core::{Core, Flow, Local, Now, Transmit};
use sipfront::registrar::{ContactInput, RegisterRequest, Registrar, RegistrarConfig, SipEdge};
use sipfront::sip::Transport;

#[derive(Parser)]
struct Args {
    /// NATed bindings in the table.
    #[arg(long, default_value_t = 100_000)]
    bindings: u32,
    /// Keepalive interval (seconds).
    #[arg(long, default_value_t = 30)]
    interval: u32,
    /// Rounds measured per run (after one warm-up round).
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Runs (the median is printed last).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Also send every keepalive with one `sendto` on a loopback socket.
    #[arg(long)]
    send: bool,
}

/// Keeps a tick's datagrams in reused buffers (and sends each when asked).
struct Turn {
    bytes: Vec<u8>,
    sent: Vec<(Flow, usize, usize)>,
    sock: Option<(UdpSocket, SocketAddr)>,
}

impl Transmit for Turn {
    fn send(&mut self, to: Flow, bytes: &[u8]) {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        self.sent.push((to, at, bytes.len()));
        if let Some((s, sink)) = &self.sock {
            let _ = s.send_to(bytes, sink);
        }
    }
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

fn fill(n: u32, listen: SocketAddr, now_ms: u64) -> Arc<Registrar> {
    let registrar = Arc::new(
        Registrar::new(RegistrarConfig {
            persist: "none".into(),
            max_aors: (n as usize).max(1000) * 2,
            ..RegistrarConfig::default()
        })
        .expect("registrar"),
    );
    let mut lines = Vec::new();
    for i in 0..n {
        let user = format!("u{i}");
        let contact = format!(
            "sip:{user}@192.168.{}.{}:5060",
            (i / 250) % 250,
            i % 250 + 1
        );
        let source = SocketAddr::from((
            [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
            1024 + (i % 50_000) as u16,
        ));
        lines.clear();
        registrar
            .register(
                &RegisterRequest {
                    aor: &format!("{user}@bench"),
                    call_id: &format!("c{i}@phone"),
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
                    user_agent: Some("Bench/1.0"),
                },
                now_ms,
                &mut lines,
            )
            .expect("register");
    }
    registrar
}

/// One run: CPU ns per simulated second, keepalives sent.
fn run(args: &Args, registrar: &Arc<Registrar>, listen: SocketAddr, t0: u64) -> (f64, u64) {
    let fakes = Fakes::new(&[]);
    let mut ports = fakes.ports();
    ports.location = Arc::new(SipEdge::new(
        registrar.clone(),
        "bench",
        &[(listen, Transport::Udp)],
    ));
    let mut cfg = test_config(&["127.0.0.2:5080"]);
    cfg.nat.keepalive_interval_secs = args.interval;
    let mut core = Core::new(
        Arc::new(cfg),
        ports,
        0,
        "127.0.0.1:6000".parse().expect("addr"),
    );
    let sock = args.send.then(|| {
        let sink = UdpSocket::bind("127.0.0.1:0").expect("sink");
        let s = UdpSocket::bind("127.0.0.1:0").expect("sender");
        let to = sink.local_addr().expect("sink address");
        // The sink is never read: the kernel drops what overflows its queue, as it would
        // for a phone that is gone; the sender's cost is what is measured.
        std::mem::forget(sink);
        (s, to)
    });
    let mut turn = Turn {
        bytes: Vec::with_capacity(8 << 20),
        sent: Vec::with_capacity(64 * 1024),
        sock,
    };
    let mut answer = Vec::with_capacity(2048);
    let mut quiet = Counter::default();
    let ticks_per_round = u64::from(args.interval) * 10;
    let mut now = t0;
    let mut cpu_start = 0;
    let mut sent_start = 0;
    for round in 0..=args.rounds {
        if round == 1 {
            cpu_start = thread_cpu_ns();
            sent_start = core.stats().keepalives_sent;
        }
        for _ in 0..ticks_per_round {
            now += 100;
            turn.bytes.clear();
            turn.sent.clear();
            core.handle_timeout(Now::same(now), &mut turn);
            for &(to, at, len) in &turn.sent {
                let Some(req) = turn.bytes.get(at..at + len) else {
                    continue;
                };
                response_into(req, b"SIP/2.0 200 OK\r\n", b"ka", b"", &mut answer);
                let from = Flow::new(Local::Listen(0), to.remote);
                core.handle_datagram(Now::same(now), from, &answer, &mut quiet);
            }
        }
    }
    let cpu = thread_cpu_ns() - cpu_start;
    let sent = core.stats().keepalives_sent - sent_start;
    let simulated_s = f64::from(args.rounds * args.interval);
    assert_eq!(core.stats().keepalive_removed, 0, "every phone answers");
    (cpu as f64 / simulated_s, sent)
}

fn main() {
    let args = Args::parse();
    let listen: SocketAddr = "127.0.0.1:5060".parse().expect("addr");
    let t0 = 1_700_000_000_000u64;
    let registrar = fill(args.bindings, listen, t0);
    let mut per_s = Vec::new();
    for i in 0..args.runs {
        let (ns, sent) = run(&args, &registrar, listen, t0 + i as u64 * 1000);
        let per_ping = ns * f64::from(args.rounds * args.interval) / sent.max(1) as f64;
        println!(
            "run {i}: {sent} keepalives over {} simulated s: {:.3} ms CPU per second ({:.2} % of a core), {:.0} ns per keepalive",
            args.rounds * args.interval,
            ns / 1e6,
            ns / 1e7,
            per_ping
        );
        per_s.push(ns);
    }
    per_s.sort_by(f64::total_cmp);
    let median = per_s[per_s.len() / 2];
    println!(
        "median: {:.3} ms CPU per second for {} NATed bindings every {} s (send: {})",
        median / 1e6,
        args.bindings,
        args.interval,
        args.send
    );
}
