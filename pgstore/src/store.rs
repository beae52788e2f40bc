//! The store: the ledger's shared in-memory side ([`Resident`]: derived state, staged groups,
//! trimming, snapshots) over this crate's PostgreSQL I/O ([`StoreBackend`] for [`Db`]).

use std::collections::HashMap;

use paydvm_ledger::account::{Account, Balance};
use paydvm_ledger::chain::Hash;
use paydvm_ledger::snapshot::Snapshot;
use paydvm_ledger::store::replay;
use paydvm_ledger::store::resident::{Found, Lookup, PreparedGroup, Resident, StoreBackend};
use paydvm_ledger::store::{Dirty, EventRows};
use paydvm_ledger::{
    AppendOutcome, EffectId, EffectRecord, IdemKey, JobId, JobRecord, Ledger, LedgerError,
    PaymentRef, RefundId, RefundRecord, Retention, StoreOptions,
};

use crate::client::{Db, PgError};
use crate::location::PgLocation;
use crate::write::{Batch, EventWrite};
use crate::{read, schema};

pub struct PgStore {
    pub(crate) db: Db,
    pub(crate) core: Resident,
}

impl PgStore {
    /// Connect, create the tables in an empty database (unless read-only) and load the state.
    pub fn open_with(location: &str, options: &StoreOptions) -> Result<PgStore, LedgerError> {
        let location = PgLocation::parse(location).map_err(PgError::from)?;
        let db = Db::connect(&location, options.durability)?;
        if options.read_only {
            let found = schema::version(&db)?;
            if found != schema::SCHEMA_VERSION {
                return Err(LedgerError::NotALedger(location.to_string(), found));
            }
        } else {
            schema::migrate(&db)?;
        }
        let loaded = match options.retention {
            Retention::Everything => replay::everything(&db)?,
            Retention::OpenWork => replay::open_work(&db, true)?,
        };
        let mut store = PgStore {
            db,
            core: Resident::new(loaded.ledger, loaded.head, loaded.report, options),
        };
        if !options.read_only && store.core.snapshot_stats().last_seq < store.core.head().0 {
            // Replayed more than nothing: make the next start cheap.
            store.core.snapshot_quietly(&mut store.db);
        }
        Ok(store)
    }

    /// Undo everything staged, in memory (nothing was written); returns how many groups.
    pub fn discard_staged(&mut self) -> usize {
        self.core.discard_staged()
    }

    pub fn options(&self) -> &StoreOptions {
        self.core.options()
    }

    /// A run-time setting as the store's own sessions see it (`SHOW name`): what the store set
    /// when it connected, for tests and diagnostics. `name` is a plain setting name.
    #[doc(hidden)]
    pub fn session_setting(&self, name: &str) -> Result<String, LedgerError> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(PgError::Runtime(format!("not a setting name: {name:?}")).into());
        }
        let row = self.db.query_opt(format!("SHOW {name}"), Vec::new())?;
        let row = row.ok_or_else(|| PgError::Runtime(format!("SHOW {name}: no row")))?;
        Ok(crate::client::get::<String>(&row, 0)?)
    }
}

/// The database as the I/O of the shared in-memory side.
impl StoreBackend for Db {
    fn key_seq(&self, key: &IdemKey) -> Result<Option<u64>, LedgerError> {
        Ok(read::key_seq(self, key)?)
    }

    fn job(&self, id: &JobId) -> Result<Option<JobRecord>, LedgerError> {
        Ok(read::job(self, id)?.map(|(r, _)| r))
    }

    fn refund(&self, id: &RefundId) -> Result<Option<RefundRecord>, LedgerError> {
        Ok(read::refund(self, id)?.map(|(r, _)| r))
    }

    fn effect(&self, id: &EffectId) -> Result<Option<EffectRecord>, LedgerError> {
        Ok(read::effect(self, id)?)
    }

