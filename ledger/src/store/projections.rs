//! Writing one transaction's events, postings, references and changed projection rows.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, OptionalExtension, Transaction};

use super::refs::event_refs;
use super::{insert_event_row, to_sql_int};
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
        let body = serde_json::to_string(&event.body)?;
        let hash = event_hash(prev, seq, event.at.0, event.key.as_str(), &body);
        let job = change.subject_job.as_ref().map(|j| j.as_str());
        let seq_i = to_sql_int(seq, "seq")?;
        let mut ins = self.tx.prepare_cached(
            "INSERT INTO events(seq, idem_key, at, type, job, body, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        insert_event_row(&mut ins, seq, event, job, &body, prev, &hash)?;
        let mut post = self.tx.prepare_cached(
            "INSERT INTO postings(seq, n, debit, credit, amount) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (n, p) in change.postings.iter().enumerate() {
            post.execute(params![
                seq_i,
                n as i64,
                p.debit.to_string(),
                p.credit.to_string(),
                to_sql_int(p.amount.as_msat(), "amount")?,
            ])?;
        }
        let mut pay = self
            .tx
            .prepare_cached("INSERT INTO payments(reference, seq) VALUES (?1, ?2)")?;
        for r in &change.payment_refs {
            pay.execute(params![r.as_str(), seq_i])?;
        }
        let mut refs = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO refs(seq, reference, job) VALUES (?1, ?2, ?3)",
        )?;
        for r in event_refs(&event.body) {
            refs.execute(params![seq_i, r, job])?;
        }
        Ok(hash)
    }

    pub fn projections(&mut self, state: &LedgerState, dirty: &Dirty) -> Result<(), LedgerError> {
        for (id, t) in &dirty.jobs {
            let j = state.job(id).expect("dirty job exists");
            let sql = if t.created {
                "INSERT INTO jobs(job, state, record, changed) VALUES (?1, ?2, ?3, ?4)"
            } else {
                "INSERT OR REPLACE INTO jobs(job, state, record, changed) VALUES (?1, ?2, ?3, ?4)"
            };
            self.tx.prepare_cached(sql)?.execute(params![
                id.as_str(),
                j.state.as_str(),
                serde_json::to_string(j)?,
                to_sql_int(t.seq, "seq")?,
            ])?;
        }
        for (id, t) in &dirty.refunds {
            let r = state.refund(id).expect("dirty refund exists");
            let sql = if t.created {
                "INSERT INTO refunds(refund, job, state, record, changed) \
                 VALUES (?1, ?2, ?3, ?4, ?5)"
            } else {
                "INSERT OR REPLACE INTO refunds(refund, job, state, record, changed) \
                 VALUES (?1, ?2, ?3, ?4, ?5)"
            };
            self.tx.prepare_cached(sql)?.execute(params![
                id.as_str(),
                r.job.as_ref().map(|j| j.as_str()),
                r.state.as_str(),
                serde_json::to_string(r)?,
                to_sql_int(t.seq, "seq")?,
            ])?;
        }
        let mut subs = self.tx.prepare_cached(
            "INSERT OR REPLACE INTO subscriptions(subscription, record) VALUES (?1, ?2)",
        )?;
        for id in &dirty.subscriptions {
            let s = state.subscription(id).expect("dirty subscription exists");
            subs.execute(params![id.as_str(), serde_json::to_string(s)?])?;
        }
        for (id, t) in &dirty.effects {
            let e = state.effect(id).expect("dirty effect exists");
            let sql = if t.created {
                "INSERT INTO effects(effect, done, record) VALUES (?1, ?2, ?3)"
            } else {
                "INSERT OR REPLACE INTO effects(effect, done, record) VALUES (?1, ?2, ?3)"
            };
            self.tx.prepare_cached(sql)?.execute(params![
                id.as_str(),
                e.outcome.is_some(),
                serde_json::to_string(e)?
            ])?;
        }
        self.balances(state, &dirty.accounts)
    }

    fn balances(
        &mut self,
        state: &LedgerState,
        accounts: &HashSet<Account>,
    ) -> Result<(), LedgerError> {
        let mut balances = self.tx.prepare_cached(
            "INSERT OR REPLACE INTO balances(account, debits, credits) VALUES (?1, ?2, ?3)",
        )?;
        for a in accounts {
            let b = state.balance(a);
            balances.execute(params![
                a.to_string(),
                to_sql_int(b.debits.as_msat(), "debits")?,
                to_sql_int(b.credits.as_msat(), "credits")?,
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
