//! Steady-state allocation test: after warm-up, echoing datagrams (including hand-offs
//! between workers) performs no heap allocation in any thread, on both backends.

#[path = "transport_util.rs"]
mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use sipfront::transport::{WorkerContext, WorkerSet};
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
