//! The core's own settings: what a worker's [`super::Core`] needs to know that does not change
//! per message. The server builds a [`CoreConfig`] from the configuration file
//! (`crate::server`); tests and benches build one with [`CoreConfig::new`]. Reloads publish a
//! new one through [`SharedConfig`].
//!
//! The listen addresses form the interface table: [`Local::Listen(i)`](super::Local) is
//! `interfaces[i]`, with the host and port written into Via and Record-Route for traffic on
//! it (its advertised address behind 1:1 NAT), and [`CoreConfig::asterisk_side`] names the
//! one facing Asterisk (the upstream sockets are on its IP).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Deserialize;

use crate::sip::Transport;

use super::branch::BranchKey;
use super::dialog_token::{self, DialogKey};
use super::flow::Local;
use super::response_source::ResponseSource;

/// `[timers]`: RFC 3261 §17 timer base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timers {
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub t4_ms: u64,
    /// Timer C: how long an INVITE may stay without a final response (RFC 3261 §16.6 (11)).
    pub timer_c_ms: u64,
    /// How long a server transaction absorbs retransmissions after a 2xx to an INVITE, or
    /// after the final response to any other request (RFC 3261 Timer J, RFC 6026 Timer L;
    /// Kamailio's `wt_timer`).
    pub server_linger_ms: u64,
    /// On SIGTERM, how long to wait for transactions in flight (new requests get 503).
    pub drain_ms: u64,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            timer_c_ms: 180_000,
            server_linger_ms: 5_000,
            drain_ms: 5_000,
        }
    }
}

/// How traffic from Asterisk is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    /// Source IP and port must equal a node (the seed's rule).
    #[default]
    IpPort,
    /// Source IP alone.
    Ip,
}

/// IP equality that treats an IPv4-mapped IPv6 address as the IPv4 address.
pub fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// One listen address and how the proxy names itself on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The bound address.
    pub addr: SocketAddr,
    /// Its transport (UDP, or a stream: TCP, TLS).
    pub transport: Transport,
    /// Host written into Via and Record-Route for traffic on this address: the advertised
    /// host behind 1:1 NAT (`[listen.advertise]`), else the bound IP (IPv6 in brackets).
    pub host: String,
    /// Port written with `host`.
    pub port: u16,
    /// `sip:host:port[;transport=tcp|tls];lr`, the Record-Route URI of this interface
    /// (without its token).
    pub record_route: String,
}

impl Interface {
    /// A UDP interface named by its own address.
    pub fn new(addr: SocketAddr) -> Interface {
        Interface::advertised(addr, Transport::Udp, &host_string(addr.ip()), addr.port())
    }

    /// An interface for `transport` named by its own address.
    pub fn with_transport(addr: SocketAddr, transport: Transport) -> Interface {
        Interface::advertised(addr, transport, &host_string(addr.ip()), addr.port())
    }

    /// An interface bound to `addr` for `transport`, announced as `host:port`.
    pub fn advertised(addr: SocketAddr, transport: Transport, host: &str, port: u16) -> Interface {
        let param = match transport {
            Transport::Udp => String::new(),
            t => format!(";transport={}", t.as_str()),
        };
        Interface {
            addr,
            transport,
            host: host.to_owned(),
            port,
            record_route: format!("sip:{host}:{port}{param};lr"),
        }
    }

    /// Whether `host:port` (from a URI) names this interface, bound or advertised.
    fn names(&self, host: &str, port: u16) -> bool {
        let host = bare(host);
        if port == self.port && bare(&self.host).eq_ignore_ascii_case(host) {
            return true;
        }
        port == self.addr.port()
            && host
                .parse::<IpAddr>()
                .is_ok_and(|ip| same_ip(ip, self.addr.ip()))
    }
}

/// The port of a URI that names none: 5061 over TLS, 5060 otherwise (RFC 3261 §19.1.2).
pub fn default_port(transport: Transport) -> u16 {
    if transport.is_secure() {
        5061
    } else {
        5060
    }
}

