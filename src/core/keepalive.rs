//! NAT keepalives (Kamailio's nathelper `NATSIPPING`, RFC 5626 §4.4.1): the proxy pings
//! registered phones at their flow so their NAT pinhole stays open, and removes the binding
//! of a phone that stopped answering.
//!
//! The location table is cut into slices ([`LocationPort::keepalive_slices`]); each worker
//! owns a contiguous share of them and walks its share once per `[nat]
//! keepalive_interval_secs` with a cursor that advances with the clock
//! ([`Core::handle_keepalive`], every [`TICK_MS`]), so a million bindings are pinged evenly
//! over the interval, never in a burst. A tick copies the flows of the slices now due under
//! the table's read lock into reused buffers ([`Found`]), lets go of the lock, then sends:
//!
//! - UDP, `keepalive = "options"`: a stateless OPTIONS from the listen socket the phone
//!   registered on, whose Via branch carries [`KEEPALIVE_SLOT`] so any answer (any status)
//!   comes back to this worker ([`Core::on_keepalive_answer`]) and clears the flow's count
//!   of unanswered pings. A flow still owing `keepalive_failures` answers when its next
//!   ping is due is dead: its bindings are removed and, for a user left with none, REGFWD
//!   sends Asterisk the same `Expires: 0` REGISTER an expiry sends.
//! - UDP, `keepalive = "crlf"`: a bare CRLFCRLF datagram (keeps the pinhole open; nothing
//!   answers it, so nothing is removed).
//! - TCP/TLS: the CRLFCRLF ping of RFC 5626 §4.4.1 on the phone's connection (the
//!   transport writes it from the worker owning the connection); a binding whose connection
//!   has closed is removed at once.
//!
//! Nothing here allocates per ping: the unanswered counts live in a map that grows to the
//! largest number of flows owing an answer and is pruned once per round.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;

use serde::Deserialize;

use super::branch::{write_branch, OurBranch};
use super::ports::{KeepaliveTarget, LocationPort};
use super::register::PortOut;
use super::route::sent_by;
use super::{Core, Flow, Local, Now, Transmit};

/// The slot field of a keepalive OPTIONS's branch (the farm's pings use `u32::MAX - 1`,
/// stateless forwarding `u32::MAX`).
pub(super) const KEEPALIVE_SLOT: u32 = u32::MAX - 2;

/// How often the cursor moves.
pub(super) const TICK_MS: u64 = 100;

/// The bytes of a CRLF keepalive (RFC 5626 §3.5.1 "ping").
const CRLF_PING: &[u8] = b"\r\n\r\n";

/// Flows pre-reserved in the unanswered-ping map.
const MISSES_RESERVED: usize = 1024;

/// What a keepalive is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeepaliveMethod {
    /// OPTIONS on UDP (answered: dead phones are found); CRLFCRLF on TCP/TLS.
    #[default]
    Options,
    /// CRLFCRLF everywhere (on UDP it only keeps the pinhole open).
    Crlf,
}

/// Which bindings get keepalives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeepaliveBindings {
    /// Bindings behind NAT (private or differing Contact, Path, or a TCP/TLS connection).
    #[default]
    Nated,
    /// Every binding.
    All,
}

/// `[nat]`: keepalives towards registered phones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatConfig {
    /// One keepalive per binding every this many seconds (0 = none).
    pub keepalive_interval_secs: u32,
    /// Unanswered OPTIONS in a row after which a binding is removed.
    pub keepalive_failures: u32,
    pub keepalive: KeepaliveMethod,
    pub keepalive_bindings: KeepaliveBindings,
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig {
            keepalive_interval_secs: 30,
            keepalive_failures: 3,
            keepalive: KeepaliveMethod::Options,
            keepalive_bindings: KeepaliveBindings::Nated,
        }
    }
}

impl NatConfig {
    /// The key and reason of the first value out of range.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.keepalive_interval_secs > 3600 {
            return Err((
                "nat.keepalive_interval_secs",
                "must be at most 3600 (0 = off)",
            ));
        }
        if !(1..=100).contains(&self.keepalive_failures) {
            return Err(("nat.keepalive_failures", "must be between 1 and 100"));
        }
        Ok(())
    }

    fn interval_ms(&self) -> u64 {
        u64::from(self.keepalive_interval_secs) * 1000
    }
}

/// Unanswered pings of one UDP flow.
#[derive(Debug, Clone, Copy)]
struct Miss {
    /// Pings sent since the last answer.
    count: u32,
    /// The round the last one was sent in.
    round: u32,
}

/// One binding the scan found: its flow, whether it is a stream's, and where its user
/// name lies in [`Keepalive::names`].
#[derive(Debug, Clone, Copy)]
struct Found {
    to: Flow,
    stream: bool,
    user: (u32, u32),
    uri: (u32, u32),
}

