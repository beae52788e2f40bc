//! An embedded relay on 127.0.0.1 for the demo and the tests.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Context;
use nostr_relay_builder::prelude::{LocalRelay, RateLimit, RelayBuilder};
use nostr_sdk::prelude::RelayUrl;

/// Attempts at binding a port before giving up.
const START_ATTEMPTS: usize = 8;

/// Start a relay on a free loopback port, with the per-connection rate limit lifted (the default
/// of ~60 events a minute throttles a demo or a test run).
///
/// The relay picks a random port and checks it by binding, then binds it again when it starts;
/// something else can take the port in between, so a failed start is retried on a new port.
pub async fn start_local_relay() -> anyhow::Result<(LocalRelay, RelayUrl)> {
    let mut last_error = None;
    for _ in 0..START_ATTEMPTS {
        let relay = LocalRelay::new(
            RelayBuilder::default()
                .addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
                .rate_limit(RateLimit {
                    max_reqs: 500,
                    notes_per_minute: 100_000,
                }),
        );
        match relay.run().await {
            Ok(()) => {
                let url = relay.url().await;
                return Ok((relay, url));
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.expect("at least one attempt")).context("starting the embedded relay")
}
