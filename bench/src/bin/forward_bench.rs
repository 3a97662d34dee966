//! Proxy CPU per forwarded message over the real socket path, next to the UDP echo floor
//! (`udp_echo_bench`): sipfront's worker shell runs the real proxy core with the real
//! location table, and closed-loop clients in this process play Asterisk and a phone.
//!
//! Each transaction: "Asterisk" (127.0.0.2, trusted) sends `MESSAGE sip:bob@proxy`; the core
//! looks bob up in the registrar's table and forwards it statefully to the phone
//! (127.0.0.4); the phone answers 200; the core forwards the 200 to Asterisk. That is two
//! forwarded messages (one request, one response), each received and sent once, so the
//! echo floor for the same work is two echoes. Asterisk's requests arrive on one worker's
//! socket (one 4-tuple per client) and are handed to the worker owning their Call-ID.
//!
//! ```text
//! cargo run --release -p sipfront-bench --bin forward_bench -- --secs 5
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use sipfront::config::Config;
use sipfront::core::testing::Fakes;
use sipfront::core::{Core, Flow, Interface, MatchMode, Now, Ports, Transmit};
use sipfront::registrar::{ContactInput, RegisterRequest, Registrar, RegistrarConfig, SipEdge};
use sipfront::server::core_config;
use sipfront::sip::Transport;
use sipfront::transport::{
    Backend, DatagramHandler, Outbox, TransportConfig, WorkerContext, WorkerSet,
};
use sipfront_bench::cpu::{process_cpu_ns, threads_cpu_ns};

#[derive(Parser, Debug)]
#[command(about = "CPU per message forwarded by the sipfront core over the real socket path")]
struct Args {
    /// auto | io_uring | mmsg
    #[arg(long, default_value = "auto")]
    backend: String,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// "Asterisk" client threads (each with its own socket).
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// Transactions in flight per client.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Measured seconds (after 1 s warm-up).
    #[arg(long, default_value_t = 5)]
    secs: u64,
}

struct OutboxTx<'a>(&'a mut Outbox);

impl Transmit for OutboxTx<'_> {
    fn send(&mut self, to: Flow, bytes: &[u8]) {
        self.0.send(to, bytes);
    }
}

struct CoreHandler {
    core: Core,
}

