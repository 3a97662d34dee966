//! REGFWD: telling Asterisk that a phone is reachable through the proxy.
//!
//! After the registrar accepted a phone's REGISTER, the core asks [`RegFwd::on_register`]
//! whether to forward (throttle, first registration, change) and gets a [`Forward`]
//! (Expires, per-user Call-ID, From tag, CSeq, target nodes). For each target node it calls
//! [`RegFwd::write`] with [`Forward::to`] into its send buffer and runs a UAC client
//! transaction with it; on a 401/407 it computes the Authorization line, takes
//! [`RegFwd::retry_cseq`] and writes the same [`Outgoing`] again with it.
//! When the registrar's expiry empties an AOR, [`RegFwd::on_aor_empty`] yields the one
//! Expires: 0 REGISTER. [`message`] holds the exact wire format (the seed's tutorial).

pub mod message;
pub mod policy;

#[cfg(test)]
mod tests;

pub use message::{write_register, BuildError, RegisterMsg, Via};
pub use policy::{
    branch_for, Branch, Forward, Outgoing, RegFwd, RegFwdError, RegFwdSettings, RegFwdStats,
    RegisterMode, Tag, Targeting, Targets,
};
