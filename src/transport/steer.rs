//! Kernel steering of responses: a classic BPF program on each UDP listen address's
//! `SO_REUSEPORT` group that sends a response carrying our Via branch straight to the
//! worker named in it, so that worker does not have to be woken by a hand-off.
//!
//! The kernel runs the program (`SO_ATTACH_REUSEPORT_CBPF`) for every datagram addressed to
//! the group, with the packet data starting at the UDP payload, and delivers the datagram
//! to the socket whose index in the group is the program's return value; an index past the
//! last socket makes it fall back to its usual 4-tuple hash. Socket indices are the order
//! of binding, so worker `i`'s socket is index `i` as long as the group holds only this
//! process's sockets, bound in worker order ([`super::set`] checks that the address was
//! free before binding; when it was not — a `--takeover` binding alongside the old proxy —
//! steering stays off and any program the old proxy attached is detached).
//!
//! The program (built by [`response_program`]):
//! 1. a datagram not starting with `SIP/` (a request) → [`MISS`];
//! 2. scan offsets [`SCAN_FROM`]`..`[`SCAN_TO`] for the first `z9hG` (a 32-bit load and
//!    compare per offset); the packet length is checked once per [`CHUNK`] offsets so no
//!    load can run past the end (a load out of bounds would end the program with 0, i.e.
//!    worker 0);
//! 3. there, the rest of `z9hG4bKsf.` ([`BRANCH_PREFIX`]) and one or two lowercase hex
//!    digits and a dot → the worker index; anything else (someone else's branch first,
//!    three digits, no dot) → [`MISS`].
//!
//! Four instructions per offset: the kernel refused (`ENOMEM`, 6.18) a first version with
//! the whole prefix compared inline (eight per offset) past about 3,000 instructions.
//!
//! Nothing depends on it for correctness: `DatagramHandler::owner` still hands off a
//! datagram that reached the wrong worker (a branch past the window, a steering that is
//! off). The tests below run the program in a small interpreter (every truncation of a
//! response, random bytes: never a load out of bounds) and in the kernel, on real loopback
//! sockets.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use crate::core::BRANCH_PREFIX;

/// The program's "no opinion": past every socket index, so the kernel hashes the 4-tuple.
pub const MISS: u32 = u32::MAX;

/// First offset scanned for the branch prefix (`SIP/2.0 200 ` is 12 bytes).
pub const SCAN_FROM: u32 = 12;

/// The prefix must start before this offset to be found.
pub const SCAN_TO: u32 = 512;

/// Offsets scanned per packet-length check.
pub const CHUNK: u32 = 32;

/// Bytes needed from the prefix's first byte: the prefix (10), up to two hex digits and
/// the dot after them.
const NEED_AFTER: u32 = 13;

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic; the `libc` crate exports it only for Android).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
/// `SO_DETACH_REUSEPORT_BPF` (Linux 5.8).
const SO_DETACH_REUSEPORT_BPF: libc::c_int = 68;

// Classic BPF opcodes (linux/filter.h).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
const W: u16 = 0x00;
const H: u16 = 0x08;
const B: u16 = 0x10;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MEM: u16 = 0x60;
const LEN: u16 = 0x80;
const ADD: u16 = 0x00;
const SUB: u16 = 0x10;
const LSH: u16 = 0x60;
const JA: u16 = 0x00;
const JEQ: u16 = 0x10;
const JGT: u16 = 0x20;
const JGE: u16 = 0x30;
const K: u16 = 0x00;
const X: u16 = 0x08;
const RET_A: u16 = 0x10;
const TAX: u16 = 0x00;

/// A jump target while assembling: the next instruction or a label.
#[derive(Clone, Copy)]
enum To {
    Next,
    Label(usize),
}

/// Why the program could not be assembled (a bug in [`response_program`], caught by its
/// tests; at run time it only turns steering off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProgramError {
    /// A conditional jump farther than 255 instructions, or backwards.
    #[error("BPF jump from {from} to {to} out of range")]
    JumpRange { from: usize, to: usize },
    /// More instructions than the kernel accepts (`BPF_MAXINSNS`).
    #[error("BPF program of {0} instructions is too long")]
    TooLong(usize),
}

