//! The contract every ledger store meets: what the node and the tools may ask of one, whatever
//! keeps the data. SQLite (`store::Store`) is the first implementation; every implementation must
//! pass the conformance suite (`conformance`, `ledger_store_conformance!`).
//!
//! The derived state the core decides on is in memory (`state()`); deciding never runs a query.
//! Everything else (history, audit, counts) is a query on the store. A store for an asynchronous
//! database client (PostgreSQL) implements this blocking trait by owning a runtime or a client
//! thread and waiting on it: the core is one thread that decides, stages and flushes in turn, so
//! a blocking call per flush is what it needs (see `docs/ledger.md`).

use std::io::Write;

use crate::account::{Account, Balance};
use crate::chain::Hash;
use crate::effect::EffectRecord;
use crate::engine::AppendOutcome;
use crate::error::LedgerError;
use crate::event::{EventBody, LedgerEvent, PaymentOption};
use crate::ids::{EffectId, IdemKey, JobId, PaymentRef, RefundId, SubscriptionId};
use crate::job::{JobRecord, JobState};
use crate::refund::{RefundRecord, RefundState};
use crate::state::LedgerState;
use crate::store::replay::Followed;
use crate::store::{AuditTrail, StoredEvent, VerifyFailure, VerifyReport};

/// How hard each commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every commit: survives power loss.
    Full,
    /// WAL without fsync per commit: survives a process crash, not a power cut.
    Normal,
}

/// What the store keeps in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Every record of the whole history (the behaviour before issue 11): `state()` answers for
    /// any job, refund, effect and payment reference; memory and start-up time grow with the log.
    Everything,
    /// Open work only (see `state::residency`): `state()` holds the records that have not ended;
    /// ended ones are read back from the store when an event names them. Start-up loads the
    /// newest snapshot and replays the events after it.
    OpenWork,
}

/// How to open a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    pub durability: Durability,
    pub retention: Retention,
    /// With `OpenWork`: write a snapshot once this many events were written since the last one
    /// (0: only when the store is closed).
    pub snapshot_every: u64,
    /// Never create, migrate or write (inspecting tools).
    pub read_only: bool,
    /// SQLite's page cache per connection, in KiB (the PostgreSQL store ignores it). Part of the
    /// process's resident memory once the file is bigger than it.
    pub page_cache_kib: u32,
}

impl StoreOptions {
    /// Events between snapshots by default: replaying that many takes a fraction of a second.
    pub const SNAPSHOT_EVERY: u64 = 50_000;

    /// Page cache by default: the indexes are keyed by hashes, so a bulk append lands on random
    /// pages; with SQLite's own 2 MiB every batch re-reads and re-writes pages (the ledger bench).
    pub const PAGE_CACHE_KIB: u32 = 256 * 1024;

    /// Memory bounded by open work, snapshots every [`Self::SNAPSHOT_EVERY`] events and at close.
    pub fn bounded(durability: Durability) -> Self {
        StoreOptions {
            durability,
            retention: Retention::OpenWork,
            snapshot_every: Self::SNAPSHOT_EVERY,
            read_only: false,
            page_cache_kib: Self::PAGE_CACHE_KIB,
        }
    }

    /// The whole history in memory, no snapshots.
    pub fn everything(durability: Durability) -> Self {
        StoreOptions {
            durability,
            retention: Retention::Everything,
            snapshot_every: 0,
            read_only: false,
            page_cache_kib: Self::PAGE_CACHE_KIB,
        }
    }

    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    pub fn snapshot_every(mut self, events: u64) -> Self {
        self.snapshot_every = events;
        self
    }

    pub fn page_cache_kib(mut self, kib: u32) -> Self {
        self.page_cache_kib = kib;
        self
    }
}

/// Records a caller is about to decide on, which may have left memory (see [`Retention`]):
/// jobs, refunds (each with its job), effects, and payment references whose credit matters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recall {
    pub jobs: Vec<JobId>,
    pub refunds: Vec<RefundId>,
    pub effects: Vec<EffectId>,
    pub refs: Vec<PaymentRef>,
}

impl Recall {
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
            && self.refunds.is_empty()
            && self.effects.is_empty()
            && self.refs.is_empty()
    }
}

/// How the store got its state when it was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// The last event in the log.
    pub head: u64,
    /// Events applied to memory while opening (the tail after a snapshot, or the whole log).
    pub replayed: u64,
    pub snapshot: SnapshotUse,
}

