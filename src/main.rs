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
        /// Take the listen addresses over from the sipfront running on them: bind alongside
        /// it, then send it SIGTERM so it drains and exits (zero-downtime upgrade, see
        /// docs/operations.md). Without it, a listen address in use stops the start.
        #[arg(long)]
        takeover: bool,
    },
    /// Validate a configuration file and exit (non-zero on error, naming the key).
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run on 127.0.0.1:5060 with an embedded SQLite database of sample users (1001, 1002,
    /// 1003 with passwords secret1001, ...) and a built-in answering node standing in for
    /// Asterisk on 127.0.0.2:5080 (extension 600 answers); the admin API on 127.0.0.1:8080.
    Demo {
        /// Keep the demo's databases in DIR (default: a temporary directory, removed at exit).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The SIP address (IP:PORT).
        #[arg(long, default_value = "127.0.0.1:5060")]
        sip: std::net::SocketAddr,
        /// The admin API address (IP:PORT).
        #[arg(long, default_value = "127.0.0.1:8080")]
        admin: std::net::SocketAddr,
        /// Where the answering node (the demo's Asterisk) listens (IP:PORT).
        #[arg(long, default_value = "127.0.0.2:5080")]
        asterisk: std::net::SocketAddr,
    },
    /// Talk to a running proxy through its admin API ([admin] enabled = true).
    Ctl {
        /// The admin API address, IP:PORT (default: [admin] listen of the config file, else
        /// 127.0.0.1:8080).
        #[arg(long)]
        admin: Option<String>,
        /// The file holding the admin API's bearer token (default: [admin] token_file of
        /// the config file).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The proxy's config file, for [admin] listen and token_file (default:
        /// /etc/sipfront/sipfront.toml when it exists and is readable).
        #[arg(long, short)]
        config: Option<PathBuf>,
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
    /// The cluster ([cluster]): this node, Redis, the live nodes, sync counters.
    Cluster,
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

/// The config file `ctl` looks at when none is given.
const DEFAULT_CONFIG: &str = "/etc/sipfront/sipfront.toml";

/// Where `ctl` connects and which token it sends: flags first, then the config file's
/// `[admin]` (the one given, or the default one when readable), then the defaults.
fn ctl_target(
    admin: Option<String>,
    token_file: Option<PathBuf>,
    config: Option<PathBuf>,
) -> Result<(String, Option<String>), String> {
    let cfg = match &config {
        Some(path) => Some(Config::load(path).map_err(|e| e.to_string())?),
        // The default file may be unreadable for this user or absent: then it is not used.
        None => Config::load(std::path::Path::new(DEFAULT_CONFIG)).ok(),
    };
    let addr = admin.unwrap_or_else(|| match &cfg {
        Some(c) => {
            let mut a = c.admin.listen;
            if a.ip().is_unspecified() {
                a.set_ip(std::net::IpAddr::from([127, 0, 0, 1]));
            }
            a.to_string()
        }
        None => sipfront::admin::DEFAULT_LISTEN.to_owned(),
    });
    let file = token_file.or_else(|| cfg.and_then(|c| c.admin.token_file));
    let token = file
        .map(|f| sipfront::admin::token::read_token_file(&f))
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok((addr, token))
}

fn ctl(
    (admin, token_file, config): (Option<String>, Option<PathBuf>, Option<PathBuf>),
    timeout: u64,
    command: CtlCommand,
) -> ExitCode {
    use sipfront::admin::ctl::{run, Client, Command as C, CtlError};
    let cmd = match command {
        CtlCommand::Stats => C::Stats,
        CtlCommand::Regs { all: true, .. } => C::RegsAll,
        CtlCommand::Regs { user, .. } => C::Regs { user },
        CtlCommand::Unregister { user, uri } => C::Unregister { user, uri },
        CtlCommand::Reload => C::Reload,
        CtlCommand::Flush { user } => C::Flush { user },
        CtlCommand::Bans => C::Bans,
        CtlCommand::Unban { ip } => C::Unban { ip },
        CtlCommand::Cluster => C::Cluster,
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
    let (addr, token) = match ctl_target(admin, token_file, config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sipfront ctl: {e}");
            return ExitCode::from(2);
        }
    };
    let timeout = std::time::Duration::from_secs(timeout.max(1));
    let result = Client::new(&addr, timeout, token).and_then(|client| run(&client, &cmd));
    match result {
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

fn run(cfg: &Config, takeover: bool) -> ExitCode {
    // Before anything binds: a listen address held by another process stops the start,
    // unless this is a deliberate handover from another sipfront.
    let listen: Vec<_> = cfg
        .listen_addrs()
        .map(|(addr, transport)| {
            let proto = match transport {
                sipfront::sip::Transport::Udp => sipfront::instance::Proto::Udp,
                _ => sipfront::instance::Proto::Tcp,
            };
            (addr, proto)
        })
        .collect();
    let old = match sipfront::instance::probe(&listen)
        .and_then(|busy| sipfront::instance::check(busy, takeover))
    {
        Ok(old) => old,
        Err(e) => {
            eprintln!("sipfront: {e}");
            return ExitCode::FAILURE;
        }
    };
    sipfront::logging::init(&cfg.log.level, cfg.log.format);
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
    // Serving now: the old proxy may drain and go.
    for holder in &old {
        tracing::info!(old = %holder, "takeover: asking the old proxy to drain and exit");
    }
    for (holder, e) in sipfront::instance::signal_holders(&old) {
        tracing::error!(old = %holder, error = %e, "takeover: cannot signal the old proxy");
    }
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

/// `sipfront demo`: prepare the directory and database, start the answering node, print the
/// banner, run until a signal, then clean up.
fn demo(dir: Option<&std::path::Path>, addrs: sipfront::demo::DemoAddrs) -> ExitCode {
    use sipfront::demo;
    let (dir, temporary) = match demo::directory(dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("sipfront: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cleanup = |dir: &std::path::Path| {
        if temporary {
            let _ = std::fs::remove_dir_all(dir);
        }
    };
    let cfg = match demo::prepare(&dir, addrs) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("sipfront: {e}");
            cleanup(&dir);
            return ExitCode::FAILURE;
        }
    };
    let node = match demo::node::AnsweringNode::start(addrs.asterisk) {
        Ok(n) => Some(n),
        Err(e) => {
            eprintln!(
                "sipfront demo: cannot start the answering node on {}: {e}",
                addrs.asterisk
            );
            None
        }
    };
    print!("{}", demo::banner(&addrs, &dir, temporary, node.is_some()));
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let code = run(&cfg, false);
    drop(node);
    cleanup(&dir);
    code
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, takeover } => match Config::load(&config) {
            Ok(cfg) => run(&cfg, takeover),
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
            token_file,
            config,
            timeout,
            command,
        } => ctl((admin, token_file, config), timeout, command),
        Command::Demo {
            dir,
            sip,
            admin,
            asterisk,
        } => demo(
            dir.as_deref(),
            sipfront::demo::DemoAddrs {
                sip,
                admin,
                asterisk,
            },
        ),
    }
}
