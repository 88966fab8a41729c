//! Tiers, quotas, rate limits and entitlements: whether a call may run, decided before any
//! tokens are spent (design §8).
//!
//! Admission (for every `chat`, and `quota.check` as a dry run): tier gate per route target →
//! rate limit (per user and per app) → quota with a reservation of the call's worst case. An
//! app with `[apps.NAME]` limits goes through the same three steps for its own limits first
//! (its `tier`'s gates, its rate, its monthly quota over its own calls in the UTC calendar
//! month, with a reservation of its own).
//! Settlement: the reservation is released at the moment the call's usage records (its answer's,
//! and one per failed attempt the provider billed) become visible in the ledger, which then holds
//! the actual usage; a call without a record releases it when it ends.
//!
//! Invariants:
//! - with no `[tiers]` the policy is off: every call is allowed, nothing is reserved;
//! - quota decisions and reservations happen under one lock (see [`quota`]), so concurrent calls
//!   never together pass a limit (unless the tier allows overage);
//! - calls on the user's own key (BYOK) skip the quota unless `byok.counts_toward_quota`; they
//!   are recorded either way;
//! - the tier is the entitlement token's while it is valid (offline too) and the configured
//!   default otherwise; every change emits `tier.changed`;
//! - the configured [`Rules`] (settings, tiers, account, verifier) are replaced as one value by a
//!   config reload ([`Policy::reconfigure`]); a call reads them once at admission, so a call
//!   admitted before a reload settles under the rules it was admitted with. Reservations, rate
//!   windows and the entitlement survive a reload.

pub mod account;
pub mod config;
pub mod credits;
pub mod entitlement;
pub mod period;
pub mod quota;
pub mod rate;
pub mod tiers;

pub use config::{AccountConfig, CreditUse, CreditsConfig, PolicySettings, TierConfig, TiersConfig, ToolsRule};
pub use entitlement::{Entitlement, EntitlementError, Verifier};
pub use period::{Bounds, Clock};
pub use quota::{Amount, Limits, Metric, Reservation};

use crate::chat::Target;
use crate::events::{Bus, EventKind};
use crate::ledger::Ledger;
use config::{microusd, Overage, PeriodKind};
use serde::Serialize;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

/// The one user of this daemon (records carry it).
pub const USER: &str = "local";

/// Why a call is refused. Rendered by the API layer as `tier_required`, `rate_limited` or
/// `quota_exceeded` with these fields as `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The tier does not allow the target, or (`feature` set) a feature the call uses:
    /// `tools`, `tool:<name>`, `images` or `documents`.
    TierRequired {
        required_tier: Option<String>,
        provider: String,
        model: String,
        feature: Option<String>,
        /// Set when it is the app's own `[apps.NAME] tier` that refuses.
        app: Option<String>,
    },
    RateLimited {
        retry_after_ms: u64,
        limit: u32,
        /// Set when it is the app's own `[apps.NAME]` limit.
        app: Option<String>,
    },
    QuotaExceeded {
        metric: Metric,
        limit: i64,
        used: i64,
        remaining: i64,
        period_start: String,
        period_end: String,
        /// Set when it is the app's own `[apps.NAME]` limit (a UTC calendar month).
        app: Option<String>,
    },
    /// The call draws on prepaid credits and the balance (less what running calls hold) does not
    /// cover its worst case.
    InsufficientCredits { balance: i64, required: i64 },
}

/// Backend's count of this period's usage across the user's devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BackendUsage {
    pub used: Amount,
    pub period_start_ms: i64,
    pub fetched_at_ms: i64,
}

/// What admission hands the call: the targets it may use and its reservation.
#[derive(Debug, Default)]
pub struct Admitted {
    pub tier: Option<String>,
    /// The route's targets this tier allows, in order.
    pub targets: Vec<Target>,
    /// Targets the tier does not allow (reported as `skipped_tier` attempts).
    pub skipped: Vec<Target>,
    /// Whether the user's own (vault) keys may be used.
    pub byok_allowed: bool,
    /// The user tier's reservation and the app's own, when they apply.
    reservations: Vec<Reservation>,
    overage_per_1k_microusd: Option<i64>,
    tokens_limit: Option<u64>,
    count_byok: bool,
    bounds: Option<Bounds>,
    /// Set when the call is paid with prepaid credits.
    credits: Option<CreditCharge>,
}

