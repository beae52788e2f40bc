//! Writing one transaction's events, postings, references and changed projection rows.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, OptionalExtension, Transaction};

use super::refs::event_refs;
use super::{insert_event_row, key_digest, to_sql_int};
use crate::account::Account;
use crate::chain::{event_hash, Hash};
use crate::error::LedgerError;
use crate::event::{EventBody, LedgerEvent};
use crate::footprint::{footprint, Use};
use crate::ids::{EffectId, JobId, RefundId, SubscriptionId};
use crate::state::residency::Candidates;
use crate::state::{Change, LedgerState};

/// When a row was last changed in this transaction, and whether this transaction created it.
#[derive(Debug, Clone, Copy)]
struct Touch {
    seq: u64,
    created: bool,
}

fn touch<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Touch>, key: K, seq: u64, created: bool) {
    let t = map.entry(key).or_insert(Touch { seq, created });
    t.seq = seq;
    t.created |= created;
}

/// The projection rows one transaction changed; each is written once, with its final value.
/// A row the transaction created is inserted, never replaced: if it existed after all (a record
/// the store failed to load before planning), the write fails instead of overwriting history.
#[derive(Default)]
pub struct Dirty {
    jobs: HashMap<JobId, Touch>,
    refunds: HashMap<RefundId, Touch>,
    subscriptions: HashSet<SubscriptionId>,
    effects: HashMap<EffectId, Touch>,
    accounts: HashSet<Account>,
}

impl Dirty {
    pub fn note(&mut self, seq: u64, body: &EventBody, change: &Change) {
        let fp = footprint(body);
        if let Some(j) = &change.job {
            let created = matches!(body, EventBody::JobReceived { .. });
            touch(&mut self.jobs, j.job.clone(), seq, created);
        }
        if let Some(r) = &change.refund {
            let created = fp.refunds.contains(&(&r.refund, Use::Create));
            touch(&mut self.refunds, r.refund.clone(), seq, created);
        }
        if let Some(s) = &change.subscription {
            self.subscriptions.insert(s.subscription.clone());
        }
        if let Some(e) = &change.effect {
            let created = matches!(body, EventBody::EffectRequested { .. });
            touch(&mut self.effects, e.effect.clone(), seq, created);
        }
        for (a, _) in &change.balances {
            self.accounts.insert(a.clone());
        }
    }

    /// The records written, as candidates to leave memory.
    pub fn candidates(&self) -> Candidates {
        Candidates {
            jobs: self.jobs.keys().cloned().collect(),
            refunds: self.refunds.keys().cloned().collect(),
            effects: self.effects.keys().cloned().collect(),
        }
    }
}

/// What one event stores besides its row: every store writes these, whatever its SQL.
#[derive(Debug, Clone)]
pub struct EventRows {
    /// The canonical JSON of the body (what the hash covers).
    pub body: String,
    pub hash: Hash,
    /// The job the event concerns (`events.job`, `refs.job`).
    pub job: Option<String>,
    /// (debit, credit, amount in msat), numbered from 0 in this order.
    pub postings: Vec<(String, String, u64)>,
    /// Payment references credited by the event.
    pub payments: Vec<String>,
    /// Outside references that find the event (deduplicated).
    pub refs: Vec<String>,
}

impl EventRows {
    pub fn new(
        seq: u64,
        prev: &Hash,
        event: &LedgerEvent,
        change: &Change,
    ) -> Result<Self, LedgerError> {
        let body = serde_json::to_string(&event.body)?;
        let hash = event_hash(prev, seq, event.at.0, event.key.as_str(), &body);
        let mut refs: Vec<String> = event_refs(&event.body)
            .into_iter()
            .map(str::to_string)
            .collect();
        refs.sort();
        refs.dedup();
        Ok(EventRows {
            job: change.subject_job.as_ref().map(|j| j.to_string()),
            postings: posting_rows(change),
            payments: change.payment_refs.iter().map(|r| r.to_string()).collect(),
            refs,
            body,
            hash,
        })
    }
}

/// A change's postings as stored: (debit, credit, amount in msat), in order.
pub fn posting_rows(change: &Change) -> Vec<(String, String, u64)> {
    change
        .postings
        .iter()
        .map(|p| {
            (
                p.debit.to_string(),
                p.credit.to_string(),
                p.amount.as_msat(),
            )
        })
        .collect()
}

