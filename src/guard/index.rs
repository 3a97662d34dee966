//! A fixed-size open-addressing index from a key's hash to a slot number: linear probing
//! with backward-shift deletion, so there are no tombstones and the array never grows or
//! rehashes. Each bucket is one `u64`: the slot number plus one (0 = empty) in the high half
//! and the low 32 bits of the hash in the low half (home bucket and a tag to compare before
//! the caller checks the real key). The bucket count is a power of two at least twice the
//! slots it indexes, so probe sequences stay short.

pub(super) struct Index {
    buckets: Box<[u64]>,
    mask: usize,
    len: usize,
}

fn pack(hash: u64, slot: u32) -> u64 {
    (u64::from(slot) + 1) << 32 | (hash & 0xffff_ffff)
}

fn slot_of(b: u64) -> u32 {
    ((b >> 32) as u32).wrapping_sub(1)
}

impl Index {
    /// An index for at most `slots` entries.
    pub fn new(slots: usize) -> Index {
        let n = (slots.max(1) * 2).next_power_of_two();
        Index {
            buckets: vec![0; n].into_boxed_slice(),
            mask: n - 1,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    fn home(&self, b: u64) -> usize {
        (b as usize) & self.mask
    }

    fn at(&self, i: usize) -> u64 {
        self.buckets.get(i).copied().unwrap_or(0)
    }

    /// The slot holding the key with this `hash`; `is(slot)` confirms the key itself.
    pub fn find(&self, hash: u64, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = hash & 0xffff_ffff;
        let mut i = (hash as usize) & self.mask;
        for _ in 0..=self.mask {
            let b = self.at(i);
            if b == 0 {
                return None;
            }
            if b & 0xffff_ffff == tag && is(slot_of(b)) {
                return Some(slot_of(b));
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Add `slot` under `hash` (the caller knows the key is absent and the index not full).
    pub fn insert(&mut self, hash: u64, slot: u32) {
        let mut i = (hash as usize) & self.mask;
        for _ in 0..=self.mask {
            if let Some(b) = self.buckets.get_mut(i) {
                if *b == 0 {
                    *b = pack(hash, slot);
                    self.len += 1;
                    return;
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Remove the entry for `slot` stored under `hash`; whether it was there.
    pub fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let want = pack(hash, slot);
        let mut i = (hash as usize) & self.mask;
        let mut found = false;
        for _ in 0..=self.mask {
            let b = self.at(i);
            if b == 0 {
                return false;
            }
            if b == want {
                found = true;
                break;
            }
            i = (i + 1) & self.mask;
        }
        if !found {
            return false;
        }
        self.len -= 1;
        // Backward shift: pull later entries of the run into the hole when their home
        // bucket does not lie cyclically in (hole, j].
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let b = self.at(j);
            if b == 0 {
                break;
            }
            let home = self.home(b);
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.set(hole, b);
                hole = j;
            }
        }
        self.set(hole, 0);
        true
    }

    fn set(&mut self, i: usize, v: u64) {
        if let Some(b) = self.buckets.get_mut(i) {
            *b = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn matches_a_hashmap_under_churn_with_colliding_homes() {
        // Few distinct home buckets, to exercise long runs and backward shifts that wrap.
        let mut idx = Index::new(32);
        let mut model: HashMap<u64, u32> = HashMap::new();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for step in 0..50_000u32 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Homes 40..=63 and 0..=23 (the run wraps); equal low halves, different keys.
            let hash = (seed % 48 + 40) | (((seed >> 20) % 3) << 40);
            match model.get(&hash).copied() {
                Some(slot) => {
                    assert_eq!(idx.find(hash, |s| s == slot), Some(slot), "step {step}");
                    if seed & 1 == 0 {
                        assert!(idx.remove(hash, slot));
                        model.remove(&hash);
                        assert_eq!(idx.find(hash, |s| s == slot), None);
                    }
                }
                None if model.len() < 32 => {
                    idx.insert(hash, step);
                    model.insert(hash, step);
                }
                None => {}
            }
            assert_eq!(idx.len(), model.len());
        }
        for (&h, &s) in &model {
            assert_eq!(idx.find(h, |x| x == s), Some(s));
        }
    }
}
