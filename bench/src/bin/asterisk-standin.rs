//! `asterisk-standin`: the Asterisk test double (see `docs/standin.md`).
//!
//! Parses the command line into a [`Config`], prints one line
//! `asterisk-standin listening sip=ADDR control=ADDR` once the sockets are bound (tests wait for
//! it to learn ephemeral ports), then runs until the `quit` control command or a signal.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sipfront_bench::standin::config::{
    default_listen, load_users, DEFAULT_EXPIRES, DEFAULT_MAX_CALL_MS, DEFAULT_REALM, DEFAULT_T1_MS,
    DEFAULT_T2_MS,
};
use sipfront_bench::standin::{run, Config, Mode};

/// Asterisk stand-in: registrar + IVR/Dial B2BUA test double for sipfront.
#[derive(Debug, Parser)]
#[command(name = "asterisk-standin", version)]
struct Args {
    /// SIP UDP address to listen on (port 0 = any free port).
    #[arg(long, default_value_t = default_listen())]
    listen: SocketAddr,
    /// UDP control address (text commands: ping, stats, regs, reg USER, reset, route EXT=MODE,
    /// mode MODE, quit; JSON replies).
    #[arg(long)]
    control: Option<SocketAddr>,
    /// Mode for extensions without a --route: dial, answer, noanswer, busy, drop (no response).
    #[arg(long, default_value = "dial")]
    mode: String,
    /// Per-extension mode, EXT=MODE (repeatable), e.g. --route 600=answer.
    #[arg(long = "route")]
    routes: Vec<String>,
    /// Shorthand for --mode noanswer (100 and 180 only; tests the proxy's timeout path).
    #[arg(long)]
    no_answer: bool,
    /// Answer mode: delay between 180 and 200.
    #[arg(long, default_value_t = 0)]
    answer_delay_ms: u64,
    /// Answer mode: send BYE this long after the ACK (0 = wait for the caller's BYE).
    #[arg(long, default_value_t = 0)]
    hangup_after_ms: u64,
    /// Challenge REGISTER with 401 (digest MD5) and check the password.
    #[arg(long)]
    challenge: bool,
    /// Challenge new INVITEs and MESSAGEs with 407 (to check phone scenarios without a proxy).
    #[arg(long)]
    challenge_calls: bool,
    /// Realm of the challenges.
    #[arg(long, default_value = DEFAULT_REALM)]
    realm: String,
    /// Password for every user not in --users.
    #[arg(long)]
    password: Option<String>,
    /// Users file: sipp injection CSV (user;domain;password) or user;password lines.
    #[arg(long)]
    users: Option<PathBuf>,
    /// Expires granted when a REGISTER has none.
    #[arg(long, default_value_t = DEFAULT_EXPIRES)]
    default_expires: u32,
    /// End calls still open after this long (480 or BYE) so the call table stays bounded (0 = never).
    #[arg(long, default_value_t = DEFAULT_MAX_CALL_MS)]
    max_call_ms: u64,
    /// RFC 3261 T1 (ms) for our retransmissions.
    #[arg(long, default_value_t = DEFAULT_T1_MS)]
    t1_ms: u64,
    /// RFC 3261 T2 (ms).
    #[arg(long, default_value_t = DEFAULT_T2_MS)]
    t2_ms: u64,
    /// Append one JSON line per event (register, unregister, invite, bye, cancel, message, options).
    #[arg(long)]
    events: Option<PathBuf>,
}

fn config(a: Args) -> Result<Config, Box<dyn std::error::Error>> {
    let mut cfg = Config {
        default_mode: if a.no_answer {
            Mode::NoAnswer
        } else {
            a.mode.parse()?
        },
        answer_delay_ms: a.answer_delay_ms,
        hangup_after_ms: a.hangup_after_ms,
        challenge: a.challenge,
        challenge_calls: a.challenge_calls,
        realm: a.realm,
        default_password: a.password,
        default_expires: a.default_expires,
        max_call_ms: a.max_call_ms,
        t1_ms: a.t1_ms,
        t2_ms: a.t2_ms,
        events: a.events,
        ..Config::default()
    };
    for r in &a.routes {
        let (ext, mode) = Config::parse_route(r)?;
        cfg.routes.insert(ext, mode);
    }
    if let Some(path) = &a.users {
        cfg.passwords = load_users(path)?;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (listen, control) = (args.listen, args.control);
    let cfg = match config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("asterisk-standin: {e}");
            return ExitCode::from(2);
        }
    };
    let ready = |sip: SocketAddr, ctl: Option<SocketAddr>| {
        let ctl = ctl.map_or_else(|| "none".to_owned(), |c| c.to_string());
        println!("asterisk-standin listening sip={sip} control={ctl}");
        let _ = std::io::stdout().flush();
    };
    match run(cfg, listen, control, ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("asterisk-standin: {e}");
            ExitCode::FAILURE
        }
    }
}
