//! The registrar proper: RFC 3261 §10.3 rules applied to one AOR's bindings.
//!
//! The core parses and authenticates a REGISTER, fills a [`RegisterRequest`] (borrowed
//! from the datagram) and calls [`Registrar::register`]. The rules run in two passes under
//! the AOR's stripe lock: a check pass that may refuse the whole request (nothing changed),
//! then an apply pass that adds, refreshes and removes bindings. The caller's buffer gets
//! one `Contact:` line per current binding for the 200 OK, and the [`RegisterOutcome`]
//! says what REGFWD needs (AOR-level expiry, changed or pure refresh, empty now).

use std::net::SocketAddr;

use super::admin::PendingUnregisters;
use super::binding::{remaining_secs, Binding};
use super::config::{ConfigError, OnMaxContacts, RegistrarConfig};
use super::error::RegisterError;
use super::outbound::{same_binding, OutboundContact};
use super::slot::{Slot, SlotParts, MAX_CALL_ID, MAX_CONTACT_URI, MAX_PATH_BYTES};
use super::table::Location;
use super::uri::{nat_dest, same_contact, uri_host_port};
use crate::sip::Transport;

/// One Contact of the REGISTER (not `*`).
#[derive(Debug, Clone, Copy)]
pub struct ContactInput<'a> {
    /// The Contact URI (without angle brackets or header parameters).
    pub uri: &'a str,
    /// The contact's `expires` parameter.
    pub expires: Option<u32>,
    /// The contact's `q` in thousandths (0..=1000).
    pub q: Option<u16>,
}

/// An authenticated REGISTER as the registrar needs it.
#[derive(Debug, Clone, Copy)]
pub struct RegisterRequest<'a> {
    /// `user@domain`, the canonical AOR from the To header.
    pub aor: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    pub expires_header: Option<u32>,
    /// `Contact: *` was given (then `contacts` must be empty).
    pub star: bool,
    pub contacts: &'a [ContactInput<'a>],
    /// Where the REGISTER came from (after RFC 3581 `received`/`rport`).
    pub source: SocketAddr,
    /// Transport it arrived on.
    pub transport: Transport,
    /// The proxy's local socket it arrived on.
    pub socket: SocketAddr,
    /// The stream connection it arrived over (a packed `core::ConnId`), 0 for none: a
    /// binding over a stream is reached over its connection (and at its source address).
    pub conn: u64,
    /// Path header entries, topmost first (RFC 3327).
    pub path: &'a [&'a str],
    pub user_agent: Option<&'a str>,
}

/// What a successful REGISTER did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterOutcome {
    /// Live bindings of the AOR now.
    pub bindings: usize,
    /// Longest remaining expiry over the AOR's bindings, in seconds: what REGFWD tells
    /// Asterisk. 0 when the AOR has no binding left.
    pub expires: u32,
    /// The binding set or a binding's location changed (added, removed, new source, Path or
    /// q). `false` for a pure refresh that only extended expiries.
    pub changed: bool,
    /// The AOR had no live binding before this request.
    pub was_empty: bool,
}

impl RegisterOutcome {
    /// The AOR has no binding left (Asterisk must get Expires: 0).
    pub fn is_empty(&self) -> bool {
        self.bindings == 0
    }
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupResult {
    /// No live binding: answer 404 (or 480).
    NotFound,
    /// This many bindings were given to the callback.
    Found(usize),
}

/// The registrar and its location table. Shared (`Arc`) by every worker.
pub struct Registrar {
    cfg: RegistrarConfig,
    pub(crate) table: Location,
    pub(super) pending: PendingUnregisters,
}

/// The user part of an AOR (`alice` of `alice@example.com`), for REGFWD.
pub fn aor_user(aor: &str) -> &str {
    aor.rsplit_once('@').map_or(aor, |(u, _)| u)
}

impl Registrar {
    /// A registrar with an empty table. Persistence is attached by
    /// [`super::persist::Persister::start`].
    pub fn new(cfg: RegistrarConfig) -> Result<Registrar, ConfigError> {
        cfg.validate()?;
        let table = Location::new(cfg.max_aors);
        Ok(Registrar {
            cfg,
            table,
            pending: PendingUnregisters::default(),
        })
    }

