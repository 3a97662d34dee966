//! A hashed timer wheel for retransmissions and timeouts: O(1) insert, expiry by walking the
//! slots between the last and the current tick. Entries carry an opaque `u64` key; the caller
//! ignores keys that went stale (the op finished or re-armed), so nothing is ever cancelled.
//! Time is passed in by the caller (µs on any monotonic clock).

/// One pending timer.
#[derive(Debug, Clone, Copy)]
struct Entry {
    deadline_us: u64,
    key: u64,
}

/// The wheel: `slots.len()` (a power of two) slots of `tick_us` each; deadlines further out
/// than one turn stay in their slot until their turn comes.
#[derive(Debug)]
pub struct TimerWheel {
    slots: Vec<Vec<Entry>>,
    tick_us: u64,
    /// The next tick to expire.
    cur: u64,
    len: usize,
}

impl TimerWheel {
    /// `slots` is rounded up to a power of two.
    pub fn new(tick_us: u64, slots: usize, now_us: u64) -> Self {
        let n = slots.max(2).next_power_of_two();
        let tick_us = tick_us.max(1);
        TimerWheel {
            slots: (0..n).map(|_| Vec::new()).collect(),
            tick_us,
            cur: now_us / tick_us,
            len: 0,
        }
    }

    /// Pending entries (stale ones included).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn mask(&self) -> u64 {
        self.slots.len() as u64 - 1
    }

    /// Schedules `key` at `deadline_us` (a past deadline fires at the next `expire`).
    pub fn insert(&mut self, deadline_us: u64, key: u64) {
        let tick = (deadline_us / self.tick_us).max(self.cur);
        let idx = (tick & self.mask()) as usize;
        if let Some(slot) = self.slots.get_mut(idx) {
            slot.push(Entry { deadline_us, key });
            self.len += 1;
        }
    }

    /// Moves every key due at `now_us` into `due`.
    pub fn expire(&mut self, now_us: u64, due: &mut Vec<u64>) {
        let now_tick = now_us / self.tick_us;
        if now_tick < self.cur {
            return;
        }
        // Past one full turn every slot is visited once.
        let turns = (now_tick - self.cur + 1).min(self.slots.len() as u64);
        let mask = self.mask();
        for i in 0..turns {
            let idx = ((self.cur + i) & mask) as usize;
            let Some(slot) = self.slots.get_mut(idx) else {
                continue;
            };
            let before = slot.len();
            slot.retain(|e| {
                if e.deadline_us <= now_us {
                    due.push(e.key);
                    false
                } else {
                    true
                }
            });
            self.len -= before - slot.len();
        }
        self.cur = now_tick;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_time_and_not_before() {
        let mut w = TimerWheel::new(1000, 8, 0);
        w.insert(500, 1);
        w.insert(2500, 2);
        w.insert(20_000, 3); // beyond one turn (8 ms)
        let mut due = Vec::new();
        w.expire(400, &mut due);
        assert!(due.is_empty());
        w.expire(1000, &mut due);
        assert_eq!(due, [1]);
        due.clear();
        w.expire(9000, &mut due);
        assert_eq!(due, [2]);
        due.clear();
        w.expire(19_999, &mut due);
        assert!(due.is_empty());
        w.expire(20_000, &mut due);
        assert_eq!(due, [3]);
        assert!(w.is_empty());
    }

    #[test]
    fn long_idle_visits_every_slot_once() {
        let mut w = TimerWheel::new(10, 4, 1000);
        for k in 0..10 {
            w.insert(1000 + k * 7, k);
        }
        let mut due = Vec::new();
        w.expire(1_000_000, &mut due);
        due.sort_unstable();
        assert_eq!(due, (0..10).collect::<Vec<_>>());
        assert_eq!(w.len(), 0);
    }
}
