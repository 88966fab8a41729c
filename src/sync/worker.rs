//! The sync worker: one task that owns the HTTP client and every sync decision.
//!
//! It sleeps until something asks for a flush (the periodic tick, the outbox reaching
//! `flush_threshold`, `sync.now`, the retry time of a failed batch), then drains the outbox
//! batch by batch. Explicit state: `retry` holds the batch to resend (same id, same bytes) and
//! when; `paused` holds the fingerprint of the token the backend refused.

use super::backoff::{Backoff, MAX_RETRY_AFTER};
use super::cloudevents::{self, Batch};
use super::credentials::{fingerprint, SyncCredentials};
use super::{Command, LastError, NowReport, Phase, Progress, SyncConfig};
use crate::clock::now_ms;
use crate::events::{Bus, EventKind};
use crate::ledger::{Ledger, Queued};
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

/// A batch and where its records sit in the outbox.
struct Outgoing {
    batch: Batch,
    queued: Vec<Queued>,
}

struct Retry {
    out: Outgoing,
    at: Instant,
}

enum Response {
    Accepted,
    Retry { after: Option<Duration>, error: LastError },
    Unauthorized { error: LastError, token: Option<u64> },
    Rejected(LastError),
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
    backoff: Backoff,
    retry: Option<Retry>,
    /// `Some(fingerprint of the refused token)` while paused.
    paused: Option<Option<u64>>,
}

impl std::fmt::Debug for SyncWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncWorker").field("source", &self.source).finish_non_exhaustive()
    }
}

