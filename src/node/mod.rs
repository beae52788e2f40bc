//! The running node: relay intake → core (ledger + policy, one actor) → executors and the effect
//! outbox. See `docs/node.md`.
//!
//! - [`core`]: one task owns the ledger (an SQLite file or PostgreSQL, see [`ledger_open`]), the
//!   policy and the keys;
//!   every command becomes one all-or-nothing group; waiting commands share one write.
//! - [`intake`]: subscribes to the configured relays and forwards verified events to the core;
//!   [`relays`] keeps each relay connected (bounded back-off) and subscribed, and
//!   [`republish`] gives a relay the stored announcements it lacks.
//! - [`worker`]: runs one executor attempt and reports back.
//! - [`outbox`]: publishes the signed events stored as `effect_requested` and reports delivery.
//! - [`zaps`]: verifies zap receipts (NIP-57) and hands them to the core as payments.
//! - [`nutzaps`] / [`tokens`]: the Cashu rail: NutZaps (NIP-61) and tokens in job requests.
//! - [`announce`]: NIP-89 announcements and the kind 0 profile (through the outbox) and the
//!   kind 11998 heartbeat (direct).

pub mod announce;
pub mod control;
pub mod core;
pub mod decide;
mod ecash_attempts;
mod ecash_deferrals;
pub mod ecash_refunds;
pub mod ecash_store;
mod held_credits;
pub mod http;
pub mod intake;
pub mod invoicing;
pub mod ledger_lock;
pub mod ledger_marker;
pub mod ledger_open;
pub mod ledger_watch;
pub mod local_relay;
pub mod nutzaps;
pub mod outbox;
pub mod pending_store;
pub mod queues;
pub mod refunds;
pub mod relay_guard;
pub mod relays;
pub mod repeat_log;
pub mod republish;
pub mod shared_work;
pub mod telemetry;
pub mod tokens;
pub mod transport;
pub mod worker;
pub mod zaps;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nostr_sdk::prelude::{Event, PublicKey};
use paydvm_ledger::{JobRecord, Msat};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::{
    BackendSecrets, Config, LedgerPlace, LightningConfig, DEFAULT_INVOICE_TIMEOUT_SECS,
    DEFAULT_MAX_FEE_MSAT,
};
use crate::lightning::fake::FakeLightning;
use crate::lightning::lnbits::LnbitsLightning;
use crate::lightning::nwc::NwcLightning;
use crate::lightning::LightningBackend;
use crate::payments::lnurl::{self, LnurlHttp, PayEndpointCache};

pub use self::core::{Command, ExecFailure, VerifiedPayment};

/// How often the core looks for quotes to expire.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long an effect the outbox could not deliver waits before it is tried again in the same
/// run (it is also re-sent at every start).
pub const RESEND_AFTER: Duration = Duration::from_secs(60);

/// How long [`NodeHandle::shutdown`] waits for pending publications before closing the ledger.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// Start-up knobs that are not in the config file (tests, tools).
#[derive(Clone)]
pub struct NodeOptions {
    /// Heartbeat period; [`announce::HEARTBEAT_EVERY`] by default.
    pub heartbeat_every: Duration,
    /// A Lightning backend to use instead of the config's `[lightning]` (the demo and tests
    /// keep a handle on a [`FakeLightning`](crate::lightning::fake::FakeLightning) to pay it).
    pub lightning: Option<Arc<dyn LightningBackend>>,
    /// How long an undelivered effect waits before it is published again; [`RESEND_AFTER`] by
    /// default.
    pub resend_after: Duration,
    /// The DNS resolver for LNURL calls instead of the system's (tests: a name that resolves to
    /// a private address). Its answers still pass the node's host policy.
    pub lnurl_dns: Option<Arc<dyn reqwest::dns::Resolve>>,
    /// The DNS resolver for the names of relays customers name instead of the system's (tests:
    /// a name that resolves to this host). Its answers pass the node's host policy
    /// ([`relay_guard`]).
    pub relay_dns: Option<Arc<dyn reqwest::dns::Resolve>>,
    /// How far apart two look-ups must both find no record of a Lightning refund payment before
    /// it counts as never sent (and its invoice is paid again); [`refunds::NEVER_SENT_AFTER`]
    /// by default. Tests make it short.
    pub never_sent_after: Duration,
    /// Pauses between connection attempts to a relay that is down;
    /// [`relays::Backoff::DEFAULT`] by default.
    pub relay_backoff: relays::Backoff,
    /// Start an empty ledger even if the node directory shows that one existed
    /// (`paydvm run --new-ledger`; see [`ledger_marker`]).
    pub new_ledger: bool,
    /// Run before each sync of a ledger file's WAL (tests hold a sync back, or fail it);
    /// `None` by default.
    pub before_wal_sync: Option<paydvm_ledger::store::wal_sync::BeforeSync>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            heartbeat_every: announce::HEARTBEAT_EVERY,
            lightning: None,
            resend_after: RESEND_AFTER,
            lnurl_dns: None,
            relay_dns: None,
            never_sent_after: refunds::NEVER_SENT_AFTER,
            relay_backoff: relays::Backoff::DEFAULT,
            new_ledger: false,
            before_wal_sync: None,
        }
    }
}

