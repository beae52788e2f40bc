//! paydvm-bench: throughput and latency of the ledger store, on SQLite or PostgreSQL. Not a
//! test: it prints numbers (see `docs/benchmarks.md`).
//!
//! `cargo run --release -p paydvm-testkit --bin paydvm-bench -- [--events N] [--store pg]`

mod audit;
mod batched;
mod copy;
mod replay;
mod report;
mod single;
mod split;
mod stores;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use paydvm_ledger::{Durability, LedgerStore, StoreOptions};

use stores::Stores;

#[derive(Debug, Parser)]
#[command(about = "Measure the paydvm ledger store")]
pub struct Args {
    /// Which store to measure.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    /// A PostgreSQL server to measure (`--store pg`): the bench creates its databases there
    /// (`paydvm_bench_<pid>_<name>`, so the role needs CREATEDB) and drops them at the end.
    /// Without it, a throwaway durable cluster (fsync on) is started in a temporary directory.
    #[arg(long)]
    pg_url: Option<String>,
    /// What the stores keep in memory: `open-work` (what the node runs with) or `everything`.
    #[arg(long, value_enum, default_value_t = RetentionArg::OpenWork)]
    retention: RetentionArg,
    /// Events in the big ledger (batched append, replay, verify, audit, copy).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Events appended one transaction each, per durability mode.
    #[arg(long, default_value_t = 20_000)]
    single: u64,
    /// Job groups per transaction in the batched run.
    #[arg(long, default_value_t = 1_000)]
    groups_per_tx: usize,
    /// Audit queries to time.
    #[arg(long, default_value_t = 10_000)]
    queries: usize,
    /// Directory for the ledger files (default: a fresh one under the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Stop each audit measurement after this many seconds, whatever `--queries` says.
    #[arg(long, default_value_t = 60)]
    audit_budget_secs: u64,
    /// SQLite only: the page cache in MiB on the big file's connections (0: the default).
    #[arg(long, default_value_t = 0)]
    cache_mib: u64,
    /// Skip the copy measurement.
    #[arg(long)]
    no_copy: bool,
    /// Keep the ledger files (and the databases of `--pg-url`) afterwards.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    Sqlite,
    Pg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RetentionArg {
    OpenWork,
    Everything,
}

impl Args {
    /// The options every store of the run is opened with, at `durability`.
    pub fn options(&self, durability: Durability) -> StoreOptions {
        match self.retention {
            RetentionArg::OpenWork => StoreOptions::bounded(durability),
            RetentionArg::Everything => StoreOptions::everything(durability),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut stores = Stores::new(&args)?;
    println!(
        "paydvm-bench: {:?} store, {} events, retention {:?}, {} cores, load average {} (1 5 15 min), files in {}",
        args.store,
        args.events,
        args.retention,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        paydvm_testkit::bench_stats::load_average(),
        stores.dir().display()
    );
    let result = run(&args, &mut stores);
    println!(
        "load average at the end: {}",
        paydvm_testkit::bench_stats::load_average()
    );
    stores.clean_up(args.keep);
    result
}

fn run(args: &Args, stores: &mut Stores) -> anyhow::Result<()> {
    let big = stores.place("big")?;
    let mut store = stores.open(&big, &args.options(Durability::Normal))?;
    stores.tune(&store, args.cache_mib)?;
    let sample = batched::run(&mut store, args.events, args.groups_per_tx)?;
    store.close()?;
    stores.print_size(&big, sample.events);
    report::memory("after batched append");
    split::run(sample.events, args.groups_per_tx)?;

    for (name, durability, checkpoints) in [
        ("full", Durability::Full, single::Checkpoints::InTheCommit),
        (
            "full-ckpt",
            Durability::Full,
            single::Checkpoints::OwnThread,
        ),
        (
            "full-behind",
            Durability::Full,
            single::Checkpoints::OwnThreadSyncedBehind,
        ),
        (
            "normal",
            Durability::Normal,
            single::Checkpoints::InTheCommit,
        ),
    ] {
        let place = stores.place(name)?;
        let mut store = stores.open(&place, &args.options(durability))?;
        if !checkpoints.start(&mut store)? {
            store.close()?;
            continue;
        }
        single::run(&mut store, args.single, durability, checkpoints)?;
        store.close()?;
    }

    replay::verify(stores, &big, sample.events)?;
    replay::open_everything(stores, &big, sample.events)?;
    let store = replay::open(
        stores,
        &big,
        &args.options(Durability::Normal),
        sample.events,
    )?;
    stores.tune(&store, args.cache_mib)?;
    if let Some(sqlite) = store.sqlite() {
        replay::breakdown(sqlite)?;
        replay::projections(sqlite)?;
    }
    report::memory("after open");
    let budget = Duration::from_secs(args.audit_budget_secs);
    audit::run(&store, &sample, args.queries, budget)?;
    drop(store);
    if !args.no_copy {
        copy::run(args, stores, &big).context("copy measurement")?;
    }
    report::memory("at the end");
    Ok(())
}