/// One worker's keepalive cursor and the flows owing an answer.
pub(super) struct Keepalive {
    /// Next tick (monotonic ms).
    next_ms: u64,
    /// When the current round started, and how many of this worker's slices it visited.
    round_start_ms: u64,
    cursor: u32,
    round: u32,
    seq: u32,
    misses: HashMap<(Local, SocketAddr), Miss>,
    found: Vec<Found>,
    names: Vec<u8>,
}

impl Keepalive {
    pub(super) fn new() -> Keepalive {
        Keepalive {
            next_ms: 0,
            round_start_ms: 0,
            cursor: 0,
            round: 0,
            seq: 0,
            misses: HashMap::with_capacity(MISSES_RESERVED),
            found: Vec::with_capacity(1024),
            names: Vec::with_capacity(64 * 1024),
        }
    }

    pub(super) fn due(&self) -> u64 {
        self.next_ms
    }

    /// Flows owing an answer now (tests and benches).
    pub(super) fn owing(&self) -> usize {
        self.misses.len()
    }
}

/// This worker's share `[first, end)` of `slices` slices.
fn share(slices: u32, worker: usize, n_workers: usize) -> (u32, u32) {
    let n = n_workers.max(1) as u64;
    let w = (worker as u64).min(n - 1);
    let s = u64::from(slices);
    ((s * w / n) as u32, (s * (w + 1) / n) as u32)
}

impl Core {
    /// Move the keepalive cursor to where the clock says and ping the bindings of the
    /// slices it passed (see the module docs). Called from [`Core::handle_timeout`].
    pub(super) fn handle_keepalive(&mut self, now: Now, tx: &mut dyn Transmit) {
        let t = now.mono_ms;
        if t < self.keepalive.next_ms {
            return;
        }
        self.keepalive.next_ms = t + TICK_MS;
        let nat = self.cfg.nat;
        let interval = nat.interval_ms();
        let slices = self.ports.location.keepalive_slices();
        if interval == 0 || slices == 0 {
            // Off: look again in a second (a reload may turn it on).
            self.keepalive.next_ms = t + 1000;
            self.keepalive.round_start_ms = t;
            self.keepalive.cursor = 0;
            return;
        }
        let (first, end) = share(slices, usize::from(self.worker), self.cfg.n_workers);
        let mine = end - first;
        let ka = &mut self.keepalive;
        if ka.round_start_ms == 0 && ka.cursor == 0 {
            ka.round_start_ms = t;
        }
        let elapsed = t.saturating_sub(ka.round_start_ms);
        let target = if elapsed >= interval {
            mine
        } else {
            ((u64::from(mine) * elapsed).div_ceil(interval) as u32).min(mine)
        };
        if target > ka.cursor {
            let (lo, hi) = (first + ka.cursor, first + target);
            ka.cursor = target;
            self.keepalive_slices(now, lo, hi, tx);
        }
        let ka = &mut self.keepalive;
        if elapsed >= interval {
            ka.round = ka.round.wrapping_add(1);
            ka.round_start_ms = t;
            ka.cursor = 0;
            // Flows not pinged for a whole round (their binding is gone) and dead flows
            // whose bindings were all removed last round leave the map.
            let (round, failures) = (ka.round, nat.keepalive_failures);
            ka.misses.retain(|_, m| {
                round.wrapping_sub(m.round) <= 1 && m.count < failures.saturating_add(1)
            });
        }
    }

