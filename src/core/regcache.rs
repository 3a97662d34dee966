//! The last answers to REGISTERs, so a retransmitted REGISTER gets the same final response
//! again (RFC 3261 §17.2.2) although REGISTERs are answered without a server transaction.
//!
//! A fixed ring of slots per worker, indexed by the transaction key: inserting overwrites the
//! oldest slot, entries older than 64·T1 are ignored, and the slot buffers are reused, so
//! nothing allocates once the ring has been around once.

use super::txn::KeyMap;

struct Slot {
    key: u64,
    via_id: Vec<u8>,
    response: Vec<u8>,
    at_ms: u64,
}

/// A bounded cache of REGISTER responses.
pub(super) struct RegCache {
    slots: Vec<Slot>,
    next: usize,
    capacity: usize,
    by_key: KeyMap,
}

impl RegCache {
    pub fn new(capacity: usize) -> Self {
        let mut by_key = KeyMap::default();
        by_key.reserve(capacity.min(65_536));
        RegCache {
            slots: Vec::new(),
            next: 0,
            capacity: capacity.clamp(1, u32::MAX as usize),
            by_key,
        }
    }

    /// The stored response for (`key`, `via_id`) if it is younger than `max_age_ms`.
    pub fn get(&self, key: u64, via_id: &[u8], now_ms: u64, max_age_ms: u64) -> Option<&[u8]> {
        let slot = self.slots.get(*self.by_key.get(&key)? as usize)?;
        (slot.key == key
            && slot.via_id == via_id
            && now_ms.saturating_sub(slot.at_ms) <= max_age_ms)
            .then_some(slot.response.as_slice())
    }

    pub fn insert(&mut self, key: u64, via_id: &[u8], response: &[u8], now_ms: u64) {
        let i = self.next;
        self.next = (self.next + 1) % self.capacity;
        if i == self.slots.len() {
            self.slots.push(Slot {
                key: 0,
                via_id: Vec::new(),
                response: Vec::new(),
                at_ms: 0,
            });
        }
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        let i32_ = i as u32;
        if self.by_key.get(&slot.key) == Some(&i32_) {
            self.by_key.remove(&slot.key);
        }
        slot.key = key;
        slot.via_id.clear();
        slot.via_id.extend_from_slice(via_id);
        slot.response.clear();
        slot.response.extend_from_slice(response);
        slot.at_ms = now_ms;
        self.by_key.insert(key, i32_);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_overwrites_the_oldest_and_ages_out() {
        let mut c = RegCache::new(2);
        c.insert(1, b"v1", b"r1", 0);
        c.insert(2, b"v2", b"r2", 0);
        assert_eq!(c.get(1, b"v1", 10, 100), Some(&b"r1"[..]));
        assert_eq!(c.get(1, b"other", 10, 100), None);
        assert_eq!(c.get(2, b"v2", 200, 100), None, "too old");
        c.insert(3, b"v3", b"r3", 0);
        assert_eq!(c.get(1, b"v1", 10, 100), None, "overwritten");
        assert_eq!(c.get(3, b"v3", 10, 100), Some(&b"r3"[..]));
    }
}
