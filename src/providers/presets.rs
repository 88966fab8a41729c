//! Built-in provider presets and the `[providers.<name>]` config section that overrides and
//! extends them.
//!
//! A preset names the adapter, base URL, key variable and common models of a provider. A config
//! entry with a preset's name changes only the fields it sets; an entry with a new name is a
//! custom provider and must set `adapter` and `base_url`. `{account_id}` in a base URL is filled
//! from the entry's `account_id` (Cloudflare). `api = "responses"` makes an `openai`-adapter
//! provider speak the Responses API instead of Chat Completions; on another adapter it is an
//! error naming `providers.<name>.api`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    /// Chat Completions (OpenAI and every OpenAI-compatible service).
    Openai,
    Anthropic,
    Gemini,
    /// Ollama's native `/api/chat` (NDJSON).
    Ollama,
}

impl AdapterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AdapterKind::Openai => "openai",
            AdapterKind::Anthropic => "anthropic",
            AdapterKind::Gemini => "gemini",
            AdapterKind::Ollama => "ollama",
        }
    }
}

/// Which OpenAI API an `openai`-adapter provider speaks (`api = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `POST {base}/chat/completions` (every OpenAI-compatible service).
    #[default]
    ChatCompletions,
    /// `POST {base}/responses`, OpenAI's Responses API (see [`super::responses`]).
    Responses,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat_completions",
            Api::Responses => "responses",
        }
    }
}

/// `[providers.<name>]`: every field optional; unset fields keep the preset's value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    pub adapter: Option<AdapterKind>,
    /// OpenAI adapter: `chat_completions` (default) or `responses`.
    pub api: Option<Api>,
    pub base_url: Option<String>,
    /// Environment variable holding a platform key, used when the vault has none.
    pub key_env: Option<String>,
    /// No key needed (local servers such as Ollama, LM Studio, vLLM).
    pub keyless: Option<bool>,
    /// Models offered in `models.list` (any model name may still be requested).
    pub models: Option<Vec<String>>,
    /// Extra HTTP headers sent with every request (e.g. OpenRouter's `HTTP-Referer`).
    pub headers: BTreeMap<String, String>,
    /// Fills `{account_id}` in the base URL (Cloudflare).
    pub account_id: Option<String>,
    /// OpenAI adapter: the name of the output limit field (`max_tokens` or `max_completion_tokens`).
    pub max_tokens_field: Option<String>,
    /// OpenAI adapter: ask for usage in streams with `stream_options.include_usage` (default true).
    pub stream_usage: Option<bool>,
    /// Anthropic adapter: the `anthropic-version` header.
    pub api_version: Option<String>,
    /// Remove this provider (also a preset) from the daemon.
    pub disabled: bool,
}

/// All `[providers.*]` entries by name.
pub type ProvidersConfig = BTreeMap<String, ProviderConfig>;

/// A provider as the daemon uses it: preset merged with config.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSpec {
    pub name: String,
    pub adapter: AdapterKind,
    /// The OpenAI API spoken; always [`Api::ChatCompletions`] for other adapters.
    pub api: Api,
    pub base_url: String,
    pub key_env: Option<String>,
    pub keyless: bool,
    pub models: Vec<String>,
    pub headers: BTreeMap<String, String>,
    pub max_tokens_field: String,
    pub stream_usage: bool,
    pub api_version: String,
}

impl ProviderSpec {
    /// The base URL without a trailing slash.
    pub fn base(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }
}

struct Preset {
    name: &'static str,
    adapter: AdapterKind,
    base_url: &'static str,
    key_env: Option<&'static str>,
    models: &'static [&'static str],
}

