//! The ledger's SQLite file: where it is, its schema and version, how connections are set up, and
//! the checks made before it is opened.
//!
//! - The file is `<dir>/ledger.sqlite` (plus `-wal` and `-shm` while open), mode 0600 in a 0700
//!   directory; looser modes found at open are tightened, with a log line.
//! - The schema version is `PRAGMA user_version`. [`MIGRATIONS`]`[n]` takes a file from version
//!   `n` to `n + 1`, each in its own transaction; a file newer than this build is refused.
//!   Migrations only ever add (tables, columns with defaults, indexes): the tables are a stable,
//!   read-only interface for `sqlite3` users (docs/usage-sync.md).
//! - Every connection uses WAL with `synchronous = FULL` (a commit is on disk when `COMMIT`
//!   returns, power loss included; NORMAL may lose the last commits) and a small page cache.
//! - A data directory holding the sled ledger of earlier versions (`<dir>/ledger/`) is refused
//!   with what to do, never replaced by an empty ledger.

use rusqlite::{Connection, OpenFlags};
use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Name of the ledger file in its directory.
pub const FILE: &str = "ledger.sqlite";
/// Name of the sled ledger directory of earlier versions.
pub const OLD_SLED_DIR: &str = "ledger";
/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;
/// Page cache of the writer connection, in KiB (SQLite's negative `cache_size`).
const WRITER_CACHE_KIB: i64 = 2048;
/// Page cache of each reader connection, in KiB.
const READER_CACHE_KIB: i64 = 512;
/// How long a connection waits for a lock another one holds (only checkpoints and recovery take
/// one in WAL mode).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// `MIGRATIONS[n]` upgrades version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// Version 1. Ids are UUIDv7 text (lowercase, hyphenated), which sorts by creation time; money is
/// integer micro-dollars; booleans are 0/1.
pub(crate) const V1: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE records (
    id                 TEXT PRIMARY KEY NOT NULL,
    ts                 INTEGER NOT NULL,
    app                TEXT NOT NULL,
    user               TEXT NOT NULL,
    provider           TEXT NOT NULL,
    model              TEXT NOT NULL,
    route              TEXT NOT NULL,
    key_source         TEXT NOT NULL,
    input_tokens       INTEGER NOT NULL,
    output_tokens      INTEGER NOT NULL,
    cached_tokens      INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    reasoning_tokens   INTEGER NOT NULL,
    usage_estimated    INTEGER NOT NULL,
    cost_microusd      INTEGER NOT NULL,
    overage_microusd   INTEGER NOT NULL,
    latency_ms         INTEGER NOT NULL,
    ttft_ms            INTEGER,
    status             TEXT NOT NULL,
    error_code         TEXT,
    attempts           INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE counters (
    period             TEXT NOT NULL,
    label              TEXT NOT NULL,
    dim                TEXT NOT NULL,
    key                TEXT NOT NULL,
    requests           INTEGER NOT NULL,
    failed             INTEGER NOT NULL,
    input_tokens       INTEGER NOT NULL,
    output_tokens      INTEGER NOT NULL,
    cached_tokens      INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    reasoning_tokens   INTEGER NOT NULL,
    cost_microusd      INTEGER NOT NULL,
    PRIMARY KEY (period, label, dim, key)
) WITHOUT ROWID;

CREATE TABLE outbox (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    id     TEXT NOT NULL UNIQUE,
    record TEXT
);

CREATE TABLE dead_letters (
    id       TEXT PRIMARY KEY NOT NULL,
    batch_id TEXT NOT NULL,
    status   INTEGER,
    reason   TEXT NOT NULL,
    at_ms    INTEGER NOT NULL,
    record   TEXT NOT NULL
);
";

/// Version 2: apps (see `super::apps`), each with the SHA-256 hash of its token (never the token);
/// the hash is unique, so a token is looked up by it. Times are Unix milliseconds.
pub(crate) const V2: &str = "
CREATE TABLE apps (
    name         TEXT PRIMARY KEY NOT NULL,
    token_hash   BLOB NOT NULL UNIQUE,
    created_ms   INTEGER NOT NULL,
    last_used_ms INTEGER
) WITHOUT ROWID;
";

/// Version 3 (issue 18, and stable batches of issue 16):
/// - `records.source`: the CloudEvents source of the device a record was made on, NULL when made
///   on this one (an imported record keeps its original device's source);
/// - `batches`: a sync batch persisted before its first send (its id is the `Idempotency-Key`,
///   `body` the exact bytes), so a re-send after a crash is the same request; `outbox.batch`
///   names the batch an entry belongs to (NULL: not yet batched);
/// - `dead_letters.body`: the backend's error body (truncated), beside its `status` and `reason`
///   (`rejected`, `too_old`, `future`, `unreadable`).
const V3: &str = "
ALTER TABLE records ADD COLUMN source TEXT;
ALTER TABLE outbox ADD COLUMN batch TEXT;
CREATE INDEX outbox_batch ON outbox (batch) WHERE batch IS NOT NULL;
CREATE TABLE batches (
    id         TEXT PRIMARY KEY NOT NULL,
    created_ms INTEGER NOT NULL,
    body       BLOB NOT NULL
);
ALTER TABLE dead_letters ADD COLUMN body TEXT;
";

/// Version 4 (issue 19): `credit_transactions`, the prepaid credits' audit log (see
/// `super::credits`): `kind` is `deduction` (a call's charge, `credits` < 0, with the `record_id`
/// it paid for, the `cost_microusd` it was priced from and the price `basis`), or `grant`,
/// `purchase`, `adjustment`, `refund` (changes seen from the backend, with its `reference`);
/// `synced_ms` is when the backend acknowledged a deduction (NULL: not yet): deductions travel to
/// the sync backend in the batch of the usage record they paid for, and are acknowledged with it.
const V4: &str = "
CREATE TABLE credit_transactions (
    id            TEXT PRIMARY KEY NOT NULL,
    ts            INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    credits       INTEGER NOT NULL,
    record_id     TEXT,
    cost_microusd INTEGER,
    basis         TEXT,
    reference     TEXT,
    synced_ms     INTEGER
) WITHOUT ROWID;
CREATE INDEX credit_deductions ON credit_transactions (synced_ms) WHERE kind = 'deduction';
CREATE INDEX credit_by_record ON credit_transactions (record_id) WHERE record_id IS NOT NULL;
";

/// Why the ledger file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "{} holds a usage ledger in the old sled format, which this version no longer reads (it stores usage in {}). \
         To keep that history: with the previous release, run `llm-sidecar usage export -o usage.jsonl`; \
         then move the old ledger away (`mv {} {}.sled-backup`), start this version and run `llm-sidecar usage import usage.jsonl`",
        old.display(), new.display(), old.display(), old.display()
    )]
    OldSled { old: PathBuf, new: PathBuf },
    #[error("the ledger has schema version {found}, newer than this build knows ({known}); use a newer llm-sidecar")]
    TooNew { found: i64, known: i64 },
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}

