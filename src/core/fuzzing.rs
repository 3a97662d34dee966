//! The core's response path under arbitrary input: one driver shared by the fuzz target
//! `fuzz/fuzz_targets/core_response.rs` and the replay test `tests/core_response_fuzz.rs`.
//! Nothing here is used by the running proxy.
//!
//! [`fuzz_response`] makes a core with one live call (a phone's INVITE forwarded to
//! Asterisk, its client transaction waiting), builds a response to that INVITE from the
//! input — who sends it, which top branch it carries (the live one, the live one with its
//! MAC or a field changed, arbitrary text after our prefix, someone else's), status code,
//! CSeq method, extra header lines (more Vias) — and hands it to the core, then hands it
//! the raw input as a datagram too. Beyond "no panic" it checks the property the branch
//! MAC and the source check exist for: a response that is forged (our prefix, not our
//! MAC) or spoofed (not from the node the INVITE went to) makes the core send nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use super::branch::{check_branch, Checked, BRANCH_PREFIX};
use super::testing::{call_flow, response_into, test_config, Fakes, Recorder};
use super::{BranchKey, Core, Flow, Local, Now};

const PHONE: &str = "127.0.0.3:5062";
const AST: &str = "127.0.0.2:5080";

/// Where the fuzzed response comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The node the INVITE went to, on the upstream socket: the only legitimate sender.
    Node,
    /// The node's IP, another port.
    NodeOtherPort,
    /// An address that has nothing to do with the call.
    Attacker,
    /// The calling phone itself.
    Phone,
}

impl Source {
    fn of(b: u8) -> Source {
        match b % 4 {
            0 => Source::Node,
            1 => Source::NodeOtherPort,
            2 => Source::Attacker,
            _ => Source::Phone,
        }
    }