/// A tiny assembler with forward labels.
struct Asm {
    code: Vec<libc::sock_filter>,
    /// Instruction index, true target, false target (conditional) or target (`ja`).
    fixups: Vec<(usize, To, To)>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn new() -> Asm {
        Asm {
            code: Vec::with_capacity(4096),
            fixups: Vec::new(),
            labels: Vec::new(),
        }
    }

    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    fn bind(&mut self, label: usize) {
        self.labels[label] = Some(self.code.len());
    }

    fn op(&mut self, code: u16, k: u32) {
        self.code.push(libc::sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        });
    }

    /// A conditional jump (`code` includes `JMP` and `K`/`X`).
    fn jump(&mut self, code: u16, k: u32, jt: To, jf: To) {
        self.fixups.push((self.code.len(), jt, jf));
        self.op(code, k);
    }

    /// Unconditional jump.
    fn ja(&mut self, to: usize) {
        self.fixups.push((self.code.len(), To::Label(to), To::Next));
        self.op(JMP | JA, 0);
    }

    /// Resolve the labels: `ja` takes any forward distance, a conditional jump at most 255.
    fn finish(mut self) -> Result<Vec<libc::sock_filter>, ProgramError> {
        let len = self.code.len();
        for &(at, jt, jf) in &self.fixups {
            let rel = |to: To, max: usize| -> Result<u32, ProgramError> {
                let target = match to {
                    To::Next => at + 1,
                    To::Label(l) => self.labels[l].unwrap_or(usize::MAX),
                };
                match target.checked_sub(at + 1) {
                    Some(d) if d <= max && target < len => Ok(d as u32),
                    _ => Err(ProgramError::JumpRange {
                        from: at,
                        to: target,
                    }),
                }
            };
            if self.code[at].code == JMP | JA {
                self.code[at].k = rel(jt, len)?;
            } else {
                // Both fit in a u8 (max 255).
                self.code[at].jt = rel(jt, 255)? as u8;
                self.code[at].jf = rel(jf, 255)? as u8;
            }
        }
        if len > 4096 {
            return Err(ProgramError::TooLong(len));
        }
        Ok(self.code)
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The steering program (see the module doc).
pub fn response_program() -> Result<Vec<libc::sock_filter>, ProgramError> {
    let prefix = BRANCH_PREFIX.as_bytes();
    let mut a = Asm::new();
    let miss = a.label();
    let verify = a.label();
    // 1. A response: "SIP/" at offset 0 (the length checked first). The misses here and
    // in the scan are local `ret`s: the shared one at the end is out of a jump's reach.
    let long_enough = a.label();
    a.op(LD | W | LEN, 0);
    a.jump(
        JMP | JGE | K,
        SCAN_FROM + NEED_AFTER,
        To::Label(long_enough),
        To::Next,
    );
    a.op(RET | K, MISS);
    a.bind(long_enough);
    let response = a.label();
    a.op(LD | W | ABS, 0);
    a.jump(JMP | JEQ | K, be32(b"SIP/"), To::Label(response), To::Next);
    a.op(RET | K, MISS);
    a.bind(response);
    // 2. The scan; X holds the packet length throughout.
    a.op(LDX | W | LEN, 0);
    let mut k = SCAN_FROM;
    while k < SCAN_TO {
        if (k - SCAN_FROM).is_multiple_of(CHUNK) {
            let last = (k + CHUNK - 1).min(SCAN_TO - 1);
            // Needed > length: stop.
            let cont = a.label();
            a.op(LD | IMM, last + NEED_AFTER);
            a.jump(JMP | JGT | X, 0, To::Next, To::Label(cont));
            a.op(RET | K, MISS);
            a.bind(cont);
        }
        // The first "z9hG" decides: the rest is checked once, by indirect loads.
        let next = a.label();
        a.op(LD | W | ABS, k);
        a.jump(
            JMP | JEQ | K,
            be32(&prefix[0..4]),
            To::Next,
            To::Label(next),
        );
        a.op(LDX | IMM, k);
        a.ja(verify);
        a.bind(next);
        k += 1;
    }
    a.op(RET | K, MISS);
    // 3. X = offset of "z9hG"; the length check covered X + 12.
    a.bind(verify);
    a.op(LD | W | IND, 4);
    a.jump(
        JMP | JEQ | K,
        be32(&prefix[4..8]),
        To::Next,
        To::Label(miss),
    );
    a.op(LD | H | IND, 8);
    let tail = u32::from(u16::from_be_bytes([prefix[8], prefix[9]]));
    a.jump(JMP | JEQ | K, tail, To::Next, To::Label(miss));
    let store_first = a.label();
    let one_digit = a.label();
    a.op(LD | B | IND, 10);
    hex_digit(&mut a, miss, store_first);
    a.bind(store_first);
    a.op(ST, 0);
    a.op(LD | B | IND, 11);
    a.jump(
        JMP | JEQ | K,
        u32::from(b'.'),
        To::Label(one_digit),
        To::Next,
    );
    let store_second = a.label();
    hex_digit(&mut a, miss, store_second);
    a.bind(store_second);
    a.op(ST, 1);
    a.op(LD | B | IND, 12);
    a.jump(JMP | JEQ | K, u32::from(b'.'), To::Next, To::Label(miss));
    a.op(LD | MEM, 1);
    a.op(MISC | TAX, 0);
    a.op(LD | MEM, 0);
    a.op(ALU | LSH | K, 4);
    a.op(ALU | ADD | X, 0);
    a.op(RET | RET_A, 0);
    a.bind(one_digit);
    a.op(LD | MEM, 0);
    a.op(RET | RET_A, 0);
    a.bind(miss);
    a.op(RET | K, MISS);
    a.finish()
}

/// A (a byte) → its value as a lowercase hex digit, then jump to `done`; not a digit →
/// `miss`.
fn hex_digit(a: &mut Asm, miss: usize, done: usize) {
    let letter = a.label();
    a.jump(JMP | JGT | K, u32::from(b'f'), To::Label(miss), To::Next);
    a.jump(JMP | JGE | K, u32::from(b'a'), To::Label(letter), To::Next);
    a.jump(JMP | JGT | K, u32::from(b'9'), To::Label(miss), To::Next);
    a.jump(JMP | JGE | K, u32::from(b'0'), To::Next, To::Label(miss));
    a.op(ALU | SUB | K, u32::from(b'0'));
    a.ja(done);
    a.bind(letter);
    a.op(ALU | SUB | K, u32::from(b'a') - 10);
    a.ja(done);
}

/// Attach `prog` to the reuseport group of `sock` (which must be bound).
pub fn attach(sock: &impl AsRawFd, prog: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).map_err(|_| io::ErrorKind::InvalidInput)?,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `prog.len()` valid instructions for the duration of the
    // call (the kernel copies them); the option length is that of `sock_fprog`.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::from_ref(&fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Detach whatever program the reuseport group of `sock` has. `Ok(false)`: there was none.
pub fn detach(sock: &impl AsRawFd) -> io::Result<bool> {
    let zero: libc::c_int = 0;
    // SAFETY: the kernel ignores the value but reads an int-sized option.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_DETACH_REUSEPORT_BPF,
            std::ptr::from_ref(&zero).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOENT) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// One UDP listen address's reuseport group, after every worker bound it.
pub(crate) struct Group<'a> {
    pub(crate) addr: SocketAddr,
    /// Any member (worker 0's socket): a program attached through it serves the group.
    pub(crate) sock: &'a UdpSocket,
    /// The address was free before worker 0 bound it, so the group holds only our
    /// sockets, worker `i`'s at index `i`.
    pub(crate) fresh: bool,
}

