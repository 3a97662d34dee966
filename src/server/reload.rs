//! Live configuration reload (SIGHUP and `sipfront ctl reload`).
//!
//! The file the proxy started from is read and validated again; if it is unreadable or
//! invalid nothing changes and the error names the key. Otherwise every changed key is
//! either applied at once or reported as needing a restart (the proxy keeps running with
//! the old value, and keeps reporting it on later reloads until it restarts):
//!
//! - live: `[asterisk]` (nodes, weights, advertise, match, register_mode,
//!   refresh_min_interval_secs, call_affinity, the probe, replay and busy keys,
//!   subscribe_events: a node kept keeps its state and drain flag, a new one gets the
//!   registrations replayed),
//!   `[timers]`, `[limits]`, `[nat]`, `[log] level`, `domain.local`, `auth.check_from_user`,
//!   `auth.failure_delay_ms`, `registrar.unregistered_answer`,
//!   `credentials.refresh_secs` and `credentials.negative_ttl_secs`, and `[guard]` except the
//!   table sizes;
//! - restart: `[listen]`, `domain.realm`, the other `[auth]` and `[credentials]` keys,
//!   the other `[registrar]` keys, `[transport]`, `[admin]`, the `[guard]` table sizes (and turning on
//!   `rate_enabled`/`ban_enabled` when the proxy started without them).
//!
//! Each reload also reloads every credential from the database, as SIGHUP always did.
//!
//! Workers pick up a new core configuration through [`SharedConfig`]: the reload publishes
//! it and wakes every worker, which compares one generation counter before its next piece of
//! work. Transactions in progress keep the timers they were armed with.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::admin::ReloadReport;
use crate::asterisk::{
    Affinity, Farm, FarmError, FarmSettings, RegFwdError, RegFwdSettings, RegisterMode,
};
use crate::config::{CallAffinity, Config, ConfigError, RegisterMode as CfgRegisterMode};
use crate::core::SharedConfig;
use crate::db::{CredentialCache, RefreshHandle};
use crate::guard::Guard;
use crate::logging::LevelChange;
use crate::metrics::MetricsRegistry;
use crate::transport::tls::TlsContext;
use crate::transport::Waker;

use super::AsteriskRegFwd;