    /// Ping the bindings of slices `[lo, hi)`: copy their flows under the table's lock,
    /// then send with no lock held.
    fn keepalive_slices(&mut self, now: Now, lo: u32, hi: u32, tx: &mut dyn Transmit) {
        let all = self.cfg.nat.keepalive_bindings == KeepaliveBindings::All;
        let mut found = std::mem::take(&mut self.keepalive.found);
        let mut names = std::mem::take(&mut self.keepalive.names);
        found.clear();
        names.clear();
        let cfg = &self.cfg;
        let location: &dyn LocationPort = &*self.ports.location;
        location.keepalive_scan(lo, hi, now.wall_ms, &mut |b: &KeepaliveTarget<'_>| {
            if !(all || b.nated) {
                return;
            }
            let mut put = |s: &str| {
                let at = names.len() as u32;
                names.extend_from_slice(s.as_bytes());
                (at, s.len() as u32)
            };
            let user = put(b.user);
            let uri = put(b.uri);
            found.push(Found {
                to: b.to,
                stream: cfg.transport_of(b.to.local).is_stream(),
                user,
                uri,
            });
        });
        for f in &found {
            let text = |(at, len): (u32, u32)| {
                names
                    .get(at as usize..(at + len) as usize)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .unwrap_or("")
            };
            self.keepalive_one(now, f, text(f.user), text(f.uri), tx);
        }
        self.keepalive.found = found;
        self.keepalive.names = names;
    }

    /// Ping one binding, or remove it when its flow is dead.
    fn keepalive_one(&mut self, now: Now, f: &Found, user: &str, uri: &str, tx: &mut dyn Transmit) {
        if f.stream {
            // Bindings persisted before a restart have no connection: nothing to ping.
            let Some(conn) = f.to.conn else {
                return;
            };
            if self.ports.links.is_open(conn) {
                tx.send(f.to, CRLF_PING);
                self.stats.keepalives_sent += 1;
            } else {
                self.keepalive_remove(now, user, f.to, tx);
            }
            return;
        }
        if self.cfg.nat.keepalive == KeepaliveMethod::Crlf {
            tx.send(f.to, CRLF_PING);
            self.stats.keepalives_sent += 1;
            return;
        }
        let failures = self.cfg.nat.keepalive_failures;
        let round = self.keepalive.round;
        let key = (f.to.local, f.to.remote);
        let miss = self.keepalive.misses.get(&key).copied();
        match miss {
            Some(m) if m.count >= failures => {
                // Dead: every binding reached by this flow goes (the entry stays until the
                // round ends, so the flow's other users go too).
                self.keepalive.misses.insert(
                    key,
                    Miss {
                        count: failures.saturating_add(1),
                        round,
                    },
                );
                self.keepalive_remove(now, user, f.to, tx);
            }
            // Already pinged this round (another user on the same flow).
            Some(m) if m.round == round => {}
            _ => {
                let count = miss.map_or(0, |m| m.count) + 1;
                self.keepalive.misses.insert(key, Miss { count, round });
                self.send_keepalive_options(f.to, uri, tx);
                self.stats.keepalives_sent += 1;
            }
        }
    }

    /// Remove `user`'s bindings reached by `flow`; a user left with none is unregistered
    /// at Asterisk like an expired one.
    fn keepalive_remove(&mut self, now: Now, user: &str, flow: Flow, tx: &mut dyn Transmit) {
        let (removed, emptied) = self.ports.location.remove_flow(user, flow, now.wall_ms);
        if removed == 0 {
            return;
        }
        self.stats.keepalive_removed += removed as u64;
        tracing::info!(user, dst = %flow.remote, removed, "phone stopped answering keepalives: binding removed");
        if emptied {
            let regfwd = self.ports.regfwd.clone();
            let mut out = PortOut {
                core: self,
                tx,
                now,
            };
            regfwd.on_expired(user, now.wall_ms, &mut out);
        }
    }

    /// A stateless OPTIONS to `uri` over `to`, answered to this worker (see the module docs).
    fn send_keepalive_options(&mut self, to: Flow, uri: &str, tx: &mut dyn Transmit) {
        let seq = self.keepalive.seq;
        self.keepalive.seq = seq.wrapping_add(1);
        let branch = write_branch(
            &self.cfg.branch_key,
            &OurBranch {
                worker: self.worker,
                slot: KEEPALIVE_SLOT,
                gen: seq,
                ingress: to.local,
                loop_hash: 0,
            },
        );
        let (host, port) = sent_by(&self.cfg, self.upstream.port(), to.local);
        let ruri = if uri.is_empty() { "sip:keepalive" } else { uri };
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        // Writes into a Vec cannot fail.
        let _ = write!(
            out,
            "OPTIONS {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {host}:{port};branch={b};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:keepalive@{host}:{port}>;tag=ka{seq:x}\r\n\
             To: <{ruri}>\r\n\
             Call-ID: ka-{w}-{seq:x}@{host}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n",
            b = branch.as_str(),
            w = self.worker,
        );
        tx.send(to, &out);
        self.out = out;
    }

    /// Any answer to a keepalive OPTIONS: the flow it came from is alive.
    pub(super) fn on_keepalive_answer(&mut self, from: Flow) {
        if self
            .keepalive
            .misses
            .remove(&(from.local, from.remote))
            .is_some()
        {
            self.stats.keepalives_answered += 1;
        }
    }

    /// Flows of this worker owing an answer to a keepalive.
    pub fn keepalives_owing(&self) -> usize {
        self.keepalive.owing()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_slice_once() {
        for n in 1..=7 {
            let mut next = 0;
            for w in 0..n {
                let (a, b) = share(4096, w, n);
                assert_eq!(a, next);
                next = b;
            }
            assert_eq!(next, 4096);
        }
    }

    #[test]
    fn config_limits() {
        assert!(NatConfig::default().validate().is_ok());
        let bad = NatConfig {
            keepalive_failures: 0,
            ..NatConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "nat.keepalive_failures");
        let bad = NatConfig {
            keepalive_interval_secs: 4000,
            ..NatConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "nat.keepalive_interval_secs");
        let off = NatConfig {
            keepalive_interval_secs: 0,
            ..NatConfig::default()
        };
        assert!(off.validate().is_ok());
    }
}
