//! Quota arithmetic: amounts (tokens, requests, micro-dollars), a tier's limits, what the period
//! has used (from the ledger, optionally merged with the backend's count), and in-memory
//! reservations of admitted calls' worst case.
//!
//! Invariants:
//! - a call is admitted only if `used + reserved + its worst case <= limit` for every limited
//!   metric, decided under one lock together with taking the reservation, so concurrent calls
//!   can never together exceed a limit;
//! - a reservation is released by the ledger's committer at the moment the call's records become
//!   visible (or when the call ends without one), and admission reads reservations and usage
//!   inside `Ledger::consistent`, so a finishing call counts exactly once: never twice (a
//!   spurious refusal), never zero times.

use crate::ledger::{Dim, Ledger, LedgerError, Period, RecordQuery};
use crate::usage_record::KeySource;
use serde::Serialize;
use std::sync::{Arc, Mutex};

use super::period::Bounds;

/// An amount of usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Amount {
    pub tokens: u64,
    pub requests: u64,
    pub cost_microusd: i64,
}

impl Amount {
    pub fn add(&mut self, o: &Amount) {
        self.tokens = self.tokens.saturating_add(o.tokens);
        self.requests = self.requests.saturating_add(o.requests);
        self.cost_microusd = self.cost_microusd.saturating_add(o.cost_microusd);
    }

    pub fn sub(&mut self, o: &Amount) {
        self.tokens = self.tokens.saturating_sub(o.tokens);
        self.requests = self.requests.saturating_sub(o.requests);
        self.cost_microusd = self.cost_microusd.saturating_sub(o.cost_microusd).max(0);
    }

    pub fn max(&self, o: &Amount) -> Amount {
        Amount {
            tokens: self.tokens.max(o.tokens),
            requests: self.requests.max(o.requests),
            cost_microusd: self.cost_microusd.max(o.cost_microusd),
        }
    }

    pub fn get(&self, m: Metric) -> i64 {
        match m {
            Metric::Tokens => i64::try_from(self.tokens).unwrap_or(i64::MAX),
            Metric::Requests => i64::try_from(self.requests).unwrap_or(i64::MAX),
            Metric::CostMicrousd => self.cost_microusd,
        }
    }
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Tokens,
    Requests,
    CostMicrousd,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::Tokens, Metric::Requests, Metric::CostMicrousd];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Tokens => "tokens",
            Metric::Requests => "requests",
            Metric::CostMicrousd => "cost_microusd",
        }
    }
}

/// A tier's limits for one period (`None` = unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub tokens: Option<u64>,
    pub requests: Option<u64>,
    pub cost_microusd: Option<i64>,
}

impl Limits {
    pub fn get(&self, m: Metric) -> Option<i64> {
        match m {
            Metric::Tokens => self.tokens.map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
            Metric::Requests => self.requests.map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
            Metric::CostMicrousd => self.cost_microusd,
        }
    }

    /// The first metric where `used + extra` would pass its limit.
    pub fn first_exceeded(&self, used: &Amount, extra: &Amount) -> Option<Metric> {
        Metric::ALL
            .into_iter()
            .find(|m| self.get(*m).is_some_and(|limit| used.get(*m).saturating_add(extra.get(*m)) > limit))
    }
}

/// Usage of the period counted from the local ledger. Records on the user's own key are left
/// out unless `count_byok`.
pub fn local_used(ledger: &Ledger, bounds: &Bounds, count_byok: bool) -> Result<Amount, LedgerError> {
    if bounds.calendar {
        let label = bounds.month_label();
        let mut total = Amount::default();
        for row in ledger.counters(Period::Month, Dim::Total, &label, &label)? {
            total.add(&of_counter(&row.counter));
        }
        if !count_byok {
            for row in ledger.counters(Period::Month, Dim::KeySource, &label, &label)? {
                if row.key == KeySource::Byok.as_str() {
                    total.sub(&of_counter(&row.counter));
                }
            }
        }
        return Ok(total);
    }
    let mut total = Amount::default();
    let mut q = RecordQuery {
        from_ms: Some(bounds.start_ms),
        to_ms: Some(bounds.end_ms),
        limit: 1000,
        ascending: true,
        ..RecordQuery::default()
    };
    loop {
        let page = ledger.records(&q)?;
        for r in page.records.iter().filter(|r| count_byok || r.key_source != KeySource::Byok) {
            total.add(&Amount { tokens: r.total_tokens(), requests: 1, cost_microusd: r.cost_microusd });
        }
        match page.next {
            Some(n) => q.after = Some(n),
            None => return Ok(total),
        }
    }
}