    pub fn config(&self) -> &RegistrarConfig {
        &self.cfg
    }

    fn contact_expiry(
        &self,
        req: &RegisterRequest<'_>,
        c: &ContactInput<'_>,
    ) -> Result<u32, RegisterError> {
        let e = c
            .expires
            .or(req.expires_header)
            .unwrap_or(self.cfg.default_expires);
        if e != 0 && e < self.cfg.min_expires {
            return Err(RegisterError::IntervalTooBrief {
                min_expires: self.cfg.min_expires,
            });
        }
        Ok(e.min(self.cfg.max_expires))
    }

    /// The table key of an AOR: `user@domain` with `use_domain`, else the user part.
    pub fn key<'a>(&self, aor: &'a str) -> &'a str {
        if self.cfg.use_domain {
            aor
        } else {
            aor_user(aor)
        }
    }

    fn check_request(&self, req: &RegisterRequest<'_>) -> Result<(), RegisterError> {
        match req.aor.split_once('@') {
            Some((u, d)) if !u.is_empty() && !d.is_empty() => {}
            None if !self.cfg.use_domain && !req.aor.is_empty() => {}
            _ => return Err(RegisterError::BadAor),
        }
        if req.star && (!req.contacts.is_empty() || req.expires_header != Some(0)) {
            return Err(RegisterError::InvalidStar);
        }
        if req.call_id.len() > MAX_CALL_ID {
            return Err(RegisterError::CallIdTooLong);
        }
        let path_len: usize = req.path.iter().map(|p| 2 + p.len()).sum();
        if path_len > MAX_PATH_BYTES {
            return Err(RegisterError::PathTooLong);
        }
        for c in req.contacts {
            if c.uri.len() > MAX_CONTACT_URI || uri_host_port(c.uri).is_none() {
                return Err(RegisterError::BadContact);
            }
            self.contact_expiry(req, c)?;
        }
        Ok(())
    }

    /// Apply a REGISTER (RFC 3261 §10.3 steps 6-8). On success `out_contacts` gets one
    /// `Contact:` line per current binding (with its remaining `expires`); on error nothing
    /// changed and `out_contacts` must be ignored.
    pub fn register(
        &self,
        req: &RegisterRequest<'_>,
        now_ms: u64,
        out_contacts: &mut Vec<u8>,
    ) -> Result<RegisterOutcome, RegisterError> {
        self.register_outbound(req, &[], now_ms, out_contacts)
    }

    /// [`Registrar::register`] with the RFC 5626 parameters of each contact (`outbound[i]`
    /// for `req.contacts[i]`; missing entries have none), see [`super::outbound`]: a
    /// contact with an instance and a reg-id replaces the binding with the same pair, and
    /// is reached over the flow it registered on.
    pub fn register_outbound(
        &self,
        req: &RegisterRequest<'_>,
        outbound: &[OutboundContact<'_>],
        now_ms: u64,
        out_contacts: &mut Vec<u8>,
    ) -> Result<RegisterOutcome, RegisterError> {
        self.check_request(req)?;
        let ob = |i: usize| outbound.get(i).copied().unwrap_or_default();
        let cfg = &self.cfg;
        let max = usize::from(cfg.max_contacts);
        let since_s = u32::try_from(now_ms / 1000).unwrap_or(u32::MAX);
        let nat_forced = !req.path.is_empty();
        let ua = req.user_agent.unwrap_or("");
        let rules = |slots: &mut Vec<Slot>| -> Result<(RegisterOutcome, bool), RegisterError> {
            let live = |s: &Slot| s.expires_at_ms > now_ms;
            let was_empty = !slots.iter().any(live);
            // Check pass: nothing is modified until every contact passed.
            let cseq_ok = |s: &Slot| s.call_id() != req.call_id || req.cseq > s.cseq;
            let mut additions = 0usize;
            let mut removals = 0usize;
            if req.star {
                if let Some(s) = slots.iter().filter(|s| live(s)).find(|s| !cseq_ok(s)) {
                    return Err(RegisterError::CSeqOutOfOrder {
                        cseq: req.cseq,
                        stored: s.cseq,
                    });
                }
            } else {
                let mut nonzero = 0usize;
                for (i, c) in req.contacts.iter().enumerate() {
                    let e = self.contact_expiry(req, c)?;
                    // A later duplicate of the same URI in this request decides.
                    if req
                        .contacts
                        .get(i + 1..)
                        .is_some_and(|r| r.iter().any(|d| same_contact(d.uri, c.uri)))
                    {
                        continue;
                    }
                    nonzero += usize::from(e != 0);
                    match slots
                        .iter()
                        .filter(|s| live(s))
                        .find(|s| same_binding(s, c.uri, &ob(i)))
                    {
                        Some(s) if !cseq_ok(s) => {
                            return Err(RegisterError::CSeqOutOfOrder {
                                cseq: req.cseq,
                                stored: s.cseq,
                            })
                        }
                        Some(_) => removals += usize::from(e == 0),
                        None => additions += usize::from(e != 0),
                    }
                }
                let live_now = slots.iter().filter(|s| live(s)).count();
                let total = live_now + additions - removals;
                if nonzero > max || (total > max && cfg.on_max_contacts == OnMaxContacts::Reject) {
                    return Err(RegisterError::TooManyContacts {
                        max: cfg.max_contacts,
                    });
                }
            }
            // Apply pass.
            let before = slots.len();
            slots.retain(live);
            let mut changed = false;
            if req.star {
                changed = !slots.is_empty();
                slots.clear();
            }
            let mut touched: u128 = 0; // bit per slot index refreshed/added by this request
            for (i, c) in req.contacts.iter().enumerate() {
                if req
                    .contacts
                    .get(i + 1..)
                    .is_some_and(|r| r.iter().any(|d| same_contact(d.uri, c.uri)))
                {
                    continue;
                }
                let e = self.contact_expiry(req, c)?;
                let o = ob(i);
                let pos = slots.iter().position(|s| same_binding(s, c.uri, &o));
                if e == 0 {
                    if let Some(p) = pos {
                        slots.remove(p);
                        touched = remove_bit(touched, p);
                        changed = true;
                    }
                    continue;
                }
                let parts = SlotParts {
                    uri: c.uri,
                    call_id: req.call_id,
                    cseq: req.cseq,
                    path: req.path,
                    user_agent: ua,
                    expires_at_ms: now_ms + u64::from(e) * 1000,
                    since_s,
                    q: c.q,
                    source: req.source,
                    transport: req.transport,
                    socket: req.socket,
                    conn: req.conn,
                    nated: nat_forced
                        || req.transport.is_stream()
                        || o.reg_id.is_some()
                        || nat_dest(cfg.nat, c.uri, req.source),
                    instance: o.instance.unwrap_or(""),
                    reg_id: o.reg_id.unwrap_or(0),
                };
                let fresh = Slot::new(&parts).map_err(|_| RegisterError::BadContact)?;
                match pos.and_then(|p| slots.get_mut(p).map(|s| (p, s))) {
                    Some((p, s)) => {
                        let moved = !s.same_location(&fresh);
                        changed |= moved;
                        if !moved
                            && s.call_id() == req.call_id
                            && s.user_agent() == fresh.user_agent()
                        {
                            // Pure refresh: keep the stored buffer, update the numbers
                            // (and the connection, which a phone may have reopened).
                            s.expires_at_ms = fresh.expires_at_ms;
                            s.cseq = fresh.cseq;
                            s.set_conn(fresh.view().conn);
                        } else {
                            let since = s.since_s;
                            *s = fresh;
                            s.since_s = since;
                        }
                        touched |= 1u128.checked_shl(p as u32).unwrap_or(0);
                    }
                    None => {
                        touched |= 1u128.checked_shl(slots.len() as u32).unwrap_or(0);
                        slots.push(fresh);
                        changed = true;
                    }
                }
            }
            // Over the limit: drop the oldest bindings this request did not name.
            while slots.len() > max {
                let victim = slots
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| touched & 1u128.checked_shl(*i as u32).unwrap_or(0) == 0)
                    .min_by_key(|(i, s)| (s.since_s, *i))
                    .map(|(i, _)| i);
                let Some(v) = victim else { break };
                slots.remove(v);
                touched = remove_bit(touched, v);
                changed = true;
            }
            slots.sort_by_key(|s| std::cmp::Reverse(s.q_rank()));
            for s in slots.iter() {
                super::edge::contact_line(out_contacts, &s.view(), now_ms);
            }
            let outcome = RegisterOutcome {
                bindings: slots.len(),
                expires: slots
                    .iter()
                    .map(|s| remaining_secs(s.expires_at_ms, now_ms))
                    .max()
                    .unwrap_or(0),
                changed,
                was_empty,
            };
            Ok((
                outcome,
                changed || before != slots.len() || !req.contacts.is_empty(),
            ))
        };
        self.table
            .modify(self.key(req.aor), rules, |_| RegisterError::TableFull)
    }

    /// Give `f` every live binding of `aor` (`user@domain`, or just `user` when
    /// `use_domain` is off), highest q first (for an incoming call).
    /// `f` runs under the AOR's stripe read lock: copy what you need, do not block.
    pub fn lookup(&self, aor: &str, now_ms: u64, mut f: impl FnMut(&Binding<'_>)) -> LookupResult {
        match self.table.lookup(self.key(aor), now_ms, |b| f(b)) {
            0 => LookupResult::NotFound,
            n => LookupResult::Found(n),
        }
    }

    /// Remove bindings expired at `now_ms` (bounded work per call: `expire_batch` AORs
    /// per stripe). `f` gets the key of each AOR left with no binding (`user@domain`, or
    /// `user` without `use_domain`; [`aor_user`] gives the user either way) so REGFWD sends
    /// Expires: 0: those emptied by this sweep, and those emptied by an administrative
    /// [`Registrar::remove`] since the last sweep that still have no live binding (a phone
    /// that registered again meanwhile is not reported).
    /// Returns the number of bindings removed. Call it from a timer, e.g. once a second.
    pub fn expire(&self, now_ms: u64, mut f: impl FnMut(&str)) -> usize {
        self.drain_unregisters(now_ms, &mut f);
        self.table.expire(now_ms, self.cfg.expire_batch, &mut f)
    }

    /// Earliest binding expiry in the table, for arming the caller's timer.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.table.next_expiry_ms()
    }

    /// Put a reloaded binding back (persistence start-up); replaces a binding with the
    /// same Contact. Not announced to persistence (it came from there).
    pub(crate) fn restore(&self, aor: &str, slot: Slot) {
        let _ = self.table.modify(
            self.key(aor),
            |slots| {
                slots.retain(|s| {
                    !(same_contact(s.uri(), slot.uri()) && s.outbound() == slot.outbound())
                });
                slots.push(slot);
                slots.sort_by_key(|s| std::cmp::Reverse(s.q_rank()));
                Ok::<_, RegisterError>(((), false))
            },
            |_| RegisterError::TableFull,
        );
    }

    /// Every AOR key held (a full persistence rewrite), one stripe at a time; `f` runs outside
    /// the locks. Combine with [`Registrar::lookup`] for the bindings.
    pub fn for_each_aor(&self, f: impl FnMut(&str)) {
        self.table.for_each_aor(f);
    }

    /// (AORs, bindings) held, including expired bindings not yet swept (metrics gauges;
    /// cheap: one short read lock per stripe).
    pub fn counts(&self) -> (usize, usize) {
        self.table.counts()
    }
}

/// Remove bit `p` from a per-index bit set whose element `p` was removed (indices above
/// shift down by one).
fn remove_bit(bits: u128, p: usize) -> u128 {
    let low_mask = 1u128.checked_shl(p as u32).map_or(u128::MAX, |b| b - 1);
    let high = bits.checked_shr(p as u32 + 1).unwrap_or(0);
    (bits & low_mask) | high.checked_shl(p as u32).unwrap_or(0)
}
