//! One proxy per listen address: refuse to share it by accident, hand it over on purpose.
//!
//! The workers bind their listen sockets with `SO_REUSEPORT`, so a second `sipfront run` on
//! the same address would start without complaint and get half of the phones. Before anything
//! binds, [`probe`] tries each listen address (UDP, and the TCP listeners of SIP over TCP and
//! TLS) once *without* `SO_REUSEPORT`: the kernel
//! refuses that bind (`EADDRINUSE`) while any other socket holds the address. The holder is
//! then looked up (`/proc/net/udp`, `udp6`, `tcp`, `tcp6` give the socket's inode, `/proc/PID/fd` the
//! processes holding that inode, via the `procfs` crate) so the error can name it.
//!
//! A busy address that no process holds — the sockets of a proxy that just exited linger
//! while the kernel tears down its io_uring rings — is probed again for up to two seconds.
//!
//! With `--takeover` (a deliberate zero-downtime handover, docs/operations.md) the new proxy
//! binds alongside — the kernel allows it for sockets of the same user that all set
//! `SO_REUSEPORT` — and once its workers run, [`signal_holders`] sends the old proxy SIGTERM:
//! it drains (new requests get 503 + Retry-After, transactions in flight finish) and exits.
//! Only processes with the same command name as this one are signalled.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The kind of socket a listen address is bound with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// UDP.
    Udp,
    /// A TCP listener (SIP over TCP or TLS).
    Tcp,
}

/// A process holding a socket on one of our listen addresses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Holder {
    pub pid: i32,
    /// The command line, space-separated (empty when it cannot be read).
    pub command: String,
    /// The short command name (`/proc/PID/comm`).
    pub name: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cmd = if self.command.is_empty() {
            &self.name
        } else {
            &self.command
        };
        write!(f, "PID {} ({cmd})", self.pid)
    }
}

/// Why the proxy must not start on its listen addresses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceError {
    /// Another socket holds the address; `holders` is empty when they could not be found
    /// (another user's process, or no access to `/proc`).
    #[error(
        "listen address {addr} is already in use{}; stop that process first, or start with \
         --takeover for a zero-downtime handover (docs/operations.md)",
        held_by(.holders)
    )]
    InUse {
        addr: SocketAddr,
        holders: Vec<Holder>,
    },
    /// `--takeover`, but the holder is not a sipfront (or could not be identified).
    #[error(
        "--takeover: listen address {addr} is held by {}, not by a {name}: not taking it over",
        describe(.holders)
    )]
    NotOurs {
        addr: SocketAddr,
        holders: Vec<Holder>,
        name: String,
    },
    /// The probe bind failed for another reason (address not on this host, permission).
    #[error("listen address {addr}: {source}")]
    Probe {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

fn held_by(holders: &[Holder]) -> String {
    if holders.is_empty() {
        " (by a process this user cannot see)".to_owned()
    } else {
        format!(" by {}", describe(holders))
    }
}

fn describe(holders: &[Holder]) -> String {
    if holders.is_empty() {
        return "an unidentified process".to_owned();
    }
    holders
        .iter()
        .map(Holder::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// How long an address held by no process may stay busy before it counts as in use: the
/// sockets of a proxy that just exited (`kill -9`, a restart) outlive it briefly while the
/// kernel tears its io_uring rings down.
const ORPHAN_GRACE: Duration = Duration::from_secs(2);
const ORPHAN_RECHECK: Duration = Duration::from_millis(50);

/// The processes holding each listen address that is in use (ports of 0 are skipped: they
/// bind an ephemeral port no one else holds). Empty when every address is free. An address
/// busy without a holder this user can see is checked again for up to [`ORPHAN_GRACE`].
pub fn probe(
    listen: &[(SocketAddr, Proto)],
) -> Result<Vec<(SocketAddr, Vec<Holder>)>, InstanceError> {
    let mut busy = Vec::new();
    for &(addr, proto) in listen.iter().filter(|(a, _)| a.port() != 0) {
        let deadline = Instant::now() + ORPHAN_GRACE;
        loop {
            match bind_alone(addr, proto) {
                // Dropped at once: the workers bind for real right after.
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    let holders = holders_of(addr, proto);
                    if holders.is_empty() && Instant::now() < deadline {
                        std::thread::sleep(ORPHAN_RECHECK);
                        continue;
                    }
                    busy.push((addr, holders));
                    break;
                }
                Err(source) => return Err(InstanceError::Probe { addr, source }),
            }
        }
    }
    Ok(busy)
}

/// Binds `addr` without `SO_REUSEPORT` (IPv6 only for an IPv6 address, as the workers do).
/// A TCP probe sets `SO_REUSEADDR`, so connections of an earlier process lingering in
/// TIME_WAIT do not count, while a listener still does.
fn bind_alone(addr: SocketAddr, proto: Proto) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = match proto {
        Proto::Udp => Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?,
        Proto::Tcp => {
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            s.set_reuse_address(true)?;
            s
        }
    };
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.bind(&addr.into())
}

/// Refuses busy addresses, or with `takeover` checks that each is held by a proxy like this
/// one; returns the processes to signal once this proxy serves.
pub fn check(
    busy: Vec<(SocketAddr, Vec<Holder>)>,
    takeover: bool,
) -> Result<Vec<Holder>, InstanceError> {
    let name = own_name();
    let mut to_signal = BTreeSet::new();
    for (addr, holders) in busy {
        if !takeover {
            return Err(InstanceError::InUse { addr, holders });
        }
        if holders.is_empty() || holders.iter().any(|h| h.name != name) {
            return Err(InstanceError::NotOurs {
                addr,
                holders,
                name,
            });
        }
        to_signal.extend(holders);
    }
    let me = std::process::id();
    Ok(to_signal
        .into_iter()
        .filter(|h| u32::try_from(h.pid).ok() != Some(me))
        .collect())
}

/// SIGTERM to each holder (the old proxy drains and exits); the ones that could not be
/// signalled, with the OS error.
pub fn signal_holders(holders: &[Holder]) -> Vec<(Holder, std::io::Error)> {
    let mut failed = Vec::new();
    for h in holders {
        // SAFETY: kill(2) only reads its two integer arguments.
        if unsafe { libc::kill(h.pid, libc::SIGTERM) } != 0 {
            failed.push((h.clone(), std::io::Error::last_os_error()));
        }
    }
    failed
}

/// This process's command name (`/proc/self/comm`).
fn own_name() -> String {
    procfs::process::Process::myself()
        .and_then(|p| p.stat())
        .map(|s| s.comm)
        .unwrap_or_default()
}

/// Whether a socket bound to `bound` conflicts with `want` (same port; same address, or
/// either is a wildcard of the same family).
fn overlaps(bound: SocketAddr, want: SocketAddr) -> bool {
    let same_family = matches!(
        (bound.ip(), want.ip()),
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_))
    );
    bound.port() == want.port()
        && same_family
        && (bound.ip() == want.ip() || bound.ip().is_unspecified() || want.ip().is_unspecified())
}

