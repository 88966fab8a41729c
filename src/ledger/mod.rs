//! The usage ledger: every metered call, durably, in sled. The only module that knows sled.
//!
//! Trees:
//! - `records`: id (UUIDv7 bytes, so time-ordered) → the record (see [`codec`]);
//! - `counters`: per period (UTC day and month) → the [`Counter`] of every user, app, provider,
//!   provider/model, key_source and the total (see [`counters`] and [`key_layout`]);
//! - `outbox`: segments of records not yet confirmed by the sync backend, one per commit round;
//!   an entry refers to its record in `records`, or carries it inline once the history was
//!   cleared (see [`outbox`]);
//! - `dead`: id → [`DeadLetter`], records the backend refused;
//! - `meta`: the device id, and the `clearing` marker.
//!
//! Invariants:
//! - a record, its counters and its outbox entry are written in ONE transaction, and
//!   [`Ledger::commit`] returns only after that transaction is flushed to disk (group commit:
//!   concurrent writers share one flush, see [`committer`]);
//! - ids are unique: committing an id that is already stored changes nothing (idempotent import);
//! - the counters always equal the sum of the records they count (both are cleared together,
//!   behind a marker that makes an interrupted clear finish at the next open);
//! - an outbox entry is removed only when the backend confirmed it (`ack`) or refused it
//!   (moved to `dead`), never by `clear` unless forced; a non-forced `clear` first makes every
//!   outbox entry carry its record inline (durably), and only then removes the records.

mod codec;
mod committer;
pub mod counters;
pub mod key_layout;
pub mod outbox;
pub mod summary;
pub mod validate;

pub use committer::Cleared;
pub use counters::Counter;
pub use key_layout::{Dim, Period};
pub use outbox::Queued;
pub use summary::{BadPeriod, Group, Projection, Summary};
pub use validate::{validate, InvalidRecord};

use crate::clock::now_ms;
use crate::usage_record::UsageRecord;
pub use committer::Applied;
use committer::{Commit, Committer, Job, Op, Prepared, Visibility, CLEARING_KEY};
use serde::{Deserialize, Serialize};
use sled::IVec;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

/// Writes queued for the committer before writers wait (backpressure).
const JOB_QUEUE: usize = 16_384;
const DEVICE_ID_KEY: &[u8] = b"device_id";

#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open the usage ledger at {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("invalid usage record: {0}")]
    Invalid(#[from] InvalidRecord),
    #[error("usage ledger storage failure")]
    Storage(#[source] Arc<sled::Error>),
    #[error("unreadable ledger entry: {0}")]
    Corrupt(String),
    #[error("the usage ledger is closed")]
    Closed,
}

impl LedgerError {
    fn storage(e: sled::Error) -> LedgerError {
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

#[derive(Clone)]
pub(crate) struct Trees {
    records: sled::Tree,
    counters: sled::Tree,
    outbox: sled::Tree,
    dead: sled::Tree,
    meta: sled::Tree,
}

impl Trees {
    /// The record bytes of outbox entry `at` whose stored bytes are `bytes` (a reference is read
    /// from `records`). A `clear` inlines references before it removes their records, so a
    /// reference whose record just vanished is read again from its segment.
    fn entry_bytes(&self, at: Queued, bytes: &[u8]) -> Result<Vec<u8>, LedgerError> {
        if !outbox::is_ref(bytes) {
            return Ok(bytes.to_vec());
        }
        let id = *at.id.as_bytes();
        if let Some(v) = self.records.get(id).map_err(LedgerError::storage)? {
            return Ok(v.to_vec());
        }
        let segment = self.outbox.get(outbox::seq_key(at.seq)).map_err(LedgerError::storage)?;
        segment
            .as_deref()
            .and_then(outbox::decode)
            .and_then(|entries| entries.into_iter().find(|(i, v)| *i == id && !outbox::is_ref(v)))
            .map(|(_, v)| v.to_vec())
            .ok_or_else(|| LedgerError::Corrupt(format!("outbox entry {} has no stored record", at.id)))
    }

    /// The record bytes of a segment's `entries` (see [`Trees::entry_bytes`]); an entry whose
    /// record is gone, which only damage can cause, is logged and left out.
    fn resolve_entries<'a>(
        &self,
        seq: u64,
        entries: impl IntoIterator<Item = ([u8; 16], &'a [u8])>,
    ) -> Vec<([u8; 16], Vec<u8>)> {
        let mut out = Vec::new();
        for (id, stored) in entries {
            match self.entry_bytes(Queued { seq, id: Uuid::from_bytes(id) }, stored) {
                Ok(record) => out.push((id, record)),
                Err(e) => tracing::error!("dropping an outbox entry: {e}"),
            }
        }
        out
    }
}

/// A record the backend refused, with why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    pub batch_id: String,
    /// HTTP status of the refusal, if there was one.
    pub status: Option<u16>,
    pub reason: String,
    pub at_ms: i64,
    pub record: UsageRecord,
}

#[derive(Serialize)]
struct DeadMeta<'a> {
    batch_id: &'a str,
    status: Option<u16>,
    reason: &'a str,
    at_ms: i64,
}

impl DeadLetter {
    /// The record inside a dead-letter value, in its stored form.
    fn record_bytes(v: &[u8]) -> Option<Vec<u8>> {
        #[derive(Deserialize)]
        struct Only {
            record: UsageRecord,
        }
        let only: Only = serde_json::from_slice(v).ok()?;
        codec::encode(&only.record).ok()
    }
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
    db: sled::Db,
    trees: Trees,
    jobs: mpsc::Sender<Job>,
    counts: watch::Receiver<Counts>,
    device_id: Uuid,
    /// Outbox segments below this sequence number are flushed to disk.
    durable_seq: Arc<AtomicU64>,
    visibility: Visibility,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("path", &self.path).field("counts", &*self.counts.borrow()).finish()
    }
}

