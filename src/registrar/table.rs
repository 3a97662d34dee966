//! The location table: AOR → bindings, shared by every worker.
//!
//! Lock-striped: `SHARDS` stripes, each a `RwLock` around a `HashMap<Arc<str>, Box<[Slot]>>`
//! and a time-ordered expiry index (`BTreeSet<(next expiry ms, AOR)>`) covering the AORs
//! of that stripe. A lookup takes one stripe's read lock for the time of its callback; a
//! REGISTER takes one stripe's write lock for the time of its rule check (no I/O, no
//! allocation for a pure refresh). Expiry pops due entries from each stripe's index, at most
//! `batch` per stripe per call, so it never scans the table and never holds a lock long.
//!
//! Every change sends the AOR (an `Arc` clone, no allocation) to the persistence thread
//! through a bounded channel; when that channel is full the change is counted and a full
//! rewrite is requested instead (see [`super::persist`]).

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crossbeam_utils::CachePadded;

use super::binding::Slot;

/// Number of stripes (a power of two).
pub const SHARDS: usize = 64;

#[derive(Default)]
struct Shard {
    map: HashMap<Arc<str>, Box<[Slot]>>,
    timeline: BTreeSet<(u64, Arc<str>)>,
}

/// Where changed AORs are announced (the persistence thread's queue).
pub(crate) struct ChangeSink {
    pub(crate) tx: crossbeam_channel::Sender<Arc<str>>,
    /// Set when a change could not be queued: the next flush rewrites everything.
    pub(crate) overflow: Arc<AtomicBool>,
    pub(crate) dropped: Arc<AtomicU64>,
}

/// The shared location table. Use it through [`super::Registrar`].
pub struct Location {
    shards: Box<[CachePadded<RwLock<Shard>>]>,
    hasher: RandomState,
    max_aors_per_shard: usize,
    sink: OnceLock<ChangeSink>,
}

/// The table refused a new AOR: it holds `max_aors` already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TableFull;

fn next_expiry(slots: &[Slot]) -> Option<u64> {
    slots.iter().map(|s| s.expires_at_ms).min()
}

