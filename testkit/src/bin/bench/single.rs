//! b. One transaction per event.

use std::time::{Duration, Instant};

use paydvm::ledger_handle::LedgerHandle;
use paydvm_ledger::{Durability, LedgerStore};
use paydvm_testkit::bench_stats::percentile;
use paydvm_testkit::workload::Workload;

use crate::report::{micros, rate, verdict};

pub fn run(store: &mut LedgerHandle, n: u64, durability: Durability) -> anyhow::Result<()> {
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
        "b. append one event per tx, Durability::{durability:?}: sample {done} events in {:.2} s = {r:.0} events/s{target}; commit p50 {} p99 {} max {}",
        busy.as_secs_f64(),
        micros(percentile(&lat, 50.0)),
        micros(percentile(&lat, 99.0)),
        micros(percentile(&lat, 100.0)),
    );
    Ok(())
}
