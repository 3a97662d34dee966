//! Per-worker metrics without shared hot counters: counters and latency histograms are
//! owned by the worker thread that updates them and published as a snapshot at most every
//! [`PUBLISH_INTERVAL_MS`]; scrapes merge the snapshots.
//!
//! Data flow:
//! - each worker owns a [`WorkerMetrics`]: one preallocated [`Latency`] (an hdrhistogram for
//!   percentiles and fixed Prometheus buckets with an exact sum) per [`MsgClass`] of
//!   `on_datagram` processing time (ns), and an [`UpstreamTracker`] that times requests sent
//!   to each Asterisk node until their first and final responses. Recording is a few integer
//!   operations on memory allocated at start: the hot path never allocates or locks;
//! - the worker calls [`WorkerMetrics::maybe_publish`] after each datagram and timer turn; at
//!   most every [`PUBLISH_INTERVAL_MS`] it copies its core counters ([`crate::core::Stats`]),
//!   and at most every [`HISTOGRAM_PUBLISH_INTERVAL_MS`] the histograms that changed, into its
//!   slot of the [`MetricsRegistry`] (a `try_lock`: a scrape holding the slot only delays
//!   publication to the next turn, it never blocks the worker);
//! - a scrape ([`MetricsRegistry::collect`], used by `crate::admin`) locks each slot in turn,
//!   sums the counters and merges the histograms into a [`Collected`].
//!
//! Series are cumulative since start; `/metrics` exposes the buckets as Prometheus
//! histograms (`_bucket{le=..}`), which `rate()` windows and `sum by (le)` aggregates across
//! instances.

mod classify;
mod latency;
mod upstream;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::core::Stats;

pub use classify::{classify, MsgClass};
pub use latency::{new_histogram, Buckets, Latency, BOUNDS_NS, BUCKETS, MAX_TRACKED_NS};
pub use upstream::{UpstreamKind, UpstreamTracker};

/// Publication period of worker snapshots.
pub const PUBLISH_INTERVAL_MS: u64 = 100;

/// Publication period of the histograms in the snapshots. Copying one is a reset and an add
/// over all its hdr counts (~37 KB), which at every [`PUBLISH_INTERVAL_MS`] cost a worker
/// more instructions than 100 registrations' worth of parsing at low rates; scrapes are
/// seconds apart, so percentiles and buckets at most a second old lose nothing.
pub const HISTOGRAM_PUBLISH_INTERVAL_MS: u64 = 1_000;

/// One worker's published state.
#[derive(Debug, Clone)]
pub struct WorkerSnapshot {
    pub worker: usize,
    /// `now_ms` of the last publication (0: never published).
    pub published_ms: u64,
    pub stats: Stats,
    /// Live (server, client) transactions.
    pub in_flight: (usize, usize),
    /// Datagrams the outbox could not take.
    pub send_dropped: u64,
    /// `on_datagram` processing time per [`MsgClass`] (ns), cumulative.
    pub processing: Vec<Latency>,
    /// Per upstream node: request → first response and → final response (ns), cumulative.
    pub upstream: Vec<[Latency; 2]>,
    /// The nodes of `upstream`, in order.
    pub nodes: Vec<SocketAddr>,
}

impl WorkerSnapshot {
    fn new(worker: usize, nodes: &[SocketAddr]) -> Self {
        WorkerSnapshot {
            worker,
            published_ms: 0,
            stats: Stats::default(),
            in_flight: (0, 0),
            send_dropped: 0,
            processing: (0..MsgClass::COUNT).map(|_| Latency::default()).collect(),
            upstream: nodes.iter().map(|_| Default::default()).collect(),
            nodes: nodes.to_vec(),
        }
    }
}

type Slot = Arc<Mutex<WorkerSnapshot>>;

/// The workers' snapshot slots, shared by the workers (each writes its own) and the admin
/// server (reads all).
#[derive(Debug)]
pub struct MetricsRegistry {
    nodes: Mutex<Vec<SocketAddr>>,
    slots: Mutex<Vec<Slot>>,
    /// Counts publications; waiters ([`MetricsRegistry::wait_publication`]) are woken.
    published: Arc<Publications>,
}

/// A publication counter with a condition variable, so a thread can wait for the workers'
/// next snapshots instead of polling.
#[derive(Debug, Default)]
struct Publications {
    count: Mutex<u64>,
    cond: std::sync::Condvar,
}

