//! The running node: relay intake → core (ledger + policy, one actor) → executors and the effect
//! outbox. See `docs/node.md`.
//!
//! - [`core`]: one task owns the [`Store`](paydvm_ledger::store::Store), the policy and the keys;
//!   every command becomes one all-or-nothing `append_group`.
//! - [`intake`]: subscribes to the configured relays and forwards verified events to the core.
//! - [`worker`]: runs one executor attempt and reports back.
//! - [`outbox`]: publishes the signed events stored as `effect_requested` and reports delivery.
//! - [`announce`]: NIP-89 announcements and the kind 0 profile (through the outbox) and the
//!   kind 11998 heartbeat (direct).

pub mod announce;
pub mod core;
pub mod intake;
pub mod local_relay;
pub mod nutzaps;
pub mod outbox;
pub mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nostr_sdk::prelude::{Event, PublicKey};
use paydvm_ledger::store::{Durability, Store};
use paydvm_ledger::JobRecord;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::Config;

pub use self::core::{Command, ExecFailure, VerifiedPayment};

/// How often the core looks for quotes to expire.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long [`NodeHandle::shutdown`] waits for pending publications before closing the ledger.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// Start-up knobs that are not in the config file (tests, tools).
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Heartbeat period; [`announce::HEARTBEAT_EVERY`] by default.
    pub heartbeat_every: Duration,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            heartbeat_every: announce::HEARTBEAT_EVERY,
        }
    }
}

/// A started node. Dropping it without [`NodeHandle::shutdown`] leaves the tasks running until
/// the runtime stops.
pub struct NodeHandle {
    commands: mpsc::UnboundedSender<Command>,
    core: JoinHandle<()>,
    ticker: JoinHandle<()>,
    intake: intake::Intake,
    heartbeat: announce::Heartbeat,
    nutzaps: Option<nutzaps::NutZapRail>,
    pubkey: PublicKey,
    ledger: PathBuf,
}

/// Starts the node: opens the ledger, re-sends undelivered effects, resumes interrupted jobs,
/// connects to the relays and starts serving requests.
pub async fn start(config: Config) -> anyhow::Result<NodeHandle> {
    Node::start(config).await
}

/// Namespace for [`Node::start`].
pub struct Node;

impl Node {
    pub async fn start(config: Config) -> anyhow::Result<NodeHandle> {
        Self::start_with(config, NodeOptions::default()).await
    }

    pub async fn start_with(config: Config, options: NodeOptions) -> anyhow::Result<NodeHandle> {
        let ledger = config.node.ledger.clone();
        let store = Store::open(&ledger, Durability::Full)
            .with_context(|| format!("opening the ledger {}", ledger.display()))?;
        let keys = config.keys.expose().clone();
        let pubkey = keys.public_key();
        let executors = Arc::new(worker::executors_from_offers(&config.offers)?);
        let offered: Vec<u16> = config.offers.iter().map(|o| o.kind).collect();
        let trusted_mints: Vec<paydvm_mints::TrustedMint> = config
            .policy
            .trusted_mints()
            .iter()
            .map(|m| paydvm_mints::TrustedMint::new(&m.url, m.units.iter().cloned()))
            .collect();
        let p2pk = match (&config.p2pk_key, trusted_mints.is_empty()) {
            (Some(key), false) => Some(
                paydvm_mints::ReceiveKey::from_secret_bytes(
                    &key.expose().secret_key().secret_bytes(),
                )
                .context("the NutZap key is not a valid secp256k1 key")?,
            ),
            _ => None,
        };
        let nutzap_info = p2pk.as_ref().map(|key| announce::NutZapInfo {
            relays: config.relays.urls.iter().map(|r| r.to_string()).collect(),
            mints: trusted_mints.clone(),
            p2pk_xonly: key.xonly_hex(),
        });
        let announcements = announce::announcements(
            &config.node,
            &config.offers,
            config.policy.pricing(),
            nutzap_info.as_ref(),
        );

        let (commands, rx) = mpsc::unbounded_channel();
        let outbox = outbox::Outbox::start(keys.clone(), commands.clone());
        let mut core = core::Core::new(core::CoreParts {
            store,
            policy: config.policy,
            keys: keys.clone(),
            offered: offered.clone(),
            relays: config.relays.clone(),
            executors,
            commands: commands.clone(),
            outbox,
        });
        let startup = core.startup()?;
        let since_ms = startup.newest_at;
        let core_task = tokio::spawn(core.run(rx));
        let nutzaps = match p2pk {
            Some(p2pk) => Some(
                nutzaps::NutZapRail::start(nutzaps::NutZapRailParts {
                    identity: keys.clone(),
                    p2pk,
                    mints: trusted_mints,
                    wallet: crate::config::wallet_path(&ledger),
                    pending: crate::config::pending_path(&ledger),
                    commands: commands.clone(),
                    relay_hint: config
                        .relays
                        .urls
                        .first()
                        .map(|r| r.to_string())
                        .unwrap_or_default(),
                })
                .await?,
            ),
            None => None,
        };
        let ticks = commands.clone();
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if ticks.send(Command::Tick).is_err() {
                    break;
                }
            }
        });
        let intake = match intake::Intake::start(intake::IntakeParts {
            keys: keys.clone(),
            relays: config.relays.urls.clone(),
            kinds: offered.clone(),
            since_ms,
            pending_requests: startup.pending_requests,
            commands: commands.clone(),
            nutzaps: nutzaps.as_ref().map(|n| n.sender()),
        })
        .await
        {
            Ok(intake) => intake,
            Err(e) => {
                ticker.abort();
                let (done, rx) = oneshot::channel();
                if commands.send(Command::Shutdown { done }).is_ok() {
                    let _ = tokio::time::timeout(SHUTDOWN_DRAIN, rx).await;
                }
                return Err(e);
            }
        };
        let heartbeat = announce::Heartbeat::start(
            keys,
            config.relays.urls.clone(),
            offered,
            options.heartbeat_every,
            announce::FirstConnect {
                commands: commands.clone(),
                announcements,
            },
        );
        Ok(NodeHandle {
            commands,
            core: core_task,
            ticker,
            intake,
            heartbeat,
            nutzaps,
            pubkey,
            ledger,
        })
    }
}

