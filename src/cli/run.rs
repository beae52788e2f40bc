//! `paydvm run [--config paydvm.toml] [--log-format text|json] [--new-ledger]`: load the config,
//! make the `check-config` checks, start the node, serve until SIGINT, SIGTERM or SIGHUP, then
//! shut down cleanly (exit 0). Logs go to stderr (`PAYDVM_LOG`, default `info`; format from
//! `--log-format` or `PAYDVM_LOG_FORMAT`); stdout gets the node's public key and relays. Prints
//! no secret key.
//!
//! SIGHUP stops the node like SIGTERM: nothing in the config can be reloaded safely while jobs
//! hold quotes priced by it, and a terminal that closes (the default meaning of SIGHUP) should
//! not kill the node mid-write. Restart the service to apply a new config.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use nostr_sdk::prelude::ToBech32;
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;
use tracing_subscriber::EnvFilter;

use super::output;
use crate::config::Config;
use crate::node::{Node, NodeOptions};

/// The environment variable holding the log filter (`tracing_subscriber::EnvFilter` syntax).
pub const LOG_ENV: &str = "PAYDVM_LOG";

/// The environment variable choosing the log format (`text` or `json`) when `--log-format` is
/// not given.
pub const LOG_FORMAT_ENV: &str = "PAYDVM_LOG_FORMAT";

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours only on a terminal).
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`, `span`), for log
    /// collectors.
    Json,
}

pub fn run(config_path: &Path, format: Option<LogFormat>, new_ledger: bool) -> anyhow::Result<u8> {
    let format = log_format(format)?;
    // Errors from loading name the file and field, never the key material.
    let config = Config::load(config_path)?;
    init_logging(format);
    if let Some(file) = config.node.ledger.file() {
        super::fatal_signal::explain_sigbus(file);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(serve(config, new_ledger));
    runtime.shutdown_timeout(Duration::from_secs(2));
    outcome
}

/// The flag, else the environment, else text.
fn log_format(flag: Option<LogFormat>) -> anyhow::Result<LogFormat> {
    if let Some(format) = flag {
        return Ok(format);
    }
    match std::env::var(LOG_FORMAT_ENV) {
        Err(_) => Ok(LogFormat::Text),
        Ok(v) if v.eq_ignore_ascii_case("text") || v.is_empty() => Ok(LogFormat::Text),
        Ok(v) if v.eq_ignore_ascii_case("json") => Ok(LogFormat::Json),
        Ok(v) => bail!("{LOG_FORMAT_ENV}={v:?}: expected \"text\" or \"json\""),
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Fails only if a subscriber is already installed; the existing one keeps working.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

async fn serve(config: Config, new_ledger: bool) -> anyhow::Result<u8> {
    let relays: Vec<String> = config.relays.urls.iter().map(|r| r.to_string()).collect();
    // Listen before starting, so a signal that arrives during start-up is not lost.
    let mut sigint = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut sighup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    super::check_config::at_start(&config).await?;
    let options = NodeOptions {
        new_ledger,
        ..NodeOptions::default()
    };
    let node = Node::start_with(config, options).await?;
    let npub = node
        .pubkey()
        .to_bech32()
        .context("encoding the public key")?;
    output::print(&format!(
        "paydvm node {npub} running\nrelays: {}\nledger: {}\n",
        relays.join(", "),
        node.ledger()
    ))?;
    let which = tokio::select! {
        _ = sigint.recv() => "SIGINT",
        _ = sigterm.recv() => "SIGTERM",
        _ = sighup.recv() => "SIGHUP",
    };
    info!("{which} received; shutting down");
    node.shutdown().await;
    info!("stopped");
    Ok(super::EXIT_OK)
}
