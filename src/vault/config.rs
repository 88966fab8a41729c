//! The `[vault]` section of `config.toml`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How the vault's identity is protected.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VaultMode {
    /// `identity.txt` holds the plain age identity (0600); the vault is open from start.
    #[default]
    Identity,
    /// `identity.txt` is age-encrypted with a passphrase; the vault starts locked.
    Passphrase,
}

impl VaultMode {
    pub fn as_str(self) -> &'static str {
        match self {
            VaultMode::Identity => "identity",
            VaultMode::Passphrase => "passphrase",
        }
    }
}

/// Longest idle auto-lock accepted: 30 days.
const MAX_AUTO_LOCK_SECS: u64 = 30 * 86_400;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VaultConfig {
    /// `identity` (default) or `passphrase`.
    pub mode: VaultMode,
    /// Passphrase mode: lock after this many seconds without key use (status requests do not
    /// count); 0 never locks by itself. Default one hour.
    pub auto_lock_secs: u64,
    /// scrypt work factor (log2 N) used when a passphrase is set. Unset: age's own choice (about
    /// one second of work on this machine). Meant for tests; not shown when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrypt_log_n: Option<u8>,
    /// Base URL per provider for `keys.test` (e.g. `openai = "http://127.0.0.1:8080/v1"`),
    /// replacing the real endpoint; a provider with no built-in check is treated as
    /// OpenAI-compatible (`GET {base}/models` with a bearer token).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub probe_base_urls: BTreeMap<String, String>,
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self { mode: VaultMode::default(), auto_lock_secs: 3600, scrypt_log_n: None, probe_base_urls: BTreeMap::new() }
    }
}

impl VaultConfig {
    /// Checks values serde cannot; the error names the dotted key.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.auto_lock_secs > MAX_AUTO_LOCK_SECS {
            return Err(("vault.auto_lock_secs".into(), format!("must be at most {MAX_AUTO_LOCK_SECS} (30 days)")));
        }
        if let Some(n) = self.scrypt_log_n {
            let max = super::identity::MAX_SCRYPT_LOG_N;
            if !(1..=max).contains(&n) {
                return Err(("vault.scrypt_log_n".into(), format!("must be between 1 and {max}")));
            }
        }
        for (provider, url) in &self.probe_base_urls {
            let ok = reqwest::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.query().is_none());
            if !ok {
                return Err((
                    format!("vault.probe_base_urls.{provider}"),
                    "must be an http(s) URL without a query, e.g. \"https://api.example.com/v1\"".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn parses_and_validates_with_dotted_keys() {
        let c = Config::parse(
            "[vault]\nmode = \"passphrase\"\nauto_lock_secs = 60\n[vault.probe_base_urls]\nopenai = \"http://127.0.0.1:1/v1\"\n",
            Path::new("c.toml"),
        );
        let c = c.map_err(|e| e.to_string());
        assert_eq!(c.as_ref().map(|c| c.vault.mode), Ok(VaultMode::Passphrase));
        let bad =
            |text: &str| Config::parse(text, Path::new("c.toml")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(bad("[vault]\nscrypt_log_n = 0\n").contains("vault.scrypt_log_n"));
        assert!(bad("[vault]\nscrypt_log_n = 40\n").contains("vault.scrypt_log_n"));
        assert!(bad("[vault]\nauto_lock_secs = 99999999\n").contains("vault.auto_lock_secs"));
        assert!(bad("[vault.probe_base_urls]\nopenai = \"ftp://x\"\n").contains("vault.probe_base_urls.openai"));
        assert!(bad("[vault]\nmode = \"magic\"\n").contains("magic"));
    }

    #[test]
    fn unset_test_settings_stay_hidden_in_config_show() {
        let text = toml::to_string_pretty(&Config::default()).unwrap_or_default();
        assert!(text.contains("[vault]"), "{text}");
        assert!(!text.contains("scrypt_log_n"), "{text}");
        let mut c = Config::default();
        c.vault.scrypt_log_n = Some(4);
        c.vault.probe_base_urls.insert("openai".into(), "http://x/v1".into());
        assert!(toml::to_string_pretty(&c).is_ok());
    }
}
