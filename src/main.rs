//! The `sipfront` binary: `run` the proxy from a config file, `check-config`, `demo`, or
//! `ctl` (talk to a running proxy's admin API, see docs/operations.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mimalloc::MiMalloc;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use sipfront::config::Config;
use sipfront::server::{ReloadError, Server};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
#[command(
    name = "sipfront",
    version,
    about = "SIP edge proxy in front of Asterisk"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// The TOML configuration file (see docs/configuration.md).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and exit (non-zero on error, naming the key).
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run on 127.0.0.1:5060 with an embedded SQLite database of sample users (1001, 1002,
    /// 1003 with passwords secret1001, ...), created in DIR if missing; Asterisk is expected
    /// on 127.0.0.2:5080.
    Demo {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Talk to a running proxy through its admin API ([admin] enabled = true).
    Ctl {
        /// The admin API address ([admin] listen).
        #[arg(long, default_value = sipfront::admin::DEFAULT_LISTEN)]
        admin: String,
        /// Seconds to wait for the answer (a credential reload can take a while).
        #[arg(long, default_value_t = 35)]
        timeout: u64,
        #[command(subcommand)]
        command: CtlCommand,
    },
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Counters, gauges and latency percentiles.
    Stats,
    /// Registration counts, one user's bindings, or (--all) every registration.
    Regs {
        user: Option<String>,
        /// List every registered user's bindings (fetched page by page).
        #[arg(long, conflicts_with = "user")]
        all: bool,
    },
    /// Remove one binding (URI given) or all bindings of a user.
    Unregister { user: String, uri: Option<String> },
    /// Re-read the config file: apply what can change live, list what needs a restart, and
    /// reload every credential from the database (like SIGHUP).
    Reload,
    /// Drop one user from the credential cache (the next request looks it up again).
    Flush { user: String },
    /// List the banned source addresses.
    Bans,
    /// Lift the ban of one address.
    Unban { ip: String },
    /// The Asterisk nodes: list their state (default), drain or undrain one.
    Asterisk {
        #[command(subcommand)]
        action: Option<AsteriskAction>,
    },
}

#[derive(Subcommand)]
enum AsteriskAction {
    /// Every node: up/down, drained, busy, ping and answer latency, transitions, replays.
    List,
    /// No new calls or subscriptions for NODE (IP:PORT as in [asterisk] nodes); its
    /// dialogs, pings and forwarded REGISTERs go on.
    Drain { node: String },
    /// New calls for NODE again.
    Undrain { node: String },
}

fn ctl(admin: &str, timeout: u64, command: CtlCommand) -> ExitCode {
    use sipfront::admin::ctl::{run, Command as C, CtlError};
    let cmd = match command {
        CtlCommand::Stats => C::Stats,
        CtlCommand::Regs { all: true, .. } => C::RegsAll,
        CtlCommand::Regs { user, .. } => C::Regs { user },
        CtlCommand::Unregister { user, uri } => C::Unregister { user, uri },
        CtlCommand::Reload => C::Reload,
        CtlCommand::Flush { user } => C::Flush { user },
        CtlCommand::Bans => C::Bans,
        CtlCommand::Unban { ip } => C::Unban { ip },
        CtlCommand::Asterisk { action } => match action {
            None | Some(AsteriskAction::List) => C::Asterisk,
            Some(AsteriskAction::Drain { node }) => C::Drain {
                node,
                drained: true,
            },
            Some(AsteriskAction::Undrain { node }) => C::Drain {
                node,
                drained: false,
            },
        },
    };
    match run(admin, &cmd, std::time::Duration::from_secs(timeout.max(1))) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sipfront ctl: {e}");
            match e {
                CtlError::Unreachable { .. } | CtlError::BadAddress(_) => ExitCode::from(3),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn run(cfg: &Config) -> ExitCode {
    sipfront::logging::init(&cfg.log.level);
    let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sipfront: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(cfg, now_ms()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sipfront: {e}");
            return ExitCode::FAILURE;
        }
    };
    for sig in signals.forever() {
        match sig {
            SIGHUP => {
                tracing::info!("SIGHUP: reloading the configuration and credentials");
                match server.reload() {
                    Ok(_) => {}
                    Err(ReloadError::NoConfigFile) => server.refresh_credentials(),
                    Err(e) => tracing::error!(error = %e, "reload refused; nothing changed"),
                }
            }
            _ => break,
        }
    }
    let drain_ms = server.config().timers.drain_ms;
    let drain = std::time::Duration::from_millis(drain_ms);
    tracing::info!(
        max_ms = drain_ms,
        "shutting down: draining transactions in flight"
    );
    server.drain(drain);
    match server.shutdown() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sipfront: shutdown: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => match Config::load(&config) {
            Ok(cfg) => run(&cfg),
            Err(e) => {
                eprintln!("sipfront: {e}");
                ExitCode::from(2)
            }
        },
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: OK", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sipfront: {e}");
                ExitCode::from(2)
            }
        },
        Command::Ctl {
            admin,
            timeout,
            command,
        } => ctl(&admin, timeout, command),
        Command::Demo { dir } => match sipfront::demo::prepare(&dir) {
            Ok(cfg) => {
                println!("sipfront demo: users 1001/secret1001, 1002/secret1002, 1003/secret1003, realm sipfront.demo, listening on 127.0.0.1:5060, Asterisk expected at 127.0.0.2:5080");
                run(&cfg)
            }
            Err(e) => {
                eprintln!("sipfront: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
