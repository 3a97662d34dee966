//! One generator thread: its sockets, its slab of [`Op`]s, a timer wheel, and the loop that
//! starts operations at the paced rate, reads responses in `recvmmsg` batches, drives each op
//! (and, for Asterisk calls, plays the called phone), fires retransmissions and timeouts, and
//! flushes the queued datagrams with `sendmmsg`. Time: µs since the phase started.

use super::build::{write_response, write_route_set};
use super::digest::{parse_challenge, write_authorization};
use super::net::{RecvBatch, SendQueue, Sockets, Wire};
use super::op::{call_id, compose, new_run_id, parse_call_id, Identity, Kind, Op, Small, State};
use super::sip::Msg;
use super::stats::{Failure, Stats, Step};
use super::users::Users;
use super::wheel::TimerWheel;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Settings shared by every thread.
#[derive(Debug, Clone)]
pub struct Params {
    /// Where the phones send (the proxy's listen address for `wire`).
    pub proxy: SocketAddrV4,
    /// Where the Asterisk side of `asterisk-call` sends (the proxy's UDP address).
    pub asterisk_proxy: SocketAddrV4,
    /// The proxy's domain (REGISTER request URI, From/To host of the phones, digest uri).
    pub domain: String,
    /// The extension phones call in the `call` workload.
    pub target: String,
    pub expires: u32,
    pub t1_us: u64,
    pub t2_us: u64,
    pub op_timeout_us: u64,
    pub talk_us: u64,
    pub threads: u32,
    /// The phones' transport to the proxy (one connection per phone socket over TCP/TLS;
    /// the Asterisk side stays on UDP).
    pub wire: Wire,
    /// The TLS client configuration, for `Wire::Tls` and `Wire::Wss`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// One phase for one thread.
#[derive(Debug, Clone)]
pub struct Phase {
    pub id: u32,
    pub kind: Kind,
    /// Operations per second for this thread.
    pub rate: f64,
    pub count: u64,
    pub max_inflight: usize,
    /// Stop starting operations once one failed (here or, via `abort`, in another thread).
    pub stop_on_failure: bool,
    pub abort: Arc<AtomicBool>,
    /// Running totals of all threads, for the once-a-second progress lines.
    pub progress: Arc<Progress>,
}

/// Counters published by the workers once per loop turn (relaxed atomics).
#[derive(Debug, Default)]
pub struct Progress {
    pub started: AtomicU64,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub retransmits: AtomicU64,
}

impl Progress {
    /// `(started, ok, failed, retransmits)` now.
    pub fn snapshot(&self) -> [u64; 4] {
        [&self.started, &self.ok, &self.failed, &self.retransmits]
            .map(|a| a.load(Ordering::Relaxed))
    }
}

/// A generator thread's state; it survives phases (the phones keep their sockets).
#[derive(Debug)]
pub struct Worker {
    thread: u32,
    params: Arc<Params>,
    users: Arc<Users>,
    socks: Sockets,
    /// Phone sockets are 0..n_phone; the Asterisk socket (if any) is `n_phone`.
    n_phone: u16,
    ast_sock: Option<u16>,
    ops: Vec<Op>,
    free: Vec<u32>,
    live: usize,
    wheel: TimerWheel,
    tx: SendQueue,
    scratch: Vec<u8>,
    extra: Vec<u8>,
    stats: Stats,
    phase: u32,
    /// This worker's run id, in every Call-ID and branch (unique across runs).
    run: u32,
    clock: Instant,
}

/// The ports a worker binds.
#[derive(Debug, Clone, Copy)]
pub struct Bind {
    pub phone_ip: Ipv4Addr,
    pub phone_sockets: u16,
    /// The Asterisk side's IP (`asterisk-call`), bound on a free port.
    pub asterisk_ip: Option<Ipv4Addr>,
}

impl Worker {
    pub fn new(
        thread: u32,
        params: Arc<Params>,
        users: Arc<Users>,
        bind: Bind,
    ) -> std::io::Result<Worker> {
        let mut socks = Sockets::new()?;
        for _ in 0..bind.phone_sockets.max(1) {
            match params.wire {
                Wire::Udp => socks.bind(bind.phone_ip, 0)?,
                Wire::Tcp => socks.connect(bind.phone_ip, params.proxy, None, false)?,
                Wire::Tls => {
                    socks.connect(bind.phone_ip, params.proxy, params.tls.as_ref(), false)?
                }
                Wire::Ws => socks.connect(bind.phone_ip, params.proxy, None, true)?,
                Wire::Wss => {
                    socks.connect(bind.phone_ip, params.proxy, params.tls.as_ref(), true)?
                }
            };
        }
        let n_phone = socks.len() as u16;
        let ast_sock = bind.asterisk_ip.map(|ip| socks.bind(ip, 0)).transpose()?;
        Ok(Worker {
            thread,
            params,
            users,
            socks,
            n_phone,
            ast_sock,
            ops: Vec::new(),
            free: Vec::new(),
            live: 0,
            wheel: TimerWheel::new(1000, 8192, 0),
            tx: SendQueue::new(),
            scratch: Vec::with_capacity(2048),
            extra: Vec::with_capacity(1024),
            stats: Stats::new(),
            phase: 0,
            run: new_run_id(),
            clock: Instant::now(),
        })
    }

