//! The sync worker: one task that owns the HTTP client and every sync decision.
//!
//! It sleeps until something asks for a flush (the periodic tick, the outbox reaching
//! `flush_threshold`, `sync.now`, the retry time of a failed batch), then drains the outbox
//! batch by batch.
//!
//! Invariants:
//! - a batch is persisted in the ledger (id, exact body, members) before its first send, and
//!   every later send of it (a retry, or a re-send after a crash or restart) is the same bytes
//!   under the same `Idempotency-Key`; it leaves the ledger only with its answer (2xx: acked;
//!   refused alone: dead letter);
//! - a batch the backend refuses (400/422 and other non-auth 4xx) is split in halves, each
//!   persisted under its own new id in the same transaction that drops the parent, until the
//!   events refused alone are found: only those become dead letters (with status and body);
//! - 404/405/410 and redirects mean a wrong `[sync] url`: sync pauses as misconfigured (event
//!   `sync.paused`, reason `misconfigured`) and nothing is dead-lettered;
//! - records outside the backend's time window (older than `max_event_age_days`, more than
//!   [`MAX_FUTURE_SKEW_MS`] ahead) are dead-lettered before sending (`too_old`/`future`), never
//!   dropped.
//!
//! Explicit state: `retry_at` says when the first persisted batch may be resent; `paused` why
//! sending stopped.

use super::backoff::{Backoff, MAX_RETRY_AFTER};
use super::cloudevents::{self, Batch};
use super::credentials::{fingerprint, SyncCredentials};
use super::{Command, LastError, NowReport, Phase, Progress, SubjectFn, SyncConfig};
use crate::clock::now_ms;
use crate::events::{Bus, EventKind};
use crate::ledger::{Ledger, NewBatch, Queued, Refused};
use secrecy::ExposeSecret;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// While paused, how often the token source is checked for a new token.
const CREDENTIALS_POLL: Duration = Duration::from_secs(1);
/// Outbox removals that may be in flight while the next batches are sent.
const MAX_PENDING_ACKS: usize = 8;
/// Longest backend error body kept in `last_error`.
const MAX_ERROR_BODY: usize = 200;
/// Longest backend error body kept with a dead letter.
const MAX_DEAD_LETTER_BODY: usize = 2048;
/// How far ahead of now a record's time may be when it is sent (Stripe's limit: 5 minutes).
pub const MAX_FUTURE_SKEW_MS: i64 = 5 * 60_000;

/// A batch and where its records sit in the outbox.
struct Outgoing {
    batch: Batch,
    queued: Vec<Queued>,
}

enum Response {
    Accepted,
    Retry {
        after: Option<Duration>,
        error: LastError,
    },
    Unauthorized {
        error: LastError,
        token: Option<u64>,
    },
    /// 404/405/410 or a redirect: the URL is wrong.
    Misconfigured(LastError),
    /// Any other 4xx: something in the batch is refused; `body` is the backend's answer.
    Rejected {
        error: LastError,
        body: String,
    },
}

/// Why sending stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    /// 401/403 for the token with this fingerprint; resumes when the token changes.
    Credentials(Option<u64>),
    /// The URL is wrong; resumes on `sync.now` when the backend then accepts, or at restart.
    Misconfigured,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Drained,
    Retrying,
    Paused,
}

#[derive(Default)]
struct RunStats {
    sent: u64,
    dead: u64,
}

#[derive(Serialize)]
struct PausedEvent<'a> {
    status: Option<u16>,
    message: &'a str,
    /// `unauthorized` or `misconfigured`.
    reason: &'static str,
}

#[derive(Serialize)]
struct ResumedEvent<'a> {
    reason: &'a str,
}

pub struct SyncWorker {
    cfg: SyncConfig,
    url: Option<reqwest::Url>,
    http: Option<reqwest::Client>,
    ledger: Arc<Ledger>,
    events: Bus,
    credentials: Arc<dyn SyncCredentials>,
    progress: Arc<Mutex<Progress>>,
    commands: mpsc::Receiver<Command>,
    source: String,
    subject: SubjectFn,
    backoff: Backoff,
    /// When the first persisted batch may be sent again after a failure.
    retry_at: Option<Instant>,
    paused: Option<Pause>,
}

