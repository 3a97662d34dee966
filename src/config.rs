//! The configuration file: one TOML document, parsed with serde and validated before anything
//! binds a socket.
//!
//! Every section is a struct with `deny_unknown_fields` and named defaults, so a typo is an
//! error that names the key and a missing key takes the documented default
//! (`docs/configuration.md`). [`Config::load`] reads, parses and validates; the caller exits
//! non-zero on any [`ConfigError`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::core::{same_ip, MatchMode, ResponseSource, Timers};

/// Why a configuration could not be used. Each variant names the offending key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}{}", parse_hint(source))]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error(transparent)]
    Auth(#[from] crate::auth::ConfigError),
    #[error(transparent)]
    Credentials(#[from] crate::db::ConfigError),
    #[error(transparent)]
    Registrar(#[from] crate::registrar::ConfigError),
    #[error(transparent)]
    Transport(#[from] crate::transport::ConfigError),
    #[error(transparent)]
    Tls(#[from] crate::transport::tls::TlsError),
    #[error(transparent)]
    Ws(#[from] crate::transport::stream::WsConfigError),
    #[error(transparent)]
    Tcp(#[from] crate::transport::stream::StreamConfigError),
    #[error(transparent)]
    Guard(#[from] crate::guard::ConfigError),
    #[error(transparent)]
    Admin(#[from] crate::admin::ConfigError),
    #[error(transparent)]
    Hep(#[from] crate::hep::ConfigError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ConfigError),
}

/// What serde's terse value errors expected, in words.
fn parse_hint(e: &toml::de::Error) -> &'static str {
    let m = e.message();
    if m.contains("invalid socket address syntax") {
        "expected IP:PORT, e.g. \"127.0.0.1:5060\" or \"[2001:db8::1]:5060\" (an IP address, not a host name)\n"
    } else if m.contains("invalid IP address syntax") {
        "expected an IP address, e.g. \"192.0.2.10\" or \"2001:db8::1\"\n"
    } else {
        ""
    }
}

impl ConfigError {
    pub(crate) fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key,
            reason: reason.into(),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: ListenConfig,
    pub domain: DomainConfig,
    pub asterisk: AsteriskConfig,
    pub timers: Timers,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub auth: crate::auth::AuthConfig,
    pub credentials: crate::db::CredentialsConfig,
    pub registrar: crate::registrar::RegistrarConfig,
    pub transport: crate::transport::TransportConfig,
    pub tls: crate::transport::tls::TlsConfig,
    pub tcp: crate::transport::stream::StreamConfig,
    pub ws: crate::transport::stream::WsConfig,
    pub guard: crate::guard::GuardConfig,
    pub admin: crate::admin::AdminConfig,
    pub hep: crate::hep::HepConfig,
    /// `[nat]`: keepalives towards registered phones.
    pub nat: crate::core::NatConfig,
    /// `[cluster]`: several nodes sharing location and state through Redis; absent, the
    /// proxy runs alone.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// The file this configuration was loaded from (what a reload reads again).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[listen]`: where phones and Asterisk reach the proxy, and how many workers serve it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// UDP addresses, each bound once per worker with SO_REUSEPORT.
    pub udp: Vec<SocketAddr>,
    /// SIP over TCP: addresses each worker listens on (SO_REUSEPORT).
    pub tcp: Vec<SocketAddr>,
    /// SIP over TLS (certificate from `[tls]`).
    pub tls: Vec<SocketAddr>,
    /// SIP over WebSocket (RFC 7118; limits and Origin allow-list in `[ws]`).
    pub ws: Vec<SocketAddr>,
    /// SIP over secure WebSocket (certificate from `[tls]`).
    pub wss: Vec<SocketAddr>,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// The listen address facing Asterisk (one of `udp`; default the first): the workers'
    /// upstream sockets bind its IP, and the Record-Route Asterisk sees names it.
    pub asterisk_side: Option<SocketAddr>,
    /// `[listen.advertise]`: for 1:1 NAT, the public `host:port` written in Via,
    /// Record-Route and the forwarded REGISTER's Contact for traffic on a listen address,
    /// e.g. `"10.0.0.5:5060" = "203.0.113.7:5060"`.
    pub advertise: BTreeMap<String, String>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            udp: vec![SocketAddr::from(([127, 0, 0, 1], 5060))],
            tcp: Vec::new(),
            tls: Vec::new(),
            ws: Vec::new(),
            wss: Vec::new(),
            workers: 0,
            asterisk_side: None,
            advertise: BTreeMap::new(),
        }
    }
}

/// A `host:port` written into SIP headers: an IP (IPv6 in brackets) or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// As written in a URI (IPv6 in brackets).
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// Parse `host:port` (`[v6]:port` for IPv6); `None` when it is not one.
    pub fn parse(s: &str) -> Option<HostPort> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return (a.port() != 0 && !a.ip().is_unspecified()).then(|| HostPort::from(a));
        }
        let (host, port) = s.rsplit_once(':')?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && !host.starts_with(['-', '.'])
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && host.bytes().any(|b| b.is_ascii_alphabetic());
        name_ok.then(|| HostPort {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl From<SocketAddr> for HostPort {
    fn from(a: SocketAddr) -> Self {
        HostPort {
            host: crate::core::host_string(a.ip()),
            port: a.port(),
        }
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// `[domain]`: the realm of digest challenges and the domains the proxy is responsible for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainConfig {
    pub realm: String,
    /// Domains and addresses (host part of request URIs) that are local. The listen and
    /// advertise addresses are always local too.
    pub local: Vec<String>,
}

impl Default for DomainConfig {
    fn default() -> Self {
        DomainConfig {
            realm: "sipfront".to_owned(),
            local: Vec::new(),
        }
    }
}

/// Where forwarded registrations go when there are several Asterisk nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RegisterMode {
    #[default]
    All,
    Hash,
}

/// What keeps a phone's calls on one Asterisk node (`[asterisk] call_affinity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CallAffinity {
    /// A hash of the Call-ID: calls spread evenly over the nodes.
    #[default]
    CallId,
    /// A hash of the calling user: a user's calls (pickup, parking, its own hints) meet on
    /// one node.
    User,
}

/// `[asterisk]`: the farm behind the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AsteriskConfig {
    pub nodes: Vec<SocketAddr>,
    /// One weight per node (a node's share of new calls); empty: all 1.
    pub weights: Vec<u32>,
    pub call_affinity: CallAffinity,
    /// OPTIONS ping period per node; 0 = no pings (every node counts as up).
    pub probe_interval_ms: u64,
    /// Consecutive failed pings that take a node down.
    pub probe_failures: u32,
    /// Consecutive answered pings that bring it back up.
    pub probe_successes: u32,
    /// REGISTERs a second replayed to a node that comes (back) up.
    pub replay_rate_per_sec: u32,
    /// Smoothed time to first answer above which a node gets no new calls for
    /// `busy_backoff_ms`; 0 = no latency rule.
    pub busy_latency_ms: u64,
    /// How long a node gets no new calls after a 503 without Retry-After, or after
    /// answering too slowly.
    pub busy_backoff_ms: u64,
    /// Event packages whose SUBSCRIBE/PUBLISH from phones go to Asterisk.
    pub subscribe_events: Vec<String>,
    /// The address Asterisk is told to reach phones at (Contact of forwarded REGISTERs).
    /// Defaults to the first listen address.
    pub advertise: Option<SocketAddr>,
    #[serde(rename = "match")]
    pub match_mode: MatchMode,
    /// Where responses to requests sent to a node may come from: `node` (its address, as
    /// `match` compares it, or one of `response_addresses`) or `any` (no check).
    pub response_source: ResponseSource,
    /// Other addresses of the Asterisk hosts (multihomed) responses are accepted from.
    pub response_addresses: Vec<IpAddr>,
    pub register_mode: RegisterMode,
    /// A refresh that only extends a binding is forwarded at most once per this many seconds
    /// (default: half of the granted expiry, see docs/configuration.md); 0 forwards every one.
    pub refresh_min_interval_secs: Option<u32>,
}

impl Default for AsteriskConfig {
    fn default() -> Self {
        AsteriskConfig {
            nodes: vec![SocketAddr::from(([127, 0, 0, 2], 5080))],
            advertise: None,
            match_mode: MatchMode::IpPort,
            response_source: ResponseSource::Node,
            response_addresses: Vec::new(),
            register_mode: RegisterMode::All,
            refresh_min_interval_secs: None,
            weights: Vec::new(),
            call_affinity: CallAffinity::CallId,
            probe_interval_ms: 5000,
            probe_failures: 3,
            probe_successes: 2,
            replay_rate_per_sec: 500,
            busy_latency_ms: 1000,
            busy_backoff_ms: 5000,
            subscribe_events: crate::core::DEFAULT_SUBSCRIBE_EVENTS
                .map(str::to_owned)
                .to_vec(),
        }
    }
}

impl AsteriskConfig {
    /// The checks of the farm keys (each error names its key).
    fn validate(&self) -> Result<(), ConfigError> {
        let n = self.nodes.len();
        if n == 0 {
            return Err(ConfigError::invalid(
                "asterisk.nodes",
                "needs at least one node",
            ));
        }
        let distinct = self
            .nodes
            .iter()
            .enumerate()
            .all(|(i, a)| !self.nodes[..i].contains(a));
        if n > 64 || !distinct {
            return Err(ConfigError::invalid(
                "asterisk.nodes",
                "at most 64 nodes, each listed once",
            ));
        }
        if !(self.weights.is_empty() || self.weights.len() == n)
            || self.weights.iter().any(|w| !(1..=10_000).contains(w))
        {
            return Err(ConfigError::invalid(
                "asterisk.weights",
                "one weight (1..=10000) per node, in the order of asterisk.nodes, or none",
            ));
        }
        let ranges: [(&'static str, u64, u64, u64); 6] = [
            (
                "asterisk.probe_interval_ms",
                self.probe_interval_ms,
                50,
                3_600_000,
            ),
            (
                "asterisk.probe_failures",
                self.probe_failures.into(),
                1,
                100,
            ),
            (
                "asterisk.probe_successes",
                self.probe_successes.into(),
                1,
                100,
            ),
            (
                "asterisk.replay_rate_per_sec",
                self.replay_rate_per_sec.into(),
                1,
                100_000,
            ),
            (
                "asterisk.busy_latency_ms",
                self.busy_latency_ms,
                10,
                600_000,
            ),
            (
                "asterisk.busy_backoff_ms",
                self.busy_backoff_ms,
                100,
                600_000,
            ),
        ];
        for (key, v, lo, hi) in ranges {
            // The interval and the latency rule may be 0 (off).
            let off = v == 0 && (key.ends_with("interval_ms") || key.ends_with("latency_ms"));
            if !off && !(lo..=hi).contains(&v) {
                return Err(ConfigError::invalid(key, format!("must be {lo}..={hi}")));
            }
        }
        let token = |e: &String| {
            !e.is_empty()
                && e.len() <= 64
                && e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
        };
        if self.subscribe_events.len() > 32 || !self.subscribe_events.iter().all(token) {
            return Err(ConfigError::invalid(
                "asterisk.subscribe_events",
                "at most 32 event package names (SIP tokens, e.g. \"dialog\")",
            ));
        }
        Ok(())
    }
}

/// `[limits]`: sizes that bound memory and work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request accepted; larger ones get 513.
    pub max_message_bytes: usize,
    /// Transactions each worker may hold; past it new requests get 503.
    pub max_transactions_per_worker: usize,
    /// Requests each worker may hold while their credentials are looked up.
    pub max_parked_per_worker: usize,
    /// Final responses to REGISTERs each worker keeps (for 64·T1) to answer retransmissions.
    pub register_cache_per_worker: usize,
    /// Received bytes waiting for a worker (kernel receive queues) above which it answers
    /// new requests from phones that carry no credentials 503 + Retry-After (until the
    /// backlog is below half of it), and above twice which every new request from a phone
    /// (until below it); 0 disables. Lowered to a quarter of a socket's receive buffer
    /// when that is smaller. See `Core::set_backlog`.
    pub shed_backlog_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_bytes: 16 * 1024,
            max_transactions_per_worker: 131_072,
            max_parked_per_worker: 4096,
            register_cache_per_worker: 16_384,
            shed_backlog_bytes: 1 << 20,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A level or `target=level` list ("info", "sipfront=debug,warn"); `RUST_LOG`
    /// overrides it.
    pub level: String,
    /// `text` or `json` (one object per line).
    pub format: crate::logging::LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: crate::logging::LogFormat::Text,
        }
    }
}

impl Config {
    /// Read, parse and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let cfg = Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_owned(),
                source,
            },
            other => other,
        })?;
        Ok(Config {
            source: Some(path.to_owned()),
            ..cfg
        })
    }

    /// Parse and validate configuration text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            source: Box::new(e),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check values serde cannot: ranges, non-empty lists, consistency between sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err(e) = crate::logging::validate(&self.log.level) {
            return Err(ConfigError::invalid("log.level", e.to_string()));
        }
        if let Err((key, reason)) = self.nat.validate() {
            return Err(ConfigError::invalid(key, reason));
        }
        if self.listen.udp.is_empty() {
            return Err(ConfigError::invalid(
                "listen.udp",
                "needs at least one address",
            ));
        }
        for (key, list) in [
            ("listen.udp", &self.listen.udp),
            ("listen.tcp", &self.listen.tcp),
            ("listen.tls", &self.listen.tls),
            ("listen.ws", &self.listen.ws),
            ("listen.wss", &self.listen.wss),
        ] {
            if list.iter().any(|a| a.port() == 0) {
                return Err(ConfigError::invalid(key, "port 0 is not a listen port"));
            }
            if list.iter().any(|a| a.ip().is_unspecified()) {
                // The listen address goes into Via and Record-Route: it must be reachable.
                return Err(ConfigError::invalid(
                    key,
                    "needs concrete IP:PORT addresses (0.0.0.0 and :: cannot go into Via and Record-Route)",
                ));
            }
            let mut seen = list.clone();
            seen.sort();
            seen.dedup();
            if seen.len() != list.len() {
                return Err(ConfigError::invalid(key, "lists an address twice"));
            }
        }
        // One TCP port serves one stream transport.
        let l = &self.listen;
        let stream_lists = [
            ("listen.tcp", &l.tcp),
            ("listen.tls", &l.tls),
            ("listen.ws", &l.ws),
            ("listen.wss", &l.wss),
        ];
        for (i, (key, list)) in stream_lists.iter().enumerate() {
            for (other, earlier) in &stream_lists[..i] {
                if let Some(a) = list.iter().find(|a| earlier.contains(a)) {
                    return Err(ConfigError::invalid(
                        key,
                        format!("{a} is also in {other} (one TCP port serves one of them)"),
                    ));
                }
            }
        }
        let secure = if !l.tls.is_empty() {
            Some("listen.tls")
        } else if !l.wss.is_empty() {
            Some("listen.wss")
        } else {
            None
        };
        if let Some(by) = secure {
            if self.tls.cert.is_none() {
                return Err(ConfigError::invalid(
                    "tls.cert",
                    format!("a PEM certificate file is needed by {by}"),
                ));
            }
            if self.tls.key.is_none() {
                return Err(ConfigError::invalid(
                    "tls.key",
                    format!("a PEM private key file is needed by {by}"),
                ));
            }
        }
        if let Some(a) = self.listen.asterisk_side {
            if !self.listen.udp.contains(&a) {
                return Err(ConfigError::invalid(
                    "listen.asterisk_side",
                    format!("{a} is not one of listen.udp"),
                ));
            }
        }
        for (k, v) in &self.listen.advertise {
            let Ok(addr) = k.parse::<SocketAddr>() else {
                return Err(ConfigError::invalid(
                    "listen.advertise",
                    format!("key {k:?} is not an IP:PORT"),
                ));
            };
            if !self.listen_addrs().any(|(a, _)| a == addr) {
                return Err(ConfigError::invalid(
                    "listen.advertise",
                    format!("{k} is not one of the listen addresses"),
                ));
            }
            if HostPort::parse(v).is_none() {
                return Err(ConfigError::invalid(
                    "listen.advertise",
                    format!("{v:?} (for {k}) is not a public HOST:PORT (an IP or a DNS name)"),
                ));
            }
        }
        if self.listen.workers > 1024 {
            return Err(ConfigError::invalid("listen.workers", "at most 1024"));
        }
        if self.domain.realm.is_empty() || self.domain.realm.contains(['"', '\\', '\r', '\n']) {
            return Err(ConfigError::invalid(
                "domain.realm",
                "must be non-empty, without quotes, backslashes or line breaks",
            ));
        }
        for d in &self.domain.local {
            if d.is_empty() || d.contains(|c: char| c.is_whitespace() || c == '@') {
                return Err(ConfigError::invalid(
                    "domain.local",
                    format!("{d:?} is not a domain or address"),
                ));
            }
        }
        self.asterisk.validate()?;
        if let Some(a) = self.asterisk.advertise {
            if a.port() == 0 || a.ip().is_unspecified() {
                return Err(ConfigError::invalid(
                    "asterisk.advertise",
                    "must be a concrete ip:port",
                ));
            }
        }
        let t = &self.timers;
        if t.t1_ms == 0 || t.t1_ms > 10_000 {
            return Err(ConfigError::invalid("timers.t1_ms", "must be 1..=10000"));
        }

        if t.t2_ms > 60_000 {
            return Err(ConfigError::invalid(
                "timers.t2_ms",
                "must be at most 60000",
            ));
        }
        if t.t2_ms < t.t1_ms {
            // Name the key that was moved away from its default.
            return Err(if t.t2_ms == Timers::default().t2_ms {
                ConfigError::invalid(
                    "timers.t1_ms",
                    "must not exceed t2_ms (4000 unless set): raise t2_ms too",
                )
            } else {
                ConfigError::invalid("timers.t2_ms", "must be at least t1_ms (500 unless set)")
            });
        }
        if t.t4_ms == 0 || t.t4_ms > 60_000 {
            return Err(ConfigError::invalid("timers.t4_ms", "must be 1..=60000"));
        }
        if t.timer_c_ms < 60_000 * 3 / 2 && t.timer_c_ms < 64 * t.t1_ms {
            return Err(ConfigError::invalid(
                "timers.timer_c_ms",
                "must be at least 64*t1_ms",
            ));
        }
        if t.server_linger_ms < t.t1_ms || t.server_linger_ms > 64 * t.t1_ms.max(1_000) {
            return Err(ConfigError::invalid(
                "timers.server_linger_ms",
                "must be t1_ms..=64*t1_ms",
            ));
        }
        if t.drain_ms > 600_000 {
            return Err(ConfigError::invalid("timers.drain_ms", "at most 600000"));
        }
        let l = &self.limits;
        if !(1024..=65_535).contains(&l.max_message_bytes) {
            return Err(ConfigError::invalid(
                "limits.max_message_bytes",
                "must be 1024..=65535",
            ));
        }
        if l.max_transactions_per_worker == 0 || l.max_transactions_per_worker > 4_000_000 {
            return Err(ConfigError::invalid(
                "limits.max_transactions_per_worker",
                "must be 1..=4000000",
            ));
        }
        if l.register_cache_per_worker == 0 || l.register_cache_per_worker > 1_000_000 {
            return Err(ConfigError::invalid(
                "limits.register_cache_per_worker",
                "must be 1..=1000000",
            ));
        }
        if l.max_parked_per_worker == 0 || l.max_parked_per_worker > 1_000_000 {
            return Err(ConfigError::invalid(
                "limits.max_parked_per_worker",
                "must be 1..=1000000",
            ));
        }
        if l.shed_backlog_bytes != 0 && !(4096..=1 << 30).contains(&l.shed_backlog_bytes) {
            return Err(ConfigError::invalid(
                "limits.shed_backlog_bytes",
                "must be 0 (off) or 4096..=1073741824",
            ));
        }
        self.auth.validate()?;
        self.credentials.validate()?;
        self.registrar.validate()?;
        self.transport.validate()?;
        self.tls.validate()?;
        self.tcp.validate()?;
        self.ws.validate()?;
        self.guard.validate()?;
        self.admin.validate()?;
        self.hep.validate()?;
        if let Some(c) = &self.cluster {
            c.validate(&self.listen.udp)?;
        }
        Ok(())
    }

    /// Every listen address with its transport, in the order of the listen table
    /// (`core::Local::Listen`): UDP, then TCP, then TLS, then WS, then WSS.
    pub fn listen_addrs(&self) -> impl Iterator<Item = (SocketAddr, crate::sip::Transport)> + '_ {
        use crate::sip::Transport;
        let l = &self.listen;
        l.udp
            .iter()
            .map(|a| (*a, Transport::Udp))
            .chain(l.tcp.iter().map(|a| (*a, Transport::Tcp)))
            .chain(l.tls.iter().map(|a| (*a, Transport::Tls)))
            .chain(l.ws.iter().map(|a| (*a, Transport::Ws)))
            .chain(l.wss.iter().map(|a| (*a, Transport::Wss)))
    }

    /// The listen address facing Asterisk (`[listen] asterisk_side`, default the first).
    pub fn asterisk_side(&self) -> SocketAddr {
        self.listen
            .asterisk_side
            .or(self.listen.udp.first().copied())
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 5060)))
    }

    /// How the proxy names itself for traffic on listen address `addr`: its
    /// `[listen.advertise]` entry, else the address itself.
    pub fn advertised(&self, addr: SocketAddr) -> HostPort {
        self.listen
            .advertise
            .iter()
            .find(|(k, _)| k.parse::<SocketAddr>().ok() == Some(addr))
            .and_then(|(_, v)| HostPort::parse(v))
            .unwrap_or_else(|| HostPort::from(addr))
    }

    /// The address Asterisk is told to reach phones at (the forwarded REGISTER's Contact):
    /// `[asterisk] advertise`, else the advertised address of the listen address facing
    /// Asterisk.
    pub fn advertise(&self) -> HostPort {
        match self.asterisk.advertise {
            Some(a) => HostPort::from(a),
            None => self.advertised(self.asterisk_side()),
        }
    }

    /// Whether `src` is one of the Asterisk nodes under the configured match rule.
    pub fn is_asterisk(&self, src: SocketAddr) -> bool {
        self.asterisk
            .nodes
            .iter()
            .any(|n| match self.asterisk.match_mode {
                MatchMode::IpPort => *n == src,
                MatchMode::Ip => same_ip(n.ip(), src.ip()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_key(text: &str) -> String {
        match Config::parse(text) {
            Err(ConfigError::Invalid { key, .. }) => key.to_owned(),
            Err(ConfigError::Parse { source, .. }) => source.to_string(),
            Err(e) => e.to_string(),
            Ok(_) => "ok".to_owned(),
        }
    }

    #[test]
    fn empty_file_takes_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.listen.udp, vec!["127.0.0.1:5060".parse().unwrap()]);
        assert_eq!(c.timers.t1_ms, 500);
        assert_eq!(c.advertise().to_string(), "127.0.0.1:5060");
        assert_eq!(c.limits.shed_backlog_bytes, 1 << 20);
        let off = Config::parse("[limits]\nshed_backlog_bytes = 0\n").unwrap();
        assert_eq!(off.limits.shed_backlog_bytes, 0);
    }

    #[test]
    fn websocket_listen_addresses_follow_the_others_and_are_checked() {
        let c = Config::parse(
            "[listen]\nudp = [\"10.0.0.1:5060\"]\ntcp = [\"10.0.0.1:5060\"]\n\
             ws = [\"10.0.0.1:8080\"]\nwss = [\"10.0.0.1:8443\"]\n\
             [tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n",
        )
        .unwrap();
        use crate::sip::Transport;
        let table: Vec<_> = c.listen_addrs().map(|(_, t)| t).collect();
        // Appended after UDP, TCP and TLS: the earlier indices do not move.
        assert_eq!(
            table,
            [
                Transport::Udp,
                Transport::Tcp,
                Transport::Ws,
                Transport::Wss
            ]
        );
        let cases = [
            // One TCP port serves one stream transport.
            (
                "[listen]\ntcp = [\"127.0.0.1:5060\"]\nws = [\"127.0.0.1:5060\"]\n",
                "listen.ws",
            ),
            ("[listen]\nws = [\"0.0.0.0:80\"]\n", "listen.ws"),
            // WSS needs the certificate of [tls].
            ("[listen]\nwss = [\"127.0.0.1:8443\"]\n", "tls.cert"),
        ];
        for (text, key) in cases {
            assert_eq!(err_key(text), key, "{text}");
        }
        let e = Config::parse("[ws]\nmax_frame_bytes = 10\n").unwrap_err();
        assert!(e.to_string().contains("ws.max_frame_bytes"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err_key("[listen]\nudpp = []\n");
        assert!(e.contains("udpp"), "{e}");
        let e = err_key("[nope]\n");
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[listen]\nudp = []\n", "listen.udp"),
            ("[listen]\nudp = [\"0.0.0.0:5060\"]\n", "listen.udp"),
            ("[domain]\nrealm = \"\"\n", "domain.realm"),
            ("[asterisk]\nnodes = []\n", "asterisk.nodes"),
            (
                "[asterisk]\nnodes = [\"127.0.0.2:5080\", \"127.0.0.2:5080\"]\n",
                "asterisk.nodes",
            ),
            ("[asterisk]\nweights = [1, 2]\n", "asterisk.weights"),
            ("[asterisk]\nweights = [0]\n", "asterisk.weights"),
            (
                "[asterisk]\nprobe_interval_ms = 10\n",
                "asterisk.probe_interval_ms",
            ),
            (
                "[asterisk]\nprobe_failures = 0\n",
                "asterisk.probe_failures",
            ),
            (
                "[asterisk]\nprobe_successes = 0\n",
                "asterisk.probe_successes",
            ),
            (
                "[asterisk]\nreplay_rate_per_sec = 0\n",
                "asterisk.replay_rate_per_sec",
            ),
            (
                "[asterisk]\nbusy_latency_ms = 5\n",
                "asterisk.busy_latency_ms",
            ),
            (
                "[asterisk]\nbusy_backoff_ms = 0\n",
                "asterisk.busy_backoff_ms",
            ),
            (
                "[asterisk]\nsubscribe_events = [\"dia log\"]\n",
                "asterisk.subscribe_events",
            ),
            ("[timers]\nt1_ms = 0\n", "timers.t1_ms"),
            ("[log]\nlevel = \"verbose\"\n", "log.level"),
            // A min/max conflict names the key that was edited.
            ("[timers]\nt1_ms = 5000\n", "timers.t1_ms"),
            ("[timers]\nt1_ms = 500\nt2_ms = 100\n", "timers.t2_ms"),
            (
                "[limits]\nmax_message_bytes = 10\n",
                "limits.max_message_bytes",
            ),
            (
                "[limits]\nshed_backlog_bytes = 100\n",
                "limits.shed_backlog_bytes",
            ),
            ("[nat]\nkeepalive_failures = 0\n", "nat.keepalive_failures"),
            (
                "[nat]\nkeepalive_interval_secs = 86400\n",
                "nat.keepalive_interval_secs",
            ),
        ];
        for (text, key) in cases {
            assert_eq!(err_key(text), key, "{text}");
        }
        let e = err_key("[transport]\nbackend = \"epoll\"\n");
        assert!(e.contains("backend"), "{e}");
        let e = err_key("[credentials]\npool_size = 0\n");
        assert!(e.contains("pool_size"), "{e}");
        let e = err_key("[registrar]\nmin_expires = 7200\n");
        assert!(e.contains("registrar."), "{e}");
        let e = err_key("[asterisk]\nnodes = [\"not an address\"]\n");
        assert!(e.contains("nodes") || e.contains("address"), "{e}");
        for text in [
            "[asterisk]\nnodes = [\"not an address\"]\n",
            "[listen]\nudp = [\"127.0.0.1\"]\n",
            "[admin]\nlisten = \"localhost:80\"\n",
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains("expected IP:PORT"), "{text}: {e}");
        }
        for (text, key) in [
            ("[registrar]\nmin_expires = 7200\n", "registrar.min_expires"),
            ("[registrar]\nmax_expires = 30\n", "registrar.max_expires"),
            (
                "[registrar]\ndefault_expires = 10\n",
                "registrar.default_expires",
            ),
            ("[registrar]\nmax_expires = 1800\n", "registrar.max_expires"),
            (
                "[registrar]\ndefault_expires = 7200\n",
                "registrar.default_expires",
            ),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn nat_keepalives_take_defaults_and_can_be_switched_off() {
        use crate::core::{KeepaliveBindings, KeepaliveMethod};
        let c = Config::parse("").unwrap();
        assert_eq!(c.nat.keepalive_interval_secs, 30);
        assert_eq!(c.nat.keepalive_failures, 3);
        assert_eq!(c.nat.keepalive, KeepaliveMethod::Options);
        assert_eq!(c.nat.keepalive_bindings, KeepaliveBindings::Nated);
        let c = Config::parse(
            "[nat]\nkeepalive_interval_secs = 0\nkeepalive = \"crlf\"\nkeepalive_bindings = \"all\"\n",
        )
        .unwrap();
        assert_eq!(c.nat.keepalive_interval_secs, 0);
        assert_eq!(c.nat.keepalive, KeepaliveMethod::Crlf);
        assert_eq!(c.nat.keepalive_bindings, KeepaliveBindings::All);
        let e = err_key("[nat]\nkeepalive = \"stun\"\n");
        assert!(e.contains("stun"), "{e}");
    }

    #[test]
    fn farm_keys_take_defaults_and_can_be_switched_off() {
        let c = Config::parse("").unwrap();
        let a = &c.asterisk;
        assert_eq!(
            (a.probe_interval_ms, a.probe_failures, a.probe_successes),
            (5000, 3, 2)
        );
        assert_eq!(
            (a.replay_rate_per_sec, a.call_affinity),
            (500, CallAffinity::CallId)
        );
        assert_eq!(
            a.subscribe_events,
            ["dialog", "presence", "message-summary", "as-feature-event"]
        );
        let c = Config::parse(
            "[asterisk]\nnodes = [\"127.0.0.2:5080\", \"127.0.0.3:5080\"]\nweights = [1, 3]\n\
             call_affinity = \"user\"\nprobe_interval_ms = 0\nbusy_latency_ms = 0\n\
             subscribe_events = []\n",
        )
        .unwrap();
        assert_eq!(c.asterisk.weights, [1, 3]);
        assert_eq!(c.asterisk.call_affinity, CallAffinity::User);
        assert!(Config::parse("[asterisk]\ncall_affinity = \"node\"\n").is_err());
    }

    #[test]
    fn asterisk_matching() {
        let c = Config::parse("[asterisk]\nnodes = [\"127.0.0.2:5080\"]\n").unwrap();
        assert!(c.is_asterisk("127.0.0.2:5080".parse().unwrap()));
        assert!(!c.is_asterisk("127.0.0.2:5081".parse().unwrap()));
        let c =
            Config::parse("[asterisk]\nnodes = [\"127.0.0.2:5080\"]\nmatch = \"ip\"\n").unwrap();
        assert!(c.is_asterisk("127.0.0.2:9999".parse().unwrap()));
        assert!(!c.is_asterisk("127.0.0.3:5080".parse().unwrap()));
    }
}
