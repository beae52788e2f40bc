//! The in-memory side every store shares: the derived state, the groups staged and not yet
//! written, and which records may leave memory (`Retention::OpenWork`). A store supplies the
//! I/O through [`StoreBackend`]: read single records back, write prepared groups in one
//! transaction, store a snapshot. The SQLite store and the PostgreSQL store (`paydvm-ledger-pg`)
//! are this plus their backend, so they stage, flush, roll back, trim and snapshot alike.

use std::collections::HashMap;

use crate::account::{Account, Balance};
use crate::chain::Hash;
use crate::effect::EffectRecord;
use crate::engine::{AppendOutcome, Ledger, Prepared};
use crate::error::LedgerError;
use crate::event::LedgerEvent;
use crate::footprint::footprint;
use crate::ids::{EffectId, IdemKey, JobId, PaymentRef, RefundId};
use crate::job::JobRecord;
use crate::ledger_store::{
    GroupResult, OpenReport, Recall, Retention, SnapshotStats, SnapshotUse, StoreOptions,
};
use crate::refund::RefundRecord;
use crate::snapshot::Snapshot;
use crate::state::residency::Candidates;
use crate::state::LedgerState;

use super::projections::Dirty;
use super::replay::{self, Followed, LogSource};

/// A group prepared in memory, with its events.
pub type PreparedGroup<'a> = (&'a Prepared, &'a [LedgerEvent]);

/// Names [`StoreBackend::lookup`] looks for in storage (none of them in memory): idempotency
/// keys, and the records and payment references of a [`Recall`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub keys: Vec<IdemKey>,
    pub names: Recall,
}

impl Lookup {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.names.is_empty()
    }
}

/// What [`StoreBackend::lookup`] found: names not stored are left out.
#[derive(Debug, Default)]
pub struct Found {
    pub keys: HashMap<IdemKey, u64>,
    pub refs: HashMap<PaymentRef, u64>,
    pub jobs: HashMap<JobId, JobRecord>,
    pub refunds: HashMap<RefundId, RefundRecord>,
    pub effects: HashMap<EffectId, EffectRecord>,
}

/// A store's I/O, as the shared in-memory side needs it.
pub trait StoreBackend {
    /// The seq of the event stored under `key`.
    fn key_seq(&self, key: &IdemKey) -> Result<Option<u64>, LedgerError>;
    fn job(&self, id: &JobId) -> Result<Option<JobRecord>, LedgerError>;
    fn refund(&self, id: &RefundId) -> Result<Option<RefundRecord>, LedgerError>;
    fn effect(&self, id: &EffectId) -> Result<Option<EffectRecord>, LedgerError>;
    fn balance(&self, account: &Account) -> Result<Option<Balance>, LedgerError>;
    /// The event that credited `reference`.
    fn payment_seq(&self, reference: &PaymentRef) -> Result<Option<u64>, LedgerError>;

    // The lookups below answer many names at once; a store whose reads cost a round trip
    // (PostgreSQL) answers each with one query. The defaults ask one name at a time. Names not
    // stored are left out of the answer.

    /// [`StoreBackend::key_seq`] for every key of `keys`.
    fn key_seqs(&self, keys: &[IdemKey]) -> Result<HashMap<IdemKey, u64>, LedgerError> {
        one_by_one(keys, |k| self.key_seq(k))
    }

    /// [`StoreBackend::payment_seq`] for every reference of `refs`.
    fn payment_seqs(&self, refs: &[PaymentRef]) -> Result<HashMap<PaymentRef, u64>, LedgerError> {
        one_by_one(refs, |r| self.payment_seq(r))
    }

    /// [`StoreBackend::job`] for every id of `ids`.
    fn jobs(&self, ids: &[JobId]) -> Result<HashMap<JobId, JobRecord>, LedgerError> {
        one_by_one(ids, |id| self.job(id))
    }

    /// [`StoreBackend::refund`] for every id of `ids`.
    fn refunds(&self, ids: &[RefundId]) -> Result<HashMap<RefundId, RefundRecord>, LedgerError> {
        one_by_one(ids, |id| self.refund(id))
    }

    /// [`StoreBackend::effect`] for every id of `ids`.
    fn effects(&self, ids: &[EffectId]) -> Result<HashMap<EffectId, EffectRecord>, LedgerError> {
        one_by_one(ids, |id| self.effect(id))
    }

    /// Everything of `ask` at once: what staging or a recall needs from storage. A store whose
    /// reads cost a round trip sends the queries together; the default asks one after another.
    fn lookup(&self, ask: &Lookup) -> Result<Found, LedgerError> {
        Ok(Found {
            keys: self.key_seqs(&ask.keys)?,
            refs: self.payment_seqs(&ask.names.refs)?,
            jobs: self.jobs(&ask.names.jobs)?,
            refunds: self.refunds(&ask.names.refunds)?,
            effects: self.effects(&ask.names.effects)?,
        })
    }

