//! Harness of the end-to-end tests (`tests/e2e_sipp.rs`, `tests/e2e_registrar.rs`,
//! `tests/e2e_auth.rs`): the REAL `sipfront` and `asterisk-standin` binaries and sipp, on
//! loopback with ephemeral ports; optionally a throw-away MariaDB database for the
//! credentials ([`mariadb`]), a phone answering SHA-256/SHA-512-256 challenges ([`digest`])
//! and a network namespace for a real client such as baresip ([`netns`]).
//!
//! A [`Scene`] is one test's world: a temporary directory holding the credentials database,
//! the proxy config and every log; the stand-in (Asterisk) on 127.0.0.2 with a control port
//! on 127.0.0.1; sipfront on a free 127.0.0.1 port with 2 workers, trusting any port of
//! 127.0.0.2 (`match = "ip"`); and the long-lived sipp phones a test registers. Data flows
//! phone (sipp or [`phone::Phone`]) → sipfront → stand-in and back; the tests judge by sipp's
//! exit code, by the stand-in's counters and event log, and by the raw messages they read.
//!
//! Every child is killed by its PID and reaped when the scene drops, also when a test fails;
//! a failing test first prints the proxy's stderr, the stand-in's counters and every sipp
//! output and error file. No wait sleeps: sockets have read timeouts, child exits and event
//! log writes are awaited with poll(2) (pidfd, inotify).

// Each test binary uses its own part of the harness.
#![allow(dead_code)]

pub mod admin;
pub mod digest;
pub mod flows;
pub mod mariadb;
pub mod netns;
pub mod phone;
pub mod procs;
pub mod proxy;
pub mod sipp;
pub mod standin;
pub mod stream;
mod sys;
pub mod tls;
pub mod ws;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use procs::Proc;
use proxy::{Proxy, ProxyOptions, Tune};
use sipp::SippCmd;
use standin::StandIn;

/// The users in every scene's credentials table: (name, secret).
pub const USERS: [(&str, &str); 3] = [("1001", "pw1001"), ("2001", "pw2001"), ("2002", "pw2002")];

/// The password of one of [`USERS`].
pub fn password(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(u, _)| *u == user)
        .map(|(_, p)| *p)
        .unwrap_or_else(|| panic!("{user} is not one of the seeded users"))
}

/// How a scene is built.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Start the stand-in and make it the first `[asterisk] nodes` entry.
    pub standin: bool,
    /// Further stand-ins (nodes 2, 3, ... after the first, before `extra_nodes`), each in
    /// its own directory `standin2`, `standin3`, ...
    pub extra_standins: usize,
    /// Further nodes (sockets the test owns).
    pub extra_nodes: Vec<SocketAddr>,
    /// Extra stand-in options (e.g. `--challenge`).
    pub standin_args: Vec<&'static str>,
    pub t1_ms: Option<u64>,
    pub min_expires: Option<u32>,
    pub max_expires: Option<u32>,
    pub keep_plain: bool,
    /// Further proxy settings (credentials URL, algorithms, persistence, guard ...).
    pub tune: Tune,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            standin: true,
            extra_standins: 0,
            extra_nodes: Vec::new(),
            standin_args: Vec::new(),
            t1_ms: None,
            min_expires: None,
            max_expires: None,
            keep_plain: false,
            tune: Tune::default(),
        }
    }
}

/// One test's processes and files (fields drop in order: phones, proxy, stand-in, files).
pub struct Scene {
    phones: Vec<Proc>,
    pub proxy: Proxy,
    standin: Option<StandIn>,
    more_standins: Vec<StandIn>,
    /// Wakes on writes to the logs in `dir` (sipp's message logs).
    watch: sys::DirWatch,
    dir: tempfile::TempDir,
}

impl Scene {
    pub fn start(setup: Setup) -> Scene {
        let dir = tempfile::Builder::new()
            .prefix("sipfront-e2e-")
            .tempdir()
            .expect("temporary directory");
        let standin = setup
            .standin
            .then(|| StandIn::start(&dir.path().join("standin"), &USERS, &setup.standin_args));
        let more_standins: Vec<StandIn> = (2..2 + setup.extra_standins)
            .map(|i| {
                let d = dir.path().join(format!("standin{i}"));
                StandIn::start(&d, &USERS, &setup.standin_args)
            })
            .collect();
        let mut nodes: Vec<SocketAddr> = standin.iter().map(|s| s.sip).collect();
        nodes.extend(more_standins.iter().map(|s| s.sip));
        nodes.extend(&setup.extra_nodes);
        let opts = ProxyOptions {
            nodes,
            t1_ms: setup.t1_ms,
            min_expires: setup.min_expires,
            max_expires: setup.max_expires,
            keep_plain: setup.keep_plain,
            tune: setup.tune,
            tls_addr: None,
            ws_addrs: None,
        };
        let watch = sys::DirWatch::new(dir.path()).expect("inotify watch on the test directory");
        let proxy = Proxy::start(dir.path(), &USERS, &opts);
        Scene {
            phones: Vec::new(),
            proxy,
            standin,
            more_standins,
            watch,
            dir,
        }
    }