impl std::fmt::Debug for NodeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeOptions")
            .field("heartbeat_every", &self.heartbeat_every)
            .field("lightning", &self.lightning.as_ref().map(|l| l.name()))
            .field("resend_after", &self.resend_after)
            .field("lnurl_dns", &self.lnurl_dns.as_ref().map(|_| "custom"))
            .field("relay_dns", &self.relay_dns.as_ref().map(|_| "custom"))
            .field("never_sent_after", &self.never_sent_after)
            .field("relay_backoff", &self.relay_backoff)
            .field("new_ledger", &self.new_ledger)
            .field(
                "before_wal_sync",
                &self.before_wal_sync.as_ref().map(|_| "hook"),
            )
            .finish()
    }
}

/// Every LNURL call (our lud16, customers' refund addresses) goes through one client under the
/// node's host policy.
fn lnurl_http(
    node: &crate::config::Node,
    options: &NodeOptions,
) -> Result<LnurlHttp, lnurl::LnurlError> {
    let policy = node.lnurl_host_policy();
    match options.lnurl_dns.clone() {
        Some(dns) => LnurlHttp::with_resolver(policy, dns),
        None => LnurlHttp::new(policy),
    }
}

/// The configured Lightning backend, if any.
async fn lightning_backend(
    config: Option<&LightningConfig>,
) -> anyhow::Result<Option<Arc<dyn LightningBackend>>> {
    let Some(config) = config else {
        return Ok(None);
    };
    Ok(Some(match &config.backend {
        BackendSecrets::Fake => {
            warn!("lightning backend \"fake\": invoices are regtest and nobody can pay them");
            Arc::new(FakeLightning::new())
        }
        BackendSecrets::Nwc { uri } => Arc::new(NwcLightning::new(
            uri,
            Duration::from_secs(config.invoice_timeout_secs),
        )?),
        BackendSecrets::Lnbits {
            url,
            invoice_key,
            admin_key,
        } => {
            if admin_key.is_none() {
                warn!(
                    "lightning backend \"lnbits\" without an admin key \
                     (lightning.lnbits_admin_key_file/_env): it cannot pay refunds; failed paid \
                     jobs' refunds wait until one is set"
                );
            }
            Arc::new(LnbitsLightning::new(
                url,
                invoice_key,
                admin_key.as_ref(),
                Duration::from_secs(config.invoice_timeout_secs),
            )?)
        }
    }))
}