/// How an admitted call pays with credits: its price and its reservation.
#[derive(Debug)]
struct CreditCharge {
    price: credits::Price,
    reserved: i64,
    hold: Option<credits::Hold>,
}

impl Admitted {
    /// Hands over the reservations (quota and credits), to be released by the ledger when the
    /// call's records become visible (pass it to `Ledger::commit_call`).
    pub fn release_when_applied(&mut self) -> Option<crate::ledger::Applied> {
        let held = std::mem::take(&mut self.reservations);
        let credits = self.credits.as_mut().and_then(|c| c.hold.take());
        (!held.is_empty() || credits.is_some())
            .then(|| Box::new(move || drop((held, credits))) as crate::ledger::Applied)
    }
}

/// What a call uses that a tier may forbid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features {
    /// Tools declared or called in the conversation, by name.
    pub tools: Vec<String>,
    /// Tools are declared, called or answered.
    pub uses_tools: bool,
    pub images: bool,
    pub documents: bool,
}

/// A target with the call's worst case there.
type Priced = (Target, Amount);

/// One call to admit. `worst` is the call's worst case at each target (tokens, 1 request, cost).
pub struct AdmitRequest<'a> {
    pub app: &'a str,
    pub targets: Vec<(Target, Amount)>,
    pub features: &'a Features,
    /// Whether the user has own keys for a provider (predicts a BYOK call).
    pub has_byok: &'a dyn Fn(&str) -> bool,
    /// `quota.check`: decide without consuming the rate limit or keeping a reservation.
    pub dry_run: bool,
}

/// One limit in `quota.status`.
#[derive(Debug, Clone, Serialize)]
pub struct LimitStatus {
    pub metric: &'static str,
    pub limit: i64,
    pub used: i64,
    pub remaining: i64,
    pub reserved: i64,
    pub projected: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub enabled: bool,
    pub tier: Option<String>,
    /// `config` (the default tier) or `entitlement`.
    pub tier_source: &'static str,
    pub period_start: String,
    pub period_end: String,
    pub limits: Vec<LimitStatus>,
    pub overage: bool,
    pub requests_per_minute: Option<u32>,
    /// Calls on the user's own keys this period (`None` when the policy is off).
    pub byok: Option<ByokStatus>,
}

/// `credits.balance`.
#[derive(Debug, Clone, Serialize)]
pub struct CreditStatus {
    pub tier: Option<String>,
    /// When the active tier's calls use credits: `never`, `after_quota`, `always`.
    pub uses: &'static str,
    #[serde(flatten)]
    pub balance: credits::Balance,
    pub low_balance: i64,
    /// How the active tier prices a call in credits (nil with no tier).
    pub price: Option<PriceStatus>,
    /// Until when the balance may be spent offline (the entitlement's `exp`, Unix seconds).
    pub valid_until: Option<i64>,
    pub deducted_last_7_days: i64,
    /// The balance divided by the last 7 days' daily rate (nil without deductions).
    pub days_left: Option<f64>,
}

/// A tier's credit price.
#[derive(Debug, Clone, Serialize)]
pub struct PriceStatus {
    pub basis: &'static str,
    pub markup: Option<f64>,
    pub unit_microusd: i64,
    pub per_request: Option<i64>,
    pub per_1k_tokens: Option<i64>,
}

/// The active tier's BYOK rule and this period's calls on the user's own keys.
#[derive(Debug, Clone, Serialize)]
pub struct ByokStatus {
    pub allowed: bool,
    pub counts_toward_quota: bool,
    pub used: Amount,
}

/// The configured part of the policy: replaced as a whole by a reload.
#[derive(Debug)]
pub struct Rules {
    pub settings: PolicySettings,
    pub tiers: TiersConfig,
    pub account: AccountConfig,
    pub verifier: Verifier,
    /// `[apps.NAME]`: apps' own limits.
    pub apps: crate::config::AppsConfig,
    /// `[credits]`.
    pub credits: CreditsConfig,
}

impl Rules {
    fn tier(&self, name: &Option<String>) -> Option<&TierConfig> {
        name.as_ref().and_then(|n| self.tiers.get(n))
    }
}

