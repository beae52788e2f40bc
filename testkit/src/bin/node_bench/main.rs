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
//! `--node-binary target/release/paydvm`: the node runs as its own process (`paydvm run`)
//! instead, so its CPU per job and its own peak RSS are printed; `--relay-binary
//! target/release/paydvm-relay` the same for the relay. `--report-every N` prints the throughput
//! of each window of N completed jobs (does the node slow down as its history grows?).
//!
//! `--pg`: the ledger on a throwaway PostgreSQL cluster (fsync on) instead of an SQLite file;
//! with `--node-binary`, `--standbys N` starts N more nodes on the same database (`paydvm run
//! --standby`, each with its own `state_dir`), waiting while the first serves (`paydvm_testkit::bench_pg`).
//!
//! `--job-ms N`: each job is kind 5050 (the text builtin's `sleep` mode, free) taking N ms
//! instead of a word count, a stand-in for compute that takes time. `--shared`: the offer runs
//! on any node (`execute_on = "any_node"`, PostgreSQL only), so with `--standbys` every node runs
//! jobs while one serves.
//!
//! `--entitled`: kind 5001 is priced instead, and each customer holds a running subscription
//! whose tier covers it (booked in the ledger before the node starts, quota enough for every
//! job): every job runs on the entitlement, so the figures compare with the free run's.

mod cpu_windows;
mod customer;
mod node_process;
mod probes;
mod relay_process;
mod setup;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nostr_sdk::prelude::*;
use paydvm::node::NodeHandle;
use paydvm_ledger::store::Store;
use paydvm_testkit::bench_stats::{load_average, percentile, status_kib, window_rates};
use paydvm_testkit::fixture::Fixture;

use node_process::NodeProcess;
use paydvm_testkit::bench_pg::PgLedger;
use relay_process::RelayProcess;

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
    /// Run the node as its own process from this `paydvm` binary (default: inside this process).
    #[arg(long)]
    node_binary: Option<PathBuf>,
    /// Run the relay as its own process from this `paydvm-relay` binary (default: inside this
    /// process).
    #[arg(long)]
    relay_binary: Option<PathBuf>,
    /// Print the throughput of each window of this many completed jobs (0: none).
    #[arg(long, default_value_t = 10_000)]
    report_every: usize,
    /// The ledger on a throwaway PostgreSQL cluster (fsync on) instead of an SQLite file.
    #[arg(long)]
    pg: bool,
    /// With `--pg` and `--node-binary`: this many more nodes on the same database, standing by
    /// (`paydvm run --standby`) while the first serves.
    #[arg(long, default_value_t = 0, requires = "pg", requires = "node_binary")]
    standbys: usize,
    /// Each job sleeps this long (kind 5050, free) instead of counting words (kind 5001).
    #[arg(long, default_value_t = 0, conflicts_with = "entitled")]
    job_ms: u64,
    /// The offer runs on any node on the database (`execute_on = "any_node"`).
    #[arg(long, requires = "pg")]
    shared: bool,
    /// The policy's `results.processing_feedback_after_secs`: a job done sooner gets its result
    /// without a `processing` feedback (0: the feedback goes with every start)
    #[arg(long, default_value_t = 0)]
    processing_feedback_after_secs: u64,
}

impl Args {
    /// The request kind every job asks for.
    fn kind(&self) -> u16 {
        if self.job_ms > 0 {
            5050
        } else {
            5001
        }
    }
}

#[derive(Default)]
struct Stats {
    published: usize,
    latencies: Vec<Duration>,
    /// When each result arrived, in arrival order.
    finished: Vec<Instant>,
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.customers > 0 && args.jobs_per_customer > 0 && args.window > 0,
        "customers, jobs-per-customer and window must be positive"
    );
    anyhow::ensure!(
        !(args.pg && args.entitled),
        "--entitled books its subscriptions into an SQLite ledger; not with --pg"
    );
    run(&args).await
}

/// The node under test: inside this process, or its own.
enum RunningNode {
    InProcess(Box<NodeHandle>),
    Child(NodeProcess),
}

impl RunningNode {
    async fn start(args: &Args, fixture: &Fixture) -> anyhow::Result<RunningNode> {
        let Some(binary) = &args.node_binary else {
            let node = fixture.start().await.context("starting the bench node")?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            return Ok(RunningNode::InProcess(Box::new(node)));
        };
        let mut child = NodeProcess::start(binary, &fixture.config)?;
        child
            .wait_serving(&fixture.urls[0], fixture.node_pubkey)
            .await?;
        Ok(RunningNode::Child(child))
    }

