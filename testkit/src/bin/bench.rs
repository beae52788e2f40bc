//! paydvm-bench: throughput and latency of the ledger store. Not a test: it prints numbers.
//!
//! `cargo run --release -p paydvm-testkit --bin paydvm-bench -- [--events N]`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Parser;
use paydvm_ledger::store::{verify_file, Durability, Store};

#[derive(Debug, Parser)]
#[command(about = "Measure the paydvm ledger store")]
struct Args {
    /// Events in the big file (batched append, replay, verify, audit).
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
    /// Set SQLite's page cache to this many MiB on the big file's connections (0: the store's
    /// default), to see how much of the append and audit time is cache misses.
    #[arg(long, default_value_t = 0)]
    cache_mib: u64,
    /// Keep the ledger files afterwards (e.g. to run `paydvm ledger verify` under perf).
    #[arg(long)]
    keep: bool,
}

/// The ledger files one run writes, each with its `-wal` and `-shm` companions.
const FILES: [&str; 3] = ["big.db", "full.db", "normal.db"];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (dir, own_dir) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("paydvm-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for f in FILES {
        ensure!(
            !dir.join(f).exists(),
            "{} already holds {f}; give an empty directory",
            dir.display()
        );
    }
    println!(
        "paydvm-bench: {} events, {} cores, files in {}",
        args.events,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        dir.display()
    );
    let result = run(&args, &dir);
    if !args.keep {
        // Best effort: leftover bench files are not worth failing the run for.
        if own_dir {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            for f in FILES {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(dir.join(format!("{f}{suffix}")));
                }
            }
        }
    }
    result
}

fn run(args: &Args, dir: &Path) -> anyhow::Result<()> {
    let big = dir.join("big.db");
    let sample = phases::batched(&big, args.events, args.groups_per_tx, args.cache_mib)?;
    let events = sample.events;
    let size = report::file_size(&big);
    println!(
        "   file size: {:.1} MiB ({} bytes/event)",
        size as f64 / 1_048_576.0,
        size / events.max(1)
    );
    report::memory("after batched append");
    phases::append_split(events, args.groups_per_tx)?;

    phases::single(&dir.join("full.db"), args.single, Durability::Full, "Full")?;
    phases::single(
        &dir.join("normal.db"),
        args.single,
        Durability::Normal,
        "Normal",
    )?;

    phases::verify(&big, events)?;
    let store = phases::open(&big, events, args.cache_mib)?;
    phases::breakdown(&big)?;
    phases::projections(&store)?;
    report::memory("after replay");

    let budget = Duration::from_secs(args.audit_budget_secs);
    phases::audit(&store, &sample, args.queries, budget, "as stored")?;
    drop(store);
    report::memory("at the end");
    Ok(())
}

/// Printing figures, percentiles and memory.
mod report {
    use paydvm_testkit::bench_stats::status_kib;
    use std::path::Path;
    use std::time::Duration;

    pub fn rate(events: u64, d: Duration) -> f64 {
        events as f64 / d.as_secs_f64().max(1e-9)
    }

