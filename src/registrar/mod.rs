//! Registrar: RFC 3261 §10.3 REGISTER processing, the shared location table, and its
//! write-behind persistence.
//!
//! Sans-IO: time comes in as `now_ms` (ms since the UNIX epoch), nothing here touches a
//! socket. Flow:
//! - REGISTER: the core parses and authenticates, fills a [`RegisterRequest`] and calls
//!   [`Registrar::register`], which applies the rules ([`rules`]) to the AOR's bindings in
//!   the striped [`table`] and writes the 200 OK's `Contact:` lines into the caller's
//!   buffer; the [`RegisterOutcome`] feeds REGFWD (`crate::asterisk`).
//! - Incoming call: [`Registrar::lookup`] gives each live [`Binding`] (destination address
//!   after the NAT rule, the proxy's local socket it registered through, Path to push as
//!   Route). [`SipEdge`] is this layer's SIP edge: the core's location port, which reads
//!   REGISTERs into [`RegisterRequest`]s and hands bindings out as flows.
//! - Timer tick: [`Registrar::expire`] removes due bindings via the per-stripe expiry index
//!   and reports AORs left empty (REGFWD sends Expires: 0), including those emptied since
//!   the last tick by an administrative [`Registrar::remove`] (a small bounded queue).
//! - NAT keepalives: [`Registrar::keepalive_scan`] walks the table slice by slice for the
//!   workers' keepalive cursors; [`Registrar::remove_where`] drops the bindings of a phone
//!   that stopped answering.
//! - Admin listing: [`Registrar::list`] pages through every AOR, one stripe lock at a time,
//!   resuming after the last key of the previous page.
//! - Persistence ([`persist`]): a background thread fed by a bounded channel writes changed
//!   AORs to SQLite (default) or MySQL (Kamailio `location` layout) at most every second;
//!   [`Persister::start`] reloads them at start.
//!
//! ```
//! use std::sync::Arc;
//! use sipfront::asterisk::{RegFwd, RegFwdSettings, RegisterMode, Via, branch_for};
//! use sipfront::registrar::*;
//! use sipfront::sip::Transport;
//!
//! let cfg = RegistrarConfig { persist: "none".into(), ..RegistrarConfig::default() };
//! let registrar = Arc::new(Registrar::new(cfg).unwrap());
//! let persister = Persister::start(&registrar, 0).unwrap(); // loads, then writes behind
//! let regfwd = RegFwd::new(RegFwdSettings {
//!     nodes: vec!["10.0.0.5:5060".parse().unwrap()],
//!     advertise: "10.0.0.1:5060".into(),
//!     mode: RegisterMode::All,
//!     refresh_min_interval_secs: None,
//!     user_agent: "sipfront".into(),
//!     max_users: 1_000_000,
//! })
//! .unwrap();
//! let now_ms = 1_764_159_377_000;
//!
//! // An authenticated REGISTER (the core fills this from the parsed message).
//! let contacts = [ContactInput { uri: "sip:alice@192.168.1.20:5060", expires: None, q: None }];
//! let req = RegisterRequest {
//!     aor: "alice@example.com", call_id: "abc@phone", cseq: 2, expires_header: Some(600),
//!     star: false, contacts: &contacts, source: "203.0.113.7:40000".parse().unwrap(),
//!     transport: Transport::Udp, socket: "10.0.0.1:5060".parse().unwrap(), conn: 0, path: &[],
//!     user_agent: Some("Phone/1.0"),
//! };
//! let mut contact_lines = Vec::with_capacity(512);
//! match registrar.register(&req, now_ms, &mut contact_lines) {
//!     Ok(outcome) => {
//!         // 200 OK: extra_headers = contact_lines (+ a Date header).
//!         assert_eq!(contact_lines, b"Contact: <sip:alice@192.168.1.20:5060>;expires=600\r\n");
//!         if let Some(fwd) = regfwd.on_register("alice", outcome.expires, outcome.changed, now_ms) {
//!             let mut out = Vec::with_capacity(1024);
//!             for (node, addr) in regfwd.target_nodes(&fwd) {
//!                 let branch = branch_for("w0", &fwd.call_id, fwd.cseq, node);
//!                 let via = Via { transport: "UDP", host: "10.0.0.1", port: 5071 };
//!                 regfwd.write(&fwd.to(addr, "alice"), via, branch.as_str(), None, &mut out).unwrap();
//!                 // ... start a UAC client transaction sending `out` to `addr`
//!             }
//!         }
//!     }
//!     Err(e) => {
//!         let (_code, _reason) = e.status(); // + e.write_headers(..) for Min-Expires
//!     }
//! }
//!
//! // Asterisk sends an INVITE for alice: where is she?
//! let mut dest = None;
//! let found = registrar.lookup("alice@example.com", now_ms, |b| {
//!     dest = Some((b.dest, b.socket)); // + b.uri as Request-URI, b.path as Route
//! });
//! assert_eq!(found, LookupResult::Found(1));
//! assert_eq!(dest, Some(("203.0.113.7:40000".parse().unwrap(), "10.0.0.1:5060".parse().unwrap())));
//!
//! // Timer tick: expire, and tell Asterisk about users left without a binding.
//! registrar.expire(now_ms + 601_000, |aor| {
//!     if let Some(fwd) = regfwd.on_aor_empty(aor_user(aor)) {
//!         assert_eq!(fwd.expires, 0); // write and send as above
//!     }
//! });
//! persister.stop().unwrap(); // SIGTERM path: final flush
//! ```

mod admin;
pub mod binding;
pub mod config;
mod edge;
pub mod error;
mod keepalive;
pub mod outbound;
pub mod persist;
pub mod rules;
pub mod slot;
pub mod table;
pub mod uri;

#[cfg(test)]
mod admin_tests;
#[cfg(test)]
mod outbound_tests;
#[cfg(test)]
mod tests;

pub use admin::{Page, Removal, MAX_PAGE, MAX_PENDING_UNREGISTERS};
pub use binding::{Binding, PathEntries};
pub use config::{ConfigError, NatMode, OnMaxContacts, RegistrarConfig};
pub use edge::SipEdge;
pub use error::RegisterError;
pub use keepalive::KEEPALIVE_SLICES;
pub use outbound::{OutboundContact, OutboundUse};
pub use persist::{PersistError, PersistStats, Persister};
pub use rules::{
    aor_user, ContactInput, LookupResult, RegisterOutcome, RegisterRequest, Registrar,
};
