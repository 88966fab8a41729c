//! The usage ledger: every metered call, durably, in SQLite (`<data_dir>/ledger.sqlite`). The only
//! module that knows SQLite.
//!
//! Tables (see [`schema`] for the columns; a stable, read-only interface for `sqlite3` users):
//! - `records`: one row per record, keyed by its UUIDv7 id (which sorts by time);
//! - `counters`: per period (UTC day and month), dimension (total, user, app, provider,
//!   provider/model, key_source) and value, the totals of the records (see [`counters`]);
//! - `outbox`: records not yet confirmed by the sync backend, in queue order (see [`outbox`]);
//! - `batches`: sync batches stored before their first send (id, exact body; their members are
//!   the outbox entries whose `batch` names them), so a re-send is the same request;
//! - `dead_letters`: records the backend refused (or sync held back), with why;
//! - `meta`: the device id;
//! - `apps`: the apps that call over HTTP, with the SHA-256 hash of their token (see [`apps`]);
//! - `credit_transactions`: the prepaid credits' audit log (see [`credits`]).
//!
//! Invariants:
//! - a record, its counters and its outbox entry are written in ONE transaction, and
//!   [`Ledger::commit`] returns only after that transaction's `COMMIT` returned with WAL and
//!   `synchronous = FULL`, i.e. it is on disk (group commit: concurrent writers share one commit,
//!   see [`committer`]);
//! - ids are unique: committing an id that is already stored changes nothing (idempotent import);
//! - the counters always equal the sum of the records they count (both change in the same
//!   transactions, a clear included);
//! - an outbox entry is removed only when the backend confirmed it (`ack`) or refused it
//!   (moved to `dead_letters`), never by `clear` unless forced; a stored batch leaves with its
//!   answer, or is replaced by its halves in one transaction; a non-forced `clear` makes every
//!   outbox entry carry its record inline in the same transaction that removes the records;
//! - one writer (the committer thread); readers use their own connections and never block it.

pub mod apps;
mod committer;
pub mod counters;
pub mod credits;
pub mod outbox;
pub mod periods;
mod rows;
pub mod schema;
pub mod summary;
pub mod validate;

pub use committer::Cleared;
pub use counters::Counter;
pub use outbox::Queued;
pub use periods::{Dim, Period};
pub use summary::{BadPeriod, Group, Projection, Summary};
pub use validate::{validate, InvalidRecord};

use crate::clock::now_ms;
use crate::usage_record::UsageRecord;
pub use committer::Applied;
pub use committer::NewBatch;
use committer::{prefixed, seq_param, Commit, Committer, Job, Op, Prepared, Refusal, Visibility};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

/// Writes queued for the committer before writers wait (backpressure).
const JOB_QUEUE: usize = 16_384;
const DEVICE_ID_KEY: &str = "device_id";
/// Idle reader connections kept for reuse.
const IDLE_READERS: usize = 4;

#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open the usage ledger at {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("invalid usage record: {0}")]
    Invalid(#[from] InvalidRecord),
    #[error("usage ledger storage failure: {0}")]
    Storage(Arc<rusqlite::Error>),
    #[error("unreadable ledger entry: {0}")]
    Corrupt(String),
    #[error("the usage ledger is closed")]
    Closed,
    #[error("an app named `{0}` already exists (remove it first with `llm-sidecar apps rm`)")]
    AppExists(String),
    #[error("an app name must be 1-64 printable characters")]
    InvalidAppName,
    #[error("cannot make an app token: the system's random source failed: {0}")]
    Random(String),
}

impl LedgerError {
    fn storage(e: rusqlite::Error) -> LedgerError {
        LedgerError::Storage(Arc::new(e))
    }
}

/// Sizes the sync worker and `sync.status` watch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Records waiting in the outbox.
    pub outbox: u64,
    pub dead: u64,
}

/// Reader connections, opened on demand and kept for reuse.
struct Readers {
    file: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    /// Runs `f` on a reader connection.
    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T, LedgerError>) -> Result<T, LedgerError> {
        let reuse = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let conn = match reuse {
            Some(c) => c,
            None => schema::open_reader(&self.file).map_err(LedgerError::storage)?,
        };
        let out = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        out
    }
}

