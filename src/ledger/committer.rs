//! Group commit: one thread owns the writer connection and applies every write to the ledger.
//!
//! Writers send a [`Job`] and wait for its reply. The committer takes whatever jobs are queued,
//! opens one transaction, applies each job inside its own savepoint (a failing job is rolled
//! back alone and gets its error), keeps taking jobs that arrived meanwhile (up to
//! [`MAX_JOBS_PER_ROUND`]), adds the round's counter deltas, and `COMMIT`s once. With WAL and
//! `synchronous = FULL` the commit is on disk when `COMMIT` returns; only then are the writers
//! answered. So concurrent writers share one fsync, and nobody is answered before their write is
//! durable.
//!
//! Records become visible to readers (other connections) at `COMMIT`. The commit and the hooks
//! of its jobs ([`Applied`]) run under the [`Visibility`] write lock, so a reader inside
//! `Ledger::consistent` sees a commit either not at all or together with what its hooks did.
//! Because the committer is the only writer, it keeps the outbox and dead-letter counts exact
//! without scanning.

use super::counters::{self, Counter};
use super::outbox::Queued;
use super::periods::{Dim, Period};
use super::rows;
use super::{Counts, LedgerError};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// Most jobs answered by one commit.
pub const MAX_JOBS_PER_ROUND: usize = 4096;

/// A validated record ready to store, with the counter groups it counts in.
pub struct Prepared {
    pub record: crate::usage_record::UsageRecord,
    pub periods: [(Period, String); 2],
    pub groups: Vec<(Dim, String)>,
    pub delta: Counter,
    /// Whether the record gets an outbox entry (false for an imported record its export marks
    /// as already synced).
    pub queue: bool,
}

/// Outcome of a `clear`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cleared {
    pub records: u64,
    pub outbox: u64,
    pub dead_letters: u64,
}

pub enum Job {
    Commit(Commit),
    Op(Op),
}

/// Store records (+ counters + outbox entries) unless their id is already stored; replies with
/// one `true` per record that was new. `applied` runs as soon as they are visible to readers,
/// inside the same [`Visibility`] write lock as the commit.
pub struct Commit {
    pub records: Vec<Prepared>,
    /// Credit transactions written in the same transaction (a call's deduction).
    pub credits: Vec<super::credits::CreditTx>,
    pub applied: Option<Applied>,
    pub reply: oneshot::Sender<Result<Vec<bool>, LedgerError>>,
}

/// Why the backend refused records (stored with each dead letter).
pub struct Refusal {
    pub batch_id: String,
    pub status: Option<u16>,
    pub reason: String,
    /// The backend's error body (truncated), if it answered.
    pub body: Option<String>,
    pub at_ms: i64,
}

/// A sync batch to persist before its first send: its id (the `Idempotency-Key`), its exact
/// body and the outbox entries it holds.
pub struct NewBatch {
    pub id: uuid::Uuid,
    pub body: Vec<u8>,
    pub entries: Vec<Queued>,
}

/// Every other write.
pub enum Op {
    /// Remove delivered entries (and their persisted batch) from the outbox; replies with how
    /// many were there.
    Ack { entries: Vec<Queued>, batch: Option<uuid::Uuid>, reply: oneshot::Sender<Result<u64, LedgerError>> },
    /// Move outbox entries (and drop their persisted batch) to the dead letters.
    DeadLetter {
        entries: Vec<Queued>,
        batch: Option<uuid::Uuid>,
        why: Refusal,
        reply: oneshot::Sender<Result<u64, LedgerError>>,
    },
    /// Move the dead letters (all, or those with these ids) back into the outbox.
    Requeue { ids: Option<Vec<uuid::Uuid>>, reply: oneshot::Sender<Result<u64, LedgerError>> },
    /// Persist sync batches (replacing batch `replaces`, when a refused batch is split).
    Batches { replaces: Option<uuid::Uuid>, batches: Vec<NewBatch>, reply: oneshot::Sender<Result<(), LedgerError>> },
    /// Remove records and counters (and with `force`, the outbox and dead letters too).
    Clear { force: bool, reply: oneshot::Sender<Result<Cleared, LedgerError>> },
    /// Store a new app with its token's hash; `AppExists` if the name is taken.
    AddApp { name: String, token_hash: [u8; 32], created_ms: i64, reply: oneshot::Sender<Result<(), LedgerError>> },
    /// Remove an app; replies whether there was one.
    RemoveApp { name: String, reply: oneshot::Sender<Result<bool, LedgerError>> },
    /// Store a credit transaction seen from the backend and the backend's latest balance.
    Credits {
        tx: Option<super::credits::CreditTx>,
        backend: super::credits::BackendBalance,
        reply: oneshot::Sender<Result<(), LedgerError>>,
    },
    /// Set an app's last-used time (never moving it back); nobody needs to wait for the reply.
    TouchApp { name: String, at_ms: i64, reply: oneshot::Sender<Result<(), LedgerError>> },
}

