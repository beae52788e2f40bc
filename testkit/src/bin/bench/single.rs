//! b. One transaction per event.

use std::time::{Duration, Instant};

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
    /// On a thread of their own, as the node runs its ledger (`Store::checkpoint_in_background`).
    OwnThread,
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
            (Checkpoints::OwnThread, LedgerHandle::Postgres(_)) => Ok(false),
        }
    }
}

pub fn run(
    store: &mut LedgerHandle,
    n: u64,
    durability: Durability,
    checkpoints: Checkpoints,
) -> anyhow::Result<()> {
    let mut work = Workload::new(0xD1B5_4A32_D192_ED03);
    let mut done = 0u64;
    let mut lat = Vec::with_capacity(n as usize);
    let mut busy = Duration::ZERO;
    'outer: loop {
        let g = work.next_job();
        for e in &g.events {
            if done == n {
                break 'outer;
            }
            let t = Instant::now();
            store.append(e)?;
            let d = t.elapsed();
            busy += d;
            lat.push(d);
            done += 1;
        }
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
