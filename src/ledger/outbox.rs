//! Outbox positions: where a record waits for the sync backend.
//!
//! One `outbox` row per record not yet confirmed (see `schema`). Its `seq` comes from SQLite's
//! AUTOINCREMENT, so it only grows (never reused, across restarts too): the sync worker's cursor
//! "after this position" stays valid whatever was acknowledged. `record` is NULL for a
//! *reference* (the record is the row of `records` with the same id, so a commit stores its
//! bytes once); entries that must outlive the history (a `clear` of the records, a requeue from
//! the dead letters) carry the record inline as JSON. `batch` names the stored sync batch an
//! entry was sent in (NULL until it is batched; see `schema::V3`). Rows leave when the backend
//! accepted or refused them.

use uuid::Uuid;

/// Where one queued record sits: its queue position and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Queued {
    pub seq: u64,
    pub id: Uuid,
}
