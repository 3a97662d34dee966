//! Wiring: builds every layer from the configuration and starts the workers.
//!
//! Start order: credentials (load the whole table, start the refresher and the miss pool) →
//! digest authenticator → registrar (reload persisted bindings, start write-behind) → the
//! Asterisk farm and REGFWD policy → one [`Core`] per worker inside the transport's threads
//! (then the farm gets the workers' wakers). Stop order is the
//! reverse: workers first (no new work), then the location table is flushed to disk.
//!
//! Each worker gets a [`WorkerMetrics`](crate::metrics::WorkerMetrics) slot of one
//! [`MetricsRegistry`]; when `[admin] enabled`, the admin server ([`crate::admin`]) starts
//! last with handles to the registry, registrar, credential cache, refresher, pool, REGFWD
//! counters, the guard (bans) and the transport's counters, and stops first.

mod admin_ports;
mod core_config;
mod ports;
pub mod reload;
mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admin::{AdminError, AdminServer, AdminState, ReloadReport};
use crate::asterisk::{Farm, FarmError, RegFwd, RegFwdError};
use crate::auth::{AuthError, Authenticator};
use crate::config::Config;
use crate::core::{Core, Ports, SharedConfig};
use crate::db::{CredentialService, DbError, LookupPool, RefreshHandle};
use crate::guard::Guard;
use crate::metrics::MetricsRegistry;
use crate::registrar::{
    ConfigError as RegistrarConfigError, PersistError, Persister, Registrar, SipEdge,
};
use crate::transport::{TransportError, WorkerSet};

pub use core_config::core_config;
pub use ports::{AsteriskFarm, AsteriskRegFwd, CacheAuth};
pub use reload::{ReloadError, Reloader};
pub use worker::Worker;