impl std::fmt::Debug for SyncWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncWorker").field("source", &self.source).finish_non_exhaustive()
    }
}

/// The parts of a worker [`SyncWorker::new`] takes from `sync::new`.
pub(super) struct Parts {
    pub cfg: SyncConfig,
    pub ledger: Arc<Ledger>,
    pub events: Bus,
    pub credentials: Arc<dyn SyncCredentials>,
    pub progress: Arc<Mutex<Progress>>,
    pub commands: mpsc::Receiver<Command>,
    pub source: String,
    pub subject: SubjectFn,
}

impl SyncWorker {
    pub(super) fn new(parts: Parts) -> SyncWorker {
        let Parts { cfg, ledger, events, credentials, progress, commands, source, subject } = parts;
        let url = cfg.url.as_deref().and_then(|u| reqwest::Url::parse(u).ok());
        let http = url.as_ref().and_then(|_| {
            // No redirects (transport::builder): the bearer token must not reach another host.
            crate::providers::transport::builder(Duration::from_secs(cfg.timeout_secs.min(10)))
                .timeout(Duration::from_secs(cfg.timeout_secs))
                .build()
                .map_err(|e| tracing::error!("sync disabled: cannot build the HTTP client: {}", e.without_url()))
                .ok()
        });
        let backoff =
            Backoff::clamped(Duration::from_millis(cfg.backoff_initial_ms), Duration::from_millis(cfg.backoff_max_ms));
        SyncWorker {
            cfg,
            url,
            http,
            ledger,
            events,
            credentials,
            progress,
            commands,
            source,
            subject,
            backoff,
            retry_at: None,
            paused: None,
        }
    }