/// Everything a scrape needs, merged over the workers.
#[derive(Debug, Clone)]
pub struct Collected {
    /// Each worker's snapshot, by worker index.
    pub workers: Vec<WorkerSnapshot>,
    /// Sum of the workers' core counters.
    pub stats: Stats,
    pub in_flight: (usize, usize),
    pub send_dropped: u64,
    pub processing: Vec<Latency>,
    /// The upstream nodes, and per node (first, final) response latency.
    pub nodes: Vec<SocketAddr>,
    pub upstream: Vec<[Latency; 2]>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MetricsRegistry {
    /// `nodes`: the Asterisk nodes whose response latency is tracked.
    pub fn new(nodes: Vec<SocketAddr>) -> Arc<Self> {
        Arc::new(MetricsRegistry {
            nodes: Mutex::new(nodes),
            slots: Mutex::new(Vec::new()),
            published: Arc::default(),
        })
    }

    /// A worker's recorder and its slot (called once per worker, at start).
    pub fn worker(self: &Arc<Self>, index: usize) -> WorkerMetrics {
        let nodes = lock(&self.nodes).clone();
        let slot = Arc::new(Mutex::new(WorkerSnapshot::new(index, &nodes)));
        let mut slots = lock(&self.slots);
        slots.retain(|s| lock(s).worker != index);
        slots.push(slot.clone());
        slots.sort_by_key(|s| lock(s).worker);
        drop(slots);
        WorkerMetrics {
            processing: (0..MsgClass::COUNT).map(|_| Latency::default()).collect(),
            upstream: UpstreamTracker::new(nodes),
            slot,
            published: self.published.clone(),
            next_publish_ms: 0,
            next_histogram_ms: 0,
        }
    }

    /// Wait (at most `limit`) until some worker publishes a snapshot; false on timeout.
    pub fn wait_publication(&self, limit: std::time::Duration) -> bool {
        let count = lock(&self.published.count);
        let seen = *count;
        match self
            .published
            .cond
            .wait_timeout_while(count, limit, |c| *c == seen)
        {
            Ok((_, timeout)) => !timeout.timed_out(),
            Err(p) => !p.into_inner().1.timed_out(),
        }
    }

    /// The Asterisk nodes are now `nodes` (a reload; each worker switches its own tracker
    /// with [`WorkerMetrics::set_nodes`]).
    pub fn set_nodes(&self, nodes: &[SocketAddr]) {
        *lock(&self.nodes) = nodes.to_vec();
    }

    /// Merge every worker's last snapshot (upstream latency by node address: a worker that
    /// has not switched to reloaded nodes yet contributes only the nodes still configured).
    pub fn collect(&self) -> Collected {
        let slots: Vec<Slot> = lock(&self.slots).clone();
        let nodes = lock(&self.nodes).clone();
        let mut out = Collected {
            workers: Vec::with_capacity(slots.len()),
            stats: Stats::default(),
            in_flight: (0, 0),
            send_dropped: 0,
            processing: (0..MsgClass::COUNT).map(|_| Latency::default()).collect(),
            upstream: nodes.iter().map(|_| Default::default()).collect(),
            nodes,
        };
        for slot in &slots {
            let snap = lock(slot).clone();
            add_stats(&mut out.stats, &snap.stats);
            out.in_flight.0 += snap.in_flight.0;
            out.in_flight.1 += snap.in_flight.1;
            out.send_dropped += snap.send_dropped;
            for (m, h) in out.processing.iter_mut().zip(&snap.processing) {
                m.add(h);
            }
            for (node, h) in snap.nodes.iter().zip(&snap.upstream) {
                if let Some(i) = out.nodes.iter().position(|n| n == node) {
                    if let Some(m) = out.upstream.get_mut(i) {
                        m[0].add(&h[0]);
                        m[1].add(&h[1]);
                    }
                }
            }
            out.workers.push(snap);
        }
        out
    }
}

/// `into += from`, field by field.
pub fn add_stats(into: &mut Stats, from: &Stats) {
    let Stats {
        rx_requests,
        rx_responses,
        tx_responses,
        forwarded_requests,
        forwarded_responses,
        retransmissions_absorbed,
        retransmissions_sent,
        dropped_malformed,
        dropped_unmatched,
        dropped_overload,
        dropped_banned,
        dropped_rate_limited,
        dropped_scanner,
        dropped_forged,
        dropped_spoofed,
        auth_ok,
        auth_failed,
        auth_challenges,
        lookups_started,
        registrations,
        regfwd_sent,
        regfwd_ok,
        regfwd_failed,
        timeouts,
        shed_overload,
        shedding,
        keepalives_sent,
        keepalives_answered,
        keepalive_removed,
    } = from;
    into.rx_requests += rx_requests;
    into.rx_responses += rx_responses;
    for (a, b) in into.tx_responses.iter_mut().zip(tx_responses) {
        *a += b;
    }
    into.forwarded_requests += forwarded_requests;
    into.forwarded_responses += forwarded_responses;
    into.retransmissions_absorbed += retransmissions_absorbed;
    into.retransmissions_sent += retransmissions_sent;
    into.dropped_malformed += dropped_malformed;
    into.dropped_unmatched += dropped_unmatched;
    into.dropped_overload += dropped_overload;
    into.dropped_banned += dropped_banned;
    into.dropped_rate_limited += dropped_rate_limited;
    into.dropped_scanner += dropped_scanner;
    into.dropped_forged += dropped_forged;
    into.dropped_spoofed += dropped_spoofed;
    into.auth_ok += auth_ok;
    into.auth_failed += auth_failed;
    into.auth_challenges += auth_challenges;
    into.lookups_started += lookups_started;
    into.registrations += registrations;
    into.regfwd_sent += regfwd_sent;
    into.regfwd_ok += regfwd_ok;
    into.regfwd_failed += regfwd_failed;
    into.timeouts += timeouts;
    into.shed_overload += shed_overload;
    into.shedding += shedding;
    into.keepalives_sent += keepalives_sent;
    into.keepalives_answered += keepalives_answered;
    into.keepalive_removed += keepalive_removed;
}

/// A worker's recorder: owned by the worker thread, never shared.
pub struct WorkerMetrics {
    processing: Vec<Latency>,
    upstream: UpstreamTracker,
    slot: Slot,
    next_publish_ms: u64,
    next_histogram_ms: u64,
    published: Arc<Publications>,
}

/// What the worker publishes besides its histograms.
#[derive(Debug, Clone, Copy)]
pub struct WorkerState<'a> {
    pub stats: &'a Stats,
    pub in_flight: (usize, usize),
    pub send_dropped: u64,
}

