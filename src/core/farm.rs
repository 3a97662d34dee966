//! The worker's side of the Asterisk farm ([`FarmPort`](super::ports::FarmPort)): the pings
//! and replayed REGISTERs the farm hands this worker, the answers to its pings, and
//! failing over at once what waits on a node that went down.
//!
//! The farm's state is shared; the core keeps only the generation it last saw and when the
//! farm next has work ([`Core::handle_farm`], called from the timers and on every wake).
//! When the generation moved, every INVITE (or subscription) branch still waiting on a
//! node now down ends as if that node had answered 503 — an INVITE that got a provisional
//! is CANCELled, one that got nothing gets its CANCEL once something arrives (§9.1) — and
//! the server transaction fails over to the next node the farm picks, without waiting for
//! Timer B.
//!
//! A ping is stateless: an OPTIONS from the upstream socket whose Via branch carries
//! [`PING_SLOT`] and the farm's sequence number instead of a transaction slot, so its
//! answer comes back to this worker and goes straight to the farm.

use std::io::Write;
use std::net::SocketAddr;

use crate::sip::{HeaderName, Message};

use super::branch::upstream_branch;
use super::response::{BranchEnd, Parent};
use super::route::sent_by;
use super::txn::{CancelState, ClientCtx, ClientState, Target};
use super::{Core, Flow, Local, Now, Transmit};

/// The slot field of a ping's branch (`u32::MAX` marks stateless forwarding).
pub(super) const PING_SLOT: u32 = u32::MAX - 1;

/// Longest Retry-After value read from a node's 503.
const MAX_RETRY_AFTER: u32 = 86_400;

/// The seconds of a `Retry-After` header (`120`, `120;duration=60`, `120 (lunch)`).
pub(super) fn retry_after(msg: &Message<'_, '_>) -> Option<u32> {
    let v = msg.header(HeaderName::Other("Retry-After"))?.value;
    let digits = v.iter().take_while(|b| b.is_ascii_digit()).count();
    let text = std::str::from_utf8(v.get(..digits)?).ok()?;
    text.parse::<u32>().ok().map(|s| s.min(MAX_RETRY_AFTER))
}

impl Core {
    /// Do what the farm asks when it is due or changed: send this worker's pings and
    /// replayed REGISTERs, and fail over branches to nodes that went down. Cheap when
    /// nothing is due (one atomic load).
    pub fn handle_farm(&mut self, now: Now, tx: &mut dyn Transmit) {
        let gen = self.ports.farm.generation();
        let changed = gen != self.farm_gen;
        if changed {
            self.farm_gen = gen;
            self.fail_over_down_nodes(now.mono_ms, tx);
        }
        if changed || now.mono_ms >= self.farm_due_ms {
            let farm = self.ports.farm.clone();
            let mut out = super::register::PortOut {
                core: self,
                tx,
                now,
            };
            let next = farm.poll(now, &mut out);
            // Asked again at least once a second (a replay may start on another worker).
            self.farm_due_ms = next.min(now.mono_ms + super::timeouts::EXPIRY_INTERVAL_MS);
        }
    }

    /// When the farm next has work for this worker (monotonic ms).
    pub(super) fn farm_due(&self) -> u64 {
        self.farm_due_ms
    }

    /// End every branch to Asterisk still waiting on a node that is down (see the module
    /// docs); their server transactions fail over.
    fn fail_over_down_nodes(&mut self, now_ms: u64, tx: &mut dyn Transmit) {
        for slot in 0..self.txns.clients.slots() {
            let Some(ct) = self.txns.clients.get(slot) else {
                continue;
            };
            let waiting = matches!(ct.state, ClientState::Calling | ClientState::Proceeding);
            let ClientCtx::Branch { server, server_gen } = ct.ctx else {
                continue;
            };
            if !waiting
                || ct.settled
                || ct.to.local != Local::Upstream
                || !self.ports.farm.is_down(ct.to.remote)
            {
                continue;
            }
            let to_farm = self.txns.servers.get(server).is_some_and(|t| {
                t.gen == server_gen && matches!(t.target, Target::Asterisk { .. })
            });
            if !to_farm {
                continue;
            }
            let (invite, state, node) = (ct.invite, ct.state, ct.to.remote);
            tracing::info!(%node, "failing over a request waiting on an Asterisk node that is down");
            if invite {
                match state {
                    ClientState::Proceeding => self.send_cancel(now_ms, slot, tx),
                    _ => {
                        if let Some(ct) = self.txns.clients.get_mut(slot) {
                            ct.cancel = CancelState::Wanted;
                        }
                    }
                }
            }
            let parent = Parent {
                idx: server,
                gen: server_gen,
            };
            self.branch_final(now_ms, parent, slot, BranchEnd::NodeDown, tx);
        }
    }

    /// Send OPTIONS ping `seq` to `node` from the upstream socket.
    pub(super) fn send_ping(&mut self, node: SocketAddr, seq: u32, tx: &mut dyn Transmit) {
        let branch = upstream_branch(&self.cfg.branch_key, self.worker, PING_SLOT, seq);
        let (host, port) = sent_by(&self.cfg, self.upstream.port(), Local::Upstream);
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        // Writes into a Vec cannot fail.
        let _ = write!(
            out,
            "OPTIONS sip:{node} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {host}:{port};branch={b};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:sipfront@{host}:{port}>;tag={seq:x}\r\n\
             To: <sip:{node}>\r\n\
             Call-ID: ping-{w}-{seq:x}@{host}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Accept: application/sdp\r\n\
             Content-Length: 0\r\n\r\n",
            b = branch.as_str(),
            w = self.worker,
        );
        tx.send(Flow::new(Local::Upstream, node), &out);
        self.out = out;
    }

    /// Whether a phone's SUBSCRIBE or PUBLISH is for an event package Asterisk serves
    /// (`[asterisk] subscribe_events`): the event type of its Event header, parameters
    /// aside.
    pub(super) fn event_for_asterisk(&self, msg: &Message<'_, '_>) -> bool {
        let Some(h) = msg.header(HeaderName::Other("Event")) else {
            return false;
        };
        let value = h.value.split(|&b| b == b';').next().unwrap_or(&[]);
        let event = value.trim_ascii();
        self.cfg
            .subscribe_events
            .iter()
            .any(|e| e.as_bytes().eq_ignore_ascii_case(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{EMPTY_HEADER, MAX_HEADERS};

    #[test]
    fn retry_after_values() {
        let cases = [
            ("Retry-After: 120\r\n", Some(120)),
            ("Retry-After: 30;duration=60\r\n", Some(30)),
            ("Retry-After: 18000 (in a meeting)\r\n", Some(18000)),
            ("Retry-After: 999999999\r\n", Some(MAX_RETRY_AFTER)),
            ("Retry-After: soon\r\n", None),
            ("", None),
        ];
        for (line, want) in cases {
            let text = format!(
                "SIP/2.0 503 Busy\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\n{line}Content-Length: 0\r\n\r\n"
            );
            let mut hdrs = [EMPTY_HEADER; MAX_HEADERS];
            let msg = Message::parse_datagram(text.as_bytes(), &mut hdrs).unwrap();
            assert_eq!(retry_after(&msg), want, "{line}");
        }
    }
}