/// One projection row to write: its key, searchable columns and record JSON.
#[derive(Debug, Clone)]
pub struct ProjectionRow {
    pub key: String,
    /// A job's or refund's state name (empty for other tables).
    pub state: String,
    /// A refund's job.
    pub job: Option<String>,
    /// An effect's outcome is recorded.
    pub done: bool,
    pub record: String,
    /// The seq of the last event that changed the row in this transaction.
    pub changed: u64,
    /// Created by this transaction: inserted, never replacing a row that exists.
    pub created: bool,
}

/// Every projection row one transaction changed, with its final value.
#[derive(Debug, Clone, Default)]
pub struct ProjectionRows {
    pub jobs: Vec<ProjectionRow>,
    pub refunds: Vec<ProjectionRow>,
    pub subscriptions: Vec<ProjectionRow>,
    pub effects: Vec<ProjectionRow>,
    /// (account, debits, credits) in msat.
    pub balances: Vec<(String, u64, u64)>,
}

fn row(key: &str, record: String, t: Touch) -> ProjectionRow {
    ProjectionRow {
        key: key.to_string(),
        state: String::new(),
        job: None,
        done: false,
        record,
        changed: t.seq,
        created: t.created,
    }
}

impl Dirty {
    /// The rows to write for `state`, the state after the transaction's events.
    pub fn rows(&self, state: &LedgerState) -> Result<ProjectionRows, LedgerError> {
        let mut out = ProjectionRows::default();
        for (id, t) in &self.jobs {
            let j = state.job(id).expect("dirty job exists");
            let mut r = row(id.as_str(), serde_json::to_string(j)?, *t);
            r.state = j.state.as_str().to_string();
            out.jobs.push(r);
        }
        for (id, t) in &self.refunds {
            let rf = state.refund(id).expect("dirty refund exists");
            let mut r = row(id.as_str(), serde_json::to_string(rf)?, *t);
            r.state = rf.state.as_str().to_string();
            r.job = rf.job.as_ref().map(|j| j.to_string());
            out.refunds.push(r);
        }
        let untouched = Touch {
            seq: 0,
            created: false,
        };
        for id in &self.subscriptions {
            let s = state.subscription(id).expect("dirty subscription exists");
            out.subscriptions
                .push(row(id.as_str(), serde_json::to_string(s)?, untouched));
        }
        for (id, t) in &self.effects {
            let e = state.effect(id).expect("dirty effect exists");
            let mut r = row(id.as_str(), serde_json::to_string(e)?, *t);
            r.done = e.outcome.is_some();
            out.effects.push(r);
        }
        for a in &self.accounts {
            let b = state.balance(a);
            out.balances
                .push((a.to_string(), b.debits.as_msat(), b.credits.as_msat()));
        }
        Ok(out)
    }
}

pub struct Writer<'t> {
    tx: &'t Transaction<'t>,
}

impl<'t> Writer<'t> {
    pub fn new(tx: &'t Transaction<'t>) -> Result<Self, LedgerError> {
        Ok(Writer { tx })
    }

