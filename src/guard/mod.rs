//! Protection of the edge: per-source rate limiting, failed-authentication bans and scanner
//! User-Agent drops, shared by all workers (one [`Guard`] behind an `Arc`).
//!
//! Data flow, per datagram (the core calls these; see `docs/guard.md`):
//! 1. before parsing: [`Guard::is_banned`] (one atomic load while nothing is banned), then
//!    [`Guard::admit`] (one token from the source's bucket) — drop on `true` / `Limited`;
//! 2. after parsing a request: [`Guard::is_scanner`] on its User-Agent — drop on `true`;
//! 3. after digest verification: [`Guard::on_auth_failure`] / [`Guard::on_auth_success`],
//!    which may ban the source.
//!
//! Operators list and lift bans through [`Guard::bans`], [`Guard::ban`] and [`Guard::unban`],
//! and metrics read [`Guard::stats`].
//!
//! A source is its IP address, or its IPv6 prefix of `ipv6_prefix` bits. The Asterisk nodes
//! and the `allow` networks are exempt from all three protections. All state sits in bounded,
//! lock-striped tables (`table.rs`) sized when the guard is built: the packet path takes one
//! stripe lock for O(1) work and never allocates. Time is the caller's `now_ms`.
//!
//! What lives where: `addr.rs` source identities and CIDRs; `table.rs` the striped LRU table
//! over `index.rs`, a fixed open-addressing index;
//! `rate.rs` token buckets; `ban.rs` failure counters and bans; `scanner.rs` User-Agent
//! matching; `persist.rs` the ban file of `persist` and its writer thread; `config.rs` the
//! `[guard]` section.

mod addr;
mod ban;
mod config;
mod index;
mod persist;
mod rate;
mod scanner;
mod table;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

pub use addr::Cidr;
pub use ban::BanReason;
pub use config::*;
pub use persist::{BanFile, BanPersister, PersistError};
pub use rate::Admit;
pub use scanner::{Scanner, DEFAULT_SCANNER_USER_AGENTS, MAX_NEEDLES, MAX_NEEDLE_LEN};

use addr::{ClientId, Exempt};
use ban::{BanPolicy, Bans};
use rate::RateLimiter;
use table::Hashing;

/// One ban, for `ctl` listings and the `persist` file (serializes to JSON as is).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BanInfo {
    /// The banned address (an IPv6 prefix's network address).
    pub ip: IpAddr,
    /// 32 for IPv4; `ipv6_prefix` for IPv6.
    pub prefix_len: u8,
    pub since_ms: u64,
    pub until_ms: u64,
    pub reason: BanReason,
}

/// Counters for metrics, summed over stripes at read time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GuardStats {
    /// Datagrams dropped by the rate limiter.
    pub limited: u64,
    /// Datagrams dropped because their source was banned.
    pub banned_drops: u64,
    /// Bans issued (failures and manual).
    pub bans_issued: u64,
    /// Bans in the table now (expired ones linger until looked up or listed).
    pub bans_active: u64,
    /// Sources with a rate bucket now.
    pub tracked_ips: u64,
    /// Buckets forgotten to stay within `max_tracked_ips`.
    pub evicted_ips: u64,
}

/// Rate limiter, ban list and scanner filter, shared by all workers.
pub struct Guard {
    hashing: Hashing,
    /// Asterisk nodes + `allow`; a reload swaps it.
    exempt: ArcSwap<Exempt>,
    ipv6_prefix: u8,
    /// Built when `rate_enabled` was on at start; `rate_on` switches it live.
    rate: Option<RateLimiter>,
    rate_on: AtomicBool,
    bans: Bans,
    ban_on_failures: AtomicBool,
    /// Whether the ban tables were sized for failure bans at start.
    ban_tables: bool,
    scanner: ArcSwapOption<Scanner>,
    /// The table sizes fixed at start (a reload cannot change them).
    sizes: TableSizes,
    /// `persist` at start (its writer thread is started once; a reload cannot move it).
    persist: String,
}

/// The `[guard]` keys that size tables: fixed until a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TableSizes {
    shards: usize,
    max_tracked_ips: usize,
    max_bans: usize,
    max_tracked_failures: usize,
    ipv6_prefix: u8,
}

impl TableSizes {
    fn of(cfg: &GuardConfig) -> Self {
        TableSizes {
            shards: cfg.shards,
            max_tracked_ips: cfg.max_tracked_ips,
            max_bans: cfg.max_bans,
            max_tracked_failures: cfg.max_tracked_failures,
            ipv6_prefix: cfg.ipv6_prefix,
        }
    }
}