const PRESETS: &[Preset] = &[
    Preset {
        name: "openai",
        adapter: AdapterKind::Openai,
        base_url: "https://api.openai.com/v1",
        key_env: Some("OPENAI_API_KEY"),
        models: &[
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-4.1-mini",
            "gpt-4.1-nano",
            "o3",
            "o4-mini",
            "gpt-5",
            "gpt-5-mini",
            "gpt-5-nano",
        ],
    },
    Preset {
        name: "anthropic",
        adapter: AdapterKind::Anthropic,
        base_url: "https://api.anthropic.com/v1",
        key_env: Some("ANTHROPIC_API_KEY"),
        models: &[
            "claude-opus-4-1",
            "claude-opus-4-0",
            "claude-sonnet-4-5",
            "claude-sonnet-4-0",
            "claude-3-7-sonnet-latest",
            "claude-haiku-4-5",
            "claude-3-5-haiku-latest",
        ],
    },
    Preset {
        name: "gemini",
        adapter: AdapterKind::Gemini,
        base_url: "https://generativelanguage.googleapis.com/v1beta",
        key_env: Some("GEMINI_API_KEY"),
        models: &[
            "gemini-2.5-pro",
            "gemini-2.5-flash",
            "gemini-2.5-flash-lite",
            "gemini-2.0-flash",
            "gemini-2.0-flash-lite",
        ],
    },
    Preset {
        name: "groq",
        adapter: AdapterKind::Openai,
        base_url: "https://api.groq.com/openai/v1",
        key_env: Some("GROQ_API_KEY"),
        models: &[
            "llama-3.1-8b-instant",
            "llama-3.3-70b-versatile",
            "openai/gpt-oss-120b",
            "openai/gpt-oss-20b",
            "meta-llama/llama-4-scout-17b-16e-instruct",
        ],
    },
    Preset {
        name: "together",
        adapter: AdapterKind::Openai,
        base_url: "https://api.together.xyz/v1",
        key_env: Some("TOGETHER_API_KEY"),
        models: &[
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",
            "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
            "deepseek-ai/DeepSeek-V3",
            "Qwen/Qwen2.5-72B-Instruct-Turbo",
        ],
    },
    Preset {
        name: "openrouter",
        adapter: AdapterKind::Openai,
        base_url: "https://openrouter.ai/api/v1",
        key_env: Some("OPENROUTER_API_KEY"),
        models: &["openai/gpt-4o-mini", "anthropic/claude-sonnet-4.5", "google/gemini-2.5-flash"],
    },
    Preset {
        name: "deepseek",
        adapter: AdapterKind::Openai,
        base_url: "https://api.deepseek.com",
        key_env: Some("DEEPSEEK_API_KEY"),
        models: &["deepseek-chat", "deepseek-reasoner"],
    },
    Preset {
        name: "mistral",
        adapter: AdapterKind::Openai,
        base_url: "https://api.mistral.ai/v1",
        key_env: Some("MISTRAL_API_KEY"),
        models: &[
            "mistral-large-latest",
            "mistral-medium-latest",
            "mistral-small-latest",
            "codestral-latest",
            "open-mistral-nemo",
        ],
    },
    Preset {
        name: "cloudflare",
        adapter: AdapterKind::Openai,
        base_url: "https://api.cloudflare.com/client/v4/accounts/{account_id}/ai/v1",
        key_env: Some("CLOUDFLARE_API_TOKEN"),
        models: &["@cf/meta/llama-3.1-8b-instruct", "@cf/meta/llama-3.3-70b-instruct-fp8-fast"],
    },
    Preset {
        name: "ollama",
        adapter: AdapterKind::Openai,
        base_url: "http://localhost:11434/v1",
        key_env: None,
        models: &["llama3.2", "qwen2.5", "phi3"],
    },
];

/// Names of the built-in presets.
pub fn preset_names() -> impl Iterator<Item = &'static str> {
    PRESETS.iter().map(|p| p.name)
}

/// Why the providers section is unusable; `key` is the dotted config key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct SpecError {
    pub key: String,
    pub message: String,
}

