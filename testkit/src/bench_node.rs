//! What the payment benchmark binaries (zap and invoice) share: the priced node they run (set
//! up through [`crate::fixture`]), its customers' requests and a wait for a job's state, so each
//! bench only adds its own rail.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nostr_sdk::prelude::*;
use paydvm::config::LedgerPlace;
use paydvm::ledger_handle::LedgerHandle;
use paydvm_ledger::{Durability, EventBody, JobState, LedgerStore, PaymentOption, StoreOptions};

use paydvm::node::NodeHandle;

use crate::fixture::{NodeDir, Offer};

/// What one priced job costs in the benchmarks (kind 5050, built-in text executor).
pub use crate::fixture::PRICE_MSAT;

/// The node of the payment benches: kind 5050 at [`PRICE_MSAT`] on the text executor (64 jobs
/// at once), quotes valid for an hour, no per-customer quote cap. Named "payment bench node".
pub fn priced_node() -> NodeDir {
    NodeDir::new("payment bench node")
        .policy(&format!(
            "[admission]\nmax_pending_quotes_per_pubkey = 1000000\n\n\
             [quote]\nexpiry_secs = 3600\n\n\
             [[pricing.kind]]\nkind = 5050\nmode = \"fixed\"\namount_msat = {PRICE_MSAT}\n"
        ))
        .offer(Offer::text(5050).timeout_secs(5).max_concurrency(64))
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
    store: &impl LedgerStore,
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

/// A node's ledger (a file or a database), read-only: safe while the node runs.
pub fn open_read_only(place: &LedgerPlace) -> anyhow::Result<LedgerHandle> {
    let options = StoreOptions::everything(Durability::Normal).read_only();
    Ok(LedgerHandle::open(place, &options)?)
}

/// Each job's quoted invoice payment hash, from the live ledger (read-only).
pub fn quoted_invoices(
    node: &paydvm::node::NodeHandle,
    jobs: &[String],
) -> anyhow::Result<Vec<(String, String)>> {
    let store = open_read_only(node.ledger())?;
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let trail = store.audit(job)?.context("job trail")?;
        let hash = trail
            .events
            .iter()
            .find_map(|e| match &e.event {
                EventBody::QuoteIssued { options, .. } => options.iter().find_map(|o| match o {
                    PaymentOption::Invoice { payment_hash, .. } => Some(payment_hash.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .with_context(|| format!("job {job} was quoted without an invoice"))?;
        out.push((job.clone(), hash));
    }
    Ok(out)
}

/// A NutZap (NIP-61, kind 9321) from `sender` paying `job` to `to` with `proofs` of `mint`.
pub fn nutzap_event(
    sender: &Keys,
    proofs: &[cdk::nuts::Proof],
    mint: &str,
    job: EventId,
    to: PublicKey,
) -> anyhow::Result<Event> {
    let mut tags = Vec::with_capacity(proofs.len() + 4);
    for proof in proofs {
        tags.push(Tag::parse([
            "proof".to_owned(),
            serde_json::to_string(proof)?,
        ])?);
    }
    tags.push(Tag::parse(["unit", "sat"])?);
    tags.push(Tag::parse(["u", mint])?);
    tags.push(Tag::event(job));
    tags.push(Tag::public_key(to));
    Ok(EventBuilder::new(Kind::from(9321), "")
        .tags(tags)
        .sign_with_keys(sender)?)
}
