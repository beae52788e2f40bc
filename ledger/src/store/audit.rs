//! Audit queries: the whole trail of one job, found by any reference it involved.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::digest::text_is;
use super::{from_sql_int, key_digest, to_sql_int, StoredEvent};
use crate::chain::Hash;
use crate::error::LedgerError;
use crate::event::LedgerEvent;
use crate::ids::{IdemKey, UnixMs};
use crate::job::{JobRecord, JobState};
use crate::refund::RefundRecord;

pub(crate) type RawRow = (i64, String, i64, Option<String>, String, Vec<u8>, Vec<u8>);

pub(crate) fn raw_row(r: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

pub(crate) fn to_hash(v: &[u8], what: &str) -> Result<Hash, LedgerError> {
    v.try_into()
        .map_err(|_| LedgerError::Corrupt(format!("{what} is not 32 bytes")))
}

pub(crate) fn decode_row(
    (seq, key, at, job, body, prev, hash): RawRow,
) -> Result<StoredEvent, LedgerError> {
    decode_parts(seq, key, at, job, &body, &prev, &hash)
}

/// As [`decode_row`], leaving the row to its owner (`verify` frees rows on the thread that read
/// them: freeing on another thread costs the allocator more than the copies of key and job).
pub(crate) fn decode_row_ref(raw: &RawRow) -> Result<StoredEvent, LedgerError> {
    let (seq, key, at, job, body, prev, hash) = raw;
    decode_parts(*seq, key.clone(), *at, job.clone(), body, prev, hash)
}

fn decode_parts(
    seq: i64,
    key: String,
    at: i64,
    job: Option<String>,
    body: &str,
    prev: &[u8],
    hash: &[u8],
) -> Result<StoredEvent, LedgerError> {
    let seq = from_sql_int(seq, "seq")?;
    let event = LedgerEvent {
        key: IdemKey::new(key).map_err(|e| LedgerError::Corrupt(format!("event {seq}: {e}")))?,
        at: UnixMs(from_sql_int(at, "at")?),
        body: serde_json::from_str(body)
            .map_err(|e| LedgerError::Corrupt(format!("event {seq}: body: {e}")))?,
    };
    Ok(StoredEvent {
        seq,
        event,
        job,
        prev_hash: to_hash(prev, "prev_hash")?,
        hash: to_hash(hash, "hash")?,
    })
}

/// One step of a trail, with the postings it made.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    pub seq: u64,
    pub at: u64,
    pub key: String,
    pub event: crate::event::EventBody,
    pub postings: Vec<AuditPosting>,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditPosting {
    pub debit: String,
    pub credit: String,
    pub amount_msat: u64,
}

/// Everything the ledger knows about one job (or one payment that matched no job).
#[derive(Debug, Clone, Serialize)]
pub struct AuditTrail {
    pub query: String,
    pub job: Option<JobRecord>,
    pub refunds: Vec<RefundRecord>,
    pub events: Vec<AuditEvent>,
}

const SELECT_EVENT: &str = "SELECT seq, idem_key, at, job, body, prev_hash, hash FROM events";

pub fn audit(
    conn: &Connection,
    reference: &str,
    digests: bool,
) -> Result<Option<AuditTrail>, LedgerError> {
    if is_subscription(conn, reference)? {
        return subscription_audit(conn, reference, digests);
    }
    let job_id: Option<String> = match load_job(conn, reference)? {
        Some(_) => Some(reference.to_string()),
        None => conn
            .prepare_cached(&format!(
                "SELECT job FROM refs WHERE {} AND job IS NOT NULL LIMIT 1",
                text_is("reference", "ref_digest", digests)
            ))?
            .query_row(params![reference, key_digest(reference)], |r| r.get(0))
            .optional()?,
    };
    let (job, refunds, events) = match &job_id {
        Some(id) => {
            let mut stmt = conn.prepare_cached(&format!(
                "{SELECT_EVENT} WHERE {} ORDER BY seq",
                text_is("job", "job_digest", digests)
            ))?;
            let events = stmt
                .query_map(params![id, key_digest(id)], raw_row)?
                .map(|row| decode_row(row?))
                .collect::<Result<Vec<_>, _>>()?;
            let mut stmt =
                conn.prepare_cached("SELECT record FROM refunds WHERE job = ?1 ORDER BY refund")?;
            let refunds = stmt
                .query_map([id], |r| r.get::<_, String>(0))?
                .map(|r| Ok(serde_json::from_str(&r?)?))
                .collect::<Result<Vec<RefundRecord>, LedgerError>>()?;
            (load_job(conn, id)?, refunds, events)
        }
        None => (None, Vec::new(), events_naming(conn, reference, digests)?),
    };
    with_postings(conn, reference, (job, refunds), events)
}

fn is_subscription(conn: &Connection, reference: &str) -> Result<bool, LedgerError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM subscriptions WHERE subscription = ?1")?
        .query_row([reference], |_| Ok(()))
        .optional()?
        .is_some())
}

