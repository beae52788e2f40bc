//! `audit`: one job's (or subscription's, or unmatched payment's) trail, found by any reference
//! it involved, with the postings of each event. The same answers as the SQLite store's.

use paydvm_ledger::store::{
    AuditEvent, AuditPosting, AuditTrail, StoredEvent, SubscriptionThreads,
};
use paydvm_ledger::{JobRecord, RefundRecord};

use crate::client::{get, get_u64, int, Db, Param, PgError};
use crate::read::{self, stored_event, SELECT_EVENT};

fn text(s: &str) -> Param {
    Box::new(s.to_string())
}

fn events(db: &Db, filter: &str, key: &str) -> Result<Vec<StoredEvent>, PgError> {
    db.query(
        format!("{SELECT_EVENT} WHERE {filter} ORDER BY seq"),
        vec![text(key)],
    )?
    .iter()
    .map(stored_event)
    .collect()
}

fn events_naming(db: &Db, reference: &str) -> Result<Vec<StoredEvent>, PgError> {
    events(
        db,
        "seq IN (SELECT seq FROM refs WHERE reference = $1)",
        reference,
    )
}

pub fn audit(db: &Db, reference: &str) -> Result<Option<AuditTrail>, PgError> {
    let subscription = db.query_opt(
        "SELECT 1 FROM subscriptions WHERE subscription = $1",
        vec![text(reference)],
    )?;
    if subscription.is_some() {
        return subscription_audit(db, reference);
    }
    let job_id: Option<String> = match read::record::<JobRecord>(db, "jobs", "job", reference)? {
        Some(_) => Some(reference.to_string()),
        None => db
            .query_opt(
                "SELECT job FROM refs WHERE reference = $1 AND job IS NOT NULL LIMIT 1",
                vec![text(reference)],
            )?
            .map(|r| get(&r, 0))
            .transpose()?,
    };
    let Some(id) = job_id else {
        return with_postings(
            db,
            reference,
            (None, Vec::new()),
            events_naming(db, reference)?,
        );
    };
    let refunds = db
        .query(
            "SELECT record FROM refunds WHERE job = $1 ORDER BY refund",
            vec![text(&id)],
        )?
        .iter()
        .map(|r| Ok(serde_json::from_str(&get::<String>(r, 0)?)?))
        .collect::<Result<Vec<RefundRecord>, PgError>>()?;
    let job = read::record::<JobRecord>(db, "jobs", "job", &id)?.map(|(j, _)| j);
    with_postings(db, reference, (job, refunds), events(db, "job = $1", &id)?)
}

/// Every event naming the subscription, and the whole trail of each refund of its money and of
/// each notice sent about it.
fn subscription_audit(db: &Db, subscription: &str) -> Result<Option<AuditTrail>, PgError> {
    let mut events = events_naming(db, subscription)?;
    let threads = SubscriptionThreads::of(&events);
    let mut refunds = Vec::new();
    for refund in &threads.refunds {
        events.extend(events_naming(db, refund)?);
        if let Some((record, _)) = read::record(db, "refunds", "refund", refund)? {
            refunds.push(record);
        }
    }
    for notice in &threads.notices {
        events.extend(events_naming(db, notice)?);
    }
    events.sort_by_key(|e| e.seq);
    events.dedup_by_key(|e| e.seq);
    with_postings(db, subscription, (None, refunds), events)
}

fn with_postings(
    db: &Db,
    reference: &str,
    (job, refunds): (Option<JobRecord>, Vec<RefundRecord>),
    events: Vec<StoredEvent>,
) -> Result<Option<AuditTrail>, PgError> {
    if events.is_empty() {
        return Ok(None);
    }
    let seqs: Vec<i64> = events
        .iter()
        .map(|e| int(e.seq, "seq"))
        .collect::<Result<_, _>>()?;
    let rows = db.query(
        "SELECT seq, debit, credit, amount FROM postings WHERE seq = ANY($1) ORDER BY seq, n",
        vec![Box::new(seqs)],
    )?;
    let mut postings: Vec<(u64, AuditPosting)> = Vec::with_capacity(rows.len());
    for r in &rows {
        postings.push((
            get_u64(r, 0, "seq")?,
            AuditPosting {
                debit: get(r, 1)?,
                credit: get(r, 2)?,
                amount_msat: get_u64(r, 3, "amount")?,
            },
        ));
    }
    let events = events
        .into_iter()
        .map(|e| AuditEvent {
            seq: e.seq,
            at: e.event.at.0,
            key: e.event.key.to_string(),
            postings: postings
                .iter()
                .filter(|(s, _)| *s == e.seq)
                .map(|(_, p)| p.clone())
                .collect(),
            event: e.event.body,
            hash: hex::encode(e.hash),
        })
        .collect();
    Ok(Some(AuditTrail {
        query: reference.to_string(),
        job,
        refunds,
        events,
    }))
}
