//! `tls_handshake`: opens TLS connections to a proxy's `[listen] tls` address one after
//! another at a paced rate, completes each handshake and closes the connection (TLS
//! close_notify, then TCP FIN), so the proxy's CPU per handshake can be read beside its CPU
//! per SIP operation (perf/run-load -w tls-handshake measures the proxy). Prints a `RESULT`
//! line with the handshakes done and failed.

use clap::Parser;
use sipfront_bench::loadgen::stream::StreamConn;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "tls_handshake",
    about = "Paced TLS handshakes against a proxy (loopback)"
)]
struct Args {
    /// The proxy's TLS listen address.
    #[arg(long, default_value = "127.0.0.1:5061")]
    proxy: SocketAddrV4,
    /// Handshakes to do.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Handshakes per second at most (one at a time; slower if a handshake takes longer).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// The IP connections come from.
    #[arg(long, default_value = "127.0.0.1")]
    from: Ipv4Addr,
}

fn main() {
    let a = Args::parse();
    if a.rate.is_nan() || a.rate <= 0.0 {
        eprintln!("tls_handshake: --rate must be > 0");
        std::process::exit(2);
    }
    let cfg = sipfront_bench::loadgen::stream::insecure_client_config();
    let gap = Duration::from_secs_f64(1.0 / a.rate);
    let t0 = Instant::now();
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut first_error = None;
    let mut took = Vec::with_capacity(a.count as usize);
    for k in 0..a.count {
        // Pacing: the k-th handshake starts no earlier than k gaps after the start.
        let due = t0 + gap.mul_f64(k as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let start = Instant::now();
        match StreamConn::connect(a.from, a.proxy, Some(&cfg), false) {
            Ok(mut conn) => {
                took.push(start.elapsed());
                conn.close();
                ok += 1;
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    took.sort_unstable();
    let pct = |p: f64| {
        took.get(((took.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0, |d| d.as_micros())
    };
    println!(
        "tls_handshake: {ok} handshakes ({failed} failed) in {secs:.2} s = {:.0}/s; client-side \
         handshake time p50 {} µs, p99 {} µs",
        ok as f64 / secs.max(1e-9),
        pct(0.5),
        pct(0.99)
    );
    if let Some(e) = first_error {
        println!("tls_handshake: first error: {e}");
    }
    println!("RESULT what=tls-handshake ok={ok} failed={failed}");
    if failed > 0 {
        std::process::exit(1);
    }
}
