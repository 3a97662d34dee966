//! The stand-in's I/O shell: one thread, two nonblocking UDP sockets (SIP and control), one
//! `poll(2)` loop. Each turn reads up to [`BATCH`] SIP datagrams into the engine, sends what it
//! produced, answers control commands, fires due timers and appends new event lines to the
//! `--events` file (flushed every turn so a test can read it right after a reply arrives).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};

use super::config::Config;
use super::control::ControlAction;
use super::engine::{Engine, Outbox};

/// Most SIP datagrams handled per loop turn before timers and control get a look in.
pub const BATCH: usize = 256;
/// Socket buffer size asked for (the kernel caps it at net.core.rmem_max/wmem_max).
const SOCKET_BUFFER: usize = 8 << 20;

/// I/O failures of the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open events file {path}: {source}")]
    Events {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// Milliseconds since the UNIX epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Binds a nonblocking UDP socket with large buffers.
pub fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, ServerError> {
    let bind = || -> std::io::Result<UdpSocket> {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        // Best effort: a smaller buffer only means more drops under overload.
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
        s.bind(&addr.into())?;
        s.set_nonblocking(true)?;
        Ok(s.into())
    };
    bind().map_err(|source| ServerError::Bind { addr, source })
}

/// Runs the stand-in until a `quit` control command. `ready` gets the bound SIP and control
/// addresses once both sockets are listening (the binary prints them).
pub fn run(
    cfg: Config,
    listen: SocketAddr,
    control: Option<SocketAddr>,
    ready: impl FnOnce(SocketAddr, Option<SocketAddr>),
) -> Result<(), ServerError> {
    let sip = bind_udp(listen)?;
    let ctl = control.map(bind_udp).transpose()?;
    let local = sip.local_addr()?;
    let ctl_addr = ctl.as_ref().map(UdpSocket::local_addr).transpose()?;
    let mut events: Option<File> = match &cfg.events {
        Some(path) => Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| ServerError::Events {
                    path: path.clone(),
                    source,
                })?,
        ),
        None => None,
    };
    let seed = now_ms() ^ u64::from(std::process::id()) << 20;
    let mut engine = Engine::new(cfg, local, seed);
    ready(local, ctl_addr);

    let mut buf = vec![0u8; 65_536];
    let mut out = Outbox::new();
    let mut reply = String::with_capacity(4096);
    loop {
        let now = now_ms();
        let timeout = engine
            .next_deadline_ms()
            .map_or(1000, |d| d.saturating_sub(now).min(1000)) as i32;
        let (sip_ready, ctl_ready) = wait_readable(&sip, ctl.as_ref(), timeout)?;

        if sip_ready {
            for _ in 0..BATCH {
                match sip.recv_from(&mut buf) {
                    Ok((n, src)) => {
                        let data = buf.get(..n).unwrap_or_default();
                        engine.handle_datagram(now_ms(), src, data, &mut out);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    // ICMP port unreachable from an earlier send, or EINTR: keep going.
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::ConnectionRefused | ErrorKind::Interrupted
                        ) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        engine.handle_timeout(now_ms(), &mut out);
        send_all(&sip, &mut out);

        if let (Some(ctl), true) = (&ctl, ctl_ready) {
            while let Ok((n, src)) = ctl.recv_from(&mut buf) {
                let cmd = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
                let action = engine.control(now_ms(), &cmd, &mut reply, &mut out);
                send_all(&sip, &mut out);
                flush_events(&mut engine, &mut events);
                let _ = ctl.send_to(reply.as_bytes(), src);
                if action == ControlAction::Quit {
                    return Ok(());
                }
            }
        }
        flush_events(&mut engine, &mut events);
    }
}

fn send_all(sock: &UdpSocket, out: &mut Outbox) {
    for (dst, bytes) in out.iter() {
        // A full send buffer drops the datagram; SIP over UDP retransmits.
        let _ = sock.send_to(bytes, dst);
    }
    out.clear();
}

fn flush_events(engine: &mut Engine, file: &mut Option<File>) {
    if let Some(f) = file {
        engine.drain_events(|lines| {
            let _ = f.write_all(lines);
        });
    } else {
        engine.drain_events(|_| {});
    }
}

/// Blocks until a socket is readable or `timeout_ms` passes; says which sockets are readable
/// (so a timer wake-up or a busy SIP socket costs no useless `recvfrom` on the other).
fn wait_readable(
    sip: &UdpSocket,
    ctl: Option<&UdpSocket>,
    timeout_ms: i32,
) -> std::io::Result<(bool, bool)> {
    let mut fds = [
        libc::pollfd {
            fd: sip.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: ctl.map_or(-1, AsRawFd::as_raw_fd),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a valid array of two initialised pollfd structs that outlives the call;
    // a negative fd is ignored by poll(2).
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e);
        }
        return Ok((false, false));
    }
    let ready = |p: &libc::pollfd| p.revents & (libc::POLLIN | libc::POLLERR) != 0;
    Ok((ready(&fds[0]), ready(&fds[1])))
}
