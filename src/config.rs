//! `config.toml`: where it lives, what it may contain, and its defaults.
//!
//! Every field has a default, so the daemon runs with no file at all. Unknown keys are errors (a
//! typo must not be silently ignored); parse errors carry the line and column, validation errors
//! the dotted key. Paths follow design §6: XDG on Linux, `~/Library/Application Support` on macOS,
//! and every one can be overridden by a flag.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const APP_DIR: &str = "llm-sidecar";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String, line: Option<usize>, column: Option<usize> },
    #[error("{path}: invalid value for `{key}`: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub log: LogConfig,
    pub vault: crate::vault::VaultConfig,
    pub providers: crate::providers::ProvidersConfig,
    pub routes: crate::router::RoutesConfig,
    pub router: crate::router::RouterConfig,
    pub pricing: crate::pricing::PricingConfig,
    pub sync: crate::sync::SyncConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Socket path; overrides the discovery rules (but not `--socket` or `$LLM_SIDECAR_SOCK`).
    pub socket: Option<PathBuf>,
    /// Data directory (vault, ledger); default `$XDG_DATA_HOME/llm-sidecar`.
    pub data_dir: Option<PathBuf>,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Requests one connection may have running at once; beyond it the daemon stops reading
    /// from that connection until one finishes (backpressure, not an error).
    pub max_inflight_per_connection: usize,
    /// Seconds in-flight calls get to finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            socket: None,
            data_dir: None,
            max_connections: 1024,
            max_inflight_per_connection: 256,
            shutdown_grace_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `llm_sidecar=debug`; `--log-level` and `RUST_LOG` win.
    pub level: Option<String>,
    /// `human` (default) or `json`.
    pub format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl Config {
    /// Parses and validates config text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let key = err.path().to_string();
            let e = err.into_inner();
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unzip();
            let what = if key.is_empty() || key == "." {
                e.message().to_string()
            } else {
                format!("`{key}`: {}", e.message())
            };
            let message = match line.zip(column) {
                Some((l, c)) => format!("line {l}, column {c}: {what}"),
                None => what,
            };
            ConfigError::Parse { path: path.to_path_buf(), message, line, column }
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Loads `path`. A missing file at the default location means "all defaults"; a missing file
    /// that the user named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read { path: path.to_path_buf(), source }),
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message: message.to_string(),
        };
        if self.daemon.max_connections == 0 {
            return Err(invalid("daemon.max_connections", "must be at least 1"));
        }
        if self.daemon.max_inflight_per_connection == 0 {
            return Err(invalid("daemon.max_inflight_per_connection", "must be at least 1"));
        }
        if self.daemon.shutdown_grace_secs > 3600 {
            return Err(invalid("daemon.shutdown_grace_secs", "must be at most 3600"));
        }
        self.vault.validate().map_err(|(key, message)| invalid(&key, &message))?;
        if let Err((key, message)) = crate::router::Router::check(&self.providers, &self.routes, &self.router) {
            return Err(invalid(&key, &message));
        }
        if let Err((key, message)) = self.sync.validate() {
            return Err(invalid(key, &message));
        }
        if let Some(level) = &self.log.level {
            if tracing_subscriber::EnvFilter::try_new(level).is_err() {
                return Err(invalid("log.level", "not a valid filter (try `info` or `llm_sidecar=debug`)"));
            }
        }
        Ok(())
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Default config directory: `$XDG_CONFIG_HOME/llm-sidecar` (macOS: Application Support).
pub fn default_config_file() -> PathBuf {
    dirs::config_dir().unwrap_or_else(|| PathBuf::from(".")).join(APP_DIR).join("config.toml")
}

/// Default data directory: `$XDG_DATA_HOME/llm-sidecar` (macOS: Application Support).
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir().unwrap_or_else(|| PathBuf::from(".")).join(APP_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(Config::parse("", Path::new("c.toml")).expect("ok"), Config::default());
    }

    #[test]
    fn unknown_key_reports_line_and_key() {
        let text = "[daemon]\nmax_connections = 5\nmax_conections = 6\n";
        match Config::parse(text, Path::new("c.toml")) {
            Err(ConfigError::Parse { line, message, .. }) => {
                assert_eq!(line, Some(3));
                assert!(message.contains("max_conections"), "{message}");
            }
            other => panic!("expected parse error, got {other:?}"),
        }
    }

    #[test]
    fn wrong_type_and_invalid_value() {
        let e = Config::parse("[daemon]\n\nmax_connections = \"many\"\n", Path::new("c.toml")).expect_err("type");
        assert!(matches!(e, ConfigError::Parse { line: Some(3), .. }), "{e:?}");
        let e = Config::parse("[daemon]\nmax_connections = 0\n", Path::new("c.toml")).expect_err("zero");
        assert!(e.to_string().contains("daemon.max_connections"), "{e}");
        let e = Config::parse("[log]\nlevel = \"[[[\"\n", Path::new("c.toml")).expect_err("filter");
        assert!(e.to_string().contains("log.level"), "{e}");
    }

    #[test]
    fn missing_default_file_is_fine_but_explicit_is_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("none.toml");
        assert!(Config::load(&p, false).is_ok());
        assert!(matches!(Config::load(&p, true), Err(ConfigError::Read { .. })));
    }
}
