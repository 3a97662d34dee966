//! The generator's sockets: nonblocking UDP sockets on loopback (one per simulated port), or
//! for phones over TCP/TLS one connection to the proxy per simulated port ([`StreamConn`]);
//! an epoll set over them, batched receive with `recvmmsg(2)` and a send queue flushed with
//! `sendmmsg(2)` per UDP socket (written to the connection for a stream). Data flow:
//! [`Sockets::wait`] reports ready sockets, [`RecvBatch::recv`] drains up to [`BATCH`]
//! datagrams (or framed messages) from one of them into fixed buffers, the caller handles each
//! and queues answers in [`SendQueue`], then [`SendQueue::flush`].

use super::stream::StreamConn;
use rustls::ClientConfig;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

/// Datagrams per `recvmmsg`/`sendmmsg` call.
pub const BATCH: usize = 64;
/// Largest datagram the generator receives (its peers send < 2 kB).
pub const MAX_DGRAM: usize = 8192;

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn from_sockaddr(s: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)),
        u16::from_be(s.sin_port),
    )
}

/// The transport a phone socket speaks to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wire {
    #[default]
    Udp,
    Tcp,
    Tls,
    /// SIP over WebSocket (RFC 7118) on TCP.
    Ws,
    /// SIP over secure WebSocket, on TLS.
    Wss,
}

impl Wire {
    /// The Via sent-protocol transport.
    pub fn via(self) -> &'static [u8] {
        match self {
            Wire::Udp => b"UDP",
            Wire::Tcp => b"TCP",
            Wire::Tls => b"TLS",
            Wire::Ws => b"WS",
            Wire::Wss => b"WSS",
        }
    }

    /// The URI parameter a Contact on this transport carries.
    pub fn uri_param(self) -> &'static [u8] {
        match self {
            Wire::Udp => b"",
            Wire::Tcp => b";transport=tcp",
            Wire::Tls => b";transport=tls",
            Wire::Ws => b";transport=ws",
            Wire::Wss => b";transport=wss",
        }
    }

    /// Requests are not retransmitted over a reliable transport (RFC 3261 §17.1.1.2).
    pub fn reliable(self) -> bool {
        self != Wire::Udp
    }

    pub fn name(self) -> &'static str {
        match self {
            Wire::Udp => "udp",
            Wire::Tcp => "tcp",
            Wire::Tls => "tls",
            Wire::Ws => "ws",
            Wire::Wss => "wss",
        }
    }
}

#[derive(Debug)]
enum Sock {
    Udp(UdpSocket),
    Stream(Box<StreamConn>),
}

/// The sockets of one thread and their epoll set.
#[derive(Debug)]
pub struct Sockets {
    socks: Vec<Sock>,
    local: Vec<SocketAddrV4>,
    /// `ip:port` text of each socket (Via sent-by, Contact).
    local_txt: Vec<Vec<u8>>,
    epfd: OwnedFd,
}

