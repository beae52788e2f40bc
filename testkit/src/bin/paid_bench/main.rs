//! paydvm-paid-bench: payment evidence → processing start for paid jobs under load: many
//! customers, every payment rail at once, payments arriving at an offered rate. Not a test: it
//! prints numbers (and fails only if money went wrong).
//!
//! `cargo run --release -p paydvm-testkit --bin paydvm-paid-bench -- [--customers 50] [--jobs 1000]
//! [--rate 100] [--rails invoice,zap,nutzap,token] [--pg]`
//!
//! One process: an embedded LocalRelay, the node (ledger `Durability::Full`, on PostgreSQL with
//! `--pg`, its ecash wallet there too; kind 5050 at 5 000
//! msat on the text executor, 64 jobs at once) with the built-in `FakeLightning` backend, the
//! embedded LNURL-pay zapper as its lud16 and an in-process Cashu mint it trusts, and C customers,
//! each with its own key and relay connection. Untimed set-up: every customer publishes its
//! requests; once all are quoted, each job gets its payment ready (job i on rail i mod the rails
//! given): the quote's invoice, a zap invoice from the zapper's callback, ecash minted and
//! locked to the node's NutZap key in a signed kind 9321, or (rail `token`, no quote) a request
//! whose NIP-44 encrypted tags carry a Cashu token. Timed: payment k is made at
//! start + k / rate (all at once with `--rate 0`), each in its own task so a slow one does not
//! delay the schedule: the invoice settled (the backend notifies the node), the zap receipt
//! published by the zapper, the NutZap or the token's request published by its customer through
//! the relay. t0 is the wall clock just before that; t1 the ledger's `processing_started` of the
//! job (both ms).

mod payments;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use nostr_sdk::prelude::*;
use paydvm_ledger::{Account, Asset, JobState, LedgerStore};
use paydvm_testkit::bench_node::{
    ms, open_read_only, priced_node, processing_latencies, publish_priced_requests, wait_job_state,
    PRICE_MSAT,
};
use paydvm_testkit::bench_pg::PgLedger;
use paydvm_testkit::bench_stats::{load_average, percentile};
use paydvm_testkit::fixture::Fixture;

use payments::{Payer, Payment, Rail};

#[derive(Debug, Parser)]
#[command(about = "Measure payment evidence → processing start of a paydvm node under load")]
struct Args {
    /// Customers, each with its own key and relay connection.
    #[arg(long, default_value_t = 50)]
    customers: usize,
    /// Paid jobs in all (spread over the customers).
    #[arg(long, default_value_t = 1_000)]
    jobs: usize,
    /// Payments offered per second, evenly spaced; 0 = all at once.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// The rails, taken in turn by the jobs.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "invoice,zap,nutzap,token"
    )]
    rails: Vec<Rail>,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// The node's ledger and ecash wallet on a throwaway PostgreSQL 15 cluster (fsync on)
    /// instead of SQLite files.
    #[arg(long)]
    pg: bool,
}

/// One customer: its connection stays open for its NutZaps and token requests.
pub struct Customer {
    pub keys: Keys,
    pub client: Client,
    /// Its quoted requests (jobs on every rail but `token`), in the order it pays them.
    pub quoted: Vec<EventId>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.customers == 0 || args.jobs < args.customers || args.rails.is_empty() {
        bail!("need at least one customer, one job per customer and one rail");
    }
    let mut fixture = Fixture::builder(priced_node().cashu_setting("mint_requests_per_minute = 0"))
        .named_dir("paid-bench")
        .fake_lightning()
        .zapper("bench")
        .local_mint()
        .build()
        .await?;
    // Kept until the end: dropping it stops the cluster.
    let database = match args.pg {
        true => Some(move_to_database(&fixture).await?),
        false => None,
    };
    let node = fixture.start().await?;
    let place = node.ledger().clone();
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let nutzaps = node.nutzap_stats().context("the node takes NutZaps")?;
    while !nutzaps.ready() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let customers = publish_requests(&fixture, &args).await?;
    for c in &customers {
        for id in &c.quoted {
            wait_job_state(&node, &id.to_hex(), JobState::Quoted, deadline).await?;
        }
    }
    let payer = Arc::new(Payer::new(&mut fixture)?);
    let payments = payer
        .prepare(&node, &customers, args.jobs, &args.rails)
        .await?;
    println!(
        "{} customers, {} jobs quoted and their payments ready; load average {}",
        customers.len(),
        payments.len(),
        load_average()
    );

    let counts_before = server_counts(&database).await?;
    let (paid_at, offered) = pay_on_schedule(&payer, payments.clone(), args.rate).await?;
    for p in &payments {
        wait_job_state(&node, &p.job.to_hex(), JobState::Succeeded, deadline).await?;
    }
    print_server_counts(
        counts_before,
        server_counts(&database).await?,
        payments.len(),
    );
    println!(
        "{} payments made in {} ({:.0}/s offered); load average {}; nutzaps refused {}",
        payments.len(),
        ms(offered),
        payments.len() as f64 / offered.as_secs_f64().max(1e-9),
        load_average(),
        nutzaps.rejected()
    );
    node.shutdown().await;
    for c in customers {
        c.client.shutdown().await;
    }
    Arc::try_unwrap(payer)
        .map_err(|_| anyhow::anyhow!("a payment task still holds the payer"))?
        .shutdown()
        .await;
    fixture.shutdown().await;
    let store = open_read_only(&place)?;
    report(&store, &payments, &paid_at)?;
    check_money(&store, &payments)
}