fn events_naming(
    conn: &Connection,
    reference: &str,
    digests: bool,
) -> Result<Vec<StoredEvent>, LedgerError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT_EVENT} WHERE seq IN (SELECT seq FROM refs WHERE {}) ORDER BY seq",
        text_is("reference", "ref_digest", digests)
    ))?;
    let rows = stmt.query_map(params![reference, key_digest(reference)], raw_row)?;
    rows.map(|row| decode_row(row?)).collect()
}

/// A subscription's trail: every event naming it (quotes, payments, periods, the jobs queued
/// on its quota, units given back, the cancellation), and the whole trail of each refund made
/// of its money.
fn subscription_audit(
    conn: &Connection,
    subscription: &str,
    digests: bool,
) -> Result<Option<AuditTrail>, LedgerError> {
    let mut events = events_naming(conn, subscription, digests)?;
    let threads = SubscriptionThreads::of(&events);
    let mut refunds = Vec::new();
    for refund in &threads.refunds {
        events.extend(events_naming(conn, refund, digests)?);
        let record: Option<String> = conn
            .prepare_cached("SELECT record FROM refunds WHERE refund = ?1")?
            .query_row([refund], |r| r.get(0))
            .optional()?;
        if let Some(record) = record {
            refunds.push(serde_json::from_str(&record)?);
        }
    }
    for notice in &threads.notices {
        events.extend(events_naming(conn, notice, digests)?);
    }
    events.sort_by_key(|e| e.seq);
    events.dedup_by_key(|e| e.seq);
    with_postings(conn, subscription, (None, refunds), events)
}

/// What a subscription's trail follows beyond the events naming it: each refund of its money
/// (to its end) and each notice sent about it (to its delivery). Shared by every store.
pub struct SubscriptionThreads {
    pub refunds: Vec<String>,
    pub notices: Vec<String>,
}

impl SubscriptionThreads {
    pub fn of(events: &[StoredEvent]) -> SubscriptionThreads {
        let mut threads = SubscriptionThreads {
            refunds: Vec::new(),
            notices: Vec::new(),
        };
        for e in events {
            match &e.event.body {
                crate::event::EventBody::SubscriptionRefundDue { refund, .. } => {
                    threads.refunds.push(refund.to_string())
                }
                crate::event::EventBody::EffectRequested { effect, .. } => {
                    threads.notices.push(effect.to_string())
                }
                _ => {}
            }
        }
        threads
    }
}

/// The trail of `events`, each with its postings.
fn with_postings(
    conn: &Connection,
    reference: &str,
    (job, refunds): (Option<JobRecord>, Vec<RefundRecord>),
    events: Vec<StoredEvent>,
) -> Result<Option<AuditTrail>, LedgerError> {
    if events.is_empty() {
        return Ok(None);
    }
    let mut trail = AuditTrail {
        query: reference.to_string(),
        job,
        refunds,
        events: Vec::with_capacity(events.len()),
    };
    let mut postings = conn
        .prepare_cached("SELECT debit, credit, amount FROM postings WHERE seq = ?1 ORDER BY n")?;
    for e in events {
        let ps = postings
            .query_map([to_sql_int(e.seq, "seq")?], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?
            .map(|r| {
                let (debit, credit, amount) = r?;
                Ok(AuditPosting {
                    debit,
                    credit,
                    amount_msat: from_sql_int(amount, "amount")?,
                })
            })
            .collect::<Result<Vec<_>, LedgerError>>()?;
        trail.events.push(AuditEvent {
            seq: e.seq,
            at: e.event.at.0,
            key: e.event.key.to_string(),
            event: e.event.body,
            postings: ps,
            hash: hex::encode(e.hash),
        });
    }
    Ok(Some(trail))
}

fn load_job(conn: &Connection, id: &str) -> Result<Option<JobRecord>, LedgerError> {
    let rec: Option<String> = conn
        .prepare_cached("SELECT record FROM jobs WHERE job = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    rec.map(|r| Ok(serde_json::from_str(&r)?)).transpose()
}

pub fn jobs_by_state(conn: &Connection, state: JobState) -> Result<Vec<JobRecord>, LedgerError> {
    let mut stmt = conn.prepare_cached("SELECT record FROM jobs WHERE state = ?1 ORDER BY job")?;
    let rows = stmt.query_map(params![state.as_str()], |r| r.get::<_, String>(0))?;
    rows.map(|r| Ok(serde_json::from_str(&r?)?)).collect()
}
