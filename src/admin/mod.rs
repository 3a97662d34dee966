//! The admin HTTP server: Prometheus `/metrics` and the JSON API `sipfront ctl` talks to.
//!
//! A std-only HTTP/1.1 server ([`http`]) on its own thread, loopback by default: it accepts
//! one connection at a time, reads one bounded request (timeouts on both directions), routes
//! it ([`api`]) and closes. Nothing it does touches a worker: numbers come from the workers'
//! published snapshots ([`crate::metrics::MetricsRegistry`]) and the shared layers' own
//! counters ([`report`]); actions go to the shared layers (registrar, credential cache,
//! refresher, ban list) exactly like the workers use them.
//!
//! Endpoints: `GET /metrics`, `GET /v1/stats`, `GET|DELETE /v1/registrations`,
//! `POST /v1/credentials/reload`, `DELETE /v1/credentials`, `GET|DELETE /v1/bans`,
//! `GET /v1/asterisk`, `POST /v1/asterisk/drain|undrain`, `GET /healthz` (see
//! `docs/operations.md`). The client side of `sipfront ctl` is [`ctl`].

//! The admin HTTP server: Prometheus `/metrics` and the JSON API `sipfront ctl` talks to.
//!
//! HTTP is `tiny_http`'s, loopback by default: its own threads read each connection's
//! request head (a client that stalls holds only its own connection's thread; TCP
//! keepalive drops peers that vanished), and one admin thread takes complete requests one
//! at a time, refuses oversized ones (target or body over `max_request_bytes`: 413),
//! checks the bearer token when
//! `[admin] token_file` is set ([`token`]), converted to a [`message::Request`], routed
//! ([`api`]) and answered. Nothing it does touches a worker: numbers come from the workers'
//! published snapshots ([`crate::metrics::MetricsRegistry`]) and the shared layers' own
//! counters ([`report`]); actions go to the shared layers (registrar, credential cache,
//! refresher, ban list) exactly like the workers use them.
//!
//! Endpoints: `GET /metrics`, `GET /v1/stats`, `GET|DELETE /v1/registrations`,
//! `POST /v1/credentials/reload`, `POST /v1/reload`, `DELETE /v1/credentials`,
//! `GET|DELETE /v1/bans`, `GET /healthz` (see `docs/operations.md`); with a token, every
//! one but `/healthz` answers 401 without it. The client side of `sipfront ctl` is [`ctl`].

pub mod api;
mod asterisk;
pub mod ctl;
pub mod message;
pub mod prometheus;
pub mod report;
pub mod token;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::asterisk::{NodeView, RegFwdStats};
use crate::db::refresh::RefreshStatus;
use crate::db::{CredentialCache, LookupPool, RefreshError, RefreshStats};
use crate::guard::GuardStats;
use crate::metrics::MetricsRegistry;
use crate::registrar::Registrar;
use crate::transport::WorkerCounters;

use message::{Method, Request, Response};
pub use report::{ClusterNode, ClusterReport, HepReport};
pub use token::{Token, TokenError};

/// `[admin]`: where the admin API listens, and who may use it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve the admin API (off by default: `sipfront ctl` needs it on).
    pub enabled: bool,
    /// Address of the admin API.
    pub listen: SocketAddr,
    /// A file holding the bearer token every request but `/healthz` must carry; required
    /// when `listen` is not a loopback address.
    pub token_file: Option<PathBuf>,
    /// Largest request target and body accepted.
    pub max_request_bytes: usize,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_MAX_REQUEST_BYTES: usize = 16 * 1024;

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token_file: None,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

/// An invalid `[admin]` key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config key `admin.token_file`: required because `admin.listen` ({0}) is not a loopback address (expected a file holding a random token, e.g. `openssl rand -hex 32 > /etc/sipfront/admin.token`)")]
    TokenRequired(IpAddr),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("config key `admin.max_request_bytes`: must be between 1024 and 1048576")]
    MaxRequestBytes,
}

impl AdminConfig {
    /// Check the keys; a `token_file` is read (it must hold a usable token).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.token_file {
            Some(path) => {
                Token::load(path)?;
            }
            None if !self.listen.ip().is_loopback() => {
                return Err(ConfigError::TokenRequired(self.listen.ip()));
            }
            None => {}
        }
        if !(1024..=1024 * 1024).contains(&self.max_request_bytes) {
            return Err(ConfigError::MaxRequestBytes);
        }
        Ok(())
    }
}

/// Why the admin server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin API on {addr}: {reason}")]
    Http {
        addr: SocketAddr,
        reason: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("cannot start the admin thread: {0}")]
    Thread(std::io::Error),
}

