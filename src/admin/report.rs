//! The numbers the admin API serves, gathered at request time into one serializable
//! [`StatsReport`]: `/v1/stats` is its JSON, `/metrics` renders it for Prometheus
//! (`super::prometheus`). Collection merges the workers' published snapshots
//! ([`crate::metrics::MetricsRegistry::collect`]) and reads the shared layers' counters.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;

use super::AdminState;
use crate::guard::GuardStats;
use crate::metrics::{Buckets, Latency, MsgClass, UpstreamKind};

/// Labels of `core::Stats::tx_responses` by index (`code / 100`).
pub const RESPONSE_CLASSES: [&str; 7] = ["other", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

#[derive(Debug, Clone, Default, Serialize)]
pub struct StatsReport {
    pub version: &'static str,
    pub uptime_secs: u64,
    pub sip: SipCounters,
    pub auth: AuthCounters,
    pub credentials: CredentialCounters,
    pub registrar: RegistrarCounters,
    pub regfwd: RegFwdCounters,
    pub transactions: InFlight,
    pub drops: Drops,
    pub workers: Vec<WorkerReport>,
    /// `on_datagram` processing time per message class.
    pub latency: Vec<LatencyReport>,
    /// Per Asterisk node: request → first and → final response.
    pub upstream: Vec<LatencyReport>,
    /// Active bans, when a ban list is attached.
    pub bans: Option<usize>,
    /// Rate limiter and ban counters, when the guard is attached.
    pub guard: Option<GuardStats>,
    /// Configuration reloads (applied, refused), when a reloader is attached.
    pub config_reloads: Option<(u64, u64)>,
    /// Receive backlog and load shedding (`[limits] shed_backlog_bytes`).
    pub overload: OverloadReport,
    /// NAT keepalives towards registered phones (`[nat]`).
    pub nat: NatReport,
    /// HEP capture counters, when `[hep]` is on.
    pub hep: Option<HepReport>,
    /// Stream connections per transport (TCP, TLS, WS, WSS), summed over the workers.
    pub connections: Vec<ConnectionReport>,
    /// `[cluster]`: this node, the live nodes and the Redis counters.
    pub cluster: Option<ClusterReport>,
}

/// One live node of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterNode {
    pub name: String,
    pub address: String,
}

/// The cluster as this node sees it (`[cluster]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterReport {
    /// This node's name and address.
    pub node: String,
    pub address: String,
    /// Whether the last heartbeat reached Redis.
    pub redis_up: bool,
    /// The nodes whose heartbeat is alive (this one included).
    pub live: Vec<ClusterNode>,
    /// AORs written to Redis, AORs waiting to be written, full rewrites.
    pub aors_written: u64,
    pub pending: u64,
    pub resyncs: u64,
    /// Changes that found the write queue full (each schedules a full rewrite).
    pub queue_full: u64,
    pub redis_errors: u64,
    /// Publications of other nodes applied, AORs read by loads.
    pub updates_received: u64,
    pub aors_loaded: u64,
    /// Lookups sending a request to the node holding the phone's flow; bindings skipped
    /// because their node is dead; requests from other nodes for this node's phones.
    pub forwarded: u64,
    pub unreachable: u64,
    pub delivered: u64,
}

/// One stream transport's connections, all workers together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConnectionReport {
    /// `tcp`, `tls`, `ws` or `wss`.
    pub transport: &'static str,
    /// Open now.
    pub open: u64,
    pub accepted: u64,
    /// Refused at accept (connection limits, bans, rate limits).
    pub refused: u64,
    pub closed: u64,
    /// Of `closed`, closed for an error (bad framing, TLS, timeouts, limits).
    pub errors: u64,
    pub handshake_failures: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_in: u64,
}

/// The stream transports, in [`crate::transport::WorkerCounters::streams`] order.
pub const STREAM_TRANSPORTS: [&str; 4] = ["tcp", "tls", "ws", "wss"];

fn connections(workers: &[crate::transport::WorkerCounters]) -> Vec<ConnectionReport> {
    STREAM_TRANSPORTS
        .iter()
        .enumerate()
        .map(|(k, &transport)| {
            let mut r = ConnectionReport {
                transport,
                ..ConnectionReport::default()
            };
            for c in workers.iter().filter_map(|w| w.streams.get(k)) {
                r.open += c.open;
                r.accepted += c.accepted;
                r.refused += c.refused;
                r.closed += c.closed;
                r.errors += c.errors;
                r.handshake_failures += c.handshake_failures;
                r.bytes_in += c.bytes_in;
                r.bytes_out += c.bytes_out;
                r.messages_in += c.messages_in;
            }
            r
        })
        .collect()
}

/// HEP capture (`[hep]`): copies sent to the collector, dropped (queue full or too
/// large), and refused by the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HepReport {
    pub sent: u64,
    pub dropped: u64,
    pub failed: u64,
}

