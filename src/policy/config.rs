//! The policy sections of `config.toml`: `[policy]`, `[tiers.<name>]` and `[account]`.
//!
//! Every limit is optional; an absent limit is unlimited. With no `[tiers]` at all the policy is
//! off and every call is allowed (the daemon's behaviour before policies existed).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `[policy]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySettings {
    /// The tier used without a valid entitlement.
    pub default_tier: Option<String>,
    pub period: PeriodKind,
    /// Fractions of a limit at which `quota.threshold` is emitted (once per period and metric).
    pub thresholds: Vec<f64>,
    /// Output tokens reserved for a call that gives no `max_tokens`.
    pub default_max_tokens: u32,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            default_tier: None,
            period: PeriodKind::default(),
            thresholds: vec![0.8, 0.9],
            default_max_tokens: 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    /// UTC calendar months.
    #[default]
    CalendarMonth,
    /// From the entitlement's `period_start` to its `period_end` (calendar month without one).
    Anchored,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Overage {
    #[default]
    Block,
    Allow,
}

/// `[tiers.<name>.byok]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ByokConfig {
    /// Whether the user's own vault keys may be used on this tier.
    pub allowed: bool,
    /// Whether calls on the user's own key use up the quota (they are recorded either way).
    pub counts_toward_quota: bool,
}

impl Default for ByokConfig {
    fn default() -> Self {
        ByokConfig { allowed: true, counts_toward_quota: false }
    }
}

/// `[tiers.<name>]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TierConfig {
    /// Lower is cheaper; used to name the cheapest tier that allows a call.
    pub rank: i64,
    /// Providers this tier may use; absent = all.
    pub providers: Option<Vec<String>>,
    /// Globs (`*`, `?`) over the model id or `provider/model`; absent = all.
    pub models: Option<Vec<String>>,
    /// Globs that are refused even if `models` allows them.
    pub deny_models: Vec<String>,
    pub monthly_tokens: Option<u64>,
    pub monthly_requests: Option<u64>,
    pub monthly_cost_usd: Option<f64>,
    pub overage: Overage,
    pub overage_price_per_1k_tokens_usd: Option<f64>,
    pub requests_per_minute: Option<u32>,
    pub byok: ByokConfig,
    /// `false` forbids tools; a list allows only tools whose name matches a glob; absent = all.
    pub tools: Option<ToolsRule>,
    /// `false` forbids image and document parts; absent = allowed.
    pub images: Option<bool>,
    /// When calls draw on prepaid credits (`[credits]`).
    pub credits: CreditUse,
    /// A fixed price in credits per call, instead of the provider cost × `[credits] markup`.
    pub credits_per_request: Option<i64>,
    /// A fixed price in credits per 1,000 tokens, instead of the provider cost × markup.
    pub credits_per_1k_tokens: Option<i64>,
}

/// `[tiers.<name>] credits`: when a tier's calls draw on the prepaid credit balance.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CreditUse {
    /// Never: the quota alone decides.
    #[default]
    Never,
    /// The included quota first, then credits instead of `quota_exceeded`.
    AfterQuota,
    /// Every call (pay as you go; the tier's quota does not apply).
    Always,
}

impl CreditUse {
    pub fn as_str(self) -> &'static str {
        match self {
            CreditUse::Never => "never",
            CreditUse::AfterQuota => "after_quota",
            CreditUse::Always => "always",
        }
    }
}

/// `[credits]`: what a prepaid credit is worth and when the balance counts as low.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CreditsConfig {
    /// The value of one credit in micro-dollars (10,000 = one cent).
    pub unit_microusd: i64,
    /// Credits charged = provider cost × markup / unit, rounded up (tiers without a fixed price).
    pub markup: f64,
    /// `credits.low` is emitted once each time the balance falls below this.
    pub low_balance: i64,
}

impl Default for CreditsConfig {
    fn default() -> Self {
        CreditsConfig { unit_microusd: 10_000, markup: 1.0, low_balance: 50 }
    }
}

/// `[tiers.<name>] tools`: `true`/`false`, or globs over tool names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ToolsRule {
    All(bool),
    Globs(Vec<String>),
}