/// A started node. Dropping it without [`NodeHandle::shutdown`] leaves the tasks running until
/// the runtime stops.
pub struct NodeHandle {
    commands: mpsc::Sender<Command>,
    /// The core's thread: joined at shutdown, before the ledger lock is let go.
    core: std::thread::JoinHandle<()>,
    ticker: JoinHandle<()>,
    intake: intake::Intake,
    heartbeat: announce::Heartbeat,
    zaps: Option<zaps::ZapIntake>,
    nutzaps: Option<nutzaps::NutZapRail>,
    pubkey: PublicKey,
    /// What the node's local files are named after (the ledger file, or
    /// `<state_dir>/paydvm`).
    ledger: PathBuf,
    place: LedgerPlace,
    control: control::Control,
    relays: relays::RelayBoard,
    /// The `[http]` endpoint, when configured.
    http: Option<http::HttpServer>,
    /// What is wrong with the ledger file now, if anything (kept by the core).
    ledger_fault: core::FaultReport,
    /// Set by the core when the node must stop at once.
    stop_order: core::StopOrder,
    /// This node's runner of shared attempts (`execute_on = "any_node"`), if any.
    shared_runner: Option<shared_work::Runner>,
    /// Released last, after the core has closed the ledger.
    lock: ledger_open::LedgerLocks,
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
        let lock = ledger_open::claim(&config.node, options.new_ledger)?;
        Self::start_locked(config, options, lock).await
    }

    /// Starts the node under locks already taken (a standby took them with
    /// [`ledger_open::claim_when_free`]).
    pub async fn start_locked(
        config: Config,
        options: NodeOptions,
        lock: ledger_open::LedgerLocks,
    ) -> anyhow::Result<NodeHandle> {
        let place = config.node.ledger.clone();
        let ledger = config.node.local_base();
        // Bound before anything starts, so a taken port stops the start cleanly.
        let http_listener = match &config.http {
            Some(http_config) => {
                // Before anything records: a series recorded earlier would be lost.
                http::exporter::install();
                Some(
                    http::bind(http_config.listen)
                        .await
                        .with_context(|| format!("[http] listen = {}", http_config.listen))?,
                )
            }
            None => None,
        };
        let (store, watch) = ledger_open::open(&place)?;
        let keys = config.keys.expose().clone();
        let pubkey = keys.public_key();
        let telemetry = telemetry::Telemetry::new(&pubkey.to_hex());
        let executors = Arc::new(worker::executors_from_offers(&config.offers)?);
        let (shared, shared_runner) =
            shared_work::start_serving(&place, &config.offers, Arc::clone(&executors), &keys)
                .await?
                .unzip();
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
            &announce::TierAnnouncement {
                tiers: config.policy.tiers(),
                us: pubkey,
            },
        );
        let sells_tiers = !config.policy.tiers().is_empty();
        let probed_mints = trusted_mints.clone();

        let backend = match options.lightning.clone() {
            Some(backend) => Some(backend),
            None => lightning_backend(config.lightning.as_ref()).await?,
        };
        let invoice_timeout = Duration::from_secs(
            config
                .lightning
                .as_ref()
                .map_or(DEFAULT_INVOICE_TIMEOUT_SECS, |l| l.invoice_timeout_secs),
        );
        let lnurl_http = lnurl_http(&config.node, &options)?;
        // Zaps count only if signed by our own LNURL server's key, learnt from our lud16.
        let lnurl = config
            .node
            .lud16
            .as_ref()
            .map(|lud16| PayEndpointCache::new(lud16, lnurl_http.clone(), lnurl::DEFAULT_TTL))
            .transpose()
            .context("node.lud16")?;
        // One cdk wallet for taking ecash (NutZaps, tokens) and paying it back (refunds), with
        // the ecash verified but not yet credited beside it.
        let ecash = match &p2pk {
            Some(key) => {
                let store = ecash_store::EcashStore::of(&config.node)?;
                let redeemer = store.redeemer(key.clone()).await?;
                Some((
                    Arc::new(redeemer.with_pacing(config.mint_pacing)),
                    store.pending()?,
                ))
            }
            None => None,
        };
        let redeemer = ecash.as_ref().map(|(redeemer, _)| Arc::clone(redeemer));
        let (commands, rx) = queues::commands();
        let customer_relays = Arc::new(relay_guard::RelayGuard::new(
            &config.relays,
            options.relay_dns.clone(),
        ));
        let outbox = outbox::Outbox::start(
            keys.clone(),
            commands.clone(),
            telemetry.clone(),
            customer_relays,
        );
        // The wallet the status page and `/readyz` probe.
        let probed_backend = backend.clone();
        let refunds = backend.clone().map(|backend| {
            refunds::RefundDesk::new(refunds::RefundDeskParts {
                backend,
                commands: commands.clone(),
                max_fee: Msat::from_msat(
                    config
                        .lightning
                        .as_ref()
                        .map_or(DEFAULT_MAX_FEE_MSAT, |l| l.max_fee_msat),
                ),
                lnurl: lnurl_http.clone(),
                profiles: transport::client(keys.clone()),
                relays: config.relays.urls.clone(),
                keys: keys.clone(),
                never_sent_after: options.never_sent_after,
            })
        });
        let invoices = backend.map(|backend| {
            info!(backend = backend.name(), "Lightning invoices per quote");
            invoicing::InvoiceDesk::start(backend, commands.clone(), invoice_timeout)
        });
        let mut core = core::Core::new(core::CoreParts {
            store,
            policy: config.policy,
            keys: keys.clone(),
            offered: offered.clone(),
            relays: config.relays.clone(),
            executors,
            shared,
            commands: commands.clone(),
            outbox,
            invoices,
            refunds,
            ecash_refunds: redeemer.as_ref().map(|redeemer| {
                ecash_refunds::EcashRefundDesk::new(
                    Arc::clone(redeemer),
                    keys.clone(),
                    config.relays.clone(),
                    commands.clone(),
                    config.input_fees,
                    options.relay_dns.clone(),
                )
            }),
            resend_after: options.resend_after,
            cashu_fees: p2pk.as_ref().map(|_| config.input_fees),
            telemetry: telemetry.clone(),
            watch,
            before_sync: options.before_wal_sync.clone(),
        });
        let ledger_fault = core.fault_report();
        let stop_order = core.stop_order();
        let startup = core.startup()?;
        let since_ms = startup.newest_at;
        let core_thread = core.spawn(rx)?;
        let board = relays::RelayBoard::observed(&config.relays.urls, Some(telemetry.clone()));
        let control = control::Control::start(&ledger, commands.clone(), board.clone())
            .with_context(|| format!("listening on {}", control::socket_path(&ledger).display()))?;
        let nutzaps = match (p2pk, ecash) {
            (Some(p2pk), Some((redeemer, pending))) => Some(
                nutzaps::NutZapRail::start(nutzaps::NutZapRailParts {
                    identity: keys.clone(),
                    offered: offered.clone(),
                    public_tokens: config.public_tokens,
                    input_fees: config.input_fees,
                    token_wait: config.token_wait,
                    p2pk,
                    mints: trusted_mints,
                    redeemer,
                    pending,
                    commands: commands.clone(),
                    relay_hint: config
                        .relays
                        .urls
                        .first()
                        .map(|r| r.to_string())
                        .unwrap_or_default(),
                    telemetry: telemetry.clone(),
                })
                .await?,
            ),
            _ => None,
        };
        let ticks = commands.clone();
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if ticks.send(Command::Tick).await.is_err() {
                    break;
                }
            }
        });
        let zaps = lnurl.map(|lnurl| {
            zaps::ZapIntake::start(pubkey, Arc::new(lnurl), PaymentSink::new(commands.clone()))
        });
        let intake = match intake::Intake::start(intake::IntakeParts {
            keys: keys.clone(),
            relays: config.relays.urls.clone(),
            kinds: offered.clone(),
            since_ms,
            pending_requests: startup.pending_requests,
            commands: commands.clone(),
            zaps: zaps.as_ref().map(zaps::ZapIntake::sender),
            nutzaps: nutzaps.as_ref().map(|n| n.sender()),
            subscriptions: sells_tiers,
            backoff: options.relay_backoff,
            board: board.clone(),
        })
        .await
        {
            Ok(intake) => intake,
            Err(e) => {
                ticker.abort();
                control.shutdown();
                let (done, rx) = oneshot::channel();
                if commands.send(Command::Shutdown { done }).await.is_ok() {
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
            intake.client(),
        );
        let http = match (http_listener, &config.http) {
            (Some(listener), Some(http_config)) => Some(http::HttpServer::start(
                listener,
                http::HttpParts {
                    token: http_config.token.clone(),
                    telemetry,
                    relays: board.clone(),
                    ledger: place.clone(),
                    node_name: config.node.name.clone(),
                    backend: probed_backend,
                    mints: probed_mints,
                    ledger_fault: ledger_fault.clone(),
                },
            )),
            _ => None,
        };
        Ok(NodeHandle {
            commands,
            core: core_thread,
            ticker,
            intake,
            heartbeat,
            zaps,
            nutzaps,
            pubkey,
            ledger,
            place,
            control,
            relays: board,
            http,
            ledger_fault,
            stop_order,
            shared_runner,
            lock,
        })
    }
}