impl Location {
    pub(crate) fn new(max_aors: usize) -> Location {
        Location {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(RwLock::default()))
                .collect(),
            hasher: RandomState::new(),
            max_aors_per_shard: max_aors.div_ceil(SHARDS),
            sink: OnceLock::new(),
        }
    }

    fn shard_of(&self, aor: &str) -> &RwLock<Shard> {
        let h = self.hasher.hash_one(aor);
        // High bits pick the stripe; HashMap uses its own hash inside.
        &self.shards[(h >> 58) as usize % SHARDS]
    }

    fn read(lock: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
        lock.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(lock: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
        lock.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_sink(&self, sink: ChangeSink) -> bool {
        self.sink.set(sink).is_ok()
    }

    fn announce(&self, aor: &Arc<str>) {
        if let Some(s) = self.sink.get() {
            if s.tx.try_send(Arc::clone(aor)).is_err() {
                s.dropped.fetch_add(1, Ordering::Relaxed);
                s.overflow.store(true, Ordering::Release);
            }
        }
    }

    /// Run `f` on the AOR's bindings (taken out of the table, in q order) under the stripe's
    /// write lock and store what it leaves. `f` returns `(result, changed)`; on `Err` it must
    /// leave the vector as it found it.
    pub(crate) fn modify<R, E>(
        &self,
        aor: &str,
        f: impl FnOnce(&mut Vec<Slot>) -> Result<(R, bool), E>,
        full: impl FnOnce(TableFull) -> E,
    ) -> Result<R, E> {
        let mut guard = Self::write(self.shard_of(aor));
        let shard = &mut *guard;
        let existing = shard.map.get_key_value(aor).map(|(k, _)| Arc::clone(k));
        let mut slots = match &existing {
            Some(k) => shard
                .map
                .get_mut(k)
                .map(std::mem::take)
                .unwrap_or_default()
                .into_vec(),
            None => Vec::new(),
        };
        let old_next = next_expiry(&slots);
        let restore = |shard: &mut Shard, slots: Vec<Slot>| {
            if let Some(k) = &existing {
                shard.map.insert(Arc::clone(k), slots.into_boxed_slice());
            }
        };
        let (result, changed) = match f(&mut slots) {
            Ok(r) => r,
            Err(e) => {
                restore(shard, slots);
                return Err(e);
            }
        };
        let new_next = next_expiry(&slots);
        let key = match existing {
            Some(k) => k,
            None if slots.is_empty() => return Ok(result),
            None => {
                if shard.map.len() >= self.max_aors_per_shard {
                    return Err(full(TableFull));
                }
                Arc::from(aor)
            }
        };
        if old_next != new_next {
            if let Some(t) = old_next {
                shard.timeline.remove(&(t, Arc::clone(&key)));
            }
            if let Some(t) = new_next {
                shard.timeline.insert((t, Arc::clone(&key)));
            }
        }
        if slots.is_empty() {
            shard.map.remove(&key);
        } else {
            shard.map.insert(Arc::clone(&key), slots.into_boxed_slice());
        }
        drop(guard);
        if changed {
            self.announce(&key);
        }
        Ok(result)
    }

    /// Call `f` for each binding of `aor` not expired at `now_ms`, highest q first, under
    /// the stripe's read lock. Returns how many were given.
    pub(crate) fn lookup(&self, aor: &str, now_ms: u64, mut f: impl FnMut(&Slot)) -> usize {
        let guard = Self::read(self.shard_of(aor));
        let Some(slots) = guard.map.get(aor) else {
            return 0;
        };
        let mut n = 0;
        for s in slots.iter().filter(|s| s.expires_at_ms > now_ms) {
            f(s);
            n += 1;
        }
        n
    }

    /// Drop bindings expired at `now_ms`, at most `batch` AOR entries per stripe per call.
    /// Calls `emptied` (outside any lock) for each AOR left with no binding. Returns the
    /// number of bindings removed.
    pub(crate) fn expire(&self, now_ms: u64, batch: usize, mut emptied: impl FnMut(&str)) -> usize {
        let mut removed = 0;
        let mut gone: Vec<Arc<str>> = Vec::new();
        let mut touched: Vec<Arc<str>> = Vec::new();
        for lock in self.shards.iter() {
            let due = Self::read(lock)
                .timeline
                .first()
                .is_some_and(|(t, _)| *t <= now_ms);
            if !due {
                continue;
            }
            let mut guard = Self::write(lock);
            let shard = &mut *guard;
            for _ in 0..batch {
                let Some((t, aor)) = shard.timeline.first().cloned() else {
                    break;
                };
                if t > now_ms {
                    break;
                }
                shard.timeline.remove(&(t, Arc::clone(&aor)));
                let Some(slots) = shard.map.get_mut(&aor) else {
                    continue;
                };
                let before = slots.len();
                let mut v = std::mem::take(slots).into_vec();
                v.retain(|s| s.expires_at_ms > now_ms);
                removed += before - v.len();
                match next_expiry(&v) {
                    Some(next) => {
                        shard.timeline.insert((next, Arc::clone(&aor)));
                        *slots = v.into_boxed_slice();
                        touched.push(aor);
                    }
                    None => {
                        shard.map.remove(&aor);
                        gone.push(aor);
                    }
                }
            }
            drop(guard);
            for aor in touched.drain(..) {
                self.announce(&aor);
            }
            for aor in gone.drain(..) {
                self.announce(&aor);
                emptied(&aor);
            }
        }
        removed
    }

    /// Earliest expiry in the table (for the caller's timer), if any binding exists.
    pub(crate) fn next_expiry_ms(&self) -> Option<u64> {
        self.shards
            .iter()
            .filter_map(|l| Self::read(l).timeline.first().map(|(t, _)| *t))
            .min()
    }

    /// Visit the AOR's bindings (expired ones included) under a read lock.
    pub(crate) fn snapshot(&self, aor: &str, mut f: impl FnMut(&Slot)) {
        let guard = Self::read(self.shard_of(aor));
        if let Some(slots) = guard.map.get(aor) {
            slots.iter().for_each(&mut f);
        }
    }

    /// Every AOR currently held, one stripe at a time (for a full rewrite).
    pub(crate) fn for_each_aor(&self, mut f: impl FnMut(&Arc<str>)) {
        let mut keys = Vec::new();
        for lock in self.shards.iter() {
            keys.clear();
            keys.extend(Self::read(lock).map.keys().cloned());
            keys.iter().for_each(&mut f);
        }
    }

    /// (AORs, bindings) currently stored, expired-but-not-yet-swept ones included.
    pub(crate) fn counts(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(a, b), l| {
            let g = Self::read(l);
            (
                a + g.map.len(),
                b + g.map.values().map(|s| s.len()).sum::<usize>(),
            )
        })
    }
}