impl Sockets {
    /// An empty set (no sockets yet).
    pub fn new() -> std::io::Result<Sockets> {
        // SAFETY: plain syscall; the fd is owned below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor we own.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Sockets {
            socks: Vec::new(),
            local: Vec::new(),
            local_txt: Vec::new(),
            epfd,
        })
    }

    /// Binds a nonblocking socket on `ip:port` (0 = any free port), 4 MiB buffers; returns its index.
    pub fn bind(&mut self, ip: Ipv4Addr, port: u16) -> std::io::Result<u16> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        let _ = s.set_recv_buffer_size(4 << 20);
        let _ = s.set_send_buffer_size(4 << 20);
        s.set_nonblocking(true)?;
        s.bind(&SocketAddr::from(SocketAddrV4::new(ip, port)).into())?;
        let sock: UdpSocket = s.into();
        let local = sock.local_addr()?;
        self.add(Sock::Udp(sock), local)
    }

    /// Opens a connection from `ip` to `proxy` over TCP, or TLS with `tls`, with a WebSocket
    /// on it if `websocket`; returns its index.
    pub fn connect(
        &mut self,
        ip: Ipv4Addr,
        proxy: SocketAddrV4,
        tls: Option<&Arc<ClientConfig>>,
        websocket: bool,
    ) -> std::io::Result<u16> {
        let conn = StreamConn::connect(ip, proxy, tls, websocket)?;
        let local = conn.local_addr()?;
        self.add(Sock::Stream(Box::new(conn)), local)
    }

    fn add(&mut self, sock: Sock, local: SocketAddr) -> std::io::Result<u16> {
        let local = match local {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => return Err(std::io::Error::other("IPv4 expected")),
        };
        let idx = u16::try_from(self.socks.len())
            .map_err(|_| std::io::Error::other("too many sockets"))?;
        let fd = match &sock {
            Sock::Udp(u) => u.as_raw_fd(),
            Sock::Stream(c) => c.fd(),
        };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: u64::from(idx),
        };
        // SAFETY: valid epoll fd, valid socket fd, ev lives across the call.
        if unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.local_txt.push(local.to_string().into_bytes());
        self.local.push(local);
        self.socks.push(sock);
        Ok(idx)
    }

    /// The transport of socket `i`.
    pub fn wire(&self, i: u16) -> Wire {
        match self.socks.get(usize::from(i)) {
            Some(Sock::Stream(c)) => c.wire(),
            _ => Wire::Udp,
        }
    }

    /// Connections the proxy closed (or that failed).
    pub fn closed_streams(&self) -> usize {
        self.socks
            .iter()
            .filter(|s| matches!(s, Sock::Stream(c) if c.is_closed()))
            .count()
    }

    fn stream(&mut self, i: u16) -> Option<&mut StreamConn> {
        match self.socks.get_mut(usize::from(i)) {
            Some(Sock::Stream(c)) => Some(c),
            _ => None,
        }
    }

    /// Writes what waits on any connection.
    fn flush_streams(&mut self) {
        for s in &mut self.socks {
            if let Sock::Stream(c) = s {
                if c.wants_write() {
                    c.flush();
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.socks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }

    pub fn local(&self, i: u16) -> Option<SocketAddrV4> {
        self.local.get(usize::from(i)).copied()
    }

    pub fn local_txt(&self, i: u16) -> &[u8] {
        self.local_txt
            .get(usize::from(i))
            .map(|v| &v[..])
            .unwrap_or_default()
    }

    fn udp_fd(&self, i: u16) -> Option<i32> {
        match self.socks.get(usize::from(i)) {
            Some(Sock::Udp(u)) => Some(u.as_raw_fd()),
            _ => None,
        }
    }

    /// Waits up to `timeout_ms` for readable sockets; their indexes go to `ready`.
    /// Connections holding whole messages already read count as ready without waiting.
    pub fn wait(&self, timeout_ms: i32, ready: &mut Vec<u16>) {
        ready.clear();
        for (i, s) in self.socks.iter().enumerate() {
            if matches!(s, Sock::Stream(c) if c.has_message()) {
                ready.push(i as u16);
            }
        }
        let timeout_ms = if ready.is_empty() { timeout_ms } else { 0 };
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 64];
        // SAFETY: evs is a valid array of 64 events.
        let n =
            unsafe { libc::epoll_wait(self.epfd.as_raw_fd(), evs.as_mut_ptr(), 64, timeout_ms) };
        for ev in evs.iter().take(usize::try_from(n).unwrap_or(0)) {
            let idx = ev.u64 as u16;
            if !ready.contains(&idx) {
                ready.push(idx);
            }
        }
    }
}

/// Receive buffers for one `recvmmsg` batch.
#[derive(Debug, Default)]
pub struct RecvBatch {
    buf: Vec<u8>,
    lens: Vec<usize>,
    srcs: Vec<SocketAddrV4>,
    /// One message cut off a connection (reused).
    msg: Vec<u8>,
}

impl RecvBatch {
    pub fn new() -> Self {
        RecvBatch {
            buf: vec![0; BATCH * MAX_DGRAM],
            lens: Vec::with_capacity(BATCH),
            srcs: Vec::with_capacity(BATCH),
            msg: Vec::with_capacity(MAX_DGRAM),
        }
    }

    /// Reads up to [`BATCH`] datagrams (messages, from a connection) from socket `sock`;
    /// returns how many (0 when none).
    pub fn recv(&mut self, socks: &mut Sockets, sock: u16) -> usize {
        self.lens.clear();
        self.srcs.clear();
        if self.buf.len() < BATCH * MAX_DGRAM {
            self.buf.resize(BATCH * MAX_DGRAM, 0);
        }
        if let Some(conn) = socks.stream(sock) {
            return self.recv_stream(conn);
        }
        let Some(fd) = socks.udp_fd(sock) else {
            return 0;
        };
        // SAFETY: zeroed sockaddr/iovec/mmsghdr are valid initial values.
        let mut names: [libc::sockaddr_in; BATCH] = unsafe { std::mem::zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, chunk) in self.buf.chunks_mut(MAX_DGRAM).take(BATCH).enumerate() {
            iovs[i] = libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: chunk.len(),
            };
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
            hdrs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_in).cast();
            hdrs[i].msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        // SAFETY: every header points at live buffers of the stated sizes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let n = usize::try_from(n).unwrap_or(0);
        for (h, name) in hdrs.iter().zip(&names).take(n) {
            self.lens.push(h.msg_len as usize);
            self.srcs.push(from_sockaddr(name));
        }
        n
    }

    fn recv_stream(&mut self, conn: &mut StreamConn) -> usize {
        let mut msg = std::mem::take(&mut self.msg);
        if !conn.has_message() {
            conn.fill();
        }
        let peer = conn.peer();
        for chunk in self.buf.chunks_mut(MAX_DGRAM).take(BATCH) {
            if !conn.next_message(&mut msg) {
                break;
            }
            // A message larger than a buffer slot is cut (the generator's peers send < 2 kB).
            let n = msg.len().min(chunk.len());
            if let (Some(dst), Some(src)) = (chunk.get_mut(..n), msg.get(..n)) {
                dst.copy_from_slice(src);
            }
            self.lens.push(n);
            self.srcs.push(peer);
        }
        self.msg = msg;
        self.lens.len()
    }

    /// Datagram `i` of the last batch and its source.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddrV4)> {
        let len = *self.lens.get(i)?;
        let start = i * MAX_DGRAM;
        Some((
            self.buf.get(start..start + len.min(MAX_DGRAM))?,
            *self.srcs.get(i)?,
        ))
    }
}