/// The ledger file in `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Refuses a sled ledger, makes `dir` (0700) and the file (0600), tightening looser modes.
pub fn prepare(dir: &Path) -> Result<PathBuf, SchemaError> {
    let old = dir.join(OLD_SLED_DIR);
    if old.is_dir() && ["conf", "db"].iter().any(|f| old.join(f).exists()) {
        return Err(SchemaError::OldSled { old, new: path_in(dir) });
    }
    let io = |what: &str, p: &Path, e: std::io::Error| SchemaError::Io(format!("cannot {what} {}: {e}", p.display()));
    private_dir(dir).map_err(|e| io("prepare", dir, e))?;
    let file = path_in(dir);
    fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&file).map_err(|e| io("create", &file, e))?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = file.clone().into_os_string();
        name.push(suffix);
        let p = PathBuf::from(name);
        if p.exists() {
            tighten(&p, 0o600).map_err(|e| io("chmod", &p, e))?;
        }
    }
    Ok(file)
}

/// Creates `dir` (and missing parents) with mode 0700, or tightens an existing one to 0700.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    tighten(dir, 0o700)
}

/// Sets `mode` on `path` if group or others have any access, with a log line.
pub fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
    let current = fs::metadata(path)?.permissions().mode() & 0o777;
    if current & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        tracing::warn!(path = %path.display(), "tightened permissions from {current:o} to {mode:o}: usage history is private");
    }
    Ok(())
}

fn configure(conn: &Connection, cache_kib: i64) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL is a property of the file; setting it again is a no-op.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!("journal_mode stayed {mode}")));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Opens the writer connection and brings the schema to [`VERSION`].
pub fn open_writer(file: &Path) -> Result<Connection, SchemaError> {
    let conn = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    // Must precede the first table (a no-op on an existing file).
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    configure(&conn, WRITER_CACHE_KIB)?;
    migrate(&conn)?;
    Ok(conn)
}

/// Opens a reader connection (it never writes).
pub fn open_reader(file: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    configure(&conn, READER_CACHE_KIB)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> Result<(), SchemaError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > VERSION {
        return Err(SchemaError::TooNew { found, known: VERSION });
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(found).unwrap_or(0)) {
        let to = from + 1;
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {to}; COMMIT;")).inspect_err(
            |_| {
                let _ = conn.execute_batch("ROLLBACK");
            },
        )?;
        tracing::info!(from, to, "usage ledger schema migrated");
    }
    Ok(())
}
