//! A real SIP client over TLS: baresip (the Debian package) in a network namespace this test
//! makes registers with sipfront over TLS through the 401 challenge, calls 600 through the
//! 407 challenge, the stand-in (Asterisk) answers, baresip hangs up (the BYE reaches the
//! stand-in and is answered) and quits, unregistering, with exit status 0.
//!
//! Layout: baresip at 10.77.N.2 inside namespace `sfbr<pid>`, sipfront's TLS listener on the
//! host end of the veth pair (10.77.N.1), sipfront's UDP side and the stand-in on loopback as
//! in every end-to-end test. baresip is driven through its stdin (the `stdio` UI: `/dial`,
//! `/hangup`, `/quit`) and watched through its output file (`-v -s`: verbose, with a trace of
//! every SIP message it sends and receives), which lands in the scene directory and so in
//! the failure report.
//!
//! baresip 1.0 (libre 1.1) does not verify the server's certificate (it has no
//! `sip_verify_server` setting and sends its REGISTER to any certificate); the test still
//! gives it the test CA (`sip_cafile`) and a server certificate naming the address it dials.
//!
//! Needs root (network namespaces) and `baresip` (installed by scripts/test).

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ChildStdin, Stdio};
use std::time::Duration;

use support::netns::{which, NetNs};
use support::procs::Proc;
use support::proxy::{Tune, DOMAIN};
use support::tls::TestPki;
use support::{password, Scene, Setup};

use serde_json::Value;

/// The bound of every wait.
const WAIT: Duration = Duration::from_secs(20);

/// baresip's output (stdout and stderr) in the scene directory.
const OUT: &str = "baresip.out";

/// The phone's user (one of the seeded users).
const USER: &str = "1001";

/// baresip's config directory (`-f`): core config, the one account, no contacts. Only the
/// modules a headless call needs: the `stdio` UI (commands on stdin), `menu` (the
/// commands), G.711 (the stand-in offers PCMU/PCMA) and `aubridge` as audio source and
/// player (it loops the player into the source: no sound devices needed; the `ausine`
/// source would fail the call, it only runs at 48 kHz).
fn write_config(dir: &Path, ns: &NetNs, tls: SocketAddr, pki: &TestPki) {
    std::fs::create_dir_all(dir).expect("baresip config directory");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, pki.ca_pem()).expect("write the CA for baresip");
    let config = format!(
        "poll_method epoll\n\
         module_path /usr/lib/baresip/modules\n\
         sip_listen {ip}:5060\n\
         sip_cafile {ca}\n\
         audio_source aubridge,nil\n\
         audio_player aubridge,nil\n\
         audio_alert aubridge,nil\n\
         module stdio.so\n\
         module g711.so\n\
         module aubridge.so\n\
         module_tmp account.so\n\
         module_app menu.so\n",
        ip = ns.ns_ip,
        ca = ca.display()
    );
    std::fs::write(dir.join("config"), config).expect("write baresip's config");
    // The AOR in sipfront's domain; every request goes through the outbound proxy, which
    // is sipfront's TLS listener on the veth.
    let account = format!(
        "<sip:{USER}@{DOMAIN};transport=tls>;auth_pass={pw};\
         outbound=\"sip:{tls};transport=tls\";regint=600\n",
        pw = password(USER)
    );
    std::fs::write(dir.join("accounts"), account).expect("write baresip's accounts");
    std::fs::write(dir.join("contacts"), "").expect("write baresip's contacts");
}

/// baresip, running in the namespace, with its stdin to send commands.
struct Baresip {
    stdin: ChildStdin,
    proc: Proc,
}

impl Baresip {
    fn start(ns: &NetNs, bin: &Path, conf: &Path, out: &Path) -> Baresip {
        let stdout = std::fs::File::create(out).expect("baresip output file");
        let stderr = stdout.try_clone().expect("baresip output file, again");
        let mut cmd = ns.command(bin);
        cmd.arg("-f")
            .arg(conf)
            .args(["-v", "-s"])
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(stderr);
        let mut proc = Proc::spawn("baresip", &mut cmd);
        let stdin = proc.child_mut().stdin.take().expect("piped stdin");
        Baresip { stdin, proc }
    }

    /// One command line for the `stdio` UI (e.g. `/dial 600`).
    fn command(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| self.stdin.flush())
            .unwrap_or_else(|e| panic!("baresip did not take {line:?}: {e}"));
    }
}

/// One SIP message of baresip's trace (`-s`): a block `#`, `TLS FROM -> TO`, the message.
#[derive(Debug)]
struct Traced {
    transport: String,
    from: String,
    to: String,
    /// The request or status line.
    start: String,
    /// The method of the CSeq header.
    method: String,
}

/// Every message of baresip's SIP trace in `out`, in order.
fn trace(out: &str) -> Vec<Traced> {
    out.split("#\n")
        .skip(1)
        .filter_map(|block| {
            let mut lines = block.lines();
            let mut route = lines.next()?.split_whitespace();
            let (transport, from, arrow, to) =
                (route.next()?, route.next()?, route.next()?, route.next()?);
            if arrow != "->" {
                return None;
            }
            let start = lines.next()?.to_owned();
            let method = lines
                .find_map(|l| l.strip_prefix("CSeq:"))
                .and_then(|c| c.split_whitespace().nth(1))
                .unwrap_or_default()
                .to_owned();
            Some(Traced {
                transport: transport.to_owned(),
                from: from.to_owned(),
                to: to.to_owned(),
                start,
                method,
            })
        })
        .collect()
}

