//! Group commit: one thread applies every write to the ledger.
//!
//! Writers send a [`Job`] and wait for its reply. The thread takes whatever jobs are queued
//! (up to [`MAX_JOBS_PER_ROUND`]), applies consecutive commits as ONE sled transaction, applies
//! the other jobs in order, calls `flush` (fsync) once, and only then replies to every writer of
//! the round. So concurrent writers share one fsync, and nobody is answered before their write
//! is durable. Because this thread is the only writer, it also keeps the outbox and dead-letter
//! counts exact without scanning.

use super::counters::Counter;
use super::{Counts, LedgerError, Trees};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::IVec;
use std::collections::{HashMap, HashSet};
use tokio::sync::{mpsc, oneshot, watch};

/// Most jobs taken into one round (one transaction per run of commits, one flush).
pub const MAX_JOBS_PER_ROUND: usize = 4096;

/// Meta key present while a `clear` is in progress; a clear interrupted by a crash is finished
/// when the ledger is next opened. Its value is `[force]`.
pub const CLEARING_KEY: &[u8] = b"clearing";

/// A record ready to store: serialized by the writer, so the thread only moves bytes.
pub struct Prepared {
    pub key: [u8; 16],
    pub value: Vec<u8>,
    pub counter_keys: Vec<Vec<u8>>,
    pub delta: Counter,
}

/// Outcome of a `clear`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cleared {
    pub records: u64,
    pub outbox: u64,
    pub dead_letters: u64,
}

pub enum Job {
    /// Store records (+ counters + outbox entries) unless their id is already stored; replies with
    /// one `true` per record that was new.
    Commit { records: Vec<Prepared>, reply: oneshot::Sender<Result<Vec<bool>, LedgerError>> },
    /// Remove delivered entries from the outbox; replies with how many were there.
    Ack { ids: Vec<[u8; 16]>, reply: oneshot::Sender<Result<u64, LedgerError>> },
    /// Move outbox entries to dead letters; `meta` is a JSON object (without its closing brace)
    /// to which the record is appended as field `record`.
    DeadLetter { ids: Vec<[u8; 16]>, meta: String, reply: oneshot::Sender<Result<u64, LedgerError>> },
    /// Move every dead letter back into the outbox.
    Requeue { reply: oneshot::Sender<Result<u64, LedgerError>> },
    /// Remove records and counters (and with `force`, the outbox and dead letters too).
    Clear { force: bool, reply: oneshot::Sender<Result<Cleared, LedgerError>> },
}

type Done = Box<dyn FnOnce(Option<&LedgerError>) + Send>;

fn done<T: Send + 'static>(reply: oneshot::Sender<Result<T, LedgerError>>, result: Result<T, LedgerError>) -> Done {
    Box::new(move |flush_error: Option<&LedgerError>| {
        let result = match (flush_error, result) {
            (Some(e), _) => Err(e.clone()),
            (None, r) => r,
        };
        let _ = reply.send(result);
    })
}

pub struct Committer {
    pub db: sled::Db,
    pub trees: Trees,
    pub counts: Counts,
    pub counts_tx: watch::Sender<Counts>,
}