/// Failed-auth bans (implemented by the guard module; the admin only lists and lifts).
pub trait BanList: Send + Sync {
    /// Active bans: address, banned until (UNIX ms), reason.
    fn bans(&self) -> Vec<(IpAddr, u64, String)>;
    /// Lift the ban of `ip`; whether there was one.
    fn unban(&self, ip: IpAddr) -> bool;
    /// The guard's own counters, when the ban list is the guard.
    fn guard_stats(&self) -> Option<GuardStats> {
        None
    }
}

/// Reloading credentials from the database.
pub trait CredentialReload: Send + Sync {
    fn reload(&self, timeout: Duration) -> Result<RefreshStats, RefreshError>;
    fn status(&self) -> &RefreshStatus;
}

/// Reloading the configuration file (`POST /v1/reload`).
pub trait ConfigReload: Send + Sync {
    fn reload(&self) -> Result<ReloadReport, ReloadRefused>;
    /// Reloads applied and refused so far.
    fn counts(&self) -> (u64, u64);
}

/// What a reload did (the `ctl reload` answer, and one log line).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadReport {
    /// Keys whose new value is in force.
    pub applied: Vec<&'static str>,
    /// Keys that changed but take effect only after a restart.
    pub restart_needed: Vec<&'static str>,
    /// `[log] level` was not applied because `RUST_LOG` is set (or logging is embedded).
    pub log_level_note: Option<String>,
    /// Users cached after the credential reload.
    pub credential_users: Option<usize>,
    /// Why the credential reload failed (the cache is kept).
    pub credential_error: Option<String>,
}

/// Why a reload changed nothing, as the admin API reports it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadRefused {
    /// Started without a config file (answered 503).
    #[error("the proxy was started without a config file: nothing to reload")]
    NoConfigFile,
    /// The file is unreadable or invalid (answered 422); the error names the key.
    #[error(transparent)]
    Invalid(Box<dyn std::error::Error + Send + Sync>),
}

/// The transport's per-worker packet counters.
pub trait TransportCounters: Send + Sync {
    fn worker_counters(&self) -> Vec<WorkerCounters>;
}

/// REGFWD's policy counters.
pub trait RegFwdSource: Send + Sync {
    fn regfwd_stats(&self) -> &RegFwdStats;
}

/// HEP capture counters (`[hep]`).
pub trait HepSource: Send + Sync {
    fn hep_counts(&self) -> HepReport;
}

/// The cluster (`[cluster]`): this node, the live nodes, the Redis counters.
pub trait ClusterSource: Send + Sync {
    fn cluster(&self) -> report::ClusterReport;
}

/// The Asterisk farm: every node's state, and draining.
pub trait FarmControl: Send + Sync {
    fn nodes(&self) -> Vec<NodeView>;
    /// Drain or undrain `node`: `None` when it is no node, else whether the flag changed.
    fn set_drained(&self, node: SocketAddr, drained: bool) -> Option<bool>;
}

/// Everything the admin API reads or acts on.
pub struct AdminState {
    pub metrics: Arc<MetricsRegistry>,
    pub registrar: Arc<Registrar>,
    /// The realm AORs are keyed with (`user@realm`).
    pub realm: String,
    pub cache: Arc<CredentialCache>,
    pub pool: Option<Arc<LookupPool>>,
    pub credentials: Option<Arc<dyn CredentialReload>>,
    pub transport: Option<Arc<dyn TransportCounters>>,
    pub regfwd: Option<Arc<dyn RegFwdSource>>,
    pub farm: Option<Arc<dyn FarmControl>>,
    pub bans: Option<Arc<dyn BanList>>,
    /// The configuration reloader (absent when embedded without a config file).
    pub config: Option<Arc<dyn ConfigReload>>,
    /// HEP capture, when `[hep]` is on.
    pub hep: Option<Arc<dyn HepSource>>,
    /// The cluster, when `[cluster]` is on.
    pub cluster: Option<Arc<dyn ClusterSource>>,
    pub started: Instant,
}

/// The running admin server; stopping (or dropping) it joins its thread.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    http: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

/// What the serving thread needs besides the state.
struct Limits {
    max_request_bytes: usize,
    token: Option<Token>,
}