/// Whether baresip received `status` (e.g. `SIP/2.0 200 OK`) to a `method` request from
/// `proxy`, over TLS.
fn received(out: &str, proxy: SocketAddr, status: &str, method: &str) -> bool {
    trace(out).iter().any(|m| {
        m.transport == "TLS"
            && m.from == proxy.to_string()
            && m.start == status
            && m.method == method
    })
}

#[test]
fn baresip_registers_over_tls_and_completes_a_call_to_the_standin() {
    let Some(bin) = which("baresip") else {
        panic!(
            "baresip is not installed: run scripts/test, which installs the Debian package \
             baresip (or `apt-get install baresip`)"
        );
    };
    assert!(
        which("ip").is_some(),
        "`ip` (iproute2) is not installed: it makes the test's network namespace"
    );
    // Declared first, dropped last: baresip and the proxy are gone before the namespace.
    let ns = NetNs::create("sfbr");
    let pki_dir = tempfile::tempdir().expect("PKI directory");
    let host_ip = ns.host_ip.to_string();
    let pki = TestPki::with_names(pki_dir.path(), &[&host_ip, DOMAIN]);
    let s = Scene::start(Setup {
        tune: Tune {
            tls: Some((pki.cert.clone(), pki.key.clone())),
            tls_ip: Some(ns.host_ip),
            ..Tune::default()
        },
        ..Setup::default()
    });
    let tls = s.proxy.tls.expect("a TLS listener");
    let conf = s.dir().join("baresip");
    write_config(&conf, &ns, tls, &pki);
    let mut phone = Baresip::start(&ns, &bin, &conf, &s.dir().join(OUT));
    let wait_received = |status: &str, method: &str| {
        s.wait_file_for(
            OUT,
            &format!("{status:?} to {method} from {tls} over TLS"),
            WAIT,
            |out| received(out, tls, status, method),
        );
    };

    // Registration: challenged (401), then 200 over the TLS connection to the veth address;
    // sipfront forwards it to Asterisk, the contact being sipfront itself.
    wait_received("SIP/2.0 401 Unauthorized", "REGISTER");
    wait_received("SIP/2.0 200 OK", "REGISTER");
    s.wait_file(OUT, "All 1 useragent registered successfully", WAIT);
    let reg = s.standin().wait_registered(USER);
    let contact = reg.get("contact").and_then(Value::as_str).unwrap_or("");
    assert!(
        contact.contains(&s.proxy.addr.to_string()),
        "Asterisk's binding for {USER} points at sipfront: {reg}"
    );

    // The call: 407 challenge, then Asterisk's 200; baresip ACKs through the proxy.
    phone.command("/dial 600");
    wait_received("SIP/2.0 407 Proxy Authentication Required", "INVITE");
    wait_received("SIP/2.0 200 OK", "INVITE");
    s.wait_file(OUT, "Call established", WAIT);
    s.standin().wait_stat("answered", 1, WAIT);
    s.standin().wait_stat("ack", 1, WAIT);
    let invite = s.standin().wait_event("invite", WAIT, |e| {
        e.get("exten").and_then(Value::as_str) == Some("600")
    });
    let via_tls = format!("SIP/2.0/TLS {}:", ns.ns_ip);
    assert!(
        invite.to_string().contains(&via_tls),
        "the INVITE Asterisk got came from baresip over TLS ({via_tls}): {invite}"
    );
    assert_eq!(
        s.standin().stat("invite"),
        1,
        "only the authenticated INVITE reaches Asterisk"
    );

    // Hang up: the BYE reaches the stand-in, whose 200 comes back to baresip.
    phone.command("/hangup");
    s.standin().wait_stat("bye", 1, WAIT);
    wait_received("SIP/2.0 200 OK", "BYE");

    // Quit: baresip unregisters (answered 200) and exits cleanly.
    phone.command("/quit");
    let status = phone.proc.wait_exit(WAIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "baresip did not quit cleanly within {WAIT:?}: {status:?}"
    );
    let out = std::fs::read_to_string(s.dir().join(OUT)).expect("baresip's output");
    let messages = trace(&out);
    let registers_ok = messages
        .iter()
        .filter(|m| m.start == "SIP/2.0 200 OK" && m.method == "REGISTER")
        .count();
    assert_eq!(
        registers_ok, 2,
        "the REGISTER and the un-REGISTER got 200: {messages:#?}"
    );
    // Every message either way went over TLS between the veth ends.
    let ends = [ns.ns_ip.to_string(), ns.host_ip.to_string()];
    assert!(
        messages.iter().all(|m| m.transport == "TLS"
            && [&m.from, &m.to]
                .iter()
                .all(|a| ends.iter().any(|e| a.starts_with(&format!("{e}:"))))),
        "every SIP message went over TLS on the veth pair: {messages:#?}"
    );
}