/// `[tiers]`.
pub type TiersConfig = BTreeMap<String, TierConfig>;

/// `[account]`: the entitlement backend and the keys its tokens are verified with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AccountConfig {
    /// Base URL of the backend (`{url}/entitlement`, `{url}/checkout`, `{url}/portal`).
    pub url: Option<String>,
    pub poll_secs: u64,
    /// An Ed25519 or RSA public key (PEM) that signs entitlement tokens.
    pub public_key_pem: Option<String>,
    /// A JWKS document (JSON text) with the signing keys.
    pub jwks: Option<String>,
    /// A file holding a JWKS document (relative to the config file's directory).
    pub jwks_file: Option<PathBuf>,
    /// Accepted algorithms: `EdDSA`, `RS256`.
    pub algorithms: Vec<String>,
    /// When set, a token's `iss` must equal it.
    pub issuer: Option<String>,
    /// When set, a token's `aud` must be or include it.
    pub audience: Option<String>,
}

impl Default for AccountConfig {
    fn default() -> Self {
        AccountConfig {
            url: None,
            poll_secs: 300,
            public_key_pem: None,
            jwks: None,
            jwks_file: None,
            algorithms: vec!["EdDSA".into(), "RS256".into()],
            issuer: None,
            audience: None,
        }
    }
}

/// Checks the three sections together; errors carry the dotted key.
pub fn validate(p: &PolicySettings, tiers: &TiersConfig, account: &AccountConfig) -> Result<(), (String, String)> {
    let err = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
    if let Some(t) = &p.default_tier {
        if !tiers.is_empty() && !tiers.contains_key(t) {
            return err("policy.default_tier", &format!("no tier named `{t}` in [tiers]"));
        }
    } else if !tiers.is_empty() {
        return err("policy.default_tier", "required when [tiers] is set");
    }
    if p.thresholds.iter().any(|f| !(*f > 0.0 && *f <= 1.0)) {
        return err("policy.thresholds", "each threshold must be a fraction in (0, 1]");
    }
    for (name, t) in tiers {
        let k = |f: &str| format!("tiers.{name}.{f}");
        if t.monthly_cost_usd.is_some_and(|c| !(c >= 0.0 && c.is_finite())) {
            return Err((k("monthly_cost_usd"), "must be a non-negative number".into()));
        }
        if t.overage_price_per_1k_tokens_usd.is_some_and(|c| !(c >= 0.0 && c.is_finite())) {
            return Err((k("overage_price_per_1k_tokens_usd"), "must be a non-negative number".into()));
        }
        if t.requests_per_minute == Some(0) {
            return Err((k("requests_per_minute"), "must be at least 1 (omit it for no limit)".into()));
        }
        for (f, v) in
            [("credits_per_request", t.credits_per_request), ("credits_per_1k_tokens", t.credits_per_1k_tokens)]
        {
            if v.is_some_and(|v| v < 0) {
                return Err((k(f), "must be a non-negative whole number of credits".into()));
            }
        }
    }
    if account.poll_secs == 0 {
        return err("account.poll_secs", "must be at least 1");
    }
    for a in &account.algorithms {
        if !matches!(a.as_str(), "EdDSA" | "RS256") {
            return err("account.algorithms", &format!("unsupported algorithm `{a}` (EdDSA, RS256)"));
        }
    }
    Ok(())
}

/// Checks `[credits]`.
pub fn validate_credits(c: &CreditsConfig) -> Result<(), (String, String)> {
    if c.unit_microusd <= 0 {
        return Err(("credits.unit_microusd".into(), "must be at least 1 (micro-dollars per credit)".into()));
    }
    if !(c.markup.is_finite() && c.markup >= 0.0) {
        return Err(("credits.markup".into(), "must be a non-negative number".into()));
    }
    if c.low_balance < 0 {
        return Err(("credits.low_balance".into(), "must be a non-negative whole number of credits".into()));
    }
    Ok(())
}

/// Dollars (config) to micro-dollars.
pub fn microusd(usd: f64) -> i64 {
    (usd * 1_000_000.0).round() as i64
}
