//! Loading the state at open: the whole log (`Retention::Everything`), or the open work from the
//! newest snapshot plus the events after it, or without a usable snapshot from the whole log,
//! dropping records no later event names. The snapshot checks are the SQLite store's: digest,
//! the log's hash at the snapshot's seq, and tail events that read a record changed after the
//! snapshot reject it (the whole log is replayed instead).

use std::collections::HashMap;

use paydvm_ledger::account::Account;
use paydvm_ledger::chain::{Hash, GENESIS};
use paydvm_ledger::footprint::{footprint, Use};
use paydvm_ledger::snapshot::{self, Rejected, Snapshot};
use paydvm_ledger::store::StoredEvent;
use paydvm_ledger::{JobId, Ledger, OpenReport, SnapshotUse};

use crate::client::{get, get_u64, int, Db, PgError};
use crate::read;

pub struct Loaded {
    pub ledger: Ledger,
    pub head: Hash,
    pub report: OpenReport,
}

/// Events read per query while replaying.
const CHUNK: i64 = 10_000;
/// During a full replay of open work, memory is trimmed every this many events.
const SWEEP_EVERY: u64 = 4_096;

/// Calls `apply` for every event after `after`, checking seqs and the chain from `head`.
fn each_event(
    db: &Db,
    after: u64,
    mut head: Hash,
    mut apply: impl FnMut(StoredEvent) -> Result<(), PgError>,
) -> Result<(Hash, u64), PgError> {
    let mut expected = after + 1;
    loop {
        let chunk = read::events_after(db, expected - 1, CHUNK)?;
        if chunk.is_empty() {
            return Ok((head, expected - 1 - after));
        }
        for stored in chunk {
            if stored.seq != expected || stored.prev_hash != head {
                return Err(paydvm_ledger::LedgerError::Corrupt(format!(
                    "event {} does not follow the chain; run `paydvm ledger verify`",
                    stored.seq
                ))
                .into());
            }
            head = stored.hash;
            expected += 1;
            apply(stored)?;
        }
    }
}

pub fn everything(db: &Db) -> Result<Loaded, PgError> {
    let mut ledger = Ledger::new();
    let (head, replayed) = each_event(db, 0, GENESIS, |stored| {
        ledger.apply(&stored.event)?;
        Ok(())
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

pub fn open_work(db: &Db) -> Result<Loaded, PgError> {
    let mut snapshot_use = SnapshotUse::Absent;
    if let Some(s) = read::newest_snapshot(db)? {
        match from_snapshot(db, &s)? {
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
    let (ledger, head, replayed) = whole_log_open_work(db)?;
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

/// For every job, the last event that concerns it.
fn last_touch(db: &Db) -> Result<HashMap<String, u64>, PgError> {
    let rows = db.query(
        "SELECT job, max(seq) FROM events WHERE job IS NOT NULL GROUP BY job",
        vec![],
    )?;
    rows.iter()
        .map(|r| Ok((get::<String>(r, 0)?, get_u64(r, 1, "seq")?)))
        .collect()
}

fn sweep(ledger: &mut Ledger, last: &HashMap<String, u64>, seq: u64) {
    let all = ledger.state().all_resident();
    let needed_later = |j: &JobId| last.get(j.as_str()).is_some_and(|&t| t > seq);
    ledger.state_mut().evict(&all, &needed_later);
    ledger.forget_history();
}

fn whole_log_open_work(db: &Db) -> Result<(Ledger, Hash, u64), PgError> {
    let last = last_touch(db)?;
    let mut ledger = Ledger::new();
    let (head, replayed) = each_event(db, 0, GENESIS, |stored| {
        ledger.apply(&stored.event)?;
        if stored.seq % SWEEP_EVERY == 0 {
            sweep(&mut ledger, &last, stored.seq);
        }
        Ok(())
    })?;
    sweep(&mut ledger, &HashMap::new(), u64::MAX);
    Ok((ledger, head, replayed))
}

#[allow(clippy::type_complexity)]
fn from_snapshot(db: &Db, s: &Snapshot) -> Result<Result<(Ledger, Hash, u64), Rejected>, PgError> {
    let state = match snapshot::decode(s) {
        Ok(state) => state,
        Err(why) => return Ok(Err(why)),
    };
    let stored = db.query_opt(
        "SELECT hash FROM events WHERE seq = $1",
        vec![Box::new(int(s.seq, "seq")?)],
    )?;
    match stored.map(|r| get::<Vec<u8>>(&r, 0)).transpose()? {
        None => return Ok(Err(Rejected::PastHead(s.seq))),
        Some(h) if h[..] != s.hash[..] => return Ok(Err(Rejected::NotOnChain(s.seq))),
        Some(_) => {}
    }
    let mut ledger = Ledger::resume(state, s.seq + 1);
    let mut rejected = None;
    let (head, replayed) = each_event(db, s.seq, s.hash, |stored| {
        if rejected.is_some() {
            return Ok(());
        }
        if let Err(why) = load_for_tail(db, &mut ledger, &stored, s.seq)? {
            rejected = Some(why);
            return Ok(());
        }
        if let Err(e) = ledger.apply(&stored.event) {
            rejected = Some(Rejected::TailNeedsHistory(format!(
                "event {} refused on the snapshot's state: {e}",
                stored.seq
            )));
        }
        Ok(())
    })?;
    if let Some(why) = rejected {
        return Ok(Err(why));
    }
    sweep(&mut ledger, &HashMap::new(), u64::MAX);
    Ok(Ok((ledger, head, replayed)))
}

/// Before replaying a tail event: load the records it reads that left memory before the
/// snapshot, if their rows have not changed since (then the row is their value at the snapshot).
fn load_for_tail(
    db: &Db,
    ledger: &mut Ledger,
    stored: &StoredEvent,
    snapshot_seq: u64,
) -> Result<Result<(), Rejected>, PgError> {
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
            if let Some((record, changed)) = read::refund(db, id)? {
                if let Err(why) = too_new("refund", id.as_str(), changed) {
                    return Ok(Err(why));
                }
                let account = read::balance(db, &Account::Refund((*id).clone()))?;
                ledger.state_mut().load_refund(record, account);
            }
        }
        jobs.extend(ledger.state().refund(id).and_then(|r| r.job.clone()));
    }
    for id in jobs {
        if ledger.state().job(&id).is_some() {
            continue;
        }
        if let Some((record, changed)) = read::job(db, &id)? {
            if let Err(why) = too_new("job", id.as_str(), changed) {
                return Ok(Err(why));
            }
            let account = read::balance(db, &Account::Job(id.clone()))?;
            ledger.state_mut().load_job(record, account);
        }
    }
    for (id, _) in fp.effects.iter().filter(|(_, u)| *u == Use::Load) {
        if ledger.state().effect(id).is_none() && read::effect(db, id)?.is_some() {
            return Ok(Err(Rejected::TailNeedsHistory(format!(
                "event {} names effect {id}, done before the snapshot",
                stored.seq
            ))));
        }
    }
    Ok(Ok(()))
}