/// What happened to the stored snapshot at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotUse {
    /// `Retention::Everything`: snapshots are neither read nor written.
    NotUsed,
    /// None stored (a new ledger, or one written before snapshots existed).
    Absent,
    /// The snapshot of event `seq` was checked and loaded; only the events after it were replayed.
    Loaded { seq: u64 },
    /// A snapshot was stored but not trusted, for `reason`: the whole log was replayed instead.
    Rejected { seq: u64, reason: String },
}

/// Snapshot bookkeeping since the store was opened, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Snapshots written.
    pub written: u64,
    /// Snapshot writes that failed (the events were already on disk; the next one retries).
    pub write_failures: u64,
    pub last_failure: Option<String>,
    /// The event the newest snapshot on disk reflects (0: none).
    pub last_seq: u64,
}

/// What an invoice our quotes offered was for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum InvoiceFor {
    Job(JobId),
    /// A subscription's first period or a renewal.
    Subscription(SubscriptionId),
}

/// One invoice a quote offered: a job's price, or a subscription's period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotedInvoice {
    pub quoted_for: InvoiceFor,
    pub payment_hash: String,
}

impl QuotedInvoice {
    /// The types (`EventBody::type_name`) of the events that offer invoices: what a store
    /// selects before calling [`QuotedInvoice::offered_by`].
    pub const OFFERING_TYPES: [&'static str; 3] = [
        "quote_issued",
        "subscription_quoted",
        "subscription_renewal_quoted",
    ];

    /// The invoices `body` offers (none for events that offer none).
    pub fn offered_by(body: &EventBody) -> Vec<QuotedInvoice> {
        let (quoted_for, options) = match body {
            EventBody::QuoteIssued { job, options, .. } => (InvoiceFor::Job(job.clone()), options),
            EventBody::SubscriptionQuoted {
                subscription,
                options,
                ..
            }
            | EventBody::SubscriptionRenewalQuoted {
                subscription,
                options,
                ..
            } => (InvoiceFor::Subscription(subscription.clone()), options),
            _ => return Vec::new(),
        };
        options
            .iter()
            .filter_map(|option| match option {
                PaymentOption::Invoice { payment_hash, .. } => Some(QuotedInvoice {
                    quoted_for: quoted_for.clone(),
                    payment_hash: payment_hash.clone(),
                }),
                _ => None,
            })
            .collect()
    }
}

/// One group's outcome inside a batch.
pub type GroupResult = Result<Vec<AppendOutcome>, LedgerError>;

/// A durable, hash-chained ledger with its derived state in memory.
///
/// Appends: `stage` applies a group in memory at once (later decisions see it) and `flush` writes
/// every staged group in one transaction (group commit); a failed flush undoes all of them in
/// memory. `append`, `append_group` and `append_batch` write staged groups first, then theirs.
/// A group is all or nothing; a repeated idempotency key is a no-op that returns the first seq.
pub trait LedgerStore: Sized {
    /// Where the data lives: a file path for SQLite, a connection string for a server.
    type Location: ?Sized;

    /// Open (creating and migrating unless read-only) and load the state.
    fn open(location: &Self::Location, options: &StoreOptions) -> Result<Self, LedgerError>;
    /// How the state was loaded.
    fn opened(&self) -> &OpenReport;
    fn snapshot_stats(&self) -> &SnapshotStats;
    /// The derived state the core decides on. With `Retention::OpenWork` it holds open work
    /// only; use the queries below for anything that may have ended.
    fn state(&self) -> &LedgerState;
    /// The last event on disk: its seq and hash (staged groups are not counted).
    fn head(&self) -> (u64, Hash);

    /// Take in the events another writer on the same database appended after [`Self::head`]
    /// (several nodes on one PostgreSQL ledger): afterwards `state()` and `head()` are as if
    /// this store had written them. Nothing may be staged (`LedgerError::Staged`); a flush
    /// that found the head moved has undone its groups in memory already.
    fn follow(&mut self) -> Result<Followed, LedgerError>;

    /// Bring the named records back into `state()` if they left it (`Retention::OpenWork`;
    /// nothing to do when the store keeps everything), so a decision about them reads them
    /// from memory as if the whole history were there. They leave again once written past.
    fn recall(&mut self, names: &Recall) -> Result<(), LedgerError>;

