//! Tier gates: which (provider, model) and which features (tools, images, documents) a tier may
//! use, and the cheapest tier that allows a call.
//!
//! Model globs (`*` any run, `?` one character) match either the bare model id or
//! `provider/model`; `deny_models` wins over `models`. `tools = false` forbids tools, `tools =
//! ["search_*"]` allows only tools whose name matches a glob; `images = false` forbids image and
//! document parts.

use super::config::{TierConfig, TiersConfig, ToolsRule};
use super::Features;

/// Whether `pattern` matches all of `text`.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn any_glob(globs: &[String], provider: &str, model: &str) -> bool {
    let full = format!("{provider}/{model}");
    globs.iter().any(|g| glob(g, model) || glob(g, &full))
}

/// Whether `tier` lets a call go to `provider`/`model`.
pub fn allows(tier: &TierConfig, provider: &str, model: &str) -> bool {
    if tier.providers.as_ref().is_some_and(|ps| !ps.iter().any(|p| p == provider)) {
        return false;
    }
    if tier.models.as_ref().is_some_and(|g| !any_glob(g, provider, model)) {
        return false;
    }
    !any_glob(&tier.deny_models, provider, model)
}

/// Whether `tier` allows the features of a call; else the first feature it forbids (`tools`,
/// `tool:<name>`, `images`, `documents`).
pub fn allows_features(tier: &TierConfig, f: &Features) -> Result<(), String> {
    match &tier.tools {
        Some(ToolsRule::All(false)) if f.uses_tools => return Err("tools".into()),
        Some(ToolsRule::Globs(globs)) => {
            if let Some(name) = f.tools.iter().find(|n| !globs.iter().any(|g| glob(g, n))) {
                return Err(format!("tool:{name}"));
            }
        }
        _ => {}
    }
    if tier.images == Some(false) {
        if f.images {
            return Err("images".into());
        }
        if f.documents {
            return Err("documents".into());
        }
    }
    Ok(())
}

/// The cheapest tier (lowest rank, then name) that allows `provider`/`model` with `features`.
pub fn cheapest_allowing<'a>(
    tiers: &'a TiersConfig,
    provider: &str,
    model: &str,
    features: &Features,
) -> Option<&'a str> {
    tiers
        .iter()
        .filter(|(_, t)| allows(t, provider, model) && allows_features(t, features).is_ok())
        .min_by_key(|(name, t)| (t.rank, name.as_str()))
        .map(|(name, _)| name.as_str())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("claude-*haiku*", "claude-3-5-haiku-latest"));
        assert!(glob("*", ""));
        assert!(glob("gpt-4?", "gpt-4o"));
        assert!(!glob("gpt-4?", "gpt-4o-mini"));
        assert!(glob("openai/*", "openai/gpt-4o"));
        assert!(!glob("a*b", "acbx"));
    }

    #[test]
    fn allow_deny_and_cheapest() {
        let tiers: TiersConfig = toml::from_str(
            "[free]\nrank = 0\nproviders = [\"ollama\"]\n[pro]\nrank = 1\nmodels = [\"*\"]\ndeny_models = [\"*o1*\"]\n[max]\nrank = 2\n",
        )
        .unwrap();
        assert!(allows(&tiers["free"], "ollama", "llama3"));
        assert!(!allows(&tiers["free"], "openai", "gpt-4o"));
        assert!(!allows(&tiers["pro"], "openai", "o1-preview"));
        let none = Features::default();
        assert_eq!(cheapest_allowing(&tiers, "openai", "gpt-4o", &none), Some("pro"));
        assert_eq!(cheapest_allowing(&tiers, "openai", "o1-preview", &none), Some("max"));
        assert_eq!(cheapest_allowing(&tiers, "ollama", "x", &none), Some("free"));
    }

    #[test]
    fn feature_gates() {
        let tiers: TiersConfig = toml::from_str(
            "[free]\nrank = 0\ntools = false\nimages = false\n[basic]\nrank = 1\ntools = [\"search_*\"]\n[pro]\nrank = 2\n",
        )
        .unwrap();
        let tools = |names: &[&str]| Features {
            tools: names.iter().map(|n| n.to_string()).collect(),
            uses_tools: true,
            ..Features::default()
        };
        assert_eq!(allows_features(&tiers["free"], &tools(&["search_web"])), Err("tools".into()));
        assert_eq!(allows_features(&tiers["basic"], &tools(&["search_web"])), Ok(()));
        assert_eq!(allows_features(&tiers["basic"], &tools(&["search_web", "run_code"])), Err("tool:run_code".into()));
        assert_eq!(cheapest_allowing(&tiers, "openai", "gpt-4o", &tools(&["search_web"])), Some("basic"));
        assert_eq!(cheapest_allowing(&tiers, "openai", "gpt-4o", &tools(&["run_code"])), Some("pro"));
        let images = Features { images: true, ..Features::default() };
        assert_eq!(allows_features(&tiers["free"], &images), Err("images".into()));
        assert_eq!(cheapest_allowing(&tiers, "openai", "gpt-4o", &images), Some("basic"));
        assert_eq!(allows_features(&tiers["free"], &Features::default()), Ok(()));
    }
}