/// A record the backend refused (or the worker held back), with why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    pub batch_id: String,
    /// HTTP status of the refusal, if there was one.
    pub status: Option<u16>,
    /// `rejected` (the backend refused it alone), `too_old`, `future`, `unreadable`.
    pub reason: String,
    /// The backend's error body (truncated), if it answered.
    pub body: Option<String>,
    pub at_ms: i64,
    pub record: UsageRecord,
}

/// Why records go to the dead letters (see [`Ledger::dead_letter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The batch they were refused in (`-` when never sent).
    pub batch_id: String,
    pub status: Option<u16>,
    pub reason: String,
    pub body: Option<String>,
}

/// A sync batch persisted before its first send (see `schema::V3`).
#[derive(Debug, Clone)]
pub struct StoredBatch {
    pub id: Uuid,
    pub body: Vec<u8>,
    /// Its outbox entries, in queue order.
    pub entries: Vec<Queued>,
}

/// Filters for [`Ledger::records`]. Times are Unix milliseconds, `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, Default)]
pub struct RecordQuery {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub app: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    /// Continue after (in the scan direction) this id.
    pub after: Option<Uuid>,
    pub limit: usize,
    /// Oldest first instead of newest first.
    pub ascending: bool,
}

#[derive(Debug, Clone)]
pub struct RecordPage {
    pub records: Vec<UsageRecord>,
    /// Pass as `after` for the next page; `None` when there is no more.
    pub next: Option<Uuid>,
}

/// One counter row of a summary.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterRow {
    pub period: String,
    pub key: String,
    pub counter: Counter,
}

/// One queued record, as read by the sync worker.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub at: Queued,
    /// The record, or why it cannot be read.
    pub record: Result<UsageRecord, String>,
}

/// Result of committing one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    New,
    /// A record with this id was already stored; nothing changed.
    Duplicate,
}

pub struct Ledger {
    path: PathBuf,
    /// When each app's last-used time was last sent to the committer (see [`apps`]).
    touched: Mutex<std::collections::HashMap<String, i64>>,
    /// Token hashes verified since the last removal, and their app: a hit skips the table.
    /// [`Ledger::remove_app`] empties it and bumps its generation before and after its commit; a
    /// lookup caches what it read only if the generation did not move meanwhile, so a removed
    /// app's token stops at once.
    verified: Mutex<(u64, std::collections::HashMap<[u8; 32], String>)>,
    readers: Readers,
    jobs: mpsc::Sender<Job>,
    counts: watch::Receiver<Counts>,
    device_id: Uuid,
    visibility: Visibility,
    stats: Arc<committer::Stats>,
}

/// See [`Ledger::commit_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CommitStats {
    /// Transactions committed (each one fsync of the WAL).
    pub commits: u64,
    /// Writes (records stored, outbox and app updates, ...) those commits carried.
    pub writes: u64,
    /// Time the committer spent on its rounds (applying, committing, answering), in µs: over
    /// `commits`, how long a writer waits for its round once it has begun.
    pub busy_us: u64,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("path", &self.path).field("counts", &*self.counts.borrow()).finish()
    }
}

