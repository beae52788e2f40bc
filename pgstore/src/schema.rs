//! The PostgreSQL schema: the same tables and meaning as the SQLite store's (see
//! `docs/postgres.md`), so `verify` and `export` read the same rows. Text keys use the "C"
//! collation: byte order, as SQLite sorts, whatever the database's locale.

use crate::client::{Db, PgError};
use paydvm_ledger::chain::GENESIS;
use paydvm_ledger::LedgerError;

/// Version of this schema (PostgreSQL's own numbering).
pub const SCHEMA_VERSION: u32 = 1;

/// Held for the migration, so that two nodes starting at once do not both create the tables.
const MIGRATION_LOCK: i64 = 0x7061_7964_766d; // "paydvm"

const V1: &str = r#"
CREATE TABLE meta (key TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    idem_key TEXT COLLATE "C" NOT NULL UNIQUE,
    at BIGINT NOT NULL,
    type TEXT NOT NULL,
    job TEXT COLLATE "C",
    body TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash BYTEA NOT NULL
);
CREATE INDEX events_by_job ON events(job, seq) WHERE job IS NOT NULL;
CREATE TABLE postings (
    seq BIGINT NOT NULL,
    n INTEGER NOT NULL,
    debit TEXT COLLATE "C" NOT NULL,
    credit TEXT COLLATE "C" NOT NULL,
    amount BIGINT NOT NULL,
    PRIMARY KEY (seq, n)
);
CREATE TABLE payments (reference TEXT COLLATE "C" PRIMARY KEY, seq BIGINT NOT NULL);
CREATE TABLE refs (
    seq BIGINT NOT NULL,
    reference TEXT COLLATE "C" NOT NULL,
    job TEXT COLLATE "C",
    PRIMARY KEY (seq, reference)
);
CREATE INDEX refs_by_reference ON refs(reference);
CREATE TABLE jobs (
    job TEXT COLLATE "C" PRIMARY KEY,
    state TEXT COLLATE "C" NOT NULL,
    record TEXT NOT NULL,
    changed BIGINT
);
CREATE INDEX jobs_by_state ON jobs(state);
CREATE TABLE refunds (
    refund TEXT COLLATE "C" PRIMARY KEY,
    job TEXT COLLATE "C",
    state TEXT COLLATE "C" NOT NULL,
    record TEXT NOT NULL,
    changed BIGINT
);
CREATE INDEX refunds_by_job ON refunds(job) WHERE job IS NOT NULL;
CREATE INDEX refunds_by_state ON refunds(state);
CREATE TABLE subscriptions (subscription TEXT COLLATE "C" PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE effects (effect TEXT COLLATE "C" PRIMARY KEY, done BOOLEAN NOT NULL, record TEXT NOT NULL);
CREATE INDEX effects_open ON effects(effect) WHERE NOT done;
CREATE TABLE balances (
    account TEXT COLLATE "C" PRIMARY KEY,
    debits BIGINT NOT NULL,
    credits BIGINT NOT NULL
);
CREATE TABLE snapshots (
    seq BIGINT PRIMARY KEY,
    hash BYTEA NOT NULL,
    format INTEGER NOT NULL,
    digest BYTEA NOT NULL,
    body BYTEA NOT NULL
);
"#;

/// The schema version found (0: no ledger tables).
pub fn version(db: &Db) -> Result<u32, PgError> {
    let row = db.query_opt(
        "SELECT value FROM meta WHERE key = 'schema_version'",
        vec![],
    );
    let row = match row {
        Ok(row) => row,
        // No meta table: a database without a ledger.
        Err(PgError::Postgres(e))
            if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
        {
            return Ok(0)
        }
        Err(e) => return Err(e),
    };
    let Some(row) = row else { return Ok(0) };
    let v: String = row.try_get(0)?;
    v.parse()
        .map_err(|_| LedgerError::Corrupt(format!("bad schema_version {v:?}")).into())
}

/// Create the tables in an empty database; refuse a newer schema.
pub fn migrate(db: &Db) -> Result<(), PgError> {
    db.run(|pool| async move {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let exists: Option<String> = tx
            .query_one("SELECT to_regclass('meta')::text", &[])
            .await?
            .try_get(0)?;
        if exists.is_none() {
            tx.batch_execute(V1).await?;
            let head = format!("0:{}", hex::encode(GENESIS));
            tx.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', $1), ('head', $2), \
                 ('changed_since', '0')",
                &[&SCHEMA_VERSION.to_string(), &head],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    })?;
    let found = version(db)?;
    if found < SCHEMA_VERSION {
        return Err(LedgerError::Corrupt(format!("schema version {found} after migrating")).into());
    }
    if found > SCHEMA_VERSION {
        return Err(LedgerError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        }
        .into());
    }
    Ok(())
}
