//! Questions about the written history, answered by SQL: what the core never asks while
//! deciding, and what tools and a store keeping only open work need.

use rusqlite::{params, Connection, OptionalExtension};

use super::audit::{decode_row, raw_row};
use super::digest::text_is;
use super::{from_sql_int, key_digest, to_sql_int, StoredEvent};
use crate::account::{Account, Balance};
use crate::error::LedgerError;
use crate::ids::{JobId, PaymentRef};
use crate::job::JobState;
use crate::ledger_store::QuotedInvoice;
use crate::money::Msat;
use crate::refund::RefundState;
use crate::state::LedgerState;

pub(crate) fn event(conn: &Connection, seq: u64) -> Result<Option<StoredEvent>, LedgerError> {
    let row = conn
        .prepare_cached(
            "SELECT seq, idem_key, at, job, body, prev_hash, hash FROM events WHERE seq = ?1",
        )?
        .query_row([to_sql_int(seq, "seq")?], raw_row)
        .optional()?;
    row.map(decode_row).transpose()
}

/// Up to `limit` events after `after`, in seq order.
pub(crate) fn events_after(
    conn: &Connection,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, LedgerError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(
        "SELECT seq, idem_key, at, job, body, prev_hash, hash FROM events WHERE seq > ?1 \
         ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(rusqlite::params![to_sql_int(after, "seq")?, limit], raw_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(decode_row(row?)?);
    }
    Ok(out)
}

pub(crate) fn stored_request(
    conn: &Connection,
    job: &JobId,
    digests: bool,
) -> Result<Option<String>, LedgerError> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT seq, idem_key, at, job, body, prev_hash, hash FROM events \
             WHERE {} ORDER BY seq LIMIT 1",
            text_is("job", "job_digest", digests)
        ))?
        .query_row(params![job.as_str(), key_digest(job.as_str())], raw_row)
        .optional()?;
    Ok(row
        .map(decode_row)
        .transpose()?
        .and_then(StoredEvent::into_request))
}

pub(crate) fn quoted_invoices(conn: &Connection) -> Result<Vec<QuotedInvoice>, LedgerError> {
    let types = QuotedInvoice::OFFERING_TYPES;
    let mut stmt =
        conn.prepare("SELECT body FROM events WHERE type IN (?1, ?2, ?3) ORDER BY seq")?;
    let bodies = stmt
        .query_map(types, |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for body in bodies {
        out.extend(QuotedInvoice::offered_by(&serde_json::from_str(&body)?));
    }
    Ok(out)
}

pub(crate) fn job_counts(conn: &Connection) -> Result<Vec<(JobState, u64)>, LedgerError> {
    let rows = counts(conn, "SELECT state, count(*) FROM jobs GROUP BY state")?;
    let mut out = Vec::new();
    for state in JobState::ALL {
        if let Some((_, n)) = rows.iter().find(|(s, _)| s == state.as_str()) {
            out.push((state, *n));
        }
    }
    if let Some((s, _)) = rows.iter().find(|(s, _)| JobState::parse(s).is_none()) {
        return Err(LedgerError::Corrupt(format!(
            "jobs row in unknown state {s:?}"
        )));
    }
    Ok(out)
}

pub(crate) fn refund_counts(conn: &Connection) -> Result<Vec<(RefundState, u64)>, LedgerError> {
    let rows = counts(conn, "SELECT state, count(*) FROM refunds GROUP BY state")?;
    let mut out = Vec::new();
    for state in RefundState::ALL {
        if let Some((_, n)) = rows.iter().find(|(s, _)| s == state.as_str()) {
            out.push((state, *n));
        }
    }
    if let Some((s, _)) = rows.iter().find(|(s, _)| RefundState::parse(s).is_none()) {
        return Err(LedgerError::Corrupt(format!(
            "refunds row in unknown state {s:?}"
        )));
    }
    Ok(out)
}

fn counts(conn: &Connection, sql: &str) -> Result<Vec<(String, u64)>, LedgerError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    rows.map(|r| {
        let (s, n) = r?;
        Ok((s, from_sql_int(n, "count")?))
    })
    .collect()
}

pub(crate) fn account_balances(conn: &Connection) -> Result<Vec<(Account, Balance)>, LedgerError> {
    let mut stmt =
        conn.prepare("SELECT account, debits, credits FROM balances ORDER BY account")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let name: String = r.get(0)?;
        let account = name
            .parse::<Account>()
            .map_err(|e| LedgerError::Corrupt(format!("balances row: {e}")))?;
        out.push((
            account,
            Balance {
                debits: Msat::from_msat(from_sql_int(r.get(1)?, "debits")?),
                credits: Msat::from_msat(from_sql_int(r.get(2)?, "credits")?),
            },
        ));
    }
    Ok(out)
}

fn records<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    sql: &str,
) -> Result<Vec<T>, LedgerError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.map(|json| {
        serde_json::from_str(&json?).map_err(|e| LedgerError::Corrupt(format!("{sql}: {e}")))
    })
    .collect()
}

/// The whole written history's derived state, from the projection tables.
pub(crate) fn projected_state(conn: &Connection) -> Result<LedgerState, LedgerError> {
    let mut payment_refs = Vec::new();
    let mut stmt = conn.prepare("SELECT reference, seq FROM payments")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let reference = PaymentRef::new(r.get::<_, String>(0)?)
            .map_err(|e| LedgerError::Corrupt(format!("payments row: {e}")))?;
        payment_refs.push((reference, from_sql_int(r.get(1)?, "seq")?));
    }
    LedgerState::from_projections(crate::state::residency::ProjectedRows {
        jobs: records(conn, "SELECT record FROM jobs")?,
        refunds: records(conn, "SELECT record FROM refunds")?,
        subscriptions: records(conn, "SELECT record FROM subscriptions")?,
        effects: records(conn, "SELECT record FROM effects")?,
        balances: account_balances(conn)?,
        payment_refs,
    })
}
