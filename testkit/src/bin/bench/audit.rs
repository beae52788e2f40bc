//! d. Audit latency: random job ids and payment references, alternating.

use std::time::{Duration, Instant};

use anyhow::Context;
use paydvm::ledger_handle::LedgerHandle;
use paydvm_ledger::LedgerStore;
use paydvm_testkit::bench_stats::percentile;
use paydvm_testkit::workload::XorShift;

use crate::batched::Sample;
use crate::report::{micros, verdict};

pub fn run(
    store: &LedgerHandle,
    sample: &Sample,
    queries: usize,
    budget: Duration,
) -> anyhow::Result<()> {
    let mut rng = XorShift::new(0x2545_F491_4F6C_DD1D);
    let mut by_job = Vec::with_capacity(queries / 2 + 1);
    let mut by_payment = Vec::with_capacity(queries / 2 + 1);
    let mut events_seen = 0usize;
    let start = Instant::now();
    for q in 0..queries {
        if start.elapsed() > budget {
            println!(
                "   (audit: stopped after {q} of {queries} queries, {} s budget spent)",
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
            "d. audit, {kind}: {} queries, p50 {} p99 {} max {} (target p99 <= 1 ms: {})",
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