impl WorkerMetrics {
    /// Record the processing time of one datagram of class `class`. Never allocates.
    #[inline]
    pub fn record_processing(&mut self, class: MsgClass, ns: u64) {
        if let Some(h) = self.processing.get_mut(class as usize) {
            h.record(ns);
        }
    }

    /// Time requests to `nodes` from now on (a reload; see [`UpstreamTracker::set_nodes`]).
    pub fn set_nodes(&mut self, nodes: &[SocketAddr]) {
        self.upstream.set_nodes(nodes);
    }

    /// The upstream request/response timer (fed from the transmit path and from responses
    /// received on the upstream socket).
    pub fn upstream(&mut self) -> &mut UpstreamTracker {
        &mut self.upstream
    }

    /// Publish a snapshot if [`PUBLISH_INTERVAL_MS`] has passed since the last one (with the
    /// histograms if [`HISTOGRAM_PUBLISH_INTERVAL_MS`] has). Cheap when not due (one
    /// comparison); when due, copies counters and changed histograms (no allocation: the
    /// slot's histograms have the same bounds) under a `try_lock`.
    #[inline]
    pub fn maybe_publish(&mut self, now_ms: u64, state: WorkerState<'_>) {
        if now_ms < self.next_publish_ms {
            return;
        }
        let histograms = now_ms >= self.next_histogram_ms;
        self.publish_parts(now_ms, state, histograms);
    }

    /// Publish counters and histograms now (unless a scrape holds the slot this instant).
    pub fn publish(&mut self, now_ms: u64, state: WorkerState<'_>) {
        self.publish_parts(now_ms, state, true);
    }

    fn publish_parts(&mut self, now_ms: u64, state: WorkerState<'_>, histograms: bool) {
        let Ok(mut snap) = self.slot.try_lock() else {
            return;
        };
        self.next_publish_ms = now_ms.saturating_add(PUBLISH_INTERVAL_MS);
        snap.published_ms = now_ms;
        snap.stats.clone_from(state.stats);
        snap.in_flight = state.in_flight;
        snap.send_dropped = state.send_dropped;
        if snap.nodes != self.upstream.nodes() {
            // The nodes were reloaded (rare): reshape the slot once; its series start empty,
            // so the copies below cannot mistake one node's series for another's.
            snap.nodes = self.upstream.nodes().to_vec();
            snap.upstream = snap.nodes.iter().map(|_| Default::default()).collect();
        }
        if histograms {
            self.next_histogram_ms = now_ms.saturating_add(HISTOGRAM_PUBLISH_INTERVAL_MS);
            // Series only grow (cumulative since start), so an unchanged count means an
            // unchanged series: idle message classes and nodes cost one comparison.
            for (dst, src) in snap.processing.iter_mut().zip(&self.processing) {
                if dst.len() != src.len() {
                    dst.copy_from(src);
                }
            }
            for (dst, src) in snap.upstream.iter_mut().zip(self.upstream.histograms()) {
                for (d, s) in dst.iter_mut().zip(src) {
                    if d.len() != s.len() {
                        d.copy_from(s);
                    }
                }
            }
        }
        drop(snap);
        // Never block the worker: a waiter that misses this one wakes at its timeout.
        if let Ok(mut n) = self.published.count.try_lock() {
            *n += 1;
            self.published.cond.notify_all();
        }
    }
}
