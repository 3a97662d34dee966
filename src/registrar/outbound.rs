//! RFC 5626 (SIP Outbound) at the registrar: a Contact's `+sip.instance` and `reg-id`, and
//! what they change.
//!
//! - A binding that carries an instance and a reg-id is keyed by them instead of by its
//!   Contact URI (§6): a REGISTER over a new flow with the same instance and reg-id
//!   replaces the old binding, whatever its Contact says.
//! - Its requests go over the flow it registered on (as for a NATed phone).
//! - The 200 echoes both in the binding's Contact line, and carries `Require: outbound`
//!   when outbound was applied to the request.
//! - Outbound is applied only when the registrar is the first hop (one Via) or the first
//!   Path entry carries `;ob` (its edge proxy supports outbound). Otherwise a REGISTER
//!   that asks for it (`reg-id` with `Supported: outbound`) gets 439 First Hop Lacks
//!   Outbound Support, and the reg-id of any other is ignored.
//!
//! The registrar here is also the edge proxy, so a phone talking to it directly is always
//! at the first hop.

use std::io::Write;

use super::slot::Slot;
use super::uri::same_contact;

/// The RFC 5626 parameters of one Contact of a REGISTER.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboundContact<'a> {
    /// `+sip.instance` as written (quotes included).
    pub instance: Option<&'a str>,
    /// `reg-id` (1..=2^31-1), applied only with an instance and when outbound applies.
    pub reg_id: Option<u32>,
}

/// What a REGISTER asked of outbound, and whether it may have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundUse {
    /// No Contact carries an instance with a reg-id.
    None,
    /// Applied: reg-ids are kept and the 200 carries `Require: outbound`.
    Applied,
    /// Asked for (reg-id and `Supported: outbound`) but the first hop is not ours: 439.
    FirstHopLacksSupport,
    /// A reg-id without the first hop's support nor `Supported: outbound`: ignored.
    Ignored,
}

/// Decide [`OutboundUse`] for a REGISTER whose contacts carry `contacts`, with `vias` Via
/// values, its first Path entry `first_path` (a name-addr), and whether it said
/// `Supported: outbound`.
pub fn outbound_use(
    contacts: &[OutboundContact<'_>],
    vias: usize,
    first_path: Option<&str>,
    supported: bool,
) -> OutboundUse {
    let asked = contacts
        .iter()
        .any(|c| c.instance.is_some() && c.reg_id.is_some());
    if !asked {
        return OutboundUse::None;
    }
    let first_hop = vias <= 1 && first_path.is_none();
    let edge_ob = first_path.is_some_and(path_has_ob);
    match (first_hop || edge_ob, supported) {
        (true, _) => OutboundUse::Applied,
        (false, true) => OutboundUse::FirstHopLacksSupport,
        (false, false) => OutboundUse::Ignored,
    }
}

/// Whether a Path entry's URI carries the `ob` parameter.
fn path_has_ob(entry: &str) -> bool {
    let uri = match entry.split_once('<') {
        Some((_, rest)) => rest.split('>').next().unwrap_or(""),
        None => entry,
    };
    uri.split(';').skip(1).any(|p| {
        p.split('=')
            .next()
            .is_some_and(|n| n.trim().eq_ignore_ascii_case("ob"))
    })
}

/// A `reg-id` value: a positive integer below 2^31 (RFC 5626 §13).
pub fn parse_reg_id(v: &str) -> Option<u32> {
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u32>().ok().filter(|&r| (1..1 << 31).contains(&r))
}

/// Whether the stored binding `s` is the one the Contact `uri` with `ob` names: by instance
/// and reg-id when it has both (§6), by instance alone when it has only that (RFC 5627),
/// else by Contact URI (RFC 3261 §10.3); a stored binding without an instance is still
/// matched by URI, so a phone that turns outbound on replaces its old binding.
pub(crate) fn same_binding(s: &Slot, uri: &str, ob: &OutboundContact<'_>) -> bool {
    let (instance, reg_id) = s.outbound();
    match ob.instance {
        Some(i) if !instance.is_empty() => instance == i && reg_id == ob.reg_id.unwrap_or(0),
        _ => {
            same_contact(s.uri(), uri)
                && (ob.instance.is_some() || instance.is_empty() || reg_id == 0)
        }
    }
}

/// Append `;+sip.instance=...;reg-id=N` for a binding that has them (the 200's Contact).
pub(crate) fn write_params(out: &mut Vec<u8>, instance: &str, reg_id: Option<u32>) {
    if instance.is_empty() {
        return;
    }
    out.extend_from_slice(b";+sip.instance=");
    out.extend_from_slice(instance.as_bytes());
    if let Some(r) = reg_id {
        // Writes into a Vec cannot fail.
        let _ = write!(out, ";reg-id={r}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INST: &str = "\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\"";

    #[test]
    fn outbound_applies_at_the_first_hop_or_behind_an_ob_edge() {
        let ob = [OutboundContact {
            instance: Some(INST),
            reg_id: Some(1),
        }];
        let plain = [OutboundContact::default()];
        let only_instance = [OutboundContact {
            instance: Some(INST),
            reg_id: None,
        }];
        let cases = [
            (&ob[..], 1, None, true, OutboundUse::Applied),
            (&ob[..], 1, None, false, OutboundUse::Applied),
            (
                &ob[..],
                2,
                Some("<sip:edge.example;lr;ob>"),
                true,
                OutboundUse::Applied,
            ),
            (
                &ob[..],
                2,
                Some("<sip:edge.example;lr>"),
                true,
                OutboundUse::FirstHopLacksSupport,
            ),
            (
                &ob[..],
                2,
                Some("<sip:edge.example;lr>"),
                false,
                OutboundUse::Ignored,
            ),
            (&ob[..], 2, None, true, OutboundUse::FirstHopLacksSupport),
            (&ob[..], 1, Some("sip:edge;ob"), false, OutboundUse::Applied),
            (&plain[..], 1, None, true, OutboundUse::None),
            (&only_instance[..], 1, None, true, OutboundUse::None),
        ];
        for (contacts, vias, path, supported, want) in cases {
            assert_eq!(
                outbound_use(contacts, vias, path, supported),
                want,
                "{vias} {path:?} {supported}"
            );
        }
    }

    #[test]
    fn reg_ids() {
        assert_eq!(parse_reg_id("1"), Some(1));
        assert_eq!(parse_reg_id("2147483647"), Some(2_147_483_647));
        for bad in ["0", "2147483648", "-1", "", "1a", "99999999999"] {
            assert_eq!(parse_reg_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn params_are_echoed() {
        let mut out = Vec::new();
        write_params(&mut out, INST, Some(2));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(";+sip.instance={INST};reg-id=2")
        );
        let mut out = Vec::new();
        write_params(&mut out, "", Some(2));
        assert!(out.is_empty());
    }
}
