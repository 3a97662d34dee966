//! The location table: AOR → bindings, shared by every worker.
//!
//! Lock-striped: `SHARDS` stripes, each a `RwLock` around a `HashMap` from the AOR's
//! 64-bit keyed hash to one boxed byte record, and a time-ordered expiry index
//! (`BTreeSet<(next expiry ms, hash)>`) covering that stripe. A record holds, encoded back
//! to back, one group per AOR with that hash (`u16 len | AOR | u8 n | u32 slots len | n slots`; a second
//! group exists only on a 64-bit hash collision; `u32 slots len` lets a reader skip it), each slot being the fixed numbers and the
//! variable bytes of a [`Slot`]. So one AOR with one binding costs one map entry of 24
//! bytes, one allocation and one index entry, and a lookup touches the map and one record.
//!
//! A lookup takes one stripe's read lock for the time of its callback; a REGISTER takes one
//! stripe's write lock while the rules run (no I/O). Expiry pops due entries from each
//! stripe's index, at most `batch` per stripe per call, so it never scans the table and
//! never holds a lock long.
//!
//! Every change sends the AOR to the persistence thread through a bounded channel with
//! `try_send`; when that channel is full the change is counted and a full rewrite is
//! requested instead (see [`super::persist`]).

use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crossbeam_utils::CachePadded;

use super::binding::Binding;
use super::slot::{Slot, SlotRef};

/// Number of stripes.
pub const SHARDS: usize = 64;

/// Each stripe is cut into `2^PART_BITS` parts by the top bits of the key, for the
/// keepalive scan ([`Location::scan_part`]).
pub const PART_BITS: u32 = 6;

/// Keyed multiply-fold hash of an AOR (foldhash-style), seeded per process. Much cheaper
/// than SipHash on 20-byte keys; keys are inserted only by authenticated REGISTERs and
/// the seed is secret, and a full 64-bit collision is handled (groups), so this is safe.
struct AorHash {
    k0: u64,
    k1: u64,
}

const P0: u64 = 0x243f_6a88_85a3_08d3;
const P1: u64 = 0x1319_8a2e_0370_7344;

fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl AorHash {
    fn new() -> AorHash {
        let rs = RandomState::new();
        AorHash {
            k0: rs.hash_one(0x5eed_u64) | 1,
            k1: rs.hash_one(0xf00d_u64) | 1,
        }
    }

    fn hash(&self, s: &[u8]) -> u64 {
        let mut h = self.k0 ^ (s.len() as u64).wrapping_mul(P0);
        let mut chunks = s.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = fold(u64::from_le_bytes(w) ^ self.k1, h ^ P1);
        }
        let rem = chunks.remainder();
        if !rem.is_empty() {
            let mut w = [0u8; 8];
            if let Some(dst) = w.get_mut(..rem.len()) {
                dst.copy_from_slice(rem);
            }
            h = fold(u64::from_le_bytes(w) ^ self.k1, h ^ P0);
        }
        fold(h ^ self.k0, P1 ^ self.k1)
    }
}

/// The keys are already hashes: pass them through.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type Records = HashMap<u64, Box<[u8]>, BuildHasherDefault<IdHasher>>;

#[derive(Default)]
struct Shard {
    map: Records,
    timeline: BTreeSet<(u64, u64)>,
    /// AORs and bindings held (gauges, maintained under the write lock).
    aors: usize,
    contacts: usize,
}

/// Where changed AORs are announced (the persistence thread's queue).
pub(crate) struct ChangeSink {
    pub(crate) tx: crossbeam_channel::Sender<Box<str>>,
    /// Set when a change could not be queued: the next flush rewrites everything.
    pub(crate) overflow: Arc<AtomicBool>,
    pub(crate) dropped: Arc<AtomicU64>,
}

/// Queue `aor` for a listener (never blocking); a full queue is counted and flagged.
fn tell(sink: Option<&ChangeSink>, aor: &str) {
    if let Some(s) = sink {
        if s.tx.try_send(Box::from(aor)).is_err() {
            s.dropped.fetch_add(1, Ordering::Relaxed);
            s.overflow.store(true, Ordering::Release);
        }
    }
}

