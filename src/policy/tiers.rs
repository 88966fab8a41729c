//! Tier gates: which (provider, model) a tier may use, and the cheapest tier that allows one.
//!
//! Model globs (`*` any run, `?` one character) match either the bare model id or
//! `provider/model`; `deny_models` wins over `models`.

use super::config::{TierConfig, TiersConfig};

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

/// The cheapest tier (lowest rank, then name) that allows `provider`/`model`.
pub fn cheapest_allowing<'a>(tiers: &'a TiersConfig, provider: &str, model: &str) -> Option<&'a str> {
    tiers
        .iter()
        .filter(|(_, t)| allows(t, provider, model))
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
        assert_eq!(cheapest_allowing(&tiers, "openai", "gpt-4o"), Some("pro"));
        assert_eq!(cheapest_allowing(&tiers, "openai", "o1-preview"), Some("max"));
        assert_eq!(cheapest_allowing(&tiers, "ollama", "x"), Some("free"));
    }
}
