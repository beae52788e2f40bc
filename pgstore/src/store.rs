//! The store: derived state in memory, staged groups, and the writes and reads that keep it in
//! step with the database. The same behaviour as the SQLite store (`paydvm_ledger::store`),
//! over the PostgreSQL rows of this crate.

use paydvm_ledger::account::Account;
use paydvm_ledger::chain::Hash;
use paydvm_ledger::footprint::footprint;
use paydvm_ledger::state::residency::Candidates;
use paydvm_ledger::store::{Dirty, EventRows};
use paydvm_ledger::{
    AppendOutcome, JobId, Ledger, LedgerError, LedgerEvent, LedgerState, OpenReport, Prepared,
    Recall, RefundId, Retention, SnapshotStats, SnapshotUse, StoreOptions,
};

use crate::client::{Db, PgError};
use crate::location::PgLocation;
use crate::write::{Batch, EventWrite};
use crate::{load, read, schema};

pub struct PgStore {
    pub(crate) db: Db,
    ledger: Ledger,
    /// Hash of the last event written.
    head: Hash,
    staged: Vec<(Prepared, Vec<LedgerEvent>)>,
    pub(crate) options: StoreOptions,
    candidates: Candidates,
    opened: OpenReport,
    snapshots: SnapshotStats,
}

impl PgStore {
    /// Connect, create the tables in an empty database (unless read-only) and load the state.
    pub fn open_with(location: &str, options: &StoreOptions) -> Result<PgStore, LedgerError> {
        let location = PgLocation::parse(location).map_err(PgError::from)?;
        let db = Db::connect(&location, options.durability)?;
        if options.read_only {
            if schema::version(&db)? != schema::SCHEMA_VERSION {
                return Err(LedgerError::NotALedger(
                    location.to_string(),
                    schema::version(&db)?,
                ));
            }
        } else {
            schema::migrate(&db)?;
        }
        let loaded = match options.retention {
            Retention::Everything => load::everything(&db)?,
            Retention::OpenWork => load::open_work(&db)?,
        };
        let last_seq = match loaded.report.snapshot {
            SnapshotUse::Loaded { seq } => seq,
            _ => 0,
        };
        let mut store = PgStore {
            db,
            ledger: loaded.ledger,
            head: loaded.head,
            staged: Vec::new(),
            options: *options,
            candidates: Candidates::default(),
            opened: loaded.report,
            snapshots: SnapshotStats {
                last_seq,
                ..SnapshotStats::default()
            },
        };
        if !options.read_only && store.snapshots.last_seq < store.head().0 {
            store.snapshot_quietly();
        }
        Ok(store)
    }

    pub(crate) fn bounded(&self) -> bool {
        self.options.retention == Retention::OpenWork
    }

    pub fn state(&self) -> &LedgerState {
        self.ledger.state()
    }

    pub fn opened(&self) -> &OpenReport {
        &self.opened
    }

    pub fn snapshot_stats(&self) -> &SnapshotStats {
        &self.snapshots
    }

    pub(crate) fn seq_in_memory(&self, key: &paydvm_ledger::IdemKey) -> Option<u64> {
        self.ledger.seq_of_key(key)
    }

    pub fn head(&self) -> (u64, Hash) {
        let staged: usize = self.staged.iter().map(|(p, _)| p.appended.len()).sum();
        (self.ledger.next_seq() - 1 - staged as u64, self.head)
    }

    fn writable(&self) -> Result<(), LedgerError> {
        if self.options.read_only {
            return Err(LedgerError::ReadOnly);
        }
        Ok(())
    }

