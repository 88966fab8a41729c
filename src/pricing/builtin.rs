//! The built-in price table: list prices of the preset providers' common models.
//!
//! Every block says where its prices come from and when they were checked. The provider's own
//! page wins; LiteLLM's `model_prices_and_context_window.json` (BerriAI/litellm, MIT) is the
//! cross-check. The test below loads the committed subset of that file
//! (`tests/fixtures/litellm-prices-subset.json`) with the project's own loader and fails on any
//! built-in price that differs from it, unless the model is listed, with the reason, as absent
//! from that LiteLLM version or as priced differently on the provider's page.
//!
//! `cached` is the cache-read price and `cache_write` the (5-minute) cache-write price; where a
//! provider publishes neither, both equal the input price (as the LiteLLM loader assumes).
//! Prices are for the standard tier and the base context tier (Gemini 2.5 Pro: prompts up to
//! 200k tokens); batch, flex, priority and long-context surcharges are not modelled.

use super::Price;

const M: i64 = 1_000_000;

/// `(provider, model, Price::new(input, output, cached, cache_write))`, micro-dollars per 1M tokens.
pub(super) const BUILTIN: &[(&str, &str, Price)] = &[
    // OpenAI. LiteLLM at 19a1f62 (read 2026-11-23); gpt-5-nano also as published at
    // developers.openai.com/api/docs/models/gpt-5-nano, read via the stored docs corpus on
    // 2026-11-23. OpenAI charges nothing extra for cache writes.
    ("openai", "gpt-4o", Price::new(2_500_000, 10_000_000, 1_250_000, 2_500_000)),
    ("openai", "gpt-4o-mini", Price::new(150_000, 600_000, 75_000, 150_000)),
    ("openai", "gpt-4.1", Price::new(2_000_000, 8_000_000, 500_000, 2_000_000)),
    ("openai", "gpt-4.1-mini", Price::new(400_000, 1_600_000, 100_000, 400_000)),
    ("openai", "gpt-4.1-nano", Price::new(100_000, 400_000, 25_000, 100_000)),
    ("openai", "o3", Price::new(2_000_000, 8_000_000, 500_000, 2_000_000)),
    // Without its own entry `o3-mini` would be priced as `o3`.
    ("openai", "o3-mini", Price::new(1_100_000, 4_400_000, 550_000, 1_100_000)),
    ("openai", "o4-mini", Price::new(1_100_000, 4_400_000, 275_000, 1_100_000)),
    ("openai", "gpt-5", Price::new(1_250_000, 10_000_000, 125_000, 1_250_000)),
    ("openai", "gpt-5-mini", Price::new(250_000, 2_000_000, 25_000, 250_000)),
    ("openai", "gpt-5-nano", Price::new(50_000, 400_000, 5_000, 50_000)),
    // Anthropic, as published at platform.claude.com/docs/en/docs/about-claude/pricing and the
    // model pages (models/opus-4-8, opus-5, opus-5-5, sonnet-5), read via the stored docs corpus
    // on 2026-11-23; the older rows agree with LiteLLM at 19a1f62. Cache reads 0.1× input,
    // 5-minute cache writes 1.25× input (Opus 5.5: $0.20 read, $5 write). `claude-opus-4` also
    // prices `claude-opus-4-0` and `-20250514`; `claude-sonnet-4` prices `claude-sonnet-4-0`;
    // Opus 4.5 and later need their own rows, or the `claude-opus-4` prefix would price them at
    // $15/$75.
    ("anthropic", "claude-opus-4", Price::new(15 * M, 75 * M, 1_500_000, 18_750_000)),
    ("anthropic", "claude-opus-4-1", Price::new(15 * M, 75 * M, 1_500_000, 18_750_000)),
    ("anthropic", "claude-opus-4-5", Price::new(5 * M, 25 * M, 500_000, 6_250_000)),
    ("anthropic", "claude-opus-4-6", Price::new(5 * M, 25 * M, 500_000, 6_250_000)),
    ("anthropic", "claude-opus-4-7", Price::new(5 * M, 25 * M, 500_000, 6_250_000)),
    ("anthropic", "claude-opus-4-8", Price::new(5 * M, 25 * M, 500_000, 6_250_000)),
    ("anthropic", "claude-opus-5", Price::new(5 * M, 25 * M, 500_000, 6_250_000)),
    ("anthropic", "claude-opus-5-5", Price::new(4 * M, 20 * M, 200_000, 5 * M)),
    ("anthropic", "claude-sonnet-4", Price::new(3 * M, 15 * M, 300_000, 3_750_000)),
    ("anthropic", "claude-sonnet-4-5", Price::new(3 * M, 15 * M, 300_000, 3_750_000)),
    ("anthropic", "claude-sonnet-4-6", Price::new(3 * M, 15 * M, 300_000, 3_750_000)),
    ("anthropic", "claude-sonnet-5", Price::new(2 * M, 10 * M, 200_000, 2_500_000)),
    ("anthropic", "claude-3-7-sonnet", Price::new(3 * M, 15 * M, 300_000, 3_750_000)),
    ("anthropic", "claude-haiku-4-5", Price::new(M, 5 * M, 100_000, 1_250_000)),
    ("anthropic", "claude-3-5-haiku", Price::new(800_000, 4 * M, 80_000, M)),
    // Google Gemini. LiteLLM at 19a1f62 (its entries cite ai.google.dev/gemini-api/docs/pricing),
    // read 2026-11-23; Google's pricing page itself is not in the stored corpus. Prompts up to
    // 200k tokens; thinking is billed as output.
    ("gemini", "gemini-2.5-pro", Price::new(1_250_000, 10_000_000, 312_500, 1_250_000)),
    ("gemini", "gemini-2.5-flash", Price::new(300_000, 2_500_000, 75_000, 300_000)),
    ("gemini", "gemini-2.5-flash-lite", Price::new(100_000, 400_000, 25_000, 100_000)),
    ("gemini", "gemini-2.0-flash", Price::new(100_000, 400_000, 25_000, 100_000)),
    ("gemini", "gemini-2.0-flash-lite", Price::new(75_000, 300_000, 18_750, 75_000)),
    // Groq. LiteLLM at 19a1f62, read 2026-11-23 (groq.com/pricing is not in the stored corpus).
    ("groq", "llama-3.1-8b-instant", Price::new(50_000, 80_000, 50_000, 50_000)),
    ("groq", "llama-3.3-70b-versatile", Price::new(590_000, 790_000, 590_000, 590_000)),
    ("groq", "openai/gpt-oss-120b", Price::new(150_000, 750_000, 150_000, 150_000)),
    ("groq", "openai/gpt-oss-20b", Price::new(100_000, 500_000, 100_000, 100_000)),
    ("groq", "meta-llama/llama-4-scout-17b-16e-instruct", Price::new(110_000, 340_000, 110_000, 110_000)),
    // Together. LiteLLM at 19a1f62 (the newer entries cite together.ai/models/*), read
    // 2026-11-23.
    ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo", Price::new(880_000, 880_000, 880_000, 880_000)),
    ("together", "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo", Price::new(180_000, 180_000, 180_000, 180_000)),
    ("together", "deepseek-ai/DeepSeek-V3", Price::new(1_250_000, 1_250_000, 1_250_000, 1_250_000)),
    ("together", "deepseek-ai/DeepSeek-V3.1", Price::new(600_000, 1_700_000, 600_000, 600_000)),
    ("together", "openai/gpt-oss-120b", Price::new(150_000, 600_000, 150_000, 150_000)),
    // OpenRouter. gpt-4o-mini as published at openrouter.ai/models/openai/gpt-4o-mini (no cache
    // price listed), the others LiteLLM at 19a1f62; read 2026-11-23.
    ("openrouter", "openai/gpt-4o-mini", Price::new(150_000, 600_000, 150_000, 150_000)),
    ("openrouter", "anthropic/claude-sonnet-4.5", Price::new(3 * M, 15 * M, 300_000, 3_750_000)),
    ("openrouter", "google/gemini-2.5-flash", Price::new(300_000, 2_500_000, 300_000, 300_000)),
    // DeepSeek, as published at api-docs.deepseek.com/quick_start/pricing (the V4 page after the
    // 2026-04-26 cache-hit cut, read via a verbatim copy in the stored web corpus on 2026-11-23):
    // `deepseek-chat` / `deepseek-reasoner` are the non-thinking / thinking modes of
    // deepseek-v4-flash; deepseek-v4-pro at its reduced (1/4) price. Cache miss = input; DeepSeek
    // charges nothing for cache writes.
    ("deepseek", "deepseek-chat", Price::new(140_000, 280_000, 2_800, 140_000)),
    ("deepseek", "deepseek-reasoner", Price::new(140_000, 280_000, 2_800, 140_000)),
    ("deepseek", "deepseek-v4-flash", Price::new(140_000, 280_000, 2_800, 140_000)),
    ("deepseek", "deepseek-v4-pro", Price::new(435_000, 870_000, 3_625, 435_000)),
    // Mistral. LiteLLM at 19a1f62, read 2026-11-23 (mistral.ai/pricing is not in the stored
    // corpus). `-latest` names follow Mistral's newest model of that line.
    ("mistral", "mistral-large-latest", Price::new(2 * M, 6 * M, 2 * M, 2 * M)),
    ("mistral", "mistral-medium-latest", Price::new(400_000, 2 * M, 400_000, 400_000)),
    ("mistral", "mistral-small-latest", Price::new(100_000, 300_000, 100_000, 100_000)),
    ("mistral", "codestral-latest", Price::new(M, 3 * M, M, M)),
    ("mistral", "open-mistral-nemo", Price::new(300_000, 300_000, 300_000, 300_000)),
    // Cloudflare Workers AI, as published at developers.cloudflare.com/workers-ai/platform/pricing
    // (cloudflare/cloudflare-docs, src/content/docs/workers-ai/platform/pricing.mdx at 04d268c),
    // read 2026-11-23. Billed in neurons at $0.011 / 1k; these are the published USD equivalents.
    ("cloudflare", "@cf/meta/llama-3.1-8b-instruct", Price::new(282_000, 827_000, 282_000, 282_000)),
    ("cloudflare", "@cf/meta/llama-3.3-70b-instruct-fp8-fast", Price::new(293_000, 2_253_000, 293_000, 293_000)),
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::super::PriceTable;
    use super::BUILTIN;
    use crate::providers::presets::{self, ProvidersConfig};

    /// BerriAI/litellm `model_prices_and_context_window.json` at 19a1f62, reduced to the entries
    /// of the models below (see `tests/fixtures/litellm-prices-subset.md`).
    const LITELLM_SUBSET: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/litellm-prices-subset.json"));

    /// Built-in names that LiteLLM keys by a dated snapshot: `(provider, built-in, LiteLLM name)`.
    const LITELLM_NAME: &[(&str, &str, &str)] = &[
        ("anthropic", "claude-opus-4", "claude-opus-4-20250514"),
        ("anthropic", "claude-sonnet-4", "claude-sonnet-4-20250514"),
        ("anthropic", "claude-3-7-sonnet", "claude-3-7-sonnet-20250219"),
        ("anthropic", "claude-3-5-haiku", "claude-3-5-haiku-20241022"),
    ];

    /// Models that LiteLLM at 19a1f62 does not price; their rows cite the provider's page.
    /// If a refreshed subset gains one of them, the test fails so that it gets compared.
    const NOT_IN_LITELLM: &[(&str, &str, &str)] = &[
        ("anthropic", "claude-opus-4-5", "released after the LiteLLM commit"),
        ("anthropic", "claude-opus-4-6", "released after the LiteLLM commit"),
        ("anthropic", "claude-opus-4-7", "released after the LiteLLM commit"),
        ("anthropic", "claude-opus-4-8", "released after the LiteLLM commit"),
        ("anthropic", "claude-opus-5", "released after the LiteLLM commit"),
        ("anthropic", "claude-opus-5-5", "released after the LiteLLM commit"),
        ("anthropic", "claude-sonnet-4-6", "released after the LiteLLM commit"),
        ("anthropic", "claude-sonnet-5", "released after the LiteLLM commit"),
        ("openrouter", "openai/gpt-4o-mini", "LiteLLM has no openrouter/openai/gpt-4o-mini entry"),
        ("deepseek", "deepseek-v4-flash", "released after the LiteLLM commit"),
        ("deepseek", "deepseek-v4-pro", "released after the LiteLLM commit"),
        ("cloudflare", "@cf/meta/llama-3.1-8b-instruct", "LiteLLM lists only older Workers AI models"),
        ("cloudflare", "@cf/meta/llama-3.3-70b-instruct-fp8-fast", "LiteLLM lists only older Workers AI models"),
    ];

    /// Models where the provider's page and LiteLLM disagree; the provider wins. If LiteLLM
    /// catches up, the test fails so that the entry is dropped from this list.
    const PROVIDER_DIFFERS: &[(&str, &str, &str)] = &[
        (
            "deepseek",
            "deepseek-chat",
            "LiteLLM still has the 2025 DeepSeek-V3 price ($0.27 in / $1.10 out / $0.07 hit); the \
             DeepSeek page maps the name to deepseek-v4-flash ($0.14 / $0.28 / $0.0028)",
        ),
        (
            "deepseek",
            "deepseek-reasoner",
            "LiteLLM still has the 2025 DeepSeek-R1 price ($0.55 in / $2.19 out); the DeepSeek page \
             maps the name to deepseek-v4-flash thinking mode ($0.14 / $0.28 / $0.0028)",
        ),
    ];

    /// Preset models without a built-in price (they cost 0 unless `[pricing.models]` prices them).
    const UNPRICED_PRESET_MODELS: &[(&str, &str, &str)] = &[(
        "together",
        "Qwen/Qwen2.5-72B-Instruct-Turbo",
        "LiteLLM has the model without a price and Together's page is not in the stored corpus",
    )];

    fn listed(list: &[(&str, &str, &str)], provider: &str, model: &str) -> bool {
        list.iter().any(|(p, m, _)| *p == provider && *m == model)
    }

    #[test]
    fn builtin_prices_match_the_litellm_subset() {
        let mut litellm = PriceTable::default();
        let loaded = litellm.merge_litellm(LITELLM_SUBSET).unwrap();
        let mut problems = Vec::new();
        let mut compared = 0;
        for (provider, model, price) in BUILTIN {
            let name = LITELLM_NAME.iter().find(|(p, m, _)| p == provider && m == model).map_or(*model, |(_, _, n)| *n);
            // Exact names only: the prefix fallback of `lookup` must not stand in for an entry.
            let theirs = litellm.by_provider.get(*provider).and_then(|models| models.get(name)).copied();
            let absent = listed(NOT_IN_LITELLM, provider, model);
            let differs = listed(PROVIDER_DIFFERS, provider, model);
            match theirs {
                None if absent => {}
                None => problems.push(format!("{provider}/{model}: no LiteLLM entry `{name}` in the subset")),
                Some(_) if absent => problems.push(format!(
                    "{provider}/{model}: now in the LiteLLM subset; compare it and drop it from NOT_IN_LITELLM"
                )),
                Some(theirs) if differs => {
                    if theirs == *price {
                        problems.push(format!("{provider}/{model}: LiteLLM now agrees; drop it from PROVIDER_DIFFERS"));
                    }
                }
                Some(theirs) => {
                    compared += 1;
                    if theirs != *price {
                        problems.push(format!("{provider}/{model}: built-in {price:?} != LiteLLM `{name}` {theirs:?}"));
                    }
                }
            }
        }
        for (provider, model, _) in NOT_IN_LITELLM.iter().chain(PROVIDER_DIFFERS).chain(LITELLM_NAME.iter()) {
            if !BUILTIN.iter().any(|(p, m, _)| p == provider && m == model) {
                problems.push(format!("{provider}/{model}: listed in the test but not a built-in"));
            }
        }
        assert!(problems.is_empty(), "{} mismatches:\n{}", problems.len(), problems.join("\n"));
        assert!(compared >= 30, "only {compared} built-ins were compared with LiteLLM");
        assert!(loaded >= compared, "{loaded} LiteLLM entries loaded");
    }

    #[test]
    fn every_preset_model_has_a_price() {
        let table = PriceTable::builtin();
        let mut missing = Vec::new();
        for spec in presets::resolve(&ProvidersConfig::new()).unwrap().into_values() {
            if spec.name == "ollama" {
                continue; // local, free
            }
            for model in &spec.models {
                let known = table.lookup(&spec.name, model).is_some();
                let excused = listed(UNPRICED_PRESET_MODELS, &spec.name, model);
                if known == excused {
                    missing.push(format!("{}/{model} (priced: {known}, listed as unpriced: {excused})", spec.name));
                }
            }
        }
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }

    #[test]
    fn newer_models_are_not_priced_by_an_older_prefix() {
        let table = PriceTable::builtin();
        let input = |provider: &str, model: &str| table.lookup(provider, model).unwrap().input;
        assert_eq!(input("anthropic", "claude-opus-4-5-20251101"), 5_000_000);
        assert_eq!(input("anthropic", "claude-opus-4-0"), 15_000_000);
        assert_eq!(input("anthropic", "claude-opus-4-20250514"), 15_000_000);
        assert_eq!(input("anthropic", "claude-opus-5-5"), 4_000_000);
        assert_eq!(input("anthropic", "claude-sonnet-4-0"), 3_000_000);
        assert_eq!(input("openai", "o3-mini-2025-01-31"), 1_100_000);
        assert_eq!(input("openai", "o3-2025-04-16"), 2_000_000);
    }
}