    /// Store one event with its postings and references; returns its hash.
    pub fn event(
        &mut self,
        seq: u64,
        prev: &Hash,
        event: &LedgerEvent,
        change: &Change,
    ) -> Result<Hash, LedgerError> {
        let rows = EventRows::new(seq, prev, event, change)?;
        let job = rows.job.as_deref();
        let seq_i = to_sql_int(seq, "seq")?;
        let mut ins = self.tx.prepare_cached(
            "INSERT INTO events(seq, idem_key, at, type, job, body, prev_hash, hash, key_digest, \
             job_digest) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        insert_event_row(&mut ins, seq, event, job, &rows.body, prev, &rows.hash)?;
        let mut post = self.tx.prepare_cached(
            "INSERT INTO postings(seq, n, debit, credit, amount) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (n, (debit, credit, amount)) in rows.postings.iter().enumerate() {
            post.execute(params![
                seq_i,
                n as i64,
                debit,
                credit,
                to_sql_int(*amount, "amount")?
            ])?;
        }
        let mut pay = self
            .tx
            .prepare_cached("INSERT INTO payments(reference, seq) VALUES (?1, ?2)")?;
        for r in &rows.payments {
            pay.execute(params![r, seq_i])?;
        }
        let mut refs = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO refs(seq, reference, job, ref_digest) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for r in &rows.refs {
            refs.execute(params![seq_i, r, job, key_digest(r)])?;
        }
        Ok(rows.hash)
    }

    pub fn projections(&mut self, state: &LedgerState, dirty: &Dirty) -> Result<(), LedgerError> {
        let rows = dirty.rows(state)?;
        for row in &rows.jobs {
            let sql = if row.created {
                "INSERT INTO jobs(job, state, record, changed) VALUES (?1, ?2, ?3, ?4)"
            } else {
                "INSERT INTO jobs(job, state, record, changed) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(job) DO UPDATE \
                 SET state = excluded.state, record = excluded.record, changed = excluded.changed"
            };
            self.tx.prepare_cached(sql)?.execute(params![
                row.key,
                row.state,
                row.record,
                to_sql_int(row.changed, "seq")?,
            ])?;
        }
        for row in &rows.refunds {
            let sql = if row.created {
                "INSERT INTO refunds(refund, job, state, record, changed) \
                 VALUES (?1, ?2, ?3, ?4, ?5)"
            } else {
                "INSERT INTO refunds(refund, job, state, record, changed) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT(refund) DO UPDATE SET job = excluded.job, state = excluded.state, \
                 record = excluded.record, changed = excluded.changed"
            };
            self.tx.prepare_cached(sql)?.execute(params![
                row.key,
                row.job,
                row.state,
                row.record,
                to_sql_int(row.changed, "seq")?,
            ])?;
        }
        let mut subs = self.tx.prepare_cached(
            "INSERT OR REPLACE INTO subscriptions(subscription, record) VALUES (?1, ?2)",
        )?;
        for row in &rows.subscriptions {
            subs.execute(params![row.key, row.record])?;
        }
        for row in &rows.effects {
            let sql = if row.created {
                "INSERT INTO effects(effect, done, record) VALUES (?1, ?2, ?3)"
            } else {
                "INSERT INTO effects(effect, done, record) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(effect) DO UPDATE SET done = excluded.done, record = excluded.record"
            };
            self.tx
                .prepare_cached(sql)?
                .execute(params![row.key, row.done, row.record])?;
        }
        let mut balances = self.tx.prepare_cached(
            "INSERT OR REPLACE INTO balances(account, debits, credits) VALUES (?1, ?2, ?3)",
        )?;
        for (account, debits, credits) in &rows.balances {
            balances.execute(params![
                account,
                to_sql_int(*debits, "debits")?,
                to_sql_int(*credits, "credits")?,
            ])?;
        }
        Ok(())
    }

    /// Rewrite the rows that a ledger written before held sources and refund assets were
    /// tracked stored without them: replay derives them from the old events, so those rows
    /// would no longer match the replayed state. Only records that carry the derived fields are
    /// compared, so opening a ledger of finished jobs reads no projection row.
    pub fn refresh_derived(&mut self, state: &LedgerState) -> Result<usize, LedgerError> {
        let mut rewritten = 0;
        let mut read_job = self
            .tx
            .prepare_cached("SELECT record FROM jobs WHERE job = ?1")?;
        let mut write_job = self
            .tx
            .prepare_cached("UPDATE jobs SET state = ?2, record = ?3 WHERE job = ?1")?;
        for j in state
            .jobs()
            .filter(|j| !j.held_assets.is_empty() || !j.held_credit.is_zero())
        {
            let stored: Option<String> = read_job
                .query_row([j.job.as_str()], |r| r.get(0))
                .optional()?;
            let now = serde_json::to_string(j)?;
            if stored.is_some() && stored.as_deref() != Some(now.as_str()) {
                write_job.execute(params![j.job.as_str(), j.state.as_str(), now])?;
                rewritten += 1;
            }
        }
        let mut read_refund = self
            .tx
            .prepare_cached("SELECT record FROM refunds WHERE refund = ?1")?;
        let mut write_refund = self
            .tx
            .prepare_cached("UPDATE refunds SET state = ?2, record = ?3 WHERE refund = ?1")?;
        for r in state.refunds().filter(|r| r.asset.is_some()) {
            let stored: Option<String> = read_refund
                .query_row([r.refund.as_str()], |row| row.get(0))
                .optional()?;
            let now = serde_json::to_string(r)?;
            if stored.is_some() && stored.as_deref() != Some(now.as_str()) {
                write_refund.execute(params![r.refund.as_str(), r.state.as_str(), now])?;
                rewritten += 1;
            }
        }
        Ok(rewritten)
    }

    pub fn head(&mut self, seq: u64, hash: &Hash) -> Result<(), LedgerError> {
        let mut stmt = self
            .tx
            .prepare_cached("INSERT OR REPLACE INTO meta(key, value) VALUES ('head', ?1)")?;
        stmt.execute([format!("{seq}:{}", hex::encode(hash))])?;
        Ok(())
    }
}