fn ban_policy(cfg: &GuardConfig) -> BanPolicy {
    BanPolicy {
        ip_failures: cfg.ban_ip_failures,
        user_failures: cfg.ban_user_failures,
        window_ms: u64::from(cfg.ban_window_secs) * 1000,
        ban_ms: u64::from(cfg.ban_secs) * 1000,
    }
}

fn exempt_nets(cfg: &GuardConfig, asterisk: &[IpAddr]) -> Result<Exempt, ConfigError> {
    let mut nets = cfg.allow_nets()?;
    nets.extend(asterisk.iter().map(|&ip| Cidr::host(ip)));
    Ok(Exempt::new(nets))
}

impl Guard {
    /// Build from a validated `[guard]` section and the Asterisk nodes' addresses (exempt).
    pub fn new(cfg: &GuardConfig, asterisk: &[IpAddr]) -> Result<Guard, ConfigError> {
        cfg.validate()?;
        let exempt = exempt_nets(cfg, asterisk)?;
        let rate = cfg.rate_enabled.then(|| {
            RateLimiter::new(
                cfg.rate_pps,
                cfg.rate_burst,
                cfg.max_tracked_ips,
                cfg.shards,
            )
        });
        // Without bans on failures, the ban table still serves manual bans: keep it small.
        let (tracked, max_bans) = if cfg.ban_enabled {
            (cfg.max_tracked_failures, cfg.max_bans)
        } else {
            (1, cfg.max_bans.min(1024))
        };
        Ok(Guard {
            hashing: Hashing::new(),
            exempt: ArcSwap::from_pointee(exempt),
            ipv6_prefix: cfg.ipv6_prefix,
            rate_on: AtomicBool::new(rate.is_some()),
            rate,
            bans: Bans::new(ban_policy(cfg), tracked, max_bans, cfg.shards),
            ban_on_failures: AtomicBool::new(cfg.ban_enabled),
            ban_tables: cfg.ban_enabled,
            scanner: ArcSwapOption::from_pointee(
                cfg.scanner_enabled
                    .then(|| Scanner::new(&cfg.scanner_user_agents)),
            ),
            sizes: TableSizes::of(cfg),
            persist: cfg.persist.clone(),
        })
    }