/// Runs once a commit's records are visible (see [`Commit`]).
pub type Applied = Box<dyn FnOnce() + Send>;
/// Held for writing while a commit and its [`Applied`] hooks run, and for reading by
/// [`super::Ledger::consistent`].
pub type Visibility = Arc<std::sync::RwLock<()>>;

/// A job applied in this round, waiting for the commit.
type Done = Box<dyn FnOnce(Option<&LedgerError>) + Send>;

fn done<T: Send + 'static>(reply: oneshot::Sender<Result<T, LedgerError>>, result: Result<T, LedgerError>) -> Done {
    Box::new(move |commit_error: Option<&LedgerError>| {
        let result = match (commit_error, result) {
            (Some(e), _) => Err(e.clone()),
            (None, r) => r,
        };
        let _ = reply.send(result);
    })
}

/// The answer to a job applied in this round (sent after the commit), and whether it succeeded.
fn answer<T: Send + 'static>(
    reply: oneshot::Sender<Result<T, LedgerError>>,
    r: Result<T, LedgerError>,
) -> (Done, bool) {
    let ok = r.is_ok();
    (done(reply, r), ok)
}

/// The answer to a job that could not be applied at all.
fn refused(job: Job, e: LedgerError) -> Done {
    match job {
        Job::Commit(c) => done(c.reply, Err(e)),
        Job::Op(Op::Ack { reply, .. } | Op::DeadLetter { reply, .. } | Op::Requeue { reply, .. }) => {
            done(reply, Err(e))
        }
        Job::Op(Op::Batches { reply, .. }) => done(reply, Err(e)),
        Job::Op(Op::Clear { reply, .. }) => done(reply, Err(e)),
        Job::Op(Op::AddApp { reply, .. } | Op::TouchApp { reply, .. } | Op::Credits { reply, .. }) => {
            done(reply, Err(e))
        }
        Job::Op(Op::RemoveApp { reply, .. }) => done(reply, Err(e)),
    }
}

fn storage(e: rusqlite::Error) -> LedgerError {
    LedgerError::storage(e)
}

/// What one round changes besides the rows: applied only if its commit succeeds.
#[derive(Default)]
struct RoundEffects {
    counters: HashMap<(Period, String, Dim, String), Counter>,
    outbox_added: u64,
    outbox_removed: u64,
    dead_added: u64,
    dead_removed: u64,
    /// `Some(dead count)` when a job set the dead-letter count outright (requeue, forced clear).
    dead_set: Option<u64>,
    /// `Some(outbox count)` when a job set it outright (forced clear).
    outbox_set: Option<u64>,
    hooks: Vec<Applied>,
    vacuum: bool,
}

pub struct Committer {
    pub conn: Connection,
    pub counts: Counts,
    pub visibility: Visibility,
    /// Latest counts, published after each commit.
    pub counts_tx: watch::Sender<Counts>,
    pub stats: Arc<Stats>,
}

/// The committed rounds since the committer started: how many, the jobs they answered, and
/// how long they took from the first job to the last answer (a failed round counts nowhere).
#[derive(Debug, Default)]
pub struct Stats {
    pub commits: AtomicU64,
    pub writes: AtomicU64,
    pub busy_us: AtomicU64,
}

