//! Writing one transaction's events, postings, references and changed projection rows.

use std::collections::HashSet;

use rusqlite::{params, OptionalExtension, Transaction};

use super::chain::{event_hash, Hash};
use super::refs::event_refs;
use super::{insert_event_row, to_sql_int};
use crate::account::Account;
use crate::error::LedgerError;
use crate::event::LedgerEvent;
use crate::ids::{EffectId, JobId, RefundId, SubscriptionId};
use crate::state::{Change, LedgerState};

/// The projection rows one transaction changed; each is written once, with its final value.
#[derive(Default)]
pub struct Dirty {
    jobs: HashSet<JobId>,
    refunds: HashSet<RefundId>,
    subscriptions: HashSet<SubscriptionId>,
    effects: HashSet<EffectId>,
    accounts: HashSet<Account>,
}

impl Dirty {
    pub fn note(&mut self, change: &Change) {
        if let Some(j) = &change.job {
            self.jobs.insert(j.job.clone());
        }
        if let Some(r) = &change.refund {
            self.refunds.insert(r.refund.clone());
        }
        if let Some(s) = &change.subscription {
            self.subscriptions.insert(s.subscription.clone());
        }
        if let Some(e) = &change.effect {
            self.effects.insert(e.effect.clone());
        }
        for (a, _) in &change.balances {
            self.accounts.insert(a.clone());
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
        let mut jobs = self.tx.prepare_cached(
            "INSERT OR REPLACE INTO jobs(job, state, record) VALUES (?1, ?2, ?3)",
        )?;
        for id in &dirty.jobs {
            let j = state.job(id).expect("dirty job exists");
            jobs.execute(params![
                id.as_str(),
                j.state.as_str(),
                serde_json::to_string(j)?
            ])?;
        }
        let mut refunds = self.tx.prepare_cached(
            "INSERT OR REPLACE INTO refunds(refund, job, state, record) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for id in &dirty.refunds {
            let r = state.refund(id).expect("dirty refund exists");
            refunds.execute(params![
                id.as_str(),
                r.job.as_ref().map(|j| j.as_str()),
                r.state.as_str(),
                serde_json::to_string(r)?
            ])?;
        }
        let mut subs = self.tx.prepare_cached(
            "INSERT OR REPLACE INTO subscriptions(subscription, record) VALUES (?1, ?2)",
        )?;
        for id in &dirty.subscriptions {
            let s = state.subscription(id).expect("dirty subscription exists");
            subs.execute(params![id.as_str(), serde_json::to_string(s)?])?;
        }
        let mut effects = self.tx.prepare_cached(
            "INSERT OR REPLACE INTO effects(effect, done, record) VALUES (?1, ?2, ?3)",
        )?;
        for id in &dirty.effects {
            let e = state.effect(id).expect("dirty effect exists");
            effects.execute(params![
                id.as_str(),
                e.outcome.is_some(),
                serde_json::to_string(e)?
            ])?;
        }
        let mut balances = self.tx.prepare_cached(
            "INSERT OR REPLACE INTO balances(account, debits, credits) VALUES (?1, ?2, ?3)",
        )?;
        for a in &dirty.accounts {
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
        let mut dirty = Dirty::default();
        let mut read_job = self
            .tx
            .prepare_cached("SELECT record FROM jobs WHERE job = ?1")?;
        for j in state
            .jobs()
            .filter(|j| !j.held_assets.is_empty() || !j.held_credit.is_zero())
        {
            let stored: Option<String> = read_job
                .query_row([j.job.as_str()], |r| r.get(0))
                .optional()?;
            if stored.as_deref() != Some(serde_json::to_string(j)?.as_str()) {
                dirty.jobs.insert(j.job.clone());
            }
        }
        let mut read_refund = self
            .tx
            .prepare_cached("SELECT record FROM refunds WHERE refund = ?1")?;
        for r in state.refunds().filter(|r| r.asset.is_some()) {
            let stored: Option<String> = read_refund
                .query_row([r.refund.as_str()], |row| row.get(0))
                .optional()?;
            if stored.as_deref() != Some(serde_json::to_string(r)?.as_str()) {
                dirty.refunds.insert(r.refund.clone());
            }
        }
        let rewritten = dirty.jobs.len() + dirty.refunds.len();
        if rewritten > 0 {
            self.projections(state, &dirty)?;
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
