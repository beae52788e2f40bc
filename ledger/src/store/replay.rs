//! Loading the state when a store opens: the whole log into memory (`Retention::Everything`), or
//! the open work only: from the newest snapshot plus the events after it, or, without a usable
//! snapshot, from the whole log with records dropped as soon as no later event names them.

use std::collections::HashMap;

use super::resident::StoreBackend;
use super::{key_digest, StoredEvent};
use crate::account::Account;
use crate::chain::{Hash, GENESIS};
use crate::engine::Ledger;
use crate::error::LedgerError;
use crate::footprint::{footprint, Use};
use crate::ids::{JobId, RefundId, SubscriptionId};
use crate::job::{JobRecord, JobState};
use crate::ledger_store::{OpenReport, SnapshotUse};
use crate::refund::{RefundRecord, RefundState};
use crate::snapshot::{self, Rejected, Snapshot};
use crate::state::LedgerState;
use crate::subscription::SubscriptionRecord;

/// What loading needs of a store besides [`StoreBackend`]'s reads: the log in order, the
/// snapshot, and the `changed` seq of projection rows. The SQL given to [`LogSource::count`]
/// is portable (SQLite and PostgreSQL with byte-order text keys).
pub trait LogSource: StoreBackend {
    /// Calls `apply` for every stored event after seq `after`, in seq order.
    fn each_event(
        &self,
        after: u64,
        apply: &mut dyn FnMut(StoredEvent) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError>;
    /// For every job (by the [`super::key_digest`] of its id), the seq of the last event whose
    /// `job` column names it.
    fn last_touch(&self) -> Result<Vec<(i64, u64)>, LedgerError>;
    fn newest_snapshot(&self) -> Result<Option<Snapshot>, LedgerError>;
    /// The hash stored for event `seq`.
    fn event_hash(&self, seq: u64) -> Result<Option<Vec<u8>>, LedgerError>;
    /// A job row with the seq of the last event that changed it (`None`: not recorded).
    fn job_changed(&self, id: &JobId) -> Result<Option<(JobRecord, Option<u64>)>, LedgerError>;
    fn refund_changed(
        &self,
        id: &RefundId,
    ) -> Result<Option<(RefundRecord, Option<u64>)>, LedgerError>;
    fn subscription(&self, id: &SubscriptionId) -> Result<Option<SubscriptionRecord>, LedgerError>;
    /// The single number `sql` selects.
    fn count(&self, sql: &str) -> Result<u64, LedgerError>;
}

/// The state a store opened with, its head hash, and how it got there.
pub struct Loaded {
    pub ledger: Ledger,
    pub head: Hash,
    pub report: OpenReport,
}

/// During a full replay of open work, memory is trimmed every this many events.
const SWEEP_EVERY: u64 = 4_096;

/// Calls `apply` for every stored event after `after`, in order, checking that each follows the
/// chain from `head` and that seqs are contiguous. Returns the last hash and the count.
fn each_event(
    src: &impl LogSource,
    after: u64,
    mut head: Hash,
    mut apply: impl FnMut(StoredEvent) -> Result<(), LedgerError>,
) -> Result<(Hash, u64), LedgerError> {
    let mut expected = after + 1;
    src.each_event(after, &mut |stored| {
        if stored.seq != expected || stored.prev_hash != head {
            return Err(LedgerError::Corrupt(format!(
                "event {} does not follow the chain; run `paydvm ledger verify`",
                stored.seq
            )));
        }
        head = stored.hash;
        expected += 1;
        apply(stored)
    })?;
    Ok((head, expected - 1 - after))
}

/// The whole log into memory.
pub fn everything(src: &impl LogSource) -> Result<Loaded, LedgerError> {
    let mut ledger = Ledger::new();
    let (head, replayed) = each_event(src, 0, GENESIS, |stored| {
        ledger.apply(&stored.event).map(|_| ())
    })?;
    Ok(Loaded {
        report: OpenReport {
            head: replayed,
            replayed,
            snapshot: SnapshotUse::NotUsed,
        },
        ledger,
        head,
    })
}

/// The open work: from the newest snapshot when it passes every check, else from the whole log.
/// `snapshots`: the schema has snapshots and `changed` columns.
pub fn open_work(src: &impl LogSource, snapshots: bool) -> Result<Loaded, LedgerError> {
    let mut snapshot_use = SnapshotUse::Absent;
    if snapshots {
        if let Some(s) = src.newest_snapshot()? {
            match from_snapshot(src, &s)? {
                Ok((ledger, head, replayed)) => {
                    return Ok(Loaded {
                        report: OpenReport {
                            head: ledger.next_seq() - 1,
                            replayed,
                            snapshot: SnapshotUse::Loaded { seq: s.seq },
                        },
                        ledger,
                        head,
                    })
                }
                Err(why) => {
                    snapshot_use = SnapshotUse::Rejected {
                        seq: s.seq,
                        reason: why.to_string(),
                    }
                }
            }
        }
    }
    let (ledger, head, replayed) = whole_log_open_work(src)?;
    Ok(Loaded {
        report: OpenReport {
            head: replayed,
            replayed,
            snapshot: snapshot_use,
        },
        ledger,
        head,
    })
}

/// For every job, the last event that concerns it (by the `job` column, which every event that
/// reads or changes a job, its refunds or its effects carries). Keyed by a 64-bit digest of the
/// job id: two jobs sharing a digest only keep one of them in memory a little longer.
fn last_touch(src: &impl LogSource) -> Result<HashMap<i64, u64>, LedgerError> {
    let mut last: HashMap<i64, u64> = HashMap::new();
    for (digest, seq) in src.last_touch()? {
        let e = last.entry(digest).or_default();
        *e = (*e).max(seq);
    }
    Ok(last)
}

/// Drops every ended record no event after `seq` names, and the keys and references seen.
fn sweep(ledger: &mut Ledger, last: &HashMap<i64, u64>, seq: u64) {
    let all = ledger.state().all_resident();
    let needed_later = |j: &JobId| last.get(&key_digest(j.as_str())).is_some_and(|&t| t > seq);
    ledger.state_mut().evict(&all, &needed_later);
    ledger.forget_history();
}

/// The whole log, keeping only what is open or still named by a later event.
fn whole_log_open_work(src: &impl LogSource) -> Result<(Ledger, Hash, u64), LedgerError> {
    let last = last_touch(src)?;
    let mut ledger = Ledger::new();
    let (head, replayed) = each_event(src, 0, GENESIS, |stored| {
        ledger.apply(&stored.event)?;
        if stored.seq % SWEEP_EVERY == 0 {
            sweep(&mut ledger, &last, stored.seq);
        }
        Ok(())
    })?;
    sweep(&mut ledger, &HashMap::new(), u64::MAX);
    drop(last);
    Ok((ledger, head, replayed))
}

/// The snapshot's state plus the events after it, if the snapshot passes every check.
/// `Ok(Err(why))`: not usable (the caller replays the whole log); `Err`: the store failed.
#[allow(clippy::type_complexity)]
fn from_snapshot(
    src: &impl LogSource,
    s: &Snapshot,
) -> Result<Result<(Ledger, Hash, u64), Rejected>, LedgerError> {
    let state = match snapshot::decode(s) {
        Ok(state) => state,
        Err(why) => return Ok(Err(why)),
    };
    match src.event_hash(s.seq)? {
        None => return Ok(Err(Rejected::PastHead(s.seq))),
        Some(h) if h[..] != s.hash[..] => return Ok(Err(Rejected::NotOnChain(s.seq))),
        Some(_) => {}
    }
    let mut ledger = Ledger::resume(state, s.seq + 1);
    let (head, replayed) = match apply_tail(src, &mut ledger, s.seq, s.hash)? {
        Ok(applied) => applied,
        Err(why) => return Ok(Err(why)),
    };
    sweep(&mut ledger, &HashMap::new(), u64::MAX);
    if let Err(why) = agrees_with_projections(src, ledger.state())? {
        return Ok(Err(why));
    }
    Ok(Ok((ledger, head, replayed)))
}

/// Applies the events after `after` (whose hash is `head`) to `ledger`, which holds the state
/// as of `after` (a snapshot's, or a store's own memory when another writer appended:
/// [`follow`]). `Ok(Err(why))`: an event needs a record the ledger no longer holds as it was at
/// `after`; the ledger is then part way and must be loaded afresh. Returns the new head's hash
/// and how many events were applied.
fn apply_tail(
    src: &impl LogSource,
    ledger: &mut Ledger,
    after: u64,
    head: Hash,
) -> Result<Result<(Hash, u64), Rejected>, LedgerError> {
    let mut rejected = None;
    let applied = each_event(src, after, head, |stored| {
        if rejected.is_some() {
            return Ok(());
        }
        if let Err(why) = load_for_tail(src, ledger, &stored, after)? {
            rejected = Some(why);
            return Ok(());
        }
        if let Err(e) = ledger.apply(&stored.event) {
            rejected = Some(Rejected::TailNeedsHistory(format!(
                "event {} refused on the state of event {after}: {e}",
                stored.seq
            )));
        }
        Ok(())
    })?;
    Ok(match rejected {
        Some(why) => Err(why),
        None => Ok(applied),
    })
}

/// How a store took in the events another writer appended after its head ([`follow`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// Applied to the state in memory, as they would have been had this store written them.
    Applied { events: u64 },
    /// An event needed a record that had left memory and that the tail itself changed: the
    /// state was loaded afresh (from the newest snapshot and the events after it, or the whole
    /// log), as at open.
    Reloaded { events: u64, reason: String },
}

