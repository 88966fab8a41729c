//! `config.toml`: where it lives, what it may contain, and its defaults.
//!
//! Every field has a default, so the daemon runs with no file at all. Unknown keys are errors (a
//! typo must not be silently ignored); parse errors carry the line and column, validation errors
//! the dotted key. Paths follow design §6: XDG on Linux, `~/Library/Application Support` on macOS,
//! and every one can be overridden by a flag.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const APP_DIR: &str = "llm-sidecar";

/// One problem in a config file: where (line and column when known, the dotted key) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    /// Dotted key, e.g. `daemon.max_connections` (`None` for a syntax error).
    pub key: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, "line {l}, column {c}: ")?;
        }
        match &self.key {
            Some(k) => write!(f, "`{k}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists (or was named) but cannot be read; the OS error is part of the message
    /// (not a separate source, so a chained report does not print it twice).
    #[error("cannot read config file {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    /// Every problem found in the file (at least one).
    #[error("{}: {}", path.display(), render_issues(issues))]
    Invalid { path: PathBuf, issues: Vec<Issue> },
}

impl ConfigError {
    /// The problems (empty for a read error).
    pub fn issues(&self) -> &[Issue] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { issues, .. } => issues,
        }
    }
}

fn render_issues(issues: &[Issue]) -> String {
    match issues {
        [one] => one.to_string(),
        many => {
            let mut out = format!("{} errors:", many.len());
            for i in many {
                out.push_str("\n  ");
                out.push_str(&i.to_string());
            }
            out
        }
    }
}

/// At most this many problems are reported for one file.
const MAX_ISSUES: usize = 50;

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
    pub policy: crate::policy::PolicySettings,
    pub tiers: crate::policy::TiersConfig,
    pub account: crate::policy::AccountConfig,
    /// `[credits]`: prepaid credits (what one is worth; tiers say when calls use them).
    pub credits: crate::policy::CreditsConfig,
    /// `[apps.<name>]`: per-app limits for apps calling with an app token (`llm-sidecar apps`).
    pub apps: AppsConfig,
    /// `[http]`: the OpenAI-/Anthropic-compatible HTTP face (off unless `listen` is set).
    pub http: crate::http::HttpConfig,
}

/// `[apps.<name>]` tables by app name.
pub type AppsConfig = std::collections::BTreeMap<String, AppConfig>;

/// `[apps.<name>]`: optional limits of one app (every one absent means no app-specific limit).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    /// Spend cap per UTC calendar month, in US dollars.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_cost_usd: Option<f64>,
    /// Requests per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// The `[tiers.<name>]` whose limits this app gets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

/// Checks `[apps.*]`: names as `apps add` accepts them, non-negative costs, rates of at least 1,
/// tiers that exist. The first problem, with its dotted key.
fn validate_apps(apps: &AppsConfig, tiers: &crate::policy::TiersConfig) -> Result<(), (String, String)> {
    for (name, a) in apps {
        let key = |f: &str| format!("apps.\"{}\"{}{f}", name.escape_debug(), if f.is_empty() { "" } else { "." });
        if !crate::ledger::apps::valid_name(name) {
            return Err((key(""), "an app name must be 1-64 printable characters".into()));
        }
        if a.monthly_cost_usd.is_some_and(|c| !(c >= 0.0 && c.is_finite())) {
            return Err((key("monthly_cost_usd"), "must be a non-negative number of US dollars".into()));
        }
        if a.requests_per_minute == Some(0) {
            return Err((key("requests_per_minute"), "must be at least 1 (omit it for no limit)".into()));
        }
        if let Some(t) = &a.tier {
            if !tiers.contains_key(t) {
                return Err((key("tier"), format!("no tier named `{t}` in [tiers]")));
            }
        }
    }
    Ok(())
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
    /// Seconds a frame may stay incomplete (its first byte read, its last not) before its
    /// connection is closed.
    pub frame_timeout_secs: u64,
    /// Connections one peer process may hold at once; default half of `max_connections`
    /// (rounded up), so one process cannot take every slot.
    pub max_connections_per_process: Option<usize>,
}

