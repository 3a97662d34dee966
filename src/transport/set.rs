//! [`WorkerSet`]: binds every worker's sockets, picks the backend, starts the pinned
//! threads, and later stops them. Sockets are bound before any thread starts, so bind
//! errors are returned by [`WorkerSet::spawn`]; `spawn` also waits until every worker has
//! built its handler and its ring, so a returned set is ready to serve.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::bounded;

use super::handoff::HandoffMesh;
use super::outbox::Outbox;
use super::shell::{Shell, ShellParts};
use super::socket::{
    available_cores, bind_worker, pin_to_core, resolve_listen, udp_address_free, WorkerSockets,
};
use super::stats::CounterBlock;
use super::steer;
use super::stream::{Listener, StreamSetup, Streams};
use super::{mmsg, uring, uring_loop};
use super::{Backend, DatagramHandler, TransportConfig, TransportError, Waker, WorkerCounters};
use crate::sip::Transport;

/// What a handler factory learns about the worker it builds a handler for.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    /// This worker's index, `0..n_workers` (what [`DatagramHandler::owner`] returns for it).
    pub index: usize,
    /// Number of workers.
    pub n_workers: usize,
    /// The listen addresses (ports resolved), indexed by [`crate::core::Local::Listen`].
    pub listen: Vec<SocketAddr>,
    /// This worker's upstream socket address (put its port in the Via sent to Asterisk).
    pub upstream: SocketAddr,
    /// Wakes this worker (hand it to DB lookups etc.); the worker then calls `on_wake`.
    pub waker: Waker,
    /// The backend this worker runs (`IoUring` or `Mmsg`, never `Auto`).
    pub backend: Backend,
}

/// A stream listen address: its address, transport and the pieces its workers share.
#[derive(Clone)]
pub struct StreamListen {
    pub addr: SocketAddr,
    pub transport: Transport,
    pub setup: StreamSetup,
}

/// Everything a worker set listens on.
#[derive(Clone)]
pub struct Endpoints {
    /// UDP listen addresses: `Local::Listen(0..udp.len())`.
    pub udp: Vec<SocketAddr>,
    /// Index into `udp` of the address whose IP the upstream sockets bind.
    pub upstream_on: usize,
    /// Stream listen addresses: `Local::Listen(udp.len()..)`, in this order.
    pub streams: Vec<StreamListen>,
}

/// A running set of workers.
pub struct WorkerSet {
    threads: Vec<JoinHandle<Result<(), TransportError>>>,
    wakers: Vec<Waker>,
    shutdown: Arc<AtomicBool>,
    counters: Arc<[CounterBlock]>,
    listen: Vec<SocketAddr>,
    upstream: Vec<SocketAddr>,
    backend: Backend,
}

/// The number of workers `[listen] workers` asks for (0: one per allowed core).
pub fn worker_count(workers: usize) -> usize {
    if workers == 0 {
        available_cores()
    } else {
        workers
    }
}

fn choose_backend(cfg: &TransportConfig) -> Result<Backend, TransportError> {
    let chosen = match cfg.backend {
        Backend::Mmsg => Backend::Mmsg,
        Backend::IoUring => {
            uring::probe()?;
            Backend::IoUring
        }
        Backend::Auto => match uring::probe() {
            Ok(()) => Backend::IoUring,
            Err(e) => {
                tracing::warn!(reason = %e, "io_uring unavailable, falling back to recvmmsg/sendmmsg");
                Backend::Mmsg
            }
        },
    };
    Ok(chosen)
}

impl WorkerSet {
    /// Binds `workers` workers (0 = one per available core) on every address of `listen`
    /// (port 0 = pick one port shared by all workers) and starts them; `factory` builds
    /// each worker's handler inside that worker's thread. The upstream sockets bind the
    /// first listen address's IP.
    pub fn spawn<F, H>(
        listen: &[SocketAddr],
        workers: usize,
        cfg: &TransportConfig,
        factory: F,
    ) -> Result<Self, TransportError>
    where
        F: Fn(&WorkerContext) -> H + Send + Sync + 'static,
        H: DatagramHandler,
    {
        Self::spawn_on(listen, 0, workers, cfg, factory)
    }

    /// [`WorkerSet::spawn`] with the upstream sockets on the IP of `listen[upstream_on]`
    /// (the interface facing Asterisk).
    pub fn spawn_on<F, H>(
        listen: &[SocketAddr],
        upstream_on: usize,
        workers: usize,
        cfg: &TransportConfig,
        factory: F,
    ) -> Result<Self, TransportError>
    where
        F: Fn(&WorkerContext) -> H + Send + Sync + 'static,
        H: DatagramHandler,
    {
        let endpoints = Endpoints {
            udp: listen.to_vec(),
            upstream_on,
            streams: Vec::new(),
        };
        Self::spawn_endpoints(&endpoints, workers, cfg, factory)
    }

