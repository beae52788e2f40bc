//! One flush: every staged group's events, postings, references and changed projection rows in
//! one transaction.
//!
//! Appends are serialised by the `head` row of `meta`: the transaction locks it (`SELECT … FOR
//! UPDATE`) before writing and checks that it still names the head this store last wrote. A
//! second writer waits for the lock, then finds the head moved and fails without writing, so the
//! seqs stay contiguous and the chain total whatever the number of processes. Idempotency keys
//! and payment references are unique by constraint besides: a write that would repeat one fails.

use deadpool_postgres::Pool;
use futures_util::future::{join, join_all};
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

/// Locks the head row and checks it, then writes every statement. All of it goes out at once:
/// tokio-postgres pipelines requests issued together, so a flush costs three round trips
/// (`BEGIN`; the head lock, the inserts, the projections and the head update; `COMMIT`) instead of
/// one per statement. The server runs them in order, the writes after the head lock; if the head
/// moved they run against a head that is not ours, and the transaction is dropped (rolled back)
/// without a commit. `COMMIT` must stay behind the head lock's answer, not in the pipeline:
/// [`is_written`] is sound only because a transaction that sent `COMMIT` held the lock.
pub async fn write(pool: Pool, batch: Batch) -> Result<(), PgError> {
    let mut statements = Vec::new();
    events(&mut statements, batch.from.1, &batch.events)?;
    projections(&mut statements, &batch.projections)?;
    statements.push(Statement::new(
        "UPDATE meta SET value = $1 WHERE key = 'head'",
        vec![Box::new(head_text(batch.to))],
    ));
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let lock = tx.prepare_cached(LOCK_HEAD);
    let prepared = join_all(statements.iter().map(|s| tx.prepare_cached(&s.sql)));
    let (lock, prepared) = join(lock, prepared).await;
    let (lock, prepared) = (lock?, prepared.into_iter().collect::<Result<Vec<_>, _>>()?);
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = statements.iter().map(Statement::refs).collect();
    let writes = prepared
        .iter()
        .zip(&params)
        .map(|(stmt, params)| tx.execute(stmt, params));
    // `join` polls in order (unlike `tokio::join!`, which rotates): the lock goes out first.
    let (found, written) = join(tx.query_one(&lock, &[]), join_all(writes)).await;
    let found: String = found?.try_get(0)?;
    let expected = head_text(batch.from);
    if found != expected {
        return Err(PgError::HeadMoved { expected, found });
    }
    // The first failure is the cause; the statements after it only found the transaction aborted.
    for result in written {
        result?;
    }
    // Until its answer comes, the commit may or may not have happened: `PgError::Commit`.
    tx.commit().await.map_err(PgError::Commit)?;
    Ok(())
}

const LOCK_HEAD: &str = "SELECT value FROM meta WHERE key = 'head' FOR UPDATE";

/// Whether the write that ended at `to` (its last seq and hash) is in the database, for a write
/// whose outcome is unknown (`COMMIT` unanswered, the deadline passed). Taking the head row's
/// lock first waits for that write's transaction to end: if `COMMIT` was sent, the transaction
/// held the lock (`COMMIT` goes out only after the lock's answer), so once the lock is ours it
/// has committed or never will; if `COMMIT` was not sent, its connection is gone and it never
/// commits. Then the event at `to`'s seq says which: ours (its hash) or absent.
pub async fn is_written(pool: Pool, to: (u64, Hash)) -> Result<bool, PgError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.query_one(LOCK_HEAD, &[]).await?;
    let row = tx
        .query_opt(
            "SELECT hash FROM events WHERE seq = $1",
            &[&int(to.0, "seq")?],
        )
        .await?;
    let written = match row {
        Some(row) => row.try_get::<_, Vec<u8>>(0)? == to.1.to_vec(),
        None => false,
    };
    tx.rollback().await?;
    Ok(written)
}

/// One statement of a flush and its parameters (columns borrowed from the batch).
struct Statement<'a> {
    sql: String,
    params: Vec<Box<dyn ToSql + Sync + Send + 'a>>,
}

