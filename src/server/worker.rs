//! One worker's handler: the sans-IO [`Core`] behind the transport's [`DatagramHandler`]
//! trait, plus the worker's end of the credential-lookup pool.
//!
//! Data flow: the transport hands a datagram to [`Worker::on_datagram`] → the core decides
//! and writes into the outbox; credential misses the core parked are drained to the
//! [`LookupPool`] with a reply channel owned by this worker and its waker; answers wake the
//! worker, which feeds them back to the core in [`Worker::on_wake`].
//!
//! Metrics ([`WorkerMetrics`]): `on_datagram` times the core's work per message class and
//! feeds the upstream latency tracker (sends to Asterisk in [`Tx`], responses on the upstream
//! socket); the worker publishes its counters and histograms at most every 100 ms.
//!
//! Overload: the transport reports the worker's receive backlog ([`Worker::on_backlog`],
//! at most once per millisecond); the core sheds new requests with 503 while it is over
//! `[limits] shed_backlog_bytes` (see `Core::set_backlog`).

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::core::{Core, Flow, Local, LookupResult, Now, SharedConfig, Transmit};
use crate::db::{LookupDone, LookupPool, WakeFn};
use crate::hep::Tap;
use crate::metrics::{classify, UpstreamTracker, WorkerMetrics, WorkerState};
use crate::transport::{Backlog, DatagramHandler, Outbox};

/// The transport's outbox seen as the core's transmit sink; requests to Asterisk start the
/// upstream latency timer; every datagram is copied to the HEP capture when it is on.
struct Tx<'a> {
    out: &'a mut Outbox,
    dropped: &'a mut u64,
    upstream: &'a mut UpstreamTracker,
    now_ns: u64,
    hep: Option<&'a Tap>,
}

impl Transmit for Tx<'_> {
    fn send(&mut self, to: Flow, bytes: &[u8]) {
        if to.local == Local::Upstream {
            self.upstream.on_send(to.remote, bytes, self.now_ns);
        }
        if let Some(hep) = self.hep {
            hep.sent(to, bytes);
        }
        if !self.out.send(to, bytes) {
            *self.dropped += 1;
        }
    }
}

/// A worker's handler.
pub struct Worker {
    core: Core,
    pool: Arc<LookupPool>,
    replies_tx: Sender<LookupDone>,
    replies_rx: Receiver<LookupDone>,
    waker: WakeFn,
    /// Datagrams the outbox could not take.
    pub send_dropped: u64,
    metrics: WorkerMetrics,
    /// Monotonic origin of the ns timestamps given to the upstream tracker.
    epoch: Instant,
    /// Where reloads publish configurations, and the generation this worker runs.
    shared: Arc<SharedConfig>,
    generation: u64,
    /// HEP capture of every datagram in and out (`[hep]`).
    hep: Option<Tap>,
}

impl Worker {
    pub fn new(
        core: Core,
        pool: Arc<LookupPool>,
        waker: WakeFn,
        metrics: WorkerMetrics,
        shared: Arc<SharedConfig>,
        generation: u64,
    ) -> Self {
        let (replies_tx, replies_rx) = crossbeam_channel::unbounded();
        Worker {
            core,
            pool,
            replies_tx,
            replies_rx,
            waker,
            send_dropped: 0,
            metrics,
            epoch: Instant::now(),
            shared,
            generation,
            hep: None,
        }
    }

    /// Copy every datagram received and sent to `tap` (HEP capture).
    pub fn with_hep(mut self, tap: Option<Tap>) -> Self {
        self.hep = tap;
        self
    }

    /// Take a reloaded configuration if one was published (one atomic load when not).
    #[inline]
    fn follow_reloads(&mut self) {
        if self.shared.generation() != self.generation {
            let (generation, cfg) = self.shared.current();
            self.metrics.set_nodes(&cfg.asterisk);
            self.core.reconfigure(cfg);
            self.generation = generation;
        }
    }

    fn since_epoch_ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Publish counters and histograms if due (one comparison when not; monotonic ms).
    fn publish(&mut self, now_ms: u64) {
        let state = WorkerState {
            stats: self.core.stats(),
            in_flight: self.core.transactions_in_flight(),
            send_dropped: self.send_dropped,
        };
        self.metrics.maybe_publish(now_ms, state);
    }