#[derive(Debug)]
pub struct Policy {
    rules: RwLock<Arc<Rules>>,
    pub clock: Clock,
    ledger: Arc<Ledger>,
    events: Bus,
    admission: Mutex<()>,
    reserved: quota::Reservations,
    rates: rate::RateLimits,
    /// Apps' own reservations and rate windows (`[apps.NAME]`).
    app_reserved: quota::AppReservations,
    app_rates: rate::RateLimits,
    entitlement: RwLock<Option<Entitlement>>,
    backend: RwLock<Option<BackendUsage>>,
    last_tier: Mutex<Option<String>>,
    thresholds_sent: Mutex<HashSet<(i64, &'static str, u64)>>,
    /// Prepaid credits: the backend's balance, reservations, low/exhausted state.
    credits: credits::Credits,
}

impl Policy {
    pub fn new(rules: Rules, clock: Clock, ledger: Arc<Ledger>, events: Bus) -> Policy {
        let last = rules.settings.default_tier.clone();
        let credits = credits::Credits::load(&ledger, rules.credits.low_balance);
        Policy {
            rules: RwLock::new(Arc::new(rules)),
            clock,
            ledger,
            events,
            admission: Mutex::new(()),
            reserved: quota::Reservations::default(),
            rates: rate::RateLimits::default(),
            app_reserved: quota::AppReservations::default(),
            app_rates: rate::RateLimits::default(),
            entitlement: RwLock::new(None),
            backend: RwLock::new(None),
            last_tier: Mutex::new(last),
            thresholds_sent: Mutex::new(HashSet::new()),
            credits,
        }
    }

    /// Admission of a call the router will refuse anyway (unknown route): nothing reserved.
    pub fn pass_through() -> Admitted {
        Admitted { byok_allowed: true, ..Admitted::default() }
    }

    /// The rules in force now (a snapshot: a reload does not change it under the caller).
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Replaces the rules (config reload). Calls admitted before keep theirs; the tier is
    /// recomputed (and `tier.changed` emitted) at once.
    pub fn reconfigure(&self, rules: Rules) {
        *self.rules.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(rules);
        self.tier();
    }

    /// Whether any tier is configured.
    pub fn enabled(&self) -> bool {
        !self.rules().tiers.is_empty()
    }

    /// The valid (unexpired) entitlement, if any.
    pub fn entitlement(&self) -> Option<Entitlement> {
        let now_s = self.clock.now_ms() / 1000;
        self.entitlement.read().ok().and_then(|e| e.clone()).filter(|e| e.exp > now_s)
    }

    /// Installs (or clears) the entitlement and reports a tier change.
    pub fn set_entitlement(&self, e: Option<Entitlement>) {
        if let Ok(mut slot) = self.entitlement.write() {
            *slot = e;
        }
        self.tier();
    }

    pub fn set_backend_usage(&self, u: Option<BackendUsage>) {
        if let Ok(mut slot) = self.backend.write() {
            *slot = u;
        }
    }

    pub fn backend_usage(&self) -> Option<BackendUsage> {
        self.backend.read().ok().and_then(|b| *b)
    }

    /// The active tier's name (`None` when the policy is off); emits `tier.changed` on change.
    pub fn tier(&self) -> Option<String> {
        let rules = self.rules();
        let ent = self.entitlement().filter(|e| rules.tiers.contains_key(&e.tier));
        let tier = ent.as_ref().map(|e| e.tier.clone()).or_else(|| rules.settings.default_tier.clone());
        if let Ok(mut last) = self.last_tier.lock() {
            if *last != tier {
                #[derive(Serialize)]
                struct Changed<'a> {
                    from: Option<&'a str>,
                    to: Option<&'a str>,
                    source: &'static str,
                }
                let source = if ent.is_some() { "entitlement" } else { "config" };
                self.events
                    .emit(EventKind::TierChanged, &Changed { from: last.as_deref(), to: tier.as_deref(), source });
                tracing::info!(from = ?*last, to = ?tier, "tier changed");
                last.clone_from(&tier);
            }
        }
        tier
    }

    /// The active tier's limits, with the entitlement's overrides.
    pub fn limits(&self, tier: &TierConfig) -> Limits {
        let o = self.entitlement().map(|e| e.limits).unwrap_or_default();
        Limits {
            tokens: o.monthly_tokens.or(tier.monthly_tokens),
            requests: o.monthly_requests.or(tier.monthly_requests),
            cost_microusd: o.monthly_cost_usd.or(tier.monthly_cost_usd).map(microusd),
        }
    }

    /// The current quota period.
    pub fn bounds(&self) -> Bounds {
        let now = self.clock.now_ms();
        match (self.rules().settings.period, self.entitlement()) {
            (PeriodKind::Anchored, Some(e)) => {
                Bounds::anchored(now, e.period_start.saturating_mul(1000), e.period_end.saturating_mul(1000))
            }
            _ => Bounds::calendar_month(now),
        }
    }

