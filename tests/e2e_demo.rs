//! `sipfront demo` as a newcomer runs it, with the REAL binary: started in an empty working
//! directory (free loopback ports instead of 5060/8080/5080 so it can run beside other
//! tests), it prints a banner saying how to stop it, where the admin API is and what to try;
//! a phone (user 1001, password secret1001) calls 600 and gets 200 OK from the built-in
//! answering node; `sipfront ctl stats` answers; SIGTERM stops it with exit code 0, its
//! temporary directory is removed, and the working directory is still empty.

mod support;

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::admin::{ctl_ok, free_admin_addr};
use support::flows::{ack_2xx, phone_invite};
use support::phone::Phone;
use support::procs::{sipfront_bin, Proc};
use support::proxy::free_udp_port;

/// Sends OPTIONS until the proxy answers 200.
fn wait_ready(proxy: SocketAddr, demo: &mut Proc) {
    let probe = Phone::bind(Ipv4Addr::LOCALHOST);
    let me = probe.addr;
    for i in 0..150 {
        assert!(demo.exited().is_none(), "the demo exited during startup");
        probe.send(
            proxy,
            &format!(
                "OPTIONS sip:{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKdemo{i};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:probe@{me}>;tag=p\r\nTo: <sip:{proxy}>\r\n\
                 Call-ID: demo-ready-{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ),
        );
        if let Some(m) = probe.recv_until(Instant::now() + Duration::from_millis(100)) {
            if m.code() == Some(200) {
                return;
            }
        }
    }
    panic!("the demo never answered OPTIONS on {proxy}");
}

#[test]
fn demo_answers_a_call_to_600_and_leaves_no_files() {
    let cwd = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let sip = SocketAddr::from((Ipv4Addr::LOCALHOST, free_udp_port(Ipv4Addr::LOCALHOST)));
    let node_ip = Ipv4Addr::new(127, 0, 0, 2);
    let asterisk = SocketAddr::from((node_ip, free_udp_port(node_ip)));
    let admin = free_admin_addr();
    let mut cmd = Command::new(sipfront_bin());
    cmd.current_dir(cwd.path())
        .args(["demo", "--sip", &sip.to_string()])
        .args(["--admin", &admin.to_string()])
        .args(["--asterisk", &asterisk.to_string()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(File::create(logs.path().join("demo.out")).unwrap())
        .stderr(File::create(logs.path().join("demo.err")).unwrap());
    let mut demo = Proc::spawn("sipfront demo", &mut cmd);
    wait_ready(sip, &mut demo);

    let banner = std::fs::read_to_string(logs.path().join("demo.out")).unwrap();
    for s in [
        "Ctrl-C",
        &format!("http://{admin}/"),
        &format!("sipfront ctl --admin {admin} stats"),
        "call 600",
        "1001/secret1001",
    ] {
        assert!(banner.contains(s), "banner lacks {s:?}:\n{banner}");
    }
    let files = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("files"))
        .and_then(|l| l.trim().split(" (").next())
        .map(std::path::PathBuf::from)
        .expect("the banner names the demo's directory");
    assert!(files.join("sipfront-demo.db").exists(), "{files:?}");

    let caller = Phone::bind(Ipv4Addr::new(127, 0, 0, 3));
    let call = phone_invite(
        &caller,
        sip,
        "1001",
        "secret1001",
        &format!("sip:600@{sip}"),
        Duration::from_secs(10),
    );
    assert_eq!(call.code(), 200, "the call to 600: {:?}", call.before);
    assert!(
        call.last.text.contains("application/sdp"),
        "{}",
        call.last.text
    );
    ack_2xx(&caller, sip, &call);

    let stats = ctl_ok(admin, &["stats"]);
    assert!(stats.contains("sipfront"), "{stats}");

    demo.signal(libc::SIGTERM);
    let status = demo
        .wait_exit(Duration::from_secs(20))
        .expect("the demo stops on SIGTERM");
    assert!(status.success(), "exit status {status}");
    let left: Vec<_> = std::fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "the demo wrote into its working directory: {left:?}"
    );
    assert!(
        !files.exists(),
        "the temporary directory {files:?} is left behind"
    );
}