impl DaemonConfig {
    /// `max_connections_per_process`, or its default.
    pub fn per_process_limit(&self) -> usize {
        self.max_connections_per_process.unwrap_or(self.max_connections.div_ceil(2)).max(1)
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            socket: None,
            data_dir: None,
            max_connections: 1024,
            max_inflight_per_connection: 256,
            shutdown_grace_secs: 10,
            frame_timeout_secs: 10,
            max_connections_per_process: None,
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
    /// Parses and validates config text; `path` is only used in error messages. Reports every
    /// problem at once: a syntax error stops parsing (only it is reported), otherwise each
    /// unknown key or wrong type is set aside and parsing goes on, then each section is checked.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |issues: Vec<Issue>| ConfigError::Invalid { path: path.to_path_buf(), issues };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unzip();
            invalid(vec![Issue { key: None, line, column, message: e.message().trim_end().to_string() }])
        })?;
        let doc = toml_edit::ImDocument::parse(text).ok();
        let locate = |segments: &[String]| doc.as_ref().and_then(|d| locate(d, segments)).map(|o| line_col(text, o));
        let mut issues = Vec::new();
        let config = loop {
            let value = toml::Value::Table(table.clone());
            match serde_path_to_error::deserialize::<_, Config>(value) {
                Ok(c) => break Some(c),
                Err(err) => {
                    let mut segments = segments(err.path());
                    let message = err.into_inner().message().trim_end().to_string();
                    if let Some(unknown) = unknown_field(&message) {
                        if segments.last().map(String::as_str) != Some(unknown) {
                            segments.push(unknown.to_string());
                        }
                    }
                    let (line, column) = locate(&segments).unzip();
                    let key = (!segments.is_empty()).then(|| segments.join("."));
                    issues.push(Issue { key, line, column, message });
                    // Set the offending key aside and go on; stop if it cannot be (or too many).
                    if segments.is_empty() || !remove(&mut table, &segments) || issues.len() >= MAX_ISSUES {
                        break None;
                    }
                }
            }
        };
        // Checked only once the file parses as it is: with keys set aside, the checks would
        // report what is missing because of them.
        if let Some(config) = config.as_ref().filter(|_| issues.is_empty()) {
            for (key, message) in config.problems() {
                let segments = split_key(&key);
                let (line, column) = (1..=segments.len()).rev().find_map(|n| locate(&segments[..n])).unzip();
                issues.push(Issue { key: Some(key), line, column, message });
            }
        }
        match config {
            Some(c) if issues.is_empty() => Ok(c),
            _ => Err(invalid(issues)),
        }
    }

    /// Loads `path`. A missing file at the default location means "all defaults"; a missing file
    /// that the user named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Config::default()),
            Err(error) => Err(ConfigError::Read { path: path.to_path_buf(), error }),
        }
    }

    /// Every section's validation problem (`(dotted key, message)`); each section reports its
    /// first.
    fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut check = |r: Result<(), (String, String)>| {
            if let Err(e) = r {
                out.push(e);
            }
        };
        let d = &self.daemon;
        let bad = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
        check(if d.max_connections == 0 { bad("daemon.max_connections", "must be at least 1") } else { Ok(()) });
        check(if d.max_inflight_per_connection == 0 {
            bad("daemon.max_inflight_per_connection", "must be at least 1")
        } else {
            Ok(())
        });
        check(if d.shutdown_grace_secs > 3600 {
            bad("daemon.shutdown_grace_secs", "must be at most 3600")
        } else {
            Ok(())
        });
        check(if !(1..=3600).contains(&d.frame_timeout_secs) {
            bad("daemon.frame_timeout_secs", "must be between 1 and 3600")
        } else {
            Ok(())
        });
        check(match d.max_connections_per_process {
            Some(n) if n == 0 || n > d.max_connections => {
                bad("daemon.max_connections_per_process", "must be between 1 and daemon.max_connections")
            }
            _ => Ok(()),
        });
        check(self.vault.validate());
        check(crate::router::Router::check(&self.providers, &self.routes, &self.router));
        check(self.sync.validate().map_err(|(k, m)| (k.to_string(), m)));
        check(crate::policy::config::validate(&self.policy, &self.tiers, &self.account));
        check(validate_apps(&self.apps, &self.tiers));
        check(crate::policy::config::validate_credits(&self.credits));
        check(self.http.validate());
        if let Some(level) = &self.log.level {
            if let Err(why) = crate::logging::filter(level) {
                check(bad("log.level", &format!("not a valid filter ({why}); try `info` or `llm_sidecar=debug`")));
            }
        }
        out
    }
}

impl Config {
    /// The configuration as the daemon runs it, as TOML for `config show`: the built-in
    /// provider presets merged in (every field set), and a `# no effect: ...` comment on each
    /// setting the rest of the configuration makes moot.
    pub fn render_effective(&self) -> Result<String, String> {
        let mut full = self.clone();
        full.providers = crate::providers::presets::effective(&self.providers).map_err(|e| e.to_string())?;
        let text = toml::to_string_pretty(&full).map_err(|e| e.to_string())?;
        let mut notes: Vec<(&str, &str, String)> = Vec::new();
        if self.vault.mode == crate::vault::VaultMode::Identity {
            notes.push((
                "vault",
                "auto_lock_secs",
                "no effect: identity mode never auto-locks (only `mode = \"passphrase\"` does)".into(),
            ));
        }
        if self.sync.url.is_none() {
            notes.push((
                "sync",
                "",
                "sync is off (no `url`): records stay in the local ledger and the settings below have no effect until a url is set".into(),
            ));
        }
        if self.account.url.is_none() {
            notes.push((
                "account",
                "poll_secs",
                "no effect without `account.url` (expiry is still checked offline)".into(),
            ));
        }
        if self.tiers.is_empty() {
            notes.push((
                "policy",
                "",
                "no [tiers] configured: the policy is off (every call allowed) and these settings have no effect"
                    .into(),
            ));
        }
        Ok(annotate(&text, &notes))
    }
}