    pub fn verdict(met: bool) -> &'static str {
        if met {
            "MET"
        } else {
            "MISSED"
        }
    }

    pub fn micros(d: Duration) -> String {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    }

    /// The database plus whatever is left in its WAL.
    pub fn file_size(db: &Path) -> u64 {
        let wal = db.with_extension("db-wal");
        [db, wal.as_path()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    pub fn memory(when: &str) {
        match (status_kib("VmHWM:"), status_kib("VmRSS:")) {
            (Some(peak), Some(now)) => println!(
                "   memory {when}: peak RSS {:.0} MiB, current RSS {:.0} MiB",
                peak as f64 / 1024.0,
                now as f64 / 1024.0
            ),
            _ => println!("   memory {when}: /proc/self/status unavailable"),
        }
    }
}

/// The measured phases, each printing its own lines.
mod phases {
    use super::*;
    use paydvm_testkit::bench_stats::percentile;
    use paydvm_testkit::workload::{JobGroup, Workload, XorShift};
    use report::{micros, rate, verdict};

    const WORKLOAD_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

    /// The job ids and payment references written to the big file, for audit queries.
    pub struct Sample {
        pub events: u64,
        pub jobs: Vec<String>,
        pub payments: Vec<String>,
    }

    /// a. Group commit: `groups_per_tx` jobs (one group each) per transaction.
    /// Apply `--cache-mib` to a store's connection.
    fn tune(store: &Store, cache_mib: u64) -> anyhow::Result<()> {
        if cache_mib > 0 {
            let kib = i64::try_from(cache_mib * 1024)?;
            // A negative cache_size is a size in KiB rather than in pages.
            store.connection().pragma_update(None, "cache_size", -kib)?;
            println!("   (SQLite page cache set to {cache_mib} MiB)");
        }
        Ok(())
    }

    pub fn batched(
        path: &Path,
        target: u64,
        groups_per_tx: usize,
        cache_mib: u64,
    ) -> anyhow::Result<Sample> {
        let mut store = Store::open(path, Durability::Normal)?;
        tune(&store, cache_mib)?;
        let mut work = Workload::new(WORKLOAD_SEED);
        let mut sample = Sample {
            events: 0,
            jobs: Vec::new(),
            payments: Vec::new(),
        };
        let (mut gen_time, mut append_time, mut txs) = (Duration::ZERO, Duration::ZERO, 0u64);
        while sample.events < target {
            let t = Instant::now();
            let mut batch: Vec<JobGroup> = Vec::with_capacity(groups_per_tx);
            let mut in_batch = 0u64;
            while batch.len() < groups_per_tx && sample.events + in_batch < target {
                let g = work.next_job();
                in_batch += g.events.len() as u64;
                batch.push(g);
            }
            let groups: Vec<&[paydvm_ledger::LedgerEvent]> =
                batch.iter().map(|g| g.events.as_slice()).collect();
            gen_time += t.elapsed();

            let t = Instant::now();
            let results = store.append_batch(&groups)?;
            append_time += t.elapsed();
            txs += 1;
            for (r, g) in results.into_iter().zip(&batch) {
                r.with_context(|| format!("workload bug: job {} refused", g.job))?;
            }
            sample.events += in_batch;
            for g in batch {
                sample.payments.extend(g.payment);
                sample.jobs.push(g.job);
            }
        }
        let t = Instant::now();
        store.close()?;
        let close_time = t.elapsed();
        let total = append_time + close_time;
        let r = rate(sample.events, total);
        println!(
            "a. append_batch, Durability::Normal, {groups_per_tx} job groups/tx: {} events, {} jobs, {txs} txs in {:.2} s = {:.0} events/s (target >= 200000: {})",
            sample.events,
            sample.jobs.len(),
            total.as_secs_f64(),
            r,
            verdict(r >= 200_000.0)
        );
        println!(
            "   (close/checkpoint {:.2} s included; generating the events took another {:.2} s, not included)",
            close_time.as_secs_f64(),
            gen_time.as_secs_f64()
        );
        Ok(sample)
    }

    /// a. The store's own work per event outside SQLite, timed on the same workload: state
    /// apply (`Ledger::prepare`), JSON encoding of the body, and the SHA-256 chain.
    pub fn append_split(target: u64, groups_per_tx: usize) -> anyhow::Result<()> {
        use sha2::{Digest, Sha256};

        let mut work = Workload::new(WORKLOAD_SEED);
        let mut ledger = paydvm_ledger::Ledger::new();
        let (mut apply, mut encode, mut hash) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let mut head = [0u8; 32];
        let mut n = 0u64;
        while n < target {
            for _ in 0..groups_per_tx {
                if n >= target {
                    break;
                }
                let g = work.next_job();
                let t = Instant::now();
                ledger.prepare(&g.events)?;
                apply += t.elapsed();
                for e in &g.events {
                    let t = Instant::now();
                    let body = serde_json::to_string(&e.body)?;
                    let t1 = Instant::now();
                    encode += t1 - t;
                    let mut h = Sha256::new();
                    h.update(head);
                    h.update(n.to_be_bytes());
                    h.update(e.at.0.to_be_bytes());
                    h.update(e.key.as_str().as_bytes());
                    h.update(body.as_bytes());
                    head = h.finalize().into();
                    hash += t1.elapsed();
                    n += 1;
                }
            }
        }
        println!(
            "   split of the same {n} events outside SQLite: state apply {:.2} s, JSON encode {:.2} s, SHA-256 {:.2} s (the rest of the append time is SQLite: inserts, commit, WAL checkpoint)",
            apply.as_secs_f64(),
            encode.as_secs_f64(),
            hash.as_secs_f64()
        );
        Ok(())
    }

    /// b. One transaction per event.
    pub fn single(path: &Path, n: u64, durability: Durability, label: &str) -> anyhow::Result<()> {
        let mut store = Store::open(path, durability)?;
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
            "b. append one event per tx, Durability::{label}: sample {done} events in {:.2} s = {r:.0} events/s{target}; commit p50 {} p99 {} max {}",
            busy.as_secs_f64(),
            micros(percentile(&lat, 50.0)),
            micros(percentile(&lat, 99.0)),
            micros(percentile(&lat, 100.0)),
        );
        store.close()?;
        Ok(())
    }

    /// c. `verify_file` from scratch.
    pub fn verify(path: &Path, events: u64) -> anyhow::Result<()> {
        let t = Instant::now();
        let report = verify_file(path).map_err(|e| anyhow::anyhow!("verify failed: {e}"))?;
        let d = t.elapsed();
        ensure!(
            report.events == events,
            "verify saw {} events",
            report.events
        );
        let r = rate(events, d);
        println!(
            "c. verify_file: {events} events in {:.2} s = {r:.0} events/s (target >= 1000000: {})",
            d.as_secs_f64(),
            verdict(r >= 1_000_000.0)
        );
        Ok(())
    }

    /// c. `Store::open`: replay into memory.
    pub fn open(path: &Path, events: u64, cache_mib: u64) -> anyhow::Result<Store> {
        let t = Instant::now();
        let store = Store::open(path, Durability::Normal)?;
        let d = t.elapsed();
        tune(&store, cache_mib)?;
        ensure!(
            store.head().0 == events,
            "replayed {} events",
            store.head().0
        );
        println!(
            "c. Store::open (replay into memory): {events} events in {:.2} s = {:.0} events/s",
            d.as_secs_f64(),
            rate(events, d)
        );
        Ok(store)
    }

    /// c. Where replay and verify spend their time: the same work as the store does, one phase
    /// at a time, each timed on its own.
    pub fn breakdown(path: &Path) -> anyhow::Result<()> {
        use paydvm_ledger::{EventBody, IdemKey, Ledger, LedgerEvent, UnixMs};
        use sha2::{Digest, Sha256};

        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let (mut read, mut decode, mut hash, mut apply) = (
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
        );
        let mut ledger = Ledger::new();
        let mut head = [0u8; 32];
        let mut n = 0u64;
        let mut body_bytes = 0u64;
        let total = Instant::now();
        let mut stmt = conn.prepare(
            "SELECT seq, idem_key, at, job, body, prev_hash, hash FROM events ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        loop {
            let t = Instant::now();
            let Some(row) = rows.next()? else { break };
            let seq: i64 = row.get(0)?;
            let key: String = row.get(1)?;
            let at: i64 = row.get(2)?;
            let _job: Option<String> = row.get(3)?;
            let body: String = row.get(4)?;
            let _prev: Vec<u8> = row.get(5)?;
            let stored: Vec<u8> = row.get(6)?;
            let t1 = Instant::now();
            read += t1 - t;

            let event = LedgerEvent::new(
                IdemKey::new(key.clone())?,
                UnixMs(at as u64),
                serde_json::from_str::<EventBody>(&body)?,
            );
            let t2 = Instant::now();
            decode += t2 - t1;

            let mut h = Sha256::new();
            h.update(head);
            h.update((seq as u64).to_be_bytes());
            h.update((at as u64).to_be_bytes());
            h.update((key.len() as u64).to_be_bytes());
            h.update(key.as_bytes());
            h.update((body.len() as u64).to_be_bytes());
            h.update(body.as_bytes());
            head = h.finalize().into();
            ensure!(head[..] == stored[..], "hash mismatch at {seq}");
            let t3 = Instant::now();
            hash += t3 - t2;

            ledger.prepare(std::slice::from_ref(&event))?;
            apply += t3.elapsed();
            n += 1;
            body_bytes += body.len() as u64;
        }
        let whole = total.elapsed();
        let share = |d: Duration| 100.0 * d.as_secs_f64() / whole.as_secs_f64();
        println!(
            "   split of one pass over {n} events ({:.2} s, avg body {} B): SQLite read {:.2} s ({:.0}%), JSON decode {:.2} s ({:.0}%), SHA-256 chain {:.2} s ({:.0}%), state apply {:.2} s ({:.0}%)",
            whole.as_secs_f64(),
            body_bytes / n.max(1),
            read.as_secs_f64(),
            share(read),
            decode.as_secs_f64(),
            share(decode),
            hash.as_secs_f64(),
            share(hash),
            apply.as_secs_f64(),
            share(apply),
        );
        let count = |sql: &str| -> anyhow::Result<(u64, Duration)> {
            let t = Instant::now();
            let mut stmt = conn.prepare(sql)?;
            let mut rows = stmt.query([])?;
            let mut n = 0u64;
            while let Some(r) = rows.next()? {
                let _: i64 = r.get(0)?;
                n += 1;
            }
            Ok((n, t.elapsed()))
        };
        let (np, tp) = count("SELECT seq, debit, credit, amount FROM postings ORDER BY seq, n")?;
        let (nr, tr) = count("SELECT seq, reference, job FROM refs ORDER BY seq, reference")?;
        println!(
            "   verify's extra scans: postings ({np} rows) {:.2} s, refs ordered by seq ({nr} rows, sorted by SQLite) {:.2} s",
            tp.as_secs_f64(),
            tr.as_secs_f64()
        );
        Ok(())
    }

    /// c. verify's last step: every projection row re-serialised from the replayed state.
    pub fn projections(store: &Store) -> anyhow::Result<()> {
        let t = Instant::now();
        let mut stmt = store.connection().prepare("SELECT job, record FROM jobs")?;
        let mut rows = stmt.query([])?;
        let mut n = 0u64;
        while let Some(r) = rows.next()? {
            let job: String = r.get(0)?;
            let record: String = r.get(1)?;
            let id = paydvm_ledger::JobId::new(job)?;
            let rec = store.state().job(&id).context("job row not in state")?;
            ensure!(serde_json::to_string(rec)? == record, "job row differs");
            n += 1;
        }
        println!(
            "   verify's projection check, jobs table only ({n} rows re-serialised and compared): {:.2} s",
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// d. Audit latency: random job ids and payment references, alternating.
    pub fn audit(
        store: &Store,
        sample: &Sample,
        queries: usize,
        budget: Duration,
        label: &str,
    ) -> anyhow::Result<()> {
        let mut rng = XorShift::new(0x2545_F491_4F6C_DD1D);
        let mut by_job = Vec::with_capacity(queries / 2 + 1);
        let mut by_payment = Vec::with_capacity(queries / 2 + 1);
        let mut events_seen = 0usize;
        let start = Instant::now();
        for q in 0..queries {
            if start.elapsed() > budget {
                println!(
                    "   (audit {label}: stopped after {q} of {queries} queries, {} s budget spent)",
                    budget.as_secs()
                );
                break;
            }
            let (reference, lat) = if q % 2 == 0 || sample.payments.is_empty() {
                let i = rng.below(sample.jobs.len() as u64) as usize;
                (&sample.jobs[i], &mut by_job)
            } else {
                let i = rng.below(sample.payments.len() as u64) as usize;
                (&sample.payments[i], &mut by_payment)
            };
            let t = Instant::now();
            let trail = store.audit(reference)?;
            lat.push(t.elapsed());
            events_seen += trail.context("sampled reference not found")?.events.len();
        }
        let mut all: Vec<Duration> = by_job.iter().chain(&by_payment).copied().collect();
        for (kind, lat) in [
            ("by job id", &mut by_job),
            ("by payment ref", &mut by_payment),
            ("all", &mut all),
        ] {
            lat.sort_unstable();
            let p99 = percentile(lat, 99.0);
            println!(
                "d. audit {label}, {kind}: {} queries, p50 {} p99 {} max {} (target p99 <= 1 ms: {})",
                lat.len(),
                micros(percentile(lat, 50.0)),
                micros(p99),
                micros(percentile(lat, 100.0)),
                verdict(p99 <= Duration::from_millis(1))
            );
        }
        println!(
            "   ({:.1} events per trail on average)",
            events_seen as f64 / all.len().max(1) as f64
        );
        Ok(())
    }
}
