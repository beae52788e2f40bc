//! paydvm-node-bench: end-to-end throughput and latency of free jobs through a running node.
//! Not a test: it prints numbers.
//!
//! `cargo run --release -p paydvm-testkit --bin paydvm-node-bench -- [--customers C] [--jobs-per-customer J]`
//!
//! One process holds everything: an embedded LocalRelay on 127.0.0.1, the node (ledger in a
//! fresh temporary directory) and C customer clients, each with its own keys and connection. Each
//! customer keeps up to `--window` requests (kind 5001, built-in word count, free) outstanding and
//! waits for every kind 6001 result. The peak RSS printed covers all of it.
//!
//! `--entitled`: kind 5001 is priced instead, and each customer holds a running subscription
//! whose tier covers it (booked in the ledger before the node starts, quota enough for every
//! job): every job runs on the entitlement, so the figures compare with the free run's.

use paydvm_testkit::bench_stats::{load_average, percentile, status_kib};
use paydvm_testkit::fixture::{Fixture, NodeDir, Offer};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nostr_sdk::prelude::*;
use paydvm_ledger::store::Store;
use tokio::sync::Semaphore;

#[derive(Debug, Parser)]
#[command(about = "Measure free-job throughput of a running paydvm node")]
struct Args {
    /// Customer clients, each with its own keys and relay connection.
    #[arg(long, default_value_t = 20)]
    customers: usize,
    /// Requests each customer publishes.
    #[arg(long, default_value_t = 50)]
    jobs_per_customer: usize,
    /// Requests a customer keeps outstanding at once.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// The offer's max_concurrency.
    #[arg(long, default_value_t = 64)]
    max_concurrency: usize,
    /// Give up after this many seconds and report what finished.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// Events to sign and verify in the separate Schnorr timing.
    #[arg(long, default_value_t = 5_000)]
    sign_n: usize,
    /// Price kind 5001 and run every job on a subscription instead of for free.
    #[arg(long)]
    entitled: bool,
}

#[derive(Default)]
struct Stats {
    published: usize,
    latencies: Vec<Duration>,
    last_result: Option<Instant>,
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Ledger rows by type, read straight from the file.
fn ledger_counts(path: &Path) -> anyhow::Result<(u64, Vec<(String, u64)>)> {
    let store = Store::open_read_only(path).context("opening the ledger read-only")?;
    let total = store.head().0;
    let mut stmt = store
        .connection()
        .prepare("SELECT type, count(*) FROM events GROUP BY type ORDER BY 2 DESC")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((total, rows))
}

async fn customer(
    relay: RelayUrl,
    requests: Vec<Event>,
    keys: Keys,
    window: usize,
    stats: Arc<Mutex<Stats>>,
    ready: Arc<tokio::sync::Barrier>,
) -> anyhow::Result<()> {
    let client = paydvm::node::transport::client(keys.clone());
    client.add_relay(relay).await?;
    let mut notifications = client.notifications();
    client.try_connect(Duration::from_secs(5)).await;
    client
        .subscribe(
            Filter::new()
                .kind(Kind::Custom(6001))
                .pubkey(keys.public_key())
                .since(Timestamp::now() - 60),
            None,
        )
        .await?;
    let pending: Arc<Mutex<HashMap<EventId, Instant>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(window));
    let total = requests.len();
    ready.wait().await;

