//! Edge cases of the worker shell on both backends: truncated datagrams, a handler that
//! sends more than the outbox holds across calls, replies on a socket that does not exist,
//! and a handler that sends several datagrams from one call.

#[path = "transport_util.rs"]
mod util;

use std::net::SocketAddr;

use sipfront::core::{Flow, Local, Now};
use sipfront::transport::{DatagramHandler, Outbox, WorkerContext, WorkerSet};
use util::{backends, cfg, client, recv, wait_counters, Echo};

/// Replies `data[0]` copies of the datagram; a first byte of 0xff replies on a listen
/// socket index that does not exist.
struct Fanout;

impl DatagramHandler for Fanout {
    fn owner(&self, _from: Flow, _data: &[u8], _n: usize) -> usize {
        usize::MAX
    }
    fn on_datagram(&mut self, _now: Now, from: Flow, data: &[u8], out: &mut Outbox) {
        match data.first() {
            Some(0xff) => {
                out.send(Flow::new(Local::Listen(9), from.remote), data);
            }
            Some(&k) => {
                for _ in 0..k {
                    out.send(from, data);
                }
            }
            None => {}
        }
    }
    fn on_wake(&mut self, _now: Now, _out: &mut Outbox) {}
    fn on_timer(&mut self, _now: Now, _out: &mut Outbox) {}
    fn next_deadline_ms(&self) -> Option<u64> {
        None
    }
}

#[test]
fn oversized_datagrams_are_dropped_and_counted() {
    for backend in backends() {
        let mut c = cfg(backend);
        c.max_datagram = 512;
        let set = WorkerSet::spawn(&["127.0.0.1:0".parse().unwrap()], 1, &c, Echo::new).unwrap();
        let to = set.listen_addrs()[0];
        let cl = client();
        cl.send_to(&[b'a'; 1000], to).unwrap();
        cl.send_to(b"small", to).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = recv(&cl, &mut buf);
        assert_eq!(&buf[..n], b"0small", "{backend:?}");
        let counters = wait_counters(&set, |c| c[0].dropped == 1 && c[0].rx == 2);
        assert_eq!(counters[0].dropped, 1, "{backend:?}: {counters:?}");
        assert_eq!(counters[0].rx, 2, "{backend:?}: {counters:?}");
        set.shutdown_and_join().unwrap();
    }
}

#[test]
fn outbox_is_flushed_between_calls_when_full() {
    for backend in backends() {
        let mut c = cfg(backend);
        c.send_slots = 8;
        c.send_reserve_slots = 5;
        let set = WorkerSet::spawn(
            &["127.0.0.1:0".parse().unwrap()],
            1,
            &c,
            |_: &WorkerContext| Fanout,
        )
        .unwrap();
        let to = set.listen_addrs()[0];
        let cl = client();
        // 20 datagrams asking for 5 replies each = 100 replies through an 8-slot outbox.
        for _ in 0..20 {
            cl.send_to(&[5, 1, 2], to).unwrap();
        }
        let mut buf = [0u8; 64];
        for _ in 0..100 {
            let (n, _) = recv(&cl, &mut buf);
            assert_eq!(&buf[..n], &[5, 1, 2]);
        }
        // One call asking for more than the outbox holds: the excess is dropped.
        cl.send_to(&[10, 0], to).unwrap();
        for _ in 0..8 {
            recv(&cl, &mut buf);
        }
        // Unknown socket index: dropped.
        cl.send_to(&[0xff], to).unwrap();
        cl.send_to(&[1, 9], to).unwrap();
        let (n, _) = recv(&cl, &mut buf);
        assert_eq!(&buf[..n], &[1, 9]);
        let counters = wait_counters(&set, |c| c[0].tx == 109 && c[0].dropped == 3);
        assert_eq!(counters[0].tx, 109, "{backend:?}: {counters:?}");
        assert_eq!(counters[0].dropped, 3, "{backend:?}: {counters:?}");
        set.shutdown_and_join().unwrap();
    }
}