    /// [`StoreBackend::balance`] for every account of `accounts`.
    fn balances(&self, accounts: &[Account]) -> Result<HashMap<Account, Balance>, LedgerError> {
        one_by_one(accounts, |a| self.balance(a))
    }

    /// Write `groups` (prepared on `ledger`, in order, after the event whose hash is `head`)
    /// in one transaction; returns the new head hash and the rows changed.
    fn write(
        &mut self,
        ledger: &Ledger,
        head: Hash,
        groups: &[PreparedGroup<'_>],
    ) -> Result<(Hash, Dirty), LedgerError>;
    /// Store `s` as the newest snapshot.
    fn write_snapshot(&mut self, s: &Snapshot) -> Result<(), LedgerError>;
}

/// The batch lookups' default: `lookup` asked one name at a time, the names it finds kept.
fn one_by_one<K: Clone + Eq + std::hash::Hash, V>(
    names: &[K],
    mut lookup: impl FnMut(&K) -> Result<Option<V>, LedgerError>,
) -> Result<HashMap<K, V>, LedgerError> {
    let mut found = HashMap::new();
    for name in names {
        if let Some(value) = lookup(name)? {
            found.insert(name.clone(), value);
        }
    }
    Ok(found)
}

/// The state in memory and the groups staged, for one store.
pub struct Resident {
    ledger: Ledger,
    /// Hash of the last event written.
    head: Hash,
    /// Groups applied in memory but not yet written.
    staged: Vec<(Prepared, Vec<LedgerEvent>)>,
    options: StoreOptions,
    /// Records loaded from the store or written since memory was last trimmed (`OpenWork`).
    candidates: Candidates,
    opened: OpenReport,
    snapshots: SnapshotStats,
}

impl Resident {
    /// The state a store loaded at open (`head`: the hash of its last event).
    pub fn new(ledger: Ledger, head: Hash, opened: OpenReport, options: &StoreOptions) -> Self {
        let last_seq = match opened.snapshot {
            SnapshotUse::Loaded { seq } => seq,
            _ => 0,
        };
        Resident {
            ledger,
            head,
            staged: Vec::new(),
            options: *options,
            candidates: Candidates::default(),
            opened,
            snapshots: SnapshotStats {
                last_seq,
                ..SnapshotStats::default()
            },
        }
    }

    pub fn bounded(&self) -> bool {
        self.options.retention == Retention::OpenWork
    }

