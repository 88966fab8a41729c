//! Model prices and cost arithmetic, in integer micro-dollars.
//!
//! A [`Price`] is micro-dollars per million tokens for uncached input, cached input (cache
//! reads), cache writes and output, so published prices ($0.15 / 1M tokens = 150 000) are exact
//! integers. The table is built from, in increasing precedence: the built-in prices of the
//! presets' common models (`builtin.rs`: the providers' published list prices, each block citing
//! its source and the date checked, tested against a committed subset of LiteLLM's price file),
//! a price file in LiteLLM's `model_prices_and_context_window.json` format
//! (`[pricing] price_file`), and `[pricing.models."provider/model"]` overrides (USD per million
//! tokens).
//!
//! Lookup is by provider and model: an exact match, else the longest known model name that the
//! requested one starts with followed by `-` (so `gpt-4o-mini-2024-07-18` is priced as
//! `gpt-4o-mini`, `claude-sonnet-4-5-20250929` as `claude-sonnet-4-5`). Unknown models cost 0.
//! [`cost_microusd`] sums the five parts (reasoning tokens at their own price where the table has
//! one) exactly and rounds half up once, at the end.

mod builtin;

use crate::usage_record::TokenUsage;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Micro-dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Price {
    pub input: i64,
    pub output: i64,
    /// Cache reads.
    pub cached: i64,
    /// Cache writes (Anthropic `cache_creation_input_tokens`).
    pub cache_write: i64,
    /// Reasoning tokens (part of the output); the output price unless the table has its own.
    pub reasoning: i64,
}

impl Price {
    const fn new(input: i64, output: i64, cached: i64, cache_write: i64) -> Price {
        Price { input, output, cached, cache_write, reasoning: output }
    }
}

/// `[pricing]` in config.toml.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PricingConfig {
    /// A JSON file in LiteLLM's `model_prices_and_context_window.json` format.
    pub price_file: Option<PathBuf>,
    /// `"provider/model" = { input, output, cached?, cache_write? }` in USD per million tokens.
    pub models: BTreeMap<String, PriceConfig>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub input: f64,
    pub output: f64,
    /// Default: the input price.
    pub cached: Option<f64>,
    /// Default: the input price.
    pub cache_write: Option<f64>,
    /// Reasoning output tokens. Default: the output price.
    pub reasoning: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("cannot read price file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("price file {path} is not LiteLLM price JSON: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// LiteLLM's `litellm_provider` values and the preset they price.
const LITELLM_PROVIDERS: &[(&str, &str)] = &[
    ("openai", "openai"),
    ("anthropic", "anthropic"),
    ("gemini", "gemini"),
    ("groq", "groq"),
    ("together_ai", "together"),
    ("openrouter", "openrouter"),
    ("deepseek", "deepseek"),
    ("mistral", "mistral"),
    ("cloudflare", "cloudflare"),
    ("ollama", "ollama"),
];

/// Prices by provider, then model.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    by_provider: HashMap<String, BTreeMap<String, Price>>,
}

impl PriceTable {
    /// Built-in prices only.
    pub fn builtin() -> PriceTable {
        let mut t = PriceTable::default();
        for (provider, model, price) in builtin::BUILTIN {
            t.insert(provider, model, *price);
        }
        t
    }

    /// Built-ins, then the price file (relative paths are relative to `base_dir`), then overrides.
    pub fn load(config: &PricingConfig, base_dir: &Path) -> Result<PriceTable, PricingError> {
        let mut t = PriceTable::builtin();
        if let Some(file) = &config.price_file {
            let path = if file.is_relative() { base_dir.join(file) } else { file.clone() };
            let text =
                std::fs::read_to_string(&path).map_err(|source| PricingError::Read { path: path.clone(), source })?;
            t.merge_litellm(&text).map_err(|message| PricingError::Parse { path, message })?;
        }
        for (key, p) in &config.models {
            let invalid = |message: &str| PricingError::Invalid {
                key: format!("pricing.models.\"{key}\""),
                message: message.into(),
            };
            let (provider, model) = key.split_once('/').ok_or_else(|| invalid("the key must be `provider/model`"))?;
            let price = Price {
                input: usd_per_mtok(p.input).ok_or_else(|| invalid("`input` must be a non-negative number"))?,
                output: usd_per_mtok(p.output).ok_or_else(|| invalid("`output` must be a non-negative number"))?,
                cached: usd_per_mtok(p.cached.unwrap_or(p.input))
                    .ok_or_else(|| invalid("`cached` must be a non-negative number"))?,
                cache_write: usd_per_mtok(p.cache_write.unwrap_or(p.input))
                    .ok_or_else(|| invalid("`cache_write` must be a non-negative number"))?,
                reasoning: usd_per_mtok(p.reasoning.unwrap_or(p.output))
                    .ok_or_else(|| invalid("`reasoning` must be a non-negative number"))?,
            };
            t.insert(provider, model, price);
        }
        Ok(t)
    }

