//! a. Group commit: `groups_per_tx` jobs (one group each) per transaction, `Durability::Normal`.

use std::time::{Duration, Instant};

use anyhow::Context;
use paydvm::ledger_handle::LedgerHandle;
use paydvm_ledger::LedgerStore;
use paydvm_testkit::workload::{JobGroup, Workload};

use crate::report::{rate, verdict};

pub const WORKLOAD_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// The job ids and payment references written to the big ledger, for audit queries.
pub struct Sample {
    pub events: u64,
    pub jobs: Vec<String>,
    pub payments: Vec<String>,
}

/// Writes the workload's first `target` events (whole groups) to `store`.
pub fn run(store: &mut LedgerHandle, target: u64, groups_per_tx: usize) -> anyhow::Result<Sample> {
    let (sample, txs, append, gen) = fill(store, target, groups_per_tx)?;
    let r = rate(sample.events, append);
    println!(
        "a. append_batch, Durability::Normal, {groups_per_tx} job groups/tx: {} events, {} jobs, {txs} txs in {:.2} s = {:.0} events/s (target >= 200000: {})",
        sample.events,
        sample.jobs.len(),
        append.as_secs_f64(),
        r,
        verdict(r >= 200_000.0)
    );
    println!(
        "   (generating the events took another {:.2} s, not included)",
        gen.as_secs_f64()
    );
    Ok(sample)
}

/// The batched writes; returns the sample, the transactions, the append and generation times.
pub fn fill(
    store: &mut LedgerHandle,
    target: u64,
    groups_per_tx: usize,
) -> anyhow::Result<(Sample, u64, Duration, Duration)> {
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
    Ok((sample, txs, append_time, gen_time))
}