impl NodeHandle {
    pub fn pubkey(&self) -> PublicKey {
        self.pubkey
    }

    pub fn ledger_path(&self) -> &std::path::Path {
        &self.ledger
    }

    /// What the heartbeat task has done so far.
    pub fn heartbeat_stats(&self) -> Arc<announce::HeartbeatStats> {
        self.heartbeat.stats()
    }

    /// Hands an event to the core as if intake had received it (tests, tools).
    pub fn submit(&self, event: Event) {
        let _ = self.commands.send(Command::Request {
            event: Box::new(event),
            relay: None,
        });
    }

    /// What the NutZap rail has done (`None` when it is off: no trusted mint or no key).
    pub fn nutzap_stats(&self) -> Option<Arc<nutzaps::NutZapStats>> {
        self.nutzaps.as_ref().map(|n| n.stats())
    }

    /// Hands a kind 9321 event to the NutZap rail as if intake had received it (tests, tools).
    pub fn submit_nutzap(&self, event: Event) -> bool {
        self.nutzaps
            .as_ref()
            .is_some_and(|n| n.sender().send(Box::new(event)).is_ok())
    }

    /// Where payment rails hand the core verified payments.
    pub fn payments(&self) -> PaymentSink {
        PaymentSink(self.commands.clone())
    }

    /// The ledger's record of `job`, asked of the running core.
    pub async fn job(&self, job: &str) -> Option<JobRecord> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Job {
                job: job.to_owned(),
                reply,
            })
            .ok()?;
        rx.await.ok().flatten()
    }

    /// Stops intake, waits (bounded) for pending publications, then closes the ledger.
    pub async fn shutdown(self) {
        self.ticker.abort();
        self.heartbeat.shutdown().await;
        self.intake.shutdown().await;
        if let Some(nutzaps) = self.nutzaps {
            nutzaps.shutdown().await;
        }
        let (done, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown { done }).is_ok() {
            let _ = tokio::time::timeout(SHUTDOWN_DRAIN + Duration::from_secs(2), rx).await;
        }
        let mut core = self.core;
        if tokio::time::timeout(Duration::from_secs(5), &mut core)
            .await
            .is_err()
        {
            core.abort();
        }
    }
}

/// Hands verified payments to the core. Cheap to clone; one per rail task.
#[derive(Debug, Clone)]
pub struct PaymentSink(mpsc::UnboundedSender<Command>);

impl PaymentSink {
    pub fn new(commands: mpsc::UnboundedSender<Command>) -> Self {
        PaymentSink(commands)
    }

    /// False once the core has stopped (the payment is not lost: its evidence is looked up
    /// again at the next start).
    pub fn send(&self, payment: VerifiedPayment) -> bool {
        self.0.send(Command::Payment(Box::new(payment))).is_ok()
    }
}

/// Wall-clock time in unix milliseconds: the node reads the clock, the ledger never does.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
