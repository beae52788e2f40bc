//! `paydvm run [--config paydvm.toml]`: load the config, make the `check-config` checks, start
//! the node, serve until SIGINT or SIGTERM, then shut down cleanly. Logs go to stderr
//! (`PAYDVM_LOG`, default `info`); stdout gets the node's public key and relays. Prints no
//! secret key.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use nostr_sdk::prelude::ToBech32;
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;
use tracing_subscriber::EnvFilter;

use super::output;
use crate::config::Config;
use crate::node::Node;

/// The environment variable holding the log filter (`tracing_subscriber::EnvFilter` syntax).
pub const LOG_ENV: &str = "PAYDVM_LOG";

pub fn run(config_path: &Path) -> anyhow::Result<u8> {
    // Errors from loading name the file and field, never the key material.
    let config = Config::load(config_path)?;
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(serve(config));
    runtime.shutdown_timeout(Duration::from_secs(2));
    outcome
}

fn init_logging() {
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    // Fails only if a subscriber is already installed; the existing one keeps working.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

async fn serve(config: Config) -> anyhow::Result<u8> {
    let relays: Vec<String> = config.relays.urls.iter().map(|r| r.to_string()).collect();
    // Listen before starting, so a signal that arrives during start-up is not lost.
    let mut sigint = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    super::check_config::at_start(&config).await?;
    let node = Node::start(config).await?;
    let npub = node
        .pubkey()
        .to_bech32()
        .context("encoding the public key")?;
    output::print(&format!(
        "paydvm node {npub} running\nrelays: {}\nledger: {}\n",
        relays.join(", "),
        node.ledger_path().display()
    ))?;
    let which = tokio::select! {
        _ = sigint.recv() => "SIGINT",
        _ = sigterm.recv() => "SIGTERM",
    };
    info!("{which} received; shutting down");
    node.shutdown().await;
    info!("stopped");
    Ok(super::EXIT_OK)
}
