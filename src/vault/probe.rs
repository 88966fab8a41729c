//! `keys.test`: one cheap authenticated request (list models) that tells whether a provider
//! accepts a key.
//!
//! Where to send the check, in order: `vault.probe_base_urls.<provider>` (an explicit override,
//! with the known path of a built-in provider, else `/models`); else the provider as the daemon
//! runs it (preset merged with `[providers.<name>]`: its `base_url` and its adapter's models
//! path, so a custom OpenAI-compatible provider is checked where it is configured); else a small
//! table of well-known services. OpenAI-compatible providers send `Authorization: Bearer`,
//! Anthropic `x-api-key` + `anthropic-version`, Gemini `x-goog-api-key`.
//!
//! Invariants: the key only travels in a header marked sensitive; redirects are not followed (a
//! redirect could carry the header to another host); error messages never include the URL's
//! query or any header.

use crate::providers::{AdapterKind, ProviderSpec};
use age::secrecy::{ExposeSecret, SecretString};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// How long one check may take.
const TIMEOUT: Duration = Duration::from_secs(15);
/// How much of an error body is read (Gemini reports a bad key as HTTP 400 with a reason).
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    Bearer,
    Anthropic,
    Google,
}

/// The provider accepted (`Valid`) or rejected (`Invalid`) the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub valid: bool,
    pub http_status: u16,
    pub latency_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "no key check is known for provider `{0}`: it is neither built in nor configured; add `[providers.{0}]` with its `adapter` and `base_url` to config.toml (or set `vault.probe_base_urls.{0}`)"
    )]
    UnknownProvider(String),
    #[error("{provider} answered the key check with HTTP {status}; the key's status is unchanged")]
    Status { provider: String, status: u16 },
    #[error("could not reach {provider} to check the key: {message}")]
    Network { provider: String, message: String },
}

/// Default base URL, models path and auth style of each known provider.
fn known(provider: &str) -> Option<(&'static str, &'static str, Auth)> {
    Some(match provider {
        "openai" => ("https://api.openai.com/v1", "/models", Auth::Bearer),
        "anthropic" => ("https://api.anthropic.com", "/v1/models", Auth::Anthropic),
        "gemini" | "google" => ("https://generativelanguage.googleapis.com", "/v1beta/models", Auth::Google),
        // OpenRouter lists models without authentication; its key endpoint needs the key.
        "openrouter" => ("https://openrouter.ai/api/v1", "/key", Auth::Bearer),
        "deepseek" => ("https://api.deepseek.com", "/models", Auth::Bearer),
        "groq" => ("https://api.groq.com/openai/v1", "/models", Auth::Bearer),
        "mistral" => ("https://api.mistral.ai/v1", "/models", Auth::Bearer),
        "xai" => ("https://api.x.ai/v1", "/models", Auth::Bearer),
        "together" => ("https://api.together.xyz/v1", "/models", Auth::Bearer),
        _ => return None,
    })
}

/// The models path and auth style of a provider the daemon runs (its base URL includes the API
/// version, as in the presets).
fn for_spec(spec: &ProviderSpec) -> (String, Auth) {
    let (path, auth) = match spec.adapter {
        // OpenRouter lists models without authentication; its key endpoint needs the key.
        AdapterKind::Openai if spec.name == "openrouter" => ("/key", Auth::Bearer),
        AdapterKind::Openai => ("/models", Auth::Bearer),
        AdapterKind::Anthropic => ("/models", Auth::Anthropic),
        AdapterKind::Gemini => ("/models", Auth::Google),
        AdapterKind::Ollama => ("/api/tags", Auth::Bearer),
    };
    (format!("{}{path}", spec.base()), auth)
}

/// The URL to call and the auth style for `provider` (see the module docs for the order).
fn endpoint(
    provider: &str,
    overrides: &BTreeMap<String, String>,
    specs: &BTreeMap<String, ProviderSpec>,
) -> Option<(String, Auth)> {
    if let Some(base) = overrides.get(provider).map(|b| b.trim_end_matches('/')) {
        return Some(match known(provider) {
            Some((_, path, auth)) => (format!("{base}{path}"), auth),
            None => (format!("{base}/models"), Auth::Bearer),
        });
    }
    if let Some(spec) = specs.get(provider) {
        return Some(for_spec(spec));
    }
    known(provider).map(|(base, path, auth)| (format!("{base}{path}"), auth))
}

fn headers(auth: Auth, secret: &SecretString) -> Option<HeaderMap> {
    let sensitive = |text: &str| {
        let mut v = HeaderValue::from_str(text).ok()?;
        v.set_sensitive(true);
        Some(v)
    };
    let mut h = HeaderMap::new();
    match auth {
        Auth::Bearer => {
            let value = Zeroizing::new(format!("Bearer {}", secret.expose_secret()));
            h.insert(reqwest::header::AUTHORIZATION, sensitive(&value)?);
        }
        Auth::Anthropic => {
            h.insert(HeaderName::from_static("x-api-key"), sensitive(secret.expose_secret())?);
            h.insert(HeaderName::from_static("anthropic-version"), HeaderValue::from_static("2023-06-01"));
        }
        Auth::Google => {
            h.insert(HeaderName::from_static("x-goog-api-key"), sensitive(secret.expose_secret())?);
        }
    }
    Some(h)
}

