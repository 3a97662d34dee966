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

use crate::admin::{AdminError, AdminServer, AdminState, HepSource, ReloadReport};
use crate::asterisk::{Farm, FarmError, RegFwd, RegFwdError};
use crate::auth::{AuthError, Authenticator};
use crate::cluster::{Cluster, ClusterError};
use crate::config::Config;
use crate::core::{Core, Ports, SharedConfig};
use crate::db::{CredentialService, DbError, LookupPool, RefreshHandle};
use crate::guard::Guard;
use crate::metrics::MetricsRegistry;
use crate::registrar::{
    ConfigError as RegistrarConfigError, PersistError, Persister, Registrar, SipEdge,
};
use crate::transport::stream::{Registry, StreamSetup};
use crate::transport::tls::TlsContext;
use crate::transport::{Endpoints, StreamListen, TransportError, WorkerSet};

pub use admin_ports::HepCounts;
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
    #[error("{0}")]
    Bans(#[from] crate::guard::PersistError),
    #[error("admin: {0}")]
    Admin(#[from] AdminError),
    #[error("tls: {0}")]
    Tls(#[from] crate::transport::tls::TlsError),
    #[error("{0}")]
    Hep(#[from] crate::hep::HepError),
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
}

/// With `[cluster]` and no `[auth] nonce_secret`: the configuration with the secret all
/// nodes share (from Redis), so any node accepts the nonces and Record-Route tokens
/// another issued. Redis unreachable at start: a warning, and this node's own secret.
fn cluster_secret(cfg: &Config) -> Option<Config> {
    let c = cfg.cluster.as_ref()?;
    if !cfg.auth.nonce_secret.is_empty() {
        return None;
    }
    match Cluster::shared_secret(c) {
        Some(secret) => {
            let mut with = cfg.clone();
            with.auth.nonce_secret = secret;
            Some(with)
        }
        None => {
            tracing::warn!("redis unreachable at start: this node's nonces and Record-Route tokens are its own until a restart");
            None
        }
    }
}

/// The names a phone's digest URI may give for this proxy (`[auth] uri_check = "host"`): the
/// local domains and the realm, the listen addresses (UDP, TCP, TLS) and the names and
/// addresses they are advertised as.
fn own_names(cfg: &Config) -> crate::auth::OwnNames {
    let mut domains = cfg.domain.local.clone();
    domains.push(cfg.domain.realm.clone());
    let mut addrs: Vec<SocketAddr> = cfg.listen_addrs().map(|(a, _)| a).collect();
    let advertised = addrs
        .iter()
        .map(|&a| cfg.advertised(a))
        .chain(std::iter::once(cfg.advertise()))
        .collect::<Vec<_>>();
    for hp in advertised {
        let bare = hp.host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<std::net::IpAddr>() {
            Ok(ip) => addrs.push(SocketAddr::new(ip, hp.port)),
            Err(_) => domains.push(hp.host),
        }
    }
    crate::auth::OwnNames { domains, addrs }
}

/// `[guard] persist`: put back the bans of the file, drop the expired ones, and start the
/// thread that keeps the file up to date.
fn restore_bans(
    cfg: &Config,
    guard: &Arc<Guard>,
    now_ms: u64,
) -> Result<Option<crate::guard::BanPersister>, ServerError> {
    if cfg.guard.persist.is_empty() {
        return Ok(None);
    }
    let file = crate::guard::BanFile::new(&cfg.guard.persist);
    let restored = guard.restore_bans(&file.load()?, now_ms);
    tracing::info!(restored, file = %file.path().display(), "bans restored");
    Ok(Some(crate::guard::BanPersister::start(
        file,
        guard.clone(),
    )?))
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
    links: Arc<Registry>,
    hep: Option<crate::hep::Capture>,
    /// Writes the ban list to `[guard] persist` (when set).
    bans: Option<crate::guard::BanPersister>,
    /// `[cluster]`: the threads sharing the location through Redis.
    cluster: Option<Cluster>,
}

impl Server {
    /// Start everything; `now_ms` is the wall clock (used to drop expired bindings on load).
    pub fn start(cfg: &Config, now_ms: u64) -> Result<Server, ServerError> {
        let started = Instant::now();
        let with_secret;
        let cfg = match cluster_secret(cfg) {
            Some(c) => {
                with_secret = c;
                &with_secret
            }
            None => cfg,
        };
        let realm = cfg.domain.realm.clone();
        let (cache, pool, refresh) = CredentialService::start(&cfg.credentials, &realm)?;
        let refresh = Arc::new(refresh);
        tracing::info!(users = cache.len(), "credentials loaded");
        let authenticator = Authenticator::new(&cfg.auth, &realm)?.with_own_names(own_names(cfg));
        let registrar = Arc::new(Registrar::new(cfg.registrar.clone())?);
        let persister = Persister::start(&registrar, now_ms)?;
        let (aors, contacts) = registrar.counts();
        tracing::info!(aors, contacts, "location table loaded");
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let asterisk_ips: Vec<_> = cfg.asterisk.nodes.iter().map(|a| a.ip()).collect();
        let guard = Arc::new(Guard::new(&cfg.guard, &asterisk_ips)?);
        let bans = restore_bans(cfg, &guard, now_ms)?;
        let farm = Arc::new(Farm::new(&reload::farm_settings(cfg))?);
        let regfwd = RegFwd::new(reload::regfwd_settings(cfg))?;
        let regfwd = Arc::new(AsteriskRegFwd {
            regfwd,
            farm: farm.clone(),
        });
        let n_workers = crate::transport::worker_count(cfg.listen.workers);
        // Stream connections (TCP, TLS): one registry for every worker, the TLS context
        // when there are TLS listen addresses.
        let links = Arc::new(Registry::new(
            n_workers,
            cfg.tcp.max_connections,
            cfg.tcp.max_connections,
            cfg.tcp.max_connections_per_ip,
        ));
        let tls = if cfg.listen.tls.is_empty() && cfg.listen.wss.is_empty() {
            None
        } else {
            Some(Arc::new(TlsContext::load(&cfg.tls)?))
        };
        let listen_table: Vec<_> = cfg.listen_addrs().collect();
        let edge = SipEdge::new(registrar.clone(), &realm, &listen_table);
        let (location, cluster): (Arc<dyn crate::core::LocationPort>, _) = match &cfg.cluster {
            Some(c) => {
                let node_addr = c
                    .node_address(&cfg.listen.udp)
                    .ok_or(ClusterError::NoAddress)?;
                let index = listen_table
                    .iter()
                    .position(|&(a, _)| a == node_addr)
                    .and_then(|i| u16::try_from(i).ok())
                    .ok_or(ClusterError::NoAddress)?;
                let cluster = Cluster::start(c, registrar.clone(), &realm, node_addr)?;
                tracing::info!(node = %c.node_name, address = %node_addr, "cluster node started");
                let location = Arc::new(cluster.edge(edge, crate::core::Local::Listen(index)));
                (location, Some(cluster))
            }
            None => (Arc::new(edge), None),
        };
        let ports = Ports {
            auth: Arc::new(CacheAuth {
                authenticator,
                cache: cache.clone(),
                realm: realm.clone().into_boxed_str(),
            }),
            location,
            regfwd: regfwd.clone(),
            guard: guard.clone(),
            links: links.clone(),
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
        let core_cfg = core_config(cfg, n_workers);
        let upstream_on = usize::from(core_cfg.asterisk_side);
        let shared = Arc::new(SharedConfig::new(Arc::new(core_cfg)));
        let factory_shared = shared.clone();
        let hep = crate::hep::Capture::start(&cfg.hep)?;
        let taps = hep.as_ref().map(crate::hep::Capture::taps);
        let setup = StreamSetup {
            registry: links.clone(),
            tls: tls.as_ref().map(|t| t.server_config()),
            cfg: cfg.tcp.clone(),
            ws: cfg.ws.clone(),
            max_message: cfg.limits.max_message_bytes,
        };
        let endpoints = Endpoints {
            udp: cfg.listen.udp.clone(),
            upstream_on,
            streams: listen_table
                .iter()
                .filter(|(_, t)| t.is_stream())
                .map(|&(addr, transport)| StreamListen {
                    addr,
                    transport,
                    setup: setup.clone(),
                })
                .collect(),
        };
        let workers = WorkerSet::spawn_endpoints(
            &endpoints,
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
                .with_hep(
                    taps.as_ref()
                        .map(|t| t.tap(ctx.listen.clone(), ctx.upstream)),
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
            tls: tls.clone(),
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
                hep: hep
                    .as_ref()
                    .map(|h| Arc::new(HepCounts(h.stats().clone())) as Arc<dyn HepSource>),
                cluster: cluster
                    .as_ref()
                    .map(|c| c.shared().clone() as Arc<dyn crate::admin::ClusterSource>),
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
            links,
            hep,
            bans,
            cluster,
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

    /// The stream connections of every worker.
    pub fn connections(&self) -> &Arc<Registry> {
        &self.links
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
        // The workers' taps are gone: send what is queued and stop capturing.
        if let Some(hep) = self.hep.take() {
            hep.stop();
        }
        if let Some(bans) = self.bans.take() {
            bans.stop();
        }
        if let Some(cluster) = self.cluster.take() {
            cluster.stop(Duration::from_secs(2));
        }
        self.persister.flush(Duration::from_secs(10))?;
        self.persister.stop()?;
        Ok(())
    }
}
