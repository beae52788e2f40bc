//! A priced node for the payment benchmark binaries (zap and invoice): its directory, config and
//! a wait for a job's state, so each bench only adds its own rail.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nostr_sdk::prelude::*;
use paydvm_ledger::store::Store;
use paydvm_ledger::{EventBody, JobState};

use paydvm::node::{now_ms, NodeHandle};

/// What one priced job costs in the benchmarks (kind 5050, built-in text executor).
pub const PRICE_MSAT: u64 = 5_000;

/// A fresh directory under the system temp dir, named after the bench and this process.
pub fn bench_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("paydvm-{name}-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Writes policy.toml (kind 5050 at [`PRICE_MSAT`], quotes for an hour, no per-customer quote
/// cap) and paydvm.toml (one relay, the text executor) into `dir`; `node_extra` is appended to
/// the `[node]` table. The key file `paydvm.key` must be created by the caller.
pub fn write_priced_node_dir(
    dir: &Path,
    relay: &RelayUrl,
    node_extra: &str,
) -> anyhow::Result<PathBuf> {
    std::fs::write(
        dir.join("policy.toml"),
        format!(
            r#"
[admission]
max_pending_quotes_per_pubkey = 1000000

[quote]
expiry_secs = 3600

[[pricing.kind]]
kind = 5050
mode = "fixed"
amount_msat = {PRICE_MSAT}
"#
        ),
    )?;
    std::fs::write(
        dir.join("paydvm.toml"),
        format!(
            r#"
[node]
name = "payment bench node"
ledger = "paydvm.db"
policy = "policy.toml"
key_file = "paydvm.key"
{node_extra}

[relays]
urls = [{:?}]

[[offer]]
kind = 5050
executor = {{ builtin = "text" }}
timeout_secs = 5
max_concurrency = 64
"#,
            relay.to_string()
        ),
    )?;
    Ok(dir.join("paydvm.toml"))
}

/// Waits until `job` is in state `want`, or fails after `deadline`.
pub async fn wait_job_state(
    node: &NodeHandle,
    job: &str,
    want: JobState,
    deadline: Instant,
) -> anyhow::Result<()> {
    loop {
        if node.job(job).await.map(|j| j.state) == Some(want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("job {job} did not reach {want:?} in time");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Milliseconds with one decimal, for the bench printouts.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// The knobs of a paid-job latency bench.
#[derive(Debug, clap::Args)]
pub struct PaidJobsArgs {
    /// Paid jobs.
    #[arg(long, default_value_t = 1_000)]
    pub jobs: usize,
    /// Pause between two settlements (0 = settle all in one burst).
    #[arg(long, default_value_t = 0)]
    pub interval_ms: u64,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
}

/// A customer connected to `relay` that has published `n` priced requests (kind 5050, distinct
/// texts); returns the client (shut it down at the end) and the request ids.
pub async fn publish_priced_requests(
    customer: &Keys,
    relay: &RelayUrl,
    n: usize,
) -> anyhow::Result<(Client, Vec<EventId>)> {
    let client = paydvm::node::transport::client(customer.clone());
    client.add_relay(relay.clone()).await?;
    client.try_connect(Duration::from_secs(5)).await;
    let mut requests = Vec::with_capacity(n);
    for i in 0..n {
        let request = EventBuilder::new(Kind::Custom(5050), "")
            .tag(Tag::parse(["i", &format!("job {i}"), "text"])?)
            .sign_with_keys(customer)?;
        client.send_event(&request).await?;
        requests.push(request.id);
    }
    Ok((client, requests))
}

/// Per job, its ledger `processing_started` time minus `t0` (unix ms), sorted ascending.
pub fn processing_latencies(
    store: &Store,
    t0: &HashMap<String, u64>,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(t0.len());
    for (job, t0) in t0 {
        let trail = store.audit(job)?.context("job trail")?;
        let started = trail
            .events
            .iter()
            .find(|e| matches!(e.event, EventBody::ProcessingStarted { .. }))
            .context("processing_started")?;
        latencies.push(Duration::from_millis(started.at.saturating_sub(*t0)));
    }
    latencies.sort();
    Ok(latencies)
}
