//! The admin API's views of the other layers (`crate::admin`'s traits), implemented here so
//! that the admin layer depends on none of the types it reads through them.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::admin::{
    BanList, ConfigReload, CredentialReload, FarmControl, RegFwdSource, ReloadRefused,
    ReloadReport, TransportCounters,
};
use crate::asterisk::{Farm, NodeView, RegFwdStats};
use crate::db::refresh::RefreshStatus;
use crate::db::{RefreshError, RefreshHandle, RefreshStats};
use crate::guard::{Guard, GuardStats};
use crate::transport::{WorkerCounters, WorkerSet};

use super::{AsteriskRegFwd, ReloadError, Reloader};

impl BanList for Guard {
    fn bans(&self) -> Vec<(IpAddr, u64, String)> {
        Guard::bans(self, crate::db::system_now_ms())
            .into_iter()
            .map(|b| {
                let reason = match b.prefix_len {
                    32 | 128 => b.reason.to_string(),
                    n => format!("{} (whole /{n})", b.reason),
                };
                (b.ip, b.until_ms, reason)
            })
            .collect()
    }
    fn unban(&self, ip: IpAddr) -> bool {
        Guard::unban(self, ip)
    }
    fn guard_stats(&self) -> Option<GuardStats> {
        Some(self.stats())
    }
}

impl CredentialReload for RefreshHandle {
    fn reload(&self, timeout: Duration) -> Result<RefreshStats, RefreshError> {
        self.refresh_now(timeout)
    }
    fn status(&self) -> &RefreshStatus {
        RefreshHandle::status(self)
    }
}

impl ConfigReload for Reloader {
    fn reload(&self) -> Result<ReloadReport, ReloadRefused> {
        Reloader::reload(self).map_err(|e| match e {
            ReloadError::NoConfigFile => ReloadRefused::NoConfigFile,
            other => ReloadRefused::Invalid(Box::new(other)),
        })
    }
    fn counts(&self) -> (u64, u64) {
        Reloader::counts(self)
    }
}

impl TransportCounters for WorkerSet {
    fn worker_counters(&self) -> Vec<WorkerCounters> {
        self.all_counters()
    }
}

impl RegFwdSource for AsteriskRegFwd {
    fn regfwd_stats(&self) -> &RegFwdStats {
        self.regfwd.stats()
    }
}

/// The HEP capture's counters as the admin API reads them.
pub struct HepCounts(pub std::sync::Arc<crate::hep::HepStats>);

impl crate::admin::HepSource for HepCounts {
    fn hep_counts(&self) -> crate::admin::HepReport {
        use std::sync::atomic::Ordering::Relaxed;
        crate::admin::HepReport {
            sent: self.0.sent.load(Relaxed),
            dropped: self.0.dropped.load(Relaxed),
            failed: self.0.failed.load(Relaxed),
        }
    }
}

impl FarmControl for Farm {
    fn nodes(&self) -> Vec<NodeView> {
        // The farm keeps its times on the workers' monotonic clock.
        self.views(crate::transport::mono_ms())
    }
    fn set_drained(&self, node: SocketAddr, drained: bool) -> Option<bool> {
        Farm::set_drained(self, node, drained)
    }
}

impl crate::admin::ClusterSource for crate::cluster::Shared {
    fn cluster(&self) -> crate::admin::ClusterReport {
        let st = &self.stats;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        crate::admin::ClusterReport {
            node: self.me.to_string(),
            address: self.my_addr.to_string(),
            redis_up: get(&st.redis_up) == 1,
            live: self
                .live_nodes()
                .into_iter()
                .map(|(name, a)| crate::admin::ClusterNode {
                    name,
                    address: a.to_string(),
                })
                .collect(),
            aors_written: get(&st.aors_written),
            pending: get(&st.pending),
            resyncs: get(&st.resyncs),
            queue_full: self.queue_full(),
            redis_errors: get(&st.redis_errors),
            updates_received: get(&st.updates_received),
            aors_loaded: get(&st.aors_loaded),
            forwarded: get(&st.forwarded),
            unreachable: get(&st.unreachable),
            delivered: get(&st.delivered),
        }
    }
}
