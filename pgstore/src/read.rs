//! Reading rows back: single records by key (what a store keeping open work loads before
//! deciding), events by seq, and the history questions of tools and tests.

use std::collections::HashMap;

use paydvm_ledger::account::{Account, Balance};
use paydvm_ledger::chain::Hash;
use paydvm_ledger::snapshot::Snapshot;
use paydvm_ledger::state::residency::ProjectedRows;
use paydvm_ledger::store::StoredEvent;
use paydvm_ledger::{
    EffectId, EffectRecord, EventBody, IdemKey, JobId, JobRecord, JobState, LedgerError,
    LedgerEvent, LedgerState, Msat, PaymentRef, QuotedInvoice, RefundId, RefundRecord, RefundState,
    UnixMs,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::client::{get, get_u64, int, Db, Param, PgError};

pub const SELECT_EVENT: &str = "SELECT seq, idem_key, at, job, body, prev_hash, hash FROM events";

fn hash(v: Vec<u8>, what: &str) -> Result<Hash, PgError> {
    v.try_into()
        .map_err(|_| LedgerError::Corrupt(format!("{what} is not 32 bytes")).into())
}

/// An event row (`SELECT_EVENT`'s columns) decoded.
pub fn stored_event(row: &Row) -> Result<StoredEvent, PgError> {
    let seq = get_u64(row, 0, "seq")?;
    let corrupt = |e: String| LedgerError::Corrupt(format!("event {seq}: {e}"));
    let body: String = get(row, 4)?;
    Ok(StoredEvent {
        seq,
        event: LedgerEvent {
            key: IdemKey::new(get::<String>(row, 1)?).map_err(|e| corrupt(e.to_string()))?,
            at: UnixMs(get_u64(row, 2, "at")?),
            body: serde_json::from_str(&body).map_err(|e| corrupt(format!("body: {e}")))?,
        },
        job: get(row, 3)?,
        prev_hash: hash(get(row, 5)?, "prev_hash")?,
        hash: hash(get(row, 6)?, "hash")?,
    })
}

fn text(s: &str) -> Param {
    Box::new(s.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> Result<T, PgError> {
    serde_json::from_str(json).map_err(|e| LedgerError::Corrupt(format!("{what} row: {e}")).into())
}

/// A projection record by key, with the seq of the last event that changed it.
pub fn record<T: serde::de::DeserializeOwned>(
    db: &Db,
    table: &str,
    key_col: &str,
    key: &str,
) -> Result<Option<(T, Option<u64>)>, PgError> {
    let changed = if matches!(table, "jobs" | "refunds") {
        "changed"
    } else {
        "NULL::bigint"
    };
    let sql = format!("SELECT record, {changed} FROM {table} WHERE {key_col} = $1");
    let Some(row) = db.query_opt(sql, vec![text(key)])? else {
        return Ok(None);
    };
    let changed: Option<i64> = get(&row, 1)?;
    let changed = changed
        .map(|c| u64::try_from(c).map_err(|_| LedgerError::Corrupt(format!("changed {c}"))))
        .transpose()?;
    Ok(Some((decode(table, &get::<String>(&row, 0)?)?, changed)))
}

pub fn job(db: &Db, id: &JobId) -> Result<Option<(JobRecord, Option<u64>)>, PgError> {
    record(db, "jobs", "job", id.as_str())
}

pub fn refund(db: &Db, id: &RefundId) -> Result<Option<(RefundRecord, Option<u64>)>, PgError> {
    record(db, "refunds", "refund", id.as_str())
}

pub fn effect(db: &Db, id: &EffectId) -> Result<Option<EffectRecord>, PgError> {
    Ok(record(db, "effects", "effect", id.as_str())?.map(|(r, _)| r))
}

fn balance_of(row: &Row) -> Result<Balance, PgError> {
    Ok(Balance {
        debits: Msat::from_msat(get_u64(row, 1, "debits")?),
        credits: Msat::from_msat(get_u64(row, 2, "credits")?),
    })
}

pub fn balance(db: &Db, account: &Account) -> Result<Option<Balance>, PgError> {
    db.query_opt(
        "SELECT account, debits, credits FROM balances WHERE account = $1",
        vec![text(&account.to_string())],
    )?
    .map(|r| balance_of(&r))
    .transpose()
}

/// The balances of every account named in `accounts` (by name) found.
pub fn balances(db: &Db, accounts: Vec<String>) -> Result<HashMap<String, Balance>, PgError> {
    let sql = "SELECT account, debits, credits FROM balances WHERE account = ANY($1)";
    rows_by_key(db, sql.to_owned(), accounts, balance_of)
}

fn seq_by(db: &Db, sql: &str, key: &str) -> Result<Option<u64>, PgError> {
    db.query_opt(sql, vec![text(key)])?
        .map(|r| get_u64(&r, 0, "seq"))
        .transpose()
}

pub fn payment_seq(db: &Db, reference: &PaymentRef) -> Result<Option<u64>, PgError> {
    seq_by(
        db,
        "SELECT seq FROM payments WHERE reference = $1",
        reference.as_str(),
    )
}

pub fn key_seq(db: &Db, key: &IdemKey) -> Result<Option<u64>, PgError> {
    seq_by(
        db,
        "SELECT seq FROM events WHERE idem_key = $1",
        key.as_str(),
    )
}

/// Each key of `keys` that `sql` (selecting the key first, with `= ANY($1)`) finds, with what
/// `value` reads from the rest of its row: one query for the whole list.
fn rows_by_key<V>(
    db: &Db,
    sql: String,
    keys: Vec<String>,
    value: impl Fn(&Row) -> Result<V, PgError>,
) -> Result<HashMap<String, V>, PgError> {
    let mut found = HashMap::new();
    if keys.is_empty() {
        return Ok(found);
    }
    for r in db.query(sql, vec![Box::new(keys)])? {
        found.insert(get::<String>(&r, 0)?, value(&r)?);
    }
    Ok(found)
}

/// Each key of `keys` found in `col` of `table`, with the `seq` of its row.
pub fn seqs_by_key(
    db: &Db,
    table: &str,
    col: &str,
    keys: Vec<String>,
) -> Result<HashMap<String, u64>, PgError> {
    rows_by_key(db, seqs_sql(table, col), keys, |r| get_u64(r, 1, "seq"))
}

/// The query of [`seqs_by_key`]; its rows are read by [`seqs_of`].
pub fn seqs_sql(table: &str, col: &str) -> String {
    format!("SELECT {col}, seq FROM {table} WHERE {col} = ANY($1)")
}

pub fn seqs_of(rows: Vec<Row>) -> Result<HashMap<String, u64>, PgError> {
    rows.iter()
        .map(|r| Ok((get::<String>(r, 0)?, get_u64(r, 1, "seq")?)))
        .collect()
}

/// The projection records of every key of `keys` found.
pub fn records_by_key<T: serde::de::DeserializeOwned>(
    db: &Db,
    table: &str,
    key_col: &str,
    keys: Vec<String>,
) -> Result<HashMap<String, T>, PgError> {
    rows_by_key(db, records_sql(table, key_col), keys, |r| {
        decode(table, &get::<String>(r, 1)?)
    })
}

/// The query of [`records_by_key`]; its rows are read by [`records_of`].
pub fn records_sql(table: &str, key_col: &str) -> String {
    format!("SELECT {key_col}, record FROM {table} WHERE {key_col} = ANY($1)")
}

pub fn records_of<T: serde::de::DeserializeOwned>(
    table: &str,
    rows: Vec<Row>,
) -> Result<HashMap<String, T>, PgError> {
    rows.iter()
        .map(|r| Ok((get::<String>(r, 0)?, decode(table, &get::<String>(r, 1)?)?)))
        .collect()
}

/// The rows of several `… = ANY($1)` queries, each with its keys, in order. They go out
/// together on one connection, which pipelines them: one round trip for all (a query with no
/// keys is not sent).
pub fn rows_by_keys(db: &Db, asks: Vec<(String, Vec<String>)>) -> Result<Vec<Vec<Row>>, PgError> {
    db.run(move |pool| async move {
        let client = pool.get().await?;
        let client = &client;
        let queries = asks.iter().map(|(sql, keys)| async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let stmt = client.prepare_cached(sql).await?;
            Ok(client.query(&stmt, &[keys as &(dyn ToSql + Sync)]).await?)
        });
        futures_util::future::join_all(queries)
            .await
            .into_iter()
            .collect()
    })
}

pub fn event(db: &Db, seq: u64) -> Result<Option<StoredEvent>, PgError> {
    db.query_opt(
        format!("{SELECT_EVENT} WHERE seq = $1"),
        vec![Box::new(int(seq, "seq")?)],
    )?
    .map(|r| stored_event(&r))
    .transpose()
}

/// Up to `limit` events after `after`, in order (reading a long log a chunk at a time).
pub fn events_after(db: &Db, after: u64, limit: i64) -> Result<Vec<StoredEvent>, PgError> {
    db.query(
        format!("{SELECT_EVENT} WHERE seq > $1 ORDER BY seq LIMIT $2"),
        vec![Box::new(int(after, "seq")?), Box::new(limit)],
    )?
    .iter()
    .map(stored_event)
    .collect()
}

pub fn stored_request(db: &Db, job: &JobId) -> Result<Option<String>, PgError> {
    let first = db.query_opt(
        format!("{SELECT_EVENT} WHERE job = $1 ORDER BY seq LIMIT 1"),
        vec![text(job.as_str())],
    )?;
    Ok(first
        .map(|r| stored_event(&r))
        .transpose()?
        .and_then(StoredEvent::into_request))
}

pub fn quoted_invoices(db: &Db) -> Result<Vec<QuotedInvoice>, PgError> {
    let types: Vec<String> = QuotedInvoice::OFFERING_TYPES.map(String::from).to_vec();
    let rows = db.query(
        "SELECT body FROM events WHERE type = ANY($1) ORDER BY seq",
        vec![Box::new(types)],
    )?;
    let mut out = Vec::new();
    for row in rows {
        let body: EventBody = serde_json::from_str(&get::<String>(&row, 0)?)?;
        out.extend(QuotedInvoice::offered_by(&body));
    }
    Ok(out)
}

/// (state, count) rows of a table, in the order of `all`; an unknown state is corruption.
fn counts<S: Copy>(
    db: &Db,
    table: &str,
    all: &[S],
    name: fn(S) -> &'static str,
) -> Result<Vec<(S, u64)>, PgError> {
    let rows = db.query(
        format!("SELECT state, count(*) FROM {table} GROUP BY state"),
        vec![],
    )?;
    let mut found = Vec::new();
    for r in &rows {
        found.push((get::<String>(r, 0)?, get_u64(r, 1, "count")?));
    }
    if let Some((s, _)) = found
        .iter()
        .find(|(s, _)| !all.iter().any(|a| name(*a) == s))
    {
        return Err(LedgerError::Corrupt(format!("{table} row in unknown state {s:?}")).into());
    }
    Ok(all
        .iter()
        .filter_map(|a| {
            found
                .iter()
                .find(|(s, _)| s == name(*a))
                .map(|(_, n)| (*a, *n))
        })
        .collect())
}

pub fn job_counts(db: &Db) -> Result<Vec<(JobState, u64)>, PgError> {
    counts(db, "jobs", &JobState::ALL, JobState::as_str)
}

pub fn refund_counts(db: &Db) -> Result<Vec<(RefundState, u64)>, PgError> {
    counts(db, "refunds", &RefundState::ALL, RefundState::as_str)
}

pub fn account_balances(db: &Db) -> Result<Vec<(Account, Balance)>, PgError> {
    let rows = db.query(
        "SELECT account, debits, credits FROM balances ORDER BY account",
        vec![],
    )?;
    rows.iter()
        .map(|r| {
            let account = get::<String>(r, 0)?
                .parse::<Account>()
                .map_err(|e| LedgerError::Corrupt(format!("balances row: {e}")))?;
            Ok((account, balance_of(r)?))
        })
        .collect()
}

fn records<T: serde::de::DeserializeOwned>(db: &Db, sql: &str) -> Result<Vec<T>, PgError> {
    db.query(sql, vec![])?
        .iter()
        .map(|r| decode(sql, &get::<String>(r, 0)?))
        .collect()
}

pub fn jobs_by_state(db: &Db, state: JobState) -> Result<Vec<JobRecord>, PgError> {
    db.query(
        "SELECT record FROM jobs WHERE state = $1 ORDER BY job",
        vec![text(state.as_str())],
    )?
    .iter()
    .map(|r| decode("jobs", &get::<String>(r, 0)?))
    .collect()
}

/// The whole written history's derived state, from the projection tables.
pub fn projected_state(db: &Db) -> Result<LedgerState, PgError> {
    let mut payment_refs = Vec::new();
    for r in db.query("SELECT reference, seq FROM payments", vec![])? {
        let reference = PaymentRef::new(get::<String>(&r, 0)?)
            .map_err(|e| LedgerError::Corrupt(format!("payments row: {e}")))?;
        payment_refs.push((reference, get_u64(&r, 1, "seq")?));
    }
    Ok(LedgerState::from_projections(ProjectedRows {
        jobs: records(db, "SELECT record FROM jobs")?,
        refunds: records(db, "SELECT record FROM refunds")?,
        subscriptions: records(db, "SELECT record FROM subscriptions")?,
        effects: records(db, "SELECT record FROM effects")?,
        balances: account_balances(db)?,
        payment_refs,
    })?)
}

/// The newest snapshot; a row of the wrong shape comes back as corrupt bytes, to be rejected.
pub fn newest_snapshot(db: &Db) -> Result<Option<Snapshot>, PgError> {
    let Some(r) = db.query_opt(
        "SELECT seq, hash, format, digest, body FROM snapshots ORDER BY seq DESC LIMIT 1",
        vec![],
    )?
    else {
        return Ok(None);
    };
    let bytes = |v: Vec<u8>| <[u8; 32]>::try_from(v.as_slice()).unwrap_or([0u8; 32]);
    Ok(Some(Snapshot {
        seq: get_u64(&r, 0, "snapshot seq")?,
        hash: bytes(get(&r, 1)?),
        format: u32::try_from(get::<i32>(&r, 2)?).unwrap_or(u32::MAX),
        digest: bytes(get(&r, 3)?),
        body: get(&r, 4)?,
    }))
}

/// Store `s` as the newest snapshot and delete the older ones, in one transaction.
pub fn write_snapshot(db: &Db, s: &Snapshot) -> Result<(), PgError> {
    let seq = int(s.seq, "seq")?;
    let (hash, format, digest, body) = (
        s.hash.to_vec(),
        s.format as i32,
        s.digest.to_vec(),
        s.body.clone(),
    );
    db.run(move |pool| async move {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO snapshots(seq, hash, format, digest, body) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (seq) DO UPDATE SET hash = EXCLUDED.hash, format = EXCLUDED.format, \
             digest = EXCLUDED.digest, body = EXCLUDED.body",
            &[&seq, &hash, &format, &digest, &body],
        )
        .await?;
        tx.execute("DELETE FROM snapshots WHERE seq < $1", &[&seq])
            .await?;
        tx.commit().await?;
        Ok(())
    })
}
