//! One stored binding as owned values, converted from and to a table [`Slot`].

use std::net::SocketAddr;

use super::super::binding::Binding;
use super::super::slot::{Slot, SlotParts};
use super::PersistError;
use crate::sip::Transport;

/// A binding as a store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub aor: String,
    pub contact: String,
    /// Where requests go (the REGISTER's source when `nated`, else the Contact's address).
    pub dest: SocketAddr,
    pub transport: Transport,
    /// The proxy's local socket the REGISTER arrived on (`0.0.0.0:0` when a store did not
    /// know it: rows written by an older version).
    pub socket: SocketAddr,
    pub nated: bool,
    pub path: Vec<String>,
    pub expires_at_ms: u64,
    pub q: Option<u16>,
    pub call_id: String,
    pub cseq: u32,
    pub user_agent: String,
    pub since_s: u32,
    /// RFC 5626 `+sip.instance` ("" for none) and `reg-id` (0 for none).
    pub instance: String,
    pub reg_id: u32,
}

impl Row {
    pub(crate) fn from_binding(aor: &str, v: &Binding<'_>) -> Row {
        Row {
            aor: aor.to_owned(),
            contact: v.uri.to_owned(),
            dest: v.dest,
            transport: v.transport,
            socket: v.socket,
            nated: v.nated,
            path: v.path.map(str::to_owned).collect(),
            expires_at_ms: v.expires_at_ms,
            q: v.q,
            call_id: v.call_id.to_owned(),
            cseq: v.cseq,
            user_agent: v.user_agent().to_owned(),
            since_s: v.registered_at_s(),
            instance: v.instance().to_owned(),
            reg_id: v.reg_id().unwrap_or(0),
        }
    }

    pub(crate) fn to_slot(&self) -> Result<Slot, PersistError> {
        let path: Vec<&str> = self.path.iter().map(String::as_str).collect();
        Slot::new(&SlotParts {
            uri: &self.contact,
            call_id: &self.call_id,
            cseq: self.cseq,
            path: &path,
            user_agent: &self.user_agent,
            expires_at_ms: self.expires_at_ms,
            since_s: self.since_s,
            q: self.q,
            source: self.dest,
            transport: self.transport,
            socket: self.socket,
            // Connections do not survive a restart.
            conn: 0,
            nated: self.nated,
            instance: &self.instance,
            reg_id: self.reg_id,
        })
        .map_err(|_| PersistError::BadRow("contact, call-id or path too long"))
    }
}

/// The socket of a row whose store did not record it.
pub(crate) const UNKNOWN_SOCKET: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Path entries joined for a text column (entries never contain a line feed).
pub(crate) fn join_path(path: &[String]) -> String {
    path.join("\n")
}

pub(crate) fn split_path(s: &str) -> Vec<String> {
    s.split('\n')
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}