impl DatagramHandler for CoreHandler {
    fn owner(&self, from: Flow, data: &[u8], n: usize) -> usize {
        self.core.owner(from, data, n)
    }
    fn on_datagram(&mut self, now: Now, from: Flow, data: &[u8], out: &mut Outbox) {
        self.core
            .handle_datagram(now, from, data, &mut OutboxTx(out));
    }
    fn on_wake(&mut self, _now: Now, _out: &mut Outbox) {}
    fn on_timer(&mut self, now: Now, out: &mut Outbox) {
        self.core.handle_timeout(now, &mut OutboxTx(out));
    }
    fn next_deadline_ms(&self) -> Option<u64> {
        self.core.poll_timeout()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The phone: answers every request with 200 (Via, From, To+tag, Call-ID, CSeq copied).
fn phone(sock: UdpSocket, stop: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::with_capacity(4096);
    sock.set_read_timeout(Some(Duration::from_millis(100))).ok();
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        out.clear();
        out.extend_from_slice(b"SIP/2.0 200 OK\r\n");
        for line in buf[..n].split(|&c| c == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            let name = line.split(|&c| c == b':').next().unwrap_or(b"");
            let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
            if is(b"via") || is(b"from") || is(b"call-id") || is(b"cseq") {
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            } else if is(b"to") {
                out.extend_from_slice(line);
                out.extend_from_slice(b";tag=ph\r\n");
            }
        }
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let _ = sock.send_to(&out, from);
    }
}

/// "Asterisk": keeps `window` MESSAGEs in flight, a new one for every 200.
fn asterisk(
    id: usize,
    proxy: SocketAddr,
    window: usize,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    counting: Arc<AtomicBool>,
) {
    let s = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    s.set_read_timeout(Some(Duration::from_millis(200))).ok();
    let me = s.local_addr().expect("addr");
    let mut n = 0u64;
    let mut msg = Vec::with_capacity(1024);
    let mut send = |s: &UdpSocket, n: &mut u64| {
        *n += 1;
        msg.clear();
        let body = "hello";
        msg.extend_from_slice(format!(
            "MESSAGE sip:bob@{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{id}-{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:600@127.0.0.2>;tag=a{id}\r\nTo: <sip:bob@{proxy}>\r\nCall-ID: fwd-{id}-{n}@asterisk\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ).as_bytes());
        let _ = s.send_to(&msg, proxy);
    };
    for _ in 0..window {
        send(&s, &mut n);
    }
    let mut buf = vec![0u8; 65_536];
    let mut local = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match s.recv_from(&mut buf) {
            Ok((len, _)) if buf[..len].starts_with(b"SIP/2.0 200") => {
                send(&s, &mut n);
                local += 1;
                if local == 128 {
                    if counting.load(Ordering::Relaxed) {
                        done.fetch_add(local, Ordering::Relaxed);
                    }
                    local = 0;
                }
            }
            Ok(_) => {}
            Err(_) => {
                // Silence: something was lost; refill the window.
                for _ in 0..window {
                    send(&s, &mut n);
                }
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let backend = match args.backend.as_str() {
        "auto" => Backend::Auto,
        "io_uring" => Backend::IoUring,
        "mmsg" => Backend::Mmsg,
        other => return Err(format!("unknown --backend {other}").into()),
    };
    let phone_sock = UdpSocket::bind("127.0.0.4:0")?;
    let phone_addr = phone_sock.local_addr()?;

    let registrar = Arc::new(Registrar::new(RegistrarConfig {
        persist: "none".to_owned(),
        ..RegistrarConfig::default()
    })?);
    let contact = format!("sip:bob@{phone_addr}");
    let mut lines = Vec::new();
    registrar.register(
        &RegisterRequest {
            aor: "bob@bench",
            call_id: "bench-reg",
            cseq: 1,
            expires_header: Some(3600),
            star: false,
            contacts: &[ContactInput {
                uri: &contact,
                expires: None,
                q: None,
            }],
            source: phone_addr,
            transport: Transport::Udp,
            socket: "127.0.0.1:5060".parse()?,
            conn: 0,
            path: &[],
            user_agent: None,
        },
        now_ms(),
        &mut lines,
    )?;
    let fakes = Fakes::new(&[]);
    let ports = Ports {
        auth: fakes.auth.clone(),
        location: Arc::new(SipEdge::new(
            registrar,
            "bench",
            &[("127.0.0.1:5060".parse()?, Transport::Udp)],
        )),
        regfwd: fakes.regfwd.clone(),
        // Ban and scanner checks on; rate limiting off (one phone answers everything).
        guard: fakes.guard.clone(),
        links: fakes.links.clone(),
        draining: fakes.draining.clone(),
        farm: fakes.farm.clone(),
    };
    let mut cfg = Config::default();
    cfg.listen.udp = vec!["127.0.0.1:0".parse()?];
    cfg.asterisk.nodes = vec!["127.0.0.2:5080".parse()?];
    cfg.asterisk.match_mode = MatchMode::Ip;
    cfg.timers.t1_ms = 20;
    cfg.limits.max_transactions_per_worker = 1 << 20;
    let tcfg = TransportConfig {
        backend,
        ..TransportConfig::default()
    };
    let listen = cfg.listen.udp.clone();
    let set = WorkerSet::spawn(&listen, args.workers, &tcfg, move |ctx: &WorkerContext| {
        let mut c = core_config(&cfg, ctx.n_workers);
        c.interfaces = ctx.listen.iter().map(|a| Interface::new(*a)).collect();
        CoreHandler {
            core: Core::new(Arc::new(c), ports.clone(), ctx.index as u16, ctx.upstream),
        }
    })?;
    let proxy = set.listen_addrs()[0];
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let ph = {
        let stop = stop.clone();
        std::thread::spawn(move || phone(phone_sock, stop))
    };
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            let (stop, done, counting) = (stop.clone(), done.clone(), counting.clone());
            let window = args.window;
            std::thread::spawn(move || asterisk(i, proxy, window, stop, done, counting))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1)); // warm-up (a benchmark, not a test)
    let c0 = set.all_counters();
    let (w0, p0, t0) = (
        threads_cpu_ns("sipfront-w"),
        process_cpu_ns(),
        Instant::now(),
    );
    counting.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(args.secs));
    counting.store(false, Ordering::Relaxed);
    let (w1, p1, elapsed) = (threads_cpu_ns("sipfront-w"), process_cpu_ns(), t0.elapsed());
    let c1 = set.all_counters();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let _ = ph.join();
    let chosen = set.backend();
    set.shutdown_and_join()?;

    let txns = done.load(Ordering::Relaxed).max(1);
    let rx: u64 = c1.iter().zip(&c0).map(|(a, b)| a.rx - b.rx).sum();
    let handed: u64 = c1
        .iter()
        .zip(&c0)
        .map(|(a, b)| a.handed_off - b.handed_off)
        .sum();
    println!(
        "backend={} workers={} clients={} window={}: {:.0} transactions/s | worker CPU {:.0} ns per forwarded message ({:.0} ns per transaction, {:.2} cores) | process CPU {:.0} ns/transaction | handed off {:.0} % of {} datagrams",
        chosen.as_str(),
        args.workers,
        args.clients,
        args.window,
        txns as f64 / elapsed.as_secs_f64(),
        (w1 - w0) as f64 / (2 * txns) as f64,
        (w1 - w0) as f64 / txns as f64,
        (w1 - w0) as f64 / elapsed.as_nanos() as f64,
        (p1 - p0) as f64 / txns as f64,
        100.0 * handed as f64 / rx.max(1) as f64,
        rx,
    );
    Ok(())
}
