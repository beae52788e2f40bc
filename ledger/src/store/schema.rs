//! Schema and migrations. Each migration runs once, in order, inside a transaction.

use rusqlite::{Connection, OptionalExtension, Transaction};

use crate::error::LedgerError;

/// A migration's work that SQL alone cannot do, run after its SQL in the same transaction.
type Code = fn(&Transaction<'_>) -> Result<(), LedgerError>;

/// Migrations by target version; `MIGRATIONS[i]` brings version `i` to `i + 1`.
const MIGRATIONS: &[(&str, Option<Code>)] = &[
    (
        r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- The append-only log. seq is contiguous from 1; hash chains each row to the previous one.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    idem_key TEXT NOT NULL UNIQUE,
    at INTEGER NOT NULL,
    type TEXT NOT NULL,
    job TEXT,
    body TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE INDEX events_by_job ON events(job, seq) WHERE job IS NOT NULL;
CREATE TABLE postings (
    seq INTEGER NOT NULL,
    n INTEGER NOT NULL,
    debit TEXT NOT NULL,
    credit TEXT NOT NULL,
    amount INTEGER NOT NULL,
    PRIMARY KEY (seq, n)
) WITHOUT ROWID;
-- Payment references credited, each exactly once.
CREATE TABLE payments (reference TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
-- Any outside reference (event id, payment ref, refund id, lookup hash) -> the events it appears in.
-- Keyed by seq so appends write at the end; the reference index serves audit look-ups.
CREATE TABLE refs (
    seq INTEGER NOT NULL,
    reference TEXT NOT NULL,
    job TEXT,
    PRIMARY KEY (seq, reference)
) WITHOUT ROWID;
CREATE INDEX refs_by_reference ON refs(reference);
-- Projections, rewritten in the same transaction as the events that change them.
CREATE TABLE jobs (job TEXT PRIMARY KEY, state TEXT NOT NULL, record TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX jobs_by_state ON jobs(state);
CREATE TABLE refunds (refund TEXT PRIMARY KEY, job TEXT, state TEXT NOT NULL, record TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX refunds_by_job ON refunds(job) WHERE job IS NOT NULL;
CREATE TABLE subscriptions (subscription TEXT PRIMARY KEY, record TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE effects (effect TEXT PRIMARY KEY, done INTEGER NOT NULL, record TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE balances (account TEXT PRIMARY KEY, debits INTEGER NOT NULL, credits INTEGER NOT NULL) WITHOUT ROWID;
"#,
        None,
    ),
    (
        r#"
-- Snapshots of the open work (version 2). `changed` is the seq of the last event that changed a
-- job or refund row: a store replaying the events after a snapshot may read back a record that
-- left memory before it only if the row has not changed since (NULL: last changed before this
-- migration, whose head `changed_since` records).
ALTER TABLE jobs ADD COLUMN changed INTEGER;
ALTER TABLE refunds ADD COLUMN changed INTEGER;
CREATE INDEX refunds_by_state ON refunds(state);
CREATE INDEX effects_open ON effects(effect) WHERE done = 0;
CREATE TABLE snapshots (
    seq INTEGER PRIMARY KEY,
    hash BLOB NOT NULL,
    format INTEGER NOT NULL,
    digest BLOB NOT NULL,
    body BLOB NOT NULL
);
INSERT OR REPLACE INTO meta(key, value)
    SELECT 'changed_since', COALESCE((SELECT max(seq) FROM events), 0);
"#,
        None,
    ),
    (
        r#"
-- The per-job projections as rowid tables (version 3). Keyed by their random 64-hex ids
-- (WITHOUT ROWID), each upsert landed on a random page of the whole table, and an effect's
-- ~1.2 kB record spilled to an overflow page: the pages a batch dirtied grew with the file. Now
-- rows are stored in the order they were made, next to the ones a batch is about to change, and
-- only the small key index is random. Subscriptions and balances grow with customers and
-- accounts, not with jobs, and stay as they were.
CREATE TABLE jobs_v3 (
    job TEXT NOT NULL PRIMARY KEY,
    state TEXT NOT NULL,
    record TEXT NOT NULL,
    changed INTEGER
);
INSERT INTO jobs_v3(job, state, record, changed)
    SELECT job, state, record, changed FROM jobs ORDER BY changed, job;
DROP TABLE jobs;
ALTER TABLE jobs_v3 RENAME TO jobs;
CREATE INDEX jobs_by_state ON jobs(state);
CREATE TABLE refunds_v3 (
    refund TEXT NOT NULL PRIMARY KEY,
    job TEXT,
    state TEXT NOT NULL,
    record TEXT NOT NULL,
    changed INTEGER
);
INSERT INTO refunds_v3(refund, job, state, record, changed)
    SELECT refund, job, state, record, changed FROM refunds ORDER BY changed, refund;
DROP TABLE refunds;
ALTER TABLE refunds_v3 RENAME TO refunds;
CREATE INDEX refunds_by_job ON refunds(job) WHERE job IS NOT NULL;
CREATE INDEX refunds_by_state ON refunds(state);
CREATE TABLE effects_v3 (effect TEXT NOT NULL PRIMARY KEY, done INTEGER NOT NULL, record TEXT NOT NULL);
INSERT INTO effects_v3(effect, done, record) SELECT effect, done, record FROM effects ORDER BY effect;
DROP TABLE effects;
ALTER TABLE effects_v3 RENAME TO effects;
CREATE INDEX effects_open ON effects(effect) WHERE done = 0;
"#,
        None,
    ),
    (
        r#"
-- The log searched by 64-bit digests of its idempotency keys, jobs and references (version 4;
-- see `store/digest.rs`): the UNIQUE index on the 64-hex key, the (job, seq) index and the
-- reference index held ~45 entries a page and were written at random; the digests' indexes are
-- several times smaller. `refs` becomes a rowid table: its (seq, reference) key is then a
-- separate index, written at its end, and the digest's index holds no text. The copies (with the
-- digests) are `digest_migration::copy_with_digests`.
CREATE TABLE events_v4 (
    seq INTEGER PRIMARY KEY,
    idem_key TEXT NOT NULL,
    at INTEGER NOT NULL,
    type TEXT NOT NULL,
    job TEXT,
    body TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL,
    key_digest INTEGER NOT NULL,
    job_digest INTEGER
);
CREATE TABLE refs_v4 (
    seq INTEGER NOT NULL,
    reference TEXT NOT NULL,
    job TEXT,
    ref_digest INTEGER NOT NULL,
    PRIMARY KEY (seq, reference)
);
"#,
        Some(super::digest_migration::copy_with_digests),
    ),
];

/// The first version with snapshots and the `changed` columns.
pub const SNAPSHOT_VERSION: u32 = 2;
/// The oldest version this build reads without migrating (read-only opens, `verify`).
pub const OLDEST_READABLE: u32 = 1;

pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

pub fn schema_version(conn: &Connection) -> Result<u32, LedgerError> {
    if !has_table(conn, "meta")? {
        return Ok(0);
    }
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key='schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    v.map(|v| {
        v.parse()
            .map_err(|_| LedgerError::Corrupt(format!("bad schema_version {v:?}")))
    })
    .unwrap_or(Ok(0))
}

/// Whether the tables are those of `version`: each version from [`SNAPSHOT_VERSION`] on left a
/// mark a file has from that version and not before (the `snapshots` table; `jobs` as a rowid
/// table; the digest columns of `events`). A label edited to another version is refused rather
/// than read as that version (a writable open would then run a migration again on tables that
/// already have it, or skip one they lack).
pub fn check_structure(conn: &Connection, version: u32) -> Result<(), LedgerError> {
    let marks = [
        (
            SNAPSHOT_VERSION,
            "the snapshots table",
            has_table(conn, "snapshots")?,
        ),
        (3, "jobs as a rowid table", jobs_has_rowid(conn)?),
        (4, "the digest columns", super::digest::has_digests(conn)?),
    ];
    for (since, what, present) in marks {
        if present != (version >= since) {
            let state = if present { "has" } else { "lacks" };
            return Err(LedgerError::Corrupt(format!(
                "schema version {version}, but the file {state} {what} of version {since}"
            )));
        }
    }
    Ok(())
}

fn has_table(conn: &Connection, name: &str) -> Result<bool, LedgerError> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// Whether `jobs` is a rowid table (version 3 on) rather than `WITHOUT ROWID`.
fn jobs_has_rowid(conn: &Connection) -> Result<bool, LedgerError> {
    let without: Option<i64> = conn
        .query_row(
            "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = 'jobs'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(without == Some(0))
}

/// Bring the database to `SCHEMA_VERSION`; refuse a newer one.
pub fn migrate(conn: &mut Connection) -> Result<(), LedgerError> {
    let found = schema_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(LedgerError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    check_structure(conn, found)?;
    for (i, (sql, code)) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        if let Some(code) = code {
            code(&tx)?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?1)",
            [(i + 1).to_string()],
        )?;
        tx.commit()?;
    }
    Ok(())
}