    pub fn insert(&mut self, provider: &str, model: &str, price: Price) {
        self.by_provider.entry(provider.to_string()).or_default().insert(model.to_string(), price);
    }

    /// Reads LiteLLM's format: `{model: {litellm_provider, input_cost_per_token, output_cost_per_token,
    /// cache_read_input_token_cost?, cache_creation_input_token_cost?, mode?}}` (USD per token).
    pub fn merge_litellm(&mut self, text: &str) -> Result<usize, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let entries = v.as_object().ok_or("the top level must be an object")?;
        let mut added = 0;
        for (key, e) in entries {
            let Some(litellm) = e.get("litellm_provider").and_then(|p| p.as_str()) else { continue };
            let mode = e.get("mode").and_then(|m| m.as_str()).unwrap_or("chat");
            if mode != "chat" {
                continue;
            }
            let provider = LITELLM_PROVIDERS.iter().find(|(l, _)| *l == litellm).map_or(litellm, |(_, p)| *p);
            let model = key
                .strip_prefix(&format!("{litellm}/"))
                .or_else(|| key.strip_prefix(&format!("{provider}/")))
                .unwrap_or(key);
            let per_token = |field: &str| e.get(field).and_then(serde_json::Value::as_f64).and_then(usd_per_token);
            let (Some(input), Some(output)) = (per_token("input_cost_per_token"), per_token("output_cost_per_token"))
            else {
                continue;
            };
            let price = Price {
                input,
                output,
                cached: per_token("cache_read_input_token_cost").unwrap_or(input),
                cache_write: per_token("cache_creation_input_token_cost").unwrap_or(input),
                reasoning: per_token("output_cost_per_reasoning_token").unwrap_or(output),
            };
            self.insert(provider, model, price);
            added += 1;
        }
        Ok(added)
    }

    /// The price of `model` at `provider` (exact, else the longest `name-` prefix).
    pub fn lookup(&self, provider: &str, model: &str) -> Option<Price> {
        let models = self.by_provider.get(provider)?;
        if let Some(p) = models.get(model) {
            return Some(*p);
        }
        models
            .iter()
            .filter(|(name, _)| {
                model.len() > name.len() && model.starts_with(name.as_str()) && model.as_bytes()[name.len()] == b'-'
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(_, p)| *p)
    }

    /// Models with a price at `provider`.
    pub fn models(&self, provider: &str) -> impl Iterator<Item = (&String, &Price)> {
        self.by_provider.get(provider).into_iter().flat_map(|m| m.iter())
    }
}

fn usd_per_mtok(usd: f64) -> Option<i64> {
    (0.0..1e9).contains(&usd).then(|| (usd * 1e6).round() as i64)
}

fn usd_per_token(usd: f64) -> Option<i64> {
    (0.0..1e3).contains(&usd).then(|| (usd * 1e12).round() as i64)
}