/// The inodes of the sockets of kind `proto` bound over `addr`.
fn inodes_on(addr: SocketAddr, proto: Proto) -> BTreeSet<u64> {
    let keep =
        |local: SocketAddr, inode: u64| (inode != 0 && overlaps(local, addr)).then_some(inode);
    match (proto, addr.is_ipv4()) {
        (Proto::Udp, v4) => if v4 {
            procfs::net::udp()
        } else {
            procfs::net::udp6()
        }
        .map(|t| {
            t.into_iter()
                .filter_map(|e| keep(e.local_address, e.inode))
                .collect()
        }),
        (Proto::Tcp, v4) => if v4 {
            procfs::net::tcp()
        } else {
            procfs::net::tcp6()
        }
        .map(|t| {
            t.into_iter()
                .filter(|e| e.state == procfs::net::TcpState::Listen)
                .filter_map(|e| keep(e.local_address, e.inode))
                .collect()
        }),
    }
    .unwrap_or_default()
}

/// The processes with a socket of kind `proto` on `addr` (best effort: what this user may
/// read).
fn holders_of(addr: SocketAddr, proto: Proto) -> Vec<Holder> {
    let inodes = inodes_on(addr, proto);
    if inodes.is_empty() {
        return Vec::new();
    }
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in all.flatten() {
        let Ok(fds) = p.fd() else { continue };
        let holds = fds.flatten().any(
            |fd| matches!(fd.target, procfs::process::FDTarget::Socket(i) if inodes.contains(&i)),
        );
        if holds {
            out.push(Holder {
                pid: p.pid,
                command: p.cmdline().map(|c| c.join(" ")).unwrap_or_default(),
                name: p.stat().map(|s| s.comm).unwrap_or_default(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn a_held_address_names_this_process() {
        let held = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = held.local_addr().expect("addr");
        let busy = probe(&[
            (addr, Proto::Udp),
            ("127.0.0.1:0".parse().unwrap(), Proto::Udp),
        ])
        .expect("probe");
        assert_eq!(busy.len(), 1, "{busy:?}");
        let (a, holders) = &busy[0];
        assert_eq!(*a, addr);
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(holders.iter().any(|h| h.pid == me), "{holders:?}");
        let err = check(busy.clone(), false).expect_err("in use");
        let text = err.to_string();
        assert!(
            text.contains(&addr.to_string()) && text.contains(&format!("PID {me}")),
            "{text}"
        );
        // With --takeover a holder of the same name (here: this very process) is accepted,
        // but never signalled.
        assert!(check(busy, true).expect("ours").is_empty());
        drop(held);
        assert!(probe(&[(addr, Proto::Udp)]).expect("probe").is_empty());
    }

    #[test]
    fn a_tcp_listener_is_found_too() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let addr = listener.local_addr().expect("addr");
        let busy = probe(&[(addr, Proto::Tcp)]).expect("probe");
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(
            busy.iter()
                .any(|(a, h)| *a == addr && h.iter().any(|h| h.pid == me)),
            "{busy:?}"
        );
        // The same port over UDP is free.
        assert!(probe(&[(addr, Proto::Udp)]).expect("probe").is_empty());
        drop(listener);
        assert!(probe(&[(addr, Proto::Tcp)]).expect("probe").is_empty());
    }

    #[test]
    fn takeover_refuses_a_stranger() {
        let addr: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let stranger = Holder {
            pid: 1,
            command: "kamailio -f /etc/kamailio.cfg".into(),
            name: "kamailio".into(),
        };
        let err = check(vec![(addr, vec![stranger])], true).expect_err("not ours");
        assert!(matches!(err, InstanceError::NotOurs { .. }));
        assert!(err.to_string().contains("PID 1 (kamailio"), "{err}");
        assert!(matches!(
            check(vec![(addr, Vec::new())], true),
            Err(InstanceError::NotOurs { .. })
        ));
    }

    #[test]
    fn wildcards_overlap_their_family_only() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(a("0.0.0.0:5060"), a("127.0.0.1:5060")));
        assert!(overlaps(a("127.0.0.1:5060"), a("0.0.0.0:5060")));
        assert!(!overlaps(a("127.0.0.1:5061"), a("127.0.0.1:5060")));
        assert!(!overlaps(a("127.0.0.2:5060"), a("127.0.0.1:5060")));
        assert!(!overlaps(a("[::]:5060"), a("127.0.0.1:5060")));
    }
}