impl NodeHandle {
    pub fn pubkey(&self) -> PublicKey {
        self.pubkey
    }

    /// The ledger file; for a PostgreSQL ledger, what the node's local files are named after
    /// (`<state_dir>/paydvm`): see [`NodeHandle::ledger`].
    pub fn ledger_path(&self) -> &std::path::Path {
        &self.ledger
    }

    /// Where the ledger is: a file or a database.
    pub fn ledger(&self) -> &LedgerPlace {
        &self.place
    }

    /// Why the node takes no paid work now: its ledger file is gone or cannot be written (see
    /// `ledger_watch`); `None` while the ledger is healthy. For readiness checks.
    pub fn ledger_fault(&self) -> Option<String> {
        self.ledger_fault.lock().ok().and_then(|f| f.clone())
    }

    /// What zap intake has done so far (`None` without a lud16).
    pub fn zap_stats(&self) -> Option<Arc<zaps::ZapStats>> {
        self.zaps.as_ref().map(zaps::ZapIntake::stats)
    }

    /// Each configured relay: up or down, since when (what `paydvm status` shows).
    pub fn relays(&self) -> Vec<relays::RelayReport> {
        self.relays.snapshot()
    }

    /// What the heartbeat task has done so far.
    pub fn heartbeat_stats(&self) -> Arc<announce::HeartbeatStats> {
        self.heartbeat.stats()
    }

