//! The response and request handling of [`Worker`]: challenge answering, the INVITE dialog
//! (ACK, BYE through the Record-Route set), and the called phone of Asterisk calls.

use super::*;

impl Worker {
    /// A response for op `slot`.
    pub(super) fn on_response(&mut self, slot: u32, m: &Msg<'_>, now: u64) {
        let Some(op) = self.ops.get_mut(slot as usize) else {
            return;
        };
        let (state, kind, cseq, t_req) = (op.state, op.kind, op.cseq, op.t_req);
        let is_bye = m.cseq_method == b"BYE";
        if is_bye {
            if state == State::Bye && m.code >= 200 {
                self.stats.record(Step::Bye, now.saturating_sub(t_req));
                let f = (m.code >= 300).then_some(Failure::Status(m.code));
                self.finish(slot, f, now);
            }
            return;
        }
        if m.cseq != cseq {
            // A late answer to the first request (e.g. a retransmitted 407): ACK it again.
            if m.code >= 300 && m.cseq_method == b"INVITE" {
                self.ack(slot, m, false);
            }
            return;
        }
        if m.code < 200 {
            op.rtx_at = if m.cseq_method == b"INVITE" {
                0
            } else {
                op.rtx_at
            };
            if state == State::Authed || kind == Kind::AsteriskCall {
                if m.code == 100 && !op.seen100 {
                    op.seen100 = true;
                    self.stats.record(Step::Inv100, now.saturating_sub(t_req));
                } else if m.code > 100 && !op.seen180 {
                    op.seen180 = true;
                    self.stats.record(Step::Inv180, now.saturating_sub(t_req));
                }
            }
            return;
        }
        let invite = m.cseq_method == b"INVITE";
        match (state, m.code) {
            (State::First, 401 | 407) if kind != Kind::AsteriskCall => {
                let step = if kind == Kind::Register {
                    Step::RegChallenge
                } else {
                    Step::InvChallenge
                };
                self.stats.record(step, now.saturating_sub(t_req));
                if invite {
                    self.ack(slot, m, false);
                }
                self.answer_challenge(slot, m, now);
            }
            (State::First | State::Authed, 200..=299) if !invite => {
                self.stats.record(Step::RegAuth, now.saturating_sub(t_req));
                self.finish(slot, None, now);
            }
            (State::First | State::Authed, 200..=299) => {
                self.stats.record(Step::Inv200, now.saturating_sub(t_req));
                op.to.clear();
                op.to.extend_from_slice(m.first(b"to").unwrap_or_default());
                op.target.clear();
                op.target
                    .extend_from_slice(m.contact_uri().unwrap_or_default());
                op.routes.clear();
                write_route_set(&mut op.routes, m);
                op.rtx_at = 0;
                op.state = State::Talking;
                self.ack(slot, m, true);
                let talk = self.params.talk_us;
                if talk == 0 {
                    self.send_in_dialog(slot, b"BYE", now);
                } else if let Some(op) = self.ops.get_mut(slot as usize) {
                    op.bye_at = now + talk;
                    self.arm(slot);
                }
            }
            (State::Talking | State::Bye, 200..=299) if invite => self.ack(slot, m, true),
            (State::First | State::Authed, code) => {
                if invite {
                    self.ack(slot, m, false);
                }
                self.finish(slot, Some(Failure::Status(code)), now);
            }
            _ => {}
        }
    }

