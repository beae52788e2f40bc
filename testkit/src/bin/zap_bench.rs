//! paydvm-zap-bench: latency from a zap receipt's publication to the job's processing start, for
//! N priced jobs paid by zaps. Not a test: it prints numbers.
//!
//! `cargo run --release -p paydvm-testkit --bin paydvm-zap-bench -- [--jobs N]`
//!
//! One process: an embedded LocalRelay, the embedded LNURL-pay zapper (the node's lud16), the
//! node, and one customer. Untimed set-up: N requests (kind 5050, 5000 msat) are quoted and N
//! zap invoices fetched from the zapper's callback (zapping each request). Timed: the zapper
//! settles the invoices one after another; for each, t0 is taken just before the receipt is
//! published and t1 is the ledger's `processing_started` time for its job. t1 − t0 covers the
//! relay hop, intake, zap verification (Schnorr ×2, bolt11 ECDSA, SHA-256), the core's booking
//! group and dispatch. Both clocks are this machine's wall clock in ms.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use nostr_sdk::prelude::*;
use paydvm::node::now_ms;
use paydvm::payments::zap::{verify_receipt, ZapExpectation};
use paydvm_ledger::{JobState, Msat};
use paydvm_testkit::bench_node::{
    ms, priced_node, processing_latencies, publish_priced_requests, wait_job_state, PaidJobsArgs,
    PRICE_MSAT,
};
use paydvm_testkit::bench_stats::percentile;
use paydvm_testkit::fixture::Fixture;
use paydvm_testkit::zapper::customer::{request_zap_invoice, ZapOrder};

#[derive(Debug, Parser)]
#[command(about = "Measure zap receipt → processing start latency of a running paydvm node")]
struct Args {
    #[command(flatten)]
    paid: PaidJobsArgs,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The relay, the node directory (removed when `fixture` drops) and the node's lud16 server.
    let mut fixture = Fixture::builder(priced_node())
        .named_dir("zap-bench")
        .zapper("bench")
        .build()
        .await?;
    let url = fixture.urls[0].clone();
    let node_pubkey = fixture.node_pubkey;
    let zapper = fixture.zapper.as_ref().context("the fixture's zapper")?;
    let lud16 = zapper.lud16();
    let zapper_key = zapper.nostr_pubkey();
    let node = fixture.start().await?;
    let deadline = Instant::now() + Duration::from_secs(args.paid.timeout_secs);

    // Set-up (untimed): N quoted jobs and their zap invoices.
    let customer = Keys::generate();
    let (client, requests) = publish_priced_requests(&customer, &url, args.paid.jobs).await?;
    for id in &requests {
        wait_job_state(&node, &id.to_hex(), JobState::Quoted, deadline).await?;
    }
    let mut invoices = Vec::with_capacity(args.paid.jobs);
    for id in &requests {
        let paid = request_zap_invoice(
            &customer,
            &ZapOrder {
                lud16: &lud16,
                http_loopback: true,
                recipient: node_pubkey,
                target: *id,
                amount: Msat::from_msat(PRICE_MSAT),
                relays: std::slice::from_ref(&url),
            },
        )
        .await?;
        invoices.push((id.to_hex(), paid.bolt11));
    }
    println!(
        "{} jobs quoted, {} zap invoices issued",
        requests.len(),
        invoices.len()
    );

    // Timed: settle every invoice (the zapper publishes each receipt and waits for the relay's OK).
    let mut sent_at: HashMap<String, u64> = HashMap::new();
    let mut receipts = Vec::with_capacity(invoices.len());
    let started = Instant::now();
    for (job, bolt11) in &invoices {
        sent_at.insert(job.clone(), now_ms());
        receipts.push(zapper.settle(bolt11).await?);
        if args.paid.interval_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.paid.interval_ms)).await;
        }
    }
    let publish_time = started.elapsed();
    for id in &requests {
        wait_job_state(&node, &id.to_hex(), JobState::Succeeded, deadline).await?;
    }
    let all_done = started.elapsed();
    let stats = node.zap_stats().context("zap intake")?;
    let (verified, refused) = (
        stats.verified.load(std::sync::atomic::Ordering::SeqCst),
        stats.refused.load(std::sync::atomic::Ordering::SeqCst),
    );
    node.shutdown().await;
    client.shutdown().await;
    fixture.shutdown().await;

    // The verifier alone, on the same receipts.
    let expect = ZapExpectation {
        recipient: node_pubkey,
        lnurl_signer: zapper_key,
    };
    let timer = Instant::now();
    for receipt in &receipts {
        verify_receipt(receipt, &expect).context("a receipt the node accepted")?;
    }
    let verify_each = timer.elapsed() / receipts.len().max(1) as u32;

    let store = fixture.store()?;
    let latencies = processing_latencies(&store, &sent_at)?;
    println!(
        "receipts verified {verified}, refused {refused}; verify_receipt alone: {:.1} µs each",
        verify_each.as_secs_f64() * 1e6
    );
    println!(
        "settle+publish of {} receipts (interval {} ms): {} ({:.0} receipts/s); all jobs succeeded after {}",
        invoices.len(),
        args.paid.interval_ms,
        ms(publish_time),
        invoices.len() as f64 / publish_time.as_secs_f64(),
        ms(all_done)
    );
    println!(
        "receipt published → processing_started: p50 {} · p99 {} · max {} (ms resolution)",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
    );
    match store.verify() {
        Ok(_) => println!("ledger verify OK"),
        Err(e) => bail!("ledger verify failed: {e}"),
    }
    Ok(())
}
