//! The registrar's SIP edge (as Kamailio's registrar owns `sip_msg.c` and `reply.c`): the
//! core's [`LocationPort`], reading a parsed REGISTER into a [`RegisterRequest`], answering
//! retransmissions, writing the 200 OK's `Contact:` lines, and handing out bindings as the
//! flows to reach them.
//!
//! Data flow: the core authenticates a REGISTER and calls [`LocationPort::register`] with the
//! parsed message and the flow it came by → [`SipEdge`] collects Contacts, Path, Expires into
//! stack arrays (no allocation), keys the AOR as `user@realm`, and applies the §10.3 rules
//! ([`Registrar::register`]); the local socket of the flow is stored with each binding. For
//! a call, [`LocationPort::lookup`] turns each binding back into a [`Flow`]: its destination
//! (after the NAT rule) and the listen address it registered through.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::core::ports::{ContactTarget, KeepaliveTarget, RegisterInput, RegisterReply};
use crate::core::{ConnId, Flow, Local, LocationPort};
use crate::sip::Contact;

use super::binding::{remaining_secs, Binding};
use super::error::RegisterError;
use super::outbound::{outbound_use, parse_reg_id, OutboundContact, OutboundUse};
use super::rules::{aor_user, ContactInput, RegisterRequest, Registrar};
use crate::sip::Transport;

/// Most Contact values one REGISTER may carry.
const MAX_CONTACTS: usize = 16;
/// Most Path values kept per binding.
const MAX_PATH: usize = 8;
/// Longest AOR key (`user@realm`).
const MAX_AOR: usize = 320;

/// The location table as the core sees it.
pub struct SipEdge {
    registrar: Arc<Registrar>,
    realm: Box<str>,
    /// The listen addresses and their transports, by [`Local::Listen`] index.
    listen: Box<[(SocketAddr, Transport)]>,
}

impl SipEdge {
    /// The edge of `registrar` for AORs of `realm`, on the proxy's listen addresses and
    /// their transports (in the transport's order).
    pub fn new(
        registrar: Arc<Registrar>,
        realm: &str,
        listen: &[(SocketAddr, Transport)],
    ) -> SipEdge {
        SipEdge {
            registrar,
            realm: realm.into(),
            listen: listen.into(),
        }
    }

