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

pub mod api;
mod asterisk;
pub mod ctl;
pub mod http;
pub mod prometheus;
pub mod report;

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
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

/// `[admin]`: where the admin API listens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve the admin API (off by default: `sipfront ctl` needs it on).
    pub enabled: bool,
    /// Address of the admin API. It has no authentication: keep it on loopback.
    pub listen: SocketAddr,
    /// Must be set to listen on a non-loopback address.
    pub allow_non_loopback: bool,
    /// Largest request (head and body) accepted.
    pub max_request_bytes: usize,
    /// Read/write timeout per connection.
    pub timeout_ms: u64,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_MAX_REQUEST_BYTES: usize = 16 * 1024;
const DEFAULT_TIMEOUT_MS: u64 = 2_000;

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            allow_non_loopback: false,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }
}

/// An invalid `[admin]` key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config key `admin.listen`: {0} is not a loopback address (the admin API has no authentication; set admin.allow_non_loopback = true to expose it anyway)")]
    NotLoopback(IpAddr),
    #[error("config key `admin.max_request_bytes`: must be between 1024 and 1048576")]
    MaxRequestBytes,
    #[error("config key `admin.timeout_ms`: must be between 100 and 60000")]
    Timeout,
}

impl AdminConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.ip().is_loopback() && !self.allow_non_loopback {
            return Err(ConfigError::NotLoopback(self.listen.ip()));
        }
        if !(1024..=1024 * 1024).contains(&self.max_request_bytes) {
            return Err(ConfigError::MaxRequestBytes);
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err(ConfigError::Timeout);
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
    pub started: Instant,
}

/// The running admin server; stopping (or dropping) it joins its thread.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Bind `cfg.listen` and serve `state` on a new thread.
    pub fn start(cfg: &AdminConfig, state: AdminState) -> Result<AdminServer, AdminError> {
        let listener = TcpListener::bind(cfg.listen).map_err(|source| AdminError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| AdminError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let limit = cfg.max_request_bytes;
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let thread = std::thread::Builder::new()
            .name("sipfront-admin".into())
            .spawn(move || serve(&listener, &state, &flag, limit, timeout))
            .map_err(AdminError::Thread)?;
        tracing::info!(%addr, "admin API listening");
        Ok(AdminServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (its port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting and join the thread (waits for the request being served, if any).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                IpAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
                IpAddr::V6(_) => IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        let _ = thread.join();
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(
    listener: &TcpListener,
    state: &AdminState,
    stop: &AtomicBool,
    limit: usize,
    timeout: Duration,
) {
    for conn in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "admin accept failed");
                continue;
            }
        };
        let _ = stream.set_read_timeout(Some(timeout));
        let _ = stream.set_write_timeout(Some(timeout));
        let (resp, head_only) = match http::read_request(&mut stream, limit) {
            Ok(req) => {
                let head_only = req.method == http::Method::Head;
                let routed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    api::route(state, &req)
                }));
                let resp = routed.unwrap_or_else(|_| http::Response::error(500, "internal error"));
                tracing::debug!(path = %req.path, status = resp.status, "admin request");
                (resp, head_only)
            }
            Err(http::HttpError::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                (http::Response::error(408, "request timeout"), false)
            }
            Err(http::HttpError::Io(_) | http::HttpError::Incomplete) => continue,
            Err(e @ http::HttpError::TooLarge { .. }) => {
                (http::Response::error(413, &e.to_string()), false)
            }
            Err(e) => (http::Response::error(400, &e.to_string()), false),
        };
        let _ = resp.write_to(&mut stream, head_only);
        linger(&mut stream);
    }
}

/// Half-close and drain what the client still sends (bounded), so that closing with unread
/// input does not reset the connection before the client has read the response.
fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 1024];
    let mut drained = 0usize;
    while drained < 256 * 1024 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::CredentialCache;
    use crate::registrar::RegistrarConfig;

    #[test]
    fn config_defaults_and_validation() {
        let d = AdminConfig::default();
        assert!(!d.enabled);
        assert_eq!(d.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(d.validate(), Ok(()));
        let cases: [(&str, ConfigError); 4] = [
            (
                "listen = \"0.0.0.0:8080\"",
                ConfigError::NotLoopback(IpAddr::from([0, 0, 0, 0])),
            ),
            ("max_request_bytes = 10", ConfigError::MaxRequestBytes),
            ("max_request_bytes = 2000000", ConfigError::MaxRequestBytes),
            ("timeout_ms = 0", ConfigError::Timeout),
        ];
        for (toml_text, want) in cases {
            let c: AdminConfig = toml::from_str(toml_text).unwrap();
            assert_eq!(c.validate(), Err(want.clone()), "{toml_text}");
            assert!(want.to_string().contains("admin."), "{want}");
        }
        let c: AdminConfig =
            toml::from_str("listen = \"0.0.0.0:9\"\nallow_non_loopback = true").unwrap();
        assert_eq!(c.validate(), Ok(()));
        assert!(toml::from_str::<AdminConfig>("nope = 1").is_err());
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
            started: Instant::now(),
        }
    }

    #[test]
    fn serves_and_stops() {
        let cfg = AdminConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..AdminConfig::default()
        };
        let state = empty_state();
        let server = AdminServer::start(&cfg, state).unwrap();
        let addr = server.local_addr().to_string();
        let t = Duration::from_secs(5);
        let (status, body) = ctl::request(&addr, "GET", "/healthz", t).unwrap();
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        let (status, _) = ctl::request(&addr, "GET", "/v1/nothing", t).unwrap();
        assert_eq!(status, 404);
        // A second server on the same port is a bind error naming the address.
        let busy = AdminConfig {
            listen: server.local_addr(),
            ..cfg.clone()
        };
        let state2 = empty_state();
        let e = AdminServer::start(&busy, state2).err().unwrap();
        assert!(e.to_string().contains(&addr), "{e}");
        server.stop();
        assert!(ctl::request(&addr, "GET", "/healthz", t).is_err());
    }
}
