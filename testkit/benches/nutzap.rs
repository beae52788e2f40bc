//! NutZap benchmark: arrival of a NutZap at the rail → the job's `processing_started`, p50/p99
//! over N jobs against an in-process cdk mint (FakeWallet, cdk-axum on 127.0.0.1), and the swap
//! round trip alone (verify + `Redeemer::swap`), which dominates it.
//!
//! `cargo bench -p paydvm-testkit --bench nutzap [-- JOBS]` (default 200). Not a test: it asserts nothing about
//! time. The node's wallet runs with `mint_requests_per_minute = 0` (no pacing): the mint is
//! ours and in-process, and cdk's default (20 per minute) would measure the pacing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nostr_sdk::prelude::*;
use paydvm_ledger::store::Store;
use paydvm_ledger::{EventBody, JobState};
use paydvm_testkit::bench_node::nutzap_event;
use paydvm_testkit::bench_stats::percentile;
use paydvm_testkit::fixture::{Fixture, NodeDir, Offer, PRICE_MSAT};
use paydvm_testkit::local_mint;

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what}: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        samples.len(),
        percentile(&samples, 50.0).as_secs_f64() * 1e3,
        percentile(&samples, 99.0).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

fn now_ms() -> u64 {
    paydvm::node::now_ms()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let jobs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    // Relay, node directory and a trusted in-process mint; the node's wallet unpaced.
    let fixture = Fixture::builder(
        NodeDir::new("bench")
            .policy_prefix("[admission]\nmax_pending_quotes_per_pubkey = 100000\n")
            .policy(&format!(
                "\n[[pricing.kind]]\nkind = 5050\nmode = \"fixed\"\namount_msat = {PRICE_MSAT}\n"
            ))
            .offer(Offer::text(5050).max_concurrency(64))
            .cashu_setting("mint_requests_per_minute = 0"),
    )
    .local_mint()
    .build()
    .await
    .unwrap();
    let mint_url = fixture.mint.as_ref().unwrap().url.clone();
    let node = fixture.start().await.unwrap();
    let stats = node.nutzap_stats().unwrap();
    while !stats.ready() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lock = fixture.nutzap_lock().unwrap();
    let customer = Keys::generate();
    // The customer is not what is measured: its wallet does no client-side pacing.
    let wallet = local_mint::memory_wallet(&mint_url).await.unwrap();

    // Mint the ecash, then quote every job: only the NutZap's path is timed.
    let mut minted = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        minted.push(
            local_mint::mint_ecash(&wallet, 5, Some(&lock))
                .await
                .unwrap(),
        );
    }
    let mut prepared = Vec::with_capacity(jobs);
    for (i, proofs) in minted.into_iter().enumerate() {
        let request = EventBuilder::new(Kind::Custom(5050), "")
            .tags([Tag::parse(["i", &format!("job {i}"), "text"]).unwrap()])
            .sign_with_keys(&customer)
            .unwrap();
        node.submit(request.clone());
        while node.job(&request.id.to_hex()).await.map(|j| j.state) != Some(JobState::Quoted) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        prepared.push((request, proofs));
    }

    let mut arrivals = HashMap::new();
    let started = Instant::now();
    for (request, proofs) in &prepared {
        let zap = nutzap_event(&customer, proofs, &mint_url, request.id, node.pubkey()).unwrap();
        arrivals.insert(request.id.to_hex(), now_ms());
        node.submit_nutzap(zap);
        // One at a time: the latency of one NutZap, not a queue.
        while stats.credited() + stats.rejected() < arrivals.len() as u64 {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    let elapsed = started.elapsed();
    for (request, _) in &prepared {
        while !matches!(
            node.job(&request.id.to_hex()).await.map(|j| j.state),
            Some(JobState::Succeeded)
        ) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let ledger = node.ledger_path().to_owned();
    node.shutdown().await;

    let store = Store::open_read_only(&ledger).unwrap();
    let (head, _) = store.head();
    let mut to_start = Vec::new();
    for seq in 1..=head {
        let e = store.event(seq).unwrap().unwrap();
        if let EventBody::ProcessingStarted { job, attempt: 1 } = &e.event.body {
            if let Some(t0) = arrivals.get(job.as_str()) {
                to_start.push(Duration::from_millis(e.event.at.0.saturating_sub(*t0)));
            }
        }
    }
    println!(
        "{jobs} NutZap-paid jobs in {:.2} s ({} credited, {} refused)",
        elapsed.as_secs_f64(),
        stats.credited(),
        stats.rejected()
    );
    report("NutZap arrival -> processing start", to_start);

    // The swap alone, against the same mint: verify offline, then swap. A second receiving key:
    // a fresh wallet on the node's key would re-derive outputs the mint already signed.
    let key2 = Keys::generate();
    let lock = format!("02{}", key2.public_key().to_hex());
    let key =
        paydvm_mints::ReceiveKey::from_secret_bytes(&key2.secret_key().secret_bytes()).unwrap();
    let wallet_dir = tempfile::tempdir().unwrap();
    let redeemer = paydvm_mints::Redeemer::open(&wallet_dir.path().join("w.db"), key)
        .await
        .unwrap()
        .with_pacing(paydvm_mints::MintPacing::Off);
    let mut registry =
        paydvm_mints::MintRegistry::new(vec![paydvm_mints::TrustedMint::new(&mint_url, ["sat"])]);
    registry.refresh_all().await;
    let us = paydvm_mints::Recipient {
        identity: Keys::generate().public_key().to_hex(),
        p2pk: key2.public_key().to_hex(),
    };
    let mut swaps = Vec::with_capacity(jobs);
    let mut verifies = Vec::with_capacity(jobs);
    for i in 0..jobs {
        let proofs = local_mint::mint_ecash(&wallet, 5, Some(&lock))
            .await
            .unwrap();
        let zap = nutzap_event(
            &customer,
            &proofs,
            &mint_url,
            EventId::all_zeros(),
            Keys::generate().public_key(),
        )
        .unwrap();
        let tags: Vec<Vec<String>> = zap.tags.iter().map(|t| t.as_slice().to_vec()).collect();
        let (id, author) = (zap.id.to_hex(), zap.pubkey.to_hex());
        let event = paydvm_mints::NutZapEvent {
            id: &id,
            author: &author,
            tags: &tags,
        };
        // The recipient check needs our identity in `p`.
        let mut tags = tags.clone();
        tags.retain(|t| t[0] != "p");
        tags.push(vec!["p".into(), us.identity.clone()]);
        let event = paydvm_mints::NutZapEvent {
            tags: &tags,
            ..event
        };
        let t = Instant::now();
        let verified = paydvm_mints::verify_nutzap(&event, &us, &registry, now_ms() / 1000)
            .unwrap_or_else(|e| panic!("swap {i}: {e}"));
        verifies.push(t.elapsed());
        let t = Instant::now();
        let outcome = redeemer.swap(&verified).await;
        swaps.push(t.elapsed());
        assert!(
            matches!(outcome, paydvm_mints::SwapOutcome::Swapped { .. }),
            "{outcome:?}"
        );
    }
    report("offline verification (DLEQ, lock)", verifies);
    report("swap round trip at the mint", swaps);
}
