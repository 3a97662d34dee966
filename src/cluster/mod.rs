//! Several sipfront nodes sharing location and state through Redis (`[cluster]`).
//!
//! Redis holds the shared truth; each node's striped location table is its cache, and the
//! workers only ever touch the cache. Data flow:
//!
//! - **REGISTER through this node** → [`ClusterEdge`] (the core's location port) applies it
//!   to the local table as alone, then queues the AOR (`try_send`, never blocking). The
//!   writer thread ([`sync`]) snapshots this node's bindings of the AOR and runs one Lua
//!   script per AOR ([`store::SYNC_LUA`], pipelined): the hash `P:loc:AOR` gets them, the
//!   AOR's whole hash is published on `P:changes`.
//! - **Other nodes** receive the publication on their subscriber thread and make their
//!   copy of the AOR match ([`apply`]): another node's binding is kept with a first Path
//!   entry naming the owner (the hop), so a lookup knows to send the request there.
//! - **Calls**: a lookup giving a binding held by another node ([`ClusterEdge`]) makes the
//!   core send the request to that node's address with the hop as Route; the owner's core
//!   (`core/peer.rs`) removes it and sends the request down the phone's flow,
//!   Record-Routed, so in-dialog requests pass both nodes.
//! - **Liveness**: the heartbeat thread refreshes `P:node:NAME` (TTL `dead_after_ms`) and
//!   reads the live nodes; a binding whose owner is not live is unreachable.
//! - **Start and resync**: the loader thread scans `P:loc:*` at `load_rate` AORs a second
//!   at start-up and whenever the connection to Redis comes back; when the heartbeat finds
//!   its own key gone (Redis restarted or flushed), the writer rewrites every binding this
//!   node holds.
//! - **Redis down**: workers never notice (everything above runs on the cluster's threads);
//!   registrations go on locally, the writer keeps the changed AORs and retries.
//!
//! `docs/cluster.md` has the design, failure cases and the capacity plan.

pub mod apply;
pub mod config;
mod edge;
pub mod store;
mod sync;
pub mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crossbeam_channel::Sender;

use crate::registrar::Registrar;

pub use config::{ClusterConfig, ConfigError};
pub use edge::ClusterEdge;
pub use sync::Cluster;

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot start a cluster thread: {0}")]
    Spawn(std::io::Error),
    #[error("cluster.node_address: no listen address to use")]
    NoAddress,
    #[error("the cluster was already started on this location table")]
    AlreadyStarted,
}

/// Counters and gauges of the cluster threads (read by the metrics and the admin API).
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// 1 while the last Redis operation of the heartbeat succeeded.
    pub redis_up: AtomicU64,
    /// Live nodes, this one included.
    pub nodes_live: AtomicU64,
    /// AORs written to Redis (one script run each).
    pub aors_written: AtomicU64,
    /// Failed Redis operations (any thread).
    pub redis_errors: AtomicU64,
    /// Publications from other nodes applied.
    pub updates_received: AtomicU64,
    /// AORs read by start-up loads and resyncs.
    pub aors_loaded: AtomicU64,
    /// Full rewrites of this node's bindings (Redis restarted or flushed, queue overflow).
    pub resyncs: AtomicU64,
    /// Lookups that gave a binding held by another, live node (requests forwarded there).
    pub forwarded: AtomicU64,
    /// Bindings skipped by lookups because their node is dead.
    pub unreachable: AtomicU64,
    /// Requests from another node delivered to (or looked up for) a phone of this node.
    pub delivered: AtomicU64,
    /// AORs waiting to be written.
    pub pending: AtomicU64,
}

/// The live nodes as last read from Redis.
#[derive(Debug, Default, Clone)]
pub struct Peers {
    /// (name, address), this node included, sorted by name.
    pub live: Vec<(String, SocketAddr)>,
}

/// What the cluster threads and [`ClusterEdge`] share.
pub struct Shared {
    pub me: Box<str>,
    pub my_addr: SocketAddr,
    pub realm: Box<str>,
    pub registrar: Arc<Registrar>,
    pub stats: ClusterStats,
    peers: RwLock<Arc<Peers>>,
    /// The writer's queue of changed AORs (the table's watch sends into it).
    changes: Sender<Box<str>>,
    /// Set when a change could not be queued: the writer rewrites everything.
    overflow: Arc<AtomicBool>,
    /// Changes that found the queue full.
    dropped: Arc<AtomicU64>,
}

impl Shared {
    fn peers(&self) -> Arc<Peers> {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_peers(&self, p: Peers) {
        self.stats
            .nodes_live
            .store(p.live.len() as u64, Ordering::Relaxed);
        *self.peers.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p);
    }

    /// Whether another node at `addr` is live.
    pub fn is_live(&self, addr: SocketAddr) -> bool {
        addr != self.my_addr
            && self
                .peers
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .live
                .iter()
                .any(|(_, a)| *a == addr)
    }

    /// Changes that found the write queue full (each schedules a full rewrite).
    pub fn queue_full(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The live nodes (name, address), this one included.
    pub fn live_nodes(&self) -> Vec<(String, SocketAddr)> {
        self.peers().live.clone()
    }
}