    fn stage(&mut self, events: &[LedgerEvent]) -> Result<Vec<AppendOutcome>, LedgerError>;
    fn staged_groups(&self) -> usize;
    /// Write every staged group in one transaction; returns how many were written.
    fn flush(&mut self) -> Result<usize, LedgerError>;
    /// Group commit: each group accepted or refused on its own, the accepted ones written in one
    /// transaction (after anything staged).
    fn append_batch(&mut self, groups: &[&[LedgerEvent]]) -> Result<Vec<GroupResult>, LedgerError>;

    fn append_group(&mut self, events: &[LedgerEvent]) -> GroupResult {
        let mut results = self.append_batch(&[events])?;
        results.pop().expect("one group in, one result out")
    }

    fn append(&mut self, event: &LedgerEvent) -> Result<AppendOutcome, LedgerError> {
        Ok(self.append_group(std::slice::from_ref(event))?[0])
    }

    /// One stored event by seq.
    fn event(&self, seq: u64) -> Result<Option<StoredEvent>, LedgerError>;

    /// Up to `limit` stored events with a seq above `after`, in seq order: reading a long log a
    /// chunk at a time (`copy::copy_log`). A seq missing below the head is skipped, not an
    /// error: the caller sees the gap in the seqs. The default asks [`LedgerStore::event`] for
    /// each seq up to the head; a store that can read a range in one query overrides it.
    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, LedgerError> {
        let (head, _) = self.head();
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut seq = after;
        while out.len() < limit && seq < head {
            seq += 1;
            out.extend(self.event(seq)?);
        }
        Ok(out)
    }
    /// The seq of the event stored (or staged) under `key`.
    fn seq_of_key(&self, key: &IdemKey) -> Result<Option<u64>, LedgerError>;

    /// Whether `event` has the same body as the event first stored under its key (`None`: the
    /// key is new).
    fn same_as_first(&self, event: &LedgerEvent) -> Result<Option<bool>, LedgerError> {
        let Some(seq) = self.seq_of_key(&event.key)? else {
            return Ok(None);
        };
        let stored = self
            .event(seq)?
            .ok_or_else(|| LedgerError::Corrupt(format!("key {} has no event", event.key)))?;
        Ok(Some(stored.event.body == event.body))
    }

    /// A job, in memory or ended (staged changes included).
    fn job(&self, job: &JobId) -> Result<Option<JobRecord>, LedgerError>;
    fn refund(&self, refund: &RefundId) -> Result<Option<RefundRecord>, LedgerError>;
    fn effect(&self, effect: &EffectId) -> Result<Option<EffectRecord>, LedgerError>;
    /// The event that credited a payment reference, if any.
    fn payment_ref_seq(&self, reference: &PaymentRef) -> Result<Option<u64>, LedgerError>;

    /// Every written job in `state`, by job id.
    fn jobs_by_state(&self, state: JobState) -> Result<Vec<JobRecord>, LedgerError>;
    /// How many written jobs are in each state (states with none are left out).
    fn job_counts(&self) -> Result<Vec<(JobState, u64)>, LedgerError>;
    fn refund_counts(&self) -> Result<Vec<(RefundState, u64)>, LedgerError>;
    /// Every account with its totals, by account name.
    fn account_balances(&self) -> Result<Vec<(Account, Balance)>, LedgerError>;
    /// The request a job's `job_received` stored, if it stored one (written groups only).
    fn stored_request(&self, job: &JobId) -> Result<Option<String>, LedgerError>;
    /// Every invoice a quote offered (jobs' quotes, subscriptions' first periods and renewals),
    /// in log order.
    fn quoted_invoices(&self) -> Result<Vec<QuotedInvoice>, LedgerError>;
    /// One job's trail, found by any reference it involved.
    fn audit(&self, reference: &str) -> Result<Option<AuditTrail>, LedgerError>;
    /// Recheck the whole stored history from scratch.
    fn verify(&self) -> Result<VerifyReport, VerifyFailure>;
    /// JSON lines, one event per line, bodies exactly as stored; returns the number of events.
    fn export(&self, out: &mut dyn Write) -> Result<u64, LedgerError>;
    /// The derived state of the whole written history, read from the stored projections. Costs
    /// O(history): for tools and tests, never for deciding.
    fn projected_state(&self) -> Result<LedgerState, LedgerError>;
    /// Write a snapshot of the open work now (`OpenWork` only); returns its seq, or `None` when
    /// there is nothing new to snapshot or the store keeps everything. Staged groups are not in
    /// it: flush first.
    fn write_snapshot(&mut self) -> Result<Option<u64>, LedgerError>;
    /// Drop what is staged, write a snapshot (`OpenWork`, writable) and close.
    fn close(self) -> Result<(), LedgerError>;
}
