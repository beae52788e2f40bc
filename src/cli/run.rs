//! `paydvm run [--config paydvm.toml] [--log-format text|json] [--new-ledger] [--standby]`: load
//! the config, make the `check-config` checks, start the node, serve until SIGINT, SIGTERM or
//! SIGHUP, then shut down cleanly (exit 0). With `--standby` the node first waits while another
//! node holds the ledger, and takes over when it stops or dies (a signal while waiting exits 0).
//! A node that loses its database lock while serving exits 1 at once, without writing more:
//! a standby may already be writing (a service manager restarts it, as a standby). Logs go to
//! stderr (`PAYDVM_LOG`, default `info`; format from `--log-format` or `PAYDVM_LOG_FORMAT`);
//! stdout gets the node's public key and relays. Prints no secret key.
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
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

use super::output;
use crate::config::Config;
use crate::node::ledger_open::{self, LedgerLocks};
use crate::node::shared_work;
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

/// `run`'s switches.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFlags {
    /// `--new-ledger`.
    pub new_ledger: bool,
    /// `--standby`.
    pub standby: bool,
}

pub fn run(config_path: &Path, format: Option<LogFormat>, flags: RunFlags) -> anyhow::Result<u8> {
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
    let outcome = runtime.block_on(serve(config, flags));
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

/// The three signals that stop the node.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> anyhow::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            hup: signal(SignalKind::hangup()).context("listening for SIGHUP")?,
        })
    }

    /// The name of the first that arrives.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

async fn serve(config: Config, flags: RunFlags) -> anyhow::Result<u8> {
    let relays: Vec<String> = config.relays.urls.iter().map(|r| r.to_string()).collect();
    // Listen before starting, so a signal that arrives during start-up is not lost.
    let mut signals = Signals::listen()?;
    super::check_config::at_start(&config).await?;
    let options = NodeOptions {
        new_ledger: flags.new_ledger,
        ..NodeOptions::default()
    };
    let Some(locks) = take_locks(&config, flags, &mut signals).await? else {
        return Ok(super::EXIT_OK);
    };
    let node = Node::start_locked(config, options, locks).await?;
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
        which = signals.next() => which,
        reason = node.must_stop() => {
            // Not a clean shutdown: that would write, and a standby may hold the ledger now.
            // Stopping here is a crash, which the ledger is built to survive.
            error!("{reason}; stopping at once without writing more");
            std::process::exit(super::EXIT_ERROR.into());
        }
    };
    info!("{which} received; shutting down");
    node.shutdown().await;
    info!("stopped");
    Ok(super::EXIT_OK)
}

/// The ledger's locks: at once, or with `--standby` once free. `None` when a signal came
/// while standing by.
async fn take_locks(
    config: &Config,
    flags: RunFlags,
    signals: &mut Signals,
) -> anyhow::Result<Option<LedgerLocks>> {
    if !flags.standby {
        return ledger_open::claim(&config.node, flags.new_ledger).map(Some);
    }
    if !config.policy.trusted_mints().is_empty() {
        let ecash = crate::node::ecash_store::EcashStore::of(&config.node)?;
        if !ecash.is_shared() {
            warn!(
                wallet = %ecash.shown(),
                "standby on a node that takes ecash: its Cashu wallet and pending swaps are \
                 local files; share this directory with the other nodes, or the ecash a dead \
                 node held stays on its disk until it serves again"
            );
        }
    }
    // A standby runs the attempts of offers shared by any node while it waits.
    let executors =
        std::sync::Arc::new(crate::node::worker::executors_from_offers(&config.offers)?);
    let keys = config.keys.expose();
    let runner = shared_work::standby_runner(&config.node.ledger, &config.offers, executors, keys)?;
    if runner.is_some() {
        info!("standing by; running shared attempts meanwhile");
    }
    let poll = ledger_open::STANDBY_POLL;
    let claimed = tokio::select! {
        locks = ledger_open::claim_when_free(&config.node, flags.new_ledger, poll) => {
            locks.map(Some)
        }
        which = signals.next() => {
            info!("{which} received while standing by; stopping");
            Ok(None)
        }
    };
    // Taking over, its attempts run on to their end (this node's desk collects them now);
    // stopping, they are handed back for the serving node to claim at once.
    if let (false, Some(runner)) = (matches!(claimed, Ok(Some(_))), runner) {
        runner.hand_back(shared_work::HAND_BACK_WITHIN).await;
    }
    claimed
}
