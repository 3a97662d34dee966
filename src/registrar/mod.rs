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
//!   after the NAT rule, receiving worker, Path to push as Route).
//! - Timer tick: [`Registrar::expire`] removes due bindings via the per-stripe expiry index
//!   and reports AORs left empty (REGFWD sends Expires: 0).
//! - Persistence ([`persist`]): a background thread fed by a bounded channel writes changed
//!   AORs to SQLite (default) or MySQL (Kamailio `location` layout) at most every second;
//!   [`Persister::start`] reloads them at start.

pub mod binding;
pub mod config;
pub mod error;
pub mod persist;
pub mod rules;
pub mod table;

#[cfg(test)]
mod tests;

pub use binding::{Binding, PathEntries, Transport};
pub use config::{ConfigError, NatMode, OnMaxContacts, RegistrarConfig};
pub use error::RegisterError;
pub use persist::{PersistError, PersistStats, Persister};
pub use rules::{
    aor_user, write_date_header, ContactInput, LookupResult, RegisterOutcome, RegisterRequest,
    Registrar,
};