impl Ledger {
    /// Opens (or creates) the ledger in directory `dir` (`dir/ledger.sqlite`) and starts its
    /// committer thread. A sled ledger of earlier versions in `dir` is refused with what to do.
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        let open_err = |message: String| LedgerError::Open { path: schema::path_in(dir), message };
        let file = schema::prepare(dir).map_err(|e| open_err(e.to_string()))?;
        let conn = schema::open_writer(&file).map_err(|e| open_err(e.to_string()))?;
        let device_id = device_id(&conn).map_err(|e| open_err(e.to_string()))?;
        let count = |sql: &str| -> Result<u64, LedgerError> {
            conn.query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| u64::try_from(n).unwrap_or(0))
                .map_err(|e| open_err(e.to_string()))
        };
        let counts =
            Counts { outbox: count("SELECT count(*) FROM outbox")?, dead: count("SELECT count(*) FROM dead_letters")? };
        let (counts_tx, counts_rx) = watch::channel(counts);
        let visibility = Visibility::default();
        let stats = Arc::new(committer::Stats::default());
        let committer = Committer { conn, counts, visibility: visibility.clone(), counts_tx, stats: stats.clone() };
        let (tx, rx) = mpsc::channel(JOB_QUEUE);
        std::thread::Builder::new()
            .name("ledger-commit".into())
            .spawn(move || committer.run(rx))
            .map_err(|e| open_err(format!("cannot start the committer thread: {e}")))?;
        tracing::info!(path = %file.display(), outbox = counts.outbox, dead_letters = counts.dead, "usage ledger open");
        Ok(Ledger {
            readers: Readers { file: file.clone(), idle: Mutex::new(Vec::new()) },
            path: file,
            touched: Mutex::new(std::collections::HashMap::new()),
            verified: Mutex::new((0, std::collections::HashMap::new())),
            jobs: tx,
            counts: counts_rx,
            device_id,
            visibility,
            stats,
        })
    }

    /// Durable commits made since the ledger opened, the writes they carried (their ratio is
    /// how well concurrent writers share an fsync) and the time they took.
    pub fn commit_stats(&self) -> CommitStats {
        use std::sync::atomic::Ordering::Relaxed;
        CommitStats {
            commits: self.stats.commits.load(Relaxed),
            writes: self.stats.writes.load(Relaxed),
            busy_us: self.stats.busy_us.load(Relaxed),
        }
    }

    /// The ledger file.
    pub fn file(&self) -> &Path {
        &self.path
    }

    /// This installation's id (made once, kept in the ledger); the sync source is derived from it.
    pub fn device_id(&self) -> Uuid {
        self.device_id
    }

    /// Validates and durably stores one record with its counters and outbox entry.
    pub async fn commit(&self, record: &UsageRecord) -> Result<Committed, LedgerError> {
        let flags = self.commit_many(std::slice::from_ref(record)).await?;
        Ok(if flags.first() == Some(&true) { Committed::New } else { Committed::Duplicate })
    }

    /// Validates every record (all or none are stored), then stores the ones whose id is new, in
    /// one transaction, durably. Returns per record whether it was new.
    pub async fn commit_many(&self, records: &[UsageRecord]) -> Result<Vec<bool>, LedgerError> {
        self.commit_many_then(records, None).await
    }

    /// [`Ledger::commit_many`] for imported records: a record whose `queue` flag is false (its
    /// export says the backend already has it) gets no outbox entry.
    pub async fn import(&self, records: &[UsageRecord], queue: &[bool]) -> Result<Vec<bool>, LedgerError> {
        self.commit_prepared(records, Vec::new(), None, Some(queue)).await
    }

    /// [`Ledger::commit_many`], running `applied` at the moment the records become visible to
    /// readers (before they are durable), atomically with it for a reader inside
    /// [`Ledger::consistent`]. If they never become visible (invalid, storage failure), `applied`
    /// is dropped without running.
    pub async fn commit_many_then(
        &self,
        records: &[UsageRecord],
        applied: Option<Applied>,
    ) -> Result<Vec<bool>, LedgerError> {
        self.commit_prepared(records, Vec::new(), applied, None).await
    }

    /// [`Ledger::commit_many_then`] for a call's records together with its credit deduction:
    /// one transaction, so both are durable and visible together, or neither is.
    pub async fn commit_call(
        &self,
        records: &[UsageRecord],
        credits: Vec<credits::CreditTx>,
        applied: Option<Applied>,
    ) -> Result<Vec<bool>, LedgerError> {
        self.commit_prepared(records, credits, applied, None).await
    }

    /// Stores a balance change seen from the backend (`tx`, if any) and its latest balance.
    pub async fn record_backend_credits(
        &self,
        tx: Option<credits::CreditTx>,
        backend: credits::BackendBalance,
    ) -> Result<(), LedgerError> {
        self.send(|reply| Job::Op(Op::Credits { tx, backend, reply })).await
    }

    /// The backend's last reported credit balance, if it ever reported one.
    pub fn backend_credits(&self) -> Result<Option<credits::BackendBalance>, LedgerError> {
        self.readers.with(credits::backend)
    }

    /// Credits deducted here that the backend's balance received at `fetched_at_ms` does not
    /// count yet (see [`credits::unacknowledged`]).
    pub fn unacknowledged_credits(&self, fetched_at_ms: i64) -> Result<i64, LedgerError> {
        self.readers.with(|c| credits::unacknowledged(c, fetched_at_ms))
    }

    /// The credit deductions that paid for each of `records` (those with none are left out).
    pub fn credits_for_records(
        &self,
        records: &[Uuid],
    ) -> Result<std::collections::HashMap<Uuid, Vec<credits::CreditTx>>, LedgerError> {
        self.readers.with(|c| {
            let mut out = std::collections::HashMap::new();
            for r in records {
                let txs = credits::for_record(c, r)?;
                if !txs.is_empty() {
                    out.insert(*r, txs);
                }
            }
            Ok(out)
        })
    }

    /// Credits deducted at or after `since_ms`.
    pub fn credits_deducted_since(&self, since_ms: i64) -> Result<i64, LedgerError> {
        self.readers.with(|c| credits::deducted_since(c, since_ms))
    }

    /// The credit audit log at or after `since_ms`, newest first.
    pub fn credit_transactions(
        &self,
        since_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<credits::CreditTx>, LedgerError> {
        self.readers.with(|c| credits::list(c, since_ms, limit))
    }

    async fn commit_prepared(
        &self,
        records: &[UsageRecord],
        credits: Vec<credits::CreditTx>,
        applied: Option<Applied>,
        queue: Option<&[bool]>,
    ) -> Result<Vec<bool>, LedgerError> {
        let now = now_ms();
        let mut prepared = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            validate(r, now).map_err(|e| match records.len() {
                1 => e,
                _ => InvalidRecord(format!("record {i}: {e}")),
            })?;
            prepared.push(Prepared {
                record: r.clone(),
                periods: counters::periods_of(r),
                groups: counters::groups_of(r),
                delta: Counter::of(r),
                queue: queue.and_then(|q| q.get(i).copied()).unwrap_or(true),
            });
        }
        self.send(|reply| Job::Commit(Commit { records: prepared, credits, applied, reply })).await
    }

    /// Runs `f` while no commit becomes visible: what `f` reads from the ledger and what commit
    /// hooks change (see [`Ledger::commit_many_then`]) is one consistent state. Keep `f` short:
    /// commits wait for it.
    pub fn consistent<R>(&self, f: impl FnOnce() -> R) -> R {
        let _visible = self.visibility.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        f()
    }

    /// Removes records the backend accepted from the outbox, and their persisted `batch`; the
    /// credit deductions that travelled with them are marked acknowledged in the same transaction.
    pub async fn ack(&self, entries: &[Queued], batch: Option<Uuid>) -> Result<u64, LedgerError> {
        let entries = entries.to_vec();
        self.send(|reply| Job::Op(Op::Ack { entries, batch, reply })).await
    }

    /// Moves records from the outbox to the dead letters (dropping their persisted `batch`).
    pub async fn dead_letter(&self, entries: &[Queued], batch: Option<Uuid>, why: Refused) -> Result<u64, LedgerError> {
        let why =
            Refusal { batch_id: why.batch_id, status: why.status, reason: why.reason, body: why.body, at_ms: now_ms() };
        let entries = entries.to_vec();
        self.send(|reply| Job::Op(Op::DeadLetter { entries, batch, why, reply })).await
    }

    /// Moves every dead letter back to the outbox (to be sent again).
    pub async fn requeue_dead_letters(&self) -> Result<u64, LedgerError> {
        self.send(|reply| Job::Op(Op::Requeue { ids: None, reply })).await
    }

    /// Moves the dead letters with these ids back to the outbox; returns how many there were.
    pub async fn requeue(&self, ids: &[Uuid]) -> Result<u64, LedgerError> {
        let ids = Some(ids.to_vec());
        self.send(|reply| Job::Op(Op::Requeue { ids, reply })).await
    }

    /// Durably stores sync batches before their first send (replacing batch `replaces` when a
    /// refused batch is split in halves).
    pub async fn persist_batches(&self, replaces: Option<Uuid>, batches: Vec<NewBatch>) -> Result<(), LedgerError> {
        self.send(|reply| Job::Op(Op::Batches { replaces, batches, reply })).await
    }

    /// The persisted batches still waiting for an answer, in queue order (of their first record).
    pub fn stored_batches(&self) -> Result<Vec<StoredBatch>, LedgerError> {
        self.readers.with(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT b.id, b.body FROM batches b \
                     ORDER BY (SELECT min(o.seq) FROM outbox o WHERE o.batch = b.id), b.rowid",
                )
                .map_err(LedgerError::storage)?;
            let found = stmt
                .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?)))
                .map_err(LedgerError::storage)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(LedgerError::storage)?;
            let mut members = c
                .prepare_cached("SELECT seq, id FROM outbox WHERE batch = ?1 ORDER BY seq")
                .map_err(LedgerError::storage)?;
            let mut out = Vec::with_capacity(found.len());
            for (id_text, body) in found {
                let Ok(id) = Uuid::parse_str(&id_text) else {
                    tracing::error!("skipping a persisted sync batch with an unreadable id");
                    continue;
                };
                let entries = members
                    .query_map([&id_text], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))
                    .map_err(LedgerError::storage)?
                    .filter_map(|r| r.ok())
                    .filter_map(|(seq, id)| {
                        Some(Queued { seq: u64::try_from(seq).ok()?, id: Uuid::parse_str(&id).ok()? })
                    })
                    .collect();
                out.push(StoredBatch { id, body, entries });
            }
            Ok(out)
        })
    }

    /// Which of `ids` still wait for the backend (in the outbox or the dead letters).
    pub fn unsynced(&self, ids: &[Uuid]) -> Result<std::collections::HashSet<Uuid>, LedgerError> {
        self.readers.with(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM outbox WHERE id = ?1) OR EXISTS (SELECT 1 FROM dead_letters WHERE id = ?1)",
                )
                .map_err(LedgerError::storage)?;
            let mut out = std::collections::HashSet::new();
            for id in ids {
                if stmt.query_row([rows::id_text(id)], |r| r.get::<_, bool>(0)).map_err(LedgerError::storage)? {
                    out.insert(*id);
                }
            }
            Ok(out)
        })
    }

    /// Removes the local history (records and counters). The outbox and dead letters (records not
    /// yet accepted by the backend) are kept unless `force`.
    pub async fn clear(&self, force: bool) -> Result<Cleared, LedgerError> {
        self.send(|reply| Job::Op(Op::Clear { force, reply })).await
    }

    /// Makes app `name` with a fresh token, returned once (only its hash is stored). Refused if
    /// the name is invalid (see [`apps::valid_name`]) or taken.
    pub async fn create_app(&self, name: &str) -> Result<(apps::App, secrecy::SecretString), LedgerError> {
        use secrecy::ExposeSecret;
        if !apps::valid_name(name) {
            return Err(LedgerError::InvalidAppName);
        }
        let token = apps::new_token().map_err(|e| LedgerError::Random(e.to_string()))?;
        let token_hash = apps::hash(token.expose_secret());
        let created_ms = now_ms();
        let name = name.to_string();
        let job_name = name.clone();
        self.send(|reply| Job::Op(Op::AddApp { name: job_name, token_hash, created_ms, reply })).await?;
        Ok((apps::App { name, created_ms, last_used_ms: None }, token))
    }

    /// Every app, by name (never a token).
    pub fn apps(&self) -> Result<Vec<apps::App>, LedgerError> {
        self.readers.with(|c| {
            let mut stmt = c
                .prepare_cached("SELECT name, created_ms, last_used_ms FROM apps ORDER BY name")
                .map_err(LedgerError::storage)?;
            let rows = stmt
                .query_map([], |r| Ok(apps::App { name: r.get(0)?, created_ms: r.get(1)?, last_used_ms: r.get(2)? }))
                .map_err(LedgerError::storage)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(LedgerError::storage)
        })
    }

    /// Removes app `name` (its token stops verifying); false if there is none. Its usage stays.
    pub async fn remove_app(&self, name: &str) -> Result<bool, LedgerError> {
        let name = name.to_string();
        self.touched.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&name);
        let forget = || {
            let mut v = self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            v.0 += 1;
            v.1.clear();
        };
        forget();
        let removed = self.send(|reply| Job::Op(Op::RemoveApp { name, reply })).await;
        forget();
        removed
    }

    /// The app whose token `token` is, if any: looked up by the token's hash, which is compared
    /// in constant time. Records the app's last use (at most once a minute, without waiting).
    pub fn verify_app_token(&self, token: &str) -> Result<Option<String>, LedgerError> {
        if token.len() > apps::MAX_TOKEN_LEN || !token.starts_with(apps::TOKEN_PREFIX) {
            return Ok(None);
        }
        let presented = apps::hash(token);
        let (generation, cached) = {
            let v = self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (v.0, v.1.get(&presented).cloned())
        };
        if let Some(name) = cached {
            self.touch_app(&name);
            return Ok(Some(name));
        }
        let found: Option<(String, Vec<u8>)> = self.readers.with(|c| {
            c.prepare_cached("SELECT name, token_hash FROM apps WHERE token_hash = ?1")
                .and_then(|mut s| s.query_row([&presented[..]], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                .map_err(LedgerError::storage)
        })?;
        let Some((name, _)) = found.filter(|(_, stored)| apps::same_hash(stored, &presented)) else {
            return Ok(None);
        };
        {
            let mut v = self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if v.0 == generation {
                v.1.insert(presented, name.clone());
            }
        }
        self.touch_app(&name);
        Ok(Some(name))
    }

    /// Queues a last-used update for `name` unless one was queued within
    /// [`apps::TOUCH_EVERY_MS`]; never waits (a full queue skips it).
    fn touch_app(&self, name: &str) {
        let now = now_ms();
        {
            let mut touched = self.touched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if touched.get(name).is_some_and(|&at| now - at < apps::TOUCH_EVERY_MS) {
                return;
            }
            touched.insert(name.to_string(), now);
        }
        let (reply, _) = oneshot::channel();
        let _ = self.jobs.try_send(Job::Op(Op::TouchApp { name: name.to_string(), at_ms: now, reply }));
    }

    async fn send<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, LedgerError>>) -> Job,
    ) -> Result<T, LedgerError> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(job(tx)).await.map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Current outbox and dead-letter sizes.
    pub fn counts(&self) -> Counts {
        *self.counts.borrow()
    }

    /// Changes whenever a write round changed the counts.
    pub fn watch_counts(&self) -> watch::Receiver<Counts> {
        self.counts.clone()
    }

    /// Records matching `q`, newest first (or oldest first if `q.ascending`).
    pub fn records(&self, q: &RecordQuery) -> Result<RecordPage, LedgerError> {
        // Ids carry their creation time, which is within a day of `ts` (see validate), so the id
        // range is bounded with that slack (using the primary key) and `ts` is checked exactly.
        let slack = validate::MAX_ID_SKEW_MS;
        let lo = q.from_ms.map(|f| rows::id_text(&Uuid::from_bytes(periods::id_bound(f - slack, 0))));
        let hi = q.to_ms.map(|t| rows::id_text(&Uuid::from_bytes(periods::id_bound(t + slack, 0xff))));
        let after = q.after.map(|a| rows::id_text(&a));
        let (cmp, order) = if q.ascending { (">", "ASC") } else { ("<", "DESC") };
        let limit = q.limit.max(1);
        let sql = format!(
            "SELECT {} FROM records WHERE (?1 IS NULL OR id >= ?1) AND (?2 IS NULL OR id <= ?2) \
             AND (?3 IS NULL OR id {cmp} ?3) AND (?4 IS NULL OR ts >= ?4) AND (?5 IS NULL OR ts < ?5) \
             AND (?6 IS NULL OR app = ?6) AND (?7 IS NULL OR provider = ?7) AND (?8 IS NULL OR model = ?8) \
             ORDER BY id {order} LIMIT ?9",
            rows::COLUMNS
        );
        let mut records = self.readers.with(|c| {
            let mut stmt = c.prepare_cached(&sql).map_err(LedgerError::storage)?;
            let found = stmt
                .query_map(
                    params![
                        lo,
                        hi,
                        after,
                        q.from_ms,
                        q.to_ms,
                        q.app,
                        q.provider,
                        q.model,
                        i64::try_from(limit + 1).unwrap_or(i64::MAX)
                    ],
                    |row| rows::from_row(row, 0),
                )
                .map_err(LedgerError::storage)?;
            found.collect::<Result<Vec<_>, _>>().map_err(LedgerError::storage)
        })?;
        let next = if records.len() > limit {
            records.truncate(limit);
            records.last().map(|l| l.id)
        } else {
            None
        };
        Ok(RecordPage { records, next })
    }

    /// Counter rows of `dim` for periods `from..=to` (labels like `2025-01-31` or `2025-01`), in
    /// period order, then by value.
    pub fn counters(&self, period: Period, dim: Dim, from: &str, to: &str) -> Result<Vec<CounterRow>, LedgerError> {
        self.readers.with(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT label, key, requests, failed, input_tokens, output_tokens, cached_tokens, \
                     cache_write_tokens, reasoning_tokens, cost_microusd FROM counters \
                     WHERE period = ?1 AND dim = ?2 AND label BETWEEN ?3 AND ?4 ORDER BY label, key",
                )
                .map_err(LedgerError::storage)?;
            let rows = stmt
                .query_map(params![period.name(), dim.name(), from, to], |row| {
                    Ok(CounterRow { period: row.get(0)?, key: row.get(1)?, counter: counters::from_row(row, 2)? })
                })
                .map_err(LedgerError::storage)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(LedgerError::storage)
        })
    }

    /// Up to `limit` queued records after `after`, in queue order. Everything a reader sees is
    /// committed, so on disk: a record is never handed to sync before it is durable. A record
    /// that cannot be read is returned as `Err` so the caller can dead-letter it instead of
    /// stalling on it.
    pub fn outbox_after(&self, after: Option<Queued>, limit: usize) -> Result<Vec<OutboxEntry>, LedgerError> {
        let start = after.map_or(-1, |a| seq_param(a.seq));
        let sql = format!(
            "SELECT o.seq, o.id, o.record, {} FROM outbox o LEFT JOIN records r ON r.id = o.id \
             WHERE o.seq > ?1 AND o.batch IS NULL ORDER BY o.seq LIMIT ?2",
            prefixed("r")
        );
        self.readers.with(|c| {
            let mut stmt = c.prepare_cached(&sql).map_err(LedgerError::storage)?;
            let found = stmt
                .query_map(params![start, i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                    let seq: i64 = row.get(0)?;
                    let id: String = row.get(1)?;
                    let inline: Option<String> = row.get(2)?;
                    let stored = row.get::<_, Option<String>>(3)?.map(|_| rows::from_row(row, 3));
                    Ok((seq, id, inline, stored))
                })
                .map_err(LedgerError::storage)?;
            let mut out = Vec::new();
            for item in found {
                let (seq, id, inline, stored) = item.map_err(LedgerError::storage)?;
                let Ok(id) = Uuid::parse_str(&id) else {
                    tracing::error!(seq, "skipping an outbox entry with an unreadable id");
                    continue;
                };
                let at = Queued { seq: u64::try_from(seq).unwrap_or(0), id };
                let record = match (inline, stored) {
                    (Some(json), _) => rows::from_json(&json).map_err(|e| e.to_string()),
                    (None, Some(r)) => r.map_err(|e| format!("stored usage record: {e}")),
                    (None, None) => Err(format!("outbox entry {id} has no stored record")),
                };
                out.push(OutboxEntry { at, record });
            }
            Ok(out)
        })
    }

    /// The record that has waited longest in the outbox.
    pub fn oldest_pending(&self) -> Result<Option<UsageRecord>, LedgerError> {
        Ok(self.outbox_after(None, 1)?.into_iter().next().and_then(|e| e.record.ok()))
    }

    /// The most recent dead letters, newest first.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, LedgerError> {
        self.readers.with(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT batch_id, status, reason, at_ms, record, body FROM dead_letters ORDER BY rowid DESC LIMIT ?1",
                )
                .map_err(LedgerError::storage)?;
            let found = stmt
                .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get::<_, String>(4)?, row.get(5)?))
                })
                .map_err(LedgerError::storage)?;
            let mut out = Vec::new();
            for item in found {
                let (batch_id, status, reason, at_ms, json, body) = item.map_err(LedgerError::storage)?;
                out.push(DeadLetter { batch_id, status, reason, body, at_ms, record: rows::from_json(&json)? });
            }
            Ok(out)
        })
    }

    /// Bytes the ledger occupies on disk (the file and its write-ahead log).
    pub fn size_on_disk(&self) -> u64 {
        ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| {
                let mut name = self.path.clone().into_os_string();
                name.push(suffix);
                std::fs::metadata(PathBuf::from(name)).ok()
            })
            .map(|m| m.len())
            .sum()
    }

    /// Folds the write-ahead log into the file (at shutdown; commits are already durable).
    pub fn flush(&self) -> Result<(), LedgerError> {
        let conn = Connection::open(&self.path).map_err(LedgerError::storage)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(LedgerError::storage)?;
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).map_err(LedgerError::storage)
    }
}

fn device_id(conn: &Connection) -> Result<Uuid, rusqlite::Error> {
    let stored: Option<String> =
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [DEVICE_ID_KEY], |r| r.get(0)).optional()?;
    if let Some(id) = stored.and_then(|s| Uuid::parse_str(&s).ok()) {
        return Ok(id);
    }
    let id = Uuid::new_v4();
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", params![DEVICE_ID_KEY, id.to_string()])?;
    Ok(id)
}

#[cfg(test)]
mod tests;