    /// Binds and starts workers on `endpoints`: UDP listen addresses (`Listen(0..)`), then
    /// stream listen addresses (`Listen(udp.len()..)`, see [`super::stream`]).
    pub fn spawn_endpoints<F, H>(
        endpoints: &Endpoints,
        workers: usize,
        cfg: &TransportConfig,
        factory: F,
    ) -> Result<Self, TransportError>
    where
        F: Fn(&WorkerContext) -> H + Send + Sync + 'static,
        H: DatagramHandler,
    {
        cfg.validate()?;
        let listen = &endpoints.udp[..];
        let upstream_on = endpoints.upstream_on;
        if listen.is_empty() {
            return Err(TransportError::NoListenAddress);
        }
        let stream_addrs: Vec<SocketAddr> = endpoints.streams.iter().map(|s| s.addr).collect();
        let upstream_on = upstream_on.min(listen.len() - 1);
        let n = worker_count(workers);
        if n > super::MAX_WORKERS {
            return Err(TransportError::TooManyWorkers(n));
        }
        let backend = choose_backend(cfg)?;
        tracing::info!(
            backend = backend.as_str(),
            workers = n,
            "transport starting"
        );

        let fresh: Vec<bool> = listen.iter().map(|&a| udp_address_free(a)).collect();
        let (listen, stream_addrs, w0) = resolve_listen(listen, upstream_on, &stream_addrs, cfg)?;
        let mut sockets: Vec<WorkerSockets> = vec![w0];
        for i in 1..n {
            sockets.push(bind_worker(i, &listen, upstream_on, &stream_addrs, cfg)?);
        }
        let groups: Vec<steer::Group<'_>> = listen
            .iter()
            .zip(&fresh)
            .zip(&sockets[0].listen)
            .map(|((&addr, &fresh), sock)| steer::Group { addr, sock, fresh })
            .collect();
        steer::setup(&groups, cfg.steer_responses && n > 1);
        // The listen table: UDP addresses, then stream ones.
        let udp_count = listen.len();
        let listen: Vec<SocketAddr> = listen.iter().chain(&stream_addrs).copied().collect();
        let mut upstream = Vec::with_capacity(n);
        for s in &sockets {
            let addr = s
                .upstream
                .local_addr()
                .map_err(|source| TransportError::Socket {
                    addr: listen[0],
                    op: "getsockname",
                    source,
                })?;
            upstream.push(addr);
        }
        let wakers = (0..n)
            .map(|_| Waker::new())
            .collect::<Result<Vec<_>, _>>()
            .map_err(TransportError::EventFd)?;
        let mut mesh = HandoffMesh::new(n, cfg.handoff_buffers, cfg.max_datagram);
        let counters: Arc<[CounterBlock]> = (0..n).map(|_| CounterBlock::default()).collect();
        let shutdown = Arc::new(AtomicBool::new(false));
        let factory = Arc::new(factory);
        let (ready_tx, ready_rx) = bounded::<Result<(), TransportError>>(n);

        let mut set = WorkerSet {
            threads: Vec::with_capacity(n),
            wakers: wakers.clone(),
            shutdown: shutdown.clone(),
            counters: counters.clone(),
            listen: listen.clone(),
            upstream: upstream.clone(),
            backend,
        };
        for (index, mut socks) in sockets.into_iter().enumerate() {
            let Some(handoff) = mesh.port(index, &wakers) else {
                continue;
            };
            let ctx = WorkerContext {
                index,
                n_workers: n,
                listen: listen.clone(),
                upstream: upstream[index],
                waker: wakers[index].clone(),
                backend,
            };
            let listeners: Vec<Listener> = socks
                .streams
                .drain(..)
                .zip(&endpoints.streams)
                .enumerate()
                .map(|(k, (sock, spec))| Listener {
                    sock,
                    local: u16::try_from(udp_count + k).unwrap_or(u16::MAX),
                    transport: spec.transport,
                })
                .collect();
            let streams = endpoints
                .streams
                .first()
                .map(|first| (listeners, first.setup.clone()));
            let parts = WorkerStart {
                ctx,
                cfg: cfg.clone(),
                socks,
                streams,
                handoff,
                shutdown: shutdown.clone(),
                counters: counters.clone(),
                ready: ready_tx.clone(),
            };
            let factory = factory.clone();
            let handle = std::thread::Builder::new()
                .name(format!("sipfront-w{index}"))
                .spawn(move || worker_main(parts, &*factory))
                .map_err(|source| TransportError::Spawn { index, source })?;
            set.threads.push(handle);
        }
        drop(ready_tx);
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let _ = set.stop();
                    return Err(e);
                }
                Err(_) => {
                    // A worker died before reporting (its factory panicked).
                    return Err(set.stop().err().unwrap_or(TransportError::Panicked(0)));
                }
            }
        }
        Ok(set)
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.wakers.len()
    }

    /// True when the set has no workers (never, once spawned).
    pub fn is_empty(&self) -> bool {
        self.wakers.is_empty()
    }

    /// The backend chosen at spawn (`IoUring` or `Mmsg`).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The listen addresses, ports resolved.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// Each worker's upstream socket address, by worker index.
    pub fn upstream_addrs(&self) -> &[SocketAddr] {
        &self.upstream
    }

    /// The waker of worker `index`.
    pub fn waker(&self, index: usize) -> Option<&Waker> {
        self.wakers.get(index)
    }

    /// Counters of worker `index` as last published (once per loop turn).
    pub fn counters(&self, index: usize) -> Option<WorkerCounters> {
        self.counters.get(index).map(|c| c.snapshot())
    }

    /// Counters of every worker, by index.
    pub fn all_counters(&self) -> Vec<WorkerCounters> {
        self.counters.iter().map(|c| c.snapshot()).collect()
    }

    /// True when some worker thread has ended (an I/O error it could not recover from, or
    /// a panic) before shutdown; `shutdown_and_join` then returns its error.
    pub fn any_stopped(&self) -> bool {
        self.threads.iter().any(|t| t.is_finished())
    }

    /// Sets the shutdown flag, wakes every worker and joins them. Returns the first
    /// worker error (or panic), if any.
    pub fn shutdown_and_join(mut self) -> Result<(), TransportError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), TransportError> {
        self.shutdown.store(true, Ordering::Release);
        for w in &self.wakers {
            w.notify();
        }
        let mut first = Ok(());
        for (index, t) in self.threads.drain(..).enumerate() {
            let r = t.join().unwrap_or(Err(TransportError::Panicked(index)));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for WorkerSet {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            let _ = self.stop();
        }
    }
}