/// A URI host without the brackets of an IPv6 reference.
fn bare(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// An IP as it appears in a Via sent-by or URI host (IPv6 in brackets).
pub fn host_string(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Everything a worker's core needs to know that does not change per message.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The listen addresses, in the order the transport binds them ([`Local::Listen`]).
    pub interfaces: Vec<Interface>,
    /// The interface facing Asterisk: its IP carries the upstream sockets, its host goes
    /// into the Via of what they send.
    pub asterisk_side: u16,
    /// Other `host:port` names of this proxy (the Contact given to Asterisk when it is not
    /// an interface's address), recognised in request-URIs and Routes.
    pub aliases: Vec<(String, u16)>,
    /// Domains and addresses (request-URI hosts) that are local.
    pub local_domains: Vec<String>,
    pub asterisk: Vec<SocketAddr>,
    pub match_mode: MatchMode,
    pub realm: String,
    pub timers: Timers,
    pub max_message_bytes: usize,
    pub max_transactions: usize,
    pub max_parked: usize,
    /// REGISTER responses kept per worker for retransmissions.
    pub register_cache: usize,
    pub n_workers: usize,
    /// The digest user must be the From user of every request from a phone (the To user is
    /// always checked for REGISTER).
    pub check_from_user: bool,
    /// Key of the Record-Route tokens (see `dialog_token.rs`).
    pub dialog_key: DialogKey,
    /// Key of the branch MACs (see `branch.rs`).
    pub branch_key: BranchKey,
    /// Where responses for Asterisk nodes may come from (see `response_source.rs`).
    pub response_source: ResponseSource,
    /// Other addresses of the Asterisk hosts responses are accepted from (multihomed).
    pub response_addresses: Vec<IpAddr>,
    /// Every failed authentication is answered this long after its request arrived
    /// (0 = at once), so a wrong user and a wrong password take the same time.
    pub auth_failure_delay_ms: u64,
    /// The answer to a phone's request for a known user with no binding: 404 (like an
    /// unknown user, so phones cannot enumerate users) or 480. Asterisk always gets 480.
    pub unregistered_code: u16,
    /// Receive backlog (bytes) above which new requests from phones get 503 (0 = never);
    /// see [`super::Core::set_backlog`].
    pub shed_backlog_bytes: u64,
    /// Event packages whose SUBSCRIBE and PUBLISH from phones go to an Asterisk node
    /// (compared case-insensitively with the Event header's type); others go phone to
    /// phone.
    pub subscribe_events: Vec<String>,
    /// NAT keepalives towards registered phones (`[nat]`).
    pub nat: super::keepalive::NatConfig,
}

/// The events Asterisk serves by default: BLF (`dialog`), presence, MWI
/// (`message-summary`), DND/forwarding sync (`as-feature-event`).
pub const DEFAULT_SUBSCRIBE_EVENTS: [&str; 4] =
    ["dialog", "presence", "message-summary", "as-feature-event"];

impl CoreConfig {
    /// A configuration listening on `listen` (facing Asterisk on the first), with the
    /// Asterisk nodes `asterisk`, realm `realm`, and every other value at its default. The
    /// listen addresses, their IPs and the realm are local domains.
    pub fn new(listen: &[SocketAddr], asterisk: &[SocketAddr], realm: &str) -> CoreConfig {
        let interfaces: Vec<Interface> = listen.iter().map(|&a| Interface::new(a)).collect();
        let mut cfg = CoreConfig {
            interfaces,
            asterisk_side: 0,
            aliases: Vec::new(),
            local_domains: Vec::new(),
            asterisk: asterisk.to_vec(),
            match_mode: MatchMode::IpPort,
            realm: realm.to_owned(),
            timers: Timers::default(),
            max_message_bytes: 16 * 1024,
            max_transactions: 131_072,
            max_parked: 4096,
            register_cache: 16_384,
            n_workers: 1,
            check_from_user: true,
            dialog_key: DialogKey::new(""),
            branch_key: BranchKey::new(""),
            response_source: ResponseSource::Node,
            response_addresses: Vec::new(),
            auth_failure_delay_ms: 0,
            unregistered_code: 404,
            shed_backlog_bytes: 1 << 20,
            subscribe_events: DEFAULT_SUBSCRIBE_EVENTS.map(str::to_owned).to_vec(),
            nat: super::keepalive::NatConfig::default(),
        };
        cfg.derive_local_domains(&[]);
        cfg
    }

    /// Set the local domains: `extra` (the configured ones), then every interface's bound
    /// and advertised host (with and without port), the aliases and the realm.
    pub fn derive_local_domains(&mut self, extra: &[String]) {
        let mut d: Vec<String> = extra.to_vec();
        for i in &self.interfaces {
            d.push(i.addr.ip().to_string());
            d.push(i.addr.to_string());
            d.push(bare(&i.host).to_owned());
        }
        for (h, _) in &self.aliases {
            d.push(bare(h).to_owned());
        }
        d.push(self.realm.clone());
        d.sort();
        d.dedup();
        self.local_domains = d;
    }

    /// The Record-Route URI (with its token) this proxy writes on listen address `i` for
    /// dialogs of `call_id` (for tests and tools that build in-dialog requests).
    pub fn dialog_route(&self, i: usize, call_id: &str) -> String {
        let base = self
            .interfaces
            .get(i)
            .map(|i| i.record_route.as_str())
            .unwrap_or("");
        dialog_token::RecordRoute::new(base, false, &self.dialog_key, call_id)
            .as_str()
            .to_owned()
    }

    /// The interface a local socket belongs to (the upstream sockets are on
    /// [`CoreConfig::asterisk_side`]).
    pub fn interface_index(&self, local: Local) -> u16 {
        match local {
            Local::Listen(i) => i,
            Local::Upstream => self.asterisk_side,
        }
    }

    /// The interface of a local socket (the first one if the index is stale).
    pub fn interface(&self, local: Local) -> Option<&Interface> {
        let i = usize::from(self.interface_index(local));
        self.interfaces.get(i).or(self.interfaces.first())
    }

    /// The interface a `host:port` over `transport` (from a Route or request-URI) names,
    /// if any; a port left out is the transport's default.
    pub fn interface_named(
        &self,
        host: &str,
        port: Option<u16>,
        transport: Transport,
    ) -> Option<u16> {
        let port = port.unwrap_or(default_port(transport));
        self.interfaces
            .iter()
            .position(|i| i.transport == transport && i.names(host, port))
            .and_then(|i| u16::try_from(i).ok())
    }

    /// The transport of a local socket (the upstream sockets are UDP; UDP for a stale
    /// index).
    pub fn transport_of(&self, local: Local) -> Transport {
        match local {
            Local::Upstream => Transport::Udp,
            Local::Listen(_) => self
                .interface(local)
                .map_or(Transport::Udp, |i| i.transport),
        }
    }

    pub fn is_asterisk(&self, src: SocketAddr) -> bool {
        self.asterisk.iter().any(|n| match self.match_mode {
            MatchMode::IpPort => *n == src || (same_ip(n.ip(), src.ip()) && n.port() == src.port()),
            MatchMode::Ip => same_ip(n.ip(), src.ip()),
        })
    }

    /// Index of the Asterisk node at `dst`, if it is one.
    pub fn asterisk_index(&self, dst: SocketAddr) -> Option<usize> {
        self.asterisk.iter().position(|n| *n == dst)
    }

    /// Whether a request-URI host (with optional port) names this proxy or a local domain.
    /// A host that is one of our own addresses must come with one of our ports (or none).
    pub fn is_local_host(&self, host: &str, port: Option<u16>) -> bool {
        let b = bare(host);
        if !self.local_domains.iter().any(|d| d.eq_ignore_ascii_case(b)) {
            return false;
        }
        match port {
            None => true,
            Some(p) => self.is_us(host, Some(p)) || !self.is_our_host(b),
        }
    }

    /// Whether `host` is one of the hosts this proxy is reached at (any port).
    fn is_our_host(&self, host: &str) -> bool {
        let ip = host.parse::<IpAddr>().ok();
        let same = |h: &str| {
            let h = bare(h);
            h.eq_ignore_ascii_case(host)
                || ip.is_some_and(|ip| h.parse::<IpAddr>().is_ok_and(|x| same_ip(x, ip)))
        };
        self.interfaces
            .iter()
            .any(|i| same(&i.host) || ip.is_some_and(|ip| same_ip(ip, i.addr.ip())))
            || self.aliases.iter().any(|(h, _)| same(h))
    }

    /// Whether a URI `host:port` is this proxy itself (an address it listens on, advertises
    /// or gives Asterisk as its Contact), over any transport.
    pub fn is_us(&self, host: &str, port: Option<u16>) -> bool {
        let p = port.unwrap_or(5060);
        self.interfaces.iter().any(|i| i.names(host, p))
            || self
                .aliases
                .iter()
                .any(|(h, ap)| *ap == p && bare(h).eq_ignore_ascii_case(bare(host)))
    }
}

/// The configuration the workers' cores should run with: a reload publishes a new one and
/// bumps the generation; each worker compares the generation (one relaxed load) before its
/// work and takes the new configuration when it changed.
#[derive(Debug)]
pub struct SharedConfig {
    generation: AtomicU64,
    current: Mutex<Arc<CoreConfig>>,
}

impl SharedConfig {
    pub fn new(cfg: Arc<CoreConfig>) -> Self {
        SharedConfig {
            generation: AtomicU64::new(0),
            current: Mutex::new(cfg),
        }
    }

    /// The generation of the configuration published last.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The configuration published last, and its generation.
    pub fn current(&self) -> (u64, Arc<CoreConfig>) {
        let cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        (self.generation.load(Ordering::Acquire), cur.clone())
    }

    /// Publish `cfg` to every worker (they pick it up at their next datagram, wake or timer).
    pub fn publish(&self, cfg: Arc<CoreConfig>) {
        let mut cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        *cur = cfg;
        self.generation.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_sided() -> CoreConfig {
        let listen: [SocketAddr; 2] = [
            "10.0.0.5:5060".parse().unwrap(),
            "192.168.1.1:5070".parse().unwrap(),
        ];
        let mut c = CoreConfig::new(
            &listen,
            &["192.168.1.9:5080".parse().unwrap()],
            "example.com",
        );
        c.interfaces[0] = Interface::advertised(listen[0], Transport::Udp, "203.0.113.7", 5060);
        c.interfaces.push(Interface::with_transport(
            "192.168.1.1:5061".parse().unwrap(),
            Transport::Tls,
        ));
        c.asterisk_side = 1;
        c.aliases.push(("sip.example.com".to_owned(), 5060));
        c.derive_local_domains(&["example.com".to_owned()]);
        c
    }

    #[test]
    fn interfaces_are_named_by_bound_and_advertised_address() {
        let c = two_sided();
        let udp = Transport::Udp;
        assert_eq!(c.interface_named("10.0.0.5", None, udp), Some(0));
        assert_eq!(c.interface_named("203.0.113.7", Some(5060), udp), Some(0));
        assert_eq!(c.interface_named("203.0.113.7", Some(5061), udp), None);
        assert_eq!(c.interface_named("192.168.1.1", Some(5070), udp), Some(1));
        assert_eq!(c.interface_named("192.168.1.1", None, udp), None);
        assert_eq!(
            c.interface_named("192.168.1.1", None, Transport::Tls),
            Some(2)
        );
        assert_eq!(c.interface_named("192.168.1.1", Some(5061), udp), None);
        assert_eq!(
            c.interfaces[2].record_route,
            "sip:192.168.1.1:5061;transport=tls;lr"
        );
        assert!(c.is_us("sip.example.com", None));
        assert!(c.is_us("SIP.example.com", Some(5060)));
        assert!(!c.is_us("192.168.1.9", Some(5080)));
        assert_eq!(c.interface_index(Local::Upstream), 1);
        assert_eq!(
            c.interface(Local::Listen(0))
                .map(|i| i.record_route.as_str()),
            Some("sip:203.0.113.7:5060;lr")
        );
    }

    #[test]
    fn local_hosts_need_our_port_when_they_are_our_addresses() {
        let c = two_sided();
        assert!(c.is_local_host("example.com", None));
        assert!(c.is_local_host("example.com", Some(5099)));
        assert!(c.is_local_host("203.0.113.7", None));
        assert!(c.is_local_host("203.0.113.7", Some(5060)));
        assert!(!c.is_local_host("203.0.113.7", Some(5099)));
        assert!(c.is_local_host("10.0.0.5", Some(5060)));
        assert!(!c.is_local_host("10.0.0.5", Some(5099)));
        assert!(!c.is_local_host("other.org", None));
    }
}
