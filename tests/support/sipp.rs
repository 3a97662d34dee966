//! Running sipp 3.6 with the project's scenarios (`sipp/*.xml`): injection CSVs in the phone
//! format, one-shot runs whose exit code is the verdict (0 = every call succeeded), and
//! long-lived callee phones (register, then answer with an out-of-call scenario).
//!
//! Every run writes `sipp-NAME.out/.err`, `NAME-errors.log` and `NAME-messages.log` into the
//! test's directory; the scene prints them when a test fails.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use super::procs::Proc;
use super::proxy::{free_udp_port, DOMAIN};

/// sipp's own global timeout for one-shot runs (`-timeout N -timeout_error`), in seconds.
pub const SIPP_TIMEOUT_SECS: u64 = 90;

/// A scenario file of the project's sipp kit.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sipp")
        .join(name)
}

/// One phone line of an injection CSV: `user;domain;password;target;[authentication ...]`.
pub struct CsvPhone<'a> {
    pub user: &'a str,
    pub password: &'a str,
    pub target: &'a str,
}

/// Writes a SEQUENTIAL injection CSV into `dir` and returns its path.
pub fn write_csv(dir: &Path, name: &str, phones: &[CsvPhone]) -> PathBuf {
    let mut text = String::from("SEQUENTIAL\n");
    for p in phones {
        text.push_str(&format!(
            "{u};{DOMAIN};{pw};{t};[authentication username={u} password={pw}]\n",
            u = p.user,
            pw = p.password,
            t = p.target
        ));
    }
    let path = dir.join(format!("{name}.csv"));
    std::fs::write(&path, text).expect("write the injection CSV");
    path
}

/// The injection CSV of registering phones `users` (name, password), none calling anyone.
pub fn register_csv(dir: &Path, name: &str, users: &[(&str, &str)]) -> PathBuf {
    let phones: Vec<CsvPhone> = users
        .iter()
        .map(|(user, password)| CsvPhone {
            user,
            password,
            target: "-",
        })
        .collect();
    write_csv(dir, name, &phones)
}

/// One sipp invocation: target, scenario, local address and extra arguments.
pub struct SippCmd {
    pub name: String,
    pub remote: SocketAddr,
    pub scenario: &'static str,
    pub csv: Option<PathBuf>,
    pub local_ip: Ipv4Addr,
    pub extra: Vec<String>,
    /// Log every message to `NAME-messages.log` (off for bulk runs: 40,000 messages).
    pub trace_msg: bool,
}

impl SippCmd {
    pub fn new(name: &str, remote: SocketAddr, scenario: &'static str) -> SippCmd {
        SippCmd {
            name: name.to_owned(),
            remote,
            scenario,
            csv: None,
            local_ip: Ipv4Addr::LOCALHOST,
            extra: Vec::new(),
            trace_msg: true,
        }
    }

    /// No per-message log (errors are still logged).
    pub fn quiet(mut self) -> SippCmd {
        self.trace_msg = false;
        self
    }

    pub fn csv(mut self, csv: PathBuf) -> SippCmd {
        self.csv = Some(csv);
        self
    }

    pub fn local_ip(mut self, ip: Ipv4Addr) -> SippCmd {
        self.local_ip = ip;
        self
    }

    pub fn args(mut self, args: &[&str]) -> SippCmd {
        self.extra.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// The command. The local SIP port is a free one picked here: sipp's `-p 0` would mean
    /// "5060, or the next free one", and 5060 belongs to other processes. sipp finds free
    /// media (from 6000) and control (from 8888) ports by itself.
    fn command(&self, dir: &Path) -> Command {
        let port = free_udp_port(self.local_ip);
        let mut cmd = Command::new("sipp");
        cmd.current_dir(dir)
            .arg(self.remote.to_string())
            .arg("-sf")
            .arg(scenario(self.scenario));
        if let Some(csv) = &self.csv {
            cmd.arg("-inf").arg(csv);
        }
        cmd.arg("-i")
            .arg(self.local_ip.to_string())
            // -nr: no sipp retransmissions. sipp has no transaction layer: an answer to its
            // retransmission that differs from the first (a stateless challenge carries a new
            // nonce) or comes late (during a <pause/>) is an unexpected message that aborts
            // the call. Loopback loses nothing, so retransmissions only add noise here.
            .args([
                "-p",
                &port.to_string(),
                "-nr",
                "-nostdin",
                "-trace_err",
                "-error_file",
            ])
            .arg(dir.join(format!("{}-errors.log", self.name)));
        if self.trace_msg {
            cmd.args(["-trace_msg", "-message_file"])
                .arg(dir.join(format!("{}-messages.log", self.name)));
        }
        cmd.args(&self.extra)
            .stdin(Stdio::null())
            .stdout(File::create(dir.join(format!("sipp-{}.out", self.name))).expect("sipp stdout"))
            .stderr(
                File::create(dir.join(format!("sipp-{}.err", self.name))).expect("sipp stderr"),
            );
        cmd
    }

    /// Runs to completion (bounded by sipp's `-timeout`, and by a hard limit just past it)
    /// and returns sipp's exit status (`None` if it had to be killed).
    pub fn run(self, dir: &Path) -> Option<ExitStatus> {
        let mut cmd = self.command(dir);
        cmd.args(["-timeout", &SIPP_TIMEOUT_SECS.to_string(), "-timeout_error"]);
        let mut proc = Proc::spawn(&format!("sipp {}", self.name), &mut cmd);
        proc.wait_exit(Duration::from_secs(SIPP_TIMEOUT_SECS + 15))
    }

    /// Starts a long-lived sipp (a callee phone); it is killed by PID when the guard drops.
    pub fn spawn(self, dir: &Path) -> Proc {
        let mut cmd = self.command(dir);
        Proc::spawn(&format!("sipp {}", self.name), &mut cmd)
    }
}
