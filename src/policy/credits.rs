//! Prepaid credits: what a call costs in credits, the balance (the backend's, less local
//! deductions it has not counted), reservations of admitted calls, and the `credits.*` events.
//!
//! Invariants:
//! - a call that uses credits is admitted only if `balance - reserved >= its worst case`,
//!   decided under the policy's admission lock together with taking the reservation; its
//!   deduction never exceeds its reservation; so under any concurrency the balance never goes
//!   below zero;
//! - the reservation is released at the moment the call's records and deduction become visible
//!   in the ledger (same transaction), and admission reads both inside `Ledger::consistent`, so
//!   a finishing call counts exactly once;
//! - a call is charged only for what was billed: a failure the provider did not bill deducts
//!   nothing, a cancelled stream the usage billed so far;
//! - the backend's balance already counts every credit event it has received; changes it reports
//!   (grants, purchases, adjustments) are audit entries, never added to the balance again.

use super::config::{CreditsConfig, TierConfig};
use super::quota::{Reservation, Reservations};
use crate::ledger::credits::{BackendBalance, CreditKind, CreditTx};
use crate::ledger::Ledger;
use serde::Serialize;
use std::sync::{Mutex, RwLock};

/// The most credits a balance may hold (claims and replies beyond it are refused).
pub const MAX_BALANCE: i64 = 1_000_000_000_000;

/// How a tier's calls are priced in credits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Price {
    /// Provider cost × `markup` / `unit_microusd`, rounded up.
    Markup { markup: f64, unit_microusd: i64 },
    /// A fixed price per call plus per 1,000 tokens (rounded up).
    Fixed { per_request: i64, per_1k_tokens: i64 },
}

impl Price {
    pub fn of(tier: &TierConfig, c: &CreditsConfig) -> Price {
        if tier.credits_per_request.is_some() || tier.credits_per_1k_tokens.is_some() {
            Price::Fixed {
                per_request: tier.credits_per_request.unwrap_or(0),
                per_1k_tokens: tier.credits_per_1k_tokens.unwrap_or(0),
            }
        } else {
            Price::Markup { markup: c.markup, unit_microusd: c.unit_microusd.max(1) }
        }
    }

    /// Credits for a call that billed `tokens` at a provider cost of `cost_microusd`; 0 when
    /// nothing was billed.
    pub fn credits(&self, cost_microusd: i64, tokens: u64) -> i64 {
        if tokens == 0 && cost_microusd <= 0 {
            return 0;
        }
        match *self {
            Price::Markup { markup, unit_microusd } => {
                #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
                let c = ((cost_microusd.max(0) as f64) * markup / unit_microusd as f64).ceil();
                if c >= MAX_BALANCE as f64 {
                    MAX_BALANCE
                } else {
                    #[allow(clippy::cast_possible_truncation)]
                    let c = c as i64;
                    c.max(0)
                }
            }
            Price::Fixed { per_request, per_1k_tokens } => {
                let per_tokens = u128::from(tokens) * u128::try_from(per_1k_tokens).unwrap_or(0);
                let per_tokens = i64::try_from(per_tokens.div_ceil(1000)).unwrap_or(MAX_BALANCE);
                per_request.saturating_add(per_tokens).min(MAX_BALANCE)
            }
        }
    }

    /// `markup` or `fixed` (the audit log's `basis`).
    pub fn basis(&self) -> &'static str {
        match self {
            Price::Markup { .. } => "markup",
            Price::Fixed { .. } => "fixed",
        }
    }
}

/// A balance the backend reported (entitlement claim or `/entitlement` reply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reported {
    pub balance: i64,
    /// The backend's time of the balance (Unix seconds); 0 when it gave none.
    pub as_of: i64,
    /// What the change was, when the backend says (`grant`, `purchase`, `adjustment`, `refund`).
    pub kind: Option<CreditKind>,
    pub reference: Option<String>,
}

/// The credit part of the policy's state.
#[derive(Debug, Default)]
pub struct Credits {
    backend: RwLock<Option<BackendBalance>>,
    reserved: Reservations<i64>,
    /// Whether the balance is below `low_balance` / exhausted (the events fire on the change).
    low: Mutex<Option<bool>>,
    exhausted: Mutex<Option<bool>>,
}

/// An admitted call's reservation of credits; released on drop.
pub type Hold = Reservation<i64>;

/// The balance as `credits.balance` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Balance {
    /// The backend's balance less local deductions it has not counted.
    pub balance: i64,
    /// Held by calls running now.
    pub reserved: i64,
    /// What a new call may reserve: `balance - reserved`.
    pub available: i64,
    pub backend_balance: Option<i64>,
    /// The backend's time of `backend_balance` (Unix seconds).
    pub as_of: Option<i64>,
    /// Local deductions the backend has not counted yet.
    pub unacknowledged: i64,
}