/// How long a reload waits for the credential refresher.
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    #[error("the proxy was started without a config file: nothing to reload")]
    NoConfigFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("asterisk: {0}")]
    Asterisk(#[from] RegFwdError),
    #[error("asterisk: {0}")]
    Farm(#[from] FarmError),
    #[error(transparent)]
    Guard(#[from] crate::guard::ConfigError),
    #[error(transparent)]
    Tls(#[from] crate::transport::tls::TlsError),
}

/// Everything a reload touches, shared by the signal handler and the admin API.
pub struct Reloader {
    pub(super) current: Mutex<Config>,
    pub(super) shared: Arc<SharedConfig>,
    pub(super) n_workers: usize,
    pub(super) regfwd: Arc<AsteriskRegFwd>,
    pub(super) guard: Arc<Guard>,
    pub(super) metrics: Arc<MetricsRegistry>,
    pub(super) cache: Arc<CredentialCache>,
    pub(super) refresh: Arc<RefreshHandle>,
    pub(super) farm: Arc<Farm>,
    /// One waker per worker (not the workers themselves: shutdown must own the only handle).
    pub(super) wakers: Vec<Waker>,
    /// The TLS context of the TLS listen addresses (its certificate is reloaded each time).
    pub(super) tls: Option<Arc<TlsContext>>,
    /// One reload at a time.
    pub(super) busy: Mutex<()>,
    /// Reloads applied / refused (for metrics; tests watch them to know a SIGHUP was done).
    pub(super) ok: AtomicU64,
    pub(super) failed: AtomicU64,
}

fn register_mode(cfg: &Config) -> RegisterMode {
    match cfg.asterisk.register_mode {
        CfgRegisterMode::All => RegisterMode::All,
        CfgRegisterMode::Hash => RegisterMode::Hash,
    }
}

/// The farm settings of a configuration.
pub(super) fn farm_settings(cfg: &Config) -> FarmSettings {
    let a = &cfg.asterisk;
    FarmSettings {
        nodes: a.nodes.clone(),
        weights: a.weights.clone(),
        affinity: match a.call_affinity {
            CallAffinity::CallId => Affinity::CallId,
            CallAffinity::User => Affinity::User,
        },
        register_mode: register_mode(cfg),
        probe_interval_ms: a.probe_interval_ms,
        probe_failures: a.probe_failures,
        probe_successes: a.probe_successes,
        replay_rate_per_sec: a.replay_rate_per_sec,
        busy_latency_ms: a.busy_latency_ms,
        busy_backoff_ms: a.busy_backoff_ms,
    }
}

/// The REGFWD settings of a configuration.
pub(super) fn regfwd_settings(cfg: &Config) -> RegFwdSettings {
    RegFwdSettings {
        nodes: cfg.asterisk.nodes.clone(),
        advertise: cfg.advertise().to_string(),
        mode: register_mode(cfg),
        refresh_min_interval_secs: cfg.asterisk.refresh_min_interval_secs,
        user_agent: concat!("sipfront/", env!("CARGO_PKG_VERSION")).to_owned(),
        max_users: cfg.registrar.max_aors,
    }
}

/// Compare fields of one section, pushing `"section.field"` for each that differs.
macro_rules! changed {
    ($out:expr, $old:expr, $new:expr, $section:literal, [$($field:ident),* $(,)?]) => {
        $(
            if $old.$field != $new.$field {
                $out.push(concat!($section, ".", stringify!($field)));
            }
        )*
    };
}

/// The keys that differ between `old` and `new`: (live, restart).
pub fn diff(old: &Config, new: &Config) -> (Vec<&'static str>, Vec<&'static str>) {
    let mut live = Vec::new();
    let mut restart = Vec::new();
    changed!(
        restart,
        old.listen,
        new.listen,
        "listen",
        [udp, tcp, tls, ws, wss, workers, asterisk_side, advertise]
    );
    changed!(live, old.tls, new.tls, "tls", [cert, key]);
    changed!(restart, old.tls, new.tls, "tls", [ca, min_version]);
    if old.tcp != new.tcp {
        restart.push("tcp");
    }
    if old.ws != new.ws {
        restart.push("ws");
    }
    changed!(restart, old.domain, new.domain, "domain", [realm]);
    changed!(live, old.domain, new.domain, "domain", [local]);
    changed!(
        live,
        old.asterisk,
        new.asterisk,
        "asterisk",
        [
            nodes,
            advertise,
            register_mode,
            refresh_min_interval_secs,
            weights,
            call_affinity,
            probe_interval_ms,
            probe_failures,
            probe_successes,
            replay_rate_per_sec,
            busy_latency_ms,
            busy_backoff_ms,
            subscribe_events,
            response_source,
            response_addresses
        ]
    );
    if old.asterisk.match_mode != new.asterisk.match_mode {
        live.push("asterisk.match");
    }
    changed!(
        live,
        old.timers,
        new.timers,
        "timers",
        [t1_ms, t2_ms, t4_ms, timer_c_ms, server_linger_ms, drain_ms]
    );
    changed!(
        live,
        old.limits,
        new.limits,
        "limits",
        [
            max_message_bytes,
            max_transactions_per_worker,
            max_parked_per_worker,
            register_cache_per_worker,
            shed_backlog_bytes
        ]
    );
    changed!(live, old.log, new.log, "log", [level]);
    changed!(
        live,
        old.nat,
        new.nat,
        "nat",
        [
            keepalive_interval_secs,
            keepalive_failures,
            keepalive,
            keepalive_bindings
        ]
    );
    changed!(restart, old.log, new.log, "log", [format]);
    changed!(
        live,
        old.auth,
        new.auth,
        "auth",
        [check_from_user, failure_delay_ms]
    );
    changed!(
        restart,
        old.auth,
        new.auth,
        "auth",
        [
            algorithms,
            nonce_secret,
            nonce_ttl_secs,
            allow_no_qop,
            bind_nonce_to_ip,
            replay_capacity,
            uri_check
        ]
    );
    changed!(
        live,
        old.credentials,
        new.credentials,
        "credentials",
        [refresh_secs, negative_ttl_secs]
    );
    changed!(
        restart,
        old.credentials,
        new.credentials,
        "credentials",
        [
            url,
            schema,
            table,
            user_column,
            password_column,
            realm_column,
            password_kind,
            pool_size,
            queue_size,
            keep_plain,
            connect_timeout_secs,
            reconnect_max_ms,
            max_negative,
            start_without_db
        ]
    );
    changed!(
        restart,
        old.registrar,
        new.registrar,
        "registrar",
        [
            min_expires,
            max_expires,
            default_expires,
            max_contacts,
            on_max_contacts,
            max_aors,
            nat,
            use_domain,
            persist,
            persist_interval_ms,
            persist_queue,
            expire_batch
        ]
    );
    changed!(
        live,
        old.registrar,
        new.registrar,
        "registrar",
        [unregistered_answer]
    );
    if old.transport != new.transport {
        restart.push("transport");
    }
    if old.hep != new.hep {
        restart.push("hep");
    }
    if old.admin != new.admin {
        restart.push("admin");
    }
    // `[guard]`: everything is live except what Guard::reconfigure reports.
    changed!(
        live,
        old.guard,
        new.guard,
        "guard",
        [
            allow,
            rate_enabled,
            rate_pps,
            rate_burst,
            ban_enabled,
            ban_ip_failures,
            ban_user_failures,
            ban_window_secs,
            ban_secs,
            scanner_enabled,
            scanner_user_agents
        ]
    );
    changed!(
        restart,
        old.guard,
        new.guard,
        "guard",
        [
            shards,
            max_tracked_ips,
            max_bans,
            max_tracked_failures,
            ipv6_prefix
        ]
    );
    // A key added to a section but not to the lists above must not go unreported: any
    // other difference in a section counts as the whole section needing a restart.
    let mut section = |differs: bool, name: &'static str| {
        let prefix = name.len();
        let listed = live.iter().chain(restart.iter()).any(|k: &&str| {
            k.get(..prefix) == Some(name) && k.as_bytes().get(prefix) == Some(&b'.')
        });
        if differs && !listed && !restart.contains(&name) {
            restart.push(name);
        }
    };
    section(old.listen != new.listen, "listen");
    section(old.domain != new.domain, "domain");
    section(old.asterisk != new.asterisk, "asterisk");
    section(old.timers != new.timers, "timers");
    section(old.limits != new.limits, "limits");
    section(old.log != new.log, "log");
    section(old.nat != new.nat, "nat");
    section(old.auth != new.auth, "auth");
    section(old.credentials != new.credentials, "credentials");
    section(old.registrar != new.registrar, "registrar");
    section(old.guard != new.guard, "guard");
    section(old.tls != new.tls, "tls");
    (live, restart)
}

/// `new` with every key that needs a restart put back to its value in `old` (what the
/// proxy actually runs with after the reload).
fn in_force(old: &Config, new: &Config, guard_restart: &[&'static str]) -> Config {
    let mut c = old.clone();
    c.domain.local.clone_from(&new.domain.local);
    c.asterisk = new.asterisk.clone();
    c.timers = new.timers;
    c.limits = new.limits;
    c.log.level.clone_from(&new.log.level);
    c.auth.check_from_user = new.auth.check_from_user;
    c.auth.failure_delay_ms = new.auth.failure_delay_ms;
    c.registrar.unregistered_answer = new.registrar.unregistered_answer;
    c.credentials.refresh_secs = new.credentials.refresh_secs;
    c.credentials.negative_ttl_secs = new.credentials.negative_ttl_secs;
    let sizes = old.guard.clone();
    c.guard = new.guard.clone();
    c.guard.shards = sizes.shards;
    c.guard.max_tracked_ips = sizes.max_tracked_ips;
    c.guard.max_bans = sizes.max_bans;
    c.guard.max_tracked_failures = sizes.max_tracked_failures;
    c.guard.ipv6_prefix = sizes.ipv6_prefix;
    c.guard.persist = sizes.persist.clone();
    if guard_restart.contains(&"guard.rate_enabled") {
        c.guard.rate_enabled = sizes.rate_enabled;
    }
    if guard_restart.contains(&"guard.ban_enabled") {
        c.guard.ban_enabled = sizes.ban_enabled;
    }
    c.tls.cert.clone_from(&new.tls.cert);
    c.tls.key.clone_from(&new.tls.key);
    c.source.clone_from(&new.source);
    c
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Reloader {
    /// The configuration in force.
    pub fn current(&self) -> Config {
        lock(&self.current).clone()
    }

    /// Read the config file again and apply it (see the module docs).
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let path = lock(&self.current)
            .source
            .clone()
            .ok_or(ReloadError::NoConfigFile)?;
        let r = Config::load(&path)
            .map_err(ReloadError::from)
            .and_then(|new| self.apply(&new));
        if r.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Reloads applied and refused so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Apply `new` (already validated).
    pub fn apply(&self, new: &Config) -> Result<ReloadReport, ReloadError> {
        let _one = lock(&self.busy);
        let old = self.current();
        // In a cluster without a configured secret, the one shared through Redis stays.
        let mut shared_secret = None;
        if old.cluster.is_some() && new.auth.nonce_secret.is_empty() {
            let mut c = new.clone();
            c.auth.nonce_secret.clone_from(&old.auth.nonce_secret);
            shared_secret = Some(c);
        }
        let new = shared_secret.as_ref().unwrap_or(new);
        let (mut applied, mut restart) = diff(&old, new);

        let asterisk_ips: Vec<IpAddr> = new.asterisk.nodes.iter().map(|a| a.ip()).collect();
        // Validate everything before changing anything.
        // The guard validates its section before changing anything; so does REGFWD here.
        let settings = regfwd_settings(new);
        settings.validate()?;
        let farm = farm_settings(new);
        farm.validate()?;

        // The certificate files are read again every time (a certificate replaced on disk
        // under the same name is the usual renewal); a bad or mismatched pair refuses the
        // whole reload and the certificate in force stays.
        let new_cert = match &self.tls {
            Some(tls) => Some(tls.prepare(&new.tls)?),
            None => None,
        };
        let guard_restart = self.guard.reconfigure(&new.guard, &asterisk_ips)?;
        if let (Some(tls), Some(cert)) = (&self.tls, new_cert) {
            tls.install(cert);
            if !applied.contains(&"tls.cert") {
                applied.push("tls.cert");
            }
        }
        for key in &guard_restart {
            applied.retain(|k| k != key);
            if !restart.contains(key) {
                restart.push(key);
            }
        }
        let next = in_force(&old, new, &guard_restart);
        self.regfwd.regfwd.reconfigure(&settings)?;
        self.farm.reconfigure(&farm, crate::transport::mono_ms())?;
        self.metrics.set_nodes(&next.asterisk.nodes);
        self.shared
            .publish(Arc::new(super::core_config(&next, self.n_workers)));
        for w in &self.wakers {
            w.wake();
        }
        self.cache
            .set_negative_ttl_ms(next.credentials.negative_ttl_secs.saturating_mul(1000));
        if old.credentials.refresh_secs != next.credentials.refresh_secs {
            self.refresh.set_period_secs(next.credentials.refresh_secs);
        }
        let mut report = ReloadReport {
            applied,
            restart_needed: restart,
            ..ReloadReport::default()
        };
        match crate::logging::set_level(&next.log.level) {
            Ok(LevelChange::Applied) => {}
            Ok(LevelChange::OverriddenByEnv) => {
                report.log_level_note =
                    Some("RUST_LOG is set and overrides [log] level".to_owned());
            }
            Err(e) => report.log_level_note = Some(e.to_string()),
        }
        *lock(&self.current) = next;
        self.ok.fetch_add(1, Ordering::Relaxed);
        match self.refresh.refresh_now(CREDENTIALS_TIMEOUT) {
            Ok(stats) => report.credential_users = Some(stats.users),
            Err(e) => report.credential_error = Some(e.to_string()),
        }
        tracing::info!(
            applied = ?report.applied,
            restart_needed = ?report.restart_needed,
            credential_users = ?report.credential_users,
            credential_error = ?report.credential_error,
            "configuration reloaded"
        );
        if !report.restart_needed.is_empty() {
            tracing::warn!(
                keys = ?report.restart_needed,
                "changed settings that need a restart are still running with their old values"
            );
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        Config::default()
    }

    #[test]
    fn nat_keepalive_keys_are_live() {
        let mut new = base();
        new.nat.keepalive_interval_secs = 0;
        new.nat.keepalive_failures = 5;
        assert_eq!(
            diff(&base(), &new),
            (
                vec!["nat.keepalive_interval_secs", "nat.keepalive_failures"],
                vec![]
            )
        );
    }

    #[test]
    fn shedding_threshold_is_live() {
        let mut new = base();
        new.limits.shed_backlog_bytes = 65_536;
        assert_eq!(
            diff(&base(), &new),
            (vec!["limits.shed_backlog_bytes"], vec![])
        );
    }

    #[test]
    fn farm_keys_are_live() {
        let mut new = base();
        new.asterisk.weights = vec![2];
        new.asterisk.call_affinity = CallAffinity::User;
        new.asterisk.probe_interval_ms = 1000;
        new.asterisk.replay_rate_per_sec = 50;
        new.asterisk.busy_latency_ms = 0;
        new.asterisk.subscribe_events = vec!["dialog".into()];
        let (live, restart) = diff(&base(), &new);
        assert_eq!(
            live,
            [
                "asterisk.weights",
                "asterisk.call_affinity",
                "asterisk.probe_interval_ms",
                "asterisk.replay_rate_per_sec",
                "asterisk.busy_latency_ms",
                "asterisk.subscribe_events",
            ]
        );
        assert!(restart.is_empty(), "{restart:?}");
        let next = in_force(&base(), &new, &[]);
        assert_eq!(next.asterisk, new.asterisk);
        let f = farm_settings(&next);
        assert_eq!((f.weights, f.affinity), (vec![2], Affinity::User));
        assert_eq!((f.probe_interval_ms, f.busy_latency_ms), (1000, 0));
    }

    #[test]
    fn unchanged_config_changes_nothing() {
        assert_eq!(diff(&base(), &base()), (vec![], vec![]));
    }

    #[test]
    fn live_and_restart_keys_are_told_apart() {
        let old = base();
        let mut new = base();
        new.asterisk.nodes = vec!["127.0.0.2:5090".parse().unwrap()];
        new.asterisk.match_mode = crate::core::MatchMode::Ip;
        new.limits.max_parked_per_worker = 7;
        new.timers.timer_c_ms = 90_000;
        new.log.level = "debug".into();
        new.auth.check_from_user = !old.auth.check_from_user;
        new.credentials.refresh_secs = 5;
        new.guard.rate_pps = 1;
        new.guard.shards = 3;
        new.listen.workers = 9;
        new.domain.realm = "other".into();
        new.auth.nonce_ttl_secs = 1;
        new.credentials.pool_size = 1;
        new.registrar.max_expires = 60;
        new.transport.recv_batch = 1;
        new.admin.enabled = !old.admin.enabled;
        let (live, restart) = diff(&old, &new);
        assert_eq!(
            live,
            [
                "asterisk.nodes",
                "asterisk.match",
                "timers.timer_c_ms",
                "limits.max_parked_per_worker",
                "log.level",
                "auth.check_from_user",
                "credentials.refresh_secs",
                "guard.rate_pps",
            ]
        );
        assert_eq!(
            restart,
            [
                "listen.workers",
                "domain.realm",
                "auth.nonce_ttl_secs",
                "credentials.pool_size",
                "registrar.max_expires",
                "transport",
                "admin",
                "guard.shards",
            ]
        );

        // What runs afterwards: live keys new, restart keys old.
        let next = in_force(&old, &new, &[]);
        assert_eq!(next.asterisk.nodes, new.asterisk.nodes);
        assert_eq!(next.limits.max_parked_per_worker, 7);
        assert_eq!(next.guard.rate_pps, 1);
        assert_eq!(next.listen.workers, old.listen.workers);
        assert_eq!(next.domain.realm, old.domain.realm);
        assert_eq!(next.guard.shards, old.guard.shards);
        assert_eq!(next.registrar, old.registrar);
        // So a later reload of the same file reports only the restart keys again.
        let (live, restart) = diff(&next, &new);
        assert!(live.is_empty(), "{live:?}");
        assert_eq!(restart.len(), 8);
    }

    #[test]
    fn guard_switches_that_need_a_restart_keep_their_old_value() {
        let mut old = base();
        old.guard.rate_enabled = false;
        let new = base();
        let next = in_force(&old, &new, &["guard.rate_enabled"]);
        assert!(!next.guard.rate_enabled);
        let next = in_force(&old, &new, &[]);
        assert!(next.guard.rate_enabled);
    }
}