impl Followed {
    /// Events written by others that this store now holds.
    pub fn events(&self) -> u64 {
        match self {
            Followed::Applied { events } | Followed::Reloaded { events, .. } => *events,
        }
    }
}

/// Brings `ledger` (the state as of event `after`, whose hash is `head`; nothing staged) up to
/// the log's head: another writer on the same database appended since. With `bounded` (open
/// work only) the ended records are then dropped from memory, as after a write of our own.
/// `snapshots` as for [`open_work`]. Returns the new head's hash.
pub fn follow(
    src: &impl LogSource,
    ledger: &mut Ledger,
    (after, head): (u64, Hash),
    bounded: bool,
    snapshots: bool,
) -> Result<(Hash, Followed), LedgerError> {
    match apply_tail(src, ledger, after, head)? {
        Ok((new_head, events)) => {
            if bounded {
                sweep(ledger, &HashMap::new(), u64::MAX);
            }
            Ok((new_head, Followed::Applied { events }))
        }
        Err(why) => {
            let loaded = if bounded {
                open_work(src, snapshots)?
            } else {
                everything(src)?
            };
            *ledger = loaded.ledger;
            let events = loaded.report.head.saturating_sub(after);
            let reason = match why {
                Rejected::TailNeedsHistory(what) => what,
                other => other.to_string(),
            };
            Ok((loaded.head, Followed::Reloaded { events, reason }))
        }
    }
}

