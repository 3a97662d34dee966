//! The location table as the NAT keepalives see it: cut into slices a worker walks one
//! after the other ([`Registrar::keepalive_scan`]), and the removal of the bindings of a
//! phone that stopped answering ([`Registrar::remove_where`]).
//!
//! A slice is one part of one stripe: the stripe's keys whose top
//! [`PART_BITS`](super::table::PART_BITS) bits equal the part number. Keys are keyed
//! hashes, so every slice holds about the same number of AORs; consecutive slices share a
//! stripe, so a scan of a run of slices takes each stripe's read lock once.

use super::binding::Binding;
use super::error::RegisterError;
use super::rules::Registrar;
use super::slot::Slot;
use super::table::{PART_BITS, SHARDS};

/// Slices of the table (stripes × parts).
pub const KEEPALIVE_SLICES: u32 = (SHARDS as u32) << PART_BITS;

impl Registrar {
    /// Call `f` with the AOR key and each binding live at `now_ms` in slices
    /// `[first, end)` of [`KEEPALIVE_SLICES`], under one stripe read lock at a time: `f`
    /// copies what it needs and returns.
    pub fn keepalive_scan(
        &self,
        first: u32,
        end: u32,
        now_ms: u64,
        mut f: impl FnMut(&str, &Binding<'_>),
    ) {
        let end = end.min(KEEPALIVE_SLICES);
        let mut s = first;
        while s < end {
            let stripe = s >> PART_BITS;
            let stripe_end = ((stripe + 1) << PART_BITS).min(end);
            let part = |x: u32| x & ((1 << PART_BITS) - 1);
            let hi = if stripe_end == (stripe + 1) << PART_BITS {
                1 << PART_BITS
            } else {
                part(stripe_end)
            };
            self.table
                .scan_part(stripe as usize, (part(s), hi), now_ms, &mut f);
            s = stripe_end;
        }
    }

    /// Remove the live bindings of `aor` for which `dead` says so (their phone stopped
    /// answering keepalives). Returns how many went and whether the AOR had live bindings
    /// and has none left (the caller tells Asterisk). The change is persisted like any
    /// other.
    pub fn remove_where(
        &self,
        aor: &str,
        now_ms: u64,
        dead: impl Fn(&Binding<'_>) -> bool,
    ) -> (usize, bool) {
        let r = self.table.modify(
            self.key(aor),
            |slots| {
                let live = |s: &Slot| s.expires_at_ms > now_ms;
                let live_before = slots.iter().filter(|s| live(s)).count();
                slots.retain(|s| !(live(s) && dead(&s.view())));
                let remaining = slots.iter().filter(|s| live(s)).count();
                let removed = live_before - remaining;
                Ok::<_, RegisterError>(((removed, removed > 0 && remaining == 0), removed > 0))
            },
            |_| RegisterError::TableFull,
        );
        r.unwrap_or((0, false))
    }
}
