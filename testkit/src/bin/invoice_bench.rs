//! paydvm-invoice-bench: latency from an invoice's settlement notification to the job's
//! processing start, for N priced jobs paid by Lightning invoices. Not a test: it prints numbers.
//!
//! `cargo run --release -p paydvm-testkit --bin paydvm-invoice-bench -- [--jobs N] [--interval-ms MS]`
//!
//! One process: an embedded LocalRelay, the node with the built-in `FakeLightning` backend (it
//! sends settlement notifications), and one customer. Untimed set-up: N requests (kind 5050,
//! 5000 msat) are quoted, each quote carrying an invoice from the backend. Timed: the invoices
//! are settled one after another (`--interval-ms` apart, 0 = one burst); t0 is taken just before
//! `FakeLightning::settle` (which sends the notification) and t1 is the ledger's
//! `processing_started` time for its job. t1 − t0 covers the notification, the watcher's
//! confirming `lookup_invoice`, the core's booking group (payment + queue) and dispatch. Both
//! clocks are this machine's wall clock in ms.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use nostr_sdk::prelude::*;
use paydvm::node::now_ms;
use paydvm_ledger::{JobState, Msat};
use paydvm_testkit::bench_node::{
    ms, priced_node, processing_latencies, publish_priced_requests, quoted_invoices,
    wait_job_state, PaidJobsArgs, PRICE_MSAT,
};
use paydvm_testkit::bench_stats::percentile;
use paydvm_testkit::fixture::Fixture;

#[derive(Debug, Parser)]
#[command(about = "Measure invoice settlement → processing start latency of a paydvm node")]
struct Args {
    #[command(flatten)]
    paid: PaidJobsArgs,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The relay and the node directory (removed when `fixture` drops), on a fake Lightning.
    let mut fixture = Fixture::builder(priced_node())
        .named_dir("invoice-bench")
        .fake_lightning()
        .build()
        .await?;
    let url = fixture.urls[0].clone();
    let lightning = fixture
        .lightning
        .clone()
        .context("the fixture's Lightning")?;
    let node = fixture.start().await?;
    let deadline = Instant::now() + Duration::from_secs(args.paid.timeout_secs);

    // Set-up (untimed): N quoted jobs, each with its invoice.
    let customer = Keys::generate();
    let (client, ids) = publish_priced_requests(&customer, &url, args.paid.jobs).await?;
    let requests: Vec<String> = ids.iter().map(EventId::to_hex).collect();
    for job in &requests {
        wait_job_state(&node, job, JobState::Quoted, deadline).await?;
    }
    let invoices = quoted_invoices(&node, &requests)?;
    println!("{} jobs quoted, each with an invoice", invoices.len());

    // Timed: settle every invoice; each settlement notifies the node's watcher.
    let mut settled_at: HashMap<String, u64> = HashMap::new();
    let started = Instant::now();
    for (job, hash) in &invoices {
        settled_at.insert(job.clone(), now_ms());
        lightning.settle(hash)?;
        if args.paid.interval_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.paid.interval_ms)).await;
        }
    }
    let settle_time = started.elapsed();
    for job in &requests {
        wait_job_state(&node, job, JobState::Succeeded, deadline).await?;
    }
    let all_done = started.elapsed();
    node.shutdown().await;
    client.shutdown().await;
    fixture.shutdown().await;

    let store = fixture.store()?;
    let latencies = processing_latencies(&store, &settled_at)?;
    println!(
        "settled {} invoices (interval {} ms) in {}; all jobs succeeded after {}",
        invoices.len(),
        args.paid.interval_ms,
        ms(settle_time),
        ms(all_done)
    );
    println!(
        "settlement notification → processing_started: p50 {} · p99 {} · max {} (ms resolution)",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
    );
    let booked = store.state().balance(&paydvm_ledger::Account::Asset(
        paydvm_ledger::Asset::Lightning,
    ));
    let expected = Msat::from_msat(PRICE_MSAT * invoices.len() as u64);
    if booked.debits != expected {
        bail!(
            "asset:lightning received {}, expected {expected}",
            booked.debits
        );
    }
    match store.verify() {
        Ok(_) => println!("ledger verify OK; asset:lightning received {expected}"),
        Err(e) => bail!("ledger verify failed: {e}"),
    }
    Ok(())
}