/// The shared location table. Use it through [`super::Registrar`].
pub struct Location {
    shards: Box<[CachePadded<RwLock<Shard>>]>,
    hasher: AorHash,
    max_aors_per_shard: usize,
    /// All ones; tests clear bits to force hash collisions.
    hash_mask: u64,
    sink: OnceLock<ChangeSink>,
    /// A second listener, told of changes made by REGISTERs and removals (not of expiry,
    /// which every copy of a binding applies by itself): the cluster's writer.
    watch: OnceLock<ChangeSink>,
}

/// The table refused a new AOR: it holds `max_aors` already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TableFull;

/// One AOR's group inside a record.
struct Group<'a> {
    aor: &'a [u8],
    n: u8,
    slots: &'a [u8],
    whole: &'a [u8],
}

/// Iterate the groups of a record (stops at the first malformed byte).
fn groups(mut rec: &[u8]) -> impl Iterator<Item = Group<'_>> {
    std::iter::from_fn(move || {
        let start = rec;
        let (len, rest) = rec.split_first_chunk::<2>()?;
        let (aor, rest) = rest.split_at_checked(u16::from_le_bytes(*len) as usize)?;
        let (n, rest) = rest.split_first()?;
        let (len, rest) = rest.split_first_chunk::<4>()?;
        let (slots, cur) = rest.split_at_checked(u32::from_le_bytes(*len) as usize)?;
        let whole = start.get(..start.len() - cur.len())?;
        rec = cur;
        Some(Group {
            aor,
            n: *n,
            slots,
            whole,
        })
    })
}

/// Iterate a group's slots with their encoded bytes.
fn slots(mut b: &[u8]) -> impl Iterator<Item = (SlotRef<'_>, &[u8])> {
    std::iter::from_fn(move || {
        let start = b;
        let s = SlotRef::decode(&mut b)?;
        Some((s, start.get(..s.encoded_len())?))
    })
}

