//! e. `copy_log` (what `paydvm ledger copy` runs) with the big ledger's history: SQLite →
//! PostgreSQL, and PostgreSQL → SQLite. Only with `--store pg`; the SQLite source is written
//! first with the same workload.

use std::time::Instant;

use paydvm::config::LedgerPlace;
use paydvm_ledger::copy::copy_log;
use paydvm_ledger::{Durability, LedgerStore, StoreOptions};

use crate::report::rate;
use crate::stores::Stores;
use crate::{batched, Args, StoreKind};

pub fn run(args: &Args, stores: &mut Stores, big: &LedgerPlace) -> anyhow::Result<()> {
    if args.store != StoreKind::Pg {
        return Ok(());
    }
    // The options of `paydvm ledger copy`: a read-only source, a durable destination.
    let source_options = StoreOptions::bounded(Durability::Normal).read_only();
    let dest_options = StoreOptions::bounded(Durability::Full);

    let file = stores.file("copy-source")?;
    let mut sqlite = stores.open(&file, &args.options(Durability::Normal))?;
    let (sample, _, _, _) = batched::fill(&mut sqlite, args.events, args.groups_per_tx)?;
    sqlite.close()?;
    let source = stores.open(&file, &source_options)?;
    let dest = stores.place("copy")?;
    let mut pg = stores.open(&dest, &dest_options)?;
    let n = timed_copy("SQLite -> PostgreSQL", &source, &mut pg)?;
    drop((source, pg));
    anyhow::ensure!(n == sample.events, "copied {n} of {} events", sample.events);

    let source = stores.open(big, &source_options)?;
    let back = stores.file("copy-back")?;
    let mut sqlite = stores.open(&back, &dest_options)?;
    timed_copy("PostgreSQL -> SQLite", &source, &mut sqlite)?;
    Ok(())
}

/// `copy_log` from `source` to `dest`, timed and printed; the events copied.
fn timed_copy<S: LedgerStore, D: LedgerStore>(
    direction: &str,
    source: &S,
    dest: &mut D,
) -> anyhow::Result<u64> {
    let t = Instant::now();
    let n = copy_log(source, dest)?;
    let d = t.elapsed();
    println!(
        "e. copy_log {direction}: {n} events in {:.2} s = {:.0} events/s",
        d.as_secs_f64(),
        rate(n, d)
    );
    Ok(n)
}
