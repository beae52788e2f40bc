//! What bounds a job before the node: Schnorr signing and verifying on one core, and a serial
//! publisher's round trips to the relay.

use std::time::{Duration, Instant};

use nostr_sdk::prelude::*;
use paydvm_testkit::bench_stats::percentile;

use crate::ms;

/// Signs `n` result-like events with one key, then verifies them: the Schnorr cost per job.
pub fn schnorr(n: usize) -> anyhow::Result<()> {
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
pub async fn relay_round_trips(url: &RelayUrl, n: usize) -> anyhow::Result<()> {
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