    fn balance(&self, account: &Account) -> Result<Option<Balance>, LedgerError> {
        Ok(read::balance(self, account)?)
    }

    fn payment_seq(&self, reference: &PaymentRef) -> Result<Option<u64>, LedgerError> {
        Ok(read::payment_seq(self, reference)?)
    }

    fn key_seqs(&self, keys: &[IdemKey]) -> Result<HashMap<IdemKey, u64>, LedgerError> {
        let mut found =
            read::seqs_by_key(self, "events", "idem_key", names(keys, IdemKey::as_str))?;
        Ok(pick(keys, |k| found.remove(k.as_str())))
    }

    fn payment_seqs(&self, refs: &[PaymentRef]) -> Result<HashMap<PaymentRef, u64>, LedgerError> {
        let mut found = read::seqs_by_key(
            self,
            "payments",
            "reference",
            names(refs, PaymentRef::as_str),
        )?;
        Ok(pick(refs, |r| found.remove(r.as_str())))
    }

    fn jobs(&self, ids: &[JobId]) -> Result<HashMap<JobId, JobRecord>, LedgerError> {
        let mut found = read::records_by_key(self, "jobs", "job", names(ids, JobId::as_str))?;
        Ok(pick(ids, |id| found.remove(id.as_str())))
    }

    fn refunds(&self, ids: &[RefundId]) -> Result<HashMap<RefundId, RefundRecord>, LedgerError> {
        let mut found =
            read::records_by_key(self, "refunds", "refund", names(ids, RefundId::as_str))?;
        Ok(pick(ids, |id| found.remove(id.as_str())))
    }

    fn effects(&self, ids: &[EffectId]) -> Result<HashMap<EffectId, EffectRecord>, LedgerError> {
        let mut found =
            read::records_by_key(self, "effects", "effect", names(ids, EffectId::as_str))?;
        Ok(pick(ids, |id| found.remove(id.as_str())))
    }

    /// The five lookups pipelined on one connection: one round trip per staged group (it was
    /// one per kind of name, each waited for in turn by the core).
    fn lookup(&self, ask: &Lookup) -> Result<Found, LedgerError> {
        let asks = vec![
            (
                read::seqs_sql("events", "idem_key"),
                names(&ask.keys, IdemKey::as_str),
            ),
            (
                read::seqs_sql("payments", "reference"),
                names(&ask.names.refs, PaymentRef::as_str),
            ),
            (
                read::records_sql("jobs", "job"),
                names(&ask.names.jobs, JobId::as_str),
            ),
            (
                read::records_sql("refunds", "refund"),
                names(&ask.names.refunds, RefundId::as_str),
            ),
            (
                read::records_sql("effects", "effect"),
                names(&ask.names.effects, EffectId::as_str),
            ),
        ];
        let mut rows = read::rows_by_keys(self, asks)?.into_iter();
        let mut next = || rows.next().unwrap_or_default();
        let (mut keys, mut refs) = (read::seqs_of(next())?, read::seqs_of(next())?);
        let mut jobs = read::records_of("jobs", next())?;
        let mut refunds = read::records_of("refunds", next())?;
        let mut effects = read::records_of("effects", next())?;
        Ok(Found {
            keys: pick(&ask.keys, |k| keys.remove(k.as_str())),
            refs: pick(&ask.names.refs, |r| refs.remove(r.as_str())),
            jobs: pick(&ask.names.jobs, |id| jobs.remove(id.as_str())),
            refunds: pick(&ask.names.refunds, |id| refunds.remove(id.as_str())),
            effects: pick(&ask.names.effects, |id| effects.remove(id.as_str())),
        })
    }

    fn balances(&self, accounts: &[Account]) -> Result<HashMap<Account, Balance>, LedgerError> {
        let keys: Vec<String> = accounts.iter().map(Account::to_string).collect();
        let mut found = read::balances(self, keys)?;
        Ok(pick(accounts, |a| found.remove(&a.to_string())))
    }