impl Ledger {
    /// Opens (or creates) the ledger in directory `path` and starts its committer thread.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let open_err = |message: String| LedgerError::Open { path: path.to_path_buf(), message };
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(|e| open_err(e.to_string()))?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| open_err(e.to_string()));
        let trees = Trees {
            records: tree("records")?,
            counters: tree("counters")?,
            outbox: tree("outbox")?,
            dead: tree("dead")?,
            meta: tree("meta")?,
        };
        let device_id = device_id(&trees.meta).map_err(|e| open_err(e.to_string()))?;
        let mut queued = 0u64;
        for item in trees.outbox.iter().values() {
            queued += outbox::count(&item.map_err(|e| open_err(e.to_string()))?);
        }
        let next_seq = match trees.outbox.last().map_err(|e| open_err(e.to_string()))? {
            Some((k, _)) => outbox::key_seq(&k).map_or(0, |s| s + 1),
            None => 0,
        };
        let counts = Counts { outbox: queued, dead: trees.dead.len() as u64 };
        let (counts_tx, counts_rx) = watch::channel(counts);
        // Everything recovered at open is on disk (the clear below flushes before it returns).
        let durable_seq = Arc::new(AtomicU64::new(next_seq));
        let visibility = Visibility::default();
        let mut committer = Committer {
            db: db.clone(),
            trees: trees.clone(),
            counts,
            next_seq,
            visibility: visibility.clone(),
            counts_tx,
            durable_seq: durable_seq.clone(),
        };
        if let Some(flag) = trees.meta.get(CLEARING_KEY).map_err(|e| open_err(e.to_string()))? {
            tracing::warn!("finishing a usage.clear interrupted by a crash");
            committer.clear(flag.first() == Some(&1)).map_err(|e| open_err(e.to_string()))?;
            db.flush().map_err(|e| open_err(e.to_string()))?;
        }
        committer.counts_tx.send_replace(committer.counts);
        let (tx, rx) = mpsc::channel(JOB_QUEUE);
        std::thread::Builder::new()
            .name("ledger-commit".into())
            .spawn(move || committer.run(rx))
            .map_err(|e| open_err(format!("cannot start the committer thread: {e}")))?;
        tracing::info!(path = %path.display(), outbox = counts.outbox, dead_letters = counts.dead, "usage ledger open");
        Ok(Ledger {
            path: path.to_path_buf(),
            db,
            trees,
            jobs: tx,
            counts: counts_rx,
            device_id,
            durable_seq,
            visibility,
        })
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

    /// [`Ledger::commit_many`], running `applied` at the moment the records become visible to
    /// readers (before they are durable), atomically with it for a reader inside
    /// [`Ledger::consistent`]. If they never become visible (invalid, storage failure), `applied`
    /// is dropped without running.
    pub async fn commit_many_then(
        &self,
        records: &[UsageRecord],
        applied: Option<Applied>,
    ) -> Result<Vec<bool>, LedgerError> {
        let now = now_ms();
        let mut prepared = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            validate(r, now).map_err(|e| match records.len() {
                1 => e,
                _ => InvalidRecord(format!("record {i}: {e}")),
            })?;
            let value = codec::encode(r)?;
            prepared.push(Prepared {
                key: *r.id.as_bytes(),
                value,
                periods: counters::periods_of(r),
                groups: counters::groups_of(r),
                delta: Counter::of(r),
            });
        }
        self.send(|reply| Job::Commit(Commit { records: prepared, applied, reply })).await
    }

    /// Runs `f` while no commit becomes visible: what `f` reads from the ledger and what commit
    /// hooks change (see [`Ledger::commit_many_then`]) is one consistent state. Keep `f` short:
    /// commits wait for it.
    pub fn consistent<R>(&self, f: impl FnOnce() -> R) -> R {
        let _visible = self.visibility.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        f()
    }

    /// Removes records the backend accepted from the outbox.
    pub async fn ack(&self, entries: &[Queued]) -> Result<u64, LedgerError> {
        let entries = entries.to_vec();
        self.send(|reply| Job::Op(Op::Ack { entries, reply })).await
    }

    /// Moves records the backend refused from the outbox to the dead letters.
    pub async fn dead_letter(
        &self,
        entries: &[Queued],
        batch_id: &str,
        status: Option<u16>,
        reason: &str,
    ) -> Result<u64, LedgerError> {
        let meta = DeadMeta { batch_id, status, reason, at_ms: now_ms() };
        let mut meta = serde_json::to_string(&meta).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        meta.pop(); // the closing brace; the committer appends `,"record":...}`
        let entries = entries.to_vec();
        self.send(|reply| Job::Op(Op::DeadLetter { entries, meta, reply })).await
    }

    /// Moves every dead letter back to the outbox (to be sent again).
    pub async fn requeue_dead_letters(&self) -> Result<u64, LedgerError> {
        self.send(|reply| Job::Op(Op::Requeue { reply })).await
    }

    /// Removes the local history (records and counters). The outbox and dead letters (records not
    /// yet accepted by the backend) are kept unless `force`.
    pub async fn clear(&self, force: bool) -> Result<Cleared, LedgerError> {
        self.send(|reply| Job::Op(Op::Clear { force, reply })).await
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
        // range is bounded with that slack and `ts` is then checked exactly.
        let slack = validate::MAX_ID_SKEW_MS;
        let mut lo = q.from_ms.map_or([0u8; 16], |f| key_layout::id_bound(f - slack, 0));
        let mut hi = q.to_ms.map_or([0xffu8; 16], |t| key_layout::id_bound(t + slack, 0xff));
        if let Some(after) = q.after {
            let a = *after.as_bytes();
            if q.ascending {
                lo = lo.max(next_key(a));
            } else {
                hi = hi.min(a);
            }
        }
        let limit = q.limit.max(1);
        let range = self.trees.records.range(lo..hi);
        let iter: Box<dyn Iterator<Item = sled::Result<(IVec, IVec)>>> =
            if q.ascending { Box::new(range) } else { Box::new(range.rev()) };
        let mut records = Vec::new();
        let mut next = None;
        for item in iter {
            let (_, v) = item.map_err(LedgerError::storage)?;
            let r = decode(&v)?;
            let keep = q.from_ms.is_none_or(|f| r.ts >= f)
                && q.to_ms.is_none_or(|t| r.ts < t)
                && q.app.as_ref().is_none_or(|a| *a == r.app)
                && q.provider.as_ref().is_none_or(|p| *p == r.provider)
                && q.model.as_ref().is_none_or(|m| *m == r.model);
            if !keep {
                continue;
            }
            if records.len() == limit {
                next = records.last().map(|l: &UsageRecord| l.id);
                break;
            }
            records.push(r);
        }
        Ok(RecordPage { records, next })
    }

    /// Counter rows of `dim` for periods `from..=to` (labels like `2025-01-31` or `2025-01`).
    pub fn counters(&self, period: Period, dim: Dim, from: &str, to: &str) -> Result<Vec<CounterRow>, LedgerError> {
        let mut rows = Vec::new();
        for item in self.trees.counters.range(key_layout::period_range(period, from, to)) {
            let (k, v) = item.map_err(LedgerError::storage)?;
            let label = key_layout::key_label(&k).ok_or_else(|| LedgerError::Corrupt("counter key".into()))?;
            let groups = counters::decode_groups(&v).ok_or_else(|| LedgerError::Corrupt("period counters".into()))?;
            for ((d, key), counter) in groups {
                if d == dim {
                    rows.push(CounterRow { period: label.clone(), key, counter });
                }
            }
        }
        Ok(rows)
    }

    /// Up to `limit` queued records after `after`, in queue order, from segments that are already
    /// durable (a record is never handed to sync before it is on disk). A record that cannot be
    /// read is returned as `Err` so the caller can dead-letter it instead of stalling on it.
    pub fn outbox_after(&self, after: Option<Queued>, limit: usize) -> Result<Vec<OutboxEntry>, LedgerError> {
        let start = after.map_or(0, |a| a.seq);
        let durable = self.durable_seq.load(Ordering::SeqCst);
        if start >= durable {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(limit.min(1024));
        for item in self.trees.outbox.range(outbox::seq_key(start)..outbox::seq_key(durable)) {
            let (k, v) = item.map_err(LedgerError::storage)?;
            let Some(seq) = outbox::key_seq(&k) else { continue };
            let Some(entries) = outbox::decode(&v) else {
                tracing::error!(seq, "skipping a malformed outbox segment");
                continue;
            };
            for (id, bytes) in entries {
                let at = Queued { seq, id: Uuid::from_bytes(id) };
                if after.is_some_and(|a| at <= a) {
                    continue;
                }
                let record = self.trees.entry_bytes(at, bytes).and_then(|b| decode(&b)).map_err(|e| e.to_string());
                out.push(OutboxEntry { at, record });
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// The record that has waited longest in the outbox.
    pub fn oldest_pending(&self) -> Result<Option<UsageRecord>, LedgerError> {
        for item in self.trees.outbox.iter() {
            let (k, v) = item.map_err(LedgerError::storage)?;
            let Some(seq) = outbox::key_seq(&k) else { continue };
            if let Some((id, bytes)) = outbox::decode(&v).and_then(|e| e.into_iter().next()) {
                let at = Queued { seq, id: Uuid::from_bytes(id) };
                return decode(&self.trees.entry_bytes(at, bytes)?).map(Some);
            }
        }
        Ok(None)
    }

    /// The most recent dead letters, newest first.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, LedgerError> {
        let mut out = Vec::new();
        for item in self.trees.dead.iter().rev().take(limit) {
            let (_, v) = item.map_err(LedgerError::storage)?;
            out.push(serde_json::from_slice(&v).map_err(|e| LedgerError::Corrupt(e.to_string()))?);
        }
        Ok(out)
    }

    /// Bytes the ledger occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Flushes everything written so far (used at shutdown; commits are already durable).
    pub fn flush(&self) -> Result<(), LedgerError> {
        self.db.flush().map(|_| ()).map_err(LedgerError::storage)
    }
}

use codec::decode;

/// The smallest key greater than `k`.
fn next_key(mut k: [u8; 16]) -> [u8; 16] {
    for b in k.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return k;
        }
    }
    [0xff; 16]
}

fn device_id(meta: &sled::Tree) -> Result<Uuid, sled::Error> {
    if let Some(v) = meta.get(DEVICE_ID_KEY)? {
        if let Ok(id) = Uuid::from_slice(&v) {
            return Ok(id);
        }
    }
    let id = Uuid::new_v4();
    meta.insert(DEVICE_ID_KEY, id.as_bytes())?;
    meta.flush()?;
    Ok(id)
}

#[cfg(test)]
mod tests;