/// Why the proxy could not start (or stop cleanly).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("credentials: {0}")]
    Credentials(#[from] DbError),
    #[error("auth: {0}")]
    Auth(#[from] AuthError),
    #[error("registrar: {0}")]
    Registrar(#[from] RegistrarConfigError),
    #[error("location persistence: {0}")]
    Persist(#[from] PersistError),
    #[error("asterisk: {0}")]
    RegFwd(#[from] RegFwdError),
    #[error("asterisk: {0}")]
    Farm(#[from] FarmError),
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    #[error("{0}")]
    Guard(#[from] crate::guard::ConfigError),
    #[error("admin: {0}")]
    Admin(#[from] AdminError),
}

/// A running proxy.
pub struct Server {
    workers: Arc<WorkerSet>,
    persister: Persister,
    refresh: Arc<RefreshHandle>,
    _pool: Arc<LookupPool>,
    registrar: Arc<Registrar>,
    metrics: Arc<MetricsRegistry>,
    admin: Option<AdminServer>,
    draining: Arc<std::sync::atomic::AtomicBool>,
    reloader: Arc<Reloader>,
}

impl Server {
    /// Start everything; `now_ms` is the wall clock (used to drop expired bindings on load).
    pub fn start(cfg: &Config, now_ms: u64) -> Result<Server, ServerError> {
        let started = Instant::now();
        let realm = cfg.domain.realm.clone();
        let (cache, pool, refresh) = CredentialService::start(&cfg.credentials, &realm)?;
        let refresh = Arc::new(refresh);
        tracing::info!(users = cache.len(), "credentials loaded");
        let authenticator = Authenticator::new(&cfg.auth, &realm)?;
        let registrar = Arc::new(Registrar::new(cfg.registrar.clone())?);
        let persister = Persister::start(&registrar, now_ms)?;
        let (aors, contacts) = registrar.counts();
        tracing::info!(aors, contacts, "location table loaded");
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let asterisk_ips: Vec<_> = cfg.asterisk.nodes.iter().map(|a| a.ip()).collect();
        let guard = Arc::new(Guard::new(&cfg.guard, &asterisk_ips)?);
        let farm = Arc::new(Farm::new(&reload::farm_settings(cfg))?);
        let regfwd = RegFwd::new(reload::regfwd_settings(cfg))?;
        let regfwd = Arc::new(AsteriskRegFwd {
            regfwd,
            farm: farm.clone(),
        });
        let ports = Ports {
            auth: Arc::new(CacheAuth {
                authenticator,
                cache: cache.clone(),
                realm: realm.clone().into_boxed_str(),
            }),
            location: Arc::new(SipEdge::new(registrar.clone(), &realm, &cfg.listen.udp)),
            regfwd: regfwd.clone(),
            guard: guard.clone(),
            draining: draining.clone(),
            farm: Arc::new(AsteriskFarm {
                farm: farm.clone(),
                regfwd: regfwd.clone(),
                registrar: registrar.clone(),
            }),
        };
        let metrics = MetricsRegistry::new(cfg.asterisk.nodes.clone());
        let factory_metrics = metrics.clone();
        let pool = Arc::new(pool);
        let factory_pool = pool.clone();
        let n_workers = crate::transport::worker_count(cfg.listen.workers);
        let core_cfg = core_config(cfg, n_workers);
        let upstream_on = usize::from(core_cfg.asterisk_side);
        let shared = Arc::new(SharedConfig::new(Arc::new(core_cfg)));
        let factory_shared = shared.clone();
        let workers = WorkerSet::spawn_on(
            &cfg.listen.udp,
            upstream_on,
            cfg.listen.workers,
            &cfg.transport,
            move |ctx| {
                // Listen addresses are concrete (validated): the configuration's are the
                // bound ones, so every worker shares one published configuration.
                let (generation, core_cfg) = factory_shared.current();
                let core = Core::new(
                    core_cfg,
                    ports.clone(),
                    u16::try_from(ctx.index).unwrap_or(u16::MAX),
                    ctx.upstream,
                );
                let waker = ctx.waker.clone();
                Worker::new(
                    core,
                    factory_pool.clone(),
                    Arc::new(move || waker.wake()),
                    factory_metrics.worker(ctx.index),
                    factory_shared.clone(),
                    generation,
                )
            },
        )?;
        let workers = Arc::new(workers);
        let wakers: Vec<_> = (0..workers.len())
            .filter_map(|i| workers.waker(i).cloned())
            .collect();
        // A node going down or up wakes every worker: each fails over what waits on it.
        let farm_wakers = wakers.clone();
        farm.set_waker(Box::new(move || farm_wakers.iter().for_each(|w| w.wake())));
        let reloader = Arc::new(Reloader {
            current: std::sync::Mutex::new(cfg.clone()),
            shared,
            n_workers,
            regfwd: regfwd.clone(),
            guard: guard.clone(),
            metrics: metrics.clone(),
            cache: cache.clone(),
            refresh: refresh.clone(),
            farm: farm.clone(),
            wakers,
            busy: std::sync::Mutex::new(()),
            ok: Default::default(),
            failed: Default::default(),
        });
        tracing::info!(
            listen = ?workers.listen_addrs(),
            upstream = ?workers.upstream_addrs(),
            backend = workers.backend().as_str(),
            workers = workers.len(),
            "sipfront running"
        );
        let admin = if cfg.admin.enabled {
            let state = AdminState {
                metrics: metrics.clone(),
                registrar: registrar.clone(),
                realm,
                cache,
                pool: Some(pool.clone()),
                credentials: Some(refresh.clone()),
                transport: Some(workers.clone()),
                regfwd: Some(regfwd),
                farm: Some(farm),
                bans: Some(guard.clone()),
                config: Some(reloader.clone()),
                started,
            };
            Some(AdminServer::start(&cfg.admin, state)?)
        } else {
            None
        };
        Ok(Server {
            workers,
            persister,
            refresh,
            _pool: pool,
            registrar,
            metrics,
            admin,
            draining,
            reloader,
        })
    }

    /// Read the config file again and apply what can change live (see [`reload`]).
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        self.reloader.reload()
    }

    /// Apply `cfg` (validated) as a reload would; for embedding and tests.
    pub fn apply_config(&self, cfg: &Config) -> Result<ReloadReport, ReloadError> {
        self.reloader.apply(cfg)
    }

    /// The workers (addresses, counters).
    pub fn workers(&self) -> &WorkerSet {
        &self.workers
    }

    /// The workers' published metrics.
    pub fn metrics(&self) -> &Arc<MetricsRegistry> {
        &self.metrics
    }

    /// Where the admin API listens, when enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::local_addr)
    }

    pub fn registrar(&self) -> &Arc<Registrar> {
        &self.registrar
    }

    /// Reload every credential now.
    pub fn refresh_credentials(&self) {
        match self.refresh.refresh_now(Duration::from_secs(30)) {
            Ok(stats) => tracing::info!(users = stats.users, "credentials reloaded"),
            Err(e) => tracing::warn!(error = %e, "credential reload failed"),
        }
    }

    /// The configuration in force (after reloads).
    pub fn config(&self) -> Config {
        self.reloader.current()
    }

    /// Stop taking new requests (they get 503 with Retry-After) and wait, at most `max`,
    /// until the transactions in flight are done; in-dialog requests still pass meanwhile.
    pub fn drain(&self, max: Duration) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let start = std::time::Instant::now();
        loop {
            let (servers, clients) = self.metrics.collect().in_flight;
            if servers + clients == 0 {
                tracing::info!("drained");
                return;
            }
            if start.elapsed() >= max {
                tracing::warn!(
                    servers,
                    clients,
                    "drain time over; stopping with transactions in flight"
                );
                return;
            }
            // Workers publish their counts at most every PUBLISH_INTERVAL_MS, and an idle
            // worker only at its next timer: wait for a publication, at most that long.
            let left = max.saturating_sub(start.elapsed());
            self.metrics.wait_publication(
                left.min(Duration::from_millis(crate::metrics::PUBLISH_INTERVAL_MS)),
            );
        }
    }

    /// Stop the workers, then write the location table out.
    pub fn shutdown(mut self) -> Result<(), ServerError> {
        // The admin server holds the only other handle to the workers.
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        match Arc::try_unwrap(self.workers) {
            Ok(workers) => workers.shutdown_and_join()?,
            // Unreachable while the admin server is the only other holder; dropping the
            // last handle stops the workers all the same.
            Err(shared) => drop(shared),
        }
        self.persister.flush(Duration::from_secs(10))?;
        self.persister.stop()?;
        Ok(())
    }
}
