//! b. One transaction per event.

use std::time::{Duration, Instant};

use anyhow::Context;

use paydvm::ledger_handle::LedgerHandle;
use paydvm_ledger::{Durability, LedgerStore};
use paydvm_testkit::bench_stats::percentile;
use paydvm_testkit::workload::Workload;

use crate::report::{micros, rate, verdict};

/// Where an SQLite file's WAL checkpoints run while the events are appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkpoints {
    /// SQLite's default: inside whichever commit passes 1 000 WAL pages.
    InTheCommit,
    /// On a thread of their own (`Store::checkpoint_in_background`).
    OwnThread,
    /// Checkpoints and the WAL's sync on threads of their own, as the node runs its ledger
    /// (`Store::sync_in_background`): a commit returns before its sync, and counts as durable
    /// once the sync thread reports its ticket.
    OwnThreadSyncedBehind,
}

impl Checkpoints {
    /// Starts the checkpoint thread if asked; false when this store has no WAL to checkpoint
    /// (PostgreSQL), so the run would repeat another.
    pub fn start(self, store: &mut LedgerHandle) -> anyhow::Result<bool> {
        match (self, store) {
            (Checkpoints::InTheCommit, _) => Ok(true),
            (Checkpoints::OwnThread, LedgerHandle::Sqlite(sqlite)) => {
                sqlite.checkpoint_in_background(Box::new(|| true))?;
                Ok(true)
            }
            (Checkpoints::OwnThreadSyncedBehind, LedgerHandle::Sqlite(sqlite)) => {
                sqlite.checkpoint_in_background(Box::new(|| true))?;
                sqlite.sync_in_background(Box::new(|| {}), None)?;
                Ok(true)
            }
            (_, LedgerHandle::Postgres(_)) => Ok(false),
        }
    }
}

pub fn run(
    store: &mut LedgerHandle,
    n: u64,
    durability: Durability,
    checkpoints: Checkpoints,
) -> anyhow::Result<()> {
    if checkpoints == Checkpoints::OwnThreadSyncedBehind {
        if let LedgerHandle::Sqlite(sqlite) = store {
            return synced_behind(sqlite, n);
        }
    }
    let mut done = 0u64;
    let mut lat = Vec::with_capacity(n as usize);
    let mut busy = Duration::ZERO;
    for e in events(n) {
        let t = Instant::now();
        store.append(&e)?;
        let d = t.elapsed();
        busy += d;
        lat.push(d);
        done += 1;
    }
    lat.sort_unstable();
    let r = rate(done, busy);
    let target = if durability == Durability::Full {
        format!(" (target >= 5000: {})", verdict(r >= 5_000.0))
    } else {
        String::new()
    };
    println!(
        "b. append one event per tx, Durability::{durability:?}, checkpoints {checkpoints:?}: sample {done} events in {:.2} s = {r:.0} events/s{target}; commit p50 {} p99 {} max {}",
        busy.as_secs_f64(),
        micros(percentile(&lat, 50.0)),
        micros(percentile(&lat, 99.0)),
        micros(percentile(&lat, 100.0)),
    );
    Ok(())
}

/// One transaction per event with the WAL synced behind the commits, as the node writes: each
/// event counts once the sync thread reports its ticket. The rate is events over the time from
/// the first commit to the last event synced; the latency is from a commit's start to the first
/// look (after a later commit, or at the end) that found it synced, so it errs long by up to one
/// commit.
fn synced_behind(store: &mut paydvm_ledger::store::Store, n: u64) -> anyhow::Result<()> {
    // (ticket, commit started) of the events not yet seen synced, oldest first.
    let mut waiting = std::collections::VecDeque::new();
    let mut lat = Vec::with_capacity(n as usize);
    let mut commit = Vec::with_capacity(n as usize);
    let mut done = 0u64;
    let start = Instant::now();
    for e in events(n) {
        let t = Instant::now();
        store.append(&e)?;
        commit.push(t.elapsed());
        let ticket = store.request_sync().context("no sync thread")?;
        waiting.push_back((ticket, t));
        done += 1;
        note_synced(store, &mut waiting, &mut lat)?;
    }
    while !waiting.is_empty() {
        std::thread::sleep(Duration::from_micros(50));
        note_synced(store, &mut waiting, &mut lat)?;
    }
    let took = start.elapsed();
    lat.sort_unstable();
    commit.sort_unstable();
    let r = rate(done, took);
    println!(
        "b. append one event per tx, Durability::Full synced behind by a thread of its own, checkpoints on their own thread: sample {done} events durable in {:.2} s = {r:.0} events/s (target >= 5000: {}); commit p50 {} p99 {}; commit to synced p50 {} p99 {} max {}",
        took.as_secs_f64(),
        verdict(r >= 5_000.0),
        micros(percentile(&commit, 50.0)),
        micros(percentile(&commit, 99.0)),
        micros(percentile(&lat, 50.0)),
        micros(percentile(&lat, 99.0)),
        micros(percentile(&lat, 100.0)),
    );
    Ok(())
}

/// Moves the events whose ticket the sync thread has reached from `waiting` to `lat`.
fn note_synced(
    store: &paydvm_ledger::store::Store,
    waiting: &mut std::collections::VecDeque<(u64, Instant)>,
    lat: &mut Vec<Duration>,
) -> anyhow::Result<()> {
    let through = store.synced().context("no sync thread")??;
    let now = Instant::now();
    while let Some(&(ticket, started)) = waiting.front() {
        if ticket > through {
            break;
        }
        lat.push(now - started);
        waiting.pop_front();
    }
    Ok(())
}

/// The first `n` events of the workload's jobs, in order (the same events in every run).
fn events(n: u64) -> impl Iterator<Item = paydvm_ledger::LedgerEvent> {
    let mut work = Workload::new(0xD1B5_4A32_D192_ED03);
    std::iter::from_fn(move || Some(work.next_job().events))
        .flatten()
        .take(usize::try_from(n).unwrap_or(usize::MAX))
}