    let sender = {
        let client = client.clone();
        let pending = pending.clone();
        let permits = permits.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            for request in requests {
                let Ok(permit) = permits.acquire().await else {
                    return;
                };
                permit.forget();
                pending
                    .lock()
                    .expect("pending lock")
                    .insert(request.id, Instant::now());
                if let Err(e) = client.send_event(&request).await {
                    eprintln!("publish failed: {e}");
                }
                stats.lock().expect("stats lock").published += 1;
            }
        })
    };

    let mut received = 0;
    while received < total {
        match notifications.recv().await {
            Ok(RelayPoolNotification::Event { event, .. }) if event.kind == Kind::Custom(6001) => {
                let at = Instant::now();
                let Some(request) = event.tags.event_ids().next().copied() else {
                    continue;
                };
                let Some(sent) = pending.lock().expect("pending lock").remove(&request) else {
                    continue;
                };
                received += 1;
                permits.add_permits(1);
                let mut s = stats.lock().expect("stats lock");
                s.latencies.push(at - sent);
                s.last_result = Some(at);
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                eprintln!("customer lagged {n} notifications");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
    let _ = sender.await;
    client.disconnect().await;
    Ok(())
}

/// Signs `n` result-like events with one key, then verifies them: the Schnorr cost per job.
fn schnorr(n: usize) -> anyhow::Result<()> {
    let keys = Keys::generate();
    let customer = Keys::generate();
    let t = Instant::now();
    let events = (0..n)
        .map(|i| {
            EventBuilder::new(Kind::Custom(6001), format!("{i} words"))
                .tags([
                    Tag::parse(["p", &customer.public_key().to_hex()])?,
                    Tag::parse(["status", "success"])?,
                ])
                .sign_with_keys(&keys)
                .map_err(anyhow::Error::from)
        })
        .collect::<anyhow::Result<Vec<Event>>>()?;
    let sign = t.elapsed();
    let t = Instant::now();
    for e in &events {
        e.verify()?;
    }
    let verify = t.elapsed();
    println!(
        "schnorr: sign {n} events {:.0}/s ({:.1} µs each), verify {:.0}/s ({:.1} µs each), one core",
        n as f64 / sign.as_secs_f64(),
        sign.as_secs_f64() * 1e6 / n as f64,
        n as f64 / verify.as_secs_f64(),
        verify.as_secs_f64() * 1e6 / n as f64,
    );
    Ok(())
}

/// One client publishing `n` events one after another, each waiting for the relay's `OK`: the
/// bound of a publisher that sends serially (the node's outbox does).
async fn relay_round_trips(url: &RelayUrl, n: usize) -> anyhow::Result<()> {
    let keys = Keys::generate();
    let client = paydvm::node::transport::client(keys.clone());
    client.add_relay(url.clone()).await?;
    client.try_connect(Duration::from_secs(5)).await;
    let events = (0..n)
        .map(|i| {
            EventBuilder::new(Kind::Custom(6001), format!("{i} words"))
                .sign_with_keys(&keys)
                .map_err(anyhow::Error::from)
        })
        .collect::<anyhow::Result<Vec<Event>>>()?;
    let mut times = Vec::with_capacity(n);
    for e in &events {
        let t = Instant::now();
        client.send_event(e).await?;
        times.push(t.elapsed());
    }
    times.sort();
    let sum: Duration = times.iter().sum();
    println!(
        "relay: {n} serial publishes awaiting OK: {:.0}/s, p50 {}, p99 {}",
        n as f64 / sum.as_secs_f64(),
        ms(percentile(&times, 50.0)),
        ms(percentile(&times, 99.0))
    );
    client.disconnect().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.customers > 0 && args.jobs_per_customer > 0 && args.window > 0,
        "customers, jobs-per-customer and window must be positive"
    );
    run(&args).await
}

/// The bench node: kind 5001 on the text executor, `max_concurrency` jobs at once; free, or
/// priced and covered by a tier.
fn bench_node(max_concurrency: usize, entitled: bool) -> NodeDir {
    let pricing = match entitled {
        false => "[[pricing.kind]]\nkind = 5001\nmode = \"free\"\n".to_owned(),
        true => format!(
            "[[pricing.kind]]\nkind = 5001\nmode = \"fixed\"\namount_msat = 1000\n\n\
             [[subscriptions.tier]]\nid = \"{TIER}\"\nname = \"Bench\"\nprice_msat = 1000\n\
             period_secs = {PERIOD_SECS}\nquota = 4294967295\nkinds = [5001]\n"
        ),
    };
    NodeDir::new("bench node")
        .policy(&format!(
            "{pricing}\n[failures]\nmax_attempts = 2\nthen = \"refund\"\n"
        ))
        .offer(
            Offer::text(5001)
                .timeout_secs(5)
                .max_concurrency(max_concurrency),
        )
}

const TIER: &str = "bench";
const PERIOD_SECS: u64 = 30 * 86_400;

/// A running subscription for `customer`, booked as the node books one (quote, payment,
/// period), before the node starts.
fn subscribe(ledger: &Path, customer: &Keys, n: usize) -> anyhow::Result<()> {
    use paydvm_ledger::*;
    let subscription = SubscriptionId::new(format!("bench-sub-{n}"))?;
    let subscriber = Pubkey::new(customer.public_key().to_hex())?;
    let now = paydvm::node::now_ms();
    let price = Msat::from_msat(1_000);
    let key = |what: &str| IdemKey::new(format!("bench-{what}-{n}"));
    let events = [
        LedgerEvent::new(
            key("quote")?,
            UnixMs(now),
            EventBody::SubscriptionQuoted {
                subscription: subscription.clone(),
                subscriber: subscriber.clone(),
                tier: TIER.into(),
                price,
                period_ms: PERIOD_SECS * 1000,
                quota: u32::MAX,
                options: vec![],
                expires_at: UnixMs(now + 60_000),
            },
        ),
        LedgerEvent::new(
            key("pay")?,
            UnixMs(now),
            EventBody::PaymentReceived(Payment {
                rail: Rail::Zap,
                asset: Asset::Lightning,
                reference: PaymentRef::new(format!("bench-payment-{n}"))?,
                linked: vec![],
                amount: price,
                fee: Msat::ZERO,
                evidence: None,
                payer: Some(subscriber.clone()),
                target: PaymentTarget::Subscription {
                    subscription: subscription.clone(),
                },
            }),
        ),
        LedgerEvent::new(
            key("grant")?,
            UnixMs(now),
            EventBody::EntitlementGranted {
                subscription,
                subscriber,
                tier: TIER.into(),
                period_start: UnixMs(now),
                period_end: UnixMs(now + PERIOD_SECS * 1000),
                quota: u32::MAX,
                price,
            },
        ),
    ];
    let mut store = Store::open(ledger, paydvm_ledger::store::Durability::Normal)?;
    for event in &events {
        store.append(event)?;
    }
    store.close()?;
    Ok(())
}

async fn run(args: &Args) -> anyhow::Result<()> {
    println!(
        "paydvm-node-bench: {} customers x {} {} jobs (window {}, max_concurrency {}), node + relay + clients in one process, {} cores, load average {}",
        args.customers,
        args.jobs_per_customer,
        if args.entitled { "entitled (subscription)" } else { "free" },
        args.window,
        args.max_concurrency,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    schnorr(args.sign_n)?;

    // The relay, the node directory (removed when `fixture` drops, at the end).
    let mut fixture = Fixture::builder(bench_node(args.max_concurrency, args.entitled))
        .named_dir("node-bench")
        .build()
        .await?;
    let url = fixture.urls[0].clone();
    relay_round_trips(&url, 200).await?;
    let keys: Vec<Keys> = (0..args.customers).map(|_| Keys::generate()).collect();
    if args.entitled {
        for (n, customer) in keys.iter().enumerate() {
            subscribe(&fixture.ledger(), customer, n)?;
        }
    }
    let node = fixture.start().await.context("starting the bench node")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ledger = node.ledger_path().to_path_buf();
    let (before, _) = ledger_counts(&ledger)?;

    // Requests are signed up front: the customers' signing is not the node's cost.
    let stats: Arc<Mutex<Stats>> = Arc::default();
    let ready = Arc::new(tokio::sync::Barrier::new(args.customers + 1));
    let mut tasks = Vec::new();
    for (c, keys) in keys.into_iter().enumerate() {
        let requests = (0..args.jobs_per_customer)
            .map(|j| {
                EventBuilder::new(Kind::Custom(5001), "")
                    .tags([Tag::parse([
                        "i",
                        &format!("customer {c} job {j} words"),
                        "text",
                    ])?])
                    .sign_with_keys(&keys)
                    .map_err(anyhow::Error::from)
            })
            .collect::<anyhow::Result<Vec<Event>>>()?;
        tasks.push(tokio::spawn(customer(
            url.clone(),
            requests,
            keys,
            args.window,
            stats.clone(),
            ready.clone(),
        )));
    }
    let connect = tokio::time::timeout(Duration::from_secs(30), ready.wait()).await;
    anyhow::ensure!(connect.is_ok(), "customers did not connect in 30 s");
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut timed_out = false;
    for task in &mut tasks {
        match tokio::time::timeout_at(deadline, &mut *task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("customer failed: {e:#}"),
            Ok(Err(e)) => eprintln!("customer task failed: {e}"),
            Err(_) => {
                timed_out = true;
                break;
            }
        }
    }
    for task in &tasks {
        task.abort();
    }
    let (published, mut latencies, last) = {
        let s = stats.lock().expect("stats lock");
        (s.published, s.latencies.clone(), s.last_result)
    };
    let wall = last.map_or(start.elapsed(), |l| l - start);
    latencies.sort();
    let done = latencies.len();
    let total = args.customers * args.jobs_per_customer;
    if timed_out {
        println!(
            "TIMED OUT after {} s: partial numbers follow",
            args.timeout_secs
        );
    }
    println!(
        "jobs: {done}/{total} results ({published} published) in {:.2} s = {:.0} jobs/s (first publish -> last result)",
        wall.as_secs_f64(),
        done as f64 / wall.as_secs_f64()
    );
    println!(
        "latency request->result: p50 {}, p99 {}, max {}",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default())
    );
    println!(
        "peak RSS (node + relay + {} clients, one process): {} MiB; load average {}",
        args.customers,
        status_kib("VmHWM:").unwrap_or(0) / 1024,
        load_average()
    );

    let t = Instant::now();
    node.shutdown().await;
    println!("node shutdown: {}", ms(t.elapsed()));
    fixture.shutdown().await;
    let (after, by_type) = ledger_counts(&ledger)?;
    let events = after - before;
    println!(
        "ledger: {events} events for {done} jobs = {:.2} events/job (node uses Durability::Full: one fsynced commit per append_group)",
        events as f64 / done.max(1) as f64
    );
    let by_type: Vec<String> = by_type.iter().map(|(t, n)| format!("{t} {n}")).collect();
    println!("ledger by type (whole file): {}", by_type.join(", "));
    Ok(())
}