/// NAT keepalives: sent (OPTIONS or CRLF), OPTIONS answered, bindings removed because
/// their phone stopped answering or its connection closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NatReport {
    pub keepalives_sent: u64,
    pub keepalives_answered: u64,
    pub bindings_removed: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct OverloadReport {
    /// New requests answered 503 because a worker's receive backlog was too high.
    pub shed: u64,
    /// Workers shedding right now.
    pub shedding_workers: u64,
    /// Received bytes waiting in all workers' receive queues at their last readings.
    pub rx_backlog_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SipCounters {
    pub requests_received: u64,
    pub responses_received: u64,
    /// Responses the proxy sent itself or forwarded, by class (`1xx` ... `6xx`).
    pub responses_sent: BTreeMap<&'static str, u64>,
    pub forwarded_requests: u64,
    pub forwarded_responses: u64,
    pub retransmissions_absorbed: u64,
    pub retransmissions_sent: u64,
    pub timeouts: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AuthCounters {
    pub ok: u64,
    pub failed: u64,
    pub challenges: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CredentialCounters {
    pub cached_users: usize,
    pub negative_cached: usize,
    /// Cache misses the workers sent to the lookup pool.
    pub cache_misses: u64,
    pub db_queries: u64,
    pub db_coalesced: u64,
    pub db_errors: u64,
    pub db_connects: u64,
    pub pool_queue: usize,
    pub refresh_ok: u64,
    pub refresh_failed: u64,
    /// UNIX ms of the last successful full reload (0: none yet).
    pub last_refresh_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RegistrarCounters {
    /// AORs with at least one binding (expired ones not yet swept included).
    pub aors: usize,
    pub contacts: usize,
    /// REGISTERs accepted.
    pub registrations: u64,
    /// Users removed by the admin API whose `Expires: 0` to Asterisk was not queued (the
    /// queue was full).
    pub unregisters_dropped: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RegFwdCounters {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub throttled: u64,
    pub unregistered: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct InFlight {
    pub server: usize,
    pub client: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Drops {
    pub malformed: u64,
    pub unmatched: u64,
    pub overload: u64,
    /// From a banned source (`[guard]`).
    pub banned: u64,
    /// Over the per-source rate limit.
    pub rate_limited: u64,
    /// A scanner's User-Agent.
    pub scanner: u64,
    /// A response whose branch has our prefix but not our MAC.
    pub forged: u64,
    /// A response for a live transaction from another address than its request went to.
    pub spoofed: u64,
    /// The worker's outbox was full.
    pub outbox: u64,
    /// Dropped in the transport (truncated, hand-off full, send refused...).
    pub transport: u64,
    /// Dropped by the kernel at the workers' sockets (receive buffer full).
    pub kernel: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerReport {
    pub worker: usize,
    pub rx: u64,
    pub tx: u64,
    pub send_errors: u64,
    pub handed_off: u64,
    pub handoff_in: u64,
    pub dropped: u64,
    pub turns: u64,
    pub requests: u64,
    pub responses: u64,
    /// Datagrams the kernel dropped at this worker's sockets (receive buffer full).
    pub kernel_drops: u64,
    /// Received bytes waiting for this worker at its last reading.
    pub rx_backlog_bytes: u64,
    /// This worker answers new requests 503 (its backlog is over the threshold).
    pub shedding: bool,
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencyReport {
    /// Message class (`request_invite` ...) or upstream node address.
    pub name: String,
    /// For upstream: `first` or `final`; for processing: `request` or `response`.
    pub kind: &'static str,
    /// For processing: `INVITE`, `REGISTER` or `other`.
    pub method: &'static str,
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// The Prometheus buckets and exact sum (`/metrics` only).
    #[serde(skip)]
    pub buckets: Buckets,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn latency(name: String, kind: &'static str, method: &'static str, l: &Latency) -> LatencyReport {
    let h = &l.hdr;
    let q = |p: f64| {
        if h.is_empty() {
            0.0
        } else {
            us(h.value_at_quantile(p))
        }
    };
    LatencyReport {
        name,
        kind,
        method,
        count: h.len(),
        mean_us: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
        p50_us: q(0.5),
        p90_us: q(0.9),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: if h.is_empty() { 0.0 } else { us(h.max()) },
        buckets: l.buckets,
    }
}

/// Gather everything now.
pub fn collect(state: &AdminState) -> StatsReport {
    let c = state.metrics.collect();
    let s = &c.stats;
    let transport = state
        .transport
        .as_ref()
        .map(|t| t.worker_counters())
        .unwrap_or_default();
    let connections = connections(&transport);
    let workers = (0..transport.len().max(c.workers.len()))
        .map(|i| {
            let t = transport.get(i).copied().unwrap_or_default();
            let snap = c.workers.iter().find(|w| w.worker == i);
            WorkerReport {
                worker: i,
                rx: t.rx,
                tx: t.tx,
                send_errors: t.send_errors,
                handed_off: t.handed_off,
                handoff_in: t.handoff_in,
                dropped: t.dropped,
                turns: t.turns,
                requests: snap.map_or(0, |w| w.stats.rx_requests),
                responses: snap.map_or(0, |w| w.stats.rx_responses),
                kernel_drops: t.kernel_drops,
                rx_backlog_bytes: t.rx_backlog_bytes,
                shedding: snap.is_some_and(|w| w.stats.shedding > 0),
            }
        })
        .collect::<Vec<_>>();
    let (aors, contacts) = state.registrar.counts();
    let mut credentials = CredentialCounters {
        cached_users: state.cache.len(),
        negative_cached: state.cache.negative_len(),
        cache_misses: s.lookups_started,
        ..CredentialCounters::default()
    };
    if let Some(pool) = &state.pool {
        let p = pool.stats();
        credentials.db_queries = p.queries.load(Relaxed);
        credentials.db_coalesced = p.coalesced.load(Relaxed);
        credentials.db_errors = p.errors.load(Relaxed);
        credentials.db_connects = p.connects.load(Relaxed);
        credentials.pool_queue = pool.queue_len();
    }
    if let Some(r) = &state.credentials {
        let st = r.status();
        credentials.refresh_ok = st.successes.load(Relaxed);
        credentials.refresh_failed = st.failures.load(Relaxed);
        credentials.last_refresh_ms = st.last_success_ms.load(Relaxed);
    }
    let mut regfwd = RegFwdCounters {
        sent: s.regfwd_sent,
        ok: s.regfwd_ok,
        failed: s.regfwd_failed,
        ..RegFwdCounters::default()
    };
    if let Some(r) = &state.regfwd {
        let r = r.regfwd_stats();
        regfwd.throttled = r.throttled.load(Relaxed);
        regfwd.unregistered = r.unregistered.load(Relaxed);
    }
    let latency_rows = MsgClass::ALL
        .iter()
        .zip(&c.processing)
        .map(|(cl, h)| latency(cl.label().to_owned(), cl.kind(), cl.method(), h))
        .collect();
    let mut upstream = Vec::new();
    for (node, h) in c.nodes.iter().zip(&c.upstream) {
        for kind in [UpstreamKind::First, UpstreamKind::Final] {
            if let Some(h) = h.get(kind as usize) {
                upstream.push(latency(node.to_string(), kind.label(), "", h));
            }
        }
    }
    StatsReport {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: state.started.elapsed().as_secs(),
        sip: SipCounters {
            requests_received: s.rx_requests,
            responses_received: s.rx_responses,
            responses_sent: RESPONSE_CLASSES
                .iter()
                .zip(s.tx_responses)
                .map(|(l, n)| (*l, n))
                .collect(),
            forwarded_requests: s.forwarded_requests,
            forwarded_responses: s.forwarded_responses,
            retransmissions_absorbed: s.retransmissions_absorbed,
            retransmissions_sent: s.retransmissions_sent,
            timeouts: s.timeouts,
        },
        auth: AuthCounters {
            ok: s.auth_ok,
            failed: s.auth_failed,
            challenges: s.auth_challenges,
        },
        credentials,
        registrar: RegistrarCounters {
            aors,
            contacts,
            registrations: s.registrations,
            unregisters_dropped: state.registrar.unregisters_dropped(),
        },
        regfwd,
        transactions: InFlight {
            server: c.in_flight.0,
            client: c.in_flight.1,
        },
        drops: Drops {
            malformed: s.dropped_malformed,
            unmatched: s.dropped_unmatched,
            overload: s.dropped_overload,
            banned: s.dropped_banned,
            rate_limited: s.dropped_rate_limited,
            scanner: s.dropped_scanner,
            forged: s.dropped_forged,
            spoofed: s.dropped_spoofed,
            outbox: c.send_dropped,
            transport: workers.iter().map(|w| w.dropped).sum(),
            kernel: workers.iter().map(|w| w.kernel_drops).sum(),
        },
        overload: OverloadReport {
            shed: s.shed_overload,
            shedding_workers: s.shedding,
            rx_backlog_bytes: workers.iter().map(|w| w.rx_backlog_bytes).sum(),
        },
        nat: NatReport {
            keepalives_sent: s.keepalives_sent,
            keepalives_answered: s.keepalives_answered,
            bindings_removed: s.keepalive_removed,
        },
        workers,
        latency: latency_rows,
        upstream,
        bans: state.bans.as_ref().map(|b| b.bans().len()),
        guard: state.bans.as_ref().and_then(|b| b.guard_stats()),
        config_reloads: state.config.as_ref().map(|c| c.counts()),
        hep: state.hep.as_ref().map(|h| h.hep_counts()),
        cluster: state.cluster.as_ref().map(|c| c.cluster()),
        connections,
    }
}