    /// Usage of the period: local ledger, or (with a backend count for this period) the backend's
    /// count plus local records it has not acknowledged, whichever is larger.
    pub fn used(&self, bounds: &Bounds, count_byok: bool) -> Amount {
        let local = quota::local_used(&self.ledger, bounds, count_byok).unwrap_or_else(|e| {
            tracing::error!("cannot read period usage from the ledger: {e}");
            Amount::default()
        });
        match self.backend_usage().filter(|b| b.period_start_ms == bounds.start_ms) {
            Some(b) => {
                let mut merged = b.used;
                merged.add(&quota::pending_used(&self.ledger, bounds, count_byok).unwrap_or_default());
                merged.max(&local)
            }
            None => local,
        }
    }

    /// Admission of one call (see module docs).
    pub fn admit(&self, req: &AdmitRequest<'_>) -> Result<Admitted, Refusal> {
        let rules = self.rules();
        let mut targets = req.targets.clone();
        let mut skipped = Vec::new();
        let mut reservations = Vec::new();
        // The app's own limits (`[apps.NAME]`) first; they hold with or without a user tier.
        if let Some(app) = rules.apps.get(req.app) {
            let scope = Some(req.app);
            let app_tier = app.tier.as_ref().and_then(|t| rules.tiers.get(t));
            if let Some(t) = app_tier {
                (targets, skipped) = self.gate(&rules, t, req.features, targets, scope)?;
            }
            if let Some(rpm) = app.requests_per_minute.or(app_tier.and_then(|t| t.requests_per_minute)) {
                self.rate(&self.app_rates, rpm, req, scope)?;
            }
            let limits = Limits {
                tokens: app_tier.and_then(|t| t.monthly_tokens),
                requests: app_tier.and_then(|t| t.monthly_requests),
                cost_microusd: app.monthly_cost_usd.or(app_tier.and_then(|t| t.monthly_cost_usd)).map(microusd),
            };
            if limits != Limits::default() {
                let bounds = Bounds::calendar_month(self.clock.now_ms());
                let worst = targets.iter().fold(Amount::default(), |acc, (_, a)| acc.max(a));
                let pool = self.app_reserved.pool(req.app);
                let _lock = self.admission.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let (reserved, used) = self.ledger.consistent(|| {
                    let used = quota::app_used(&self.ledger, &bounds, req.app).unwrap_or_else(|e| {
                        tracing::error!("cannot read the app's period usage from the ledger: {e}");
                        Amount::default()
                    });
                    (pool.total(), used)
                });
                self.check_quota(&limits, used, reserved, &worst, &bounds, req.dry_run, scope)?;
                if !req.dry_run {
                    reservations.push(pool.hold(worst));
                }
            }
        }
        let tier_name = self.tier();
        let Some(tier) = rules.tier(&tier_name) else {
            return Ok(Admitted {
                tier: tier_name,
                targets: targets.into_iter().map(|(t, _)| t).collect(),
                skipped,
                byok_allowed: true,
                reservations,
                ..Admitted::default()
            });
        };
        let (allowed, more_skipped) = self.gate(&rules, tier, req.features, targets, None)?;
        skipped.extend(more_skipped);
        if let Some(rpm) = tier.requests_per_minute {
            self.rate(&self.rates, rpm, req, None)?;
        }
        let byok_call = tier.byok.allowed && allowed.first().is_some_and(|(t, _)| (req.has_byok)(&t.provider));
        let count_byok = tier.byok.counts_toward_quota;
        let bounds = self.bounds();
        let limits = self.limits(tier);
        let mut admitted = Admitted {
            tier: tier_name,
            targets: allowed.iter().map(|(t, _)| t.clone()).collect(),
            skipped,
            byok_allowed: tier.byok.allowed,
            reservations,
            overage_per_1k_microusd: tier.overage_price_per_1k_tokens_usd.map(microusd),
            tokens_limit: limits.tokens,
            count_byok,
            bounds: Some(bounds),
            credits: None,
        };
        // Calls on the user's own key never draw on credits (the provider bills the user).
        let credit_use = if byok_call { CreditUse::Never } else { tier.credits };
        let worst = allowed.iter().fold(Amount::default(), |acc, (_, a)| acc.max(a));
        if credit_use == CreditUse::Always {
            let _lock = self.admission.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            admitted.credits = Some(self.reserve_credits(&rules, tier, &worst, req.dry_run)?);
            return Ok(admitted);
        }
        if limits == Limits::default() || (byok_call && !count_byok) {
            return Ok(admitted);
        }
        let _lock = self.admission.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (reserved, used) = self.reserved_and_used(&bounds, count_byok);
        if tier.overage != Overage::Allow {
            // `after_quota`: a call the quota refuses is paid with credits instead.
            let quiet = req.dry_run || credit_use == CreditUse::AfterQuota;
            if let Err(refusal) = self.check_quota(&limits, used, reserved, &worst, &bounds, quiet, None) {
                if credit_use != CreditUse::AfterQuota {
                    return Err(refusal);
                }
                admitted.credits = Some(self.reserve_credits(&rules, tier, &worst, req.dry_run)?);
                return Ok(admitted);
            }
        }
        if !req.dry_run {
            admitted.reservations.push(self.reserved.hold(worst));
        }
        Ok(admitted)
    }

