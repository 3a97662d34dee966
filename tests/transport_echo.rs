//! Loopback integration tests of the worker shell, for both backends: echo of many
//! datagrams, the upstream socket, hand-off between workers, the waker, timers, counters
//! and shutdown.

#[path = "transport_util.rs"]
mod util;

use std::net::SocketAddr;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded};
use sipfront::transport::{Backend, WorkerSet};
use util::{backends, cfg, client, echo_round, recv, wait_counters, Echo};

fn localhost() -> Vec<SocketAddr> {
    vec!["127.0.0.1:0".parse().unwrap()]
}

#[test]
fn echoes_many_datagrams_on_both_backends() {
    for backend in backends() {
        let set = WorkerSet::spawn(&localhost(), 2, &cfg(backend), Echo::new).unwrap();
        assert_eq!(set.backend(), backend);
        let to = set.listen_addrs()[0];
        assert_ne!(to.port(), 0);
        let c = client();
        echo_round(&c, to, 5_000, 200, |_| b'x');
        let rx = |c: &[sipfront::transport::WorkerCounters]| c.iter().map(|c| c.rx).sum::<u64>();
        let total_rx = rx(&wait_counters(&set, |c| rx(c) >= 5_000));
        assert!(total_rx >= 5_000, "{backend:?}: rx {total_rx}");
        set.shutdown_and_join().unwrap();
    }
}

#[test]
fn upstream_socket_is_per_worker_and_answers_from_its_port() {
    for backend in backends() {
        let set = WorkerSet::spawn(&localhost(), 2, &cfg(backend), Echo::new).unwrap();
        let ups = set.upstream_addrs().to_vec();
        assert_eq!(ups.len(), 2);
        assert_ne!(ups[0], ups[1]);
        let c = client();
        for (w, &up) in ups.iter().enumerate() {
            assert_eq!(up.ip(), set.listen_addrs()[0].ip());
            let workers = echo_round(&c, up, 50, 10, |_| b'u');
            assert!(
                workers.iter().all(|&x| usize::from(x) == w),
                "{backend:?}: {workers:?}"
            );
        }
        set.shutdown_and_join().unwrap();
    }
}

#[test]
fn upstream_port_base_gives_consecutive_ports() {
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let base = probe.local_addr().unwrap().port();
    drop(probe);
    let mut c = cfg(Backend::Mmsg);
    c.upstream_port_base = base;
    // The port may have been taken again meanwhile; only check when binding worked.
    if let Ok(set) = WorkerSet::spawn(&localhost(), 2, &c, Echo::new) {
        assert_eq!(set.upstream_addrs()[0].port(), base);
        assert_eq!(set.upstream_addrs()[1].port(), base + 1);
        set.shutdown_and_join().unwrap();
    }
}

#[test]
fn handoff_routes_each_datagram_to_its_owner() {
    for backend in backends() {
        let factory = |ctx: &sipfront::transport::WorkerContext| Echo {
            by_first_byte: true,
            ..Echo::new(ctx)
        };
        let set = WorkerSet::spawn(&localhost(), 2, &cfg(backend), factory).unwrap();
        let to = set.listen_addrs()[0];
        // Several client sockets so SO_REUSEPORT spreads them over both workers.
        for _ in 0..6 {
            let c = client();
            let workers = echo_round(&c, to, 400, 50, |k| (k % 2) as u8);
            assert_eq!(workers.len(), 400);
        }
        // echo_round checked byte 1 == first(k); the worker byte must equal first % 2.
        let c = client();
        let mut buf = [0u8; 256];
        for b in 0u8..8 {
            c.send_to(&[b, 1, 2, 3], to).unwrap();
            let (n, from) = recv(&c, &mut buf);
            assert_eq!((n, from), (5, to), "{backend:?}");
            assert_eq!(buf[0] - b'0', b % 2, "{backend:?}: owner of {b}");
        }
        let counters = wait_counters(&set, |c| {
            c.iter().map(|c| c.handed_off).sum::<u64>()
                == c.iter().map(|c| c.handoff_in).sum::<u64>()
        });
        let handed: u64 = counters.iter().map(|c| c.handed_off).sum();
        let taken: u64 = counters.iter().map(|c| c.handoff_in).sum();
        assert!(handed > 0, "{backend:?}: {counters:?}");
        assert_eq!(handed, taken, "{backend:?}: {counters:?}");
        assert_eq!(counters.iter().map(|c| c.dropped).sum::<u64>(), 0);
        set.shutdown_and_join().unwrap();
    }
}