/// What [`setup`] did on one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The program is attached.
    Steering,
    /// `steer_responses = false`.
    Off,
    /// The group also holds another process's sockets (a takeover): no program, and any
    /// program the other process attached is detached, since its indices are not ours.
    Shared,
    /// The kernel refused (too old, not permitted): the 4-tuple hash, as with `Off`.
    Failed,
}

/// Attach the steering program to every fresh group when `enabled` (the caller passes
/// false for a single worker); a failure is logged and leaves that group on the kernel's
/// hash. A shared group is detached whether enabled or not.
pub(crate) fn setup(groups: &[Group<'_>], enabled: bool) -> Vec<Outcome> {
    let prog = if enabled {
        match response_program() {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(error = %e, "response steering off: cannot build the BPF program");
                None
            }
        }
    } else {
        None
    };
    groups
        .iter()
        .map(|g| {
            if !g.fresh {
                match detach(g.sock) {
                    Ok(had) => tracing::warn!(
                        listen = %g.addr,
                        detached_other = had,
                        "response steering off: the address is shared with another process \
                         (takeover); it stays off until the next restart"
                    ),
                    Err(e) => tracing::warn!(
                        listen = %g.addr,
                        error = %e,
                        "response steering off: the address is shared with another process, \
                         and its steering program could not be detached"
                    ),
                }
                return Outcome::Shared;
            }
            let Some(prog) = &prog else {
                return if enabled {
                    Outcome::Failed
                } else {
                    Outcome::Off
                };
            };
            match attach(g.sock, prog) {
                Ok(()) => {
                    tracing::debug!(listen = %g.addr, insns = prog.len(), "response steering on");
                    Outcome::Steering
                }
                Err(e) => {
                    tracing::warn!(
                        listen = %g.addr,
                        error = %e,
                        "response steering off: the kernel refused the reuseport BPF program"
                    );
                    Outcome::Failed
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How a run of the interpreter ended.
    #[derive(Debug, PartialEq, Eq)]
    enum Run {
        Ret(u32),
        /// A load past the packet (the kernel would return 0: worker 0).
        OutOfBounds(usize),
    }

    /// Classic BPF over `pkt` (the instructions `response_program` uses).
    fn run(prog: &[libc::sock_filter], pkt: &[u8]) -> Run {
        let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
        let mut pc = 0usize;
        let load = |off: u32, size: usize| -> Option<u32> {
            let off = off as usize;
            let b = pkt.get(off..off.checked_add(size)?)?;
            Some(b.iter().fold(0u32, |v, &c| (v << 8) | u32::from(c)))
        };
        loop {
            let i = prog[pc];
            pc += 1;
            let size = match i.code & 0x18 {
                W => 4,
                H => 2,
                _ => 1,
            };
            match i.code & 0x07 {
                LD => match i.code & 0xe0 {
                    IMM => a = i.k,
                    LEN => a = pkt.len() as u32,
                    MEM => a = mem[i.k as usize],
                    ABS | IND => {
                        let off = if i.code & 0xe0 == IND { x + i.k } else { i.k };
                        match load(off, size) {
                            Some(v) => a = v,
                            None => return Run::OutOfBounds(pc - 1),
                        }
                    }
                    m => panic!("ld mode {m:#x}"),
                },
                LDX => match i.code & 0xe0 {
                    IMM => x = i.k,
                    LEN => x = pkt.len() as u32,
                    m => panic!("ldx mode {m:#x}"),
                },
                ST => mem[i.k as usize] = a,
                ALU => {
                    let v = if i.code & X != 0 { x } else { i.k };
                    a = match i.code & 0xf0 {
                        ADD => a.wrapping_add(v),
                        SUB => a.wrapping_sub(v),
                        LSH => a << v,
                        op => panic!("alu {op:#x}"),
                    };
                }
                JMP => {
                    let v = if i.code & X != 0 { x } else { i.k };
                    let op = i.code & 0xf0;
                    if op == JA {
                        pc += i.k as usize;
                        continue;
                    }
                    let taken = match op {
                        JEQ => a == v,
                        JGT => a > v,
                        JGE => a >= v,
                        op => panic!("jmp {op:#x}"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                RET => return Run::Ret(if i.code & RET_A != 0 { a } else { i.k }),
                MISC => x = a,
                c => panic!("class {c:#x}"),
            }
        }
    }

    fn response(worker_hex: &str, pad: usize) -> Vec<u8> {
        format!(
            "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5060{};rport=5060;branch=\
             z9hG4bKsf.{worker_hex}.1a.2.0.0.0123456789abcdef\r\nVia: SIP/2.0/UDP \
             10.0.0.1;branch=z9hG4bKabc\r\nCall-ID: a@b\r\nCSeq: 1 INVITE\r\n\
             Content-Length: 0\r\n\r\n",
            " ".repeat(pad)
        )
        .into_bytes()
    }

    #[test]
    fn program_assembles_within_kernel_limits() {
        let prog = response_program().unwrap();
        assert!(prog.len() <= 4096, "{}", prog.len());
        assert_eq!(prog.last().unwrap().code & 0x07, RET);
    }

    #[test]
    fn responses_go_to_the_worker_in_the_branch() {
        let prog = response_program().unwrap();
        let cases: &[(&str, Vec<u8>, u32)] = &[
            ("one digit", response("1", 0), 1),
            ("zero", response("0", 0), 0),
            ("two digits", response("1f", 0), 31),
            ("letters", response("ab", 0), 0xab),
            ("three digits: hash", response("100", 0), MISS),
            ("uppercase: hash", response("A", 0), MISS),
            ("not hex: hash", response("g", 0), MISS),
            ("empty field: hash", response("", 0), MISS),
            ("late in the window", response("7", 430), 7),
            ("past the window", response("7", 460), MISS),
            (
                "a request",
                b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKsf.1.2.3.4.5.0123456789abcdef\r\n\r\n".to_vec(),
                MISS,
            ),
            (
                "foreign branch",
                b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK776asdhds\r\nCall-ID: x\r\n\r\n".to_vec(),
                MISS,
            ),
            (
                "someone else's branch first",
                b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKsf.1.2.3.4.5.0123456789abcdef\r\n\r\n".to_vec(),
                MISS,
            ),
            ("keepalive", b"\r\n\r\n".to_vec(), MISS),
            ("empty", Vec::new(), MISS),
        ];
        for (name, pkt, want) in cases {
            assert_eq!(run(&prog, pkt), Run::Ret(*want), "{name}");
        }
    }

    #[test]
    fn no_truncation_or_noise_makes_a_load_run_past_the_end() {
        let prog = response_program().unwrap();
        for pad in [0, 5, 31, 32, 33, 200, 380, 420, 440, 460] {
            let full = response("3", pad);
            for len in 0..=full.len() {
                match run(&prog, &full[..len]) {
                    Run::Ret(3 | MISS) => {}
                    other => panic!("pad {pad} len {len}: {other:?}"),
                }
            }
        }
        // Pseudo-random bytes behind "SIP/" with our prefix dropped in at random places.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let len = (next() % 700) as usize;
            let mut pkt: Vec<u8> = (0..len)
                .map(|_| b"z9hG4bKsf.0a1.\r\n"[(next() % 16) as usize])
                .collect();
            if len >= 4 {
                pkt[..4].copy_from_slice(b"SIP/");
            }
            if len > 40 && next() % 2 == 0 {
                let at = 4 + (next() as usize % (len - 20));
                pkt[at..at + 10].copy_from_slice(BRANCH_PREFIX.as_bytes());
            }
            let r = run(&prog, &pkt);
            assert!(
                matches!(r, Run::Ret(v) if v == MISS || v < 256),
                "{r:?} for {:?}",
                String::from_utf8_lossy(&pkt)
            );
        }
    }

    /// Reads what arrives on `socks` until `want` datagrams came (bounded wait); the count
    /// per socket.
    fn receive(socks: &[&UdpSocket], want: usize) -> Vec<usize> {
        let mut counts = vec![0; socks.len()];
        let mut buf = [0u8; 2048];
        let mut got = 0;
        while got < want {
            let mut fds: Vec<libc::pollfd> = socks
                .iter()
                .map(|s| libc::pollfd {
                    fd: s.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: `fds` is a valid array of `fds.len()` pollfds.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 5_000) };
            assert!(r > 0, "only {got} of {want} datagrams arrived: {counts:?}");
            for (i, s) in socks.iter().enumerate() {
                while s.recv_from(&mut buf).is_ok() {
                    counts[i] += 1;
                    got += 1;
                }
            }
        }
        counts
    }

    /// Sends `pkt` to `to` once from each of `n` fresh source ports.
    fn send_from_many(pkt: &[u8], to: SocketAddr, n: usize) {
        for _ in 0..n {
            let c = UdpSocket::bind("127.0.0.1:0").unwrap();
            c.send_to(pkt, to).unwrap();
        }
    }

    fn bind_group(workers: usize) -> (SocketAddr, Vec<super::super::socket::WorkerSockets>) {
        use super::super::socket::{bind_worker, resolve_listen};
        let cfg = super::super::TransportConfig::default();
        let (listen, _, w0) =
            resolve_listen(&["127.0.0.1:0".parse().unwrap()], 0, &[], &cfg).unwrap();
        let mut all = vec![w0];
        for i in 1..workers {
            all.push(bind_worker(i, &listen, 0, &[], &cfg).unwrap());
        }
        (listen[0], all)
    }

    #[test]
    fn the_kernel_delivers_responses_to_the_named_workers_socket() {
        let (addr, workers) = bind_group(3);
        let socks: Vec<&UdpSocket> = workers.iter().map(|w| &w.listen[0]).collect();
        let group = Group {
            addr,
            sock: socks[0],
            fresh: true,
        };
        assert_eq!(setup(&[group], true), [Outcome::Steering]);
        send_from_many(&response("1", 0), addr, 64);
        assert_eq!(receive(&socks, 64), [0, 64, 0]);
        send_from_many(&response("2", 0), addr, 64);
        assert_eq!(receive(&socks, 64), [0, 0, 64]);
        // Past the last socket, a request, a foreign branch: the 4-tuple hash spreads them.
        let request = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKsf.1.2\r\n\r\n";
        for pkt in [&response("7", 0)[..], &request[..]] {
            let counts = receive_after(&socks, pkt, addr, 96);
            assert!(counts.iter().all(|&c| c > 0), "not spread: {counts:?}");
        }
    }

    fn receive_after(socks: &[&UdpSocket], pkt: &[u8], to: SocketAddr, n: usize) -> Vec<usize> {
        send_from_many(pkt, to, n);
        receive(socks, n)
    }

    #[test]
    fn without_the_program_responses_are_spread() {
        let (addr, workers) = bind_group(2);
        let socks: Vec<&UdpSocket> = workers.iter().map(|w| &w.listen[0]).collect();
        let group = Group {
            addr,
            sock: socks[0],
            fresh: true,
        };
        assert_eq!(setup(&[group], false), [Outcome::Off]);
        let counts = receive_after(&socks, &response("1", 0), addr, 64);
        assert!(counts[0] > 0, "{counts:?}");
    }

    #[test]
    fn a_shared_group_is_detected_and_the_other_program_detached() {
        use super::super::socket::{bind_worker, udp_address_free};
        let (addr, old) = bind_group(2);
        let group = Group {
            addr,
            sock: &old[0].listen[0],
            fresh: true,
        };
        assert_eq!(setup(&[group], true), [Outcome::Steering]);
        // A second proxy taking the address over binds into the same group.
        assert!(!udp_address_free(addr));
        let cfg = super::super::TransportConfig::default();
        let new = bind_worker(0, &[addr], 0, &[], &cfg).unwrap();
        let group = Group {
            addr,
            sock: &new.listen[0],
            fresh: false,
        };
        assert_eq!(setup(&[group], true), [Outcome::Shared]);
        assert!(!detach(&new.listen[0]).unwrap(), "the old program is gone");
        assert!(udp_address_free("127.0.0.1:0".parse().unwrap()));
    }
}