    /// The node process's CPU time so far (none when it shares this process).
    fn cpu(&self) -> Option<Duration> {
        match self {
            RunningNode::InProcess(_) => None,
            RunningNode::Child(child) => child.cpu().ok(),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        let t = Instant::now();
        match self {
            RunningNode::InProcess(node) => (*node).shutdown().await,
            RunningNode::Child(child) => {
                if let Some(kib) = child.peak_rss_kib() {
                    println!("node process peak RSS: {} MiB", kib / 1024);
                }
                let status = child.stop()?;
                anyhow::ensure!(status.success(), "the node exited with {status}");
            }
        }
        println!("node shutdown: {}", ms(t.elapsed()));
        Ok(())
    }
}

async fn run(args: &Args) -> anyhow::Result<()> {
    println!(
        "paydvm-node-bench: {} customers x {} {} jobs (window {}, max_concurrency {}), node {}, relay {}, {} cores, load average {}",
        args.customers,
        args.jobs_per_customer,
        if args.entitled { "entitled (subscription)" } else { "free" },
        args.window,
        args.max_concurrency,
        if args.node_binary.is_some() { "in its own process" } else { "in this process" },
        if args.relay_binary.is_some() { "in its own process" } else { "in this process" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    probes::schnorr(args.sign_n)?;

    // The relay (its own process: killed when `relay` drops, after the node stopped), the node
    // directory (removed when `fixture` drops, at the end).
    let relay = args
        .relay_binary
        .as_deref()
        .map(RelayProcess::start)
        .transpose()?;
    let builder = Fixture::builder(setup::bench_node(&setup::BenchOffer {
        kind: args.kind(),
        max_concurrency: args.max_concurrency,
        entitled: args.entitled,
        shared: args.shared,
        processing_feedback_after_secs: args.processing_feedback_after_secs,
    }));
    let builder = match &relay {
        Some(relay) => builder
            .relays(0)
            .other_relays(std::slice::from_ref(&relay.url)),
        None => builder,
    };
    let mut fixture = builder.named_dir("node-bench").build().await?;
    let (pg, standby_configs) = match args.pg {
        true => {
            let (pg, configs) = on_postgres(&fixture.config, args.standbys).await?;
            (Some(pg), configs)
        }
        false => (None, Vec::new()),
    };
    let url = fixture.urls[0].clone();
    probes::relay_round_trips(&url, 200).await?;
    let keys: Vec<Keys> = (0..args.customers).map(|_| Keys::generate()).collect();
    if args.entitled {
        for (n, customer) in keys.iter().enumerate() {
            setup::subscribe(&fixture.ledger(), customer, n)?;
        }
    }
    let node = RunningNode::start(args, &fixture).await?;
    let standbys = start_standbys(args, &standby_configs).await?;
    let (before, _) = ledger_events(&fixture, pg.as_ref())?;
    let cpu_before = node.cpu();
    let sampler = cpu_windows::CpuSampler::start(watched(&node, relay.as_ref()));

    let stats = drive(args, &url, keys).await?;
    report(args, &stats, node.cpu().zip(cpu_before).map(|(a, b)| a - b));
    sampler.report(stats.start, &stats.finished, args.report_every);

    stop_standbys(standbys)?;
    node.stop().await?;
    fixture.shutdown().await;
    drop(relay);
    let (after, by_type) = ledger_events(&fixture, pg.as_ref())?;
    let events = after - before;
    println!(
        "ledger: {events} events for {} jobs = {:.2} events/job (node uses Durability::Full: one durable commit per append_group)",
        stats.latencies.len(),
        events as f64 / stats.latencies.len().max(1) as f64
    );
    if pg.is_none() {
        let by_type: Vec<String> = by_type.iter().map(|(t, n)| format!("{t} {n}")).collect();
        println!("ledger by type (whole file): {}", by_type.join(", "));
    }
    Ok(())
}

/// A throwaway cluster, the node's config pointed at it and one config per standby (the
/// cluster's helpers block).
async fn on_postgres(config: &Path, standbys: usize) -> anyhow::Result<(PgLedger, Vec<PathBuf>)> {
    let config = config.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let pg = PgLedger::start()?;
        let configs = pg.point(&config, standbys)?;
        Ok((pg, configs))
    })
    .await?
}

/// Events in the ledger and, for a file, its rows by type (a database's: none).
fn ledger_events(
    fixture: &Fixture,
    pg: Option<&PgLedger>,
) -> anyhow::Result<(u64, Vec<(String, u64)>)> {
    match pg {
        None => ledger_counts(&fixture.ledger()),
        Some(pg) => Ok((tokio::task::block_in_place(|| pg.events())?, Vec::new())),
    }
}

/// `--standbys`: more nodes on the database, started once the first serves; each must still be
/// standing by a few seconds later (not exited on the lock).
async fn start_standbys(args: &Args, configs: &[PathBuf]) -> anyhow::Result<Vec<NodeProcess>> {
    let Some(binary) = &args.node_binary else {
        return Ok(Vec::new());
    };
    let mut standbys = Vec::new();
    for (k, config) in configs.iter().enumerate() {
        let name = format!("standby{}", k + 1);
        standbys.push(NodeProcess::start_as(
            binary,
            config,
            &["--standby"],
            &name,
        )?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (k, standby) in standbys.iter_mut().enumerate() {
        anyhow::ensure!(
            standby.running()?,
            "standby {} exited; see standby{}.err",
            k + 1,
            k + 1
        );
    }
    if !standbys.is_empty() {
        println!(
            "{} standby nodes waiting on the same database",
            standbys.len()
        );
    }
    Ok(standbys)
}

fn stop_standbys(standbys: Vec<NodeProcess>) -> anyhow::Result<()> {
    for standby in standbys {
        let status = standby.stop()?;
        anyhow::ensure!(status.success(), "a standby exited with {status}");
    }
    Ok(())
}

/// Signs every request, lets the customers loose at once and waits for them (or the timeout).
/// The completion times come back measured from the first publish.
async fn drive(args: &Args, url: &RelayUrl, keys: Vec<Keys>) -> anyhow::Result<Finished> {
    // Requests are signed up front: the customers' signing is not the node's cost.
    let stats: Arc<Mutex<Stats>> = Arc::default();
    let ready = Arc::new(tokio::sync::Barrier::new(args.customers + 1));
    let mut tasks = Vec::new();
    for (c, keys) in keys.into_iter().enumerate() {
        let requests = (0..args.jobs_per_customer)
            .map(|j| {
                let mut tags = vec![Tag::parse([
                    "i",
                    &format!("customer {c} job {j} words"),
                    "text",
                ])?];
                if args.job_ms > 0 {
                    tags.push(Tag::parse(["param", "mode", "sleep"])?);
                    tags.push(Tag::parse(["param", "ms", &args.job_ms.to_string()])?);
                }
                EventBuilder::new(Kind::Custom(args.kind()), "")
                    .tags(tags)
                    .sign_with_keys(&keys)
                    .map_err(anyhow::Error::from)
            })
            .collect::<anyhow::Result<Vec<Event>>>()?;
        tasks.push(tokio::spawn(customer::customer(
            url.clone(),
            Kind::Custom(args.kind() + 1000),
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
    let s = stats.lock().expect("stats lock");
    let mut finished: Vec<Duration> = s.finished.iter().map(|at| *at - start).collect();
    finished.sort();
    let mut latencies = s.latencies.clone();
    latencies.sort();
    Ok(Finished {
        start,
        published: s.published,
        latencies,
        finished,
        timed_out,
    })
}

/// The processes whose CPU per job each window reports: the node and the relay where they run
/// on their own, and this one (the customers, and whatever else runs in it).
fn watched(node: &RunningNode, relay: Option<&RelayProcess>) -> Vec<(&'static str, Option<u32>)> {
    let mut watched = Vec::new();
    if let RunningNode::Child(child) = node {
        watched.push(("node", Some(child.pid())));
    }
    if let Some(relay) = relay {
        watched.push(("relay", Some(relay.pid())));
    }
    watched.push(("bench process", None));
    watched
}

/// What a run measured: latencies and completion times (since the first publish), sorted.
struct Finished {
    /// The first publish.
    start: Instant,
    published: usize,
    latencies: Vec<Duration>,
    finished: Vec<Duration>,
    timed_out: bool,
}

fn report(args: &Args, run: &Finished, node_cpu: Option<Duration>) {
    let done = run.latencies.len();
    let total = args.customers * args.jobs_per_customer;
    let wall = run.finished.last().copied().unwrap_or_default();
    if run.timed_out {
        println!(
            "TIMED OUT after {} s: partial numbers follow",
            args.timeout_secs
        );
    }
    println!(
        "jobs: {done}/{total} results ({} published) in {:.2} s = {:.0} jobs/s (first publish -> last result)",
        run.published,
        wall.as_secs_f64(),
        done as f64 / wall.as_secs_f64()
    );
    println!(
        "latency request->result: p50 {}, p99 {}, max {}",
        ms(percentile(&run.latencies, 50.0)),
        ms(percentile(&run.latencies, 99.0)),
        ms(run.latencies.last().copied().unwrap_or_default())
    );
    let rates = window_rates(&run.finished, args.report_every);
    if rates.len() >= 2 {
        let shown: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "jobs/s per {} completed jobs: {}; last/first {:.2}",
            args.report_every,
            shown.join(", "),
            rates[rates.len() - 1] / rates[0]
        );
    }
    if let Some(cpu) = node_cpu {
        println!(
            "node process CPU: {:.2} s for {done} jobs = {:.0} µs per job ({:.2} cores busy)",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / done.max(1) as f64,
            cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9)
        );
    }
    println!(
        "peak RSS of this process ({}{}{} clients): {} MiB; load average {}",
        if args.node_binary.is_some() {
            ""
        } else {
            "node + "
        },
        if args.relay_binary.is_some() {
            ""
        } else {
            "relay + "
        },
        args.customers,
        status_kib("VmHWM:").unwrap_or(0) / 1024,
        load_average()
    );
}