/// `--pg`: the server's work in the timed run, per paid job.
fn print_server_counts(before: Option<(i64, i64)>, after: Option<(i64, i64)>, jobs: usize) {
    let (Some(before), Some(after)) = (before, after) else {
        return;
    };
    let per_job = |n: i64| n as f64 / jobs as f64;
    let (xacts, syncs) = (after.0 - before.0, after.1 - before.1);
    println!(
        "PostgreSQL in the timed run: {xacts} transactions ({:.1} per paid job, reads \
         included), {syncs} WAL fsyncs ({:.1} per paid job); ledger, wallet and pending \
         swaps together",
        per_job(xacts),
        per_job(syncs)
    );
}

/// `--pg`: a throwaway durable cluster, and the fixture's node config moved onto a fresh
/// database in it (the node's local files in `state/`).
async fn move_to_database(fixture: &Fixture) -> anyhow::Result<Arc<PgLedger>> {
    let config = fixture.config.clone();
    tokio::task::spawn_blocking(move || {
        let pg = PgLedger::start()?;
        pg.point(&config, 0)?;
        Ok(Arc::new(pg))
    })
    .await?
}

/// `--pg`: the server's counts so far ([`PgLedger::server_counts`]), once this run's
/// statistics are flushed.
async fn server_counts(database: &Option<Arc<PgLedger>>) -> anyhow::Result<Option<(i64, i64)>> {
    let Some(pg) = database else {
        return Ok(None);
    };
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let pg = Arc::clone(pg);
    Ok(Some(
        tokio::task::spawn_blocking(move || pg.server_counts()).await??,
    ))
}

/// Job k is customer k mod C's, paid on rail k mod R. Each customer publishes the requests of
/// its jobs that wait for a quote (all but `token`: those carry their payment), on its own
/// connection.
async fn publish_requests(fixture: &Fixture, args: &Args) -> anyhow::Result<Vec<Customer>> {
    let url = &fixture.urls[0];
    let mut customers = Vec::with_capacity(args.customers);
    for c in 0..args.customers {
        let quoted = (c..args.jobs)
            .step_by(args.customers)
            .filter(|k| args.rails[k % args.rails.len()] != Rail::Token)
            .count();
        let keys = Keys::generate();
        let (client, requests) = publish_priced_requests(&keys, url, quoted).await?;
        customers.push(Customer {
            keys,
            client,
            quoted: requests,
        });
    }
    Ok(customers)
}

/// Makes every payment at its slot (start + k / rate), each in its own task; returns when each
/// job was paid (unix ms, taken just before the payment) and how long offering them took.
async fn pay_on_schedule(
    payer: &Arc<Payer>,
    payments: Vec<Payment>,
    rate: f64,
) -> anyhow::Result<(HashMap<String, u64>, Duration)> {
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(payments.len());
    for (k, payment) in payments.into_iter().enumerate() {
        if rate > 0.0 {
            tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / rate)).await;
        }
        let payer = Arc::clone(payer);
        tasks.push(tokio::spawn(async move {
            let t0 = paydvm::node::now_ms();
            payer
                .pay(&payment)
                .await
                .map(|()| (payment.job.to_hex(), t0))
        }));
    }
    let mut paid_at = HashMap::with_capacity(tasks.len());
    for task in tasks {
        let (job, t0) = task.await??;
        paid_at.insert(job, t0);
    }
    Ok((paid_at, start.elapsed()))
}

/// Latency percentiles per rail and over all rails.
fn report(
    store: &impl LedgerStore,
    payments: &[Payment],
    paid_at: &HashMap<String, u64>,
) -> anyhow::Result<()> {
    let mut rails: Vec<Rail> = payments.iter().map(|p| p.rail).collect();
    rails.sort();
    rails.dedup();
    let line = |what: &str, latencies: &[Duration]| {
        println!(
            "{what:>8}: n={:>5}  evidence → processing_started p50 {} · p99 {} · max {}",
            latencies.len(),
            ms(percentile(latencies, 50.0)),
            ms(percentile(latencies, 99.0)),
            ms(latencies.last().copied().unwrap_or_default()),
        )
    };
    for rail in rails {
        let of_rail: HashMap<String, u64> = payments
            .iter()
            .filter(|p| p.rail == rail)
            .map(|p| (p.job.to_hex(), paid_at[&p.job.to_hex()]))
            .collect();
        line(rail.name(), &processing_latencies(store, &of_rail)?);
    }
    line("all", &processing_latencies(store, paid_at)?);
    Ok(())
}

/// Every job paid once: Lightning and the mints (together) took exactly one price per job of
/// their rails, and the ledger verifies.
fn check_money(store: &impl LedgerStore, payments: &[Payment]) -> anyhow::Result<()> {
    let on_lightning = payments
        .iter()
        .filter(|p| matches!(p.rail, Rail::Invoice | Rail::Zap))
        .count() as u64;
    let in_ecash = payments.len() as u64 - on_lightning;
    let received = |mint: bool| {
        store
            .state()
            .balances()
            .filter(|(account, _)| match account {
                Account::Asset(Asset::Lightning) => !mint,
                Account::Asset(Asset::Mint { .. }) => mint,
                _ => false,
            })
            .map(|(_, b)| b.debits.as_msat())
            .sum::<u64>()
    };
    for (what, mint, jobs) in [
        ("Lightning", false, on_lightning),
        ("ecash", true, in_ecash),
    ] {
        if received(mint) != PRICE_MSAT * jobs {
            bail!(
                "{what} received {} msat, expected {} ({jobs} jobs)",
                received(mint),
                PRICE_MSAT * jobs
            );
        }
    }
    match store.verify() {
        Ok(_) => {
            println!("every job paid once (assets match), ledger verify OK");
            Ok(())
        }
        Err(e) => bail!("ledger verify failed: {e}"),
    }
}
