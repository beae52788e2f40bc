//! An embedded relay on 127.0.0.1 for the demo, the tests and the benchmarks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context;
use nostr_relay_builder::prelude::{LocalRelay, RateLimit, RelayBuilder};
use nostr_sdk::prelude::RelayUrl;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tracing::debug;

use super::transport::accept_upgrade;

/// How long a new connection may take to send its websocket upgrade request.
const UPGRADE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// rust-nostr's LocalRelay behind our own listener: we bind the port (no race between picking a
/// free port and binding it) and set `TCP_NODELAY` on every connection (see
/// [`transport`](super::transport)). Stops when dropped.
pub struct EmbeddedRelay {
    relay: LocalRelay,
    accept: JoinHandle<()>,
}

impl EmbeddedRelay {
    /// Stops taking connections and closes the open ones (LocalRelay's own shutdown misses a
    /// session that is busy at that instant).
    pub fn shutdown(&self) {
        self.accept.abort();
        self.relay.shutdown();
    }
}

impl Drop for EmbeddedRelay {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Start a relay on a free loopback port, with the per-connection rate limit lifted (the default
/// of ~60 events a minute throttles a demo or a test run).
pub async fn start_local_relay() -> anyhow::Result<(EmbeddedRelay, RelayUrl)> {
    start_local_relay_on(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await
}

/// [`start_local_relay`] on a given address (a restarted relay on its old port, in tests).
pub async fn start_local_relay_on(addr: SocketAddr) -> anyhow::Result<(EmbeddedRelay, RelayUrl)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the embedded relay to {addr}"))?;
    let bound = listener.local_addr()?;
    // The builder's bucket refills only from whole seconds since the connection's previous
    // event, so a connection that never pauses for a second gets no new tokens at all: any
    // finite figure here is a cap on the events one connection can ever publish (100 000 was:
    // at two events per job a node's connection is refused after 50 000 jobs). u32::MAX lifts it.
    let relay = LocalRelay::new(RelayBuilder::default().rate_limit(RateLimit {
        max_reqs: 500,
        notes_per_minute: u32::MAX,
    }));
    let serving = relay.clone();
    let accept = tokio::spawn(async move {
        // Owned here so that stopping this task (shutdown, drop) also closes every connection.
        let mut sessions = JoinSet::new();
        loop {
            while sessions.try_join_next().is_some() {}
            let (mut stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    debug!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let relay = serving.clone();
            sessions.spawn(async move {
                let _ = stream.set_nodelay(true);
                match tokio::time::timeout(UPGRADE_TIMEOUT, accept_upgrade(&mut stream)).await {
                    Ok(Ok(())) => {
                        if let Err(e) = relay.take_connection(stream, peer).await {
                            debug!(%peer, "relay connection ended: {e}");
                        }
                    }
                    Ok(Err(e)) => debug!(%peer, "not a websocket upgrade: {e}"),
                    Err(_) => debug!(%peer, "websocket upgrade timed out"),
                }
            });
        }
    });
    let url = RelayUrl::parse(&format!("ws://{bound}")).context("the relay's own url")?;
    Ok((EmbeddedRelay { relay, accept }, url))
}