impl AdminServer {
    /// Bind `cfg.listen` and serve `state` on a new thread.
    pub fn start(cfg: &AdminConfig, state: AdminState) -> Result<AdminServer, AdminError> {
        let token = cfg.token_file.as_deref().map(Token::load).transpose()?;
        let bind = |source| AdminError::Bind {
            addr: cfg.listen,
            source,
        };
        let listener = TcpListener::bind(cfg.listen).map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        // Accepted sockets inherit the listener's keepalive settings (Linux copies them on
        // accept): a client that vanished mid-request is dropped within about 90 s. (Not
        // SO_RCVTIMEO: it would also time out tiny_http's blocking accept, which then stops.)
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(60))
            .with_interval(Duration::from_secs(10))
            .with_retries(3);
        socket2::SockRef::from(&listener)
            .set_tcp_keepalive(&keepalive)
            .map_err(bind)?;
        let http = tiny_http::Server::from_listener(listener, None)
            .map_err(|reason| AdminError::Http { addr, reason })?;
        let http = Arc::new(http);
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, server) = (stop.clone(), http.clone());
        let limits = Limits {
            max_request_bytes: cfg.max_request_bytes,
            token,
        };
        let thread = std::thread::Builder::new()
            .name("sipfront-admin".into())
            .spawn(move || serve(&server, &state, &flag, &limits))
            .map_err(AdminError::Thread)?;
        tracing::info!(%addr, token = cfg.token_file.is_some(), "admin API listening");
        Ok(AdminServer {
            addr,
            stop,
            http,
            thread: Some(thread),
        })
    }

    /// The bound address (its port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving and join the thread (waits for the request being served, if any).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        self.http.unblock();
        let _ = thread.join();
        // The last handle: dropping the server closes the listening socket.
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(http: &tiny_http::Server, state: &AdminState, stop: &AtomicBool, limits: &Limits) {
    while !stop.load(Ordering::Acquire) {
        match http.recv() {
            Ok(req) => handle(req, state, limits),
            Err(e) if stop.load(Ordering::Acquire) => {
                tracing::debug!(error = %e, "admin API stopping");
            }
            Err(e) => {
                // tiny_http reports a failed accept once and stops accepting.
                tracing::error!(error = %e, "admin API: accepting connections failed; the admin API is down");
                return;
            }
        }
    }
}

/// The method as the router knows it.
fn method(m: &tiny_http::Method) -> Method {
    match m {
        tiny_http::Method::Get => Method::Get,
        tiny_http::Method::Head => Method::Head,
        tiny_http::Method::Post => Method::Post,
        tiny_http::Method::Delete => Method::Delete,
        _ => Method::Other,
    }
}

/// The value of header `name`, if present once or more (the first).
fn header<'r>(req: &'r tiny_http::Request, name: &'static str) -> Option<&'r str> {
    req.headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// Answer one request (the token is never logged: only the path and status are).
fn handle(req: tiny_http::Request, state: &AdminState, limits: &Limits) {
    let too_large = req.url().len() > limits.max_request_bytes
        || req
            .body_length()
            .is_some_and(|n| n > limits.max_request_bytes);
    let parsed = Request::new(method(req.method()), req.url());
    let resp = match parsed {
        _ if too_large => Response::error(
            413,
            &format!(
                "request larger than {} bytes ([admin] max_request_bytes)",
                limits.max_request_bytes
            ),
        ),
        Err(e) => Response::error(400, &e.to_string()),
        Ok(r)
            if r.path != "/healthz"
                && limits
                    .token
                    .as_ref()
                    .is_some_and(|t| !t.accepts(header(&req, "Authorization"))) =>
        {
            let mut resp = Response::error(
                401,
                "missing or wrong bearer token ([admin] token_file; `sipfront ctl --token-file FILE`)",
            );
            resp.www_authenticate = true;
            resp
        }
        Ok(r) => {
            let routed =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| api::route(state, &r)));
            routed.unwrap_or_else(|_| Response::error(500, "internal error"))
        }
    };
    tracing::debug!(path = %req.url().split('?').next().unwrap_or(""), status = resp.status, "admin request");
    let _ = req.respond(to_tiny(resp));
}