    fn flow(self, listen_side: bool) -> Flow {
        let remote = match self {
            Source::Node => AST,
            Source::NodeOtherPort => "127.0.0.2:5999",
            Source::Attacker => "192.0.2.66:5060",
            Source::Phone => PHONE,
        };
        let local = if listen_side {
            Local::Listen(0)
        } else {
            Local::Upstream
        };
        Flow::new(local, addr(remote))
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// One fuzz input through the response path (see the module doc). Panics when a forged or
/// spoofed response made the core send anything.
pub fn fuzz_response(data: &[u8]) {
    let [sel_src, sel_branch, sel_pos, c0, c1, sel_method, rest @ ..] = data else {
        return;
    };
    let fakes = Fakes::new(&["alice"]);
    let mut cfg = test_config(&[AST]);
    cfg.branch_key = BranchKey::new("fuzz");
    let cfg = Arc::new(cfg);
    let flow = call_flow(&cfg, 1, PHONE, AST);
    let mut core = Core::new(Arc::clone(&cfg), fakes.ports(), 0, addr("127.0.0.1:6000"));
    let mut rec = Recorder::default();
    let now = Now::same(1_700_000_000_000);
    core.handle_datagram(
        now,
        Flow::new(Local::Listen(0), addr(PHONE)),
        &flow.invite,
        &mut rec,
    );
    let Some(fwd) = rec.take().into_iter().find(|s| s.dst == addr(AST)) else {
        panic!("the INVITE was not forwarded");
    };
    let Some(live) = live_branch(&fwd.bytes) else {
        panic!("no branch in the forwarded INVITE");
    };

    // The top branch the response carries.
    let pos = usize::from(*sel_pos);
    let branch = match sel_branch % 6 {
        0 => live.clone(),
        1 => {
            // One MAC digit changed (the MAC is the last field).
            let mut b = live.clone().into_bytes();
            let i = b.len() - 1 - pos % 16;
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            String::from_utf8(b).unwrap_or_default()
        }
        2 => {
            // A field (worker, slot, gen, in or loop hash) changed, the MAC kept.
            let mut parts: Vec<String> = live.split('.').map(str::to_owned).collect();
            let i = 1 + pos % 5;
            if let Some(p) = parts.get_mut(i) {
                let v = u64::from_str_radix(p, 16).unwrap_or(0);
                *p = format!("{:x}", v ^ (1 + u64::from(*sel_pos)));
            }
            parts.join(".")
        }
        3 => {
            // Arbitrary text after our prefix (valid-looking fields, a guessed MAC...).
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            // (Hex digits and dots only: anything else would end the parameter early.)
            let tail: String = rest[..end.min(80)]
                .iter()
                .map(|&c| char::from(c))
                .filter(|c| c.is_ascii_hexdigit() || *c == '.')
                .collect();
            format!("{BRANCH_PREFIX}{tail}")
        }
        4 => {
            // The live fields with a MAC from the input.
            let mac = rest
                .iter()
                .take(8)
                .fold(0u64, |a, &b| a << 8 | u64::from(b));
            let cut = live.rfind('.').unwrap_or(live.len());
            format!("{}.{mac:016x}", &live[..cut])
        }
        _ => "z9hG4bKnotours1".to_owned(),
    };
    let code = 100 + (u16::from(*c0) << 8 | u16::from(*c1)) % 600;
    let method =
        ["INVITE", "CANCEL", "BYE", "OPTIONS", "REGISTER", "ACK"][usize::from(*sel_method % 6)];
    let extra: &[u8] = if sel_method & 0x80 != 0 { rest } else { b"" };

    let mut resp = Vec::new();
    let status = format!("SIP/2.0 {code} Fuzz\r\n");
    response_into(&fwd.bytes, status.as_bytes(), b"ast", extra, &mut resp);
    let text = String::from_utf8_lossy(&resp)
        .replacen(&live, &branch, 1)
        .replacen("CSeq: 2 INVITE", &format!("CSeq: 2 {method}"), 1);

    let src = Source::of(*sel_src);
    let flow_in = src.flow(sel_src & 0x80 != 0);
    let forged =
        branch != live && matches!(check_branch(&cfg.branch_key, &branch), Checked::Forged);
    let spoofed = src != Source::Node && branch == live;
    let before = core.stats().clone();
    core.handle_datagram(now, flow_in, text.as_bytes(), &mut rec);
    let sent = rec.take();
    if forged || spoofed {
        assert!(
            sent.is_empty(),
            "a {} response made the core send {:?}\n{text}",
            if forged { "forged" } else { "spoofed" },
            sent.iter().map(|s| s.text()).collect::<Vec<_>>()
        );
        let s = core.stats();
        let counted = s.dropped_forged + s.dropped_spoofed + s.dropped_malformed
            > before.dropped_forged + before.dropped_spoofed + before.dropped_malformed;
        assert!(counted, "a dropped response was not counted\n{text}");
    }
    // Whatever the input is, as a datagram from anyone: no panic.
    core.handle_datagram(now, flow_in, data, &mut rec);
    let mut raw = b"SIP/2.0 200 OK\r\n".to_vec();
    raw.extend_from_slice(rest);
    core.handle_datagram(now, flow_in, &raw, &mut rec);
    core.handle_timeout(now.plus(64_000), &mut rec);
}

/// The branch of the top Via of a forwarded request.
fn live_branch(request: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(request).ok()?;
    let via = text.lines().find(|l| l.starts_with("Via:"))?;
    let b = via.split(";branch=").nth(1)?;
    Some(b.split([';', ',', ' ']).next()?.to_owned())
}

/// Inputs that reach each case of [`fuzz_response`]: the seed corpus of the fuzz target and
/// the cases of the replay test.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for src in 0..4u8 {
        for branch in 0..6u8 {
            for (code, method) in [
                (200u16, 0u8),
                (180, 0),
                (486, 0),
                (200, 1),
                (200, 2),
                (100, 0),
            ] {
                let [hi, lo] = (code - 100).to_be_bytes();
                let mut s = vec![src, branch, 3, hi, lo, method];
                s.extend_from_slice(b"0.1.1.ffff.0.0123456789abcdef");
                out.push(s);
                let mut v = vec![src | 0x80, branch, 7, hi, lo, method | 0x80];
                v.extend_from_slice(b"Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKsf.0.0.1.0.0.0000000000000000\r\n");
                out.push(v);
            }
        }
    }
    out
}