struct WorkerStart {
    ctx: WorkerContext,
    cfg: TransportConfig,
    socks: WorkerSockets,
    /// This worker's stream listeners and the shared stream pieces, if any.
    streams: Option<(Vec<Listener>, StreamSetup)>,
    handoff: super::handoff::HandoffPort,
    shutdown: Arc<AtomicBool>,
    counters: Arc<[CounterBlock]>,
    ready: crossbeam_channel::Sender<Result<(), TransportError>>,
}

fn worker_main<F, H>(p: WorkerStart, factory: &F) -> Result<(), TransportError>
where
    F: Fn(&WorkerContext) -> H,
    H: DatagramHandler,
{
    let index = p.ctx.index;
    if p.cfg.pin_cores {
        match pin_to_core(index) {
            Ok(cpu) => tracing::debug!(worker = index, cpu, "pinned"),
            Err(e) => tracing::warn!(worker = index, error = %e, "could not pin worker to a core"),
        }
    }
    // A setup step that failed: the spawner hears it and the worker ends.
    let failed = |op: &'static str, source: std::io::Error| {
        let _ = p
            .ready
            .send(Err(TransportError::Worker { index, op, source }));
    };
    let mut backend = p.ctx.backend;
    let uring = if backend == Backend::IoUring {
        match uring_loop::UringSetup::new(&p.cfg, p.socks.listen.len() + 1) {
            Ok(r) => Some(r),
            Err(source) if p.cfg.backend == Backend::Auto => {
                tracing::warn!(worker = index, error = %source, "io_uring setup failed, using mmsg");
                backend = Backend::Mmsg;
                None
            }
            Err(source) => {
                failed("io_uring setup", source);
                return Ok(());
            }
        }
    } else {
        None
    };
    let ctx = WorkerContext { backend, ..p.ctx };
    tracing::info!(
        worker = index,
        backend = backend.as_str(),
        upstream = %ctx.upstream,
        "worker starting"
    );
    let streams = match p.streams {
        Some((listeners, setup)) => {
            match Streams::new(u16::try_from(index).unwrap_or(u16::MAX), listeners, setup) {
                Ok(s) => Some(s),
                Err(source) => {
                    failed("epoll setup", source);
                    return Ok(());
                }
            }
        }
        None => None,
    };
    let handler = factory(&ctx);
    let reserve = p.cfg.max_datagram;
    let shell = Shell::new(ShellParts {
        handler,
        index,
        n_workers: ctx.n_workers,
        out: Outbox::new(
            p.cfg.send_slots,
            p.cfg.send_slab_bytes,
            reserve,
            p.cfg.send_reserve_slots,
        ),
        handoff: p.handoff,
        waker: ctx.waker.clone(),
        shutdown: p.shutdown,
        shared: p.counters,
        max_per_turn: p.cfg.max_datagrams_per_turn,
        max_idle_ms: p.cfg.max_idle_ms,
        streams,
    });
    let _ = p.ready.send(Ok(()));
    drop(p.ready);
    let r = match uring {
        Some(setup) => uring_loop::run(shell, setup, p.socks, &p.cfg, index),
        None => mmsg::run(shell, p.socks, &p.cfg, index),
    };
    if let Err(e) = &r {
        tracing::error!(worker = index, error = %e, "worker stopped");
    }
    r
}