fn encode_group_header(out: &mut Vec<u8>, aor: &[u8], n: u8, slots_len: usize) {
    // AORs are bounded far below 64 KiB by the SIP layer; longer ones are cut (never
    // matched again, so never stored).
    let len = u16::try_from(aor.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(aor.get(..len as usize).unwrap_or(aor));
    out.push(n);
    out.extend_from_slice(&u32::try_from(slots_len).unwrap_or(u32::MAX).to_le_bytes());
}

/// The stripe of a hash. Middle bits pick it: hashbrown uses the low bits (bucket) and the
/// top 7 (tag) of the same value.
fn stripe_of(h: u64) -> usize {
    ((h >> 32) as usize) % SHARDS
}

/// The AOR keys of one listing page, in listing order, and whether keys follow the last.
pub(crate) struct KeyPage {
    pub(crate) keys: Vec<Box<str>>,
    pub(crate) more: bool,
}

fn next_expiry(rec: &[u8]) -> Option<u64> {
    groups(rec)
        .flat_map(|g| slots(g.slots).map(|(s, _)| s.f.expires_at_ms))
        .min()
}

impl Location {
    pub(crate) fn new(max_aors: usize) -> Location {
        Location {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(RwLock::default()))
                .collect(),
            hasher: AorHash::new(),
            max_aors_per_shard: max_aors.div_ceil(SHARDS),
            hash_mask: u64::MAX,
            sink: OnceLock::new(),
            watch: OnceLock::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn force_collisions(&mut self) {
        self.hash_mask = 0;
    }

    fn locate(&self, aor: &str) -> (u64, &RwLock<Shard>) {
        let h = self.hash_of(aor);
        (h, &self.shards[stripe_of(h)])
    }

    fn hash_of(&self, aor: &str) -> u64 {
        self.hasher.hash(aor.as_bytes()) & self.hash_mask
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

    pub(crate) fn set_watch(&self, watch: ChangeSink) -> bool {
        self.watch.set(watch).is_ok()
    }

    fn announce(&self, aor: &str) {
        tell(self.watch.get(), aor);
        tell(self.sink.get(), aor);
    }

    fn announce_expiry(&self, aor: &str) {
        tell(self.sink.get(), aor);
    }

    /// Run `f` on the AOR's bindings (decoded, in stored order) under the stripe's write
    /// lock and store what it leaves. `f` returns `(result, changed)`; `changed` announces
    /// the AOR to persistence. On `Err` nothing is stored.
    pub(crate) fn modify<R, E>(
        &self,
        aor: &str,
        f: impl FnOnce(&mut Vec<Slot>) -> Result<(R, bool), E>,
        full: impl FnOnce(TableFull) -> E,
    ) -> Result<R, E> {
        let (h, lock) = self.locate(aor);
        let mut guard = Self::write(lock);
        let shard = &mut *guard;
        let rec: &[u8] = shard.map.get(&h).map_or(&[], |r| r);
        let mut v: Vec<Slot> = Vec::new();
        let mut other_len = 0;
        for g in groups(rec) {
            if g.aor == aor.as_bytes() {
                v.reserve_exact(g.n as usize + 1);
                v.extend(slots(g.slots).map(|(s, _)| s.to_slot()));
            } else {
                other_len += g.whole.len();
            }
        }
        let existed = !v.is_empty();
        let old_count = v.len();
        let (result, changed) = f(&mut v)?;
        if !existed && v.is_empty() {
            return Ok(result);
        }
        if rec.is_empty() && shard.map.len() >= self.max_aors_per_shard {
            return Err(full(TableFull));
        }
        let old_next = next_expiry(rec);
        let own: usize = v.iter().map(Slot::encoded_len).sum();
        let mut out = Vec::with_capacity(other_len + own + aor.len() + 7);
        for g in groups(rec).filter(|g| g.aor != aor.as_bytes()) {
            out.extend_from_slice(g.whole);
        }
        if !v.is_empty() {
            let v = v.get(..usize::from(u8::MAX)).unwrap_or(&v);
            encode_group_header(&mut out, aor.as_bytes(), v.len() as u8, own);
            v.iter().for_each(|s| s.encode(&mut out));
        }
        let new_next = next_expiry(&out);
        if old_next != new_next {
            if let Some(t) = old_next {
                shard.timeline.remove(&(t, h));
            }
            if let Some(t) = new_next {
                shard.timeline.insert((t, h));
            }
        }
        let new_count = v.len().min(usize::from(u8::MAX));
        shard.contacts = shard.contacts + new_count - old_count.min(shard.contacts);
        shard.aors = shard.aors + usize::from(new_count > 0) - usize::from(existed).min(shard.aors);
        if out.is_empty() {
            shard.map.remove(&h);
        } else {
            shard.map.insert(h, out.into_boxed_slice());
        }
        drop(guard);
        if changed {
            self.announce(aor);
        }
        Ok(result)
    }

    /// Call `f` for each binding of `aor` not expired at `now_ms`, in stored order (highest
    /// q first), under the stripe's read lock. Returns how many were given.
    pub(crate) fn lookup(&self, aor: &str, now_ms: u64, mut f: impl FnMut(&Binding<'_>)) -> usize {
        let (h, lock) = self.locate(aor);
        let guard = Self::read(lock);
        let Some(rec) = guard.map.get(&h) else {
            return 0;
        };
        let Some(g) = groups(rec).find(|g| g.aor == aor.as_bytes()) else {
            return 0;
        };
        let mut n = 0;
        for (s, _) in slots(g.slots).filter(|(s, _)| s.f.expires_at_ms > now_ms) {
            f(&s.view());
            n += 1;
        }
        n
    }

    /// Drop bindings expired at `now_ms`, at most `batch` records per stripe per call.
    /// Calls `emptied` (outside any lock) for each AOR left with no binding. Returns the
    /// number of bindings removed.
    pub(crate) fn expire(&self, now_ms: u64, batch: usize, mut emptied: impl FnMut(&str)) -> usize {
        let mut removed = 0;
        let mut gone: Vec<Box<str>> = Vec::new();
        let mut touched: Vec<Box<str>> = Vec::new();
        let mut kept: Vec<(usize, usize)> = Vec::new();
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
                let Some(&(t, h)) = shard.timeline.first() else {
                    break;
                };
                if t > now_ms {
                    break;
                }
                shard.timeline.remove(&(t, h));
                let Some(rec) = shard.map.get(&h) else {
                    continue;
                };
                let mut out = Vec::with_capacity(rec.len());
                for g in groups(rec) {
                    kept.clear();
                    let mut at = 0;
                    for (s, b) in slots(g.slots) {
                        if s.f.expires_at_ms > now_ms {
                            kept.push((at, at + b.len()));
                        }
                        at += b.len();
                    }
                    let aor = std::str::from_utf8(g.aor).unwrap_or("");
                    let dropped = usize::from(g.n) - kept.len();
                    removed += dropped;
                    shard.contacts = shard.contacts.saturating_sub(dropped);
                    if kept.is_empty() {
                        shard.aors = shard.aors.saturating_sub(1);
                        gone.push(aor.into());
                        continue;
                    }
                    if kept.len() < usize::from(g.n) {
                        touched.push(aor.into());
                    }
                    let len = kept.iter().map(|(a, b)| b - a).sum();
                    encode_group_header(&mut out, g.aor, kept.len() as u8, len);
                    for &(a, b) in &kept {
                        out.extend_from_slice(g.slots.get(a..b).unwrap_or(&[]));
                    }
                }
                match next_expiry(&out) {
                    Some(next) => {
                        shard.timeline.insert((next, h));
                        shard.map.insert(h, out.into_boxed_slice());
                    }
                    None => {
                        shard.map.remove(&h);
                    }
                }
            }
            drop(guard);
            for aor in touched.drain(..) {
                self.announce_expiry(&aor);
            }
            for aor in gone.drain(..) {
                self.announce_expiry(&aor);
                emptied(&aor);
            }
        }
        removed
    }

    /// Call `f` with the AOR and each binding live at `now_ms` of the records in stripe
    /// `stripe` whose key's top [`PART_BITS`] bits fall in `[part_lo, part_hi)`, under the
    /// stripe's read lock (the keepalive scan: one pass over the stripe's keys, records
    /// decoded in place, nothing allocated).
    pub(crate) fn scan_part(
        &self,
        stripe: usize,
        (part_lo, part_hi): (u32, u32),
        now_ms: u64,
        mut f: impl FnMut(&str, &Binding<'_>),
    ) {
        let Some(lock) = self.shards.get(stripe) else {
            return;
        };
        let guard = Self::read(lock);
        for (&h, rec) in guard.map.iter() {
            let part = (h >> (64 - PART_BITS)) as u32;
            if part < part_lo || part >= part_hi {
                continue;
            }
            for g in groups(rec) {
                let aor = std::str::from_utf8(g.aor).unwrap_or("");
                for (s, _) in slots(g.slots).filter(|(s, _)| s.f.expires_at_ms > now_ms) {
                    f(aor, &s.view());
                }
            }
        }
    }

    /// Earliest expiry in the table (for the caller's timer), if any binding exists.
    pub(crate) fn next_expiry_ms(&self) -> Option<u64> {
        self.shards
            .iter()
            .filter_map(|l| Self::read(l).timeline.first().map(|(t, _)| *t))
            .min()
    }

    /// Visit the AOR's bindings (expired ones included) under a read lock.
    pub(crate) fn snapshot(&self, aor: &str, mut f: impl FnMut(&Binding<'_>)) {
        let (h, lock) = self.locate(aor);
        let guard = Self::read(lock);
        if let Some(g) = guard
            .map
            .get(&h)
            .and_then(|r| groups(r).find(|g| g.aor == aor.as_bytes()))
        {
            slots(g.slots).for_each(|(s, _)| f(&s.view()));
        }
    }

    /// Every AOR currently held, one stripe at a time (for a full rewrite).
    pub(crate) fn for_each_aor(&self, mut f: impl FnMut(&str)) {
        let mut keys: Vec<Box<str>> = Vec::new();
        for lock in self.shards.iter() {
            keys.clear();
            let g = Self::read(lock);
            keys.extend(g.map.values().flat_map(|r| {
                groups(r).map(|g| Box::from(std::str::from_utf8(g.aor).unwrap_or("")))
            }));
            drop(g);
            keys.iter().for_each(|k| f(k));
        }
    }

    /// The next at most `limit` (≥ 1) AOR keys in listing order after the key `after`
    /// (from the start when `None`; `after` need not be in the table any more).
    ///
    /// Listing order is (stripe, 64-bit hash, AOR bytes): a total order on keys that does
    /// not depend on what the table holds, so a listing resumed from the last key of the
    /// previous page returns each AOR held throughout the listing exactly once, and an AOR
    /// added or removed meanwhile at most once. One stripe's read lock is held at a time,
    /// for one scan of its map; the only allocations are the (at most `limit`) keys kept.
    pub(crate) fn page_keys(&self, after: Option<&str>, limit: usize) -> KeyPage {
        let limit = limit.max(1);
        let cursor = after.map(|a| (self.hash_of(a), a.as_bytes()));
        let first = cursor.map_or(0, |(h, _)| stripe_of(h));
        let mut keys: Vec<Box<str>> = Vec::with_capacity(limit.min(1024));
        for (i, lock) in self.shards.iter().enumerate().skip(first) {
            let need = limit - keys.len();
            // Max-heap of the `need` smallest keys of this stripe after the cursor.
            let mut best: BinaryHeap<(u64, Box<[u8]>)> = BinaryHeap::new();
            let mut beyond = 0usize;
            let guard = Self::read(lock);
            for (&h, rec) in guard.map.iter() {
                for g in groups(rec) {
                    let key = (h, g.aor);
                    if i == first && cursor.is_some_and(|c| key <= c) {
                        continue;
                    }
                    beyond += 1;
                    let worse = best.len() == need
                        && best.peek().is_some_and(|(th, ta)| key >= (*th, &ta[..]));
                    if worse {
                        continue;
                    }
                    if best.len() == need {
                        best.pop();
                    }
                    best.push((h, Box::from(g.aor)));
                }
            }
            drop(guard);
            keys.extend(
                best.into_sorted_vec()
                    .into_iter()
                    .map(|(_, a)| String::from_utf8_lossy(&a).into()),
            );
            if keys.len() == limit {
                let more = beyond > need
                    || self
                        .shards
                        .iter()
                        .skip(i + 1)
                        .any(|l| !Self::read(l).map.is_empty());
                return KeyPage { keys, more };
            }
        }
        KeyPage { keys, more: false }
    }

    /// (AORs, bindings) currently stored, expired-but-not-yet-swept ones included.
    /// Sums per-stripe gauges: 64 short read locks.
    pub(crate) fn counts(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(a, b), l| {
            let g = Self::read(l);
            (a + g.aors, b + g.contacts)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aor_hash_spreads_over_stripes_buckets_and_tags() {
        let h = AorHash::new();
        let mut seen = std::collections::HashSet::new();
        let mut stripes = [0u32; SHARDS];
        let mut tags = [0u32; 128];
        let mut low = [0u32; 256];
        let n = 200_000u32;
        for i in 0..n {
            let v = h.hash(format!("u{i:07}@example.com").as_bytes());
            assert!(seen.insert(v), "64-bit collision at {i}");
            stripes[((v >> 32) as usize) % SHARDS] += 1;
            tags[(v >> 57) as usize] += 1;
            low[(v & 0xff) as usize] += 1;
        }
        let within = |counts: &[u32], expect: u32| {
            counts
                .iter()
                .all(|&c| c > expect * 8 / 10 && c < expect * 12 / 10)
        };
        assert!(within(&stripes, n / SHARDS as u32), "{stripes:?}");
        assert!(within(&tags, n / 128), "{tags:?}");
        assert!(within(&low, n / 256), "{low:?}");
        // Seeded per process: another instance disagrees.
        assert_ne!(
            AorHash::new().hash(b"alice@example.com"),
            h.hash(b"alice@example.com")
        );
    }
}
