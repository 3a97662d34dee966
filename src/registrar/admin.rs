//! Administrative operations on the location table (the admin API, `sipfront ctl`):
//! removing bindings, and listing every AOR page by page.
//!
//! Removal runs on the admin thread, which has no socket to tell Asterisk with. When it
//! leaves an AOR with no live binding, the key goes into a small bounded queue behind an
//! atomic flag; [`Registrar::expire`], which every worker calls once a second, drains it
//! and reports those AORs (still without a live binding) together with the expired ones,
//! so REGFWD sends their Expires: 0 from that worker's upstream socket. The listing walks
//! the striped table in a fixed key order ([`super::table`]), one stripe lock at a time.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::binding::Binding;
use super::error::RegisterError;
use super::rules::Registrar;
use super::slot::Slot;
use super::uri::same_contact;

/// Most users an administrative removal can queue for REGFWD's Expires: 0 before the next
/// expiry sweep takes them (see [`Registrar::remove`]); past it removals are counted and
/// logged, and those users are not told to Asterisk (their registration there lapses).
pub const MAX_PENDING_UNREGISTERS: usize = 4096;

/// Most AORs one [`Registrar::list`] page holds.
pub const MAX_PAGE: usize = 1000;

/// What an administrative [`Registrar::remove`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removal {
    /// Live bindings removed.
    pub removed: usize,
    /// Live bindings left.
    pub remaining: usize,
    /// The AOR had live bindings and has none now: queued for Asterisk's Expires: 0.
    pub emptied: bool,
}

/// One page of [`Registrar::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// AORs given to the callback (those with at least one live binding).
    pub aors: usize,
    /// Where the next page starts (pass it as `after`); `None` when the listing is done.
    pub next: Option<Box<str>>,
}

/// Users emptied by an administrative removal, waiting for the expiry sweep.
#[derive(Default)]
pub(super) struct PendingUnregisters {
    queue: Mutex<VecDeque<Box<str>>>,
    /// Set while `queue` may be non-empty: the sweep's check is one atomic load.
    flag: AtomicBool,
    dropped: AtomicU64,
}

impl Registrar {
    /// Remove one binding (`Some(uri)`) or all bindings of `aor` (administrative; the
    /// change is persisted like any other). When the AOR had live bindings at `now_ms` and
    /// has none left, it is queued so that the next [`Registrar::expire`] reports it (REGFWD
    /// then sends Expires: 0 to Asterisk); removing one of several bindings queues nothing.
    pub fn remove(&self, aor: &str, uri: Option<&str>, now_ms: u64) -> Removal {
        let key = self.key(aor);
        let r = self.table.modify(
            key,
            |slots| {
                let live = |s: &Slot| s.expires_at_ms > now_ms;
                let before = slots.len();
                let live_before = slots.iter().filter(|s| live(s)).count();
                match uri {
                    Some(u) => slots.retain(|s| !same_contact(s.uri(), u)),
                    None => slots.clear(),
                }
                let remaining = slots.iter().filter(|s| live(s)).count();
                let removal = Removal {
                    removed: live_before - remaining,
                    remaining,
                    emptied: live_before > 0 && remaining == 0,
                };
                Ok::<_, RegisterError>((removal, slots.len() != before))
            },
            |_| RegisterError::TableFull,
        );
        let removal = r.unwrap_or(Removal {
            removed: 0,
            remaining: 0,
            emptied: false,
        });
        if removal.emptied {
            self.queue_unregister(key);
        }
        removal
    }

    fn queue_unregister(&self, key: &str) {
        let mut q = self.pending.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.iter().any(|k| &**k == key) {
            return;
        }
        if q.len() >= MAX_PENDING_UNREGISTERS {
            drop(q);
            let n = self.pending.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                aor = key,
                dropped = n,
                "too many administrative removals waiting for the expiry sweep: Asterisk is not told about this one"
            );
            return;
        }
        q.push_back(key.into());
        self.pending.flag.store(true, Ordering::Release);
    }

    /// Administrative removals that found the Expires: 0 queue full (see
    /// [`MAX_PENDING_UNREGISTERS`]).
    pub fn unregisters_dropped(&self) -> u64 {
        self.pending.dropped.load(Ordering::Relaxed)
    }

    /// One page of the listing of every AOR: the next at most `limit` AOR keys (clamped
    /// to 1..=[`MAX_PAGE`]) after the key `after` (from the start when `None`), and for
    /// each the live bindings at `now_ms` given to `f(key, binding)` (an AOR's bindings
    /// consecutively, highest q first; `f` runs under that AOR's stripe read lock: copy,
    /// do not block). AORs with no live binding are skipped, so a page may hold fewer than
    /// `limit` AORs even when more follow: continue while [`Page::next`] is `Some`.
    ///
    /// Guarantee under concurrent change: the order is fixed by the keys alone (stripe,
    /// keyed hash, bytes), so a listing that passes each page's `next` as the following
    /// `after` gives every AOR registered throughout the listing exactly once, and an AOR
    /// added or removed during it at most once. `after` need not exist any more. Cost: per
    /// page, one scan of the stripes it spans, each under its read lock alone, and one
    /// lookup per AOR kept; memory bounded by the page.
    pub fn list(
        &self,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
        mut f: impl FnMut(&str, &Binding<'_>),
    ) -> Page {
        let page = self.table.page_keys(after, limit.clamp(1, MAX_PAGE));
        let mut aors = 0;
        for key in &page.keys {
            let n = self.table.lookup(key, now_ms, |b| f(key, b));
            aors += usize::from(n > 0);
        }
        let next = if page.more {
            page.keys.into_iter().next_back()
        } else {
            None
        };
        Page { aors, next }
    }

    /// Hand every queued AOR still without a live binding at `now_ms` to `f` (called by
    /// [`Registrar::expire`]; one atomic load when nothing is queued).
    pub(super) fn drain_unregisters(&self, now_ms: u64, f: &mut impl FnMut(&str)) {
        if !self.pending.flag.load(Ordering::Acquire) {
            return;
        }
        let queued = {
            let mut q = self.pending.queue.lock().unwrap_or_else(|e| e.into_inner());
            self.pending.flag.store(false, Ordering::Release);
            std::mem::take(&mut *q)
        };
        for key in queued {
            if self.table.lookup(&key, now_ms, |_| {}) == 0 {
                f(&key);
            }
        }
    }
}