    /// Runs until `finish` is cancelled, then drains what it can within `shutdown_drain_secs`.
    pub async fn run(mut self, finish: CancellationToken) {
        if self.http.is_none() || self.url.is_none() {
            self.update(|p| p.phase = Phase::Disabled);
            // Commands cannot reach a disabled worker (the handle answers them); wait for the end.
            finish.cancelled().await;
            return;
        }
        let interval = Duration::from_secs(self.cfg.interval_secs);
        let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut counts = self.ledger.watch_counts();
        // Records left from an earlier run are sent at once.
        let mut wanted = self.ledger.counts().outbox > 0;
        tracing::info!(source = %self.source, pending = self.ledger.counts().outbox, "sync worker started");
        loop {
            if wanted && self.can_send() {
                wanted = false;
                let mut stats = RunStats::default();
                tokio::select! {
                    biased;
                    _ = finish.cancelled() => break,
                    _ = self.drain(&mut stats) => {}
                }
                continue;
            }
            let wake = self.wake_at();
            tokio::select! {
                biased;
                _ = finish.cancelled() => break,
                cmd = self.commands.recv() => match cmd {
                    None => return,
                    Some(Command::Now { retry_dead_letters, reply }) => {
                        tokio::select! {
                            biased;
                            _ = finish.cancelled() => break,
                            report = self.now(retry_dead_letters) => { let _ = reply.send(report); }
                        }
                    }
                    Some(Command::CredentialsChanged) => {
                        if matches!(self.paused, Some(Pause::Credentials(_))) {
                            self.resume("credentials changed");
                            wanted = true;
                        }
                    }
                },
                _ = tick.tick() => wanted = true,
                changed = counts.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let pending = counts.borrow_and_update().outbox;
                    if pending >= self.cfg.flush_threshold {
                        wanted = true;
                    }
                }
                _ = sleep_until(wake), if wake.is_some() => {
                    match self.paused {
                        Some(Pause::Credentials(refused)) => {
                            if fingerprint(self.credentials.bearer().as_ref()) != refused {
                                self.resume("credentials changed");
                                wanted = true;
                            }
                        }
                        Some(Pause::Misconfigured) => {}
                        None => wanted = true,
                    }
                }
            }
        }
        self.final_drain().await;
    }

    fn can_send(&self) -> bool {
        self.paused.is_none() && self.retry_at.is_none_or(|at| at <= Instant::now())
    }

    fn wake_at(&self) -> Option<Instant> {
        match self.paused {
            Some(Pause::Credentials(_)) => Some(Instant::now() + CREDENTIALS_POLL),
            Some(Pause::Misconfigured) => None,
            None => self.retry_at,
        }
    }

    fn update(&self, f: impl FnOnce(&mut Progress)) {
        if let Ok(mut p) = self.progress.lock() {
            f(&mut p);
        }
    }

    /// `sync.now`: optionally requeue dead letters, then drain ignoring backoff and pause.
    async fn now(&mut self, retry_dead_letters: bool) -> NowReport {
        let mut requeued = 0;
        if retry_dead_letters {
            match self.ledger.requeue_dead_letters().await {
                Ok(n) => requeued = n,
                Err(e) => tracing::error!("cannot requeue dead letters: {e}"),
            }
        }
        self.retry_at = None;
        let mut stats = RunStats::default();
        let outcome = self.drain(&mut stats).await;
        let p = self.progress.lock().map(|p| p.clone()).unwrap_or_default();
        NowReport {
            state: p.phase,
            sent: stats.sent,
            dead_lettered: stats.dead,
            requeued,
            pending: self.ledger.counts().outbox,
            error: if outcome == Outcome::Drained { None } else { p.last_error },
        }
    }

    /// The persisted batches (from an earlier attempt, run or crash), to send first.
    async fn stored(&self) -> Result<VecDeque<Outgoing>, String> {
        let ledger = self.ledger.clone();
        let stored = tokio::task::spawn_blocking(move || ledger.stored_batches())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let mut out = VecDeque::with_capacity(stored.len());
        for b in stored {
            if b.entries.is_empty() {
                // Every member was acknowledged or cleared: nothing of it is left to send.
                self.ledger.persist_batches(Some(b.id), Vec::new()).await.map_err(|e| e.to_string())?;
                continue;
            }
            let batch = Batch { id: b.id, ids: b.entries.iter().map(|q| q.id).collect(), body: b.body.into() };
            out.push_back(Outgoing { batch, queued: b.entries });
        }
        Ok(out)
    }

    /// Sends batches until the outbox is empty or a batch fails: first the persisted ones, then
    /// new ones read (and persisted) while the previous one is in flight.
    async fn drain(&mut self, stats: &mut RunStats) -> Outcome {
        let mut work = match self.stored().await {
            Ok(w) => w,
            Err(message) => return self.read_failed(message),
        };
        let mut cursor: Option<Queued> = None;
        let mut acks: VecDeque<JoinHandle<()>> = VecDeque::new();
        let mut next: Option<JoinHandle<Result<Option<Outgoing>, String>>> = None;
        let outcome = loop {
            let out = match work.pop_front() {
                Some(o) => o,
                None => {
                    let read = match next.take() {
                        Some(prefetched) => prefetched.await.unwrap_or_else(|e| Err(e.to_string())),
                        None => self.prefetch(cursor).await.unwrap_or_else(|e| Err(e.to_string())),
                    };
                    match read {
                        Ok(Some(o)) => {
                            cursor = o.queued.last().copied().or(cursor);
                            o
                        }
                        Ok(None) => break Outcome::Drained,
                        Err(message) => break self.read_failed(message),
                    }
                }
            };
            // Read (and persist) the following batch while this one is in flight.
            if work.is_empty() && next.is_none() {
                next = Some(self.prefetch(cursor));
            }
            self.update(|p| {
                p.phase = Phase::Sending;
                p.last_attempt_at_ms = Some(now_ms());
            });
            match self.post(&out.batch).await {
                Response::Accepted => {
                    let n = out.batch.ids.len() as u64;
                    tracing::debug!(batch = %out.batch.id, events = n, "sync batch accepted");
                    stats.sent += n;
                    self.retry_at = None;
                    self.update(|p| {
                        p.sent_total += n;
                        p.batches_total += 1;
                        p.failures = 0;
                        p.last_success_at_ms = Some(now_ms());
                        p.next_attempt_at_ms = None;
                    });
                    if self.paused.is_some() {
                        self.resume("the backend accepted a batch");
                    }
                    if acks.len() >= MAX_PENDING_ACKS {
                        if let Some(oldest) = acks.pop_front() {
                            let _ = oldest.await;
                        }
                    }
                    let ledger = self.ledger.clone();
                    acks.push_back(tokio::spawn(async move {
                        if let Err(e) = ledger.ack(&out.queued, Some(out.batch.id)).await {
                            tracing::error!("sent records stay in the outbox (they will be sent again): {e}");
                        }
                    }));
                }
                Response::Retry { after, error } => {
                    let failures = self.progress.lock().map(|p| p.failures + 1).unwrap_or(1);
                    let delay = self.backoff.delay(failures).max(after.unwrap_or_default());
                    tracing::warn!(
                        batch = %out.batch.id, status = ?error.status, failures,
                        "sync failed ({}); retrying in {} ms", error.message, delay.as_millis()
                    );
                    self.retry_at = Some(Instant::now() + delay);
                    let at_ms = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                    self.update(|p| {
                        p.failures = failures;
                        p.phase = Phase::Retrying;
                        p.next_attempt_at_ms = Some(at_ms);
                        p.last_error = Some(error);
                    });
                    break Outcome::Retrying;
                }
                Response::Unauthorized { error, token } => {
                    self.pause(Pause::Credentials(token), error);
                    break Outcome::Paused;
                }
                Response::Misconfigured(error) => {
                    self.pause(Pause::Misconfigured, error);
                    break Outcome::Paused;
                }
                Response::Rejected { error, body } => {
                    match halves(&out) {
                        Some((left, right)) => {
                            tracing::info!(
                                batch = %out.batch.id, status = ?error.status, events = out.queued.len(),
                                "the backend refused a batch; splitting it to find the refused records"
                            );
                            let persisted = [&left, &right].map(|h| NewBatch {
                                id: h.batch.id,
                                body: h.batch.body.to_vec(),
                                entries: h.queued.clone(),
                            });
                            if let Err(e) = self.ledger.persist_batches(Some(out.batch.id), persisted.into()).await {
                                break self.read_failed(format!("cannot split a refused batch: {e}"));
                            }
                            work.push_front(right);
                            work.push_front(left);
                        }
                        None => {
                            tracing::warn!(
                                batch = %out.batch.id, status = ?error.status, records = out.queued.len(),
                                "the backend refused records; moving them to the dead letters: {}", error.message
                            );
                            let why = Refused {
                                batch_id: out.batch.id.to_string(),
                                status: error.status,
                                reason: "rejected".into(),
                                body: Some(body),
                            };
                            match self.ledger.dead_letter(&out.queued, Some(out.batch.id), why).await {
                                Ok(n) => stats.dead += n,
                                Err(e) => tracing::error!("cannot move records to the dead letters: {e}"),
                            }
                        }
                    }
                    self.update(|p| p.last_error = Some(error));
                }
            }
        };
        // A batch being read is persisted by then: let it finish, it is sent first next time.
        if let Some(unused) = next {
            let _ = unused.await;
        }
        for ack in acks {
            let _ = ack.await;
        }
        if outcome == Outcome::Drained {
            self.update(|p| p.phase = Phase::Idle);
        }
        outcome
    }

    fn read_failed(&self, message: String) -> Outcome {
        let error = LastError { at_ms: now_ms(), status: None, message };
        tracing::error!("sync cannot read the outbox: {}", error.message);
        self.update(|p| p.last_error = Some(error));
        Outcome::Drained
    }

    /// Starts reading (and persisting) the batch after `cursor` in the background.
    fn prefetch(&self, cursor: Option<Queued>) -> JoinHandle<Result<Option<Outgoing>, String>> {
        let reader = BatchReader {
            ledger: self.ledger.clone(),
            source: self.source.clone(),
            subject: (self.subject)(),
            max_events: self.cfg.batch_max_events,
            max_bytes: self.cfg.batch_max_bytes,
            max_age_ms: i64::from(self.cfg.max_event_age_days).saturating_mul(86_400_000),
        };
        tokio::spawn(async move { reader.next(cursor).await })
    }

    async fn post(&self, batch: &Batch) -> Response {
        let error = |status: Option<u16>, message: String| LastError { at_ms: now_ms(), status, message };
        let (Some(http), Some(url)) = (&self.http, &self.url) else {
            return Response::Misconfigured(error(None, "sync is off".into()));
        };
        let token = self.credentials.bearer();
        let mut req = http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, cloudevents::CONTENT_TYPE)
            .header("Idempotency-Key", batch.id.to_string())
            .body(batch.body.clone());
        if let Some(t) = &token {
            req = req.bearer_auth(t.expose_secret());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let kind = if e.is_timeout() { "timed out" } else { "request failed" };
                let message = format!("{kind}: {}", crate::providers::transport::error_chain(&e.without_url()));
                return Response::Retry { after: None, error: error(None, message) };
            }
        };
        let status = resp.status();
        let code = status.as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::retry::parse_retry_after(v, SystemTime::now(), MAX_RETRY_AFTER));
        let body = resp.bytes().await.unwrap_or_default();
        if status.is_success() {
            return Response::Accepted;
        }
        let message = format!("HTTP {code}{}", body_snippet(&body, MAX_ERROR_BODY));
        match code {
            401 | 403 => {
                Response::Unauthorized { error: error(Some(code), message), token: fingerprint(token.as_ref()) }
            }
            300..=399 | 404 | 405 | 410 => Response::Misconfigured(error(
                Some(code),
                format!("{message} (is [sync] url right? sync is paused; nothing was dead-lettered)"),
            )),
            408 | 429 | 500..=599 => Response::Retry { after: retry_after, error: error(Some(code), message) },
            400..=499 => {
                let snippet = body_snippet(&body, MAX_DEAD_LETTER_BODY);
                let body = snippet.strip_prefix(": ").unwrap_or(&snippet).to_string();
                Response::Rejected { error: error(Some(code), message), body }
            }
            _ => Response::Retry { after: retry_after, error: error(Some(code), message) },
        }
    }

    fn pause(&mut self, why: Pause, error: LastError) {
        let was_paused = self.paused.is_some();
        self.paused = Some(why);
        let (phase, reason) = match why {
            Pause::Credentials(_) => (Phase::Paused, "unauthorized"),
            Pause::Misconfigured => (Phase::Misconfigured, "misconfigured"),
        };
        if !was_paused {
            match why {
                Pause::Credentials(_) => {
                    tracing::warn!(status = ?error.status, "sync paused: the backend refused the credentials")
                }
                Pause::Misconfigured => {
                    tracing::error!(status = ?error.status, "sync paused: {}", error.message)
                }
            }
            let event = PausedEvent { status: error.status, message: &error.message, reason };
            self.events.emit(EventKind::SyncPaused, &event);
        }
        self.retry_at = None;
        self.update(|p| {
            p.phase = phase;
            p.next_attempt_at_ms = None;
            p.last_error = Some(error);
        });
    }

    fn resume(&mut self, reason: &str) {
        if self.paused.take().is_none() {
            return;
        }
        tracing::info!("sync resumed: {reason}");
        self.events.emit(EventKind::SyncResumed, &ResumedEvent { reason });
        self.retry_at = None;
        self.update(|p| {
            p.phase = Phase::Idle;
            p.failures = 0;
        });
    }

    /// Graceful shutdown: keep draining until the outbox is empty or the deadline passes.
    async fn final_drain(&mut self) {
        let pending = self.ledger.counts().outbox;
        if pending == 0 {
            return;
        }
        if self.paused.is_some() {
            tracing::info!(pending, "sync is paused; records stay queued for the next start");
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(self.cfg.shutdown_drain_secs);
        tracing::info!(pending, "draining the sync outbox for at most {}s", self.cfg.shutdown_drain_secs);
        loop {
            if let Some(at) = self.retry_at {
                if at > deadline {
                    break;
                }
                tokio::time::sleep_until(at).await;
            }
            let mut stats = RunStats::default();
            match tokio::time::timeout_at(deadline, self.drain(&mut stats)).await {
                Ok(Outcome::Retrying) => continue,
                Ok(Outcome::Drained | Outcome::Paused) | Err(_) => break,
            }
        }
        let left = self.ledger.counts().outbox;
        if left > 0 {
            tracing::info!(pending = left, "records stay queued for the next start");
        }
    }
}