    /// Answers a 401/407 with the same request plus credentials (CSeq + 1).
    fn answer_challenge(&mut self, slot: u32, m: &Msg<'_>, now: u64) {
        let proxy = m.code == 407;
        let hdr: &'static [u8] = if proxy {
            b"proxy-authenticate"
        } else {
            b"www-authenticate"
        };
        let Some(ch) = m.all(hdr).find_map(parse_challenge) else {
            self.finish(slot, Some(Failure::BadChallenge), now);
            return;
        };
        let p = Arc::clone(&self.params);
        let users = Arc::clone(&self.users);
        let Some(op) = self.ops.get_mut(slot as usize) else {
            return;
        };
        let (user, password) = users.get(op.user as usize);
        let (method, uri): (&[u8], Small<128>) = if op.kind == Kind::Register {
            (b"REGISTER", Small::fmt(format_args!("sip:{}", p.domain)))
        } else {
            (
                b"INVITE",
                Small::fmt(format_args!("sip:{}@{}", p.target, p.domain)),
            )
        };
        self.extra.clear();
        let cnonce = (u64::from(slot) << 32) | u64::from(op.gen);
        write_authorization(
            &mut self.extra,
            proxy,
            &ch,
            user,
            password,
            method,
            uri.as_bytes(),
            cnonce,
        );
        op.cseq += 1;
        op.state = State::Authed;
        self.send_request(slot, b"", now);
    }

    /// ACK for a final INVITE response: hop-by-hop for non-2xx (same branch as the INVITE, to
    /// the proxy), end-to-end for 2xx (new branch, remote target, Route set).
    fn ack(&mut self, slot: u32, m: &Msg<'_>, two_xx: bool) {
        let p = Arc::clone(&self.params);
        let users = Arc::clone(&self.users);
        let Some(op) = self.ops.get_mut(slot as usize) else {
            return;
        };
        let (user, _) = users.get(op.user as usize);
        let u = String::from_utf8_lossy(user);
        let ast = op.kind == Kind::AsteriskCall;
        let ip = self
            .socks
            .local(op.sock)
            .map(|a| *a.ip())
            .unwrap_or(Ipv4Addr::LOCALHOST);
        let from_uri: Small<128> = if ast {
            Small::fmt(format_args!("sip:asterisk@{ip}"))
        } else {
            Small::fmt(format_args!("sip:{u}@{}", p.domain))
        };
        let ruri: Small<128> = if ast {
            Small::fmt(format_args!("sip:{u}@{}", p.asterisk_proxy))
        } else {
            Small::fmt(format_args!("sip:{}@{}", p.target, p.domain))
        };
        let to = m.first(b"to").unwrap_or_default();
        let id = Identity {
            user: if ast { b"asterisk" } else { user },
            from_uri: from_uri.as_bytes(),
            to_uri: b"",
            local: self.socks.local_txt(op.sock),
            wire: self.socks.wire(op.sock),
            slot,
            gen: op.gen,
        };
        let (target, routes, tag) = if two_xx && !op.target.is_empty() {
            (&op.target[..], &op.routes[..], b'a')
        } else {
            (ruri.as_bytes(), &b""[..], b'r')
        };
        compose(
            &mut self.scratch,
            &id,
            op.call_id.as_bytes(),
            to,
            b"ACK",
            target,
            m.cseq,
            tag,
            routes,
            None,
        );
        let dst = dst_for(&p, self.ast_sock, op.sock);
        self.tx.push(op.sock, dst, &self.scratch);
    }

    /// Sends BYE in the op's dialog (retransmitted like any non-INVITE).
    pub(super) fn send_in_dialog(&mut self, slot: u32, method: &[u8], now: u64) {
        let p = Arc::clone(&self.params);
        let users = Arc::clone(&self.users);
        let Some(op) = self.ops.get_mut(slot as usize) else {
            return;
        };
        let (user, _) = users.get(op.user as usize);
        let ast = op.kind == Kind::AsteriskCall;
        let ip = self
            .socks
            .local(op.sock)
            .map(|a| *a.ip())
            .unwrap_or(Ipv4Addr::LOCALHOST);
        let from_uri: Small<128> = if ast {
            Small::fmt(format_args!("sip:asterisk@{ip}"))
        } else {
            Small::fmt(format_args!(
                "sip:{}@{}",
                String::from_utf8_lossy(user),
                p.domain
            ))
        };
        let id = Identity {
            user: if ast { b"asterisk" } else { user },
            from_uri: from_uri.as_bytes(),
            to_uri: b"",
            local: self.socks.local_txt(op.sock),
            wire: self.socks.wire(op.sock),
            slot,
            gen: op.gen,
        };
        op.cseq += 1;
        compose(
            &mut op.req,
            &id,
            op.call_id.as_bytes(),
            &op.to,
            method,
            &op.target,
            op.cseq,
            b'b',
            &op.routes,
            None,
        );
        op.state = State::Bye;
        op.t_req = now;
        op.rtx_iv = p.t1_us;
        op.rtx_cap = p.t2_us;
        op.rtx_at = if self.socks.wire(op.sock).reliable() {
            0
        } else {
            now + p.t1_us
        };
        let dst = dst_for(&p, self.ast_sock, op.sock);
        self.tx.push(op.sock, dst, &op.req);
        self.arm(slot);
    }

    /// A request reaching a phone socket: the called phone of an Asterisk call.
    pub(super) fn on_phone_request(
        &mut self,
        slot: u32,
        sock: u16,
        src: SocketAddrV4,
        m: &Msg<'_>,
        now: u64,
    ) {
        let t1 = self.params.t1_us;
        let Some(op) = self.ops.get_mut(slot as usize) else {
            return;
        };
        match m.method {
            b"INVITE" if op.phone_resp.is_empty() => {
                let users = Arc::clone(&self.users);
                let (user, _) = users.get(op.user as usize);
                let contact = Small::<128>::fmt(format_args!(
                    "sip:{}@{}{}",
                    String::from_utf8_lossy(user),
                    String::from_utf8_lossy(self.socks.local_txt(sock)),
                    String::from_utf8_lossy(self.socks.wire(sock).uri_param())
                ));
                let tag = Small::<32>::fmt(format_args!("p{slot}x{}", op.gen));
                write_response(
                    &mut self.scratch,
                    m,
                    b"180 Ringing",
                    tag.as_bytes(),
                    Some(contact.as_bytes()),
                    false,
                );
                self.tx.push(sock, src, &self.scratch);
                write_response(
                    &mut op.phone_resp,
                    m,
                    b"200 OK",
                    tag.as_bytes(),
                    Some(contact.as_bytes()),
                    true,
                );
                self.tx.push(sock, src, &op.phone_resp);
                op.phone_sock = sock;
                op.phone_dst = Some(src);
                op.phone_iv = t1;
                op.phone_rtx_at = now + t1;
                self.arm(slot);
            }
            b"INVITE" => {
                self.tx.push(sock, src, &op.phone_resp);
            }
            b"ACK" => op.phone_rtx_at = 0,
            b"BYE" => {
                op.phone_rtx_at = 0;
                write_response(&mut self.scratch, m, b"200 OK", b"late", None, false);
                self.tx.push(sock, src, &self.scratch);
            }
            _ => {
                write_response(
                    &mut self.scratch,
                    m,
                    b"405 Method Not Allowed",
                    b"x",
                    None,
                    false,
                );
                self.tx.push(sock, src, &self.scratch);
            }
        }
    }
}