    /// Apply a reloaded `[guard]` section (and the reloaded Asterisk addresses, which are
    /// exempt): allow list, rates, ban thresholds and durations, scanner list, and switching
    /// each protection off (or back on). Returns the keys that changed but can only take
    /// effect after a restart: the table sizes, and turning on `rate_enabled` or
    /// `ban_enabled` when the proxy started without them (their tables were not built).
    /// Counters, buckets, failure counts and bans in force are kept.
    pub fn reconfigure(
        &self,
        cfg: &GuardConfig,
        asterisk: &[IpAddr],
    ) -> Result<Vec<&'static str>, ConfigError> {
        cfg.validate()?;
        let exempt = exempt_nets(cfg, asterisk)?;
        let mut restart = Vec::new();
        let now = TableSizes::of(cfg);
        let was = self.sizes;
        for (changed, key) in [
            (now.shards != was.shards, "guard.shards"),
            (
                now.max_tracked_ips != was.max_tracked_ips,
                "guard.max_tracked_ips",
            ),
            (now.max_bans != was.max_bans, "guard.max_bans"),
            (
                now.max_tracked_failures != was.max_tracked_failures,
                "guard.max_tracked_failures",
            ),
            (now.ipv6_prefix != was.ipv6_prefix, "guard.ipv6_prefix"),
            (cfg.persist != self.persist, "guard.persist"),
        ] {
            if changed {
                restart.push(key);
            }
        }
        self.exempt.store(Arc::new(exempt));
        match &self.rate {
            Some(r) => {
                r.set_rate(cfg.rate_pps, cfg.rate_burst);
                self.rate_on.store(cfg.rate_enabled, Ordering::Relaxed);
            }
            None if cfg.rate_enabled => restart.push("guard.rate_enabled"),
            None => {}
        }
        self.bans.set_policy(ban_policy(cfg));
        if cfg.ban_enabled && !self.ban_tables {
            restart.push("guard.ban_enabled");
        } else {
            self.ban_on_failures
                .store(cfg.ban_enabled, Ordering::Relaxed);
        }
        self.scanner.store(
            cfg.scanner_enabled
                .then(|| Arc::new(Scanner::new(&cfg.scanner_user_agents))),
        );
        Ok(restart)
    }

    fn id(&self, ip: IpAddr) -> ClientId {
        ClientId::of(ip, self.ipv6_prefix)
    }

    /// Whether `ip` is an Asterisk node or in `allow` (never limited, banned or checked).
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        self.exempt.load().contains(ip)
    }

    /// Spend one token of `ip`'s bucket: `Limited` means drop the datagram.
    pub fn admit(&self, ip: IpAddr, now_ms: u64) -> Admit {
        match &self.rate {
            Some(r) if self.rate_on.load(Ordering::Relaxed) && !self.is_exempt(ip) => {
                r.admit(&self.hashing, self.id(ip), now_ms)
            }
            _ => Admit::Ok,
        }
    }

    /// Whether datagrams from `ip` are to be dropped because it is banned (counted).
    pub fn is_banned(&self, ip: IpAddr, now_ms: u64) -> bool {
        // Exempt sources never enter the ban table (`ban` and `on_auth_failure` refuse them).
        self.bans.is_banned(&self.hashing, self.id(ip), now_ms)
    }

    /// Whether `user_agent` (a User-Agent header value) names a known scanner.
    pub fn is_scanner(&self, user_agent: &[u8]) -> bool {
        self.scanner
            .load()
            .as_ref()
            .is_some_and(|s| s.matches(user_agent))
    }

    /// A failed digest authentication from `ip` for `user` (wrong password, unknown user,
    /// replayed nonce count): may ban `ip`. True when this failure issued a new ban.
    pub fn on_auth_failure(&self, ip: IpAddr, user: &str, now_ms: u64) -> bool {
        if !self.ban_on_failures.load(Ordering::Relaxed) || self.is_exempt(ip) {
            return false;
        }
        self.bans
            .on_failure(&self.hashing, self.id(ip), user, now_ms)
    }

    /// A successful authentication: forgets `ip`'s failures if all were for `user`.
    pub fn on_auth_success(&self, ip: IpAddr, user: &str, _now_ms: u64) {
        if self.ban_on_failures.load(Ordering::Relaxed) && !self.is_exempt(ip) {
            self.bans.on_success(&self.hashing, self.id(ip), user);
        }
    }

    /// Ban `ip` by hand for `ban_secs`; false when it is exempt or already banned.
    pub fn ban(&self, ip: IpAddr, now_ms: u64) -> bool {
        !self.is_exempt(ip)
            && self
                .bans
                .ban(&self.hashing, self.id(ip), now_ms, BanReason::Manual)
    }

    /// Lift `ip`'s ban (its whole IPv6 prefix) and forget its failures; whether it was banned.
    pub fn unban(&self, ip: IpAddr) -> bool {
        self.bans.unban(&self.hashing, self.id(ip))
    }

    /// Live bans, oldest first (a full scan: for `ctl`, not for the packet path).
    pub fn bans(&self, now_ms: u64) -> Vec<BanInfo> {
        self.bans.list(now_ms, self.ipv6_prefix)
    }

    /// Changes to the ban list so far (bans, extensions, unbans): a writer of the `persist`
    /// file saves when this moved.
    pub fn ban_generation(&self) -> u64 {
        self.bans.generation()
    }

    /// Put back bans read from the `persist` file; those over at `now_ms` or for exempt
    /// addresses are dropped. Returns how many were restored.
    pub fn restore_bans(&self, bans: &[BanInfo], now_ms: u64) -> usize {
        bans.iter()
            .filter(|b| !self.is_exempt(b.ip))
            .filter(|b| {
                self.bans.restore(
                    &self.hashing,
                    self.id(b.ip),
                    (b.since_ms, b.until_ms),
                    b.reason.clone(),
                    now_ms,
                )
            })
            .count()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> GuardStats {
        let (limited, tracked_ips, evicted_ips) =
            self.rate.as_ref().map_or((0, 0, 0), RateLimiter::stats);
        let (banned_drops, bans_issued, bans_active) = self.bans.stats();
        GuardStats {
            limited,
            banned_drops,
            bans_issued,
            bans_active,
            tracked_ips,
            evicted_ips,
        }
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("exempt", &self.exempt.load().len())
            .field("ipv6_prefix", &self.ipv6_prefix)
            .field("rate", &self.rate.is_some())
            .field("ban_on_failures", &self.ban_on_failures)
            .field("scanner", &self.scanner.load().as_ref().map(|s| s.len()))
            .finish()
    }
}
