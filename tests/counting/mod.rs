//! A counting global allocator for the allocation tests: counts the allocations made on the
//! test's own thread between [`start`] and [`stop`] (allocations by the test harness's other
//! threads, for output capture and reporting, are not the code under test).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

pub static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set on the test's own thread only: allocations by the test harness's other threads
    /// (output capture, reporting) are not the code under test.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    // `try_with`: the allocator may run while thread-locals are being torn down.
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
// relaxed atomic and does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Start counting this thread's allocations.
pub fn start() {
    COUNTING.with(|c| c.set(true));
}

/// Stop counting; the number counted so far.
pub fn stop() -> usize {
    COUNTING.with(|c| c.set(false));
    ALLOCS.load(Ordering::SeqCst)
}
