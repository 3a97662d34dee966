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
//! matching; `config.rs` the `[guard]` section.

mod addr;
mod ban;
mod config;
mod index;
mod rate;
mod scanner;
mod table;

#[cfg(test)]
mod tests;

use std::net::IpAddr;

pub use addr::Cidr;
pub use ban::BanReason;
pub use config::*;
pub use rate::Admit;
pub use scanner::{Scanner, DEFAULT_SCANNER_USER_AGENTS, MAX_NEEDLES, MAX_NEEDLE_LEN};

use addr::{ClientId, Exempt};
use ban::{BanPolicy, Bans};
use rate::RateLimiter;
use table::Hashing;

/// One ban, for `ctl` listings (serializes to JSON as is).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
    exempt: Exempt,
    ipv6_prefix: u8,
    rate: Option<RateLimiter>,
    bans: Bans,
    ban_on_failures: bool,
    scanner: Option<Scanner>,
}

impl Guard {
    /// Build from a validated `[guard]` section and the Asterisk nodes' addresses (exempt).
    pub fn new(cfg: &GuardConfig, asterisk: &[IpAddr]) -> Result<Guard, ConfigError> {
        cfg.validate()?;
        let mut nets = cfg.allow_nets()?;
        nets.extend(asterisk.iter().map(|&ip| Cidr::host(ip)));
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
        let policy = BanPolicy {
            ip_failures: cfg.ban_ip_failures,
            user_failures: cfg.ban_user_failures,
            window_ms: u64::from(cfg.ban_window_secs) * 1000,
            ban_ms: u64::from(cfg.ban_secs) * 1000,
        };
        Ok(Guard {
            hashing: Hashing::new(),
            exempt: Exempt::new(nets),
            ipv6_prefix: cfg.ipv6_prefix,
            rate,
            bans: Bans::new(policy, tracked, max_bans, cfg.shards),
            ban_on_failures: cfg.ban_enabled,
            scanner: cfg
                .scanner_enabled
                .then(|| Scanner::new(&cfg.scanner_user_agents)),
        })
    }

    fn id(&self, ip: IpAddr) -> ClientId {
        ClientId::of(ip, self.ipv6_prefix)
    }

    /// Whether `ip` is an Asterisk node or in `allow` (never limited, banned or checked).
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        self.exempt.contains(ip)
    }

    /// Spend one token of `ip`'s bucket: `Limited` means drop the datagram.
    pub fn admit(&self, ip: IpAddr, now_ms: u64) -> Admit {
        match &self.rate {
            Some(r) if !self.exempt.contains(ip) => r.admit(&self.hashing, self.id(ip), now_ms),
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
        self.scanner.as_ref().is_some_and(|s| s.matches(user_agent))
    }

    /// A failed digest authentication from `ip` for `user` (wrong password, unknown user,
    /// replayed nonce count): may ban `ip`. True when this failure issued a new ban.
    pub fn on_auth_failure(&self, ip: IpAddr, user: &str, now_ms: u64) -> bool {
        if !self.ban_on_failures || self.exempt.contains(ip) {
            return false;
        }
        self.bans
            .on_failure(&self.hashing, self.id(ip), user, now_ms)
    }

    /// A successful authentication: forgets `ip`'s failures if all were for `user`.
    pub fn on_auth_success(&self, ip: IpAddr, user: &str, _now_ms: u64) {
        if self.ban_on_failures && !self.exempt.contains(ip) {
            self.bans.on_success(&self.hashing, self.id(ip), user);
        }
    }

    /// Ban `ip` by hand for `ban_secs`; false when it is exempt or already banned.
    pub fn ban(&self, ip: IpAddr, now_ms: u64) -> bool {
        !self.exempt.contains(ip)
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
            .field("exempt", &self.exempt.len())
            .field("ipv6_prefix", &self.ipv6_prefix)
            .field("rate", &self.rate.is_some())
            .field("ban_on_failures", &self.ban_on_failures)
            .field("scanner", &self.scanner.as_ref().map(Scanner::len))
            .finish()
    }
}