/// Reads unbatched outbox entries into the next batch and persists it before it is returned
/// (so its first send is already a re-sendable, stable request). Entries that cannot be sent go
/// to the dead letters first: unreadable ones, and records outside the backend's time window.
struct BatchReader {
    ledger: Arc<Ledger>,
    source: String,
    subject: String,
    max_events: usize,
    max_bytes: usize,
    max_age_ms: i64,
}

/// Entries held back from a batch, by reason (`unreadable`, `too_old`, `future`).
type HeldBack = Vec<(&'static str, Queued)>;

impl BatchReader {
    async fn next(self, mut cursor: Option<Queued>) -> Result<Option<Outgoing>, String> {
        loop {
            let ledger = self.ledger.clone();
            let (max_events, max_bytes, max_age_ms) = (self.max_events, self.max_bytes, self.max_age_ms);
            let (source, subject) = (self.source.clone(), self.subject.clone());
            let read = tokio::task::spawn_blocking(move || {
                let entries = ledger.outbox_after(cursor, max_events).map_err(|e| e.to_string())?;
                let last = entries.last().map(|e| e.at);
                let now = now_ms();
                let mut records = Vec::with_capacity(entries.len());
                let mut positions = std::collections::HashMap::with_capacity(entries.len());
                let mut held: HeldBack = Vec::new();
                for e in entries {
                    match e.record {
                        Ok(r) if r.ts < now.saturating_sub(max_age_ms) => held.push(("too_old", e.at)),
                        Ok(r) if r.ts > now.saturating_add(MAX_FUTURE_SKEW_MS) => held.push(("future", e.at)),
                        Ok(r) => {
                            positions.insert(r.id, e.at);
                            records.push(r);
                        }
                        Err(why) => {
                            tracing::error!(id = %e.at.id, "unreadable outbox entry: {why}");
                            held.push(("unreadable", e.at));
                        }
                    }
                }
                let ids: Vec<uuid::Uuid> = records.iter().map(|r| r.id).collect();
                let deductions = ledger.credits_for_records(&ids).map_err(|e| e.to_string())?;
                let out = (!records.is_empty()).then(|| {
                    let sender = cloudevents::Sender { source: &source, subject: &subject };
                    let batch = cloudevents::build(&records, &deductions, sender, max_events, max_bytes);
                    let queued = batch.ids.iter().filter_map(|id| positions.get(id).copied()).collect();
                    Outgoing { batch, queued }
                });
                Ok::<_, String>((out, held, last))
            });
            let (out, held, last) = read.await.map_err(|e| e.to_string())??;
            for reason in ["unreadable", "too_old", "future"] {
                let entries: Vec<Queued> = held.iter().filter(|(r, _)| *r == reason).map(|(_, q)| *q).collect();
                if entries.is_empty() {
                    continue;
                }
                tracing::warn!(records = entries.len(), reason, "records held back from sync (dead letters)");
                let why = Refused { batch_id: "-".into(), status: None, reason: reason.into(), body: None };
                self.ledger.dead_letter(&entries, None, why).await.map_err(|e| e.to_string())?;
            }
            match (out, last) {
                (Some(o), _) => {
                    let stored = NewBatch { id: o.batch.id, body: o.batch.body.to_vec(), entries: o.queued.clone() };
                    self.ledger.persist_batches(None, vec![stored]).await.map_err(|e| e.to_string())?;
                    return Ok(Some(o));
                }
                (None, None) => return Ok(None),
                (None, Some(last)) => cursor = Some(last),
            }
        }
    }
}

/// Splits a refused batch in two halves with their own ids, or `None` if its body is not the
/// array of its entries' events (each record's events: its usage event and its deductions').
fn halves(out: &Outgoing) -> Option<(Outgoing, Outgoing)> {
    let groups = cloudevents::groups(&out.batch.body)?;
    if groups.len() != out.queued.len() || groups.len() < 2 {
        return None;
    }
    let mid = groups.len() / 2;
    let half = |range: std::ops::Range<usize>| {
        let queued: Vec<Queued> = out.queued[range.clone()].to_vec();
        let events: Vec<&[u8]> = groups[range].iter().flatten().copied().collect();
        let batch = Batch {
            id: uuid::Uuid::now_v7(),
            ids: queued.iter().map(|q| q.id).collect(),
            body: cloudevents::join(&events),
        };
        Outgoing { batch, queued }
    };
    Some((half(0..mid), half(mid..groups.len())))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `": <body>"` (control characters blanked, at most `max` characters), or `""` for no body.
fn body_snippet(body: &[u8], max: usize) -> String {
    let text: String =
        String::from_utf8_lossy(body).chars().map(|c| if c.is_control() { ' ' } else { c }).take(max).collect();
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}