    /// `kill -9` the proxy and start it again on the same address with the same config.
    pub fn kill9_and_restart_proxy(&mut self) {
        self.proxy.kill9_and_restart(self.dir.path());
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn standin(&self) -> &StandIn {
        self.standin.as_ref().expect("this scene has no stand-in")
    }

    /// Stand-in number `n`: 1 is [`Scene::standin`], 2.. the [`Setup::extra_standins`].
    pub fn standin_n(&self, n: usize) -> &StandIn {
        match n {
            1 => self.standin(),
            _ => self
                .more_standins
                .get(n.wrapping_sub(2))
                .unwrap_or_else(|| panic!("this scene has no stand-in {n}")),
        }
    }

    /// Runs sipp to completion and asserts exit code 0 (every call succeeded).
    pub fn sipp_ok(&self, cmd: SippCmd) {
        let name = cmd.name.clone();
        let status = cmd.run(self.dir());
        assert!(
            status.is_some_and(|s| s.success()),
            "sipp {name} failed: {}",
            status.map_or("killed after its timeout".to_owned(), |s| s.to_string())
        );
    }

    /// Registers `user` with a sipp that stays up and answers with `ooc_scenario`
    /// (`uas_phone_answer.xml` or `uas_phone_message.xml`), and waits until the stand-in
    /// has received the forwarded REGISTER. Returns that event.
    pub fn register_phone(&mut self, user: &str, ooc_scenario: &str) -> serde_json::Value {
        let csv = sipp::write_csv(
            self.dir(),
            &format!("phone-{user}"),
            &[sipp::CsvPhone {
                user,
                password: password(user),
                target: "-",
            }],
        );
        let ooc = sipp::scenario(ooc_scenario);
        let ooc = ooc.to_str().expect("UTF-8 scenario path");
        let phone = SippCmd::new(
            &format!("phone-{user}"),
            self.proxy.addr,
            "uac_register_auth.xml",
        )
        .csv(csv)
        .args(&["-oocsf", ooc, "-auth_uri", proxy::DOMAIN])
        .args(&["-m", "1", "-d", "600000", "-timeout", "600"])
        .spawn(self.dir());
        self.phones.push(phone);
        self.standin().wait_registered(user)
    }

    /// Waits (at most `limit`) until the sipp message log of run `name` (see
    /// [`SippCmd`]) contains `needle`, e.g. a callee phone receiving its BYE.
    pub fn wait_sipp_log(&self, name: &str, needle: &str, limit: Duration) {
        self.wait_file(&format!("{name}-messages.log"), needle, limit);
    }

    /// Waits (at most `limit`) until file `name` of the scene's directory (e.g.
    /// `sipfront.err`, the proxy's log) contains `needle`.
    pub fn wait_file(&self, name: &str, needle: &str, limit: Duration) {
        self.wait_file_for(name, &format!("{needle:?}"), limit, |t| t.contains(needle));
    }

    /// Waits (at most `limit`) until the text of file `name` of the scene's directory
    /// satisfies `pred`; `what` names it in the panic message.
    pub fn wait_file_for(
        &self,
        name: &str,
        what: &str,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) {
        let path = self.dir().join(name);
        let deadline = Instant::now() + limit;
        loop {
            if std::fs::read_to_string(&path).is_ok_and(|t| pred(&t)) {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                panic!("{} has no {what} after {limit:?}", path.display());
            }
            self.watch.wait(deadline - now);
        }
    }

    /// Everything useful to diagnose a failure (never panics).
    fn report(&mut self) -> String {
        let mut out = format!(
            "\n==== e2e failure report ({})\nsipfront on {}",
            self.dir().display(),
            self.proxy.addr
        );
        if let Some(status) = self.proxy.proc.exited() {
            out.push_str(&format!(" EXITED: {status}"));
        }
        out.push('\n');
        for s in self.standin.iter_mut().chain(self.more_standins.iter_mut()) {
            out.push_str(&s.describe());
            out.push('\n');
        }
        for p in &mut self.phones {
            if let Some(status) = p.exited() {
                out.push_str(&format!("{} exited early: {status}\n", p.name));
            }
        }
        let mut files = Vec::new();
        let mut dirs = vec![self.dir.path().to_owned(), self.dir.path().join("standin")];
        dirs.extend(
            (2..2 + self.more_standins.len()).map(|i| self.dir.path().join(format!("standin{i}"))),
        );
        for d in dirs {
            if let Ok(rd) = std::fs::read_dir(&d) {
                files.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        }
        files.sort();
        for f in files {
            let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !["toml", "out", "err", "log", "jsonl"].contains(&ext) {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines.len().saturating_sub(80);
            out.push_str(&format!(
                "---- {} ({} lines{})\n",
                f.display(),
                lines.len(),
                if tail > 0 { ", last 80" } else { "" }
            ));
            for l in lines.iter().skip(tail) {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.report());
            if std::env::var_os("SIPFRONT_E2E_KEEP").is_some() {
                self.dir.disable_cleanup(true);
                eprintln!("kept {}", self.dir().display());
            }
        }
    }
}
