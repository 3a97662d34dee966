//! The RFC 3261 §17 timers of one worker, and the once-a-second location expiry sweep.
//!
//! Every entry popped from the heap is checked against the slot's generation and state, so
//! timers of finished transactions simply fall out.

use crate::sip::{Message, EMPTY_HEADER, MAX_HEADERS};

use super::timer::TimerKind;
use super::txn::{CancelState, ClientState, Purpose, ServerState};
use super::{Core, Transmit, MAX_USER_LEN};

/// How often bindings are checked for expiry.
pub(super) const EXPIRY_INTERVAL_MS: u64 = 1000;

impl Core {
    /// Fire every timer due at `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64, tx: &mut dyn Transmit) {
        while let Some(e) = self.timers.pop_due(now_ms) {
            match e.kind {
                TimerKind::ClientRetransmit => self.client_retransmit(now_ms, e.slot, e.gen, tx),
                TimerKind::ClientTimeout => self.client_timeout(now_ms, e.slot, e.gen, tx),
                TimerKind::ClientLinger => {
                    if self
                        .txns
                        .client(e.slot, e.gen)
                        .is_some_and(|c| c.state == ClientState::Completed)
                    {
                        self.txns.free_client(e.slot);
                    }
                }
                TimerKind::CancelRetransmit => self.cancel_retransmit(now_ms, e.slot, e.gen, tx),
                TimerKind::TimerC => self.timer_c(now_ms, e.slot, e.gen, tx),
                TimerKind::ServerRetransmit => self.server_retransmit(now_ms, e.slot, e.gen, tx),
                TimerKind::ServerLinger => {
                    if self
                        .txns
                        .servers
                        .get(e.slot)
                        .is_some_and(|t| t.gen == e.gen)
                    {
                        self.txns.free_server(e.slot);
                    }
                }
                TimerKind::ParkedTimeout => {
                    if self.parked.expire(e.slot, e.gen) {
                        self.stats.timeouts += 1;
                    }
                }
            }
        }
        if now_ms >= self.next_expiry_ms {
            self.next_expiry_ms = now_ms + EXPIRY_INTERVAL_MS;
            self.expire_bindings(now_ms, tx);
        }
    }

    /// The earliest of the timer heap and the expiry sweep.
    pub(super) fn next_wakeup(&self) -> u64 {
        self.timers
            .next_deadline()
            .map_or(self.next_expiry_ms, |d| d.min(self.next_expiry_ms))
    }

    fn client_retransmit(&mut self, now: u64, slot: u32, gen: u32, tx: &mut dyn Transmit) {
        let t2 = self.cfg.timers.t2_ms;
        let Some(ct) = self.txns.client(slot, gen) else {
            return;
        };
        let resend = match ct.state {
            ClientState::Calling => true,
            // Non-INVITE keeps retransmitting at T2 after a provisional (Timer E).
            ClientState::Proceeding => !ct.invite,
            _ => false,
        };
        if !resend {
            return;
        }
        tx.send(ct.sock, ct.dst, &ct.request);
        ct.retransmit_ms = if ct.invite {
            ct.retransmit_ms.saturating_mul(2)
        } else {
            ct.retransmit_ms.saturating_mul(2).min(t2)
        };
        let next = ct.retransmit_ms;
        self.stats.retransmissions_sent += 1;
        self.timers
            .arm(now + next, slot, gen, TimerKind::ClientRetransmit);
    }

    /// Timer B / F: no final response.
    fn client_timeout(&mut self, now: u64, slot: u32, gen: u32, tx: &mut dyn Transmit) {
        let Some(ct) = self.txns.client(slot, gen) else {
            return;
        };
        let expired = match ct.state {
            ClientState::Calling => true,
            ClientState::Proceeding => !ct.invite,
            _ => false,
        };
        if !expired {
            return;
        }
        self.stats.timeouts += 1;
        match ct.purpose {
            Purpose::Branch { server, server_gen } => {
                tracing::debug!(dst = %ct.dst, "branch timed out");
                self.branch_final(now, server, server_gen, slot, 408, true, tx);
            }
            Purpose::RegFwd { .. } => {
                let node = ct.dst;
                let mut user = [0u8; MAX_USER_LEN];
                let n = ct.aux.len().min(MAX_USER_LEN);
                user[..n].copy_from_slice(&ct.aux[..n]);
                let request = std::mem::take(&mut ct.request);
                self.txns.free_client(slot);
                self.stats.regfwd_failed += 1;
                let user = std::str::from_utf8(&user[..n]).unwrap_or("");
                let mut hdrs = [EMPTY_HEADER; MAX_HEADERS];
                let call_id = Message::parse_datagram(&request, &mut hdrs)
                    .ok()
                    .and_then(|m| m.call_id().ok())
                    .unwrap_or("");
                tracing::warn!(user, %node, "forwarded REGISTER timed out");
                self.ports.regfwd.on_result(user, call_id, node, 408, None);
                if let Some(ct) = self.txns.clients.get_mut(slot) {
                    ct.request = request;
                }
            }
        }
    }

    fn cancel_retransmit(&mut self, now: u64, slot: u32, gen: u32, tx: &mut dyn Transmit) {
        let t2 = self.cfg.timers.t2_ms;
        let Some(ct) = self.txns.client(slot, gen) else {
            return;
        };
        if ct.cancel != CancelState::Sent
            || ct.cancel_retransmit_ms == 0
            || ct.final_code >= 200
            || now >= ct.cancel_until_ms
        {
            return;
        }
        tx.send(ct.sock, ct.dst, &ct.cancel_request);
        ct.cancel_retransmit_ms = ct.cancel_retransmit_ms.saturating_mul(2).min(t2);
        let next = ct.cancel_retransmit_ms;
        self.stats.retransmissions_sent += 1;
        self.timers
            .arm(now + next, slot, gen, TimerKind::CancelRetransmit);
    }

    /// Timer C (§16.6 (11)): an INVITE branch that got a provisional is cancelled; one that
    /// got nothing is treated as a 408.
    fn timer_c(&mut self, now: u64, slot: u32, gen: u32, tx: &mut dyn Transmit) {
        let Some(ct) = self.txns.client(slot, gen) else {
            return;
        };
        let Purpose::Branch { server, server_gen } = ct.purpose else {
            return;
        };
        match ct.state {
            ClientState::Proceeding => self.send_cancel(now, slot, tx),
            ClientState::Calling => self.branch_final(now, server, server_gen, slot, 408, true, tx),
            _ => {}
        }
    }

    /// Timer G: retransmit the final non-2xx response to an INVITE until the ACK.
    fn server_retransmit(&mut self, now: u64, idx: u32, gen: u32, tx: &mut dyn Transmit) {
        let t2 = self.cfg.timers.t2_ms;
        let Some(t) = self.txns.servers.get_mut(idx) else {
            return;
        };
        if t.gen != gen || t.state != ServerState::Completed || !t.invite {
            return;
        }
        tx.send(t.sock, t.src, &t.response);
        t.retransmit_ms = t.retransmit_ms.saturating_mul(2).min(t2);
        let next = t.retransmit_ms;
        self.stats.retransmissions_sent += 1;
        self.timers
            .arm(now + next, idx, gen, TimerKind::ServerRetransmit);
    }
}