/// Asks `provider` whether it accepts `secret`: 2xx is valid, 401/403 (and Gemini's 400
/// `API_KEY_INVALID`) invalid, anything else an error that leaves the key's status alone.
pub async fn check(
    provider: &str,
    secret: &SecretString,
    overrides: &BTreeMap<String, String>,
    specs: &BTreeMap<String, ProviderSpec>,
) -> Result<Checked, ProbeError> {
    let (url, auth) =
        endpoint(provider, overrides, specs).ok_or_else(|| ProbeError::UnknownProvider(provider.into()))?;
    let net = |message: String| ProbeError::Network { provider: provider.into(), message };
    let headers = headers(auth, secret)
        .ok_or_else(|| net("the key contains characters that cannot be sent in a header".into()))?;
    // transport::builder never follows redirects: the key header must not reach another host.
    let client = crate::providers::transport::builder(TIMEOUT)
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| net(crate::providers::transport::error_chain(&e.without_url())))?;
    let started = Instant::now();
    let mut response = client
        .get(&url)
        .headers(headers)
        .send()
        .await
        .map_err(|e| net(crate::providers::transport::error_chain(&e.without_url())))?;
    let latency_ms = crate::clock::millis(started.elapsed());
    let status = response.status().as_u16();
    let valid = match status {
        200..=299 => true,
        401 | 403 => false,
        400 if auth == Auth::Google => {
            let mut body = Vec::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    break;
                }
            }
            if !String::from_utf8_lossy(&body).contains("API_KEY_INVALID") {
                return Err(ProbeError::Status { provider: provider.into(), status });
            }
            false
        }
        _ => return Err(ProbeError::Status { provider: provider.into(), status }),
    };
    Ok(Checked { valid, http_status: status, latency_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_overrides() {
        let none: BTreeMap<String, String> = BTreeMap::new();
        let no_specs: BTreeMap<String, ProviderSpec> = BTreeMap::new();
        let presets = crate::providers::presets::resolve(&crate::providers::ProvidersConfig::new()).unwrap_or_default();
        for specs in [&no_specs, &presets] {
            assert_eq!(
                endpoint("openai", &none, specs),
                Some(("https://api.openai.com/v1/models".into(), Auth::Bearer))
            );
            assert_eq!(
                endpoint("anthropic", &none, specs),
                Some(("https://api.anthropic.com/v1/models".into(), Auth::Anthropic))
            );
            assert_eq!(
                endpoint("openrouter", &none, specs),
                Some(("https://openrouter.ai/api/v1/key".into(), Auth::Bearer))
            );
            assert_eq!(endpoint("mystery", &none, specs), None);
        }
        assert_eq!(
            endpoint("gemini", &none, &presets),
            Some(("https://generativelanguage.googleapis.com/v1beta/models".into(), Auth::Google))
        );
        let mut over = BTreeMap::new();
        over.insert("openai".to_string(), "http://127.0.0.1:9/v1/".to_string());
        over.insert("mystery".to_string(), "http://127.0.0.1:9/api".to_string());
        assert_eq!(endpoint("openai", &over, &presets), Some(("http://127.0.0.1:9/v1/models".into(), Auth::Bearer)));
        assert_eq!(endpoint("mystery", &over, &no_specs), Some(("http://127.0.0.1:9/api/models".into(), Auth::Bearer)));
        // A configured custom provider is checked at its own base URL, with its adapter's auth.
        let cfg: crate::providers::ProvidersConfig = toml::from_str(
            "[local]\nadapter = \"openai\"\nbase_url = \"http://127.0.0.1:8/v1/\"\n[claude-proxy]\nadapter = \"anthropic\"\nbase_url = \"http://127.0.0.1:7/v1\"\n",
        )
        .unwrap_or_default();
        let custom = crate::providers::presets::resolve(&cfg).unwrap_or_default();
        assert_eq!(endpoint("local", &none, &custom), Some(("http://127.0.0.1:8/v1/models".into(), Auth::Bearer)));
        assert_eq!(
            endpoint("claude-proxy", &none, &custom),
            Some(("http://127.0.0.1:7/v1/models".into(), Auth::Anthropic))
        );
    }

    #[test]
    fn auth_headers_are_sensitive() {
        let h = headers(Auth::Bearer, &SecretString::from("sk-test-123")).unwrap_or_default();
        let v = h.get(reqwest::header::AUTHORIZATION);
        assert!(v.is_some_and(HeaderValue::is_sensitive));
        assert!(!format!("{h:?}").contains("sk-test-123"));
        assert!(headers(Auth::Google, &SecretString::from("bad\nkey")).is_none());
    }
}
