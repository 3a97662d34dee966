//! The Asterisk stand-in (`asterisk-standin`) as the tests see it: started on 127.0.0.2 with
//! ephemeral ports, queried on its control port (`stats`, `reg USER`), and observed through
//! its JSON-lines event log, which the tests wait on with inotify (see [`StandIn::wait_event`]).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::procs::{standin_bin, Proc};
use super::sys::DirWatch;

/// How long a control command may take to be answered.
const CONTROL_WAIT: Duration = Duration::from_secs(3);

/// Extension modes every test's stand-in gets (anything else is `dial`).
pub const ANSWER_EXT: &str = "600";
pub const NOANSWER_EXT: &str = "699";
pub const BUSY_EXT: &str = "486";
/// Never answered, not even with 100 (the proxy's Timer B path).
pub const DROP_EXT: &str = "698";

pub struct StandIn {
    pub sip: SocketAddr,
    pub control: SocketAddr,
    events: PathBuf,
    watch: DirWatch,
    proc: Proc,
    /// Kept open: the stand-in may write to its stdout again.
    _stdout: BufReader<ChildStdout>,
}

impl StandIn {
    /// Starts the stand-in with its files in `dir` (its own directory, so the inotify watch
    /// only wakes for the stand-in's event log and stderr). It knows the passwords of
    /// `users` (used with `--challenge` in `extra_args`).
    pub fn start(dir: &Path, users: &[(&str, &str)], extra_args: &[&str]) -> StandIn {
        std::fs::create_dir_all(dir).expect("stand-in directory");
        let events = dir.join("events.jsonl");
        let passwords = dir.join("users.txt");
        let lines: String = users.iter().map(|(u, p)| format!("{u};{p}\n")).collect();
        std::fs::write(&passwords, lines).expect("stand-in users file");
        let watch = DirWatch::new(dir).expect("inotify watch on the stand-in directory");
        let stderr = File::create(dir.join("standin.err")).expect("stand-in stderr file");
        let answer = format!("{ANSWER_EXT}=answer");
        let noanswer = format!("{NOANSWER_EXT}=noanswer");
        let busy = format!("{BUSY_EXT}=busy");
        let drop = format!("{DROP_EXT}=drop");
        let mut cmd = Command::new(standin_bin());
        cmd.args(["--listen", "127.0.0.2:0", "--control", "127.0.0.1:0"])
            .arg("--events")
            .arg(&events)
            .args(["--mode", "dial", "--route", &answer, "--route", &noanswer])
            .args(["--route", &busy, "--route", &drop])
            .arg("--users")
            .arg(&passwords)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut proc = Proc::spawn("asterisk-standin", &mut cmd);
        let out = proc.child_mut().stdout.take().expect("piped stdout");
        let mut stdout = BufReader::new(out);
        let mut line = String::new();
        // Blocks until the line is printed or the process exits (EOF).
        let _ = stdout.read_line(&mut line);
        // "asterisk-standin listening sip=ADDR control=ADDR"
        let field = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| {
                    let err = std::fs::read_to_string(dir.join("standin.err")).unwrap_or_default();
                    panic!("stand-in did not start: stdout {line:?}, stderr {err}")
                })
        };
        StandIn {
            sip: field("sip="),
            control: field("control="),
            events,
            watch,
            proc,
            _stdout: stdout,
        }
    }

    /// Sends one control command and returns the JSON reply.
    pub fn control(&self, cmd: &str) -> Value {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("control client socket");
        sock.set_read_timeout(Some(CONTROL_WAIT))
            .expect("read timeout");
        sock.send_to(cmd.as_bytes(), self.control)
            .expect("send control command");
        let mut buf = vec![0u8; 65_536];
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no reply from the stand-in to {cmd:?}: {e}"));
        serde_json::from_slice(buf.get(..n).unwrap_or_default())
            .unwrap_or_else(|e| panic!("stand-in reply to {cmd:?} is not JSON: {e}"))
    }

    /// One counter of `stats`.
    pub fn stat(&self, key: &str) -> u64 {
        let stats = self.control("stats");
        stats
            .get(key)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no counter {key} in {stats}"))
    }

    /// Waits (at most `limit`) until counter `key` reaches `want`. The stand-in logs no event
    /// for every message (an ACK, say), so this re-reads `stats`, waking on any write to its
    /// event log and at least every 20 ms.
    pub fn wait_stat(&self, key: &str, want: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.stat(key);
            if got >= want {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                panic!("stand-in counter {key} is {got}, not {want}, after {limit:?}");
            }
            self.watch
                .wait((deadline - now).min(Duration::from_millis(20)));
        }
    }

    /// `silent on|off`: stop answering anything (a dead node), or answer again.
    pub fn silent(&self, on: bool) {
        let reply = self.control(if on { "silent on" } else { "silent off" });
        assert_eq!(reply["ok"], true, "silent: {reply}");
    }

    /// `mwi USER NEW`: an unsolicited message-summary NOTIFY to USER's registered Contact.
    pub fn mwi(&self, user: &str, new: u32) -> Value {
        self.control(&format!("mwi {user} {new}"))
    }

    /// `reg USER`: the binding the stand-in holds for USER (`Value::Null` if none).
    pub fn reg(&self, user: &str) -> Value {
        self.control(&format!("reg {user}"))
    }

    /// Every event logged so far.
    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (at most `limit`) until an event named `event` satisfying `pred` is logged and
    /// returns it. Wakes on every write to the log, so it returns as soon as the line lands.
    pub fn wait_event(&self, event: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let found = self
                .events()
                .into_iter()
                .find(|e| e.get("event").and_then(Value::as_str) == Some(event) && pred(e));
            if let Some(e) = found {
                return e;
            }
            let now = Instant::now();
            if now >= deadline {
                panic!("the stand-in logged no matching {event:?} event within {limit:?}");
            }
            self.watch.wait(deadline - now);
        }
    }

    /// Waits for the forwarded REGISTER of `user` to reach the stand-in.
    pub fn wait_registered(&self, user: &str) -> Value {
        self.wait_event("register", Duration::from_secs(15), |e| {
            e.get("user").and_then(Value::as_str) == Some(user)
        })
    }

    /// A one-line summary for failure reports (never panics).
    pub fn describe(&mut self) -> String {
        if let Some(status) = self.proc.exited() {
            return format!("stand-in exited early: {status}");
        }
        let sock = match UdpSocket::bind("127.0.0.1:0") {
            Ok(s) => s,
            Err(e) => return format!("stand-in stats unavailable: {e}"),
        };
        let _ = sock.set_read_timeout(Some(CONTROL_WAIT));
        let mut buf = vec![0u8; 65_536];
        match sock
            .send_to(b"stats", self.control)
            .and_then(|_| sock.recv(&mut buf))
        {
            Ok(n) => format!(
                "stand-in stats: {}",
                String::from_utf8_lossy(buf.get(..n).unwrap_or_default())
            ),
            Err(e) => format!("stand-in stats unavailable: {e}"),
        }
    }
}
