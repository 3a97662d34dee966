//! Process-wide logging: `tracing` to stderr with a filter that a reload can replace.
//!
//! [`init`] installs the subscriber once (the `sipfront run`/`demo` entry points call it);
//! [`set_level`] swaps the filter live (SIGHUP / `ctl reload`). `RUST_LOG`, when set,
//! overrides `[log] level` at start and on every reload, as documented.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

type Handle = reload::Handle<EnvFilter, Registry>;

static HANDLE: OnceLock<Handle> = OnceLock::new();

/// Why a log level could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("log.level: {0}")]
    BadFilter(#[from] tracing_subscriber::filter::ParseError),
    #[error("logging was not set up by sipfront (embedded use): level not changed")]
    NotInitialized,
    #[error("log.level: the logging subscriber is gone")]
    Gone(#[from] reload::Error),
}

/// What a reload did with `[log] level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelChange {
    /// The new filter is in force.
    Applied,
    /// `RUST_LOG` is set and takes precedence: nothing changed.
    OverriddenByEnv,
}

fn filter_for(level: &str) -> Result<(EnvFilter, LevelChange), LogError> {
    match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => Ok((EnvFilter::try_new(env)?, LevelChange::OverriddenByEnv)),
        _ => Ok((EnvFilter::try_new(level)?, LevelChange::Applied)),
    }
}

/// Install the stderr subscriber with `level` (or `RUST_LOG`); a bad filter falls back to
/// `info` (the config was validated before, so this is only a bad `RUST_LOG`). A second
/// call, or another subscriber already installed, leaves logging as it is.
pub fn init(level: &str) {
    let filter = filter_for(level)
        .map(|(f, _)| f)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (layer, handle) = reload::Layer::new(filter);
    let installed = tracing_subscriber::registry()
        .with(layer)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours only for a person at a terminal, never into journald or a file.
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .try_init()
        .is_ok();
    if installed {
        let _ = HANDLE.set(handle);
    }
}

/// Check that `level` is a valid filter (for config validation).
pub fn validate(level: &str) -> Result<(), tracing_subscriber::filter::ParseError> {
    EnvFilter::try_new(level).map(drop)
}

/// Replace the filter with `level` (unless `RUST_LOG` is set).
pub fn set_level(level: &str) -> Result<LevelChange, LogError> {
    let (filter, change) = filter_for(level)?;
    if change == LevelChange::OverriddenByEnv {
        return Ok(change);
    }
    let handle = HANDLE.get().ok_or(LogError::NotInitialized)?;
    handle.reload(filter)?;
    Ok(change)
}
