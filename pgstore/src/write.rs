//! One flush: every staged group's events, postings, references and changed projection rows in
//! one transaction.
//!
//! Appends are serialised by the `head` row of `meta`: the transaction locks it (`SELECT … FOR
//! UPDATE`) before writing and checks that it still names the head this store last wrote. A
//! second writer waits for the lock, then finds the head moved and fails without writing, so the
//! seqs stay contiguous and the chain total whatever the number of processes. Idempotency keys
//! and payment references are unique by constraint besides: a write that would repeat one fails.

use deadpool_postgres::Pool;
use deadpool_postgres::Transaction;
use paydvm_ledger::chain::Hash;
use paydvm_ledger::store::{EventRows, ProjectionRow, ProjectionRows};
use paydvm_ledger::LedgerEvent;
use tokio_postgres::types::ToSql;

use crate::client::{int, PgError};

/// One event ready to store.
pub struct EventWrite {
    pub seq: u64,
    pub key: String,
    pub at: u64,
    pub kind: &'static str,
    pub rows: EventRows,
}

impl EventWrite {
    pub fn new(seq: u64, event: &LedgerEvent, rows: EventRows) -> Self {
        EventWrite {
            seq,
            key: event.key.to_string(),
            at: event.at.0,
            kind: event.body.type_name(),
            rows,
        }
    }
}

/// Everything one flush writes, owned, to travel to the runtime.
pub struct Batch {
    /// The head this store last wrote, and the head after the batch.
    pub from: (u64, Hash),
    pub to: (u64, Hash),
    pub events: Vec<EventWrite>,
    pub projections: ProjectionRows,
}

pub fn head_text((seq, hash): (u64, Hash)) -> String {
    format!("{seq}:{}", hex::encode(hash))
}