impl Credits {
    /// The state at start: the last balance the backend reported (kept in the ledger), and
    /// whether the balance is low or exhausted already (so a restart fires no event).
    pub fn load(ledger: &Ledger, low_balance: i64) -> Credits {
        let backend = ledger.backend_credits().unwrap_or_else(|e| {
            tracing::error!("cannot read the last credit balance from the ledger: {e}");
            None
        });
        let c = Credits { backend: RwLock::new(backend), ..Credits::default() };
        c.crossings(c.balance(ledger).balance, low_balance);
        c
    }

    pub fn backend(&self) -> Option<BackendBalance> {
        self.backend.read().ok().and_then(|b| *b)
    }

    pub fn reserved(&self) -> i64 {
        self.reserved.total()
    }

    /// Reserves `credits`. Call with the admission lock held.
    pub fn hold(&self, credits: i64) -> Hold {
        self.reserved.hold(credits)
    }

    /// The balance now (read the reservations with it inside `Ledger::consistent`).
    pub fn balance(&self, ledger: &Ledger) -> Balance {
        let backend = self.backend();
        let unacknowledged =
            ledger.unacknowledged_credits(backend.map_or(i64::MIN, |b| b.fetched_at_ms)).unwrap_or_else(|e| {
                tracing::error!("cannot read credit deductions from the ledger: {e}");
                i64::MAX / 4
            });
        let balance = backend.map_or(0, |b| b.balance).saturating_sub(unacknowledged);
        let reserved = self.reserved();
        Balance {
            balance,
            reserved,
            available: balance - reserved,
            backend_balance: backend.map(|b| b.balance),
            as_of: backend.map(|b| b.as_of),
            unacknowledged,
        }
    }

    /// Takes in a balance the backend reported at `now_ms`. Returns the audit entry of the
    /// change it shows (none for the same balance, or an older report), and the new snapshot.
    pub fn observe(&self, ledger: &Ledger, r: &Reported, now_ms: i64) -> Option<(Option<CreditTx>, BackendBalance)> {
        let old = self.backend();
        // An older report, or the same one again (a restart re-reads the token): nothing new.
        // Keeping the old snapshot keeps its time, which says which deductions it counts.
        if old.is_some_and(|o| (r.as_of != 0 && r.as_of < o.as_of) || (r.as_of == o.as_of && r.balance == o.balance)) {
            return None;
        }
        let new = BackendBalance { balance: r.balance, as_of: r.as_of, fetched_at_ms: now_ms };
        // What the old report becomes once the backend counted the deductions acknowledged
        // since: any difference is a change the backend made.
        let expected = old.map_or(0, |o| {
            let acked = ledger.unacknowledged_credits(o.fetched_at_ms).unwrap_or(0)
                - ledger.unacknowledged_credits(now_ms).unwrap_or(0);
            o.balance - acked.max(0)
        });
        if let Ok(mut b) = self.backend.write() {
            *b = Some(new);
        }
        let change = r.balance - expected;
        let tx = (change != 0).then(|| CreditTx {
            id: uuid::Uuid::now_v7(),
            ts: now_ms,
            kind: r.kind.unwrap_or(if change > 0 { CreditKind::Grant } else { CreditKind::Adjustment }),
            credits: change,
            record_id: None,
            cost_microusd: None,
            basis: None,
            reference: r.reference.clone(),
            synced_ms: None,
        });
        Some((tx, new))
    }

    /// Whether the balance just crossed into "low" (below `low_balance`) or "exhausted" (0 or
    /// less): `(low_now, exhausted_now)`, each true only on the crossing (the first reading
    /// only sets the state).
    pub fn crossings(&self, balance: i64, low_balance: i64) -> (bool, bool) {
        let flip = |slot: &Mutex<Option<bool>>, state: bool| {
            let mut s = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let crossed = state && *s == Some(false);
            *s = Some(state);
            crossed
        };
        (flip(&self.low, balance < low_balance), flip(&self.exhausted, balance <= 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_round_up_and_charge_nothing_for_nothing() {
        let m = Price::Markup { markup: 1.5, unit_microusd: 10_000 };
        assert_eq!(m.credits(0, 0), 0);
        assert_eq!(m.credits(10_000, 5), 2); // 1.5 credits -> 2
        assert_eq!(m.credits(20_000, 5), 3);
        assert_eq!(m.credits(1, 1), 1);
        let f = Price::Fixed { per_request: 2, per_1k_tokens: 3 };
        assert_eq!(f.credits(0, 0), 0);
        assert_eq!(f.credits(0, 1), 2 + 1);
        assert_eq!(f.credits(0, 1000), 2 + 3);
        assert_eq!(f.credits(0, 1001), 2 + 4);
        assert_eq!(f.credits(i64::MAX, u64::MAX), MAX_BALANCE);
    }

    #[test]
    fn crossings_fire_once_each_way_down() {
        let c = Credits::default();
        assert_eq!(c.crossings(100, 50), (false, false)); // first reading sets the state
        assert_eq!(c.crossings(40, 50), (true, false));
        assert_eq!(c.crossings(30, 50), (false, false));
        assert_eq!(c.crossings(0, 50), (false, true));
        assert_eq!(c.crossings(0, 50), (false, false));
        assert_eq!(c.crossings(200, 50), (false, false));
        assert_eq!(c.crossings(10, 50), (true, false));
    }
}
