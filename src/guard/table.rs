//! A bounded, lock-striped map with least-recently-used eviction: the storage under the rate
//! buckets, the failure counters and the bans.
//!
//! A key is hashed once with a per-process random SipHash key (source addresses are chosen
//! by whoever sends, so the hash must not be predictable); bits 32.. of that hash pick the
//! stripe, its low 32 bits place the key in the stripe's [`Index`]. Each stripe holds at most
//! `cap` entries in a slot vector threaded on an intrusive doubly-linked recency list (head =
//! most recent). Inserting into a full stripe reuses the tail's slot: O(1), no scan. All
//! memory is reserved when the table is built (the index is a fixed array), so steady-state
//! operations never allocate.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};

use super::index::Index;

/// A hashed key: the 128-bit identity and its keyed hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    pub hash: u64,
    pub id: u128,
}

/// Keyed hashing shared by all tables of one guard.
#[derive(Debug, Clone)]
pub(super) struct Hashing(RandomState);

impl Hashing {
    pub fn new() -> Self {
        Hashing(RandomState::new())
    }

    pub fn key(&self, id: u128) -> Key {
        Key {
            hash: self.0.hash_one(id),
            id,
        }
    }

    /// A user name's key: its hash, also used as identity (64 bits: collisions among the
    /// tracked users are negligible and only merge two users' failure counts).
    pub fn user_key(&self, user: &str) -> Key {
        let hash = self.0.hash_one(user.as_bytes());
        Key {
            hash,
            id: u128::from(hash),
        }
    }
}

const NIL: u32 = u32::MAX;

struct Slot<V> {
    key: Key,
    prev: u32,
    next: u32,
    val: V,
}

/// One stripe: at most `cap` entries, least recently used at the tail.
pub(super) struct Stripe<V> {
    index: Index,
    slots: Vec<Slot<V>>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    cap: usize,
    /// An event count the owner keeps under this stripe's lock (limited packets, banned
    /// drops), so that no counter is shared between workers.
    pub counter: u64,
    /// Entries pushed out to make room.
    pub evicted: u64,
}

/// What [`Stripe::entry`] did to find a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    Existing,
    New,
    /// New, in the slot of the least recently used entry (which is gone).
    Evicted,
}

impl<V: Default> Stripe<V> {
    fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Stripe {
            index: Index::new(cap),
            slots: Vec::with_capacity(cap),
            free: Vec::with_capacity(cap),
            head: NIL,
            tail: NIL,
            cap,
            counter: 0,
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    fn find(&self, key: Key) -> Option<u32> {
        let slots = &self.slots;
        self.index.find(key.hash, |i| {
            slots.get(i as usize).is_some_and(|s| s.key == key)
        })
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = match self.slots.get(i as usize) {
            Some(s) => (s.prev, s.next),
            None => return,
        };
        match self.slots.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.slots.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        if let Some(s) = self.slots.get_mut(i as usize) {
            s.prev = NIL;
            s.next = old;
        }
        match self.slots.get_mut(old as usize) {
            Some(h) => h.prev = i,
            None => self.tail = i,
        }
        self.head = i;
    }

    /// The entry for `key`, made most recent; created with `V::default()` when absent
    /// (evicting the least recently used entry when the stripe is full).
    pub fn entry(&mut self, key: Key) -> (&mut V, Found) {
        let (i, found) = match self.find(key) {
            Some(i) => {
                if self.head != i {
                    self.unlink(i);
                    self.push_front(i);
                }
                (i, Found::Existing)
            }
            None => self.insert(key),
        };
        // `i` always indexes a live slot here; the fallback only keeps this panic-free.
        let i = (i as usize).min(self.slots.len().saturating_sub(1));
        (&mut self.slots[i].val, found)
    }

    fn insert(&mut self, key: Key) -> (u32, Found) {
        let (i, found) = if let Some(i) = self.free.pop() {
            (i, Found::New)
        } else if self.slots.len() < self.cap {
            self.slots.push(Slot {
                key,
                prev: NIL,
                next: NIL,
                val: V::default(),
            });
            ((self.slots.len() - 1) as u32, Found::New)
        } else {
            let t = self.tail;
            self.unlink(t);
            if let Some(old) = self.slots.get(t as usize).map(|s| s.key) {
                self.index.remove(old.hash, t);
            }
            self.evicted += 1;
            (t, Found::Evicted)
        };
        if let Some(s) = self.slots.get_mut(i as usize) {
            s.key = key;
            s.val = V::default();
        }
        self.push_front(i);
        self.index.insert(key.hash, i);
        (i, found)
    }

    /// The entry for `key` without changing its recency.
    pub fn peek_mut(&mut self, key: Key) -> Option<&mut V> {
        let i = self.find(key)?;
        self.slots.get_mut(i as usize).map(|s| &mut s.val)
    }

    /// Remove `key`; its value.
    pub fn remove(&mut self, key: Key) -> Option<V> {
        let i = self.find(key)?;
        self.index.remove(key.hash, i);
        self.unlink(i);
        self.free.push(i);
        self.slots
            .get_mut(i as usize)
            .map(|s| std::mem::take(&mut s.val))
    }

    /// Visit every entry; drop those for which `keep` answers false (a full scan: for
    /// listings, never for the packet path).
    pub fn retain(&mut self, mut keep: impl FnMut(Key, &V) -> bool) {
        let mut i = self.head;
        while let Some(s) = self.slots.get(i as usize) {
            let (key, next) = (s.key, s.next);
            if !keep(key, &s.val) {
                self.remove(key);
            }
            i = next;
        }
    }
}

/// A fixed number of stripes, each behind its own mutex.
pub(super) struct Striped<V> {
    stripes: Box<[Mutex<Stripe<V>>]>,
    mask: u64,
}

impl<V: Default> Striped<V> {
    /// `stripes` is rounded up to a power of two; `total` entries are split evenly.
    pub fn new(stripes: usize, total: usize) -> Self {
        let n = stripes.clamp(1, 1 << 16).next_power_of_two();
        let per = total.div_ceil(n).max(1);
        Striped {
            stripes: (0..n).map(|_| Mutex::new(Stripe::new(per))).collect(),
            mask: (n - 1) as u64,
        }
    }

