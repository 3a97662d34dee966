//! Steady-state allocation test: after warm-up, echoing datagrams (including hand-offs
//! between workers) performs no heap allocation in any thread, on both backends; nor does
//! echoing SIP-over-WebSocket frames on connections (decoding, hand-off, framing).

#[path = "transport_util.rs"]
mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use std::io::{Read, Write};
use std::sync::Arc;

use sipfront::sip::Transport;
use sipfront::transport::stream::{Registry, StreamConfig, StreamSetup};
use sipfront::transport::{Endpoints, StreamListen, WorkerContext, WorkerSet};
use util::{backends, cfg, client, recv, Echo};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is process-wide: the tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sends `rounds` windows of one datagram per client (first bytes alternate so half are
/// handed off) and waits for every echo; allocation-free on the client side too.
fn exchange(clients: &[std::net::UdpSocket], to: std::net::SocketAddr, rounds: u32) {
    let mut buf = [0u8; 512];
    for r in 0..rounds {
        for (i, c) in clients.iter().enumerate() {
            let msg = [(r as u8).wrapping_add(i as u8), 7, 7, 7];
            c.send_to(&msg, to).unwrap();
        }
        for c in clients {
            let (n, _) = recv(c, &mut buf);
            assert_eq!(n, 5);
        }
    }
}

#[test]
fn steady_state_echo_and_handoff_do_not_allocate() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for backend in backends() {
        let factory = |ctx: &WorkerContext| Echo {
            by_first_byte: true,
            ..Echo::new(ctx)
        };
        let set =
            WorkerSet::spawn(&["127.0.0.1:0".parse().unwrap()], 2, &cfg(backend), factory).unwrap();
        let to = set.listen_addrs()[0];
        let clients: Vec<_> = (0..4).map(|_| client()).collect();
        exchange(&clients, to, 300);
        let before = ALLOCS.load(Ordering::SeqCst);
        exchange(&clients, to, 1_000);
        let after = ALLOCS.load(Ordering::SeqCst);
        let counters = set.all_counters();
        assert!(counters.iter().map(|c| c.handed_off).sum::<u64>() > 0);
        assert_eq!(
            after - before,
            0,
            "{backend:?}: {} allocations during 4000 echoes",
            after - before
        );
        set.shutdown_and_join().unwrap();
    }
}

/// One WebSocket connection's round trips: a masked binary frame of 4 bytes (the first
/// alternating, so half are handed to the other worker) and its echo, an unmasked text
/// frame of 5; fixed buffers only.
fn ws_exchange(conns: &mut [std::net::TcpStream], rounds: u32) {
    let mask = [1u8, 2, 3, 4];
    for r in 0..rounds {
        for (i, c) in conns.iter_mut().enumerate() {
            let payload = [(r as u8).wrapping_add(i as u8), 7, 7, 7];
            let mut frame = [0x82, 0x84, mask[0], mask[1], mask[2], mask[3], 0, 0, 0, 0];
            for k in 0..4 {
                frame[6 + k] = payload[k] ^ mask[k];
            }
            c.write_all(&frame).unwrap();
        }
        for c in conns.iter_mut() {
            let mut echo = [0u8; 7];
            c.read_exact(&mut echo).unwrap();
            assert_eq!(echo[..2], [0x81, 5]);
        }
    }
}

#[test]
fn steady_state_websocket_echo_does_not_allocate() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for backend in backends() {
        let setup = StreamSetup {
            registry: Arc::new(Registry::new(2, 16, 64, 64)),
            tls: None,
            cfg: StreamConfig::default(),
            ws: Default::default(),
            max_message: 8192,
        };
        let endpoints = Endpoints {
            udp: vec!["127.0.0.1:0".parse().unwrap()],
            upstream_on: 0,
            streams: vec![StreamListen {
                addr: "127.0.0.1:0".parse().unwrap(),
                transport: Transport::Ws,
                setup,
            }],
        };
        let factory = |ctx: &WorkerContext| Echo {
            by_first_byte: true,
            ..Echo::new(ctx)
        };
        let set = WorkerSet::spawn_endpoints(&endpoints, 2, &cfg(backend), factory).unwrap();
        let to = set.listen_addrs()[1];
        let mut conns: Vec<_> = (0..4)
            .map(|_| {
                let mut c = std::net::TcpStream::connect(to).unwrap();
                c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .unwrap();
                c.write_all(
                    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                      Sec-WebSocket-Protocol: sip\r\n\r\n",
                )
                .unwrap();
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    c.read_exact(&mut b).unwrap();
                    head.push(b[0]);
                }
                assert!(head.starts_with(b"HTTP/1.1 101 "));
                c
            })
            .collect();
        ws_exchange(&mut conns, 300);
        let before = ALLOCS.load(Ordering::SeqCst);
        ws_exchange(&mut conns, 1_000);
        let after = ALLOCS.load(Ordering::SeqCst);
        let counters = set.all_counters();
        assert!(counters.iter().map(|c| c.handed_off).sum::<u64>() > 0);
        assert_eq!(
            after - before,
            0,
            "{backend:?}: {} allocations during 4000 WebSocket echoes",
            after - before
        );
        drop(conns);
        set.shutdown_and_join().unwrap();
    }
}
