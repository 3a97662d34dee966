//! The RFC 3261 §17 timers of one worker, the once-a-second location expiry sweep, the
//! farm's pings and replays when due, and the NAT keepalive cursor.
//!
//! Every entry popped from the heap is checked against the slot's generation and state (by
//! the transaction table's `*_due` methods), so timers of finished transactions simply fall
//! out.

use super::response::{BranchEnd, Parent};
use super::timer::TimerKind;
use super::txn::{ClientCtx, ClientState};
use super::{Core, Now, Transmit};

/// How often bindings are checked for expiry.
pub(super) const EXPIRY_INTERVAL_MS: u64 = 1000;

/// How often branches sent over a stream connection are checked for a closed connection.
pub(super) const STREAM_CHECK_MS: u64 = 200;

impl Core {
    /// Fire every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Now, tx: &mut dyn Transmit) {
        let t = now.mono_ms;
        while let Some(e) = self.txns.pop_due(t) {
            match e.kind {
                TimerKind::ClientRetransmit => {
                    if let Some(ct) = self.txns.client_retransmit_due(e.slot, e.gen, t) {
                        tx.send(ct.to, &ct.request);
                        self.stats.retransmissions_sent += 1;
                    }
                }
                TimerKind::ClientTimeout => self.client_timeout(now, e.slot, e.gen, tx),
                TimerKind::ClientLinger => self.txns.client_linger_over(e.slot, e.gen),
                TimerKind::CancelRetransmit => {
                    if let Some(ct) = self.txns.cancel_retransmit_due(e.slot, e.gen, t) {
                        tx.send(ct.to, &ct.cancel_request);
                        self.stats.retransmissions_sent += 1;
                    } else if self.txns.cancel_unanswered(e.slot, e.gen, t) {
                        self.cancel_given_up(t, e.slot, e.gen, tx);
                    }
                }
                TimerKind::TimerC => self.timer_c(t, e.slot, e.gen, tx),
                TimerKind::ServerRetransmit => {
                    if let Some(st) = self.txns.server_retransmit_due(e.slot, e.gen, t) {
                        tx.send(st.from, &st.response);
                        self.stats.retransmissions_sent += 1;
                    }
                }
                TimerKind::ServerLinger => self.txns.server_linger_over(e.slot, e.gen),
                TimerKind::DelayedAnswer => {
                    self.delayed.release(e.slot, e.gen, tx);
                }
                TimerKind::ParkedTimeout => {
                    if self.parked.expire(e.slot, e.gen) {
                        self.stats.timeouts += 1;
                    }
                }
            }
        }
        if t >= self.next_expiry_ms {
            self.next_expiry_ms = t + EXPIRY_INTERVAL_MS;
            self.expire_bindings(now, tx);
        }
        if !self.stream_branches.is_empty() && t >= self.next_stream_check_ms {
            self.next_stream_check_ms = t + STREAM_CHECK_MS;
            self.check_stream_branches(t, tx);
        }
        self.handle_farm(now, tx);
        self.handle_keepalive(now, tx);
    }

    /// The earliest of the timer heap, the expiry sweep, the farm's work and the stream
    /// check (monotonic ms).
    pub(super) fn next_wakeup(&self) -> u64 {
        let sweeps = self
            .next_expiry_ms
            .min(self.farm_due())
            .min(self.keepalive.due());
        let mut next = self.txns.next_deadline().map_or(sweeps, |d| d.min(sweeps));
        if !self.stream_branches.is_empty() {
            next = next.min(self.next_stream_check_ms);
        }
        next
    }

    /// Branches waiting on a stream connection that has closed end now as timed out
    /// (RFC 3261 §8.1.3.1: a transport failure): the caller hears 408 at once, not after
    /// Timer B. Finished branches leave the list.
    fn check_stream_branches(&mut self, now_ms: u64, tx: &mut dyn Transmit) {
        let mut list = std::mem::take(&mut self.stream_branches);
        list.retain(|&(slot, gen)| {
            let Some(ct) = self.txns.client(slot, gen) else {
                return false;
            };
            if ct.state == ClientState::Completed {
                return false;
            }
            let open = ct.to.conn.is_some_and(|c| self.ports.links.is_open(c));
            if open {
                return true;
            }
            if let ClientCtx::Branch { server, server_gen } = ct.ctx {
                tracing::debug!(dst = %ct.to.remote, "connection closed under a branch");
                self.stats.timeouts += 1;
                let parent = Parent {
                    idx: server,
                    gen: server_gen,
                };
                self.branch_final(now_ms, parent, slot, BranchEnd::TimedOut, tx);
            }
            false
        });
        // Branches added meanwhile (none: this runs from the timer) are kept.
        list.append(&mut self.stream_branches);
        self.stream_branches = list;
    }

    /// Timer B / F: no final response.
    fn client_timeout(&mut self, now: Now, slot: u32, gen: u32, tx: &mut dyn Transmit) {
        if !self.txns.client_timed_out(slot, gen) {
            return;
        }
        let Some(ct) = self.txns.client(slot, gen) else {
            return;
        };
        self.stats.timeouts += 1;
        match ct.ctx {
            ClientCtx::Branch { server, server_gen } => {
                tracing::debug!(dst = %ct.to.remote, "branch timed out");
                let parent = Parent {
                    idx: server,
                    gen: server_gen,
                };
                self.branch_final(now.mono_ms, parent, slot, BranchEnd::TimedOut, tx);
            }
            ClientCtx::RegFwd(rf) => {
                let node = ct.to.remote;
                self.txns.free_client(slot);
                self.stats.regfwd_failed += 1;
                let user = rf.user.as_str();
                tracing::warn!(user, %node, "forwarded REGISTER timed out");
                self.ports
                    .regfwd
                    .on_result(user, rf.call_id.as_str(), node, 408, None);
            }
        }
    }

    /// A CANCELled INVITE branch still without a final response 64·T1 later (§9.1): its
    /// destination is gone; the branch ends as a timeout.
    fn cancel_given_up(&mut self, now_ms: u64, slot: u32, gen: u32, tx: &mut dyn Transmit) {
        let Some(ClientCtx::Branch { server, server_gen }) =
            self.txns.client(slot, gen).map(|c| c.ctx)
        else {
            return;
        };
        self.stats.timeouts += 1;
        let parent = Parent {
            idx: server,
            gen: server_gen,
        };
        self.branch_final(now_ms, parent, slot, BranchEnd::TimedOut, tx);
    }

    /// Timer C (§16.6 (11)): an INVITE branch that got a provisional is cancelled; one that
    /// got nothing is treated as a 408.
    fn timer_c(&mut self, now_ms: u64, slot: u32, gen: u32, tx: &mut dyn Transmit) {
        let Some(ct) = self.txns.client(slot, gen) else {
            return;
        };
        let ClientCtx::Branch { server, server_gen } = ct.ctx else {
            return;
        };
        let parent = Parent {
            idx: server,
            gen: server_gen,
        };
        match ct.state {
            ClientState::Proceeding => self.send_cancel(now_ms, slot, tx),
            ClientState::Calling => {
                self.branch_final(now_ms, parent, slot, BranchEnd::TimedOut, tx)
            }
            _ => {}
        }
    }
}