    /// Lock the stripe `key` lives in. Critical sections are O(1) and never allocate, so a
    /// waiter waits nanoseconds; a poisoned lock (a panic elsewhere) is taken over as is.
    pub fn lock(&self, key: Key) -> MutexGuard<'_, Stripe<V>> {
        let i = ((key.hash >> 32) & self.mask) as usize;
        let m = self.stripes.get(i).unwrap_or(&self.stripes[0]);
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lock each stripe in turn (listings and statistics).
    pub fn for_each(&self, mut f: impl FnMut(&mut Stripe<V>)) {
        for m in self.stripes.iter() {
            f(&mut m.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_without_growing() {
        let h = Hashing::new();
        let mut s: Stripe<u32> = Stripe::new(3);
        let k = |i: u128| h.key(i);
        for i in 0..3 {
            let (v, f) = s.entry(k(i));
            *v = i as u32 + 10;
            assert_eq!(f, Found::New);
        }
        // Touch 0 so that 1 is now the least recently used.
        assert_eq!(s.entry(k(0)), (&mut 10, Found::Existing));
        let (v, f) = s.entry(k(3));
        assert_eq!((*v, f), (0, Found::Evicted));
        assert!(s.peek_mut(k(1)).is_none());
        assert_eq!(s.peek_mut(k(0)).copied(), Some(10));
        assert_eq!(s.peek_mut(k(2)).copied(), Some(12));
        assert_eq!((s.len(), s.evicted), (3, 1));

        assert_eq!(s.remove(k(2)), Some(12));
        assert_eq!(s.remove(k(2)), None);
        assert_eq!(s.entry(k(4)).1, Found::New, "the freed slot is reused");
        assert_eq!(s.slots.len(), 3);

        s.retain(|key, _| key != k(0));
        assert!(s.peek_mut(k(0)).is_none());
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn churn_keeps_list_and_index_consistent() {
        let h = Hashing::new();
        let mut s: Stripe<u64> = Stripe::new(8);
        let cap = s.slots.capacity();
        for i in 0..10_000u128 {
            *s.entry(h.key(i % 37)).0 += 1;
            if i % 5 == 0 {
                s.remove(h.key(i % 11));
            }
            assert!(s.len() <= 8);
        }
        // Walk the list both ways: every indexed slot appears once.
        let mut n = 0;
        let mut i = s.head;
        let mut prev = NIL;
        while let Some(slot) = s.slots.get(i as usize) {
            assert_eq!(slot.prev, prev);
            assert_eq!(s.find(slot.key), Some(i));
            prev = i;
            i = slot.next;
            n += 1;
        }
        assert_eq!((n, prev), (s.len(), s.tail));
        assert_eq!(s.slots.capacity(), cap, "no reallocation");
    }
}