/// A `tiny_http` response: status, `Content-Type`, `Allow` for 405, `WWW-Authenticate`
/// for 401 (HEAD bodies are left out by `tiny_http`).
fn to_tiny(resp: Response) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let mut out = tiny_http::Response::from_string(resp.body).with_status_code(resp.status);
    let mut add = |name: &str, value: &str| {
        if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            out.add_header(h);
        }
    };
    add("Content-Type", resp.content_type);
    if let Some(allow) = resp.allow {
        add("Allow", allow);
    }
    if resp.www_authenticate {
        add("WWW-Authenticate", "Bearer realm=\"sipfront\"");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;
    use crate::registrar::RegistrarConfig;

    fn key_of(e: &ConfigError) -> bool {
        e.to_string().contains("admin.")
    }

    #[test]
    fn config_defaults_and_validation() {
        let d = AdminConfig::default();
        assert!(!d.enabled);
        assert_eq!(d.listen.to_string(), DEFAULT_LISTEN);
        assert!(d.validate().is_ok());
        for (toml_text, want) in [
            ("listen = \"0.0.0.0:8080\"", "admin.token_file"),
            ("max_request_bytes = 10", "admin.max_request_bytes"),
            ("max_request_bytes = 2000000", "admin.max_request_bytes"),
            ("token_file = \"/nonexistent/token\"", "admin.token_file"),
        ] {
            let c: AdminConfig = toml::from_str(toml_text).unwrap();
            let e = c.validate().unwrap_err();
            assert!(
                key_of(&e) && e.to_string().contains(want),
                "{toml_text}: {e}"
            );
        }
        let e = toml::from_str::<AdminConfig>("listen = \"[::]:9\"")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(matches!(e, ConfigError::TokenRequired(_)), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin.token");
        std::fs::write(&file, "0123456789abcdef0123456789abcdef\n").unwrap();
        let c: AdminConfig = toml::from_str(&format!(
            "listen = \"0.0.0.0:9\"\ntoken_file = \"{}\"",
            file.display()
        ))
        .unwrap();
        assert!(c.validate().is_ok());
        assert!(toml::from_str::<AdminConfig>("nope = 1").is_err());
        assert!(toml::from_str::<AdminConfig>("allow_non_loopback = true").is_err());
    }

    fn empty_state() -> AdminState {
        AdminState {
            metrics: MetricsRegistry::new(Vec::new()),
            registrar: Arc::new(Registrar::new(RegistrarConfig::default()).unwrap()),
            realm: "r".into(),
            cache: Arc::new(CredentialCache::new(0, 0)),
            pool: None,
            credentials: None,
            transport: None,
            regfwd: None,
            farm: None,
            bans: None,
            config: None,
            hep: None,
            cluster: None,
            started: Instant::now(),
        }
    }

    fn loopback(cfg: AdminConfig) -> AdminConfig {
        AdminConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..cfg
        }
    }

    #[test]
    fn serves_and_stops() {
        let cfg = loopback(AdminConfig::default());
        let server = AdminServer::start(&cfg, empty_state()).unwrap();
        let addr = server.local_addr().to_string();
        let t = Duration::from_secs(5);
        let client = ctl::Client::new(&addr, t, None).unwrap();
        let (status, body) = client.request("GET", "/healthz", &[]).unwrap();
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        let (status, _) = client.request("GET", "/v1/nothing", &[]).unwrap();
        assert_eq!(status, 404);
        let (status, body) = client.request("GET", "/metrics", &[]).unwrap();
        assert_eq!(status, 200);
        assert!(body.ends_with("# EOF\n"), "{body}");
        // A second server on the same port is a bind error naming the address.
        let busy = AdminConfig {
            listen: server.local_addr(),
            ..cfg.clone()
        };
        let e = AdminServer::start(&busy, empty_state()).err().unwrap();
        assert!(e.to_string().contains(&addr), "{e}");
        server.stop();
        let closed = ctl::Client::new(&addr, Duration::from_secs(1), None).unwrap();
        assert!(closed.request("GET", "/healthz", &[]).is_err());
    }

    #[test]
    fn the_token_is_required_and_compared() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin.token");
        std::fs::write(&file, "right-token-0123456789\n").unwrap();
        let cfg = loopback(AdminConfig {
            token_file: Some(file),
            ..AdminConfig::default()
        });
        let server = AdminServer::start(&cfg, empty_state()).unwrap();
        let addr = server.local_addr().to_string();
        let t = Duration::from_secs(5);
        let status = |token: Option<&str>, path: &str| {
            ctl::Client::new(&addr, t, token.map(str::to_owned))
                .unwrap()
                .request("GET", path, &[])
                .unwrap()
                .0
        };
        assert_eq!(status(None, "/v1/stats"), 401);
        assert_eq!(status(Some("wrong-token-0123456789"), "/metrics"), 401);
        assert_eq!(status(Some("right-token-0123456789"), "/v1/stats"), 200);
        assert_eq!(status(Some("right-token-0123456789"), "/metrics"), 200);
        // Health checks need no token.
        assert_eq!(status(None, "/healthz"), 200);
    }

    #[test]
    fn a_stalled_client_does_not_block_others() {
        let server = AdminServer::start(&loopback(AdminConfig::default()), empty_state()).unwrap();
        let mut stalled = TcpStream::connect(server.local_addr()).unwrap();
        // Half a request, then silence.
        stalled
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let addr = server.local_addr().to_string();
        let client = ctl::Client::new(&addr, Duration::from_secs(5), None).unwrap();
        for _ in 0..3 {
            assert_eq!(client.request("GET", "/healthz", &[]).unwrap().0, 200);
        }
        // An oversized target is refused, and the stalled client is answered once complete.
        let long = format!("/{}", "a".repeat(20_000));
        assert_eq!(client.request("GET", &long, &[]).unwrap().0, 413);
        stalled.write_all(b"Connection: close\r\n\r\n").unwrap();
        stalled
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut answer = String::new();
        stalled.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        server.stop();
    }
}
