//! Process-wide logging: `tracing` to stderr, as text or one JSON object per line
//! (`[log] format`), with a filter that a reload can replace.
//!
//! [`init`] installs the subscriber once (the `sipfront run`/`demo` entry points call it);
//! [`set_level`] swaps the filter live (SIGHUP / `ctl reload`). `RUST_LOG`, when set,
//! overrides `[log] level` at start and on every reload, as documented. [`validate`] is
//! stricter than tracing's own filter parser, which takes any word as a target name (so
//! `level = "verbose"` would silently mean "only the target `verbose`", i.e. no log at all).

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

/// `[log] format`: how each event is written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event (colours only at a terminal).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`), for log
    /// collectors.
    Json,
}

/// Install the stderr subscriber with `level` (or `RUST_LOG`) in `format`; a bad filter
/// falls back to `info` (the config was validated before, so this is only a bad
/// `RUST_LOG`). A second call, or another subscriber already installed, leaves logging as
/// it is.
pub fn init(level: &str, format: LogFormat) {
    let filter = filter_for(level)
        .map(|(f, _)| f)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (layer, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(layer);
    let installed = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colours only for a person at a terminal, never into journald or a file.
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    }
    .is_ok();
    if installed {
        let _ = HANDLE.set(handle);
    }
}

/// The level names a filter directive may use.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Why a `[log] level` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LevelError {
    #[error("is empty (expected a level: trace, debug, info, warn, error or off)")]
    Empty,
    #[error("{0:?} is not a level (expected trace, debug, info, warn, error or off, or TARGET=LEVEL such as sipfront=debug)")]
    NotALevel(String),
    #[error("{0}")]
    Filter(String),
}

/// Check that `level` is a filter of known levels: comma-separated directives, each a level
/// (`info`) or `TARGET=LEVEL` (`sipfront::core=debug`). Span and field filters of
/// `RUST_LOG` syntax are not accepted in the file (use `RUST_LOG` for those).
pub fn validate(level: &str) -> Result<(), LevelError> {
    if level.trim().is_empty() {
        return Err(LevelError::Empty);
    }
    for directive in level.split(',').map(str::trim) {
        let (target, lvl) = match directive.split_once('=') {
            Some((t, l)) => (Some(t.trim()), l.trim()),
            None => (None, directive),
        };
        let target_ok = target.is_none_or(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-'))
        });
        if !target_ok || !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(lvl)) {
            return Err(LevelError::NotALevel(directive.to_owned()));
        }
    }
    EnvFilter::try_new(level)
        .map(drop)
        .map_err(|e| LevelError::Filter(e.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_validated() {
        for ok in [
            "info",
            "WARN",
            "sipfront=debug,warn",
            "sipfront::core=trace, off",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            " ",
            "verbose",
            "sipfront=loud",
            "=info",
            "info,",
            "a b=info",
        ] {
            assert!(validate(bad).is_err(), "{bad:?} accepted");
        }
        let e = validate("verbose").unwrap_err().to_string();
        assert!(e.contains("\"verbose\"") && e.contains("expected"), "{e}");
    }

    #[test]
    fn format_parses() {
        #[derive(serde::Deserialize)]
        struct F {
            format: LogFormat,
        }
        let f: F = toml::from_str("format = \"json\"").unwrap();
        assert_eq!(f.format, LogFormat::Json);
        assert!(toml::from_str::<F>("format = \"xml\"").is_err());
    }
}
