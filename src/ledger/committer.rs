//! Group commit: one thread applies every write to the ledger and flushes it.
//!
//! Writers send a [`Job`] and wait for its reply. The committer thread takes whatever jobs are
//! queued, applies consecutive commits as ONE sled transaction and the other jobs in order, and
//! repeats while more jobs arrived meanwhile (up to [`MAX_JOBS_PER_ROUND`]); then it calls
//! `flush` (fsync) once, and only then replies. So concurrent writers share one fsync, and nobody
//! is answered before their write is durable. Jobs that arrive during a flush make the next round.
//!
//! Applying and flushing are not overlapped: in sled 0.34 a transaction takes a global write
//! lock that `flush` holds shared until the disk has answered, so a second thread applying the
//! next round would only wait, and would take a smaller round. Because the committer is the
//! only writer, it also keeps the outbox and dead-letter counts exact without scanning, and
//! hands out outbox segment numbers.

use super::counters::{self, Counter};
use super::key_layout::Dim;
use super::outbox::{self, Queued};
use super::{Counts, LedgerError, Trees};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::IVec;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// Most jobs answered by one flush (one transaction per run of commits within it).
pub const MAX_JOBS_PER_ROUND: usize = 4096;

/// Meta key present while a `clear` is in progress; a clear interrupted by a crash is finished
/// when the ledger is next opened. Its value is `[force]`.
pub const CLEARING_KEY: &[u8] = b"clearing";

/// A record ready to store: serialized by the writer, so the thread only moves bytes.
pub struct Prepared {
    pub key: [u8; 16],
    pub value: Vec<u8>,
    /// Keys of the periods (day, month) the record counts towards.
    pub periods: [Vec<u8>; 2],
    pub groups: Vec<(Dim, String)>,
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
    Commit(Commit),
    Op(Op),
}

/// Store records (+ counters + outbox entries) unless their id is already stored; replies with
/// one `true` per record that was new. `applied` runs as soon as they are visible to readers
/// (before the flush), inside the same [`Visibility`] write lock as the transaction.
pub struct Commit {
    pub records: Vec<Prepared>,
    pub applied: Option<Applied>,
    pub reply: oneshot::Sender<Result<Vec<bool>, LedgerError>>,
}

/// Every other write, applied in queue order between runs of commits.
pub enum Op {
    /// Remove delivered entries from the outbox; replies with how many were there.
    Ack { entries: Vec<Queued>, reply: oneshot::Sender<Result<u64, LedgerError>> },
    /// Move outbox entries to dead letters; `meta` is a JSON object (without its closing brace)
    /// to which the record is appended as field `record`.
    DeadLetter { entries: Vec<Queued>, meta: String, reply: oneshot::Sender<Result<u64, LedgerError>> },
    /// Move every dead letter back into the outbox.
    Requeue { reply: oneshot::Sender<Result<u64, LedgerError>> },
    /// Remove records and counters (and with `force`, the outbox and dead letters too).
    Clear { force: bool, reply: oneshot::Sender<Result<Cleared, LedgerError>> },
}

type Done = Box<dyn FnOnce(Option<&LedgerError>) + Send>;
/// Runs once a commit's records are visible (see [`Commit`]).
pub type Applied = Box<dyn FnOnce() + Send>;
/// Held for writing while a transaction of commits and their [`Applied`] hooks run, and for
/// reading by [`super::Ledger::consistent`]: a reader under it sees a commit either not at all,
/// or together with everything its hook did.
pub type Visibility = Arc<std::sync::RwLock<()>>;

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
    /// Sequence number of the next outbox segment.
    pub next_seq: u64,
    pub visibility: Visibility,
    /// Latest counts, published after each flush.
    pub counts_tx: watch::Sender<Counts>,
    /// Outbox segments below this are on disk, and only those may be sent to the backend (a
    /// segment sent before its flush could be lost in a crash after the backend counted it, and
    /// a retried call would then be counted twice).
    pub durable_seq: Arc<AtomicU64>,
}

