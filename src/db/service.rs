//! Starting the credential layer: validate the config, open the database, load every
//! credential, then start the refresher and the miss pool.

use std::sync::Arc;
use std::time::Duration;

use super::config::{redact_url, CredentialsConfig, Layout};
use super::refresh::load_into;
use super::{source, CredentialCache, DbError, LookupPool, RefreshHandle};

/// What every DB thread needs.
pub(crate) struct Ctx {
    pub cfg: CredentialsConfig,
    pub layout: Layout,
    pub realm: Box<str>,
}

/// Entry point of the credential layer.
pub struct CredentialService;

impl CredentialService {
    /// Loads every credential for `realm` (HA1s are computed for it) and starts the threads.
    /// Fails if the database cannot be read at start, unless `start_without_db` is set: then
    /// the cache starts empty (misses answer `DbError` until the database is back) and the
    /// refresher retries after the reconnect backoff.
    pub fn start(
        cfg: &CredentialsConfig,
        realm: &str,
    ) -> Result<(Arc<CredentialCache>, LookupPool, RefreshHandle), DbError> {
        cfg.validate()?;
        let ctx = Arc::new(Ctx {
            cfg: cfg.clone(),
            layout: cfg.resolve()?,
            realm: realm.into(),
        });
        let cache = Arc::new(CredentialCache::new(
            cfg.negative_ttl_secs.saturating_mul(1000),
            cfg.max_negative,
        ));
        let initial = source::connect(&ctx.cfg, &ctx.layout).and_then(|mut src| {
            let stats = load_into(&cache, src.as_mut(), &ctx)?;
            Ok((src, stats))
        });
        let period = Duration::from_secs(cfg.refresh_secs);
        let (src, first_wait) = match initial {
            Ok((src, stats)) => {
                tracing::info!(
                    url = %redact_url(&cfg.url),
                    table = %ctx.layout.table,
                    users = stats.users,
                    rows = stats.rows,
                    elapsed_ms = stats.elapsed_ms,
                    "credentials loaded"
                );
                (Some(src), period)
            }
            Err(e) if cfg.start_without_db => {
                tracing::warn!(
                    url = %redact_url(&cfg.url),
                    error = %e,
                    "credential database unreachable at start; starting with an empty cache"
                );
                (
                    None,
                    period.min(Duration::from_millis(cfg.reconnect_max_ms)),
                )
            }
            Err(e @ (DbError::Mysql(_) | DbError::Sqlite(_) | DbError::Unavailable { .. })) => {
                return Err(DbError::AtStart {
                    url: redact_url(&cfg.url).into(),
                    source: Box::new(e),
                })
            }
            Err(e) => return Err(e),
        };
        let refresh = RefreshHandle::spawn(ctx.clone(), cache.clone(), src, first_wait)?;
        let pool = LookupPool::spawn(ctx, cache.clone())?;
        Ok((cache, pool, refresh))
    }
}
