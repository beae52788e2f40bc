//! The jobs of a [`super::LedgerState`], with the indexes the node's hot paths ask for, kept up to
//! date on every insert and removal so that no decision scans the jobs:
//!
//! - quotes by expiry: jobs quoted or partly paid that have an expiry, in expiry order (the
//!   tick expires those due without looking at any other job);
//! - pending quotes per customer: jobs received or quoted, by customer (admission counts a
//!   customer's open quotes without looking at anyone else's).
//!
//! Every way into the map (commit, rollback, loading an ended job back, eviction, snapshots,
//! projections) goes through [`JobTable::insert`] / [`JobTable::remove`]; the indexes are derived,
//! so two tables with the same jobs compare equal.

use std::collections::BTreeSet;

use crate::keyed::HashMap;

use crate::ids::{JobId, Pubkey, UnixMs};
use crate::job::{JobRecord, JobState};

#[derive(Debug, Clone, Default)]
pub struct JobTable {
    jobs: HashMap<JobId, JobRecord>,
    quotes_by_expiry: BTreeSet<(UnixMs, JobId)>,
    pending_by_customer: HashMap<Pubkey, BTreeSet<JobId>>,
}

impl PartialEq for JobTable {
    fn eq(&self, other: &Self) -> bool {
        self.jobs == other.jobs
    }
}

impl Eq for JobTable {}

/// A job that a tick may expire: quoted or partly paid, with an expiry.
fn expiring(job: &JobRecord) -> Option<(UnixMs, JobId)> {
    match job.state {
        JobState::Quoted | JobState::PartiallyPaid => job.expires_at.map(|e| (e, job.job.clone())),
        _ => None,
    }
}

/// A job that counts toward its customer's open quotes (a quote in the making counts too).
fn pending(job: &JobRecord) -> bool {
    matches!(job.state, JobState::Received | JobState::Quoted)
}

impl JobTable {
    pub fn get(&self, job: &JobId) -> Option<&JobRecord> {
        self.jobs.get(job)
    }

    pub fn contains_key(&self, job: &JobId) -> bool {
        self.jobs.contains_key(job)
    }

    pub fn values(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.values()
    }

    pub fn keys(&self) -> impl Iterator<Item = &JobId> {
        self.jobs.keys()
    }

    /// Inserts or replaces `job`; returns the record it replaced.
    pub fn insert(&mut self, id: JobId, job: JobRecord) -> Option<JobRecord> {
        debug_assert_eq!(id, job.job);
        let old = self.remove(&id);
        self.index(&job);
        self.jobs.insert(id, job);
        old
    }

    pub fn remove(&mut self, id: &JobId) -> Option<JobRecord> {
        let old = self.jobs.remove(id)?;
        self.unindex(&old);
        Some(old)
    }

    fn index(&mut self, job: &JobRecord) {
        if let Some(entry) = expiring(job) {
            self.quotes_by_expiry.insert(entry);
        }
        if pending(job) {
            self.pending_by_customer
                .entry(job.customer.clone())
                .or_default()
                .insert(job.job.clone());
        }
    }

    fn unindex(&mut self, job: &JobRecord) {
        if let Some(entry) = expiring(job) {
            self.quotes_by_expiry.remove(&entry);
        }
        if pending(job) {
            if let Some(set) = self.pending_by_customer.get_mut(&job.customer) {
                set.remove(&job.job);
                if set.is_empty() {
                    self.pending_by_customer.remove(&job.customer);
                }
            }
        }
    }

    /// Quoted or partly paid jobs whose expiry is at or before `now`, in expiry order (then id).
    pub fn quotes_due(&self, now: UnixMs) -> impl Iterator<Item = &JobRecord> {
        self.quotes_by_expiry
            .iter()
            .take_while(move |(expires, _)| *expires <= now)
            .filter_map(|(_, id)| self.jobs.get(id))
    }

    /// `customer`'s jobs that are received or quoted.
    pub fn pending_of(&self, customer: &Pubkey) -> impl Iterator<Item = &JobRecord> {
        self.pending_by_customer
            .get(customer)
            .into_iter()
            .flatten()
            .filter_map(|id| self.jobs.get(id))
    }

    /// The indexes hold exactly what a scan of the jobs would find (for the invariant checks).
    pub fn indexes_agree(&self) -> bool {
        let mut fresh = JobTable::default();
        for job in self.jobs.values() {
            fresh.index(job);
        }
        fresh.quotes_by_expiry == self.quotes_by_expiry
            && fresh.pending_by_customer == self.pending_by_customer
    }
}

impl FromIterator<(JobId, JobRecord)> for JobTable {
    fn from_iter<I: IntoIterator<Item = (JobId, JobRecord)>>(iter: I) -> Self {
        let mut table = JobTable::default();
        for (id, job) in iter {
            table.insert(id, job);
        }
        table
    }
}