impl Committer {
    /// Runs until every sender is gone: takes every queued job, applies them, flushes once,
    /// and only then answers them.
    pub fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let mut finished = Vec::with_capacity(64);
            let mut jobs = vec![first];
            // Jobs that arrive while a round is applied join the same flush: keep applying what
            // is queued until the queue is empty (or the round is full), then flush once.
            loop {
                while finished.len() + jobs.len() < MAX_JOBS_PER_ROUND {
                    let Ok(job) = rx.try_recv() else { break };
                    jobs.push(job);
                }
                if jobs.is_empty() {
                    break;
                }
                finished.extend(self.round(std::mem::take(&mut jobs)));
            }
            self.flush_and_answer(finished);
        }
    }

    /// Flushes everything applied so far, publishes what is now durable, and answers.
    fn flush_and_answer(&mut self, finished: Vec<Done>) {
        let started = std::time::Instant::now();
        let flushed = self.db.flush().map_err(LedgerError::storage);
        tracing::trace!(flush_us = started.elapsed().as_micros() as u64, "ledger flush");
        match &flushed {
            Ok(_) => {
                self.durable_seq.fetch_max(self.next_seq, Ordering::SeqCst);
                self.counts_tx.send_replace(self.counts);
            }
            Err(e) => tracing::error!("ledger flush failed; the writers of {} jobs get an error: {e}", finished.len()),
        }
        for f in finished {
            f(flushed.as_ref().err());
        }
    }

    fn round(&mut self, jobs: Vec<Job>) -> Vec<Done> {
        let started = std::time::Instant::now();
        let n = jobs.len();
        let mut finished: Vec<Done> = Vec::with_capacity(jobs.len());
        let mut commits: Vec<Commit> = Vec::new();
        for job in jobs {
            match job {
                Job::Commit(c) => commits.push(c),
                Job::Op(op) => {
                    // Keep order: commits queued before this job are applied first.
                    self.apply_commits(&mut commits, &mut finished);
                    finished.push(self.apply(op));
                }
            }
        }
        self.apply_commits(&mut commits, &mut finished);
        tracing::trace!(jobs = n, apply_us = started.elapsed().as_micros() as u64, "ledger round applied");
        finished
    }

    fn apply_commits(&mut self, commits: &mut Vec<Commit>, finished: &mut Vec<Done>) {
        if commits.is_empty() {
            return;
        }
        let batch: Vec<&Prepared> = commits.iter().flat_map(|c| c.records.iter()).collect();
        let visibility = self.visibility.clone();
        let _visible = visibility.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match self.commit(&batch) {
            Ok(new) => {
                let mut flags = new.into_iter();
                for c in commits.drain(..) {
                    if let Some(hook) = c.applied {
                        hook();
                    }
                    let mine: Vec<bool> = flags.by_ref().take(c.records.len()).collect();
                    finished.push(done(c.reply, Ok(mine)));
                }
            }
            Err(e) => {
                // Nothing became visible; the hooks are dropped unrun.
                for c in commits.drain(..) {
                    finished.push(done(c.reply, Err(e.clone())));
                }
            }
        }
    }

    /// One transaction over records, counters and outbox for the whole batch. New records go
    /// to the outbox as segments of at most [`outbox::MAX_ENTRIES`], sorted by id.
    fn commit(&mut self, batch: &[&Prepared]) -> Result<Vec<bool>, LedgerError> {
        let t = &self.trees;
        let first_seq = self.next_seq;
        let result = (&t.records, &t.counters, &t.outbox).transaction(|(records, counters, outbox)| {
            let mut seen: HashSet<[u8; 16]> = HashSet::with_capacity(batch.len());
            let mut new = Vec::with_capacity(batch.len());
            let mut queued: Vec<&Prepared> = Vec::with_capacity(batch.len());
            let mut deltas: HashMap<&[u8], HashMap<(Dim, &str), Counter>> = HashMap::new();
            for p in batch {
                let fresh = seen.insert(p.key) && records.get(p.key)?.is_none();
                new.push(fresh);
                if !fresh {
                    continue;
                }
                records.insert(&p.key[..], &p.value[..])?;
                queued.push(p);
                for period in &p.periods {
                    let per = deltas.entry(period.as_slice()).or_default();
                    for (dim, value) in &p.groups {
                        per.entry((*dim, value.as_str())).or_default().add(&p.delta);
                    }
                }
            }
            queued.sort_unstable_by_key(|p| p.key);
            let mut seq = first_seq;
            for chunk in queued.chunks(outbox::MAX_ENTRIES) {
                let segment = outbox::encode_refs(chunk.iter().map(|p| &p.key));
                outbox.insert(&outbox::seq_key(seq)[..], segment)?;
                seq += 1;
            }
            for (k, per) in deltas {
                let mut groups = match counters.get(k)? {
                    Some(v) => counters::decode_groups(&v).ok_or_else(|| {
                        ConflictableTransactionError::Abort(LedgerError::Corrupt("period counters".into()))
                    })?,
                    None => counters::Groups::new(),
                };
                for ((dim, value), delta) in per {
                    groups.entry((dim, value.to_string())).or_default().add(&delta);
                }
                counters.insert(k, counters::encode_groups(&groups))?;
            }
            Ok::<_, ConflictableTransactionError<LedgerError>>((new, queued.len() as u64, seq))
        });
        let (new, queued, next_seq) = unwrap_tx(result)?;
        self.counts.outbox += queued;
        self.next_seq = next_seq;
        Ok(new)
    }

    fn apply(&mut self, op: Op) -> Done {
        match op {
            Op::Ack { entries, reply } => {
                let r = self.remove_queued(&entries, None);
                done(reply, r)
            }
            Op::DeadLetter { entries, meta, reply } => {
                let r = self.remove_queued(&entries, Some(&meta));
                done(reply, r)
            }
            Op::Requeue { reply } => {
                let r = self.requeue();
                done(reply, r)
            }
            Op::Clear { force, reply } => {
                let r = self.clear(force);
                done(reply, r)
            }
        }
    }

    /// Removes entries from their outbox segments (rewriting or deleting each segment), and with
    /// `dead_meta` files them as dead letters in the same transaction. Returns how many were
    /// still queued.
    fn remove_queued(&mut self, entries: &[Queued], dead_meta: Option<&str>) -> Result<u64, LedgerError> {
        let mut by_seq: BTreeMap<u64, HashSet<[u8; 16]>> = BTreeMap::new();
        for e in entries {
            by_seq.entry(e.seq).or_default().insert(*e.id.as_bytes());
        }
        let t = &self.trees;
        // Dead letters carry their record, as JSON. References are resolved before the transaction: a
        // sled transaction holds a lock that a plain read of another tree would wait on forever.
        // Nobody else writes these trees, so what is read here is what the transaction sees.
        let mut inline: HashMap<[u8; 16], Vec<u8>> = HashMap::new();
        if dead_meta.is_some() {
            for (seq, ids) in &by_seq {
                let segment = t.outbox.get(outbox::seq_key(*seq)).map_err(LedgerError::storage)?;
                let entries = segment.as_deref().and_then(outbox::decode).unwrap_or_default();
                for (id, stored) in t.resolve_entries(*seq, entries.into_iter().filter(|(id, _)| ids.contains(id))) {
                    match super::codec::to_json(&stored) {
                        Ok(json) => {
                            inline.insert(id, json);
                        }
                        Err(e) => tracing::error!("dropping an outbox entry: {e}"),
                    }
                }
            }
        }
        let removed = unwrap_tx((&t.outbox, &t.dead).transaction(|(outbox, dead)| {
            let mut n = 0u64;
            for (seq, ids) in &by_seq {
                let key = outbox::seq_key(*seq);
                let Some(segment) = outbox.get(&key[..])? else { continue };
                let Some(all) = outbox::decode(&segment) else {
                    tracing::error!(seq, "skipping a malformed outbox segment");
                    continue;
                };
                let (gone, kept): (Vec<_>, Vec<_>) = all.into_iter().partition(|(id, _)| ids.contains(id));
                if gone.is_empty() {
                    continue;
                }
                n += gone.len() as u64;
                if let Some(meta) = dead_meta {
                    for (id, _) in &gone {
                        let Some(record) = inline.get(id) else { continue };
                        let mut v = Vec::with_capacity(meta.len() + record.len() + 12);
                        v.extend_from_slice(meta.as_bytes());
                        v.extend_from_slice(b",\"record\":");
                        v.extend_from_slice(record);
                        v.push(b'}');
                        dead.insert(&id[..], v)?;
                    }
                }
                if kept.is_empty() {
                    outbox.remove(&key[..])?;
                } else {
                    outbox.insert(&key[..], outbox::encode(kept.iter().map(|(id, v)| (id, *v))))?;
                }
            }
            Ok::<_, ConflictableTransactionError<LedgerError>>(n)
        }))?;
        self.counts.outbox = self.counts.outbox.saturating_sub(removed);
        if dead_meta.is_some() {
            self.counts.dead += removed;
        }
        Ok(removed)
    }

    /// Moves every dead letter back into the outbox, as new segments.
    fn requeue(&mut self) -> Result<u64, LedgerError> {
        let t = &self.trees;
        let entries: Vec<(IVec, IVec)> = t.dead.iter().collect::<Result<_, _>>().map_err(LedgerError::storage)?;
        let mut moved = 0u64;
        for chunk in entries.chunks(outbox::MAX_ENTRIES) {
            let mut queued: Vec<([u8; 16], Vec<u8>)> = Vec::with_capacity(chunk.len());
            for (k, v) in chunk {
                match (<[u8; 16]>::try_from(k.as_ref()), super::DeadLetter::record_bytes(v)) {
                    (Ok(id), Some(record)) => queued.push((id, record)),
                    _ => tracing::warn!("dropping an unreadable dead letter"),
                }
            }
            queued.sort_unstable_by_key(|(id, _)| *id);
            let seq = self.next_seq;
            unwrap_tx((&t.outbox, &t.dead).transaction(|(outbox, dead)| {
                for (k, _) in chunk {
                    dead.remove(k)?;
                }
                if !queued.is_empty() {
                    outbox.insert(
                        &outbox::seq_key(seq)[..],
                        outbox::encode(queued.iter().map(|(id, v)| (id, v.as_slice()))),
                    )?;
                }
                Ok::<_, ConflictableTransactionError<LedgerError>>(())
            }))?;
            self.next_seq += 1;
            moved += queued.len() as u64;
        }
        self.counts.outbox += moved;
        self.counts.dead = 0;
        Ok(moved)
    }

    /// Rewrites every outbox segment that holds references so that it carries the records
    /// inline. A reference whose record is gone (which only damage can cause) is dropped.
    fn inline_outbox(&mut self) -> Result<(), LedgerError> {
        let t = &self.trees;
        let mut dropped = 0u64;
        for item in t.outbox.iter() {
            let (k, v) = item.map_err(LedgerError::storage)?;
            let (Some(seq), Some(entries)) = (outbox::key_seq(&k), outbox::decode(&v)) else { continue };
            if !entries.iter().any(|(_, v)| outbox::is_ref(v)) {
                continue;
            }
            let n = entries.len();
            let inline = t.resolve_entries(seq, entries);
            dropped += (n - inline.len()) as u64;
            let segment = outbox::encode(inline.iter().map(|(id, r)| (id, r.as_slice())));
            if inline.is_empty() {
                t.outbox.remove(&k).map_err(LedgerError::storage)?;
            } else {
                t.outbox.insert(&k, segment).map_err(LedgerError::storage)?;
            }
        }
        self.counts.outbox = self.counts.outbox.saturating_sub(dropped);
        Ok(())
    }

    /// Clears behind a marker, so a crash half-way is finished at the next open.
    pub fn clear(&mut self, force: bool) -> Result<Cleared, LedgerError> {
        self.trees.meta.insert(CLEARING_KEY, &[u8::from(force)]).map_err(LedgerError::storage)?;
        if !force {
            // The outbox outlives the history: its entries take their records inline first.
            self.inline_outbox()?;
        }
        let t = &self.trees;
        self.db.flush().map_err(LedgerError::storage)?;
        let records = clear_tree(&t.records)?;
        clear_tree(&t.counters)?;
        let mut cleared = Cleared { records, outbox: 0, dead_letters: 0 };
        if force {
            clear_tree(&t.outbox)?;
            cleared.outbox = self.counts.outbox;
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
