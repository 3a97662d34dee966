//! Wiring: builds every layer from the configuration and starts the workers.
//!
//! Start order: credentials (load the whole table, start the refresher and the miss pool) →
//! digest authenticator → registrar (reload persisted bindings, start write-behind) → REGFWD
//! policy → one [`Core`] per worker inside the transport's threads. Stop order is the
//! reverse: workers first (no new work), then the location table is flushed to disk.

mod ports;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use crate::asterisk::{RegFwd, RegFwdError, RegFwdSettings, RegisterMode};
use crate::auth::{AuthError, Authenticator};
use crate::config::{Config, RegisterMode as CfgRegisterMode};
use crate::core::{Core, CoreConfig, Ports};
use crate::db::{CredentialService, DbError, LookupPool, RefreshHandle};
use crate::guard::Guard;
use crate::registrar::{ConfigError as RegistrarConfigError, PersistError, Persister, Registrar};
use crate::transport::{TransportError, WorkerSet};

pub use ports::{AsteriskRegFwd, CacheAuth, TableLocation};
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
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    #[error("{0}")]
    Guard(#[from] crate::guard::ConfigError),
}

/// A running proxy.
pub struct Server {
    workers: WorkerSet,
    persister: Persister,
    refresh: RefreshHandle,
    _pool: Arc<LookupPool>,
    registrar: Arc<Registrar>,
}

impl Server {
    /// Start everything; `now_ms` is the wall clock (used to drop expired bindings on load).
    pub fn start(cfg: &Config, now_ms: u64) -> Result<Server, ServerError> {
        let realm = cfg.domain.realm.clone();
        let (cache, pool, refresh) = CredentialService::start(&cfg.credentials, &realm)?;
        tracing::info!(users = cache.len(), "credentials loaded");
        let authenticator = Authenticator::new(&cfg.auth, &realm)?;
        let registrar = Arc::new(Registrar::new(cfg.registrar.clone())?);
        let persister = Persister::start(&registrar, now_ms)?;
        let (aors, contacts) = registrar.counts();
        tracing::info!(aors, contacts, "location table loaded");
        let asterisk_ips: Vec<_> = cfg.asterisk.nodes.iter().map(|a| a.ip()).collect();
        let guard = Arc::new(Guard::new(&cfg.guard, &asterisk_ips)?);
        let regfwd = RegFwd::new(RegFwdSettings {
            nodes: cfg.asterisk.nodes.clone(),
            advertise: cfg.advertise(),
            mode: match cfg.asterisk.register_mode {
                CfgRegisterMode::All => RegisterMode::All,
                CfgRegisterMode::Hash => RegisterMode::Hash,
            },
            refresh_min_interval_secs: cfg.asterisk.refresh_min_interval_secs,
            user_agent: concat!("sipfront/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_users: cfg.registrar.max_aors,
        })?;
        let ports = Ports {
            auth: Arc::new(CacheAuth {
                authenticator,
                cache,
                realm: realm.clone().into_boxed_str(),
            }),
            location: Arc::new(TableLocation {
                registrar: registrar.clone(),
                realm: realm.into_boxed_str(),
            }),
            regfwd: Arc::new(AsteriskRegFwd { regfwd }),
            guard: guard.clone(),
        };
        let pool = Arc::new(pool);
        let factory_pool = pool.clone();
        let factory_cfg = cfg.clone();
        let workers = WorkerSet::spawn(
            &cfg.listen.udp,
            cfg.listen.workers,
            &cfg.transport,
            move |ctx| {
                let mut core_cfg = CoreConfig::from_config(&factory_cfg, ctx.n_workers);
                core_cfg.listen.clone_from(&ctx.listen);
                let core = Core::new(
                    Arc::new(core_cfg),
                    ports.clone(),
                    u16::try_from(ctx.index).unwrap_or(u16::MAX),
                    ctx.upstream,
                );
                let waker = ctx.waker.clone();
                Worker::new(core, factory_pool.clone(), Arc::new(move || waker.wake()))
            },
        )?;
        tracing::info!(
            listen = ?workers.listen_addrs(),
            upstream = ?workers.upstream_addrs(),
            backend = workers.backend().as_str(),
            workers = workers.len(),
            "sipfront running"
        );
        Ok(Server {
            workers,
            persister,
            refresh,
            _pool: pool,
            registrar,
        })
    }

    /// The workers (addresses, counters).
    pub fn workers(&self) -> &WorkerSet {
        &self.workers
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

    /// Stop the workers, then write the location table out.
    pub fn shutdown(self) -> Result<(), ServerError> {
        self.workers.shutdown_and_join()?;
        self.persister.flush(Duration::from_secs(10))?;
        self.persister.stop()?;
        Ok(())
    }
}
