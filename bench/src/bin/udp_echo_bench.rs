//! UDP echo floor: runs sipfront's worker shell with a trivial echo handler against a
//! loopback load client in the same process, and reports datagrams/s and CPU time per
//! echoed datagram, for each backend. This is the per-packet floor any SIP processing
//! adds to.
//!
//! CPU is measured twice: the worker threads alone (`/proc/self/task/*/schedstat`, ns),
//! and the whole process (`getrusage(RUSAGE_SELF)`, client threads included).
//!
//! ```text
//! cargo run --release -p sipfront-bench --bin udp_echo_bench -- --backend both --secs 5
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use sipfront::core::{Flow, Now};
use sipfront::transport::{
    Backend, DatagramHandler, Outbox, TransportConfig, WorkerContext, WorkerSet,
};
use sipfront_bench::cpu::{process_cpu_ns, threads_cpu_ns};

#[derive(Parser, Debug)]
#[command(about = "UDP echo floor of the sipfront worker shell")]
struct Args {
    /// auto | io_uring | mmsg | both
    #[arg(long, default_value = "both")]
    backend: String,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Client threads (each with its own socket).
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// Datagrams in flight per client.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 600)]
    size: usize,
    /// Measured seconds per backend (after 1 s warm-up).
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Pin workers to cores.
    #[arg(long)]
    pin: bool,
    /// Datagram owner = first byte (the client's number) % workers, so datagrams landing
    /// on the wrong worker are handed off over the channel (measures hand-off cost).
    #[arg(long)]
    handoff: bool,
}

struct EchoHandler {
    handoff: bool,
}

impl DatagramHandler for EchoHandler {
    fn owner(&self, _from: Flow, data: &[u8], n: usize) -> usize {
        match (self.handoff, data.first()) {
            (true, Some(&b)) => usize::from(b) % n,
            _ => usize::MAX, // out of range = "this worker"
        }
    }
    fn on_datagram(&mut self, _now: Now, from: Flow, data: &[u8], out: &mut Outbox) {
        out.send(from, data);
    }
    fn on_wake(&mut self, _now: Now, _out: &mut Outbox) {}
    fn on_timer(&mut self, _now: Now, _out: &mut Outbox) {}
    fn next_deadline_ms(&self) -> Option<u64> {
        None
    }
}

/// Closed-loop client: keeps `window` datagrams in flight, re-sends the window on a
/// 100 ms silence (loss). Counts echoes into `echoed` while `counting` is set.
fn client(
    id: u8,
    to: SocketAddr,
    window: usize,
    size: usize,
    stop: Arc<AtomicBool>,
    echoed: Arc<AtomicU64>,
    counting: Arc<AtomicBool>,
) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("client bind");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut msg = vec![b'x'; size.max(1)];
    msg[0] = id;
    let mut buf = vec![0u8; size + 64];
    let send_window = |s: &UdpSocket| {
        for _ in 0..window {
            let _ = s.send_to(&msg, to);
        }
    };
    send_window(&s);
    let mut local = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match s.recv_from(&mut buf) {
            Ok(_) => {
                let _ = s.send_to(&msg, to);
                local += 1;
                if local == 256 {
                    if counting.load(Ordering::Relaxed) {
                        echoed.fetch_add(local, Ordering::Relaxed);
                    }
                    local = 0;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => send_window(&s),
        }
    }
}

fn run(backend: Backend, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let handoff = args.handoff;
    let cfg = TransportConfig {
        backend,
        pin_cores: args.pin,
        ..TransportConfig::default()
    };
    let set = WorkerSet::spawn(
        &["127.0.0.1:0".parse()?],
        args.workers,
        &cfg,
        move |_: &WorkerContext| EchoHandler { handoff },
    )?;
    let to = set.listen_addrs()[0];
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            let (stop, echoed, counting) = (stop.clone(), echoed.clone(), counting.clone());
            let (window, size) = (args.window, args.size);
            std::thread::spawn(move || client(i as u8, to, window, size, stop, echoed, counting))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1)); // warm-up (a benchmark, not a test)
    let c0 = set.all_counters();
    let rx0: u64 = c0.iter().map(|c| c.rx).sum();
    let turns0: u64 = c0.iter().map(|c| c.turns).sum();
    let (w0, p0, t0) = (
        threads_cpu_ns("sipfront-w"),
        process_cpu_ns(),
        Instant::now(),
    );
    counting.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(args.secs));
    counting.store(false, Ordering::Relaxed);
    let (w1, p1, elapsed) = (threads_cpu_ns("sipfront-w"), process_cpu_ns(), t0.elapsed());
    let counters = set.all_counters();
    let rx1: u64 = counters.iter().map(|c| c.rx).sum();
    let turns1: u64 = counters.iter().map(|c| c.turns).sum();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let chosen = set.backend();
    set.shutdown_and_join()?;

    let served = (rx1 - rx0).max(1);
    let echoes = echoed.load(Ordering::Relaxed).max(1);
    println!(
        "backend={:<8} workers={} clients={} window={} size={}B: {:>9.0} echoes/s | worker CPU {:>6.0} ns/datagram ({:.2} cores) | process CPU {:>6.0} ns/echo | {:.1} datagrams/turn | handed off {:.0} % | dropped {} | rx per worker {:?}",
        chosen.as_str(),
        args.workers,
        args.clients,
        args.window,
        args.size,
        served as f64 / elapsed.as_secs_f64(),
        (w1 - w0) as f64 / served as f64,
        (w1 - w0) as f64 / elapsed.as_nanos() as f64,
        (p1 - p0) as f64 / echoes as f64,
        served as f64 / (turns1 - turns0).max(1) as f64,
        100.0 * counters.iter().zip(&c0).map(|(c, c0)| c.handed_off - c0.handed_off).sum::<u64>() as f64
            / served as f64,
        counters.iter().map(|c| c.dropped).sum::<u64>(),
        counters
            .iter()
            .zip(&c0)
            .map(|(c, c0)| c.rx - c0.rx)
            .collect::<Vec<_>>(),
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let backends: Vec<Backend> = match args.backend.as_str() {
        "both" => vec![Backend::IoUring, Backend::Mmsg],
        "auto" => vec![Backend::Auto],
        "io_uring" => vec![Backend::IoUring],
        "mmsg" => vec![Backend::Mmsg],
        other => return Err(format!("unknown --backend {other}").into()),
    };
    for b in backends {
        run(b, &args)?;
    }
    Ok(())
}