    fn now(&self) -> u64 {
        self.clock.elapsed().as_micros() as u64 + 1
    }

    /// Users this thread plays: `thread + threads * k`.
    fn users_here(&self) -> u64 {
        let (n, t, th) = (
            self.users.len() as u64,
            u64::from(self.thread),
            u64::from(self.params.threads.max(1)),
        );
        n.saturating_sub(t).div_ceil(th).max(1)
    }

    fn user_for(&self, k: u64) -> u32 {
        let th = u64::from(self.params.threads.max(1));
        (u64::from(self.thread) + th * (k % self.users_here())) as u32
    }

    fn sock_for_user(&self, user: u32) -> u16 {
        ((user / self.params.threads.max(1)) % u32::from(self.n_phone.max(1))) as u16
    }

    /// Users this thread registers in an `asterisk-call` run (each once).
    pub fn user_count(&self) -> u64 {
        self.users_here()
    }

    /// Runs one phase to the end (every op finished, failed or timed out) and returns its stats.
    pub fn run(&mut self, ph: &Phase) -> Stats {
        self.phase = ph.id;
        self.stats = Stats::new();
        self.clock = Instant::now();
        self.wheel = TimerWheel::new(1000, 8192, 0);
        let mut rx = RecvBatch::new();
        let mut ready = Vec::with_capacity(64);
        let mut due = Vec::with_capacity(1024);
        let mut started = 0u64;
        let pace_end = (ph.count as f64 / ph.rate.max(1e-3) * 1e6) as u64;
        let hard_end = pace_end + self.params.op_timeout_us + 2_000_000;
        let mut published = [0u64; 4];
        loop {
            let now_counts = [
                self.stats.started,
                self.stats.ok,
                self.stats.failed(),
                self.stats.retransmits,
            ];
            for (i, a) in [
                &ph.progress.started,
                &ph.progress.ok,
                &ph.progress.failed,
                &ph.progress.retransmits,
            ]
            .into_iter()
            .enumerate()
            {
                let (n, p) = (
                    now_counts.get(i).copied().unwrap_or(0),
                    published.get(i).copied().unwrap_or(0),
                );
                if n > p {
                    a.fetch_add(n - p, Ordering::Relaxed);
                }
            }
            published = now_counts;
            let now = self.now();
            let stopping = ph.abort.load(Ordering::Relaxed);
            if !stopping && started < ph.count {
                let target = ((now as f64 * ph.rate / 1e6) as u64 + 1).min(ph.count);
                // Bounded burst per turn, so responses keep being read when behind.
                let mut burst = 0;
                while started < target && burst < 2048 {
                    if self.live >= ph.max_inflight {
                        self.stats.fail(Failure::Backlog);
                    } else {
                        self.start(ph.kind, started, now);
                    }
                    started += 1;
                    burst += 1;
                }
            }
            self.wheel.expire(now, &mut due);
            for key in due.drain(..) {
                self.on_timer(key, now);
            }
            self.flush();
            if ph.stop_on_failure && self.stats.failed() > 0 {
                ph.abort.store(true, Ordering::Relaxed);
            }
            let done_starting = started >= ph.count || ph.abort.load(Ordering::Relaxed);
            if done_starting && self.live == 0 {
                break;
            }
            if now > hard_end {
                self.fail_all();
                break;
            }
            let next_start = ((started as f64) * 1e6 / ph.rate.max(1e-3)) as u64;
            let wait_ms = if !done_starting && next_start <= now {
                0
            } else {
                1
            };
            self.socks.wait(wait_ms, &mut ready);
            let now = self.now();
            for &s in &ready {
                for _ in 0..16 {
                    let n = rx.recv(&mut self.socks, s);
                    for i in 0..n {
                        if let Some((data, src)) = rx.get(i) {
                            self.on_datagram(s, src, data, now);
                        }
                    }
                    if n < super::net::BATCH {
                        break;
                    }
                }
            }
            self.flush();
        }
        std::mem::take(&mut self.stats)
    }