    pub fn stage(&mut self, events: &[LedgerEvent]) -> Result<Vec<AppendOutcome>, LedgerError> {
        self.writable()?;
        self.load_named(&[events])?;
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

    pub fn staged_groups(&self) -> usize {
        self.staged.len()
    }

    pub fn flush(&mut self) -> Result<usize, LedgerError> {
        let count = self.staged.len();
        if count > 0 {
            let written = self.write_with_staged(Vec::new());
            self.after_write();
            written?;
        }
        Ok(count)
    }

    pub fn append_batch(
        &mut self,
        groups: &[&[LedgerEvent]],
    ) -> Result<Vec<paydvm_ledger::ledger_store::GroupResult>, LedgerError> {
        self.writable()?;
        self.load_named(groups)?;
        let mut results = Vec::with_capacity(groups.len());
        let mut prepared = Vec::new();
        for &events in groups {
            match self.ledger.prepare(events) {
                Ok(p) => {
                    results.push(Ok(p.outcomes.clone()));
                    prepared.push((p, events.to_vec()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if prepared.iter().all(|(p, _)| p.appended.is_empty()) && self.staged.is_empty() {
            self.trim();
            return Ok(results);
        }
        let written = self.write_with_staged(prepared);
        self.after_write();
        written?;
        Ok(results)
    }

    /// Writes the staged groups then `fresh` in one transaction; on failure undoes all of them
    /// in memory, newest first.
    fn write_with_staged(
        &mut self,
        fresh: Vec<(Prepared, Vec<LedgerEvent>)>,
    ) -> Result<(), LedgerError> {
        let mut all = std::mem::take(&mut self.staged);
        all.extend(fresh);
        match self.write(&all) {
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
                for (p, _) in all.into_iter().rev() {
                    self.ledger.rollback(p);
                }
                Err(e)
            }
        }
    }

    fn write(
        &mut self,
        prepared: &[(Prepared, Vec<LedgerEvent>)],
    ) -> Result<(Hash, Dirty), LedgerError> {
        // Everything is in `prepared` now (the staged groups were taken): the head before it.
        let from = (self.ledger.next_seq() - 1 - appended(prepared), self.head);
        let mut head = self.head;
        let mut dirty = Dirty::default();
        let mut events = Vec::new();
        for (p, group) in prepared {
            let mut appended = p.appended.iter();
            for (event, outcome) in group.iter().zip(&p.outcomes) {
                if let AppendOutcome::Appended { seq } = outcome {
                    let (_, change) = appended.next().expect("one change per appended event");
                    let rows = EventRows::new(*seq, &head, event, change)?;
                    head = rows.hash;
                    dirty.note(*seq, &event.body, change);
                    events.push(EventWrite::new(*seq, event, rows));
                }
            }
        }
        let batch = Batch {
            from,
            to: (self.ledger.next_seq() - 1, head),
            events,
            projections: dirty.rows(self.ledger.state())?,
        };
        self.db.run(move |pool| crate::write::write(pool, batch))?;
        Ok((head, dirty))
    }

    fn load_named(&mut self, groups: &[&[LedgerEvent]]) -> Result<(), LedgerError> {
        if !self.bounded() {
            return Ok(());
        }
        let mut names = Recall::default();
        for event in groups.iter().flat_map(|g| g.iter()) {
            if self.ledger.seq_of_key(&event.key).is_none() {
                if let Some(seq) = read::key_seq(&self.db, &event.key)? {
                    self.ledger.note_key(event.key.clone(), seq);
                }
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
        self.load_records(names)
    }

    pub fn recall(&mut self, names: &Recall) -> Result<(), LedgerError> {
        if !self.bounded() {
            return Ok(());
        }
        self.load_records(names.clone())
    }

    fn load_records(&mut self, names: Recall) -> Result<(), LedgerError> {
        let Recall {
            mut jobs,
            refunds,
            effects,
            refs,
        } = names;
        for id in dedup(refunds) {
            self.load_refund(&id)?;
            if let Some(job) = self.state().refund(&id).and_then(|r| r.job.clone()) {
                jobs.push(job);
            }
        }
        for id in dedup(jobs) {
            self.load_job(&id)?;
        }
        for id in dedup(effects) {
            if self.state().effect(&id).is_none() {
                if let Some(e) = read::effect(&self.db, &id)? {
                    self.ledger.state_mut().load_effect(e);
                    self.candidates.effects.insert(id);
                }
            }
        }
        for r in dedup(refs) {
            if self.state().payment_ref_seq(&r).is_none() {
                if let Some(seq) = read::payment_seq(&self.db, &r)? {
                    self.ledger.state_mut().note_payment_ref(r, seq);
                }
            }
        }
        Ok(())
    }

    fn load_job(&mut self, id: &JobId) -> Result<(), LedgerError> {
        if self.state().job(id).is_some() {
            return Ok(());
        }
        if let Some((record, _)) = read::job(&self.db, id)? {
            let account = read::balance(&self.db, &Account::Job(id.clone()))?;
            self.ledger.state_mut().load_job(record, account);
            self.candidates.jobs.insert(id.clone());
        }
        Ok(())
    }

    fn load_refund(&mut self, id: &RefundId) -> Result<(), LedgerError> {
        if self.state().refund(id).is_some() {
            return Ok(());
        }
        if let Some((record, _)) = read::refund(&self.db, id)? {
            let account = read::balance(&self.db, &Account::Refund(id.clone()))?;
            self.ledger.state_mut().load_refund(record, account);
            self.candidates.refunds.insert(id.clone());
        }
        Ok(())
    }

    fn trim(&mut self) {
        if !self.bounded() || !self.staged.is_empty() {
            return;
        }
        let candidates = std::mem::take(&mut self.candidates);
        self.ledger.state_mut().evict(&candidates, &|_| false);
        self.ledger.forget_history();
    }

    fn after_write(&mut self) {
        self.trim();
        let every = self.options.snapshot_every;
        if every > 0 && self.head().0 >= self.snapshots.last_seq.saturating_add(every) {
            self.snapshot_quietly();
        }
    }

    fn snapshot_quietly(&mut self) {
        if let Err(e) = self.write_snapshot() {
            self.snapshots.write_failures += 1;
            self.snapshots.last_failure = Some(e.to_string());
        }
    }

    pub fn write_snapshot(&mut self) -> Result<Option<u64>, LedgerError> {
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
        let s = paydvm_ledger::snapshot::encode(self.state(), seq, hash)?;
        read::write_snapshot(&self.db, &s)?;
        self.snapshots.written += 1;
        self.snapshots.last_seq = seq;
        Ok(Some(seq))
    }

    pub fn discard_staged(&mut self) -> usize {
        let staged = std::mem::take(&mut self.staged);
        let count = staged.len();
        for (p, _) in staged.into_iter().rev() {
            self.ledger.rollback(p);
        }
        count
    }

    pub fn close(mut self) -> Result<(), LedgerError> {
        self.discard_staged();
        if self.bounded() && !self.options.read_only {
            self.write_snapshot()?;
        }
        Ok(())
    }
}

fn appended(groups: &[(Prepared, Vec<LedgerEvent>)]) -> u64 {
    groups.iter().map(|(p, _)| p.appended.len() as u64).sum()
}

fn dedup<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort_unstable();
    v.dedup();
    v
}