impl Stats {
    fn count(&self, writes: usize, busy: std::time::Duration) {
        self.commits.fetch_add(1, Relaxed);
        self.writes.fetch_add(writes as u64, Relaxed);
        self.busy_us.fetch_add(u64::try_from(busy.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }
}

impl Committer {
    /// Runs until every sender is gone: takes every queued job, applies them in one
    /// transaction, commits once, and only then answers them.
    pub fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let round = std::time::Instant::now();
            let mut finished: Vec<Done> = Vec::with_capacity(64);
            let mut effects = RoundEffects::default();
            if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
                let e = storage(e);
                tracing::error!("cannot begin a ledger transaction: {e}");
                refused(first, e)(None);
                continue;
            }
            let mut next = Some(first);
            while let Some(job) = next.take() {
                finished.push(self.apply_in_savepoint(job, &mut effects));
                if finished.len() < MAX_JOBS_PER_ROUND {
                    next = rx.try_recv().ok();
                }
            }
            let jobs = finished.len();
            if self.commit_and_answer(finished, effects) {
                self.stats.count(jobs, round.elapsed());
            }
        }
        // Every sender is gone: fold the WAL back into the file.
        if let Err(e) = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::warn!("final ledger checkpoint failed: {e}");
        }
    }

    fn apply_in_savepoint(&mut self, job: Job, effects: &mut RoundEffects) -> Done {
        if let Err(e) = self.run_cached("SAVEPOINT job") {
            return refused(job, storage(e));
        }
        let mut mine = RoundEffects::default();
        let (finish, ok) = match job {
            Job::Commit(c) => {
                let r = self.commit_records(&c.records, &mut mine).and_then(|new| {
                    for tx in &c.credits {
                        super::credits::insert(&self.conn, tx).map_err(storage)?;
                    }
                    Ok(new)
                });
                if r.is_ok() {
                    mine.hooks.extend(c.applied);
                }
                answer(c.reply, r)
            }
            Job::Op(Op::Ack { entries, batch, reply }) => {
                answer(reply, self.ack(&entries, &mut mine).and_then(|n| self.drop_batch(batch).map(|()| n)))
            }
            Job::Op(Op::DeadLetter { entries, batch, why, reply }) => answer(
                reply,
                self.dead_letter(&entries, &why, &mut mine).and_then(|n| self.drop_batch(batch).map(|()| n)),
            ),
            Job::Op(Op::Requeue { ids, reply }) => answer(reply, self.requeue(ids.as_deref(), &mut mine)),
            Job::Op(Op::Batches { replaces, batches, reply }) => {
                answer(reply, self.drop_batch(replaces).and_then(|()| self.persist_batches(&batches)))
            }
            Job::Op(Op::Clear { force, reply }) => {
                let r = self.clear(force, &mut mine);
                if r.is_ok() {
                    // A clear replaces the counters outright: earlier deltas of this round are moot.
                    effects.counters.clear();
                }
                answer(reply, r)
            }
            Job::Op(Op::AddApp { name, token_hash, created_ms, reply }) => {
                answer(reply, self.add_app(name, &token_hash, created_ms))
            }
            Job::Op(Op::RemoveApp { name, reply }) => answer(reply, self.remove_app(&name)),
            Job::Op(Op::TouchApp { name, at_ms, reply }) => answer(reply, self.touch_app(&name, at_ms)),
            Job::Op(Op::Credits { tx, backend, reply }) => {
                let r = tx
                    .iter()
                    .try_for_each(|tx| super::credits::insert(&self.conn, tx).map_err(storage))
                    .and_then(|()| super::credits::set_backend(&self.conn, &backend));
                answer(reply, r)
            }
        };
        let end =
            if ok { self.run_cached("RELEASE job") } else { self.conn.execute_batch("ROLLBACK TO job; RELEASE job") };
        if let Err(e) = end {
            tracing::error!("ledger savepoint failed: {e}");
        }
        if ok {
            effects.merge(mine);
        }
        finish
    }

    /// Runs a statement without parsing it again each time (savepoints run once per job).
    fn run_cached(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(|_| ())
    }

    /// Writes the round's counters, commits under the visibility lock, runs the hooks, publishes
    /// the counts and answers every job (with the commit's error if it failed); returns whether
    /// it committed.
    fn commit_and_answer(&mut self, finished: Vec<Done>, mut effects: RoundEffects) -> bool {
        let started = std::time::Instant::now();
        let mut result = self.write_counters(&effects.counters);
        let committed = {
            let visibility = self.visibility.clone();
            let _visible = visibility.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            if result.is_ok() {
                result = self.conn.execute_batch("COMMIT").map_err(storage);
            }
            if result.is_ok() {
                for hook in effects.hooks.drain(..) {
                    hook();
                }
            }
            result.is_ok()
        };
        tracing::trace!(jobs = finished.len(), commit_us = started.elapsed().as_micros() as u64, "ledger round");
        if committed {
            self.counts = effects.apply_to(self.counts);
            self.counts_tx.send_replace(self.counts);
            if effects.vacuum {
                self.give_back_space();
            }
        } else {
            // Nothing of the round happened: hooks are dropped unrun, counts stay.
            let _ = self.conn.execute_batch("ROLLBACK");
            if let Err(e) = &result {
                tracing::error!("ledger commit failed; the writers of {} jobs get an error: {e}", finished.len());
            }
        }
        let error = result.err();
        for f in finished {
            f(error.as_ref());
        }
        committed
    }

    /// Returns freed pages to the filesystem (after a clear).
    fn give_back_space(&self) {
        // Each step of `incremental_vacuum` frees one page: step it to the end.
        let vacuum = |conn: &Connection| -> rusqlite::Result<()> {
            let mut stmt = conn.prepare("PRAGMA incremental_vacuum")?;
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
            Ok(())
        };
        let r =
            vacuum(&self.conn).and_then(|()| self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())));
        if let Err(e) = r {
            tracing::warn!("could not give the cleared ledger space back: {e}");
        }
    }

    fn write_counters(&self, deltas: &HashMap<(Period, String, Dim, String), Counter>) -> Result<(), LedgerError> {
        if deltas.is_empty() {
            return Ok(());
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO counters (period, label, dim, key, requests, failed, input_tokens, output_tokens, \
                 cached_tokens, cache_write_tokens, reasoning_tokens, cost_microusd) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
                 ON CONFLICT (period, label, dim, key) DO UPDATE SET \
                 requests = requests + excluded.requests, failed = failed + excluded.failed, \
                 input_tokens = input_tokens + excluded.input_tokens, \
                 output_tokens = output_tokens + excluded.output_tokens, \
                 cached_tokens = cached_tokens + excluded.cached_tokens, \
                 cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens, \
                 reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens, \
                 cost_microusd = cost_microusd + excluded.cost_microusd",
            )
            .map_err(storage)?;
        for ((period, label, dim, key), c) in deltas {
            let f = counters::fields(c);
            stmt.execute(params![
                period.name(),
                label,
                dim.name(),
                key,
                f[0],
                f[1],
                f[2],
                f[3],
                f[4],
                f[5],
                f[6],
                f[7]
            ])
            .map_err(storage)?;
        }
        Ok(())
    }

    /// Inserts the records whose id is new, with one outbox entry each (a reference: the
    /// record is stored once), and adds their counter deltas.
    fn commit_records(&self, batch: &[Prepared], effects: &mut RoundEffects) -> Result<Vec<bool>, LedgerError> {
        let mut insert = self
            .conn
            .prepare_cached(&format!(
                "INSERT OR IGNORE INTO records ({}) VALUES ({})",
                rows::COLUMNS,
                rows::PLACEHOLDERS
            ))
            .map_err(storage)?;
        let mut queue = self.conn.prepare_cached("INSERT INTO outbox (id) VALUES (?1)").map_err(storage)?;
        let mut order: Vec<usize> = (0..batch.len()).collect();
        // The outbox of one commit is in id (time) order.
        order.sort_by_key(|&i| batch[i].record.id);
        let mut new = vec![false; batch.len()];
        for i in order {
            let p = &batch[i];
            let values = rows::params(&p.record);
            let refs: Vec<&dyn rusqlite::ToSql> = values.iter().map(|b| b.as_ref()).collect();
            if insert.execute(refs.as_slice()).map_err(storage)? == 0 {
                continue;
            }
            new[i] = true;
            if p.queue {
                queue.execute([rows::id_text(&p.record.id)]).map_err(storage)?;
                effects.outbox_added += 1;
            }
            for (period, label) in &p.periods {
                for (dim, value) in &p.groups {
                    effects.counters.entry((*period, label.clone(), *dim, value.clone())).or_default().add(&p.delta);
                }
            }
        }
        Ok(new)
    }

    fn ack(&self, entries: &[Queued], effects: &mut RoundEffects) -> Result<u64, LedgerError> {
        let mut delete = self.conn.prepare_cached("DELETE FROM outbox WHERE seq = ?1 AND id = ?2").map_err(storage)?;
        let mut n = 0u64;
        let now = crate::clock::now_ms();
        for e in entries {
            n += delete.execute(params![seq_param(e.seq), rows::id_text(&e.id)]).map_err(storage)? as u64;
            super::credits::acknowledge(&self.conn, &e.id, now).map_err(storage)?;
        }
        effects.outbox_removed += n;
        Ok(n)
    }

    /// The JSON of the record of outbox entry `e` (inline, or from `records`), if it is queued.
    fn queued_json(&self, e: &Queued) -> Result<Option<String>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT o.record, {} FROM outbox o LEFT JOIN records r ON r.id = o.id WHERE o.seq = ?1 AND o.id = ?2",
                prefixed("r")
            ))
            .map_err(storage)?;
        let row = stmt
            .query_row(params![seq_param(e.seq), rows::id_text(&e.id)], |row| {
                let inline: Option<String> = row.get(0)?;
                let stored = match row.get::<_, Option<String>>(1)? {
                    Some(_) => Some(rows::from_row(row, 1)?),
                    None => None,
                };
                Ok((inline, stored))
            })
            .optional()
            .map_err(storage)?;
        match row {
            None => Ok(None),
            Some((Some(json), _)) => Ok(Some(json)),
            Some((None, Some(r))) => rows::to_json(&r).map(Some),
            Some((None, None)) => Err(LedgerError::Corrupt(format!("outbox entry {} has no stored record", e.id))),
        }
    }

    fn dead_letter(&self, entries: &[Queued], why: &Refusal, effects: &mut RoundEffects) -> Result<u64, LedgerError> {
        let mut insert = self
            .conn
            .prepare_cached(
                "INSERT OR REPLACE INTO dead_letters (id, batch_id, status, reason, at_ms, record, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(storage)?;
        let mut delete = self.conn.prepare_cached("DELETE FROM outbox WHERE seq = ?1 AND id = ?2").map_err(storage)?;
        let mut n = 0u64;
        for e in entries {
            let json = match self.queued_json(e) {
                Ok(Some(j)) => Some(j),
                Ok(None) => continue,
                Err(err) => {
                    tracing::error!("dropping an unreadable outbox entry: {err}");
                    None
                }
            };
            let id = rows::id_text(&e.id);
            if let Some(json) = json {
                insert
                    .execute(params![id, why.batch_id, why.status, why.reason, why.at_ms, json, why.body])
                    .map_err(storage)?;
                effects.dead_added += 1;
            }
            n += delete.execute(params![seq_param(e.seq), id]).map_err(storage)? as u64;
        }
        effects.outbox_removed += n;
        Ok(n)
    }

    /// Moves the dead letters (all, or those of `ids`) back to the end of the outbox, inline.
    fn requeue(&self, ids: Option<&[uuid::Uuid]>, effects: &mut RoundEffects) -> Result<u64, LedgerError> {
        let Some(ids) = ids else {
            let moved = self
                .conn
                .execute(
                    "INSERT OR IGNORE INTO outbox (id, record) SELECT id, record FROM dead_letters ORDER BY rowid",
                    [],
                )
                .map_err(storage)? as u64;
            self.conn.execute("DELETE FROM dead_letters", []).map_err(storage)?;
            effects.outbox_added += moved;
            effects.dead_set = Some(0);
            return Ok(moved);
        };
        let mut insert = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO outbox (id, record) SELECT id, record FROM dead_letters WHERE id = ?1",
            )
            .map_err(storage)?;
        let mut delete = self.conn.prepare_cached("DELETE FROM dead_letters WHERE id = ?1").map_err(storage)?;
        let mut moved = 0u64;
        for id in ids {
            let id = rows::id_text(id);
            moved += insert.execute([&id]).map_err(storage)? as u64;
            effects.dead_removed += delete.execute([&id]).map_err(storage)? as u64;
        }
        effects.outbox_added += moved;
        Ok(moved)
    }

    /// Removes persisted batch `id` (its entries, if any are left, go back to unbatched).
    fn drop_batch(&self, id: Option<uuid::Uuid>) -> Result<(), LedgerError> {
        let Some(id) = id else { return Ok(()) };
        let id = rows::id_text(&id);
        self.conn
            .prepare_cached("UPDATE outbox SET batch = NULL WHERE batch = ?1")
            .and_then(|mut s| s.execute([&id]))
            .map_err(storage)?;
        self.conn
            .prepare_cached("DELETE FROM batches WHERE id = ?1")
            .and_then(|mut s| s.execute([&id]))
            .map_err(storage)?;
        Ok(())
    }

    /// Stores each batch's body and marks its outbox entries as its members.
    fn persist_batches(&self, batches: &[NewBatch]) -> Result<(), LedgerError> {
        let mut insert = self
            .conn
            .prepare_cached("INSERT INTO batches (id, created_ms, body) VALUES (?1, ?2, ?3)")
            .map_err(storage)?;
        let mut member =
            self.conn.prepare_cached("UPDATE outbox SET batch = ?1 WHERE seq = ?2 AND id = ?3").map_err(storage)?;
        let now = crate::clock::now_ms();
        for b in batches {
            let id = rows::id_text(&b.id);
            insert.execute(params![id, now, b.body]).map_err(storage)?;
            for e in &b.entries {
                member.execute(params![id, seq_param(e.seq), rows::id_text(&e.id)]).map_err(storage)?;
            }
        }
        Ok(())
    }

    /// Clears in this round's transaction (all or nothing). Without `force`, outbox entries take
    /// their records inline first, so they outlive the history.
    fn clear(&self, force: bool, effects: &mut RoundEffects) -> Result<Cleared, LedgerError> {
        let mut cleared = Cleared { records: 0, outbox: 0, dead_letters: 0 };
        if force {
            cleared.outbox = self.conn.execute("DELETE FROM outbox", []).map_err(storage)? as u64;
            cleared.dead_letters = self.conn.execute("DELETE FROM dead_letters", []).map_err(storage)? as u64;
            self.conn.execute("DELETE FROM batches", []).map_err(storage)?;
            effects.outbox_set = Some(0);
            effects.dead_set = Some(0);
        } else {
            self.inline_outbox(effects)?;
        }
        cleared.records = self.conn.execute("DELETE FROM records", []).map_err(storage)? as u64;
        self.conn.execute("DELETE FROM counters", []).map_err(storage)?;
        effects.vacuum = true;
        Ok(cleared)
    }

    fn add_app(&self, name: String, token_hash: &[u8; 32], created_ms: i64) -> Result<(), LedgerError> {
        let taken = self
            .conn
            .prepare_cached("SELECT 1 FROM apps WHERE name = ?1")
            .and_then(|mut s| s.exists([&name]))
            .map_err(storage)?;
        if taken {
            return Err(LedgerError::AppExists(name));
        }
        self.conn
            .prepare_cached("INSERT INTO apps (name, token_hash, created_ms) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![name, &token_hash[..], created_ms]))
            .map_err(storage)?;
        Ok(())
    }

    fn remove_app(&self, name: &str) -> Result<bool, LedgerError> {
        let n = self.conn.prepare_cached("DELETE FROM apps WHERE name = ?1").and_then(|mut s| s.execute([name]));
        Ok(n.map_err(storage)? > 0)
    }

    fn touch_app(&self, name: &str, at_ms: i64) -> Result<(), LedgerError> {
        self.conn
            .prepare_cached(
                "UPDATE apps SET last_used_ms = ?2 WHERE name = ?1 AND (last_used_ms IS NULL OR last_used_ms < ?2)",
            )
            .and_then(|mut s| s.execute(params![name, at_ms]))
            .map_err(storage)?;
        Ok(())
    }

    /// Makes every referring outbox entry carry its record inline. A reference whose record is
    /// gone (which only damage can cause) is dropped, with a log line.
    fn inline_outbox(&self, effects: &mut RoundEffects) -> Result<(), LedgerError> {
        let refs: Vec<(i64, Option<crate::usage_record::UsageRecord>)> = {
            let mut stmt = self
                .conn
                .prepare(&format!(
                    "SELECT o.seq, {} FROM outbox o LEFT JOIN records r ON r.id = o.id WHERE o.record IS NULL",
                    prefixed("r")
                ))
                .map_err(storage)?;
            let rows = stmt
                .query_map([], |row| {
                    let present = row.get::<_, Option<String>>(1)?.is_some();
                    Ok((row.get(0)?, if present { Some(rows::from_row(row, 1)?) } else { None }))
                })
                .map_err(storage)?;
            rows.collect::<Result<_, _>>().map_err(storage)?
        };
        let mut update = self.conn.prepare_cached("UPDATE outbox SET record = ?1 WHERE seq = ?2").map_err(storage)?;
        let mut delete = self.conn.prepare_cached("DELETE FROM outbox WHERE seq = ?1").map_err(storage)?;
        for (seq, record) in refs {
            match record {
                Some(r) => {
                    update.execute(params![rows::to_json(&r)?, seq]).map_err(storage)?;
                }
                None => {
                    tracing::error!(seq, "dropping an outbox entry whose record is gone");
                    effects.outbox_removed += delete.execute([seq]).map_err(storage)? as u64;
                }
            }
        }
        Ok(())
    }
}