    /// Hand the core's parked lookups to the pool; a full pool answers 503 at once.
    fn drain_lookups(&mut self, now: Now, out: &mut Outbox) {
        while let Some(req) = self.core.poll_lookup() {
            let queued = self
                .pool
                .request(req.user(), req.token, &self.replies_tx, &self.waker);
            if queued.is_err() {
                let now_ns = self.since_epoch_ns(Instant::now());
                let mut tx = Tx {
                    out,
                    dropped: &mut self.send_dropped,
                    upstream: self.metrics.upstream(),
                    now_ns,
                    hep: self.hep.as_ref(),
                };
                self.core
                    .handle_lookup(now, req.token, LookupResult::Failed, &mut tx);
            }
        }
    }
}

impl DatagramHandler for Worker {
    fn owner(&self, from: Flow, data: &[u8], n_workers: usize) -> usize {
        self.core.owner(from, data, n_workers)
    }

    fn on_datagram(&mut self, now: Now, from: Flow, data: &[u8], out: &mut Outbox) {
        self.follow_reloads();
        if let Some(hep) = &self.hep {
            hep.received(from, data);
        }
        let start = Instant::now();
        let now_ns = self.since_epoch_ns(start);
        let class = classify(data);
        if from.local == Local::Upstream && data.starts_with(b"SIP/") {
            self.metrics.upstream().on_response(data, class, now_ns);
        }
        let mut tx = Tx {
            out,
            dropped: &mut self.send_dropped,
            upstream: self.metrics.upstream(),
            now_ns,
            hep: self.hep.as_ref(),
        };
        self.core.handle_datagram(now, from, data, &mut tx);
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.metrics.record_processing(class, ns);
        self.drain_lookups(now, out);
        self.publish(now.mono_ms);
    }

    fn on_wake(&mut self, now: Now, out: &mut Outbox) {
        self.follow_reloads();
        let now_ns = self.since_epoch_ns(Instant::now());
        while let Ok(done) = self.replies_rx.try_recv() {
            let result = match done.result {
                Ok(_) => LookupResult::Ready,
                Err(e) => {
                    // The pool already logs the database error (once per failure, not
                    // per waiting request).
                    tracing::debug!(error = %e, "credential lookup failed");
                    LookupResult::Failed
                }
            };
            let mut tx = Tx {
                out: &mut *out,
                dropped: &mut self.send_dropped,
                upstream: self.metrics.upstream(),
                now_ns,
                hep: self.hep.as_ref(),
            };
            self.core.handle_lookup(now, done.token, result, &mut tx);
        }
        // The farm wakes every worker when a node goes down or up (see core/farm.rs).
        let mut tx = Tx {
            out: &mut *out,
            dropped: &mut self.send_dropped,
            upstream: self.metrics.upstream(),
            now_ns,
            hep: self.hep.as_ref(),
        };
        self.core.handle_farm(now, &mut tx);
        self.drain_lookups(now, out);
        self.publish(now.mono_ms);
    }

    fn on_timer(&mut self, now: Now, out: &mut Outbox) {
        self.follow_reloads();
        let now_ns = self.since_epoch_ns(Instant::now());
        let mut tx = Tx {
            out,
            dropped: &mut self.send_dropped,
            upstream: self.metrics.upstream(),
            now_ns,
            hep: self.hep.as_ref(),
        };
        self.core.handle_timeout(now, &mut tx);
        self.drain_lookups(now, out);
        self.publish(now.mono_ms);
    }

    fn next_deadline_ms(&self) -> Option<u64> {
        self.core.poll_timeout()
    }

    fn admit_connection(&mut self, now: Now, flow: Flow) -> bool {
        self.core.admits_connection(now, flow.remote)
    }

    fn on_backlog(&mut self, now: Now, backlog: Backlog) -> bool {
        let was = self.core.is_shedding();
        self.core.set_backlog(backlog.bytes, backlog.min_rcvbuf);
        let shedding = self.core.is_shedding();
        if shedding != was {
            self.publish(now.mono_ms);
        }
        // While shedding, the transport reads again before sleeping: an idle worker must
        // not keep refusing (nor report shedding) after the burst.
        shedding
    }
}