    /// Hands an event to the core as if intake had received it (tests, tools). False when the
    /// core's queue is full or the core has stopped: nothing was handed over.
    pub fn submit(&self, event: Event) -> bool {
        let request = Command::Request {
            event: Box::new(event),
            relay: None,
        };
        self.commands.try_send(request).is_ok()
    }

    /// What the NutZap rail has done (`None` when it is off: no trusted mint or no key).
    pub fn nutzap_stats(&self) -> Option<Arc<nutzaps::NutZapStats>> {
        self.nutzaps.as_ref().map(|n| n.stats())
    }

    /// Hands a kind 9321 event to the NutZap rail as if intake had received it (tests, tools).
    pub fn submit_nutzap(&self, event: Event) -> bool {
        self.nutzaps
            .as_ref()
            .is_some_and(|n| n.sender().try_send(Box::new(event)).is_ok())
    }

    /// Where payment rails hand the core verified payments.
    pub fn payments(&self) -> PaymentSink {
        PaymentSink(self.commands.clone())
    }

    /// The ledger's record of `job`, asked of the running core.
    pub async fn job(&self, job: &str) -> Option<JobRecord> {
        job_record(&self.commands, job).await
    }

    /// Where the `[http]` endpoint listens (`None` without one): the bound address, so a
    /// configured port 0 reads as the port the system chose.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().map(http::HttpServer::addr)
    }

    /// Resolves, with the reason, when the node must stop at once without a clean shutdown
    /// (which would write): its database lock is lost (see [`ledger_open::LedgerLocks::lost`];
    /// a standby may hold it by then), or its store no longer matches the database (see
    /// [`core::StopOrder`]). To the ledger that stop is a crash, which it is built to survive.
    pub fn must_stop(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let lost = self.lock.lost();
        let mut order = self.stop_order.clone();
        async move {
            tokio::select! {
                () = lost => "the ledger's database lock is lost (its session ended or stopped \
                              answering)"
                    .to_string(),
                Ok(reason) = async { order.wait_for(Option::is_some).await.map(|r| r.clone()) } => {
                    reason.unwrap_or_default()
                }
            }
        }
    }

    /// Stops intake, waits (bounded) for pending publications, then closes the ledger.
    pub async fn shutdown(mut self) {
        // Shared attempts running here stop and are given back, for a standby (or this node's
        // next run) to claim at once; none is claimed from now on.
        if let Some(runner) = self.shared_runner.take() {
            runner.hand_back(shared_work::HAND_BACK_WITHIN).await;
        }
        if let Some(http) = self.http {
            http.shutdown().await;
        }
        self.control.shutdown();
        self.ticker.abort();
        self.heartbeat.shutdown().await;
        self.intake.shutdown().await;
        if let Some(zaps) = self.zaps {
            zaps.shutdown();
        }
        if let Some(nutzaps) = self.nutzaps {
            nutzaps.shutdown().await;
        }
        let (done, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown { done }).await.is_ok() {
            let _ = tokio::time::timeout(SHUTDOWN_DRAIN + Duration::from_secs(2), rx).await;
        }
        drop(self.commands);
        let core = self.core;
        let joined = tokio::task::spawn_blocking(move || core.join());
        match tokio::time::timeout(Duration::from_secs(5), joined).await {
            // Only now may another process write the ledger.
            Ok(_) => drop(self.lock),
            Err(_) => {
                // The core may still write: the lock is kept until the process exits.
                error!("the core did not stop in time; the ledger stays locked until exit");
                std::mem::forget(self.lock);
            }
        }
    }
}

/// Hands verified payments to the core. Cheap to clone; one per rail task.
#[derive(Debug, Clone)]
pub struct PaymentSink(mpsc::Sender<Command>);

impl PaymentSink {
    pub fn new(commands: mpsc::Sender<Command>) -> Self {
        PaymentSink(commands)
    }

    /// Waits while the core's queue is full. False once the core has stopped (the payment is
    /// not lost: its evidence is looked up again at the next start).
    pub async fn send(&self, payment: VerifiedPayment) -> bool {
        self.0
            .send(Command::Payment(Box::new(payment)))
            .await
            .is_ok()
    }
}

/// The ledger's record of `job`, asked of the core: answered after every command sent before.
pub(crate) async fn job_record(commands: &mpsc::Sender<Command>, job: &str) -> Option<JobRecord> {
    let (reply, rx) = oneshot::channel();
    let job = paydvm_ledger::JobId::new(job).ok()?;
    commands.send(Command::Job { job, reply }).await.ok()?;
    rx.await.ok().flatten()
}

/// Wall-clock time in unix milliseconds: the node reads the clock, the ledger never does.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