/// Cost of `usage` in micro-dollars: uncached input, cache reads, cache writes, reasoning and the
/// rest of the output each at their price, summed exactly, then rounded half up.
pub fn cost_microusd(price: &Price, usage: &TokenUsage) -> i64 {
    let uncached = usage.input.saturating_sub(usage.cached).saturating_sub(usage.cache_write);
    let part = |tokens: u64, per_m: i64| i128::from(tokens) * i128::from(per_m);
    let total = part(uncached, price.input)
        + part(usage.cached, price.cached)
        + part(usage.cache_write, price.cache_write)
        + part(usage.output.saturating_sub(usage.reasoning), price.output)
        + part(usage.reasoning.min(usage.output), price.reasoning);
    i64::try_from((total + 500_000) / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn usage(input: u64, output: u64, cached: u64, cache_write: u64) -> TokenUsage {
        TokenUsage { input, output, cached, cache_write, ..TokenUsage::default() }
    }

    #[test]
    fn lookup_exact_and_dated_names() {
        let t = PriceTable::builtin();
        assert_eq!(t.lookup("openai", "gpt-4o-mini").unwrap().input, 150_000);
        assert_eq!(t.lookup("openai", "gpt-4o-mini-2024-07-18").unwrap().input, 150_000);
        assert_eq!(t.lookup("openai", "gpt-4o-2024-08-06").unwrap().input, 2_500_000);
        assert_eq!(t.lookup("anthropic", "claude-sonnet-4-5-20250929").unwrap().output, 15_000_000);
        assert_eq!(t.lookup("anthropic", "claude-3-5-haiku-latest").unwrap().input, 800_000);
        assert!(t.lookup("openai", "gpt-4").is_none());
        assert!(t.lookup("ollama", "llama3.2").is_none());
    }

    #[test]
    fn cost_arithmetic_is_exact() {
        let t = PriceTable::builtin();
        // gpt-4o-mini, 78 in / 9 out: 78*0.15 + 9*0.6 = 11.7 + 5.4 = 17.1 µ$ -> 17
        assert_eq!(cost_microusd(&t.lookup("openai", "gpt-4o-mini").unwrap(), &usage(78, 9, 0, 0)), 17);
        // claude-sonnet-4-5 compaction fixture: 281 uncached*3 + 55096*0.3 + 91*15 = 843 + 16528.8 + 1365
        let p = t.lookup("anthropic", "claude-sonnet-4-5").unwrap();
        assert_eq!(cost_microusd(&p, &usage(55_377, 91, 55_096, 0)), 18_737);
        // cache writes at their own price: 10 uncached*3 + 5*3.75 + 100*0.3 + 3*15 = 30+18.75+30+45
        assert_eq!(cost_microusd(&p, &usage(115, 3, 100, 5)), 124);
        // one million tokens of gpt-4o output: exactly $10
        let p = t.lookup("openai", "gpt-4o").unwrap();
        assert_eq!(cost_microusd(&p, &usage(0, 1_000_000, 0, 0)), 10_000_000);
        // rounding half up
        let p = Price::new(500_000, 0, 0, 0);
        assert_eq!(cost_microusd(&p, &usage(1, 0, 0, 0)), 1);
        assert_eq!(cost_microusd(&p, &usage(0, 0, 0, 0)), 0);
    }

    #[test]
    fn litellm_file_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prices.json");
        std::fs::write(
            &file,
            r#"{
              "sample_spec": {"max_tokens": "set to max_output_tokens"},
              "gpt-4o-mini": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1.6e-07,
                              "output_cost_per_token": 6e-07, "cache_read_input_token_cost": 8e-08},
              "groq/llama-3.1-8b-instant": {"litellm_provider": "groq", "mode": "chat",
                              "input_cost_per_token": 5e-08, "output_cost_per_token": 8e-08},
              "text-embedding-3-small": {"litellm_provider": "openai", "mode": "embedding", "input_cost_per_token": 2e-08, "output_cost_per_token": 0},
              "together_ai/meta-llama/Llama-3-8b": {"litellm_provider": "together_ai", "input_cost_per_token": 2e-07, "output_cost_per_token": 2e-07}
            }"#,
        )
        .unwrap();
        let mut models = BTreeMap::new();
        models.insert(
            "mine/big".to_string(),
            PriceConfig { input: 1.5, output: 2.25, cached: Some(0.5), cache_write: None, reasoning: None },
        );
        let config = PricingConfig { price_file: Some(PathBuf::from("prices.json")), models };
        let t = PriceTable::load(&config, dir.path()).unwrap();
        assert_eq!(t.lookup("openai", "gpt-4o-mini"), Some(Price::new(160_000, 600_000, 80_000, 160_000)));
        assert_eq!(t.lookup("groq", "llama-3.1-8b-instant").unwrap().output, 80_000);
        assert_eq!(t.lookup("together", "meta-llama/Llama-3-8b").unwrap().input, 200_000);
        assert!(t.lookup("openai", "text-embedding-3-small").is_none());
        assert_eq!(t.lookup("mine", "big"), Some(Price::new(1_500_000, 2_250_000, 500_000, 1_500_000)));
        let bad = PricingConfig { price_file: Some(dir.path().join("none.json")), models: BTreeMap::new() };
        assert!(matches!(PriceTable::load(&bad, dir.path()), Err(PricingError::Read { .. })));
        let mut models = BTreeMap::new();
        models.insert("nokey".to_string(), PriceConfig::default());
        let bad = PricingConfig { price_file: None, models };
        assert!(PriceTable::load(&bad, dir.path()).unwrap_err().to_string().contains("pricing.models"));
    }
}
