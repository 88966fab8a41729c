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

/// Parses a log filter (`info`, `llm_sidecar=debug,hyper=warn`). Filters are ASCII: anything else
/// is refused here, because tracing-subscriber 0.3's directive parser panics on some non-ASCII
/// text (it slices inside a character; found by the `config` fuzz target).
pub fn filter(text: &str) -> Result<EnvFilter, String> {
    if !text.is_ascii() {
        return Err("a log filter is ASCII text (target names and levels)".into());
    }
    EnvFilter::try_new(text).map_err(|e| e.to_string())
}

/// Installs the global subscriber. Call once, early in `main`.
pub fn init(cli_level: Option<&str>, config_level: Option<&str>, format: LogFormat) -> Result<(), LogError> {
    let env = std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty());
    let filter_text =
        cli_level.map(str::to_string).or(env).or(config_level.map(str::to_string)).unwrap_or_else(|| "info".into());
    let filter = filter(&filter_text).map_err(|message| LogError { filter: filter_text.clone(), message })?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn non_ascii_filters_are_refused_not_a_panic() {
        assert!(super::filter("info").is_ok());
        assert!(super::filter("llm_sidecar=debug,hyper=warn").is_ok());
        // The fuzzer's input: tracing-subscriber itself panics on it.
        assert!(super::filter(
            "\t\t\t\t\t\t\tFFFFFly_toFoFFFFFFFFFFly_toFFFFFFFFFFFFFF\u{4a3}gaaaa====_          .         "
        )
        .is_err());
        assert!(super::filter("é").is_err());
    }
}
