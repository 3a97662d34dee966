//! The Asterisk side: the farm of nodes ([`Farm`]: choice, health probing, back-pressure,
//! drain, replay) and REGFWD, telling Asterisk that a phone is reachable through the proxy.
//!
//! REGFWD: after the registrar accepted a phone's REGISTER, the core asks
//! [`RegFwd::on_register`] whether to forward (throttle, first registration, change) and gets
//! a [`Forward`] (Expires, per-user Call-ID, From tag, CSeq). For each target node (the
//! farm's: every node not down, or the user's node in `hash` mode) it calls
//! [`RegFwd::write`] with [`Forward::to`] into its send buffer and runs a UAC client
//! transaction with it; on a 401/407 it computes the Authorization line, takes
//! [`RegFwd::retry_cseq`] and writes the same [`Outgoing`] again with it.
//! When the registrar's expiry empties an AOR, [`RegFwd::on_aor_empty`] yields the one
//! Expires: 0 REGISTER; when a node comes back, [`RegFwd::on_replay`] gives each of its
//! users' REGISTER again. [`message`] holds the exact wire format (the seed's tutorial).

mod farm;
mod hrw;
pub mod message;
pub mod policy;

#[cfg(test)]
mod tests;

pub use farm::{Affinity, Farm, FarmError, FarmSettings, NodeView, Pick, ReplayBatch, MAX_NODES};
pub use message::{write_register, BuildError, RegisterMsg, Via};
pub use policy::{
    branch_for, Branch, Forward, Outgoing, RegFwd, RegFwdError, RegFwdSettings, RegFwdStats,
    RegisterMode, Tag, Targeting, Targets,
};