/// Before replaying a tail event: load the records it reads that are not in memory. A record
/// that left memory before the snapshot is read back only if its row has not changed since the
/// snapshot (then the row is its value at the snapshot); otherwise the snapshot cannot be used.
/// Records the event creates are not loaded: in a valid log they do not exist yet.
fn load_for_tail(
    src: &impl LogSource,
    ledger: &mut Ledger,
    stored: &StoredEvent,
    snapshot_seq: u64,
) -> Result<Result<(), Rejected>, LedgerError> {
    let too_new = |what: &str, id: &str, changed: Option<u64>| match changed {
        Some(c) if c > snapshot_seq => Err(Rejected::TailNeedsHistory(format!(
            "event {} reads {what} {id}, changed by event {c}",
            stored.seq
        ))),
        _ => Ok(()),
    };
    let fp = footprint(&stored.event.body);
    let mut jobs: Vec<JobId> = fp
        .jobs
        .iter()
        .filter(|(_, u)| *u == Use::Load)
        .map(|(j, _)| (*j).clone())
        .collect();
    for (id, _) in fp.refunds.iter().filter(|(_, u)| *u == Use::Load) {
        if ledger.state().refund(id).is_none() {
            if let Some((record, changed)) = src.refund_changed(id)? {
                if let Err(why) = too_new("refund", id.as_str(), changed) {
                    return Ok(Err(why));
                }
                let account = src.balance(&Account::Refund((*id).clone()))?;
                ledger.state_mut().load_refund(record, account);
            }
        }
        jobs.extend(ledger.state().refund(id).and_then(|r| r.job.clone()));
    }
    for id in jobs {
        if ledger.state().job(&id).is_some() {
            continue;
        }
        if let Some((record, changed)) = src.job_changed(&id)? {
            if let Err(why) = too_new("job", id.as_str(), changed) {
                return Ok(Err(why));
            }
            let account = src.balance(&Account::Job(id.clone()))?;
            ledger.state_mut().load_job(record, account);
        }
    }
    for (id, _) in fp.effects.iter().filter(|(_, u)| *u == Use::Load) {
        if ledger.state().effect(id).is_none() && src.effect(id)?.is_some() {
            return Ok(Err(Rejected::TailNeedsHistory(format!(
                "event {} names effect {id}, done before the snapshot",
                stored.seq
            ))));
        }
    }
    Ok(Ok(()))
}