    /// Reserves the credits of a call's worst case (at least one credit: a call needs a balance),
    /// or refuses it with `insufficient_credits`. Call with the admission lock held.
    fn reserve_credits(
        &self,
        rules: &Rules,
        tier: &TierConfig,
        worst: &Amount,
        dry_run: bool,
    ) -> Result<CreditCharge, Refusal> {
        let price = credits::Price::of(tier, &rules.credits);
        let required = price.credits(worst.cost_microusd, worst.tokens.max(1)).max(1);
        let balance = self.ledger.consistent(|| self.credit_balance());
        if balance.available < required {
            return Err(Refusal::InsufficientCredits { balance: balance.available.max(0), required });
        }
        let hold = (!dry_run).then(|| self.credits.hold(required));
        Ok(CreditCharge { price, reserved: required, hold })
    }

    /// The credit balance now (see [`credits::Balance`]). Without a valid entitlement there is
    /// none to spend: offline, the last known balance holds until the token expires.
    pub fn credit_balance(&self) -> credits::Balance {
        let mut b = self.credits.balance(&self.ledger);
        if self.entitlement().is_none() {
            b.available = b.available.min(0);
        }
        b
    }

    /// The deduction of a finished call paid with credits: the price of what its records billed,
    /// never more than it reserved; none when nothing was billed. Commit it with the records.
    pub fn credit_deduction(
        &self,
        a: &Admitted,
        records: &[crate::usage_record::UsageRecord],
    ) -> Option<crate::ledger::credits::CreditTx> {
        let charge = a.credits.as_ref()?;
        let tokens = records.iter().map(crate::usage_record::UsageRecord::total_tokens).sum::<u64>();
        let cost = records.iter().map(|r| r.cost_microusd).sum::<i64>();
        let credits = charge.price.credits(cost, tokens).min(charge.reserved);
        if credits <= 0 {
            return None;
        }
        if charge.price.credits(cost, tokens) > charge.reserved {
            tracing::warn!(
                reserved = charge.reserved,
                "a call billed more credits than it reserved; charging the reservation"
            );
        }
        let now = self.clock.now_ms();
        Some(crate::ledger::credits::CreditTx {
            id: crate::usage_record::id_from_ms(now.max(0)),
            ts: now,
            kind: crate::ledger::credits::CreditKind::Deduction,
            credits: -credits,
            record_id: records.last().map(|r| r.id),
            cost_microusd: Some(cost),
            basis: Some(charge.price.basis().to_string()),
            reference: None,
            synced_ms: None,
        })
    }