    fn flush(&mut self) {
        self.stats.send_errors += self.tx.flush(&mut self.socks);
    }

    fn fail_all(&mut self) {
        for i in 0..self.ops.len() {
            if let Some(w) = self
                .ops
                .get(i)
                .filter(|o| o.state != State::Free)
                .map(Op::waiting)
            {
                self.finish(i as u32, Some(Failure::Timeout(w)), 0);
            }
        }
    }

    fn start(&mut self, kind: Kind, k: u64, now: u64) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.ops.push(Op::new());
                self.ops.len() as u32 - 1
            }
        };
        let user = self.user_for(k);
        let sock = match kind {
            Kind::AsteriskCall => self.ast_sock.unwrap_or(0),
            _ => self.sock_for_user(user),
        };
        let (phase, thread, run) = (self.phase, self.thread, self.run);
        let timeout = self.params.op_timeout_us;
        let Some(op) = self.ops.get_mut(slot as usize) else {
            return;
        };
        op.gen = op.gen.wrapping_add(1);
        let cid = call_id(phase, thread, slot, op.gen, run);
        op.reset(kind, user, sock, cid, now, timeout);
        self.live += 1;
        self.stats.started += 1;
        self.stats.first_start_us = self.stats.first_start_us.min(now);
        self.stats.last_start_us = now;
        self.extra.clear();
        self.send_request(slot, b"", now);
    }

    /// Composes and sends the op's current request (first or authenticated), arming its
    /// retransmission; `extra` holds the credentials line if any.
    fn send_request(&mut self, slot: u32, method_override: &[u8], now: u64) {
        let p = Arc::clone(&self.params);
        let users = Arc::clone(&self.users);
        let Some(op) = self.ops.get_mut(slot as usize) else {
            return;
        };
        let (user, _) = users.get(op.user as usize);
        let local = self.socks.local_txt(op.sock);
        let wire = self.socks.wire(op.sock);
        let u = String::from_utf8_lossy(user);
        let (from_uri, to_uri, ruri, method) = match op.kind {
            Kind::Register => {
                let me = Small::<128>::fmt(format_args!("sip:{u}@{}", p.domain));
                (
                    me,
                    me,
                    Small::<128>::fmt(format_args!("sip:{}", p.domain)),
                    &b"REGISTER"[..],
                )
            }
            Kind::Call => (
                Small::fmt(format_args!("sip:{u}@{}", p.domain)),
                Small::fmt(format_args!("sip:{}@{}", p.target, p.domain)),
                Small::fmt(format_args!("sip:{}@{}", p.target, p.domain)),
                &b"INVITE"[..],
            ),
            Kind::AsteriskCall => {
                let ip = self
                    .socks
                    .local(op.sock)
                    .map(|a| *a.ip())
                    .unwrap_or(Ipv4Addr::LOCALHOST);
                let to = Small::<128>::fmt(format_args!("sip:{u}@{}", p.asterisk_proxy));
                (
                    Small::fmt(format_args!("sip:asterisk@{ip}")),
                    to,
                    to,
                    &b"INVITE"[..],
                )
            }
        };
        let method = if method_override.is_empty() {
            method
        } else {
            method_override
        };
        let id = Identity {
            user: if op.kind == Kind::AsteriskCall {
                b"asterisk"
            } else {
                user
            },
            from_uri: from_uri.as_bytes(),
            to_uri: to_uri.as_bytes(),
            local,
            wire,
            slot,
            gen: op.gen,
        };
        let expires = (op.kind == Kind::Register).then_some(p.expires);
        compose(
            &mut op.req,
            &id,
            op.call_id.as_bytes(),
            b"",
            method,
            ruri.as_bytes(),
            op.cseq,
            b'r',
            &self.extra,
            expires,
        );
        op.t_req = now;
        op.rtx_iv = p.t1_us;
        op.rtx_cap = if method == b"INVITE" {
            u64::MAX
        } else {
            p.t2_us
        };
        op.rtx_at = if wire.reliable() { 0 } else { now + p.t1_us };
        let dst = dst_for(&p, self.ast_sock, op.sock);
        self.tx.push(op.sock, dst, &op.req);
        self.arm(slot);
    }

    fn arm(&mut self, slot: u32) {
        let Some(op) = self.ops.get_mut(slot as usize) else {
            return;
        };
        op.timer_seq = op.timer_seq.wrapping_add(1);
        let key = u64::from(slot) | (u64::from(op.timer_seq) << 32);
        let at = op.next_deadline();
        self.wheel.insert(at, key);
    }

    fn finish(&mut self, slot: u32, failure: Option<Failure>, now: u64) {
        let Some(op) = self.ops.get_mut(slot as usize) else {
            return;
        };
        if op.state == State::Free {
            return;
        }
        match failure {
            None => {
                self.stats.ok += 1;
                self.stats.last_ok_us = now;
                self.stats.record(Step::Total, now.saturating_sub(op.t_op));
            }
            Some(f) => self.stats.fail(f),
        }
        op.state = State::Free;
        op.timer_seq = op.timer_seq.wrapping_add(1);
        self.free.push(slot);
        self.live -= 1;
    }

    fn on_timer(&mut self, key: u64, now: u64) {
        let slot = key as u32;
        let seq = (key >> 32) as u32;
        let Some(op) = self.ops.get_mut(slot as usize) else {
            return;
        };
        if op.state == State::Free || op.timer_seq != seq {
            return;
        }
        if now >= op.deadline {
            let w = op.waiting();
            self.finish(slot, Some(Failure::Timeout(w)), now);
            return;
        }
        if op.rtx_at != 0 && now >= op.rtx_at {
            let dst = dst_for(&self.params, self.ast_sock, op.sock);
            self.tx.push(op.sock, dst, &op.req);
            self.stats.retransmits += 1;
            op.rtx_iv = (op.rtx_iv * 2).min(op.rtx_cap);
            op.rtx_at = now + op.rtx_iv;
        }
        if op.phone_rtx_at != 0 && now >= op.phone_rtx_at {
            if let Some(dst) = op.phone_dst {
                self.tx.push(op.phone_sock, dst, &op.phone_resp);
                self.stats.retransmits += 1;
            }
            op.phone_iv = (op.phone_iv * 2).min(self.params.t2_us);
            op.phone_rtx_at = now + op.phone_iv;
        }
        if op.bye_at != 0 && now >= op.bye_at {
            op.bye_at = 0;
            self.send_in_dialog(slot, b"BYE", now);
            return;
        }
        self.arm(slot);
    }

    fn lookup(&self, m: &Msg<'_>) -> Option<u32> {
        let (phase, thread, slot, gen, run) = parse_call_id(m.call_id)?;
        let op = self.ops.get(slot as usize)?;
        (run == self.run
            && phase == self.phase
            && thread == self.thread
            && op.gen == gen
            && op.state != State::Free)
            .then_some(slot)
    }

    fn on_datagram(&mut self, sock: u16, src: SocketAddrV4, data: &[u8], now: u64) {
        let Ok(m) = Msg::parse(data) else {
            self.stats.stray += 1;
            return;
        };
        let Some(slot) = self.lookup(&m) else {
            if answer_unmatched(&m, &mut self.scratch) {
                self.tx.push(sock, src, &self.scratch);
            }
            if m.method != b"OPTIONS" {
                self.stats.stray += 1;
            }
            return;
        };
        if m.code == 0 {
            self.on_phone_request(slot, sock, src, &m, now);
        } else {
            self.on_response(slot, &m, now);
        }
    }
}

