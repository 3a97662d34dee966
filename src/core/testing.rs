//! In-memory ports and a recording transmit sink for driving a [`Core`] on a virtual clock:
//! used by the core's unit tests, the allocation test and the core benchmark. Nothing here is
//! used by the running proxy.
//!
//! [`FakeAuth`] accepts digest credentials whose `response` is `"good"` for a known user
//! (the real digest check is tested in `auth`); it can be told to report users as not cached
//! so the lookup/park path runs. [`FakeGuard`] is a small token bucket and failure counter
//! per source (the real guard is tested in `guard` and end to end).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use crate::sip::{Contact, DigestCredentials};

use super::ports::{
    Admission, AuthCheck, AuthFailure, AuthPort, ContactTarget, FarmPort, FarmSender, GuardPort,
    KeepaliveTarget, Links, LocationPort, NodeAnswer, NodePick, Ports, RegFwdPort, RegFwdRequest,
    RegFwdSender, RegisterInput, RegisterReply, SentBy,
};
use super::{ConnId, CoreConfig, Flow, Local, MatchMode, Now, Transmit};
use crate::sip::Transport;
use crate::util::fnv::hash_parts;

/// One datagram the core sent.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The local socket it left from.
    pub sock: Local,
    pub dst: SocketAddr,
    pub bytes: Vec<u8>,
}

impl Sent {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.bytes).unwrap_or("<binary>")
    }
    /// The status code of a response, 0 for a request.
    pub fn code(&self) -> u16 {
        let t = self.text();
        t.strip_prefix("SIP/2.0 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }
    /// The method of a request ("" for a response).
    pub fn method(&self) -> &str {
        let t = self.text();
        if t.starts_with("SIP/2.0") {
            ""
        } else {
            t.split(' ').next().unwrap_or("")
        }
    }
    /// The first value of header `name` (case-insensitive, long form).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.text().split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
    /// Every value of header `name`, in order.
    pub fn headers(&self, name: &str) -> Vec<&str> {
        self.text()
            .split("\r\n")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
            .collect()
    }
}

/// A [`Transmit`] that records everything.
#[derive(Default)]
pub struct Recorder {
    pub sent: Vec<Sent>,
}

impl Recorder {
    pub fn take(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.sent)
    }
}

impl Transmit for Recorder {
    fn send(&mut self, to: Flow, bytes: &[u8]) {
        self.sent.push(Sent {
            sock: to.local,
            dst: to.remote,
            bytes: bytes.to_vec(),
        });
    }
}

/// A [`Transmit`] that only counts (for allocation and speed tests).
#[derive(Default)]
pub struct Counter {
    pub datagrams: usize,
    pub bytes: usize,
    /// The last datagram sent, kept in a reused buffer.
    pub last: Vec<u8>,
}

impl Transmit for Counter {
    fn send(&mut self, _to: Flow, bytes: &[u8]) {
        self.datagrams += 1;
        self.bytes += bytes.len();
        self.last.clear();
        self.last.extend_from_slice(bytes);
    }
}

/// Users and passwords; `response="good"` is the right answer.
pub struct FakeAuth {
    pub users: HashSet<String>,
    /// Users not yet in the "cache": the first check answers Lookup.
    pub uncached: Mutex<HashSet<String>>,
    /// Calls of `check` (digest work done).
    pub checks: std::sync::atomic::AtomicU64,
}