    /// Takes in a credit balance the backend reported (entitlement claim or `/entitlement`
    /// reply): stores it and the change it shows in the audit log, emits `credits.granted` when
    /// the balance rose, and `credits.low` / `credits.exhausted` on a crossing.
    pub async fn observe_credits(&self, reported: credits::Reported) {
        let now = self.clock.now_ms();
        let before = self.credit_balance().balance;
        // Under the admission lock: no call is admitted against the old balance meanwhile.
        let observed = {
            let _lock = self.admission.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            self.credits.observe(&self.ledger, &reported, now)
        };
        let Some((tx, snapshot)) = observed else { return };
        if let Err(e) = self.ledger.record_backend_credits(tx.clone(), snapshot).await {
            tracing::error!("cannot store the backend's credit balance: {e}");
        }
        let after = self.credit_balance().balance;
        if let Some(tx) = tx.filter(|t| t.credits > 0) {
            #[derive(Serialize)]
            struct Granted<'a> {
                credits: i64,
                balance: i64,
                kind: &'static str,
                reference: Option<&'a str>,
            }
            tracing::info!(credits = tx.credits, balance = after, "credits granted");
            self.events.emit(
                EventKind::CreditsGranted,
                &Granted {
                    credits: tx.credits,
                    balance: after,
                    kind: tx.kind.as_str(),
                    reference: tx.reference.as_deref(),
                },
            );
        }
        if before != after {
            self.credit_events(after);
        }
    }

    /// `credits.balance`: the balance, how the active tier uses and prices credits, and the
    /// days left at the last 7 days' rate.
    pub fn credit_status(&self) -> CreditStatus {
        let rules = self.rules();
        let tier_name = self.tier();
        let tier = rules.tier(&tier_name);
        let balance = self.ledger.consistent(|| self.credit_balance());
        let now = self.clock.now_ms();
        const WEEK_MS: i64 = 7 * 86_400_000;
        let week = self.ledger.credits_deducted_since(now - WEEK_MS).unwrap_or_else(|e| {
            tracing::error!("cannot read credit deductions from the ledger: {e}");
            0
        });
        #[allow(clippy::cast_precision_loss)]
        let per_day = week as f64 / 7.0;
        #[allow(clippy::cast_precision_loss)]
        let days_left = (per_day > 0.0).then(|| (balance.balance.max(0) as f64 / per_day * 10.0).floor() / 10.0);
        let price = tier.map(|t| match credits::Price::of(t, &rules.credits) {
            credits::Price::Markup { markup, unit_microusd } => PriceStatus {
                basis: "markup",
                markup: Some(markup),
                unit_microusd,
                per_request: None,
                per_1k_tokens: None,
            },
            credits::Price::Fixed { per_request, per_1k_tokens } => PriceStatus {
                basis: "fixed",
                markup: None,
                unit_microusd: rules.credits.unit_microusd,
                per_request: Some(per_request),
                per_1k_tokens: Some(per_1k_tokens),
            },
        });
        CreditStatus {
            tier: tier_name.clone(),
            uses: tier.map_or(CreditUse::Never, |t| t.credits).as_str(),
            balance,
            low_balance: rules.credits.low_balance,
            price,
            valid_until: self.entitlement().map(|e| e.exp),
            deducted_last_7_days: week,
            days_left,
        }
    }

    /// Emits `credits.low` / `credits.exhausted` when `balance` crossed into them.
    fn credit_events(&self, balance: i64) {
        let low_balance = self.rules().credits.low_balance;
        let (low, exhausted) = self.credits.crossings(balance, low_balance);
        #[derive(Serialize)]
        struct Low {
            balance: i64,
            low_balance: i64,
        }
        if low {
            self.events.emit(EventKind::CreditsLow, &Low { balance, low_balance });
        }
        if exhausted {
            self.events.emit(EventKind::CreditsExhausted, &Low { balance, low_balance });
        }
    }

    /// The tier gate: the targets `tier` allows and those it skips, or the refusal naming the
    /// cheapest tier that would allow the call. `app`: the gate is that app's `[apps.NAME] tier`.
    fn gate(
        &self,
        rules: &Rules,
        tier: &TierConfig,
        features: &Features,
        targets: Vec<Priced>,
        app: Option<&str>,
    ) -> Result<(Vec<Priced>, Vec<Target>), Refusal> {
        let (provider, model) = targets.first().map(|(t, _)| (t.provider.clone(), t.model.clone())).unwrap_or_default();
        let refuse = |feature: Option<String>| {
            let required_tier = tiers::cheapest_allowing(&rules.tiers, &provider, &model, features).map(str::to_string);
            let (provider, model) = (provider.clone(), model.clone());
            Refusal::TierRequired { required_tier, provider, model, feature, app: app.map(str::to_string) }
        };
        if let Err(feature) = tiers::allows_features(tier, features) {
            return Err(refuse(Some(feature)));
        }
        let (allowed, skipped): (Vec<_>, Vec<_>) =
            targets.into_iter().partition(|(t, _)| tiers::allows(tier, &t.provider, &t.model));
        if allowed.is_empty() {
            return Err(refuse(None));
        }
        Ok((allowed, skipped.into_iter().map(|(t, _)| t).collect()))
    }

    /// Takes one request from a rate limit (not in a dry run): the user's tier's (`app` None,
    /// per user and per app), or an app's own (`app` set, per that app).
    fn rate(
        &self,
        limiter: &rate::RateLimits,
        rpm: u32,
        req: &AdmitRequest<'_>,
        app: Option<&str>,
    ) -> Result<(), Refusal> {
        if req.dry_run {
            return Ok(());
        }
        let Err(retry_after_ms) = limiter.check(rpm, app.unwrap_or(USER), req.app) else { return Ok(()) };
        #[derive(Serialize)]
        struct Limited<'a> {
            app: &'a str,
            retry_after_ms: u64,
            limit: u32,
            /// `app`: the app's own limit; `tier`: the user's tier's.
            scope: &'static str,
        }
        let scope = if app.is_some() { "app" } else { "tier" };
        self.events.emit(EventKind::RateLimited, &Limited { app: req.app, retry_after_ms, limit: rpm, scope });
        Err(Refusal::RateLimited { retry_after_ms, limit: rpm, app: app.map(str::to_string) })
    }

    /// Refuses a call whose worst case would take `used` + `reserved` past `limits` (emitting
    /// `quota.exceeded` unless in a dry run). Call with the admission lock held.
    #[allow(clippy::too_many_arguments)]
    fn check_quota(
        &self,
        limits: &Limits,
        used: Amount,
        reserved: Amount,
        worst: &Amount,
        bounds: &Bounds,
        dry_run: bool,
        app: Option<&str>,
    ) -> Result<(), Refusal> {
        let mut taken = used;
        taken.add(&reserved);
        let Some(metric) = limits.first_exceeded(&taken, worst) else { return Ok(()) };
        let limit = limits.get(metric).unwrap_or(0);
        let used_m = used.get(metric);
        let period_end = Bounds::rfc3339(bounds.end_ms);
        if !dry_run {
            #[derive(Serialize)]
            struct Exceeded<'a> {
                metric: &'static str,
                limit: i64,
                used: i64,
                period_end: &'a str,
                #[serde(skip_serializing_if = "Option::is_none")]
                app: Option<&'a str>,
            }
            self.events.emit(
                EventKind::QuotaExceeded,
                &Exceeded { metric: metric.as_str(), limit, used: used_m, period_end: &period_end, app },
            );
        }
        Err(Refusal::QuotaExceeded {
            metric,
            limit,
            used: used_m,
            remaining: (limit - taken.get(metric)).max(0),
            period_start: Bounds::rfc3339(bounds.start_ms),
            period_end,
            app: app.map(str::to_string),
        })
    }

    /// Sets the overage charge of each record of a finished call (0 within the quota): the
    /// tokens of the records, in order, beyond the tier's token limit. A call can have more than
    /// one record (billed failed attempts before its answer), so each one counts the ones before
    /// it. Call before they are committed.
    pub fn charge_overage(&self, a: &Admitted, records: &mut [crate::usage_record::UsageRecord]) {
        let (Some(price), Some(limit), Some(bounds)) = (a.overage_per_1k_microusd, a.tokens_limit, a.bounds) else {
            return;
        };
        let mut used = self.used(&bounds, a.count_byok).tokens;
        for r in records.iter_mut().filter(|r| a.count_byok || r.key_source != crate::usage_record::KeySource::Byok) {
            let tokens = r.total_tokens();
            let over = used.saturating_add(tokens).saturating_sub(limit).min(tokens);
            r.overage_microusd =
                i64::try_from(u128::from(over) * u128::try_from(price).unwrap_or(0) / 1000).unwrap_or(i64::MAX);
            used = used.saturating_add(tokens);
        }
    }

    /// Reservations and usage of the period, read as one state. A finishing call's reservation
    /// is released at the moment its records become visible ([`Admitted::release_when_applied`]),
    /// so read together it counts exactly once: never in neither (one call too many admitted)
    /// nor in both (one refused too many).
    fn reserved_and_used(&self, bounds: &Bounds, count_byok: bool) -> (Amount, Amount) {
        self.ledger.consistent(|| (self.reserved.total(), self.used(bounds, count_byok)))
    }

    /// Settles a call after its records were committed (or it ended without one): releases the
    /// reservation and emits `quota.threshold` for fractions crossed.
    pub fn settle(&self, mut a: Admitted) {
        a.reservations.clear();
        if a.credits.take().is_some() {
            self.credit_events(self.credit_balance().balance);
        }
        let rules = self.rules();
        let Some(tier) = rules.tier(&a.tier) else { return };
        let Some(bounds) = a.bounds else { return };
        let limits = self.limits(tier);
        if limits == Limits::default() {
            return;
        }
        let used = self.used(&bounds, a.count_byok);
        for metric in Metric::ALL {
            let Some(limit) = limits.get(metric).filter(|l| *l > 0) else { continue };
            let u = used.get(metric);
            for f in &rules.settings.thresholds {
                let permille = (f * 1000.0).round() as u64;
                if (u as f64) < (limit as f64) * f {
                    continue;
                }
                let fresh = self
                    .thresholds_sent
                    .lock()
                    .map(|mut s| s.insert((bounds.start_ms, metric.as_str(), permille)))
                    .unwrap_or(false);
                if fresh {
                    #[derive(Serialize)]
                    struct Threshold<'a> {
                        metric: &'static str,
                        fraction: f64,
                        limit: i64,
                        used: i64,
                        period_end: &'a str,
                    }
                    let end = Bounds::rfc3339(bounds.end_ms);
                    self.events.emit(
                        EventKind::QuotaThreshold,
                        &Threshold { metric: metric.as_str(), fraction: *f, limit, used: u, period_end: &end },
                    );
                }
            }
        }
    }

    /// `quota.status`.
    pub fn status(&self) -> Status {
        let rules = self.rules();
        let tier_name = self.tier();
        let bounds = self.bounds();
        let tier_source = if self.entitlement().is_some_and(|e| rules.tiers.contains_key(&e.tier)) {
            "entitlement"
        } else {
            "config"
        };
        let mut out = Status {
            enabled: self.enabled(),
            tier: tier_name.clone(),
            tier_source,
            period_start: Bounds::rfc3339(bounds.start_ms),
            period_end: Bounds::rfc3339(bounds.end_ms),
            limits: Vec::new(),
            overage: false,
            requests_per_minute: None,
            byok: None,
        };
        let Some(tier) = rules.tier(&tier_name) else { return out };
        out.overage = tier.overage == Overage::Allow;
        out.requests_per_minute = tier.requests_per_minute;
        let limits = self.limits(tier);
        let (reserved, used) = self.reserved_and_used(&bounds, tier.byok.counts_toward_quota);
        let mut byok = self.used(&bounds, true);
        byok.sub(&self.used(&bounds, false));
        out.byok = Some(ByokStatus {
            allowed: tier.byok.allowed,
            counts_toward_quota: tier.byok.counts_toward_quota,
            used: byok,
        });
        let now = self.clock.now_ms();
        for metric in Metric::ALL {
            let Some(limit) = limits.get(metric) else { continue };
            let u = used.get(metric);
            let r = reserved.get(metric);
            out.limits.push(LimitStatus {
                metric: metric.as_str(),
                limit,
                used: u,
                remaining: (limit - u - r).max(0),
                reserved: r,
                projected: i64::try_from(bounds.project(now, u64::try_from(u).unwrap_or(0))).unwrap_or(i64::MAX),
            });
        }
        out
    }

    /// Whether the active tier may use `provider`/`model` (`models.list`).
    pub fn model_allowed(&self, provider: &str, model: &str) -> bool {
        self.rules().tier(&self.tier()).is_none_or(|t| tiers::allows(t, provider, model))
    }

    /// Whether the active tier lets calls use the user's own (vault) keys (always, with no tiers).
    pub fn byok_allowed(&self) -> bool {
        self.rules().tier(&self.tier()).is_none_or(|t| t.byok.allowed)
    }

    /// [`Policy::model_allowed`] for calls of `app`: its own `[apps.NAME] tier` must allow it too.
    pub fn model_allowed_for(&self, app: &str, provider: &str, model: &str) -> bool {
        let rules = self.rules();
        let app_tier = rules.apps.get(app).and_then(|a| a.tier.as_ref()).and_then(|t| rules.tiers.get(t));
        app_tier.is_none_or(|t| tiers::allows(t, provider, model)) && self.model_allowed(provider, model)
    }

    /// Stamps a record with the policy clock's time (only differs from the system clock when a
    /// fake clock is set in a debug build).
    pub fn stamp(&self, r: &mut crate::usage_record::UsageRecord) {
        if self.clock.is_fake() {
            let ms = self.clock.now_ms().max(0);
            r.ts = ms;
            r.id = crate::usage_record::id_from_ms(ms);
        }
    }
}
