//! `sipfront-loadgen`: plays thousands of phones (and the Asterisk side) against a running
//! sipfront: authenticated REGISTER storms, authenticated calls through the stand-in, and
//! Asterisk-originated calls, at a fixed rate or searching the highest rate with zero failures.
//! Prints per-step latency percentiles (µs), one `RESULT k=v ...` line per phase, writes
//! `.hgrm` files (--out) and a JSON summary (--json). Works against sipfront and against
//! Kamailio (bench/kamailio/run). See docs/profiling.md.

use clap::{Parser, ValueEnum};
use sipfront_bench::loadgen::net::Wire;
use sipfront_bench::loadgen::runner::{Mode, RunConfig, Runner, Workload};
use sipfront_bench::loadgen::stream::insecure_client_config;
use sipfront_bench::loadgen::users::Users;
use sipfront_bench::loadgen::worker::{Bind, Params};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum WorkloadArg {
    /// REGISTER, 401, REGISTER with MD5 digest, 200.
    Register,
    /// INVITE, 407, ACK, INVITE with Proxy-Authorization, 100/180/200, ACK, BYE, 200
    /// (the stand-in answers the target extension).
    Call,
    /// Registers every user, then from --asterisk-ip sends INVITEs for them to the proxy and
    /// answers as the phones (180, 200), then ACK, BYE, 200.
    AsteriskCall,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TransportArg {
    Udp,
    /// One TCP connection per phone socket (--sockets per thread), opened before the run.
    Tcp,
    /// One TLS connection per phone socket; the proxy's certificate is not checked
    /// (loopback benchmark).
    Tls,
    /// One WebSocket (RFC 7118, subprotocol sip) per phone socket, over TCP.
    Ws,
    /// One secure WebSocket per phone socket (TLS as for `tls`).
    Wss,
}

#[derive(Parser, Debug)]
#[command(
    name = "sipfront-loadgen",
    about = "SIP load generator for sipfront (loopback)"
)]
struct Args {
    #[arg(long, value_enum, default_value = "register")]
    workload: WorkloadArg,
    /// The proxy under test (its listen address for --transport).
    #[arg(long, default_value = "127.0.0.1:5060")]
    proxy: SocketAddrV4,
    /// The phones' transport to the proxy (the Asterisk side of asterisk-call stays on UDP).
    #[arg(long, value_enum, default_value = "udp")]
    transport: TransportArg,
    /// The proxy's UDP address for the Asterisk side of asterisk-call (default: --proxy).
    #[arg(long)]
    asterisk_proxy: Option<SocketAddrV4>,
    /// The proxy's domain (REGISTER URI, From/To host, digest uri).
    #[arg(long, default_value = "sipfront.test")]
    domain: String,
    /// Extension called by the `call` workload (the stand-in answers it).
    #[arg(long, default_value = "600")]
    target: String,
    /// Users as FIRST-LAST (with --password-pattern).
    #[arg(long, default_value = "1001-11000")]
    users: String,
    /// Password of each user; `{user}` is replaced by the user name.
    #[arg(long, default_value = "pw{user}")]
    password_pattern: String,
    /// Users from a CSV (sipp injection format or user;password); overrides --users.
    #[arg(long)]
    users_csv: Option<String>,
    /// Operations per second (fixed mode).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Operations to run (fixed mode).
    #[arg(long, default_value_t = 10000)]
    count: u64,
    /// Run for this many seconds instead of --count (count = rate x duration).
    #[arg(long)]
    duration: Option<f64>,
    /// Search the highest rate with zero failures (double, then bisect).
    #[arg(long)]
    find_max: bool,
    /// First rate of the search.
    #[arg(long, default_value_t = 1000.0)]
    start_rate: f64,
    /// Length of each search step, seconds.
    #[arg(long, default_value_t = 3.0)]
    step_secs: f64,
    /// Highest rate the search tries.
    #[arg(long, default_value_t = 200_000.0)]
    max_rate: f64,
    /// Most steps of the search.
    #[arg(long, default_value_t = 12)]
    max_steps: u32,
    /// Bisection stops when first-failing / last-clean <= 1 + this.
    #[arg(long, default_value_t = 0.05)]
    precision: f64,
    /// A search step passes only if operations completed at >= this fraction of the offered
    /// rate (besides zero failures).
    #[arg(long, default_value_t = 0.95)]
    keep_up: f64,
    /// Generator threads.
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Phone sockets (local ports) per thread.
    #[arg(long, default_value_t = 16)]
    sockets: u16,
    /// IP the phones send from.
    #[arg(long, default_value = "127.0.0.1")]
    phone_ip: Ipv4Addr,
    /// IP the Asterisk side sends from (asterisk-call; sipfront must trust it).
    #[arg(long, default_value = "127.0.0.2")]
    asterisk_ip: Ipv4Addr,
    /// Rate of the registration phase of asterisk-call.
    #[arg(long, default_value_t = 5000.0)]
    reg_rate: f64,
    /// Expires of REGISTERs, seconds.
    #[arg(long, default_value_t = 3600)]
    expires: u32,
    /// Time between the 200 and the BYE, ms.
    #[arg(long, default_value_t = 0)]
    talk_ms: u64,
    /// T1 (retransmission base), ms.
    #[arg(long, default_value_t = 500)]
    t1_ms: u64,
    /// An operation without its final answer after this long fails (timeout), ms.
    #[arg(long, default_value_t = 5000)]
    op_timeout_ms: u64,
    /// Operations in flight at most (beyond: counted as `backlog` failures).
    #[arg(long, default_value_t = 200_000)]
    max_inflight: usize,
    /// Directory for the .hgrm files (not written when absent).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print started/ok/failed/retransmits once a second while running.
    #[arg(long)]
    progress: bool,
    /// Prefix of the .hgrm file names.
    #[arg(long, default_value = "sipfront")]
    label: String,
    /// Write a JSON summary here at the end (also when the run fails): every phase's offered
    /// and achieved rate, ok, failed and their causes, retransmits, latency percentiles
    /// p50/p90/p99/p99.9/max in µs per step; for --find-max the max clean rate.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() {
    let a = Args::parse();
    let users = match &a.users_csv {
        Some(p) => Users::from_csv(p),
        None => Users::range(&a.users, &a.password_pattern),
    };
    let users = users.unwrap_or_else(|e| {
        eprintln!("sipfront-loadgen: {e}");
        std::process::exit(2)
    });
    let workload = match a.workload {
        WorkloadArg::Register => Workload::Register,
        WorkloadArg::Call => Workload::Call,
        WorkloadArg::AsteriskCall => Workload::AsteriskCall,
    };
    if !(a.rate > 0.0 && a.start_rate > 0.0 && a.step_secs > 0.0) {
        eprintln!("sipfront-loadgen: --rate, --start-rate and --step-secs must be > 0");
        std::process::exit(2);
    }
    let count = a
        .duration
        .map(|d| (d * a.rate).ceil() as u64)
        .unwrap_or(a.count);
    let mode = if a.find_max {
        Mode::FindMax {
            start: a.start_rate,
            step_secs: a.step_secs,
            max_rate: a.max_rate,
            max_steps: a.max_steps,
            precision: a.precision,
            keep_up: a.keep_up,
        }
    } else {
        Mode::Fixed {
            rate: a.rate,
            count,
        }
    };
    let wire = match a.transport {
        TransportArg::Udp => Wire::Udp,
        TransportArg::Tcp => Wire::Tcp,
        TransportArg::Tls => Wire::Tls,
        TransportArg::Ws => Wire::Ws,
        TransportArg::Wss => Wire::Wss,
    };
    let cfg = RunConfig {
        params: Params {
            proxy: a.proxy,
            asterisk_proxy: a.asterisk_proxy.unwrap_or(a.proxy),
            domain: a.domain,
            target: a.target,
            expires: a.expires,
            t1_us: a.t1_ms.max(1) * 1000,
            t2_us: a.t1_ms.max(1) * 8000,
            op_timeout_us: a.op_timeout_ms.max(1) * 1000,
            talk_us: a.talk_ms * 1000,
            threads: a.threads.max(1),
            wire,
            tls: matches!(wire, Wire::Tls | Wire::Wss).then(insecure_client_config),
        },
        users,
        bind: Bind {
            phone_ip: a.phone_ip,
            phone_sockets: a.sockets.max(1),
            asterisk_ip: Some(a.asterisk_ip),
        },
        workload,
        mode,
        max_inflight: a.max_inflight.max(1),
        reg_rate: a.reg_rate,
        out_dir: a.out,
        label: a.label,
        progress: a.progress,
        json: a.json,
    };
    println!(
        "sipfront-loadgen: {} against {} over {} ({} users, {} threads x {} sockets)",
        workload.name(),
        a.proxy,
        wire.name(),
        cfg.users.len(),
        cfg.params.threads,
        a.sockets
    );
    let result = Runner::new(cfg).and_then(|mut r| r.run());
    if let Err(e) = result {
        eprintln!("sipfront-loadgen: {e}");
        std::process::exit(1);
    }
}
