//! Answers held back until a set time, without blocking the worker: a failed
//! authentication is answered `[auth] failure_delay_ms` after its request arrived (issue
//! #16, user enumeration by timing).
//!
//! An unknown user costs a database lookup (the request is parked, `request.rs`), a known
//! user with a wrong password costs nothing: answered at once, the two are told apart by
//! their time. Held until the same moment after arrival, both answers leave together (as
//! long as the lookup is faster than the delay), and password guessing slows down too.
//!
//! The answer is written at once into a reused slot's buffer (through [`Capture`], the same
//! code that would have sent it) and a timer (`TimerKind::DelayedAnswer`) sends it when
//! due. While it is held, retransmissions of its request (same transaction key) are
//! absorbed, so a phone that retransmits is not counted as failing again. The slots are
//! bounded (`[limits] max_parked_per_worker`): when all are taken the answer is dropped
//! (counted as overload), never sent early.

use super::flow::Flow;
use super::txn::KeyMap;
use super::Transmit;

/// The held answers of one worker.
pub(super) struct Delayed {
    slots: Vec<Held>,
    free: Vec<u32>,
    /// Transaction key of each held request → its slot (retransmissions are absorbed).
    by_key: KeyMap,
    limit: usize,
}

struct Held {
    gen: u32,
    live: bool,
    key: u64,
    to: Option<Flow>,
    bytes: Vec<u8>,
}

impl Delayed {
    pub fn new(limit: usize) -> Self {
        Delayed {
            slots: Vec::new(),
            free: Vec::new(),
            by_key: KeyMap::default(),
            limit,
        }
    }

    /// Change the limit (a reload); answers already held stay.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Whether an answer to the request with transaction key `key` is held.
    #[inline]
    pub fn holds(&self, key: u64) -> bool {
        !self.by_key.is_empty() && self.by_key.contains_key(&key)
    }

    /// Take a slot for the answer to the request with transaction key `key`: its index,
    /// generation and (emptied) buffer, to be given back with [`Delayed::fill`].
    pub fn take(&mut self, key: u64) -> Option<(u32, u32, Vec<u8>)> {
        if self.slots.len() - self.free.len() >= self.limit {
            return None;
        }
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Held {
                    gen: 0,
                    live: false,
                    key: 0,
                    to: None,
                    bytes: Vec::new(),
                });
                (self.slots.len() - 1) as u32
            }
        };
        let h = &mut self.slots[idx as usize];
        h.gen = h.gen.wrapping_add(1);
        h.key = key;
        h.to = None;
        let mut bytes = std::mem::take(&mut h.bytes);
        bytes.clear();
        Some((idx, h.gen, bytes))
    }

    /// Give back the slot taken with [`Delayed::take`], with the answer `capture` caught.
    /// False (the slot is free again) when nothing was written.
    pub fn fill(&mut self, idx: u32, capture: Capture) -> bool {
        let Some(h) = self.slots.get_mut(idx as usize) else {
            return false;
        };
        h.bytes = capture.bytes;
        h.to = capture.to;
        if h.to.is_none() {
            self.free.push(idx);
            return false;
        }
        h.live = true;
        self.by_key.insert(h.key, idx);
        true
    }

    /// The timer of slot `idx` fired: send its answer if it is still the one armed for.
    pub fn release(&mut self, idx: u32, gen: u32, tx: &mut dyn Transmit) -> bool {
        let Some(h) = self.slots.get_mut(idx as usize) else {
            return false;
        };
        if !h.live || h.gen != gen {
            return false;
        }
        h.live = false;
        if let Some(to) = h.to {
            tx.send(to, &h.bytes);
        }
        if self.by_key.get(&h.key) == Some(&idx) {
            self.by_key.remove(&h.key);
        }
        self.free.push(idx);
        true
    }
}

/// A [`Transmit`] that keeps the one message written to it instead of sending it.
pub(super) struct Capture {
    pub bytes: Vec<u8>,
    pub to: Option<Flow>,
}

impl Transmit for Capture {
    fn send(&mut self, to: Flow, bytes: &[u8]) {
        self.bytes.clear();
        self.bytes.extend_from_slice(bytes);
        self.to = Some(to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Local;

    struct Sent(Vec<(Flow, Vec<u8>)>);
    impl Transmit for Sent {
        fn send(&mut self, to: Flow, bytes: &[u8]) {
            self.0.push((to, bytes.to_vec()));
        }
    }

    #[test]
    fn holds_until_released_and_absorbs_its_key() {
        let mut d = Delayed::new(1);
        let flow = Flow::new(Local::Listen(0), "127.0.0.1:5062".parse().unwrap());
        let (idx, gen, bytes) = d.take(7).unwrap();
        let mut cap = Capture { bytes, to: None };
        cap.send(flow, b"SIP/2.0 401 Unauthorized\r\n\r\n");
        assert!(d.fill(idx, cap));
        assert!(d.holds(7));
        assert!(!d.holds(8));
        // Full: no second slot.
        assert!(d.take(8).is_none());
        let mut sent = Sent(Vec::new());
        assert!(
            !d.release(idx, gen + 1, &mut sent),
            "a stale timer sends nothing"
        );
        assert!(d.release(idx, gen, &mut sent));
        assert_eq!(sent.0.len(), 1);
        assert_eq!(sent.0[0].0, flow);
        assert!(!d.holds(7));
        assert!(!d.release(idx, gen, &mut sent), "sent once");
        // Nothing captured: the slot is free again.
        let (idx, _, bytes) = d.take(9).unwrap();
        assert!(!d.fill(idx, Capture { bytes, to: None }));
        assert!(d.take(10).is_some());
    }
}