impl<'a> Statement<'a> {
    fn new(sql: impl Into<String>, params: Vec<Box<dyn ToSql + Sync + Send + 'a>>) -> Self {
        Statement {
            sql: sql.into(),
            params,
        }
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// Columns as arrays, inserted with one `unnest` statement per table.
fn events<'a>(
    out: &mut Vec<Statement<'a>>,
    head: Hash,
    events: &'a [EventWrite],
) -> Result<(), PgError> {
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
    out.push(Statement::new(
        "INSERT INTO events(seq, idem_key, at, type, job, body, prev_hash, hash) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], \
                              $6::text[], $7::bytea[], $8::bytea[])",
        vec![
            Box::new(seq),
            Box::new(key),
            Box::new(at),
            Box::new(kind),
            Box::new(job),
            Box::new(body),
            Box::new(prev),
            Box::new(hash),
        ],
    ));
    if !p_seq.is_empty() {
        out.push(Statement::new(
            "INSERT INTO postings(seq, n, debit, credit, amount) \
         SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::bigint[])",
            vec![
                Box::new(p_seq),
                Box::new(p_n),
                Box::new(p_debit),
                Box::new(p_credit),
                Box::new(p_amount),
            ],
        ));
    }
    if !pay_seq.is_empty() {
        out.push(Statement::new(
            "INSERT INTO payments(reference, seq) SELECT * FROM unnest($1::text[], $2::bigint[])",
            vec![Box::new(pay_ref), Box::new(pay_seq)],
        ));
    }
    if !r_seq.is_empty() {
        out.push(Statement::new(
            "INSERT INTO refs(seq, reference, job) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])",
            vec![Box::new(r_seq), Box::new(r_ref), Box::new(r_job)],
        ));
    }
    Ok(())
}

/// Rows created by the batch are inserted (a row that exists after all fails the write instead
/// of overwriting history); rows it changed are upserted.
fn projections<'a>(out: &mut Vec<Statement<'a>>, rows: &'a ProjectionRows) -> Result<(), PgError> {
    records(out, rows)?;
    let keys: Vec<&str> = rows.subscriptions.iter().map(|r| r.key.as_str()).collect();
    if !keys.is_empty() {
        let records: Vec<&str> = rows
            .subscriptions
            .iter()
            .map(|r| r.record.as_str())
            .collect();
        out.push(Statement::new(
            "INSERT INTO subscriptions(subscription, record) \
         SELECT * FROM unnest($1::text[], $2::text[]) \
         ON CONFLICT (subscription) DO UPDATE SET record = EXCLUDED.record",
            vec![Box::new(keys), Box::new(records)],
        ));
    }
    effects(out, &rows.effects);
    balances(out, rows)
}

/// The jobs' and refunds' rows.
fn records<'a>(out: &mut Vec<Statement<'a>>, rows: &'a ProjectionRows) -> Result<(), PgError> {
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
        for (created, part) in by_created(list) {
            let changed: Vec<i64> = part
                .iter()
                .map(|r| int(r.changed, "seq"))
                .collect::<Result<_, _>>()?;
            let mut params: Vec<Box<dyn ToSql + Sync + Send + 'a>> = vec![
                Box::new(part.iter().map(|r| r.key.as_str()).collect::<Vec<_>>()),
                Box::new(part.iter().map(|r| r.state.as_str()).collect::<Vec<_>>()),
                Box::new(part.iter().map(|r| r.record.as_str()).collect::<Vec<_>>()),
                Box::new(changed),
            ];
            if insert.contains("$5") {
                params.push(Box::new(
                    part.iter().map(|r| r.job.as_deref()).collect::<Vec<_>>(),
                ));
            }
            let sql = if created {
                insert.to_string()
            } else {
                format!("{insert}{upsert}")
            };
            out.push(Statement::new(sql, params));
        }
    }
    Ok(())
}

/// `rows` split into those the batch created and those it changed; an empty part is left out.
fn by_created(rows: &[ProjectionRow]) -> impl Iterator<Item = (bool, Vec<&ProjectionRow>)> {
    [true, false].into_iter().filter_map(move |created| {
        let part: Vec<&ProjectionRow> = rows.iter().filter(|r| r.created == created).collect();
        (!part.is_empty()).then_some((created, part))
    })
}

fn effects<'a>(out: &mut Vec<Statement<'a>>, effects: &'a [ProjectionRow]) {
    for (created, part) in by_created(effects) {
        let conflict = if created {
            ""
        } else {
            " ON CONFLICT (effect) DO UPDATE SET done = EXCLUDED.done, record = EXCLUDED.record"
        };
        out.push(Statement::new(
            format!(
                "INSERT INTO effects(effect, done, record) \
                 SELECT * FROM unnest($1::text[], $2::bool[], $3::text[]){conflict}"
            ),
            vec![
                Box::new(part.iter().map(|r| r.key.as_str()).collect::<Vec<_>>()),
                Box::new(part.iter().map(|r| r.done).collect::<Vec<_>>()),
                Box::new(part.iter().map(|r| r.record.as_str()).collect::<Vec<_>>()),
            ],
        ));
    }
}

fn balances<'a>(out: &mut Vec<Statement<'a>>, rows: &'a ProjectionRows) -> Result<(), PgError> {
    if rows.balances.is_empty() {
        return Ok(());
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
    out.push(Statement::new(
        "INSERT INTO balances(account, debits, credits) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) \
         ON CONFLICT (account) DO UPDATE SET debits = EXCLUDED.debits, credits = EXCLUDED.credits",
        vec![Box::new(accounts), Box::new(debits), Box::new(credits)],
    ));
    Ok(())
}