#[test]
fn idle_workers_do_not_spin() {
    for backend in backends() {
        let mut c = cfg(backend);
        c.max_idle_ms = 60_000;
        let set = WorkerSet::spawn(&["127.0.0.1:0".parse().unwrap()], 1, &c, Echo::new).unwrap();
        let to = set.listen_addrs()[0];
        let cl = client();
        let mut buf = [0u8; 64];
        // 200 strictly sequential round trips: a loop that never sleeps would turn
        // thousands of times meanwhile; a sleeping one a few times per datagram.
        for i in 0..200u32 {
            cl.send_to(&i.to_be_bytes(), to).unwrap();
            recv(&cl, &mut buf);
        }
        let counters = wait_counters(&set, |c| c[0].rx == 200);
        assert!(
            counters[0].turns <= 200 * 3 + 10,
            "{backend:?}: {counters:?}"
        );
        // Spurious completions (EAGAIN on io_uring) would show up as extra rx/dropped.
        assert_eq!(
            (counters[0].rx, counters[0].dropped),
            (200, 0),
            "{backend:?}"
        );
        set.shutdown_and_join().unwrap();
    }
}

#[test]
fn tiny_buffer_pool_and_work_cap_lose_nothing() {
    for backend in backends() {
        let mut c = cfg(backend);
        // Two receive buffers and one datagram per turn: io_uring's multishot receive
        // runs out of buffers (ENOBUFS) and must be re-armed; datagrams wait in the
        // socket meanwhile.
        c.recv_batch = 1;
        c.max_datagrams_per_turn = 1;
        let set = WorkerSet::spawn(&["127.0.0.1:0".parse().unwrap()], 1, &c, Echo::new).unwrap();
        let cl = client();
        util::echo_round(&cl, set.listen_addrs()[0], 600, 100, |_| b'z');
        let counters = wait_counters(&set, |c| c[0].rx == 600);
        assert_eq!(
            (counters[0].rx, counters[0].dropped),
            (600, 0),
            "{backend:?}"
        );
        set.shutdown_and_join().unwrap();
    }
}

#[test]
fn several_listen_addresses_and_ipv6() {
    let mut listen: Vec<SocketAddr> = vec![
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.2:0".parse().unwrap(),
    ];
    // IPv6 loopback when the machine has it.
    if std::net::UdpSocket::bind("[::1]:0").is_ok() {
        listen.push("[::1]:0".parse().unwrap());
    }
    for backend in backends() {
        let set = WorkerSet::spawn(&listen, 2, &cfg(backend), Echo::new).unwrap();
        assert_eq!(set.listen_addrs().len(), listen.len());
        for &to in set.listen_addrs() {
            let cl = std::net::UdpSocket::bind(SocketAddr::new(to.ip(), 0)).unwrap();
            cl.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            util::echo_round(&cl, to, 100, 20, |_| b'm');
        }
        set.shutdown_and_join().unwrap();
    }
}

#[test]
fn a_panicking_factory_fails_spawn() {
    let factory = |ctx: &WorkerContext| {
        assert!(ctx.index != 1, "factory refuses worker 1");
        Echo::new(ctx)
    };
    let err = WorkerSet::spawn(
        &["127.0.0.1:0".parse().unwrap()],
        2,
        &cfg(sipfront::transport::Backend::Mmsg),
        factory,
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, sipfront::transport::TransportError::Panicked(1)),
        "{err}"
    );
}

#[test]
fn auto_backend_resolves_and_pinned_workers_serve() {
    let mut c = cfg(sipfront::transport::Backend::Auto);
    c.pin_cores = true;
    let set = WorkerSet::spawn(&["127.0.0.1:0".parse().unwrap()], 2, &c, Echo::new).unwrap();
    assert_ne!(set.backend(), sipfront::transport::Backend::Auto);
    let cl = client();
    util::echo_round(&cl, set.listen_addrs()[0], 200, 50, |_| b'p');
    assert!(!set.any_stopped());
    set.shutdown_and_join().unwrap();
}