/// Adds `notes` (`(section, key, text)`; an empty key comments the section header) to TOML text.
fn annotate(text: &str, notes: &[(&str, &str, String)]) -> String {
    let mut out = String::with_capacity(text.len() + 256);
    let mut section = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim_matches(['[', ']']).to_string();
            out.push_str(line);
            out.push('\n');
            for (_, _, note) in notes.iter().filter(|(s, k, _)| *s == section && k.is_empty()) {
                out.push_str("# ");
                out.push_str(note);
                out.push('\n');
            }
            continue;
        }
        let key = trimmed.split('=').next().unwrap_or_default().trim();
        out.push_str(line);
        if let Some((_, _, note)) = notes.iter().find(|(s, k, _)| *s == section && !k.is_empty() && *k == key) {
            out.push_str("  # ");
            out.push_str(note);
        }
        out.push('\n');
    }
    out
}

/// The path of a deserialization error as key segments (array indices as numbers).
fn segments(path: &serde_path_to_error::Path) -> Vec<String> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .collect()
}

/// `X` from serde's "unknown field `X`, expected ...".
fn unknown_field(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}

/// Splits a dotted key as the validators write it: `a.b[0]."c.d"` → `a`, `b`, `0`, `c.d`.
fn split_key(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in key.chars() {
        match ch {
            '"' => quoted = !quoted,
            '.' if !quoted => out.push(std::mem::take(&mut cur)),
            '[' if !quoted => out.push(std::mem::take(&mut cur)),
            ']' if !quoted => {}
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.retain(|s| !s.is_empty());
    out
}

/// Removes the item at `segments` from `table`; false if there is none.
fn remove(table: &mut toml::Table, segments: &[String]) -> bool {
    let Some((last, parents)) = segments.split_last() else { return false };
    let mut here = table;
    let mut i = 0;
    while i < parents.len() {
        let Some(v) = here.get_mut(&parents[i]) else { return false };
        // Descend through arrays by index.
        let mut v = v;
        while let toml::Value::Array(items) = v {
            i += 1;
            let Some(item) = parents.get(i).and_then(|n| n.parse::<usize>().ok()).and_then(|n| items.get_mut(n)) else {
                return false;
            };
            v = item;
        }
        let toml::Value::Table(t) = v else { return false };
        here = t;
        i += 1;
    }
    here.remove(last).is_some()
}

/// Byte offset of the key at `segments` in the parsed document (its key, else its value).
fn locate(doc: &toml_edit::ImDocument<&str>, segments: &[String]) -> Option<usize> {
    let mut item: &toml_edit::Item = doc.as_item();
    let mut offset = None;
    let mut i = 0;
    while i < segments.len() {
        let seg = &segments[i];
        if let Some(t) = item.as_table_like() {
            let (k, v) = t.get_key_value(seg)?;
            offset = k.span().or_else(|| v.span()).map(|s| s.start).or(offset);
            item = v;
        } else if let Some(arr) = item.as_array_of_tables() {
            let t = arr.get(seg.parse().ok()?)?;
            offset = t.span().map(|s| s.start).or(offset);
            let (k, v) = t.get_key_value(segments.get(i + 1)?)?;
            offset = k.span().or_else(|| v.span()).map(|s| s.start).or(offset);
            item = v;
            i += 1;
        } else {
            return offset;
        }
        i += 1;
    }
    offset
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

    fn issues(text: &str) -> Vec<Issue> {
        match Config::parse(text, Path::new("c.toml")) {
            Err(e) => e.issues().to_vec(),
            Ok(c) => panic!("expected errors, got {c:?}"),
        }
    }

    #[test]
    fn unknown_key_reports_line_and_key() {
        let found = issues("[daemon]\nmax_connections = 5\nmax_conections = 6\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].line, Some(3));
        assert_eq!(found[0].column, Some(1));
        assert_eq!(found[0].key.as_deref(), Some("daemon.max_conections"));
    }

    #[test]
    fn wrong_type_and_invalid_value() {
        let found = issues("[daemon]\n\nmax_connections = \"many\"\n");
        assert_eq!((found[0].line, found[0].key.as_deref()), (Some(3), Some("daemon.max_connections")), "{found:?}");
        let e = Config::parse("[daemon]\nmax_connections = 0\n", Path::new("c.toml")).expect_err("zero");
        assert!(e.to_string().contains("daemon.max_connections") && e.to_string().contains("line 2"), "{e}");
        let e = Config::parse("[log]\nlevel = \"[[[\"\n", Path::new("c.toml")).expect_err("filter");
        assert!(e.to_string().contains("log.level"), "{e}");
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let text = "[daemon]\nbogus = 1\nmax_connections = \"x\"\n\n[vault]\nmode = \"nope\"\n\n[sync]\nurl = \"ftp://x\"\n[sync.extra]\na = 1\n[log]\nlevel = \"[[[\"\n";
        let found = issues(text);
        let keys: Vec<_> = found.iter().map(|i| i.key.clone().unwrap_or_default()).collect();
        for k in ["daemon.bogus", "daemon.max_connections", "vault.mode", "sync.extra"] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {found:?}");
        }
        let line = |k: &str| found.iter().find(|i| i.key.as_deref() == Some(k)).and_then(|i| i.line);
        assert_eq!(line("daemon.bogus"), Some(2));
        assert_eq!(line("daemon.max_connections"), Some(3));
        assert_eq!(line("vault.mode"), Some(6));
        // Type errors first; once the file parses, every section's check runs too.
        let found = issues("[daemon]\nmax_connections = 0\n[log]\nlevel = \"[[[\"\n[sync]\nurl = \"ftp://x\"\n");
        assert_eq!(found.len(), 3, "{found:?}");
        let text = Config::parse("[daemon]\nbogus = 1\nother = 2\n", Path::new("c.toml")).expect_err("two").to_string();
        assert!(text.contains("2 errors") && text.contains("line 2") && text.contains("line 3"), "{text}");
    }

    #[test]
    fn app_limits_parse_and_are_checked_with_their_key() {
        let text = "[tiers.pro]\nmonthly_cost_usd = 20.0\n[policy]\ndefault_tier = \"pro\"\n\
                    [apps.editor]\nmonthly_cost_usd = 5.5\nrequests_per_minute = 30\ntier = \"pro\"\n[apps.\"my.notes\"]\n";
        let c = Config::parse(text, Path::new("c.toml")).expect("valid");
        let e = &c.apps["editor"];
        assert_eq!((e.monthly_cost_usd, e.requests_per_minute, e.tier.as_deref()), (Some(5.5), Some(30), Some("pro")));
        assert_eq!(c.apps["my.notes"], AppConfig::default());
        for (bad, key, line) in [
            ("[apps.editor]\nrequests_per_minute = 0\n", "apps.\"editor\".requests_per_minute", 2),
            ("[apps.editor]\n\nmonthly_cost_usd = -1.0\n", "apps.\"editor\".monthly_cost_usd", 3),
            ("[apps.editor]\ntier = \"gold\"\n", "apps.\"editor\".tier", 2),
        ] {
            let found = issues(bad);
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!((found[0].key.as_deref(), found[0].line), (Some(key), Some(line)), "{found:?}");
        }
        let found = issues("[apps.editor]\nrpm = 3\n");
        assert_eq!(found[0].key.as_deref(), Some("apps.editor.rpm"), "{found:?}");
        let long = format!("[apps.{}]\n", "x".repeat(65));
        assert!(issues(&long)[0].message.contains("1-64"));
    }

    /// The `config` fuzz target's find: a non-ASCII `log.level` made tracing-subscriber panic.
    #[test]
    fn a_non_ascii_log_level_is_an_error_not_a_panic() {
        let text = "[daemon]\nmax_connections = 1024\n[log]\nlevel = \"\t\t\t\t\t\t\tFFFFFly_toFoFFFFFFFFFFly_toFFFFFFFFFFFFFF\u{4a3}gaaaa====_          .         \"\n";
        let found = issues(text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].key.as_deref(), Some("log.level"));
        assert!(found[0].message.contains("ASCII"), "{}", found[0].message);
    }

    #[test]
    fn a_syntax_error_has_line_and_column() {
        let found = issues("[daemon]\nmax_connections = = 3\n");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].line, Some(2));
        assert!(found[0].column.is_some());
    }

    #[test]
    fn unreadable_file_names_the_os_error_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let e = Config::load(dir.path(), true).expect_err("a directory");
        let chained = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(chained.matches("directory").count(), 1, "{chained}");
    }

    #[test]
    fn missing_default_file_is_fine_but_explicit_is_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("none.toml");
        assert!(Config::load(&p, false).is_ok());
        assert!(matches!(Config::load(&p, true), Err(ConfigError::Read { .. })));
    }
}