/// The answer of a phone (or of the Asterisk side) to a request that belongs to no live
/// operation, written into `out`; false when there is none to send (responses, ACK). OPTIONS
/// gets 200 (RFC 3261 §11.2: a proxy's keepalive pings, e.g. sipfront's `[nat]` keepalives,
/// remove the binding when unanswered); a late BYE 200 (the proxy waits for it); any other
/// request 481 inside a dialog (To tag) and 405 outside.
pub fn answer_unmatched(m: &Msg<'_>, out: &mut Vec<u8>) -> bool {
    if m.code != 0 || m.method == b"ACK" {
        return false;
    }
    let status: &[u8] = match m.method {
        b"OPTIONS" | b"BYE" => b"200 OK",
        _ if m.to_tag().is_some() => b"481 Call/Transaction Does Not Exist",
        _ => b"405 Method Not Allowed",
    };
    write_response(out, m, status, b"lg", None, false);
    true
}

/// Where socket `sock` sends to the proxy: the Asterisk socket to the UDP address, the
/// phones to theirs.
fn dst_for(p: &Params, ast_sock: Option<u16>, sock: u16) -> SocketAddrV4 {
    if Some(sock) == ast_sock {
        p.asterisk_proxy
    } else {
        p.proxy
    }
}

#[path = "dialog.rs"]
mod dialog;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_of_no_operation_are_answered() {
        let req = |method: &str, to: &str| {
            format!(
                "{method} sip:1001@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKk\r\n\
                 From: <sip:ping@sipfront.test>;tag=p\r\nTo: {to}\r\nCall-ID: ka1\r\nCSeq: 7 {method}\r\n\
                 Content-Length: 0\r\n\r\n"
            )
        };
        let mut out = Vec::new();
        for (method, to, status) in [
            ("OPTIONS", "<sip:1001@127.0.0.1:40000>", 200),
            ("BYE", "<sip:1001@x>;tag=a", 200),
            ("NOTIFY", "<sip:1001@x>;tag=a", 481),
            ("MESSAGE", "<sip:1001@x>", 405),
        ] {
            let data = req(method, to);
            let m = Msg::parse(data.as_bytes()).expect("parses");
            assert!(answer_unmatched(&m, &mut out), "{method}");
            let r = Msg::parse(&out).expect("the answer parses");
            assert_eq!(r.code, status, "{method}");
            assert_eq!((r.cseq, r.cseq_method), (7, method.as_bytes()));
            assert_eq!(r.call_id, b"ka1");
            assert!(r.to_tag().is_some(), "{method}: the answer has a To tag");
        }
        let ack = req("ACK", "<sip:1001@x>;tag=a");
        let m = Msg::parse(ack.as_bytes()).expect("parses");
        assert!(!answer_unmatched(&m, &mut out), "ACK is not answered");
        let resp = b"SIP/2.0 200 OK\r\nCall-ID: x\r\nCSeq: 1 BYE\r\n\r\n";
        let m = Msg::parse(resp).expect("parses");
        assert!(
            !answer_unmatched(&m, &mut out),
            "responses are not answered"
        );
    }
}