    pub fn state(&self) -> &LedgerState {
        self.ledger.state()
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    pub fn opened(&self) -> &OpenReport {
        &self.opened
    }

    pub fn snapshot_stats(&self) -> &SnapshotStats {
        &self.snapshots
    }

    /// The last event written: its seq and hash (staged groups are not counted).
    pub fn head(&self) -> (u64, Hash) {
        let staged: usize = self.staged.iter().map(|(p, _)| p.appended.len()).sum();
        (self.ledger.next_seq() - 1 - staged as u64, self.head)
    }

    pub fn staged_groups(&self) -> usize {
        self.staged.len()
    }

    pub fn writable(&self) -> Result<(), LedgerError> {
        if self.options.read_only {
            return Err(LedgerError::ReadOnly);
        }
        Ok(())
    }

    /// Applies a group in memory now and writes it with the next flush or append (group
    /// commit). A refused group changes nothing.
    pub fn stage(
        &mut self,
        io: &impl StoreBackend,
        events: &[LedgerEvent],
    ) -> Result<Vec<AppendOutcome>, LedgerError> {
        self.writable()?;
        self.load_named(io, &[events])?;
        let outcomes = self.ledger.prepare(events).map(|p| {
            let outcomes = p.outcomes.clone();
            if !p.appended.is_empty() {
                self.staged.push((p, events.to_vec()));
            }
            outcomes
        });
        self.trim();
        outcomes
    }

    /// Undoes every staged group in memory, newest first, as a failed flush would.
    pub fn discard_staged(&mut self) -> usize {
        let staged = std::mem::take(&mut self.staged);
        let count = staged.len();
        for (p, _) in staged.into_iter().rev() {
            self.ledger.rollback(p);
        }
        count
    }

    /// Writes every staged group in one transaction; on failure undoes all of them in memory.
    pub fn flush(&mut self, io: &mut impl StoreBackend) -> Result<usize, LedgerError> {
        let count = self.staged.len();
        if count > 0 {
            let written = self.write_with_staged(io, Vec::new());
            self.after_write(io);
            written?;
        }
        Ok(count)
    }

    /// Group commit: each group accepted or refused on its own, the accepted ones written in
    /// one transaction after anything staged.
    pub fn append_batch(
        &mut self,
        io: &mut impl StoreBackend,
        groups: &[&[LedgerEvent]],
    ) -> Result<Vec<GroupResult>, LedgerError> {
        self.writable()?;
        self.load_named(io, groups)?;
        let mut results = Vec::with_capacity(groups.len());
        let mut prepared: Vec<(Prepared, &[LedgerEvent])> = Vec::new();
        for &events in groups {
            match self.ledger.prepare(events) {
                Ok(p) => {
                    results.push(Ok(p.outcomes.clone()));
                    prepared.push((p, events));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if prepared.iter().all(|(p, _)| p.appended.is_empty()) && self.staged.is_empty() {
            self.trim();
            return Ok(results);
        }
        let written = self.write_with_staged(io, prepared);
        self.after_write(io);
        written?;
        Ok(results)
    }

    /// Writes the staged groups, then `fresh` (prepared after them), in one transaction; on
    /// failure undoes all of them in memory, newest first.
    fn write_with_staged(
        &mut self,
        io: &mut impl StoreBackend,
        fresh: Vec<(Prepared, &[LedgerEvent])>,
    ) -> Result<(), LedgerError> {
        let staged = std::mem::take(&mut self.staged);
        let written = {
            let all: Vec<PreparedGroup<'_>> = staged
                .iter()
                .map(|(p, events)| (p, events.as_slice()))
                .chain(fresh.iter().map(|(p, events)| (p, *events)))
                .collect();
            io.write(&self.ledger, self.head, &all)
        };
        match written {
            Ok((head, dirty)) => {
                self.head = head;
                if self.bounded() {
                    let c = dirty.candidates();
                    self.candidates.jobs.extend(c.jobs);
                    self.candidates.refunds.extend(c.refunds);
                    self.candidates.effects.extend(c.effects);
                }
                Ok(())
            }
            Err(e) => {
                for (p, _) in fresh.into_iter().rev() {
                    self.ledger.rollback(p);
                }
                for (p, _) in staged.into_iter().rev() {
                    self.ledger.rollback(p);
                }
                Err(e)
            }
        }
    }

    /// With `OpenWork`: before planning, load every record the groups name that is not in
    /// memory (and the keys and payment references already stored), so the plan answers as if
    /// the whole history were in memory.
    fn load_named(
        &mut self,
        io: &impl StoreBackend,
        groups: &[&[LedgerEvent]],
    ) -> Result<(), LedgerError> {
        if !self.bounded() {
            return Ok(());
        }
        let mut names = Recall::default();
        let mut keys = Vec::new();
        for event in groups.iter().flat_map(|g| g.iter()) {
            if self.ledger.seq_of_key(&event.key).is_none() {
                keys.push(event.key.clone());
            }
            let fp = footprint(&event.body);
            names.jobs.extend(fp.jobs.iter().map(|(j, _)| (*j).clone()));
            names
                .refunds
                .extend(fp.refunds.iter().map(|(r, _)| (*r).clone()));
            names
                .effects
                .extend(fp.effects.iter().map(|(e, _)| (*e).clone()));
            names
                .refs
                .extend(fp.payment_refs.iter().map(|r| (*r).clone()));
        }
        // One lookup for the whole batch: with a server, one round trip instead of one per event
        // and per kind of record.
        self.load_records(io, dedup(keys), names)
    }

    /// With `OpenWork`: bring the named records back into memory (a refund with its job), and
    /// note which named payment references are credited; they leave again with the next trim.
    pub fn recall(&mut self, io: &impl StoreBackend, names: &Recall) -> Result<(), LedgerError> {
        if !self.bounded() {
            return Ok(());
        }
        self.load_records(io, Vec::new(), names.clone())
    }

    /// Loads what `names` name and memory lacks, and notes the stored seqs of `keys` (keys
    /// not in memory), in one [`StoreBackend::lookup`]; then the jobs of named refunds that
    /// are still missing (a second lookup, only then).
    fn load_records(
        &mut self,
        io: &impl StoreBackend,
        keys: Vec<IdemKey>,
        names: Recall,
    ) -> Result<(), LedgerError> {
        let refunds = dedup(names.refunds);
        let ask = Lookup {
            keys,
            names: Recall {
                refs: self.missing(dedup(names.refs), |s, r| s.payment_ref_seq(r).is_some()),
                jobs: self.missing(dedup(names.jobs), |s, id| s.job(id).is_some()),
                refunds: self.missing(refunds.clone(), |s, id| s.refund(id).is_some()),
                effects: self.missing(dedup(names.effects), |s, id| s.effect(id).is_some()),
            },
        };
        if !ask.is_empty() {
            let found = io.lookup(&ask)?;
            self.load_found(io, &ask, found)?;
        }
        let refund_jobs = refunds
            .iter()
            .filter_map(|id| self.state().refund(id).and_then(|r| r.job.clone()))
            .collect();
        let missing = self.missing(dedup(refund_jobs), |s, id| s.job(id).is_some());
        if !missing.is_empty() {
            let jobs = io.jobs(&missing)?;
            let ask = Lookup {
                keys: Vec::new(),
                names: Recall {
                    jobs: missing,
                    ..Recall::default()
                },
            };
            let found = Found {
                jobs,
                ..Found::default()
            };
            self.load_found(io, &ask, found)?;
        }
        Ok(())
    }

    /// Puts what a lookup found into memory (each record with its account's balance).
    fn load_found(
        &mut self,
        io: &impl StoreBackend,
        ask: &Lookup,
        mut found: Found,
    ) -> Result<(), LedgerError> {
        for (key, seq) in found.keys {
            self.ledger.note_key(key, seq);
        }
        for id in &ask.names.refunds {
            if let Some(record) = found.refunds.remove(id) {
                let account = io.balance(&Account::Refund(id.clone()))?;
                self.ledger.state_mut().load_refund(record, account);
                self.candidates.refunds.insert(id.clone());
            }
        }
        for id in &ask.names.jobs {
            if let Some(record) = found.jobs.remove(id) {
                let account = io.balance(&Account::Job(id.clone()))?;
                self.ledger.state_mut().load_job(record, account);
                self.candidates.jobs.insert(id.clone());
            }
        }
        for id in &ask.names.effects {
            if let Some(e) = found.effects.remove(id) {
                self.ledger.state_mut().load_effect(e);
                self.candidates.effects.insert(id.clone());
            }
        }
        for (r, seq) in found.refs {
            self.ledger.state_mut().note_payment_ref(r, seq);
        }
        Ok(())
    }

    /// The names of `names` that are not in memory, in order.
    fn missing<T>(&self, names: Vec<T>, held: impl Fn(&LedgerState, &T) -> bool) -> Vec<T> {
        names
            .into_iter()
            .filter(|n| !held(self.state(), n))
            .collect()
    }

    /// With `OpenWork` and nothing staged: drop the records that ended, and the keys and
    /// payment references (stored now, looked up there).
    fn trim(&mut self) {
        if !self.bounded() || !self.staged.is_empty() {
            return;
        }
        let candidates = std::mem::take(&mut self.candidates);
        self.ledger.state_mut().evict(&candidates, &|_| false);
        self.ledger.forget_history();
    }

    fn after_write(&mut self, io: &mut impl StoreBackend) {
        self.trim();
        let every = self.options.snapshot_every;
        if every > 0 && self.head().0 >= self.snapshots.last_seq.saturating_add(every) {
            self.snapshot_quietly(io);
        }
    }

    /// A snapshot whose failure is counted, not returned: the events are stored already, and
    /// the next snapshot tries again.
    pub fn snapshot_quietly(&mut self, io: &mut impl StoreBackend) {
        if let Err(e) = self.write_snapshot(io) {
            self.snapshots.write_failures += 1;
            self.snapshots.last_failure = Some(e.to_string());
        }
    }

    /// Write a snapshot of the open work as of the head (`OpenWork`, writable, nothing staged).
    pub fn write_snapshot(
        &mut self,
        io: &mut impl StoreBackend,
    ) -> Result<Option<u64>, LedgerError> {
        if !self.bounded() {
            return Ok(None);
        }
        self.writable()?;
        if !self.staged.is_empty() {
            return Err(LedgerError::Staged(self.staged.len()));
        }
        let (seq, hash) = self.head();
        if seq == 0 || seq == self.snapshots.last_seq {
            return Ok(None);
        }
        self.trim();
        let s = crate::snapshot::encode(self.state(), seq, hash)?;
        io.write_snapshot(&s)?;
        self.snapshots.written += 1;
        self.snapshots.last_seq = seq;
        Ok(Some(seq))
    }

    /// Takes in the events another writer on the same database appended after this store's
    /// head (nothing may be staged: a flush that found the head moved has undone its groups).
    /// `snapshots`: the schema has them (see [`replay::open_work`]).
    pub fn follow(
        &mut self,
        src: &impl LogSource,
        snapshots: bool,
    ) -> Result<Followed, LedgerError> {
        if !self.staged.is_empty() {
            return Err(LedgerError::Staged(self.staged.len()));
        }
        let bounded = self.bounded();
        let at = self.head();
        let (head, followed) = replay::follow(src, &mut self.ledger, at, bounded, snapshots)?;
        self.head = head;
        Ok(followed)
    }

    /// Drop what is staged; with `OpenWork` on a writable store, write a snapshot.
    pub fn close(&mut self, io: &mut impl StoreBackend) -> Result<(), LedgerError> {
        self.discard_staged();
        if self.bounded() && !self.options.read_only {
            self.write_snapshot(io)?;
        }
        Ok(())
    }
}

fn dedup<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort_unstable();
    v.dedup();
    v
}
