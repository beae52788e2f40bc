//! a. The store's own work per event outside the database, timed on the same workload: state
//! apply (`Ledger::prepare`), JSON encoding of the body, and the SHA-256 chain.

use std::time::{Duration, Instant};

use paydvm_testkit::workload::Workload;
use sha2::{Digest, Sha256};

use crate::batched::WORKLOAD_SEED;

pub fn run(target: u64, groups_per_tx: usize) -> anyhow::Result<()> {
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
        "   split of the same {n} events outside the database: state apply {:.2} s, JSON encode {:.2} s, SHA-256 {:.2} s (the rest of the append time is the database: inserts, commit, round trips)",
        apply.as_secs_f64(),
        encode.as_secs_f64(),
        hash.as_secs_f64()
    );
    Ok(())
}
