//! Restart and memory figures of a ledger that keeps only open work (issue 11). Not a test: it
//! prints numbers for `docs/benchmarks.md`.
//!
//! `cargo run --release -p paydvm-ledger --example restart_bench -- [EVENTS] [DIR]`
//!
//! Builds an EVENTS-event ledger (default 1 000 000) from the same deterministic job mix as
//! `paydvm-bench` (`testkit/src/workload`, included by path so this runs without building the node),
//! then opens it in child processes so that each open's peak RSS (VmHWM) is its own: keeping
//! everything (before), open work from a snapshot, open work without one, and a snapshot plus a
//! tail. Then durable single appends on the big file and `verify_file`.
//!
//! `… --example restart_bench -- --compare [EVENTS]` (default 200 000) measures append costs of
//! both retentions back to back on one file, so that both see the same machine load.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use paydvm_ledger::store::{verify_file, Store};
use paydvm_ledger::{Durability, LedgerEvent, LedgerStore, StoreOptions};

#[allow(dead_code, unused_imports)]
#[path = "../../testkit/src/workload/mod.rs"]
mod workload;

const WORKLOAD_SEED: u64 = 0x9E37_79B9_7F4A_7C15;
const GROUPS_PER_TX: usize = 1_000;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--open") {
        return child_open(Path::new(&args[1]), &args[2]);
    }
    if args.first().map(String::as_str) == Some("--compare") {
        let events = args
            .get(1)
            .map_or(Ok(200_000), |n| n.replace('_', "").parse())?;
        return compare(events);
    }
    let events: u64 = match args.first() {
        Some(n) => n.replace('_', "").parse()?,
        None => 1_000_000,
    };
    let dir = match args.get(1) {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("paydvm-restart-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("restart.db");
    if path.exists() {
        return Err(format!("{} exists; give an empty directory", path.display()).into());
    }
    println!(
        "restart_bench: {events} events, load average {}",
        load_average()
    );
    let result = run(&path, events);
    println!("load average at the end {}", load_average());
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(path: &Path, events: u64) -> Result<()> {
    let mut work = workload::Workload::new(WORKLOAD_SEED);
    build(path, events, &mut work)?;
    spawn_open(path, "everything")?;
    spawn_open(path, "bounded")?;
    let conn = rusqlite::Connection::open(path)?;
    conn.execute("DELETE FROM snapshots", [])?;
    drop(conn);
    println!("   (snapshot deleted)");
    spawn_open(path, "bounded")?;
    tail(path, StoreOptions::SNAPSHOT_EVERY - 1, &mut work)?;
    spawn_open(path, "bounded")?;
    single(path, 5_000, &mut work)?;
    let t = Instant::now();
    let report = verify_file(path).map_err(|e| format!("verify: {e}"))?;
    let d = t.elapsed();
    println!(
        "verify_file: {} events in {:.2} s = {:.0} events/s",
        report.events,
        d.as_secs_f64(),
        rate(report.events, d)
    );
    Ok(())
}

/// Append costs keeping everything vs open work, alternating on one file.
fn compare(events: u64) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("paydvm-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("compare.db");
    println!("compare: {events} events, load average {}", load_average());
    let mut work = workload::Workload::new(WORKLOAD_SEED);
    let result = (|| -> Result<()> {
        build_with(
            &path,
            events,
            &mut work,
            StoreOptions::everything(Durability::Normal),
        )?;
        for round in 0..2 {
            for (label, durability_options) in [
                ("everything", StoreOptions::everything(Durability::Full)),
                ("bounded", StoreOptions::bounded(Durability::Full)),
            ] {
                let mut store = <Store as LedgerStore>::open(&path, &durability_options)?;
                let t = Instant::now();
                let n = append_batched(&mut store, 20_000, &mut work)?;
                let d = t.elapsed();
                println!(
                    "round {round} {label}: append_batch {n} events in {:.2} s = {:.0} events/s",
                    d.as_secs_f64(),
                    rate(n, d)
                );
                single_on(&mut store, 1_000, &mut work, label)?;
                store.close()?;
            }
        }
        Ok(())
    })();
    println!("load average at the end {}", load_average());
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The big file, written by a bounded store with group commit.
fn build(path: &Path, target: u64, work: &mut workload::Workload) -> Result<()> {
    build_with(
        path,
        target,
        work,
        StoreOptions::bounded(Durability::Normal),
    )
}

fn build_with(
    path: &Path,
    target: u64,
    work: &mut workload::Workload,
    options: StoreOptions,
) -> Result<()> {
    let mut store = <Store as LedgerStore>::open(path, &options)?;
    let t = Instant::now();
    let written = append_batched(&mut store, target, work)?;
    store.close()?;
    let d = t.elapsed();
    println!(
        "build: append_batch ({:?}, Normal, {GROUPS_PER_TX} job groups/tx) {written} events in {:.2} s = {:.0} events/s; writer {}",
        options.retention,
        d.as_secs_f64(),
        rate(written, d),
        memory()
    );
    Ok(())
}

fn append_batched(store: &mut Store, target: u64, work: &mut workload::Workload) -> Result<u64> {
    let mut written = 0u64;
    while written < target {
        let mut batch = Vec::with_capacity(GROUPS_PER_TX);
        let mut in_batch = 0u64;
        while batch.len() < GROUPS_PER_TX && written + in_batch < target {
            let g = work.next_job();
            in_batch += g.events.len() as u64;
            batch.push(g);
        }
        let groups: Vec<&[LedgerEvent]> = batch.iter().map(|g| g.events.as_slice()).collect();
        for (r, g) in store.append_batch(&groups)?.into_iter().zip(&batch) {
            r.map_err(|e| format!("workload job {} refused: {e}", g.job))?;
        }
        written += in_batch;
    }
    Ok(written)
}

/// About one snapshot interval of events after the newest snapshot, left without a snapshot (as
/// after a crash just before the next one).
fn tail(path: &Path, n: u64, work: &mut workload::Workload) -> Result<()> {
    let options = StoreOptions::bounded(Durability::Normal).snapshot_every(0);
    let mut store = <Store as LedgerStore>::open(path, &options)?;
    let t = Instant::now();
    let written = append_batched(&mut store, n, work)?;
    let d = t.elapsed();
    println!(
        "tail: append_batch (bounded) {written} more events on the big file in {:.2} s = {:.0} events/s; dropped without a snapshot",
        d.as_secs_f64(),
        rate(written, d)
    );
    drop(store);
    Ok(())
}

/// One event per transaction, fsync each, on the big file (bounded).
fn single(path: &Path, n: usize, work: &mut workload::Workload) -> Result<()> {
    let options = StoreOptions::bounded(Durability::Full);
    let mut store = <Store as LedgerStore>::open(path, &options)?;
    single_on(&mut store, n, work, "bounded")?;
    store.close()?;
    Ok(())
}

fn single_on(
    store: &mut Store,
    n: usize,
    work: &mut workload::Workload,
    label: &str,
) -> Result<()> {
    let mut lat: Vec<Duration> = Vec::with_capacity(n);
    'jobs: loop {
        for e in work.next_job().events {
            if lat.len() == n {
                break 'jobs;
            }
            let t = Instant::now();
            store.append(&e)?;
            lat.push(t.elapsed());
        }
    }
    let busy: Duration = lat.iter().sum();
    lat.sort_unstable();
    println!(
        "single: append one event per tx ({label}, Full): {n} events in {:.2} s = {:.0} events/s; commit p50 {:.0} µs p99 {:.0} µs",
        busy.as_secs_f64(),
        rate(n as u64, busy),
        lat[n / 2].as_secs_f64() * 1e6,
        lat[n * 99 / 100].as_secs_f64() * 1e6
    );
    Ok(())
}

fn spawn_open(path: &Path, mode: &str) -> Result<()> {
    let out = Command::new(std::env::current_exe()?)
        .arg("--open")
        .arg(path)
        .arg(mode)
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        return Err(format!(
            "open child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// In a child process: open, report time to ready and peak RSS, close without writing.
fn child_open(path: &Path, mode: &str) -> Result<()> {
    let options = match mode {
        "everything" => StoreOptions::everything(Durability::Normal),
        _ => StoreOptions::bounded(Durability::Normal),
    };
    let t = Instant::now();
    let store: Store = <Store as LedgerStore>::open(path, &options)?;
    let d = t.elapsed();
    let o = store.opened();
    println!(
        "open ({mode}): ready in {:.3} s, head {}, replayed {}, snapshot {:?}, resident jobs {}; {}",
        d.as_secs_f64(),
        o.head,
        o.replayed,
        o.snapshot,
        store.state().jobs().count(),
        memory()
    );
    // Leave without the snapshot `close` would write: the next child sees the same file.
    drop(store);
    Ok(())
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn memory() -> String {
    match (status_kib("VmHWM:"), status_kib("VmRSS:")) {
        (Some(peak), Some(now)) => format!(
            "peak RSS {:.0} MiB, RSS {:.0} MiB",
            peak as f64 / 1024.0,
            now as f64 / 1024.0
        ),
        _ => "RSS unavailable".into(),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unavailable".into())
}