/// Merges presets with `[providers.*]`, checking every entry.
pub fn resolve(config: &ProvidersConfig) -> Result<BTreeMap<String, ProviderSpec>, SpecError> {
    let mut out = BTreeMap::new();
    for p in PRESETS {
        let spec = ProviderSpec {
            name: p.name.to_string(),
            adapter: p.adapter,
            api: Api::ChatCompletions,
            base_url: p.base_url.to_string(),
            key_env: p.key_env.map(str::to_string),
            keyless: p.key_env.is_none(),
            models: p.models.iter().map(|m| m.to_string()).collect(),
            headers: BTreeMap::new(),
            max_tokens_field: if p.name == "openai" { "max_completion_tokens" } else { "max_tokens" }.to_string(),
            stream_usage: true,
            api_version: "2023-06-01".to_string(),
        };
        out.insert(p.name.to_string(), spec);
    }
    for (name, c) in config {
        let err = |field: &str, message: &str| SpecError {
            key: format!("providers.{name}{}{field}", if field.is_empty() { "" } else { "." }),
            message: message.to_string(),
        };
        if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
            return Err(err("", "a provider name must be non-empty, without `/` or spaces"));
        }
        if c.disabled {
            out.remove(name);
            continue;
        }
        let mut spec = match out.remove(name) {
            Some(s) => s,
            None => {
                let adapter = c.adapter.ok_or_else(|| {
                    err("adapter", "a custom provider needs `adapter` (openai, anthropic, gemini or ollama)")
                })?;
                let base_url =
                    c.base_url.clone().ok_or_else(|| err("base_url", "a custom provider needs `base_url`"))?;
                ProviderSpec {
                    name: name.clone(),
                    adapter,
                    api: Api::ChatCompletions,
                    base_url,
                    key_env: None,
                    keyless: c.key_env.is_none(),
                    models: Vec::new(),
                    headers: BTreeMap::new(),
                    max_tokens_field: "max_tokens".into(),
                    stream_usage: true,
                    api_version: "2023-06-01".into(),
                }
            }
        };
        if let Some(a) = c.adapter {
            spec.adapter = a;
        }
        if let Some(api) = c.api {
            spec.api = api;
        }
        if spec.api == Api::Responses && spec.adapter != AdapterKind::Openai {
            return Err(err("api", "`responses` is an OpenAI API: it needs `adapter = \"openai\"`"));
        }
        if let Some(u) = &c.base_url {
            spec.base_url.clone_from(u);
        }
        if let Some(k) = &c.key_env {
            spec.key_env = Some(k.clone()).filter(|k| !k.is_empty());
            spec.keyless = spec.key_env.is_none();
        }
        if let Some(k) = c.keyless {
            spec.keyless = k;
        }
        if let Some(m) = &c.models {
            spec.models.clone_from(m);
        }
        spec.headers.extend(c.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(f) = &c.max_tokens_field {
            if f != "max_tokens" && f != "max_completion_tokens" {
                return Err(err("max_tokens_field", "must be `max_tokens` or `max_completion_tokens`"));
            }
            spec.max_tokens_field.clone_from(f);
        }
        if let Some(s) = c.stream_usage {
            spec.stream_usage = s;
        }
        if let Some(v) = &c.api_version {
            spec.api_version.clone_from(v);
        }
        if let Some(id) = &c.account_id {
            spec.base_url = spec.base_url.replace("{account_id}", id);
        }
        match reqwest::Url::parse(&spec.base_url.replace("{account_id}", "x")) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => return Err(err("base_url", "must be an http(s) URL")),
        }
        for h in spec.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(err("headers", &format!("`{h}` is not a valid header name")));
            }
        }
        out.insert(name.clone(), spec);
    }
    Ok(out)
}