impl FakeAuth {
    pub fn new(users: &[&str]) -> Self {
        FakeAuth {
            users: users.iter().map(|u| u.to_string()).collect(),
            uncached: Mutex::new(HashSet::new()),
            checks: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl AuthPort for FakeAuth {
    fn write_challenge(
        &self,
        out: &mut Vec<u8>,
        proxy: bool,
        stale: bool,
        _now: u64,
        _src: IpAddr,
    ) {
        out.extend_from_slice(if proxy {
            b"Proxy-Authenticate: "
        } else {
            b"WWW-Authenticate: "
        });
        out.extend_from_slice(b"Digest realm=\"test\", nonce=\"n1\", qop=\"auth\"");
        if stale {
            out.extend_from_slice(b", stale=true");
        }
        out.extend_from_slice(b"\r\n");
    }

    fn check(
        &self,
        creds: &DigestCredentials<'_>,
        _m: &str,
        _u: &str,
        _now: u64,
        _src: IpAddr,
    ) -> AuthCheck {
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let user = creds.username.raw();
        if creds.nonce.raw() == "stale" {
            return AuthCheck::Challenge { stale: true };
        }
        if self
            .uncached
            .lock()
            .map(|s| s.contains(user))
            .unwrap_or(false)
        {
            return AuthCheck::Lookup;
        }
        if !self.users.contains(user) {
            return AuthCheck::Failed(AuthFailure::UnknownUser);
        }
        if creds.response.raw() == "replayed" {
            AuthCheck::Replayed
        } else if creds.response.raw() == "good" {
            AuthCheck::Ok
        } else {
            AuthCheck::Failed(AuthFailure::WrongPassword)
        }
    }

    fn user_known(&self, user: &str, _now: u64) -> bool {
        self.users.contains(user)
    }

    fn answer_challenge(
        &self,
        user: &str,
        _c: &[&[u8]],
        proxy: bool,
        _m: &str,
        uri: &str,
        out: &mut Vec<u8>,
    ) -> bool {
        if !self.users.contains(user) {
            return false;
        }
        out.extend_from_slice(if proxy {
            b"Proxy-Authorization: "
        } else {
            b"Authorization: "
        });
        out.extend_from_slice(
            format!("Digest username=\"{user}\", uri=\"{uri}\", response=\"good\"\r\n").as_bytes(),
        );
        true
    }
}

/// One fake binding: contact URI, the flow to reach it, expiry time (ms).
pub type FakeBinding = (String, Flow, u64);

/// A location table in a mutex: user → bindings.
#[derive(Default)]
pub struct FakeLocation {
    pub bindings: Mutex<HashMap<String, Vec<FakeBinding>>>,
    /// Whether the keepalive scan sees the bindings (off: no keepalives, as before them).
    pub keepalives: std::sync::atomic::AtomicBool,
    /// Cluster peers (`LocationPort::is_peer`); their bindings here are the ones reached
    /// through them (a flow to the peer), the others are local.
    /// Set once (a lock-free read: the benches measure the core, not this fake).
    pub peers: std::sync::OnceLock<Vec<SocketAddr>>,
}

impl FakeLocation {
    /// A binding reached at `dst` from the first listen address.
    pub fn add(&self, user: &str, uri: &str, dst: SocketAddr, expires_at_ms: u64) {
        self.add_on(user, uri, Flow::new(Local::Listen(0), dst), expires_at_ms);
    }

    /// A binding reached over `to`.
    pub fn add_on(&self, user: &str, uri: &str, to: Flow, expires_at_ms: u64) {
        if let Ok(mut b) = self.bindings.lock() {
            b.entry(user.to_owned())
                .or_default()
                .push((uri.to_owned(), to, expires_at_ms));
        }
    }
}

impl LocationPort for FakeLocation {
    fn register(
        &self,
        input: &RegisterInput<'_, '_, '_>,
        now_ms: u64,
        lines: &mut Vec<u8>,
    ) -> RegisterReply {
        let expires = input.msg.expires().ok().flatten().unwrap_or(3600);
        let Ok(mut b) = self.bindings.lock() else {
            return RegisterReply::Reject {
                code: 500,
                reason: "lock",
                min_expires: None,
            };
        };
        let list = b.entry(input.user.to_owned()).or_default();
        if input.replayed {
            // Retransmission of what is stored: list, change nothing; else challenge.
            if list.is_empty() {
                return RegisterReply::Challenge;
            }
            for (u, _, at) in list.iter() {
                let left = (at.saturating_sub(now_ms) / 1000) as u32;
                lines.extend_from_slice(format!("Contact: <{u}>;expires={left}\r\n").as_bytes());
            }
            return RegisterReply::Ok {
                granted: 0,
                changed: false,
            };
        }
        for c in input.msg.contacts().flatten() {
            if let Contact::Addr(na) = c {
                let Ok(e) = na.expires() else {
                    return RegisterReply::Reject {
                        code: 400,
                        reason: "Bad Request",
                        min_expires: None,
                    };
                };
                let e = e.unwrap_or(expires);
                if e > 0 && e < 60 {
                    return RegisterReply::Reject {
                        code: 423,
                        reason: "Interval Too Brief",
                        min_expires: Some(60),
                    };
                }
                list.retain(|(u, _, _)| u != na.uri);
                if e > 0 {
                    list.push((na.uri.to_owned(), input.from, now_ms + u64::from(e) * 1000));
                }
            }
        }
        let mut granted = 0;
        for (u, _, at) in list.iter() {
            let left = (at.saturating_sub(now_ms) / 1000) as u32;
            granted = granted.max(left);
            lines.extend_from_slice(format!("Contact: <{u}>;expires={left}\r\n").as_bytes());
        }
        RegisterReply::Ok {
            granted,
            changed: true,
        }
    }

    fn lookup(&self, user: &str, now_ms: u64, f: &mut dyn FnMut(&ContactTarget<'_>)) {
        if let Ok(b) = self.bindings.lock() {
            for (uri, to, at) in b.get(user).into_iter().flatten() {
                if *at > now_ms {
                    f(&ContactTarget {
                        uri,
                        to: *to,
                        path: &[],
                    });
                }
            }
        }
    }

    fn is_peer(&self, addr: SocketAddr) -> bool {
        self.peers.get().is_some_and(|p| p.contains(&addr))
    }

    fn lookup_local(&self, user: &str, now_ms: u64, f: &mut dyn FnMut(&ContactTarget<'_>)) {
        self.lookup(user, now_ms, &mut |c: &ContactTarget<'_>| {
            if !self.is_peer(c.to.remote) {
                f(c);
            }
        });
    }

    fn expire(&self, now_ms: u64, f: &mut dyn FnMut(&str)) {
        if let Ok(mut b) = self.bindings.lock() {
            for (user, list) in b.iter_mut() {
                let before = list.len();
                list.retain(|(_, _, at)| *at > now_ms);
                if before > 0 && list.is_empty() {
                    f(user);
                }
            }
        }
    }
    /// One slice holding every binding, each behind NAT (when `keepalives` is set).
    fn keepalive_slices(&self) -> u32 {
        u32::from(self.keepalives.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn keepalive_scan(
        &self,
        first: u32,
        end: u32,
        now_ms: u64,
        f: &mut dyn FnMut(&KeepaliveTarget<'_>),
    ) {
        if first > 0 || end == 0 {
            return;
        }
        if let Ok(b) = self.bindings.lock() {
            for (user, list) in b.iter() {
                for (uri, to, at) in list.iter().filter(|(_, _, at)| *at > now_ms) {
                    let _ = at;
                    f(&KeepaliveTarget {
                        user,
                        uri,
                        to: *to,
                        nated: true,
                    });
                }
            }
        }
    }

    fn remove_flow(&self, user: &str, flow: Flow, now_ms: u64) -> (usize, bool) {
        let Ok(mut b) = self.bindings.lock() else {
            return (0, false);
        };
        let Some(list) = b.get_mut(user) else {
            return (0, false);
        };
        let live = |l: &Vec<FakeBinding>| l.iter().filter(|(_, _, at)| *at > now_ms).count();
        let before = live(list);
        list.retain(|(_, to, at)| !(*to == flow && *at > now_ms));
        let after = live(list);
        (before - after, before > 0 && after == 0)
    }
}

/// Where [`FakeRegFwd`] sends (the first Asterisk node of the usual test topology).
pub const ASTERISK: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 5080);

/// Records forwarded-REGISTER decisions; writes a minimal REGISTER.
#[derive(Default)]
pub struct FakeRegFwd {
    pub results: Mutex<Vec<(String, SocketAddr, u16)>>,
    pub cseq: Mutex<u32>,
}

impl FakeRegFwd {
    fn send(&self, user: &str, expires: u32, out: &mut dyn RegFwdSender) {
        let cseq = {
            let mut c = self.cseq.lock().unwrap_or_else(|e| e.into_inner());
            *c += 1;
            *c
        };
        let call_id = format!("regfwd-{user}");
        out.send(&RegFwdRequest {
            node: ASTERISK,
            user,
            call_id: &call_id,
            from_tag: "f",
            cseq,
            expires,
        });
    }
}

impl RegFwdPort for FakeRegFwd {
    fn on_saved(&self, user: &str, granted: u32, _c: bool, _n: u64, out: &mut dyn RegFwdSender) {
        self.send(user, granted, out);
    }
    fn on_expired(&self, user: &str, _n: u64, out: &mut dyn RegFwdSender) {
        self.send(user, 0, out);
    }
    fn write(
        &self,
        req: &RegFwdRequest<'_>,
        via: &SentBy<'_>,
        branch: &str,
        authorization: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> bool {
        use std::io::Write;
        out.clear();
        let _ = write!(
            out,
            "REGISTER sip:{node} SIP/2.0\r\nVia: SIP/2.0/{t} {h}:{p};branch={branch}\r\nFrom: <sip:{u}@127.0.0.2>;tag={tag}\r\nTo: <sip:{u}@127.0.0.2>\r\nCall-ID: {cid}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{u}@127.0.0.1:5060>\r\nExpires: {e}\r\n",
            node = req.node,
            t = via.transport,
            h = via.host,
            p = via.port,
            u = req.user,
            tag = req.from_tag,
            cid = req.call_id,
            cseq = req.cseq,
            e = req.expires,
        );
        if let Some(a) = authorization {
            out.extend_from_slice(a);
        }
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        true
    }
    fn retry_cseq(&self, _user: &str, _call_id: &str, cseq: u32) -> u32 {
        let mut c = self.cseq.lock().unwrap_or_else(|e| e.into_inner());
        *c = (*c).max(cseq + 1);
        cseq + 1
    }
    fn on_result(
        &self,
        user: &str,
        _call_id: &str,
        node: SocketAddr,
        code: u16,
        _granted: Option<u32>,
    ) {
        if let Ok(mut r) = self.results.lock() {
            r.push((user.to_owned(), node, code));
        }
    }
}

/// A guard for core tests: a token bucket per source (`rate_pps`, `burst`; 0 = no limit),
/// a ban after `ban_after` failed authentications, a scanner list, exempt sources.
pub struct FakeGuard {
    pub rate_pps: u64,
    pub burst: u64,
    pub ban_after: u32,
    pub scanners: Vec<&'static str>,
    pub exempt: Vec<IpAddr>,
    state: Mutex<GuardState>,
}

#[derive(Default)]
struct GuardState {
    /// Tokens (in thousandths) and the time they were counted.
    buckets: HashMap<IpAddr, (u64, u64)>,
    failures: HashMap<IpAddr, u32>,
    banned: HashSet<IpAddr>,
}

impl FakeGuard {
    /// No rate limit, bans after 10 failures, `friendly-scanner` and `sipvicious` are
    /// scanners, the test Asterisk (127.0.0.2) is exempt.
    pub fn new() -> Self {
        FakeGuard {
            rate_pps: 0,
            burst: 0,
            ban_after: 10,
            scanners: vec!["friendly-scanner", "sipvicious"],
            exempt: vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))],
            state: Mutex::new(GuardState::default()),
        }
    }

    /// [`FakeGuard::new`] limited to `rate_pps` datagrams a second per source after a burst.
    pub fn with_rate(rate_pps: u64, burst: u64) -> Self {
        FakeGuard {
            rate_pps,
            burst,
            ..FakeGuard::new()
        }
    }
}

impl Default for FakeGuard {
    fn default() -> Self {
        FakeGuard::new()
    }
}

impl GuardPort for FakeGuard {
    fn admit(&self, ip: IpAddr, now_ms: u64) -> Admission {
        if self.exempt.contains(&ip) {
            return Admission::Admit;
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.banned.contains(&ip) {
            return Admission::Banned;
        }
        if self.rate_pps == 0 {
            return Admission::Admit;
        }
        let cap = self.burst * 1000;
        let (tokens, at) = st.buckets.entry(ip).or_insert((cap, now_ms));
        *tokens = (*tokens + now_ms.saturating_sub(*at) * self.rate_pps).min(cap);
        *at = now_ms;
        if *tokens >= 1000 {
            *tokens -= 1000;
            Admission::Admit
        } else {
            Admission::Limited
        }
    }
    fn is_scanner(&self, user_agent: &[u8]) -> bool {
        self.scanners.iter().any(|s| {
            user_agent
                .windows(s.len())
                .any(|w| w.eq_ignore_ascii_case(s.as_bytes()))
        })
    }
    fn is_exempt(&self, ip: IpAddr) -> bool {
        self.exempt.contains(&ip)
    }
    fn on_auth_success(&self, ip: IpAddr, _user: &str, _now_ms: u64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.failures.remove(&ip);
    }
    fn on_auth_failure(&self, ip: IpAddr, _user: &str, _now_ms: u64) -> bool {
        if self.exempt.contains(&ip) {
            return false;
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let n = st.failures.entry(ip).or_default();
        *n += 1;
        if *n >= self.ban_after {
            st.banned.insert(ip);
            return true;
        }
        false
    }
}

/// The Asterisk farm for core tests: a list of nodes (default [`ASTERISK`]), the first
/// choice the affinity key modulo their number, the next ones in list order; nodes can be
/// marked down (which moves the generation) or all busy; pings and replayed REGISTERs are
/// handed out at the next poll; answers are counted, the last one kept (no allocation,
/// so the allocation test can run with it).
pub struct FakeFarm {
    nodes: Mutex<Vec<SocketAddr>>,
    down: Mutex<Vec<SocketAddr>>,
    /// Every node busy, with this Retry-After.
    busy: Mutex<Option<u32>>,
    generation: std::sync::atomic::AtomicU64,
    /// Pings to hand out at the next poll: (node, seq).
    pub pings_due: Mutex<Vec<(SocketAddr, u32)>>,
    /// REGISTERs to replay at the next poll: (node, user).
    pub replays_due: Mutex<Vec<(SocketAddr, String)>>,
    /// Ping answers heard: (node, seq, code).
    pub ping_answers: Mutex<Vec<(SocketAddr, u32, u16)>>,
    pub answers: std::sync::atomic::AtomicU64,
    pub last_answer: Mutex<Option<NodeAnswer>>,
}

impl Default for FakeFarm {
    fn default() -> Self {
        FakeFarm {
            nodes: Mutex::new(vec![ASTERISK]),
            down: Mutex::new(Vec::new()),
            busy: Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
            pings_due: Mutex::new(Vec::new()),
            replays_due: Mutex::new(Vec::new()),
            ping_answers: Mutex::new(Vec::new()),
            answers: std::sync::atomic::AtomicU64::new(0),
            last_answer: Mutex::new(None),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeFarm {
    pub fn set_nodes(&self, nodes: &[&str]) {
        *lock(&self.nodes) = nodes.iter().filter_map(|a| a.parse().ok()).collect();
    }

    /// Mark `node` down (or up again); the generation moves either way.
    pub fn set_down(&self, node: SocketAddr, down: bool) {
        let mut d = lock(&self.down);
        d.retain(|n| *n != node);
        if down {
            d.push(node);
        }
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Every node busy (new calls get 503 with this Retry-After), or none.
    pub fn set_busy(&self, retry_after_secs: Option<u32>) {
        *lock(&self.busy) = retry_after_secs;
    }
}

impl FarmPort for FakeFarm {
    fn affinity(&self, user: &str, call_id: &str, subscription: bool) -> u64 {
        let key = if subscription { user } else { call_id };
        hash_parts(&[key.as_bytes()])
    }

    fn pick(&self, key: u64, tried: u64, _now_ms: u64) -> NodePick {
        if let Some(retry_after_secs) = *lock(&self.busy) {
            return NodePick::Busy { retry_after_secs };
        }
        let nodes = lock(&self.nodes);
        let down = lock(&self.down);
        let n = nodes.len().min(64);
        if n == 0 {
            return NodePick::NoNode;
        }
        let first = (key % n as u64) as usize;
        (0..n)
            .map(|k| (first + k) % n)
            .find(|&i| tried & (1 << i) == 0 && !down.contains(&nodes[i]))
            .map_or(NodePick::NoNode, |i| NodePick::Node {
                index: i as u8,
                addr: nodes[i],
            })
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn is_down(&self, node: SocketAddr) -> bool {
        lock(&self.down).contains(&node)
    }

    fn on_answer(&self, answer: &NodeAnswer, _now_ms: u64) {
        self.answers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *lock(&self.last_answer) = Some(*answer);
    }

    fn on_ping_answer(&self, node: SocketAddr, seq: u32, code: u16, _now_ms: u64) {
        lock(&self.ping_answers).push((node, seq, code));
    }

    fn poll(&self, _now: Now, out: &mut dyn FarmSender) -> u64 {
        let pings = std::mem::take(&mut *lock(&self.pings_due));
        for (node, seq) in pings {
            out.ping(node, seq);
        }
        let replays = std::mem::take(&mut *lock(&self.replays_due));
        for (node, user) in replays {
            let call_id = format!("replay-{user}");
            out.register(&RegFwdRequest {
                node,
                user: &user,
                call_id: &call_id,
                from_tag: "r",
                cseq: 7,
                expires: 600,
            });
        }
        u64::MAX
    }
}

/// The fakes, shared with the test so it can inspect and change them.
pub struct Fakes {
    pub auth: Arc<FakeAuth>,
    pub location: Arc<FakeLocation>,
    pub regfwd: Arc<FakeRegFwd>,
    /// No rate limit (tests and benches send many datagrams from one address at one
    /// virtual instant).
    pub guard: Arc<dyn GuardPort>,
    /// Stream connections the test opened and closed.
    pub links: Arc<FakeLinks>,
    /// The shutdown flag the cores see.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    pub farm: Arc<FakeFarm>,
}

/// Stream connections for core tests, by remote address; a closed one is forgotten (so
/// `is_open` says no).
#[derive(Default)]
pub struct FakeLinks {
    open: Mutex<HashMap<(Transport, SocketAddr), ConnId>>,
}

impl FakeLinks {
    /// Connection `conn` of `transport` from `remote` is open.
    pub fn open(&self, transport: Transport, remote: SocketAddr, conn: ConnId) {
        if let Ok(mut m) = self.open.lock() {
            m.insert((transport, remote), conn);
        }
    }

    /// Every connection from `remote` is closed.
    pub fn close(&self, remote: SocketAddr) {
        if let Ok(mut m) = self.open.lock() {
            m.retain(|(_, r), _| *r != remote);
        }
    }
}

impl Links for FakeLinks {
    fn is_open(&self, conn: ConnId) -> bool {
        self.open
            .lock()
            .map(|m| m.values().any(|c| *c == conn))
            .unwrap_or(false)
    }
    fn find(&self, transport: Transport, remote: SocketAddr) -> Option<ConnId> {
        self.open
            .lock()
            .ok()
            .and_then(|m| m.get(&(transport, remote)).copied())
    }
}

impl Fakes {
    pub fn new(users: &[&str]) -> Self {
        Fakes {
            auth: Arc::new(FakeAuth::new(users)),
            location: Arc::new(FakeLocation::default()),
            regfwd: Arc::new(FakeRegFwd::default()),
            guard: Arc::new(FakeGuard::new()),
            links: Arc::new(FakeLinks::default()),
            draining: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            farm: Arc::new(FakeFarm::default()),
        }
    }

    pub fn ports(&self) -> Ports {
        Ports {
            auth: self.auth.clone(),
            location: self.location.clone(),
            regfwd: self.regfwd.clone(),
            guard: self.guard.clone(),
            links: self.links.clone(),
            draining: self.draining.clone(),
            farm: self.farm.clone(),
        }
    }

    pub fn draining_flag(&self) -> &std::sync::atomic::AtomicBool {
        &self.draining
    }
}

/// The test topology: proxy 127.0.0.1:5060 (upstream 127.0.0.1:6000), Asterisk nodes given,
/// realm `test`, local domain `example.com`.
pub fn test_config(asterisk: &[&str]) -> CoreConfig {
    let nodes: Vec<SocketAddr> = asterisk.iter().filter_map(|a| a.parse().ok()).collect();
    let listen = [SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060)];
    let mut cfg = CoreConfig::new(&listen, &nodes, "test");
    cfg.match_mode = MatchMode::IpPort;
    cfg.derive_local_domains(&["example.com".to_owned()]);
    cfg.max_transactions = 1024;
    cfg
}

/// Build a response to `request` into `out` without allocating: status line, then the
/// request's Via, From, To (+ tag), Call-ID and CSeq lines.
pub fn response_into(
    request: &[u8],
    status: &[u8],
    to_tag: &[u8],
    extra: &[u8],
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(status);
    let mut lines = request.split(|&c| c == b'\n').skip(1);
    for line in &mut lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let name_end = line.iter().position(|&c| c == b':').unwrap_or(0);
        let name = &line[..name_end];
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        if is(b"via") || is(b"from") || is(b"call-id") || is(b"cseq") || is(b"record-route") {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        } else if is(b"to") {
            out.extend_from_slice(line);
            out.extend_from_slice(b";tag=");
            out.extend_from_slice(to_tag);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(extra);
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
}

/// The requests of one call: the phone's authenticated INVITE (with SDP), its ACK through
/// the proxy's Route, and Asterisk's BYE to the phone.
pub struct CallFlow {
    pub invite: Vec<u8>,
    pub ack: Vec<u8>,
    pub bye: Vec<u8>,
}

/// Call number `i` between `phone` and `ast` (addresses as text), for a proxy configured
/// with `cfg` (its Record-Route token goes into the ACK's Route).
pub fn call_flow(cfg: &CoreConfig, i: usize, phone: &str, ast: &str) -> CallFlow {
    let route = cfg.dialog_route(0, &format!("call-{i}@phone"));
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n";
    let invite = format!(
        "INVITE sip:600@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {phone};branch=z9hG4bKinv{i};rport\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@127.0.0.1>;tag=a{i}\r\nTo: <sip:600@127.0.0.1>\r\nCall-ID: call-{i}@phone\r\nCSeq: 2 INVITE\r\nContact: <sip:alice@127.0.0.3:5062>\r\nProxy-Authorization: Digest username=\"alice\", realm=\"test\", nonce=\"n1\", uri=\"sip:600@127.0.0.1\", response=\"good\", qop=auth, nc=00000001, cnonce=\"c\"\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    let ack = format!(
        "ACK sip:600@127.0.0.2:5080 SIP/2.0\r\nVia: SIP/2.0/UDP {phone};branch=z9hG4bKack{i};rport\r\nRoute: <{route}>\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@127.0.0.1>;tag=a{i}\r\nTo: <sip:600@127.0.0.1>;tag=ast{i}\r\nCall-ID: call-{i}@phone\r\nCSeq: 2 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    let bye = format!(
        "BYE sip:alice@127.0.0.3:5062 SIP/2.0\r\nVia: SIP/2.0/UDP {ast};branch=z9hG4bKbye{i};rport\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:600@127.0.0.1>;tag=ast{i}\r\nTo: \"Alice\" <sip:alice@127.0.0.1>;tag=a{i}\r\nCall-ID: call-{i}@phone\r\nCSeq: 10 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    CallFlow {
        invite: invite.into_bytes(),
        ack: ack.into_bytes(),
        bye: bye.into_bytes(),
    }
}

/// Plays one [`CallFlow`] through a core: the phone's INVITE, Asterisk's 180 and 200 (built
/// from the forwarded INVITE), the phone's ACK, Asterisk's BYE and the phone's 200 (built
/// from the forwarded BYE). Its buffers are reserved once, so a warm run allocates nothing.
pub struct CallDriver {
    pub phone: SocketAddr,
    pub ast: SocketAddr,
    fwd: Vec<u8>,
    resp: Vec<u8>,
}

impl CallDriver {
    pub fn new(phone: SocketAddr, ast: SocketAddr) -> Self {
        CallDriver {
            phone,
            ast,
            fwd: Vec::with_capacity(65_536),
            resp: Vec::with_capacity(65_536),
        }
    }

    /// One call at `now_ms`; `sink.last` must hold each forwarded request when it is needed.
    pub fn call(
        &mut self,
        core: &mut super::Core,
        flow: &CallFlow,
        now_ms: u64,
        sink: &mut Counter,
    ) {
        let now = Now::same(now_ms);
        let phone = Flow::new(Local::Listen(0), self.phone);
        let ast_up = Flow::new(Local::Upstream, self.ast);
        let ast = Flow::new(Local::Listen(0), self.ast);
        core.handle_datagram(now, phone, &flow.invite, sink);
        self.fwd.clear();
        self.fwd.extend_from_slice(&sink.last);
        response_into(
            &self.fwd,
            b"SIP/2.0 180 Ringing\r\n",
            b"ast",
            b"",
            &mut self.resp,
        );
        core.handle_datagram(now, ast_up, &self.resp, sink);
        response_into(
            &self.fwd,
            b"SIP/2.0 200 OK\r\n",
            b"ast",
            b"Contact: <sip:600@127.0.0.2:5080>\r\n",
            &mut self.resp,
        );
        core.handle_datagram(now, ast_up, &self.resp, sink);
        core.handle_datagram(now, phone, &flow.ack, sink);
        core.handle_datagram(now, ast, &flow.bye, sink);
        self.fwd.clear();
        self.fwd.extend_from_slice(&sink.last);
        response_into(&self.fwd, b"SIP/2.0 200 OK\r\n", b"a", b"", &mut self.resp);
        core.handle_datagram(now, phone, &self.resp, sink);
    }

    /// The last forwarded request seen (the BYE to the phone after [`CallDriver::call`]).
    pub fn last_forwarded(&self) -> &[u8] {
        &self.fwd
    }
}