impl RoundEffects {
    fn merge(&mut self, o: RoundEffects) {
        for (k, c) in o.counters {
            self.counters.entry(k).or_default().add(&c);
        }
        if o.outbox_set.is_some() {
            // A forced clear: what came before in this round is gone.
            self.outbox_added = 0;
            self.outbox_removed = 0;
            self.outbox_set = o.outbox_set;
        }
        if o.dead_set.is_some() {
            self.dead_added = 0;
            self.dead_removed = 0;
            self.dead_set = o.dead_set;
        }
        self.outbox_added += o.outbox_added;
        self.outbox_removed += o.outbox_removed;
        self.dead_added += o.dead_added;
        self.dead_removed += o.dead_removed;
        self.hooks.extend(o.hooks);
        self.vacuum |= o.vacuum;
    }

    fn apply_to(&self, mut c: Counts) -> Counts {
        if let Some(n) = self.outbox_set {
            c.outbox = n;
        }
        if let Some(n) = self.dead_set {
            c.dead = n;
        }
        c.outbox = (c.outbox + self.outbox_added).saturating_sub(self.outbox_removed);
        c.dead = (c.dead + self.dead_added).saturating_sub(self.dead_removed);
        c
    }
}

/// The record columns of `records` under alias `alias` (`r.id, r.ts, ...`).
pub fn prefixed(alias: &str) -> String {
    rows::COLUMNS.split(", ").map(|c| format!("{alias}.{c}")).collect::<Vec<_>>().join(", ")
}

/// A queue position as SQLite's integer.
pub fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}
