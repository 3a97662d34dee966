//! Runs every sipp scenario in `sipp/` against the real stand-in binary (`sipp/run check`):
//! proves the XML parses and plays with sipp 3.6 and that the stand-in speaks to real sipp.
//!
//! Needs sipp (Debian `sip-tester`) and python3; fails when sipp is missing unless
//! `SIPFRONT_SKIP_SIPP=1` is set. Ports are picked free at start (a small race is accepted).

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;

/// A base port with `n` consecutive free UDP ports on 127.0.0.1.
fn free_ports(n: u16) -> u16 {
    let seed = std::process::id() as u16;
    for attempt in 0..200u16 {
        let base = 20_000 + (seed.wrapping_mul(7).wrapping_add(attempt * 97) % 40_000);
        let held: Vec<_> = (0..n)
            .filter_map(|i| UdpSocket::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == usize::from(n) {
            return base;
        }
    }
    panic!("no {n} consecutive free UDP ports");
}

#[test]
fn every_scenario_plays_against_the_standin() {
    if std::env::var("SIPFRONT_SKIP_SIPP").as_deref() == Ok("1") {
        eprintln!("SIPFRONT_SKIP_SIPP=1: skipped");
        return;
    }
    let have_sipp = Command::new("sipp").arg("-v").output().is_ok();
    assert!(
        have_sipp,
        "sipp not found: apt-get install sip-tester (or SIPFRONT_SKIP_SIPP=1)"
    );
    let base = free_ports(16);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sipp/run");
    let out = Command::new("timeout")
        .arg("120")
        .arg("bash")
        .arg(script)
        .arg("check")
        .args(["--asterisk", &format!("127.0.0.1:{}", base + 10)])
        .args(["--control", &format!("127.0.0.1:{}", base + 14)])
        .args(["--base-port", &base.to_string()])
        .args(["--standin", env!("CARGO_BIN_EXE_asterisk-standin")])
        .output()
        .expect("run sipp/run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("9 passed, 0 failed"),
        "sipp/run check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