/// Datagrams waiting to be sent, in one buffer.
#[derive(Debug, Default)]
pub struct SendQueue {
    buf: Vec<u8>,
    items: Vec<(u16, u32, u32, SocketAddrV4)>,
}

impl SendQueue {
    pub fn new() -> Self {
        SendQueue {
            buf: Vec::with_capacity(1 << 20),
            items: Vec::with_capacity(4096),
        }
    }

    pub fn push(&mut self, sock: u16, dst: SocketAddrV4, bytes: &[u8]) {
        let start = self.buf.len() as u32;
        self.buf.extend_from_slice(bytes);
        self.items.push((sock, start, bytes.len() as u32, dst));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Sends everything, one `sendmmsg` per run of datagrams on the same socket (messages
    /// for a connection are written to it, what the socket does not take yet waits there);
    /// returns how many could not be sent (socket buffer full or error: they count as lost,
    /// the retransmission timers recover; a closed connection loses them).
    pub fn flush(&mut self, socks: &mut Sockets) -> u64 {
        self.items.sort_by_key(|it| it.0);
        let mut failed = 0u64;
        let mut i = 0;
        while i < self.items.len() {
            let sock = self.items.get(i).map(|it| it.0).unwrap_or(0);
            let run = self
                .items
                .get(i..)
                .unwrap_or_default()
                .iter()
                .take(BATCH)
                .take_while(|it| it.0 == sock)
                .count();
            if let Some(conn) = socks.stream(sock) {
                for &(_, start, len, _) in self.items.iter().skip(i).take(run) {
                    let bytes = self
                        .buf
                        .get(start as usize..(start + len) as usize)
                        .unwrap_or_default();
                    if !conn.queue(bytes) {
                        failed += 1;
                    }
                }
                i += run;
                continue;
            }
            let Some(fd) = socks.udp_fd(sock) else {
                failed += run as u64;
                i += run;
                continue;
            };
            // SAFETY: zeroed C structs are valid initial values.
            let mut names: [libc::sockaddr_in; BATCH] = unsafe { std::mem::zeroed() };
            let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for (k, &(_, start, len, dst)) in self.items.iter().skip(i).take(run).enumerate() {
                names[k] = sockaddr(dst);
                let base = self.buf.as_ptr().wrapping_add(start as usize);
                iovs[k] = libc::iovec {
                    iov_base: base as *mut libc::c_void,
                    iov_len: len as usize,
                };
                hdrs[k].msg_hdr.msg_iov = &mut iovs[k];
                hdrs[k].msg_hdr.msg_iovlen = 1;
                hdrs[k].msg_hdr.msg_name = (&mut names[k] as *mut libc::sockaddr_in).cast();
                hdrs[k].msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            let mut sent = 0usize;
            // Bounded: at most `run` calls, each sends >= 1 or we stop.
            while sent < run {
                // SAFETY: headers point at live buffers (self.buf is not touched meanwhile).
                let n = unsafe {
                    libc::sendmmsg(
                        fd,
                        hdrs.as_mut_ptr().wrapping_add(sent),
                        (run - sent) as u32,
                        0,
                    )
                };
                if n <= 0 {
                    break;
                }
                sent += n as usize;
            }
            failed += (run - sent) as u64;
            i += run;
        }
        self.items.clear();
        self.buf.clear();
        socks.flush_streams();
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_on_loopback() {
        let mut socks = Sockets::new().expect("epoll");
        let a = socks.bind(Ipv4Addr::LOCALHOST, 0).expect("bind a");
        let b = socks.bind(Ipv4Addr::LOCALHOST, 0).expect("bind b");
        let dst = socks.local(b).expect("addr");
        let mut q = SendQueue::new();
        for i in 0..100u8 {
            q.push(a, dst, &[i; 10]);
        }
        assert_eq!(q.flush(&mut socks), 0);
        let mut ready = Vec::new();
        let mut rx = RecvBatch::new();
        let mut got = 0;
        for _ in 0..50 {
            socks.wait(100, &mut ready);
            for &s in &ready {
                let n = rx.recv(&mut socks, s);
                for i in 0..n {
                    let (d, src) = rx.get(i).expect("datagram");
                    assert_eq!(d.len(), 10);
                    assert_eq!(Some(src), socks.local(a));
                }
                got += n;
            }
            if got == 100 {
                break;
            }
        }
        assert_eq!(got, 100);
    }
}