/// Usage of the period in records the backend has not acknowledged yet (the outbox).
pub fn pending_used(ledger: &Ledger, bounds: &Bounds, count_byok: bool) -> Result<Amount, LedgerError> {
    let mut total = Amount::default();
    let mut after = None;
    loop {
        let batch = ledger.outbox_after(after, 1000)?;
        for e in &batch {
            let Ok(r) = &e.record else { continue };
            if r.ts >= bounds.start_ms && r.ts < bounds.end_ms && (count_byok || r.key_source != KeySource::Byok) {
                total.add(&Amount { tokens: r.total_tokens(), requests: 1, cost_microusd: r.cost_microusd });
            }
        }
        match batch.last() {
            Some(last) if batch.len() == 1000 => after = Some(last.at),
            _ => return Ok(total),
        }
    }
}

fn of_counter(c: &crate::ledger::Counter) -> Amount {
    Amount { tokens: c.total_tokens(), requests: c.requests, cost_microusd: c.cost_microusd }
}

/// What a reservation pool holds: usage [`Amount`]s (quotas) or credits (`i64`).
pub trait Held: Copy + Default + std::fmt::Debug + Send + 'static {
    fn add(&mut self, o: &Self);
    fn sub(&mut self, o: &Self);
}

impl Held for Amount {
    fn add(&mut self, o: &Self) {
        Amount::add(self, o);
    }
    fn sub(&mut self, o: &Self) {
        Amount::sub(self, o);
    }
}

impl Held for i64 {
    fn add(&mut self, o: &Self) {
        *self = self.saturating_add(*o);
    }
    fn sub(&mut self, o: &Self) {
        *self = self.saturating_sub(*o);
    }
}

/// Reserved worst cases of admitted, unsettled calls.
#[derive(Debug, Default, Clone)]
pub struct Reservations<T: Held = Amount>(Arc<Mutex<T>>);

impl<T: Held> Reservations<T> {
    pub fn total(&self) -> T {
        self.0.lock().map(|a| *a).unwrap_or_default()
    }

    /// Holds `amount` until the returned guard is dropped. Call with the admission lock held.
    pub fn hold(&self, amount: T) -> Reservation<T> {
        if let Ok(mut a) = self.0.lock() {
            a.add(&amount);
        }
        Reservation { pool: self.0.clone(), amount }
    }
}

/// Reservations per app (for `[apps.NAME]` limits), one pool each.
#[derive(Debug, Default)]
pub struct AppReservations(Mutex<std::collections::HashMap<String, Reservations>>);

impl AppReservations {
    /// The pool of `app` (created empty).
    pub fn pool(&self, app: &str) -> Reservations {
        let mut m = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        m.entry(app.to_string()).or_default().clone()
    }
}

/// Usage of `app`'s calls in the period of `bounds` (a calendar month), from the ledger's
/// per-app counters; every call counts, BYOK included.
pub fn app_used(ledger: &Ledger, bounds: &Bounds, app: &str) -> Result<Amount, LedgerError> {
    let label = bounds.month_label();
    let mut total = Amount::default();
    for row in ledger.counters(Period::Month, Dim::App, &label, &label)? {
        if row.key == app {
            total.add(&of_counter(&row.counter));
        }
    }
    Ok(total)
}

/// One admitted call's reservation; released on drop.
#[derive(Debug)]
pub struct Reservation<T: Held = Amount> {
    pool: Arc<Mutex<T>>,
    amount: T,
}

impl<T: Held> Drop for Reservation<T> {
    fn drop(&mut self) {
        if let Ok(mut a) = self.pool.lock() {
            a.sub(&self.amount);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_reservations() {
        let l = Limits { tokens: Some(100), requests: None, cost_microusd: Some(5) };
        let used = Amount { tokens: 90, requests: 1000, cost_microusd: 0 };
        assert_eq!(l.first_exceeded(&used, &Amount { tokens: 10, requests: 1, cost_microusd: 5 }), None);
        assert_eq!(
            l.first_exceeded(&used, &Amount { tokens: 11, requests: 1, cost_microusd: 0 }),
            Some(Metric::Tokens)
        );
        assert_eq!(
            l.first_exceeded(&used, &Amount { tokens: 0, requests: 1, cost_microusd: 6 }),
            Some(Metric::CostMicrousd)
        );
        let pool = Reservations::default();
        let a = pool.hold(Amount { tokens: 5, requests: 1, cost_microusd: 2 });
        let b = pool.hold(Amount { tokens: 5, requests: 1, cost_microusd: 2 });
        assert_eq!(pool.total().tokens, 10);
        drop(a);
        assert_eq!(pool.total(), Amount { tokens: 5, requests: 1, cost_microusd: 2 });
        drop(b);
        assert_eq!(pool.total(), Amount::default());
    }
}