impl SyncWorker {
    pub(super) fn new(
        cfg: SyncConfig,
        ledger: Arc<Ledger>,
        events: Bus,
        credentials: Arc<dyn SyncCredentials>,
        progress: Arc<Mutex<Progress>>,
        commands: mpsc::Receiver<Command>,
        source: String,
    ) -> SyncWorker {
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
            backoff,
            retry: None,
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
                        if self.paused.is_some() {
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
                        Some(refused) => {
                            if fingerprint(self.credentials.bearer().as_ref()) != refused {
                                self.resume("credentials changed");
                                wanted = true;
                            }
                        }
                        None => wanted = true,
                    }
                }
            }
        }
        self.final_drain().await;
    }

    fn can_send(&self) -> bool {
        self.paused.is_none() && self.retry.as_ref().is_none_or(|r| r.at <= Instant::now())
    }

    fn wake_at(&self) -> Option<Instant> {
        if self.paused.is_some() {
            return Some(Instant::now() + CREDENTIALS_POLL);
        }
        self.retry.as_ref().map(|r| r.at)
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
        if let Some(r) = self.retry.as_mut() {
            r.at = Instant::now();
        }
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

    /// Sends batches until the outbox is empty or a batch fails.
    async fn drain(&mut self, stats: &mut RunStats) -> Outcome {
        let mut cursor: Option<Queued> = None;
        let mut acks: VecDeque<JoinHandle<()>> = VecDeque::new();
        let mut next: Option<JoinHandle<Result<Option<Outgoing>, String>>> = None;
        let outcome = loop {
            let read = match (self.retry.take(), next.take()) {
                (Some(r), _) => Ok(Some(r.out)),
                (None, Some(prefetched)) => prefetched.await.unwrap_or_else(|e| Err(e.to_string())),
                (None, None) => self.prefetch(cursor).await.unwrap_or_else(|e| Err(e.to_string())),
            };
            let Outgoing { batch, queued } = match read {
                Ok(Some(b)) => b,
                Ok(None) => break Outcome::Drained,
                Err(message) => {
                    let error = LastError { at_ms: now_ms(), status: None, message };
                    tracing::error!("sync cannot read the outbox: {}", error.message);
                    self.update(|p| p.last_error = Some(error));
                    break Outcome::Drained;
                }
            };
            // Read the following batch while this one is in flight; dropped if this one fails.
            next = Some(self.prefetch(queued.last().copied().or(cursor)));
            self.update(|p| {
                p.phase = Phase::Sending;
                p.last_attempt_at_ms = Some(now_ms());
            });
            match self.post(&batch).await {
                Response::Accepted => {
                    let n = batch.ids.len() as u64;
                    tracing::debug!(batch = %batch.id, events = n, "sync batch accepted");
                    stats.sent += n;
                    cursor = queued.last().copied();
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
                        if let Err(e) = ledger.ack(&queued).await {
                            tracing::error!("sent records stay in the outbox (they will be sent again): {e}");
                        }
                    }));
                }
                Response::Retry { after, error } => {
                    let failures = self.progress.lock().map(|p| p.failures + 1).unwrap_or(1);
                    let delay = self.backoff.delay(failures).max(after.unwrap_or_default());
                    tracing::warn!(
                        batch = %batch.id, status = ?error.status, failures,
                        "sync failed ({}); retrying in {} ms", error.message, delay.as_millis()
                    );
                    self.retry = Some(Retry { out: Outgoing { batch, queued }, at: Instant::now() + delay });
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
                    self.retry = Some(Retry { out: Outgoing { batch, queued }, at: Instant::now() });
                    self.pause(error, token);
                    break Outcome::Paused;
                }
                Response::Rejected(error) => {
                    tracing::warn!(
                        batch = %batch.id, status = ?error.status,
                        "the backend refused a batch of {} records; moving it to the dead letters: {}",
                        batch.ids.len(), error.message
                    );
                    match self.ledger.dead_letter(&queued, &batch.id.to_string(), error.status, &error.message).await {
                        Ok(n) => stats.dead += n,
                        Err(e) => tracing::error!("cannot move the batch to the dead letters: {e}"),
                    }
                    cursor = queued.last().copied();
                    self.update(|p| p.last_error = Some(error));
                }
            }
        };
        if let Some(unused) = next {
            unused.abort();
        }
        for ack in acks {
            let _ = ack.await;
        }
        if outcome == Outcome::Drained {
            self.update(|p| p.phase = Phase::Idle);
        }
        outcome
    }

    /// Starts reading the batch after `cursor` in the background (overlapping the current POST).
    fn prefetch(&self, cursor: Option<Queued>) -> JoinHandle<Result<Option<Outgoing>, String>> {
        let reader = BatchReader {
            ledger: self.ledger.clone(),
            source: self.source.clone(),
            max_events: self.cfg.batch_max_events,
            max_bytes: self.cfg.batch_max_bytes,
        };
        tokio::spawn(async move { reader.next(cursor).await })
    }

    async fn post(&self, batch: &Batch) -> Response {
        let (Some(http), Some(url)) = (&self.http, &self.url) else {
            let error = LastError { at_ms: now_ms(), status: None, message: "sync is off".into() };
            return Response::Rejected(error);
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
        let error = |status: Option<u16>, message: String| LastError { at_ms: now_ms(), status, message };
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
        let message = format!("HTTP {code}{}", body_snippet(&body));
        match code {
            401 | 403 => {
                Response::Unauthorized { error: error(Some(code), message), token: fingerprint(token.as_ref()) }
            }
            408 | 429 | 500..=599 => Response::Retry { after: retry_after, error: error(Some(code), message) },
            400..=499 => Response::Rejected(error(Some(code), message)),
            _ => Response::Retry { after: retry_after, error: error(Some(code), message) },
        }
    }

    fn pause(&mut self, error: LastError, token: Option<u64>) {
        let was_paused = self.paused.is_some();
        self.paused = Some(token);
        if !was_paused {
            tracing::warn!(status = ?error.status, "sync paused: the backend refused the credentials");
            self.events.emit(EventKind::SyncPaused, &PausedEvent { status: error.status, message: &error.message });
        }
        self.update(|p| {
            p.phase = Phase::Paused;
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
        if let Some(r) = self.retry.as_mut() {
            r.at = Instant::now();
        }
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
            if let Some(r) = self.retry.as_ref() {
                if r.at > deadline {
                    break;
                }
                tokio::time::sleep_until(r.at).await;
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

/// Reads outbox entries into the next batch; unreadable entries go to the dead letters.
struct BatchReader {
    ledger: Arc<Ledger>,
    source: String,
    max_events: usize,
    max_bytes: usize,
}

impl BatchReader {
    async fn next(self, mut cursor: Option<Queued>) -> Result<Option<Outgoing>, String> {
        loop {
            let ledger = self.ledger.clone();
            let (max_events, max_bytes, source) = (self.max_events, self.max_bytes, self.source.clone());
            let read = tokio::task::spawn_blocking(move || {
                let entries = ledger.outbox_after(cursor, max_events).map_err(|e| e.to_string())?;
                let last = entries.last().map(|e| e.at);
                let mut records = Vec::with_capacity(entries.len());
                let mut queued = Vec::with_capacity(entries.len());
                let mut unreadable = Vec::new();
                for e in entries {
                    match e.record {
                        Ok(r) => {
                            records.push(r);
                            queued.push(e.at);
                        }
                        Err(why) => {
                            tracing::error!(id = %e.at.id, "unreadable outbox entry: {why}");
                            unreadable.push(e.at);
                        }
                    }
                }
                let out = (!records.is_empty()).then(|| {
                    let batch = cloudevents::build(&records, &source, max_events, max_bytes);
                    queued.truncate(batch.ids.len());
                    Outgoing { batch, queued }
                });
                Ok::<_, String>((out, unreadable, last))
            });
            let (out, unreadable, last) = read.await.map_err(|e| e.to_string())??;
            if !unreadable.is_empty() {
                self.ledger
                    .dead_letter(&unreadable, "-", None, "unreadable outbox entry")
                    .await
                    .map_err(|e| e.to_string())?;
            }
            match (out, last) {
                (Some(o), _) => return Ok(Some(o)),
                (None, None) => return Ok(None),
                (None, Some(last)) => cursor = Some(last),
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn body_snippet(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ERROR_BODY)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}
