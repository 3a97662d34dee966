//! `echo_floor` answers every paced datagram and reports a CPU cost per echo for each rate
//! asked (bench/side-by-side parses these lines).

use std::collections::HashMap;
use std::net::UdpSocket;
use std::process::Command;

#[test]
fn reports_each_rate_with_every_datagram_echoed() {
    // A free port for the server's SO_REUSEPORT sockets (they need one fixed port).
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_echo_floor"))
        .args([
            "--rates",
            "400,1600",
            "--secs",
            "0.5",
            "--warmup-secs",
            "0.2",
        ])
        .args(["--threads", "2", "--sockets", "4"])
        .args(["--server", &format!("127.0.0.1:{port}")])
        .output()
        .expect("run echo_floor");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<HashMap<&str, u64>> = text
        .lines()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|kv| kv.split_once('='))
                .filter_map(|(k, v)| Some((k, v.parse::<f64>().ok()? as u64)))
                .collect()
        })
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (line, rate) in lines.iter().zip([400u64, 1600]) {
        assert_eq!(line["rate"], rate, "{text}");
        // 0.5 s at the rate; the server may lag a few datagrams behind at either end.
        let expected = rate / 2;
        assert!(line["sent"].abs_diff(expected) <= 2, "{text}");
        assert!(line["echoed"].abs_diff(expected) <= expected / 10, "{text}");
        assert!(line["ns_per_echo"] > 0, "{text}");
        assert!(line["server_cpu_ns"] > 0, "{text}");
    }
}