    /// [`LocationPort::keepalive_scan`] over the bindings `keep` accepts (a cluster node
    /// leaves out the bindings another node holds: that node pings them).
    pub fn keepalive_scan_where(
        &self,
        first: u32,
        end: u32,
        now_ms: u64,
        keep: &dyn Fn(&Binding<'_>) -> bool,
        f: &mut dyn FnMut(&KeepaliveTarget<'_>),
    ) {
        self.registrar.keepalive_scan(first, end, now_ms, |aor, b| {
            if keep(b) {
                f(&KeepaliveTarget {
                    user: aor_user(aor),
                    uri: b.uri,
                    to: self.flow_of(b),
                    nated: b.nated,
                });
            }
        });
    }

    /// The address and transport of a local socket, as stored with a binding.
    fn socket_of(&self, local: Local) -> (SocketAddr, Transport) {
        let i = match local {
            Local::Listen(i) => usize::from(i),
            Local::Upstream => 0,
        };
        self.listen
            .get(i)
            .or(self.listen.first())
            .copied()
            .unwrap_or((super::persist::UNKNOWN_SOCKET, Transport::Udp))
    }

    /// The local socket of a stored address and transport: the listen address itself,
    /// else one of that transport on the same IP, else the first of that transport, else
    /// the first (a binding persisted before a change of `[listen]`).
    fn local_of(&self, socket: SocketAddr, transport: Transport) -> Local {
        let l = &self.listen;
        let pos = l
            .iter()
            .position(|&(a, t)| a == socket && t == transport)
            .or_else(|| {
                l.iter()
                    .position(|&(a, t)| a.ip() == socket.ip() && t == transport)
            })
            .or_else(|| l.iter().position(|&(_, t)| t == transport))
            .unwrap_or(0);
        Local::Listen(u16::try_from(pos).unwrap_or(0))
    }

    /// The flow that reaches a binding: its destination from the local socket it
    /// registered through (over its connection, on a stream).
    fn flow_of(&self, b: &Binding<'_>) -> Flow {
        Flow {
            local: self.local_of(b.socket, b.transport),
            remote: b.dest,
            conn: ConnId::unpack(b.conn),
        }
    }

    /// A REGISTER seen before (a binding carries its Call-ID and CSeq): list the current
    /// bindings, change nothing. Anything else is not a retransmission: challenge.
    fn answer_retransmission(
        &self,
        aor: &str,
        call_id: &str,
        cseq: u32,
        now_ms: u64,
        contact_lines: &mut Vec<u8>,
    ) -> RegisterReply {
        contact_lines.clear();
        let mut granted = 0;
        let mut seen = false;
        self.registrar.lookup(aor, now_ms, |b| {
            seen |= b.call_id == call_id && b.cseq == cseq;
            granted = granted.max(b.remaining_secs(now_ms));
            contact_line(contact_lines, b, now_ms);
        });
        if seen {
            RegisterReply::Ok {
                granted,
                changed: false,
            }
        } else {
            contact_lines.clear();
            RegisterReply::Challenge
        }
    }
}

/// `user@realm` in a stack buffer.
struct AorBuf {
    buf: [u8; MAX_AOR],
    len: usize,
}

impl AorBuf {
    fn new(user: &str, realm: &str) -> Option<AorBuf> {
        let len = user.len() + 1 + realm.len();
        if len > MAX_AOR || user.is_empty() {
            return None;
        }
        let mut buf = [0u8; MAX_AOR];
        buf[..user.len()].copy_from_slice(user.as_bytes());
        buf[user.len()] = b'@';
        buf[user.len() + 1..len].copy_from_slice(realm.as_bytes());
        Some(AorBuf { buf, len })
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

fn reject(e: RegisterError) -> RegisterReply {
    let (code, reason) = e.status();
    let min_expires = match e {
        RegisterError::IntervalTooBrief { min_expires } => Some(min_expires),
        _ => None,
    };
    RegisterReply::Reject {
        code,
        reason,
        min_expires,
    }
}

const BAD_REQUEST: RegisterReply = RegisterReply::Reject {
    code: 400,
    reason: "Bad Request",
    min_expires: None,
};

/// A q value in thousandths as written in a Contact (`1`, `0`, `0.5`, `0.25`, ...).
fn write_q(out: &mut Vec<u8>, q: u16) {
    match q {
        1000.. => out.extend_from_slice(b"1"),
        0 => out.extend_from_slice(b"0"),
        _ => {
            let digits = [
                b'0' + (q / 100) as u8,
                b'0' + (q / 10 % 10) as u8,
                b'0' + (q % 10) as u8,
            ];
            let mut n = 3;
            while n > 1 && digits[n - 1] == b'0' {
                n -= 1;
            }
            out.extend_from_slice(b"0.");
            out.extend_from_slice(&digits[..n]);
        }
    }
}

/// Append `Contact: <uri>;expires=N[;q=x]\r\n` for one binding: the one writer of the 200
/// OK's Contact lines (fresh registrations and retransmission answers alike).
pub(crate) fn contact_line(out: &mut Vec<u8>, b: &Binding<'_>, now_ms: u64) {
    out.extend_from_slice(b"Contact: <");
    out.extend_from_slice(b.uri.as_bytes());
    let _ = write!(out, ">;expires={}", remaining_secs(b.expires_at_ms, now_ms));
    if let Some(q) = b.q {
        out.extend_from_slice(b";q=");
        write_q(out, q);
    }
    super::outbound::write_params(out, b.instance(), b.reg_id());
    out.extend_from_slice(b"\r\n");
}

impl LocationPort for SipEdge {
    fn register(
        &self,
        input: &RegisterInput<'_, '_, '_>,
        now_ms: u64,
        contact_lines: &mut Vec<u8>,
    ) -> RegisterReply {
        let msg = input.msg;
        let Some(aor) = AorBuf::new(input.user, &self.realm) else {
            return BAD_REQUEST;
        };
        let (Ok(call_id), Ok(cseq), Ok(expires_header)) =
            (msg.call_id(), msg.cseq(), msg.expires())
        else {
            return BAD_REQUEST;
        };
        let mut contacts = [ContactInput {
            uri: "",
            expires: None,
            q: None,
        }; MAX_CONTACTS];
        let mut outbound = [OutboundContact::default(); MAX_CONTACTS];
        let mut n = 0;
        let mut star = false;
        for c in msg.contacts() {
            match c {
                Ok(Contact::Star) => star = true,
                Ok(Contact::Addr(na)) => {
                    if n == MAX_CONTACTS {
                        return reject(RegisterError::TooManyContacts {
                            max: MAX_CONTACTS as u16,
                        });
                    }
                    // A malformed expires (`-5`) is refused like a malformed Expires.
                    let Ok(expires) = na.expires() else {
                        return BAD_REQUEST;
                    };
                    contacts[n] = ContactInput {
                        uri: na.uri,
                        expires,
                        q: na.q(),
                    };
                    // RFC 5626: a reg-id that is not a positive 31-bit number is refused.
                    let reg_id = match na.params.get("reg-id") {
                        None => None,
                        Some(v) => match v.and_then(parse_reg_id) {
                            Some(r) => Some(r),
                            None => return BAD_REQUEST,
                        },
                    };
                    let instance = na.params.get("+sip.instance").flatten();
                    outbound[n] = OutboundContact {
                        instance,
                        reg_id: reg_id.filter(|_| instance.is_some()),
                    };
                    n += 1;
                }
                Err(_) => return BAD_REQUEST,
            }
        }
        let mut path = [""; MAX_PATH];
        let mut n_path = 0;
        for p in msg.paths() {
            let Ok(na) = p else {
                return BAD_REQUEST;
            };
            if n_path < MAX_PATH {
                path[n_path] = msg
                    .buf
                    .get(na.span.range())
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .unwrap_or(na.uri);
                n_path += 1;
            }
        }
        let supported = msg
            .supported()
            .any(|t| t.is_ok_and(|t| t.eq_ignore_ascii_case("outbound")));
        let ob_use = outbound_use(
            &outbound[..n],
            msg.vias().count(),
            path.get(..n_path).and_then(|p| p.first()).copied(),
            supported,
        );
        match ob_use {
            OutboundUse::FirstHopLacksSupport => {
                return RegisterReply::Reject {
                    code: 439,
                    reason: "First Hop Lacks Outbound Support",
                    min_expires: None,
                }
            }
            OutboundUse::Ignored => outbound.iter_mut().for_each(|o| o.reg_id = None),
            OutboundUse::None | OutboundUse::Applied => {}
        }
        let (socket, transport) = self.socket_of(input.from.local);
        if input.replayed {
            return self.answer_retransmission(
                aor.as_str(),
                call_id,
                cseq.seq,
                now_ms,
                contact_lines,
            );
        }
        let req = RegisterRequest {
            aor: aor.as_str(),
            call_id,
            cseq: cseq.seq,
            expires_header,
            star,
            contacts: &contacts[..n],
            source: input.from.remote,
            transport,
            socket,
            conn: input.from.conn.map_or(0, ConnId::pack),
            path: &path[..n_path],
            user_agent: msg.user_agent(),
        };
        match self
            .registrar
            .register_outbound(&req, &outbound[..n], now_ms, contact_lines)
        {
            Ok(outcome) => {
                if ob_use == OutboundUse::Applied {
                    contact_lines.extend_from_slice(b"Require: outbound\r\n");
                }
                RegisterReply::Ok {
                    granted: outcome.expires,
                    changed: outcome.changed,
                }
            }
            // A retransmission of the REGISTER already applied (same Call-ID and CSeq):
            // answer with the current bindings again instead of failing it.
            Err(RegisterError::CSeqOutOfOrder { cseq, stored }) if cseq == stored => {
                self.answer_retransmission(aor.as_str(), call_id, cseq, now_ms, contact_lines)
            }
            Err(e) => reject(e),
        }
    }

    fn lookup(&self, user: &str, now_ms: u64, f: &mut dyn FnMut(&ContactTarget<'_>)) {
        let Some(aor) = AorBuf::new(user, &self.realm) else {
            return;
        };
        self.registrar.lookup(aor.as_str(), now_ms, |b| {
            let mut path = [""; MAX_PATH];
            let mut n = 0;
            for p in b.path {
                if n < MAX_PATH {
                    path[n] = p;
                    n += 1;
                }
            }
            let to = self.flow_of(b);
            f(&ContactTarget {
                uri: b.uri,
                to,
                path: &path[..n],
            });
        });
    }

    fn expire(&self, now_ms: u64, f: &mut dyn FnMut(&str)) {
        self.registrar.expire(now_ms, |aor| f(aor_user(aor)));
    }

    fn keepalive_slices(&self) -> u32 {
        super::KEEPALIVE_SLICES
    }

    fn keepalive_scan(
        &self,
        first: u32,
        end: u32,
        now_ms: u64,
        f: &mut dyn FnMut(&KeepaliveTarget<'_>),
    ) {
        self.keepalive_scan_where(first, end, now_ms, &|_| true, f);
    }

    fn remove_flow(&self, user: &str, flow: Flow, now_ms: u64) -> (usize, bool) {
        let Some(aor) = AorBuf::new(user, &self.realm) else {
            return (0, false);
        };
        self.registrar
            .remove_where(aor.as_str(), now_ms, |b| self.flow_of(b) == flow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_values() {
        let q = |v| {
            let mut o = Vec::new();
            write_q(&mut o, v);
            String::from_utf8(o).unwrap()
        };
        assert_eq!(
            [q(1000), q(0), q(500), q(250), q(5), q(100)],
            ["1", "0", "0.5", "0.25", "0.005", "0.1"]
        );
    }
}