pub async fn write(pool: Pool, batch: Batch) -> Result<(), PgError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let lock = tx
        .prepare_cached("SELECT value FROM meta WHERE key = 'head' FOR UPDATE")
        .await?;
    let found: String = tx.query_one(&lock, &[]).await?.try_get(0)?;
    let expected = head_text(batch.from);
    if found != expected {
        return Err(PgError::HeadMoved { expected, found });
    }
    events(&tx, batch.from.1, &batch.events).await?;
    projections(&tx, &batch.projections).await?;
    exec(
        &tx,
        "UPDATE meta SET value = $1 WHERE key = 'head'",
        &[&head_text(batch.to)],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One statement, prepared once per connection (the pool keeps each connection's statements),
/// so a flush costs one round trip per statement rather than two (parse, then execute).
async fn exec(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<(), PgError> {
    let stmt = tx.prepare_cached(sql).await?;
    tx.execute(&stmt, params).await?;
    Ok(())
}

/// Columns as arrays, inserted with one `unnest` statement per table.
async fn events(tx: &Transaction<'_>, head: Hash, events: &[EventWrite]) -> Result<(), PgError> {
    let (mut seq, mut key, mut at, mut kind, mut job, mut body, mut prev, mut hash) = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    let (mut p_seq, mut p_n, mut p_debit, mut p_credit, mut p_amount) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut pay_ref, mut pay_seq) = (vec![], vec![]);
    let (mut r_seq, mut r_ref, mut r_job) = (vec![], vec![], vec![]);
    let mut previous = head;
    for e in events {
        let s = int(e.seq, "seq")?;
        seq.push(s);
        key.push(e.key.as_str());
        at.push(int(e.at, "at")?);
        kind.push(e.kind);
        job.push(e.rows.job.as_deref());
        body.push(e.rows.body.as_str());
        hash.push(e.rows.hash.to_vec());
        prev.push(previous.to_vec());
        previous = e.rows.hash;
        for (n, (debit, credit, amount)) in e.rows.postings.iter().enumerate() {
            p_seq.push(s);
            p_n.push(n as i32);
            p_debit.push(debit.as_str());
            p_credit.push(credit.as_str());
            p_amount.push(int(*amount, "amount")?);
        }
        for r in &e.rows.payments {
            pay_ref.push(r.as_str());
            pay_seq.push(s);
        }
        for r in &e.rows.refs {
            r_seq.push(s);
            r_ref.push(r.as_str());
            r_job.push(e.rows.job.as_deref());
        }
    }
    exec(
        tx,
        "INSERT INTO events(seq, idem_key, at, type, job, body, prev_hash, hash) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], \
                              $6::text[], $7::bytea[], $8::bytea[])",
        &[&seq, &key, &at, &kind, &job, &body, &prev, &hash],
    )
    .await?;
    if !p_seq.is_empty() {
        exec(
            tx,
            "INSERT INTO postings(seq, n, debit, credit, amount) \
         SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::bigint[])",
            &[&p_seq, &p_n, &p_debit, &p_credit, &p_amount],
        )
        .await?;
    }
    if !pay_seq.is_empty() {
        exec(
            tx,
            "INSERT INTO payments(reference, seq) SELECT * FROM unnest($1::text[], $2::bigint[])",
            &[&pay_ref, &pay_seq],
        )
        .await?;
    }
    if !r_seq.is_empty() {
        exec(
            tx,
            "INSERT INTO refs(seq, reference, job) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])",
            &[&r_seq, &r_ref, &r_job],
        )
        .await?;
    }
    Ok(())
}

/// Rows created by the batch are inserted (a row that exists after all fails the write instead
/// of overwriting history); rows it changed are upserted.
async fn projections(tx: &Transaction<'_>, rows: &ProjectionRows) -> Result<(), PgError> {
    const JOBS: [&str; 2] = [
        "INSERT INTO jobs(job, state, record, changed) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])",
        " ON CONFLICT (job) DO UPDATE SET state = EXCLUDED.state, record = EXCLUDED.record, \
         changed = EXCLUDED.changed",
    ];
    const REFUNDS: [&str; 2] = [
        "INSERT INTO refunds(refund, state, record, changed, job) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])",
        " ON CONFLICT (refund) DO UPDATE SET state = EXCLUDED.state, record = EXCLUDED.record, \
         changed = EXCLUDED.changed, job = EXCLUDED.job",
    ];
    for ([insert, upsert], list) in [(JOBS, &rows.jobs), (REFUNDS, &rows.refunds)] {
        for created in [true, false] {
            let part: Vec<&ProjectionRow> = list.iter().filter(|r| r.created == created).collect();
            if part.is_empty() {
                continue;
            }
            let keys: Vec<&str> = part.iter().map(|r| r.key.as_str()).collect();
            let states: Vec<&str> = part.iter().map(|r| r.state.as_str()).collect();
            let records: Vec<&str> = part.iter().map(|r| r.record.as_str()).collect();
            let jobs: Vec<Option<&str>> = part.iter().map(|r| r.job.as_deref()).collect();
            let changed: Vec<i64> = part
                .iter()
                .map(|r| int(r.changed, "seq"))
                .collect::<Result<_, _>>()?;
            let sql = if created {
                insert.to_string()
            } else {
                format!("{insert}{upsert}")
            };
            if insert.contains("$5") {
                exec(tx, &sql, &[&keys, &states, &records, &changed, &jobs]).await?;
            } else {
                exec(tx, &sql, &[&keys, &states, &records, &changed]).await?;
            }
        }
    }
    let keys: Vec<&str> = rows.subscriptions.iter().map(|r| r.key.as_str()).collect();
    let records: Vec<&str> = rows
        .subscriptions
        .iter()
        .map(|r| r.record.as_str())
        .collect();
    if !keys.is_empty() {
        exec(
            tx,
            "INSERT INTO subscriptions(subscription, record) \
         SELECT * FROM unnest($1::text[], $2::text[]) \
         ON CONFLICT (subscription) DO UPDATE SET record = EXCLUDED.record",
            &[&keys, &records],
        )
        .await?;
    }
    for created in [true, false] {
        let part: Vec<&ProjectionRow> = rows
            .effects
            .iter()
            .filter(|r| r.created == created)
            .collect();
        if part.is_empty() {
            continue;
        }
        let keys: Vec<&str> = part.iter().map(|r| r.key.as_str()).collect();
        let done: Vec<bool> = part.iter().map(|r| r.done).collect();
        let records: Vec<&str> = part.iter().map(|r| r.record.as_str()).collect();
        let conflict = if created {
            ""
        } else {
            " ON CONFLICT (effect) DO UPDATE SET done = EXCLUDED.done, record = EXCLUDED.record"
        };
        exec(
            tx,
            &format!(
                "INSERT INTO effects(effect, done, record) \
                 SELECT * FROM unnest($1::text[], $2::bool[], $3::text[]){conflict}"
            ),
            &[&keys, &done, &records],
        )
        .await?;
    }
    let accounts: Vec<&str> = rows.balances.iter().map(|b| b.0.as_str()).collect();
    let debits: Vec<i64> = rows
        .balances
        .iter()
        .map(|b| int(b.1, "debits"))
        .collect::<Result<_, _>>()?;
    let credits: Vec<i64> = rows
        .balances
        .iter()
        .map(|b| int(b.2, "credits"))
        .collect::<Result<_, _>>()?;
    if accounts.is_empty() {
        return Ok(());
    }
    exec(
        tx,
        "INSERT INTO balances(account, debits, credits) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) \
         ON CONFLICT (account) DO UPDATE SET debits = EXCLUDED.debits, credits = EXCLUDED.credits",
        &[&accounts, &debits, &credits],
    )
    .await?;
    Ok(())
}
