//! `tracing` setup: human-readable or JSON lines on stderr.
//!
//! Level precedence: `--log-level`, then `RUST_LOG`, then `log.level` in the config, then `info`.
//! Nothing logged may contain key material or request payloads.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

#[derive(Debug, thiserror::Error)]
#[error("invalid log filter `{filter}`: {message}")]
pub struct LogError {
    filter: String,
    message: String,
}

/// Installs the global subscriber. Call once, early in `main`.
pub fn init(cli_level: Option<&str>, config_level: Option<&str>, format: LogFormat) -> Result<(), LogError> {
    let env = std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty());
    let filter_text =
        cli_level.map(str::to_string).or(env).or(config_level.map(str::to_string)).unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_new(&filter_text)
        .map_err(|e| LogError { filter: filter_text.clone(), message: e.to_string() })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Human => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}