    /// Builds every row first (hashes, postings, projections), then writes them in one
    /// transaction on the runtime (see `write`).
    fn write(
        &mut self,
        ledger: &Ledger,
        head: Hash,
        groups: &[PreparedGroup<'_>],
    ) -> Result<(Hash, Dirty), LedgerError> {
        self.settle_unresolved()?;
        let appended: u64 = groups.iter().map(|(p, _)| p.appended.len() as u64).sum();
        let last = ledger.next_seq() - 1;
        let from = (last - appended, head);
        let mut head = head;
        let mut dirty = Dirty::default();
        let mut events = Vec::new();
        for (p, group) in groups {
            let mut changes = p.appended.iter();
            for (event, outcome) in group.iter().zip(&p.outcomes) {
                if let AppendOutcome::Appended { seq } = outcome {
                    let (_, change) = changes.next().expect("one change per appended event");
                    let rows = EventRows::new(*seq, &head, event, change)?;
                    head = rows.hash;
                    dirty.note(*seq, &event.body, change);
                    events.push(EventWrite::new(*seq, event, rows));
                }
            }
        }
        let to = (last, head);
        let batch = Batch {
            from,
            to,
            events,
            projections: dirty.rows(ledger.state())?,
        };
        match self.run(move |pool| crate::write::write(pool, batch)) {
            Ok(()) => Ok((head, dirty)),
            Err(e @ (PgError::Commit(_) | PgError::Deadline(_))) => match self.check_written(to) {
                Ok(true) => Ok((head, dirty)),
                Ok(false) => Err(e.into()),
                Err(check) => {
                    self.unresolved = Some(to);
                    Err(unresolved(e.to_string(), &check))
                }
            },
            Err(e) => Err(e.into()),
        }
    }

    fn write_snapshot(&mut self, s: &Snapshot) -> Result<(), LedgerError> {
        Ok(read::write_snapshot(self, s)?)
    }
}

/// Unknown write outcomes. The caller (`Resident`) undoes a failed write in memory, so a write
/// that may have landed must be checked before anything is built on it: at once, and if the
/// server does not answer then, before the next write.
impl Db {
    fn check_written(&self, to: (u64, Hash)) -> Result<bool, PgError> {
        self.run(move |pool| crate::write::is_written(pool, to))
    }

    /// Before a write: settles an earlier write left unknown. Not written: memory was right to
    /// undo it, carry on. Written: memory lacks a batch the database holds, and no write may
    /// follow (its head would be wrong; the head check would refuse it anyway) until the store
    /// is opened again: `OutOfStep`, every time.
    fn settle_unresolved(&mut self) -> Result<(), LedgerError> {
        let Some(to) = self.unresolved else {
            return Ok(());
        };
        match self.check_written(to) {
            Ok(false) => {
                self.unresolved = None;
                Ok(())
            }
            Ok(true) => Err(LedgerError::OutOfStep(format!(
                "a write whose answer was lost is in the database after all (head {})",
                crate::write::head_text(to)
            ))),
            Err(check) => Err(unresolved("an earlier write got no answer".into(), &check)),
        }
    }
}

/// A write's outcome left unknown because its check got no answer either.
fn unresolved(cause: String, check: &PgError) -> LedgerError {
    PgError::Unresolved {
        cause,
        check: check.to_string(),
    }
    .into()
}

/// The text of each name, for a `= ANY($1)` query.
fn names<T>(list: &[T], text: fn(&T) -> &str) -> Vec<String> {
    list.iter().map(|n| text(n).to_owned()).collect()
}

/// The names of `list` that `found` answers, with the answer.
fn pick<K: Clone + Eq + std::hash::Hash, V>(
    list: &[K],
    mut found: impl FnMut(&K) -> Option<V>,
) -> HashMap<K, V> {
    list.iter()
        .filter_map(|k| found(k).map(|v| (k.clone(), v)))
        .collect()
}