impl Committer {
    /// Runs until every sender is gone.
    pub fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = Vec::with_capacity(64);
            jobs.push(first);
            while jobs.len() < MAX_JOBS_PER_ROUND {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            self.round(jobs);
        }
        if let Err(e) = self.db.flush() {
            tracing::error!("final ledger flush failed: {e}");
        }
    }

    fn round(&mut self, jobs: Vec<Job>) {
        let mut finished: Vec<Done> = Vec::with_capacity(jobs.len());
        let mut commits: Vec<(Vec<Prepared>, oneshot::Sender<Result<Vec<bool>, LedgerError>>)> = Vec::new();
        for job in jobs {
            match job {
                Job::Commit { records, reply } => commits.push((records, reply)),
                other => {
                    // Keep order: commits queued before this job are applied first.
                    self.flush_commits(&mut commits, &mut finished);
                    finished.push(self.apply(other));
                }
            }
        }
        self.flush_commits(&mut commits, &mut finished);
        let flushed = self.db.flush().map_err(LedgerError::storage);
        if let Err(e) = &flushed {
            tracing::error!("ledger flush failed; {} writers get an error: {e}", finished.len());
        }
        self.counts_tx.send_replace(self.counts);
        for f in finished {
            f(flushed.as_ref().err());
        }
    }

    fn flush_commits(
        &mut self,
        commits: &mut Vec<(Vec<Prepared>, oneshot::Sender<Result<Vec<bool>, LedgerError>>)>,
        finished: &mut Vec<Done>,
    ) {
        if commits.is_empty() {
            return;
        }
        let batch: Vec<&Prepared> = commits.iter().flat_map(|(r, _)| r.iter()).collect();
        match self.commit(&batch) {
            Ok(new) => {
                let mut flags = new.into_iter();
                for (records, reply) in commits.drain(..) {
                    let mine: Vec<bool> = flags.by_ref().take(records.len()).collect();
                    finished.push(done(reply, Ok(mine)));
                }
            }
            Err(e) => {
                for (_, reply) in commits.drain(..) {
                    finished.push(done(reply, Err(e.clone())));
                }
            }
        }
    }

    /// One transaction over records, counters and outbox for the whole batch.
    fn commit(&mut self, batch: &[&Prepared]) -> Result<Vec<bool>, LedgerError> {
        let t = &self.trees;
        let result = (&t.records, &t.counters, &t.outbox).transaction(|(records, counters, outbox)| {
            let mut seen: HashSet<[u8; 16]> = HashSet::with_capacity(batch.len());
            let mut new = Vec::with_capacity(batch.len());
            let mut deltas: HashMap<&[u8], Counter> = HashMap::new();
            for p in batch {
                let fresh = seen.insert(p.key) && records.get(p.key)?.is_none();
                new.push(fresh);
                if !fresh {
                    continue;
                }
                records.insert(&p.key[..], &p.value[..])?;
                outbox.insert(&p.key[..], &p.value[..])?;
                for k in &p.counter_keys {
                    deltas.entry(k.as_slice()).or_default().add(&p.delta);
                }
            }
            for (k, delta) in deltas {
                let mut c = counters.get(k)?.map(|v| Counter::decode(&v)).unwrap_or_default();
                c.add(&delta);
                counters.insert(k, &c.encode()[..])?;
            }
            Ok::<_, ConflictableTransactionError<LedgerError>>(new)
        });
        let new = unwrap_tx(result)?;
        self.counts.outbox += new.iter().filter(|n| **n).count() as u64;
        Ok(new)
    }

    fn apply(&mut self, job: Job) -> Done {
        match job {
            Job::Commit { reply, .. } => done(reply, Err(LedgerError::Closed)), // handled by the caller
            Job::Ack { ids, reply } => {
                let r = self.ack(&ids);
                done(reply, r)
            }
            Job::DeadLetter { ids, meta, reply } => {
                let r = self.dead_letter(&ids, &meta);
                done(reply, r)
            }
            Job::Requeue { reply } => {
                let r = self.requeue();
                done(reply, r)
            }
            Job::Clear { force, reply } => {
                let r = self.clear(force);
                done(reply, r)
            }
        }
    }

    fn ack(&mut self, ids: &[[u8; 16]]) -> Result<u64, LedgerError> {
        let removed = unwrap_tx(self.trees.outbox.transaction(|outbox| {
            let mut n = 0u64;
            for id in ids {
                if outbox.remove(&id[..])?.is_some() {
                    n += 1;
                }
            }
            Ok::<_, ConflictableTransactionError<LedgerError>>(n)
        }))?;
        self.counts.outbox = self.counts.outbox.saturating_sub(removed);
        Ok(removed)
    }

    fn dead_letter(&mut self, ids: &[[u8; 16]], meta: &str) -> Result<u64, LedgerError> {
        let t = &self.trees;
        let moved = unwrap_tx((&t.outbox, &t.dead).transaction(|(outbox, dead)| {
            let mut n = 0u64;
            for id in ids {
                if let Some(record) = outbox.remove(&id[..])? {
                    let mut v = Vec::with_capacity(meta.len() + record.len() + 12);
                    v.extend_from_slice(meta.as_bytes());
                    v.extend_from_slice(b",\"record\":");
                    v.extend_from_slice(&record);
                    v.push(b'}');
                    dead.insert(&id[..], v)?;
                    n += 1;
                }
            }
            Ok::<_, ConflictableTransactionError<LedgerError>>(n)
        }))?;
        self.counts.outbox = self.counts.outbox.saturating_sub(moved);
        self.counts.dead += moved;
        Ok(moved)
    }

    fn requeue(&mut self) -> Result<u64, LedgerError> {
        let t = &self.trees;
        let entries: Vec<(IVec, IVec)> = t.dead.iter().collect::<Result<_, _>>().map_err(LedgerError::storage)?;
        let mut moved = 0u64;
        for chunk in entries.chunks(512) {
            moved += unwrap_tx((&t.outbox, &t.dead).transaction(|(outbox, dead)| {
                let mut n = 0u64;
                for (k, v) in chunk {
                    dead.remove(k)?;
                    match super::DeadLetter::record_bytes(v) {
                        Some(record) => {
                            outbox.insert(k, record)?;
                            n += 1;
                        }
                        None => tracing::warn!("dropping an unreadable dead letter"),
                    }
                }
                Ok::<_, ConflictableTransactionError<LedgerError>>(n)
            }))?;
        }
        self.counts.outbox += moved;
        self.counts.dead = 0;
        Ok(moved)
    }

    /// Clears behind a marker, so a crash half-way is finished at the next open.
    pub fn clear(&mut self, force: bool) -> Result<Cleared, LedgerError> {
        let t = &self.trees;
        t.meta.insert(CLEARING_KEY, &[u8::from(force)]).map_err(LedgerError::storage)?;
        self.db.flush().map_err(LedgerError::storage)?;
        let records = clear_tree(&t.records)?;
        clear_tree(&t.counters)?;
        let mut cleared = Cleared { records, outbox: 0, dead_letters: 0 };
        if force {
            cleared.outbox = clear_tree(&t.outbox)?;
            cleared.dead_letters = clear_tree(&t.dead)?;
            self.counts = Counts::default();
        }
        t.meta.remove(CLEARING_KEY).map_err(LedgerError::storage)?;
        Ok(cleared)
    }
}

fn clear_tree(tree: &sled::Tree) -> Result<u64, LedgerError> {
    let mut n = 0;
    for key in tree.iter().keys() {
        tree.remove(key.map_err(LedgerError::storage)?).map_err(LedgerError::storage)?;
        n += 1;
    }
    Ok(n)
}

fn unwrap_tx<T>(r: Result<T, TransactionError<LedgerError>>) -> Result<T, LedgerError> {
    match r {
        Ok(v) => Ok(v),
        Err(TransactionError::Abort(e)) => Err(e),
        Err(TransactionError::Storage(e)) => Err(LedgerError::storage(e)),
    }
}
