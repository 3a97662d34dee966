//! Allocation-free conversions between `std::net::SocketAddr` and the kernel's
//! `sockaddr_storage`, for the preallocated `msghdr`s of both backends.

use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// An all-zero `sockaddr_storage`.
pub(crate) fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (AF_UNSPEC) value.
    unsafe { mem::zeroed() }
}

/// Writes `addr` into `out`, returning the length to put in `msg_namelen`.
pub(crate) fn write_sockaddr(
    addr: SocketAddr,
    out: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { (out as *mut libc::sockaddr_storage as *mut libc::sockaddr_in).write(sin) };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { (out as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6).write(sin6) };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads the address the kernel wrote into `st` (`len` = returned `msg_namelen`).
/// Returns `None` for families other than IPv4/IPv6 or a short length.
pub(crate) fn read_sockaddr(
    st: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Option<SocketAddr> {
    let len = len as usize;
    match st.ss_family as libc::c_int {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: family and length say the storage holds a sockaddr_in.
            let sin =
                unsafe { &*(st as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: family and length say the storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(st as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Reads a socket address from raw `sockaddr` bytes (as io_uring multishot receives
/// deliver them). `None` for a short buffer or an unknown family.
pub(crate) fn read_sockaddr_bytes(bytes: &[u8]) -> Option<SocketAddr> {
    let mut st = zeroed_storage();
    let n = bytes.len().min(mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: copies n <= size_of(sockaddr_storage) bytes into the storage; any byte
    // pattern is a valid sockaddr_storage.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            (&mut st as *mut libc::sockaddr_storage).cast::<u8>(),
            n,
        )
    };
    read_sockaddr(&st, n as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_v4_and_v6() {
        for a in [
            "127.0.0.1:5060",
            "10.1.2.3:1",
            "[::1]:5061",
            "[fe80::1%2]:9",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut st = zeroed_storage();
            let len = write_sockaddr(addr, &mut st);
            assert_eq!(read_sockaddr(&st, len), Some(addr));
        }
    }

    #[test]
    fn reads_raw_bytes() {
        let addr: SocketAddr = "[::1]:5060".parse().unwrap();
        let mut st = zeroed_storage();
        let len = write_sockaddr(addr, &mut st) as usize;
        // SAFETY: st is len (<= its size) initialised bytes.
        let raw = unsafe {
            std::slice::from_raw_parts((&st as *const libc::sockaddr_storage).cast::<u8>(), len)
        };
        assert_eq!(read_sockaddr_bytes(raw), Some(addr));
        assert_eq!(read_sockaddr_bytes(&raw[..4]), None);
        assert_eq!(read_sockaddr_bytes(&[]), None);
    }

    #[test]
    fn rejects_unknown_family_and_short_len() {
        let st = zeroed_storage();
        assert_eq!(read_sockaddr(&st, 128), None);
        let mut st = zeroed_storage();
        write_sockaddr("127.0.0.1:1".parse().unwrap(), &mut st);
        assert_eq!(read_sockaddr(&st, 4), None);
    }
}