/// Every provider the daemon runs (presets merged with `[providers.*]`) written back as config
/// entries with every field set (`config show`).
pub fn effective(config: &ProvidersConfig) -> Result<ProvidersConfig, SpecError> {
    Ok(resolve(config)?
        .into_values()
        .map(|s| {
            let entry = ProviderConfig {
                adapter: Some(s.adapter),
                // Meaningful only for the openai adapter; not shown on the others.
                api: (s.adapter == AdapterKind::Openai).then_some(s.api),
                base_url: Some(s.base_url),
                key_env: s.key_env,
                keyless: Some(s.keyless),
                models: Some(s.models),
                headers: s.headers,
                account_id: config.get(&s.name).and_then(|c| c.account_id.clone()),
                max_tokens_field: Some(s.max_tokens_field),
                stream_usage: Some(s.stream_usage),
                api_version: Some(s.api_version),
                disabled: false,
            };
            (s.name, entry)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn presets_cover_every_named_provider() {
        let all = resolve(&ProvidersConfig::new()).unwrap();
        for name in [
            "openai",
            "anthropic",
            "gemini",
            "groq",
            "together",
            "openrouter",
            "deepseek",
            "mistral",
            "cloudflare",
            "ollama",
        ] {
            assert!(all.contains_key(name), "{name}");
        }
        assert!(all["ollama"].keyless);
        assert_eq!(all["ollama"].base_url, "http://localhost:11434/v1");
        assert_eq!(all["openai"].key_env.as_deref(), Some("OPENAI_API_KEY"));
    }

    #[test]
    fn override_custom_and_cloudflare_account() {
        let text = r#"
            [openai]
            base_url = "http://127.0.0.1:9/v1"
            [cloudflare]
            account_id = "abc123"
            [local]
            adapter = "openai"
            base_url = "http://127.0.0.1:8000/v1"
            models = ["qwen"]
            [mistral]
            disabled = true
        "#;
        let cfg: ProvidersConfig = toml::from_str(text).unwrap();
        let all = resolve(&cfg).unwrap();
        assert_eq!(all["openai"].base_url, "http://127.0.0.1:9/v1");
        assert_eq!(all["openai"].key_env.as_deref(), Some("OPENAI_API_KEY"));
        assert_eq!(all["cloudflare"].base_url, "https://api.cloudflare.com/client/v4/accounts/abc123/ai/v1");
        assert!(all["local"].keyless);
        assert!(!all.contains_key("mistral"));
        let bad: ProvidersConfig = toml::from_str("[x]\nbase_url = \"http://a\"\n").unwrap();
        assert_eq!(resolve(&bad).unwrap_err().key, "providers.x.adapter");
        let bad: ProvidersConfig = toml::from_str("[openai]\nbase_url = \"ftp://a\"\n").unwrap();
        assert_eq!(resolve(&bad).unwrap_err().key, "providers.openai.base_url");
    }

    #[test]
    fn api_responses_only_on_the_openai_adapter() {
        let cfg: ProvidersConfig = toml::from_str(
            "[openai]\napi = \"responses\"\n[oai]\nadapter = \"openai\"\napi = \"responses\"\nbase_url = \"http://127.0.0.1:9/v1\"\n[groq]\napi = \"chat_completions\"\n",
        )
        .unwrap();
        let all = resolve(&cfg).unwrap();
        assert_eq!(all["openai"].api, Api::Responses);
        assert_eq!(all["oai"].api, Api::Responses);
        assert_eq!(all["groq"].api, Api::ChatCompletions);
        assert_eq!(all["anthropic"].api, Api::ChatCompletions);
        // Written back with every field set, and read again unchanged.
        let back = effective(&cfg).unwrap();
        assert_eq!(back["openai"].api, Some(Api::Responses));
        assert_eq!(back["groq"].api, Some(Api::ChatCompletions));
        assert_eq!(back["anthropic"].api, None);
        assert_eq!(resolve(&back).unwrap(), all);
        for text in ["[anthropic]\napi = \"responses\"\n", "[openai]\nadapter = \"gemini\"\napi = \"responses\"\n"] {
            let bad: ProvidersConfig = toml::from_str(text).unwrap();
            let e = resolve(&bad).unwrap_err();
            assert!(e.key.ends_with(".api"), "{e}");
            assert!(e.message.contains("openai"), "{e}");
        }
        assert!(toml::from_str::<ProvidersConfig>("[openai]\napi = \"assistants\"\n").is_err());
    }
}
