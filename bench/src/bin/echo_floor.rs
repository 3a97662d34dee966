//! `echo_floor`: the socket floor of a UDP proxy at a given datagram rate.
//!
//! A plain UDP echo server (one blocking `recv_from`/`send_to` loop per thread, each thread
//! with its own SO_REUSEPORT socket, as a proxy's workers have) answers a client that sends
//! at a fixed, paced rate from several sockets. The server threads' CPU time (exact ns from
//! `/proc/self/task/*/schedstat`) divided by the datagrams echoed is what one received and
//! one sent datagram cost the kernel and a thread that sleeps between them at that rate:
//! nothing a proxy does per datagram can be cheaper. At low rates each datagram costs a
//! wake-up; at high rates the loop stays awake and the cost falls.
//!
//! A proxy operation that receives `in` and sends `out` datagrams has the floor
//! `(in + out) / 2` echoes at the echo rate `op rate × (in + out) / 2`. `bench/compare` runs
//! this at each rate it measures a proxy at, in the same run.
//!
//! ```text
//! target/release/echo_floor --rates 3000,9000,30000 --secs 5 --threads 2
//! ```
//! One line per rate: `echo_floor rate=3000 echoed=15000 lost=0 server_cpu_ns=...
//! ns_per_echo=11234`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use sipfront_bench::cpu::threads_cpu_ns;
use socket2::{Domain, Protocol, Socket, Type};

#[derive(Parser, Debug)]
#[command(about = "CPU per echoed UDP datagram of a plain echo server at paced rates")]
struct Args {
    /// Echoes per second to measure at, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,3000,10000")]
    rates: Vec<u32>,
    /// Measured seconds per rate (after --warmup-secs).
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Warm-up seconds per rate, not measured.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Server threads, each with its own SO_REUSEPORT socket (the proxy's worker count).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Client sockets (distinct source ports, spread over the server sockets by the kernel).
    #[arg(long, default_value_t = 16)]
    sockets: usize,
    /// Payload bytes (a typical SIP message is 500-900).
    #[arg(long, default_value_t = 600)]
    size: usize,
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:25999")]
    server: SocketAddrV4,
    /// IP the client sends from.
    #[arg(long, default_value = "127.0.0.3")]
    client_ip: Ipv4Addr,
}

const SERVER_THREAD: &str = "echo-floor-srv";

/// Longest a blocked thread waits before looking at the stop flag.
const POLL: Duration = Duration::from_millis(200);

fn server_socket(addr: SocketAddrV4) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    s.set_recv_buffer_size(4 << 20)?;
    s.bind(&SocketAddr::V4(addr).into())?;
    s.set_read_timeout(Some(POLL))?;
    Ok(s.into())
}

fn serve(sock: UdpSocket, stop: Arc<AtomicBool>, echoed: Arc<AtomicU64>) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                if sock.send_to(&buf[..n], from).is_ok() {
                    echoed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                eprintln!("echo_floor: server receive: {e}");
                return;
            }
        }
    }
}

fn receive(sock: UdpSocket, stop: Arc<AtomicBool>, received: Arc<AtomicU64>) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if sock.recv(&mut buf).is_ok() {
            received.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends `rate` datagrams/s round-robin over `socks` until `until`, paced against the
/// clock (a late sender catches up in a burst rather than lowering the rate). Returns how
/// many it sent.
fn send_paced(
    socks: &[UdpSocket],
    to: SocketAddrV4,
    payload: &[u8],
    rate: u32,
    until: Instant,
) -> u64 {
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut sent = 0u64;
    loop {
        let now = Instant::now();
        if now >= until {
            return sent;
        }
        let due = start + interval.mul_f64(sent as f64);
        if due > now {
            std::thread::sleep(due - now);
            continue;
        }
        let sock = &socks[(sent as usize) % socks.len()];
        if sock.send_to(payload, to).is_ok() {
            sent += 1;
        }
    }
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if args.threads == 0 || args.sockets == 0 || args.size == 0 || args.size > 2048 {
        eprintln!("echo_floor: --threads and --sockets must be > 0, --size 1..=2048");
        std::process::exit(2);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for i in 0..args.threads {
        let sock = server_socket(args.server)?;
        let (stop, echoed) = (stop.clone(), echoed.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("{SERVER_THREAD}{i}"))
                .spawn(move || serve(sock, stop, echoed))?,
        );
    }
    let mut clients = Vec::new();
    for _ in 0..args.sockets {
        let s = UdpSocket::bind(SocketAddrV4::new(args.client_ip, 0))?;
        s.set_read_timeout(Some(POLL))?;
        let rx = s.try_clone()?;
        let (stop, received) = (stop.clone(), received.clone());
        handles.push(
            std::thread::Builder::new()
                .name("echo-floor-rx".into())
                .spawn(move || receive(rx, stop, received))?,
        );
        clients.push(s);
    }
    let payload = vec![b'x'; args.size];
    for &rate in &args.rates {
        let warm_until = Instant::now() + Duration::from_secs_f64(args.warmup_secs);
        send_paced(&clients, args.server, &payload, rate, warm_until);
        let (cpu0, echo0, rx0) = (
            threads_cpu_ns(SERVER_THREAD),
            echoed.load(Ordering::Relaxed),
            received.load(Ordering::Relaxed),
        );
        let t0 = Instant::now();
        let sent = send_paced(
            &clients,
            args.server,
            &payload,
            rate,
            t0 + Duration::from_secs_f64(args.secs),
        );
        let wall = t0.elapsed().as_secs_f64();
        let cpu = threads_cpu_ns(SERVER_THREAD) - cpu0;
        let n = echoed.load(Ordering::Relaxed) - echo0;
        let got = received.load(Ordering::Relaxed) - rx0;
        println!(
            "echo_floor rate={rate} achieved={:.0} sent={sent} echoed={n} lost={} \
             server_cpu_ns={cpu} ns_per_echo={}",
            n as f64 / wall,
            sent.saturating_sub(got),
            cpu.checked_div(n).unwrap_or(0),
        );
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}