/// SQL list of the names of `states`.
fn names<T: Copy>(states: &[T], name: fn(T) -> &'static str) -> String {
    states
        .iter()
        .map(|s| format!("'{}'", name(*s)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Records compared with their stored rows per query when a snapshot is checked.
const CHECK_BATCH: usize = 5_000;

/// The name of the first of `resident` whose stored value (read by `stored`, [`CHECK_BATCH`]
/// names per call: one query each on PostgreSQL) is missing or different.
fn first_differing<'a, K: Clone + Eq + std::hash::Hash + 'a, V: PartialEq + 'a>(
    resident: impl Iterator<Item = (&'a K, &'a V)>,
    stored: impl Fn(&[K]) -> Result<HashMap<K, V>, LedgerError>,
) -> Result<Option<&'a K>, LedgerError> {
    let resident: Vec<(&K, &V)> = resident.collect();
    for batch in resident.chunks(CHECK_BATCH) {
        let names: Vec<K> = batch.iter().map(|(k, _)| (*k).clone()).collect();
        let found = stored(&names)?;
        if let Some((k, _)) = batch.iter().find(|(k, v)| found.get(*k) != Some(*v)) {
            return Ok(Some(*k));
        }
    }
    Ok(None)
}

/// The state loaded from a snapshot must equal the stored projections of every resident record,
/// and hold every open record and every account other than per-job and per-refund ones.
fn agrees_with_projections(
    src: &impl LogSource,
    state: &LedgerState,
) -> Result<Result<(), Rejected>, LedgerError> {
    let differs = |what: &str, id: &str| Ok(Err(Rejected::Projections(format!("{what} {id}"))));
    let jobs = state.jobs().map(|j| (&j.job, j));
    if let Some(id) = first_differing(jobs, |ids| src.jobs(ids))? {
        return differs("job", id.as_str());
    }
    let refunds = state.refunds().map(|r| (&r.refund, r));
    if let Some(id) = first_differing(refunds, |ids| src.refunds(ids))? {
        return differs("refund", id.as_str());
    }
    let effects = state.effects().map(|e| (&e.effect, e));
    if let Some(id) = first_differing(effects, |ids| src.effects(ids))? {
        return differs("effect", id.as_str());
    }
    for s in state.subscriptions() {
        if src.subscription(&s.subscription)?.as_ref() != Some(s) {
            return differs("subscription", s.subscription.as_str());
        }
    }
    if let Some(account) = first_differing(state.balances(), |a| src.balances(a))? {
        return differs("account", &account.to_string());
    }
    let open_jobs: Vec<JobState> = JobState::ALL
        .into_iter()
        .filter(|s| !s.is_terminal())
        .collect();
    let open_refunds: Vec<RefundState> = RefundState::ALL
        .into_iter()
        .filter(|s| !s.is_closed())
        .collect();
    let counts = [
        (
            "open jobs",
            format!(
                "SELECT count(*) FROM jobs WHERE state IN ({})",
                names(&open_jobs, JobState::as_str)
            ),
            state.jobs().count(),
        ),
        (
            "open refunds",
            format!(
                "SELECT count(*) FROM refunds WHERE state IN ({})",
                names(&open_refunds, RefundState::as_str)
            ),
            state.refunds().count(),
        ),
        (
            "effects not done",
            "SELECT count(*) FROM effects WHERE NOT done".to_string(),
            state.effects().count(),
        ),
        (
            "subscriptions",
            "SELECT count(*) FROM subscriptions".to_string(),
            state.subscriptions().count(),
        ),
        (
            "accounts kept in memory",
            // Everything but the `liability:job:` and `liability:refund:` ranges (';' follows ':').
            "SELECT count(*) FROM balances WHERE account < 'liability:job:' \
             OR (account >= 'liability:job;' AND account < 'liability:refund:') \
             OR account >= 'liability:refund;'"
                .to_string(),
            state
                .balances()
                .filter(|(a, _)| !matches!(a, Account::Job(_) | Account::Refund(_)))
                .count(),
        ),
    ];
    for (what, sql, resident) in counts {
        let stored = src.count(&sql)?;
        if stored != resident as u64 {
            return Ok(Err(Rejected::Projections(format!(
                "{stored} {what} stored, {resident} in the snapshot's state"
            ))));
        }
    }
    Ok(Ok(()))
}