#[test]
fn waker_calls_on_wake_from_another_thread() {
    for backend in backends() {
        let c = client();
        let me = c.local_addr().unwrap();
        let (wtx, wrx) = unbounded();
        let factory = move |ctx: &sipfront::transport::WorkerContext| {
            wtx.send((ctx.index, ctx.waker.clone(), ctx.upstream))
                .unwrap();
            Echo {
                notify: Some(me),
                ..Echo::new(ctx)
            }
        };
        let set = WorkerSet::spawn(&localhost(), 2, &cfg(backend), factory).unwrap();
        let mut wakers: Vec<_> = wrx.try_iter().collect();
        wakers.sort_by_key(|w| w.0);
        assert_eq!(wakers.len(), 2);
        let mut buf = [0u8; 64];
        for (_, waker, upstream) in &wakers {
            let waker = waker.clone();
            std::thread::spawn(move || waker.wake()).join().unwrap();
            let (n, from) = recv(&c, &mut buf);
            assert_eq!(&buf[..n], b"woke", "{backend:?}");
            assert_eq!(from, *upstream, "{backend:?}");
        }
        // The set hands out the same wakers.
        set.waker(1).unwrap().wake();
        let (_, from) = recv(&c, &mut buf);
        assert_eq!(from, wakers[1].2);
        set.shutdown_and_join().unwrap();
    }
}

#[test]
fn timer_fires_at_the_handler_deadline() {
    for backend in backends() {
        let c = client();
        let me = c.local_addr().unwrap();
        let (ttx, trx) = bounded(2);
        let factory = move |ctx: &sipfront::transport::WorkerContext| {
            let now = sipfront::transport::mono_ms();
            ttx.send(now + 150).unwrap();
            Echo {
                notify: Some(me),
                deadline: Some(now + 150),
                ..Echo::new(ctx)
            }
        };
        let set = WorkerSet::spawn(&localhost(), 1, &cfg(backend), factory).unwrap();
        let deadline = trx.recv_timeout(Duration::from_secs(1)).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = recv(&c, &mut buf);
        let at = sipfront::transport::mono_ms();
        assert_eq!(&buf[..n], b"timer");
        assert_eq!(from, set.listen_addrs()[0]);
        // Coarse clock: up to a few ms early is allowed, never much early.
        assert!(
            at + 10 >= deadline,
            "{backend:?}: fired at {at}, deadline {deadline}"
        );
        set.shutdown_and_join().unwrap();
    }
}

#[test]
fn idle_shutdown_is_prompt_and_counts_turns() {
    for backend in backends() {
        let mut c = cfg(backend);
        c.max_idle_ms = 60_000;
        let set = WorkerSet::spawn(&localhost(), 3, &c, Echo::new).unwrap();
        assert_eq!(set.len(), 3);
        let (done_tx, done_rx) = bounded(1);
        std::thread::spawn(move || done_tx.send(set.shutdown_and_join().is_ok()).unwrap());
        // Without the eventfd wake this would hang for max_idle_ms (60 s).
        assert_eq!(
            done_rx.recv_timeout(Duration::from_secs(5)),
            Ok(true),
            "{backend:?}"
        );
    }
}

#[test]
fn bind_conflict_is_an_error_naming_the_address() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = WorkerSet::spawn(&[addr], 1, &cfg(Backend::Mmsg), Echo::new)
        .err()
        .unwrap();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    let err = WorkerSet::spawn(&localhost(), 5000, &cfg(Backend::Mmsg), Echo::new)
        .err()
        .unwrap();
    assert!(err.to_string().contains("listen.workers"), "{err}");
    let err = WorkerSet::spawn(&[], 1, &cfg(Backend::Mmsg), Echo::new)
        .err()
        .unwrap();
    assert!(err.to_string().contains("listen.udp"), "{err}");
}
