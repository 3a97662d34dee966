//! An Asterisk stand-in: a small B2BUA test double for sipfront's tests and load runs.
//!
//! Asterisk cannot be installed here, so this plays its part behind the proxy: it accepts the
//! REGISTERs sipfront forwards (optionally challenging them), remembers `user → Contact`, and
//! on an INVITE for extension X either answers itself (IVR-like) or, like `Dial(SIP/X)`, calls
//! X's registered Contact (back through the proxy) and bridges the two legs.
//!
//! Data flow: [`server`] owns the sockets and the clock and feeds datagrams to the sans-IO
//! [`Engine`] (`engine.rs` dispatches; `register.rs` registrar; `call.rs` A-leg state machine;
//! `bridge.rs` B-leg and client transactions; `subscribe.rs` SUBSCRIBE/NOTIFY, PUBLISH and
//! MWI), which writes datagrams to send into an
//! [`Outbox`], bumps [`Stats`] and appends JSON [`events`]. [`control`] answers text commands
//! on a separate UDP port. Message reading and writing (`parse.rs`, `build.rs`) are private to
//! the stand-in and independent of sipfront's `sip` module.

mod bridge;
pub mod build;
pub mod call;
pub mod config;
pub mod control;
pub mod digest;
pub mod engine;
pub mod events;
pub mod parse;
pub mod register;
pub mod server;
mod subscribe;

pub use config::{Config, ConfigError, Mode};
pub use control::ControlAction;
pub use engine::{Engine, Outbox};
pub use events::Stats;
pub use register::{Binding, Registry};
pub use server::{run, ServerError};

#[cfg(test)]
mod tests;
