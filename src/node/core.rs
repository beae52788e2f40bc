//! The node's shell around the decision core ([`super::decide`]): the only owner of the ledger
//! store ([`LedgerHandle`]: an SQLite file or PostgreSQL). It takes one [`Command`] at a time, turns it into an [`Input`] (through the
//! protocol adapter for protocol events), asks the [`Decider`], renders the replies of each
//! decided group as signed events recorded with the group, and stages the group (all or
//! nothing). The commands waiting at one moment are written as one transaction (group commit);
//! only once that transaction is synced are their events published and their actions performed
//! (a ledger file's WAL is synced behind the commits while the next batch is decided: `durable`).
//!
//! ```text
//! intake ─► Command ─► adapter.read ─► Input ─► decide(state, policy, now) ─► Decision
//!   Decision.groups ─► render replies ─► stage ─► flush (one transaction per batch)
//!   ─► WAL synced (its own thread) ─► publications and actions, batch by batch
//! ```

mod checkpoints;
mod durable;
mod ledger_fault;
mod observe;
mod quote_waiters;
mod render;
pub(crate) mod startup;
mod story;
mod zapback;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use nostr_sdk::prelude::{Event, EventBuilder, JsonUtil, RelayUrl, UnsignedEvent};
use paydvm_ledger::store::wal_sync::BeforeSync;
use paydvm_ledger::LedgerStore;
use paydvm_ledger::{EffectId, EventBody, JobId, JobRecord, LedgerEvent, Pubkey, RefundId, UnixMs};
use paydvm_policies::Policy;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::{debug, error, info, warn};

pub use self::ledger_fault::{FaultReport, StopOrder};
pub use self::startup::Startup;
use super::decide::{keys, Action, Decider, Decision, Group, Input, Rails, RefundRouteOrder};
pub use super::decide::{ExecFailure, RefundStatus, VerifiedPayment};
use super::ecash_refunds::{EcashOrder, EcashRefundDesk};
use super::invoicing::{InvoiceDesk, InvoiceRequest};
use super::ledger_watch::LedgerWatch;
use super::outbox::{Outbox, Publication};
use super::refunds::{RefundDesk, RefundOrder};
use super::shared_work::{SharedExecution, WorkDesk};
use super::telemetry::Telemetry;
use super::{now_ms, worker};
use crate::config::{InputFees, Relays};
use crate::executor::Executors;
use crate::ledger_handle::LedgerHandle;
use crate::lightning::IssuedInvoice;
use crate::operator::{OperatorReply, OperatorRequest};
use crate::protocol::nip90::{Nip90Adapter, Nip90Context};

/// What the core is asked to do. Each command is handled to the end before the next one.
#[derive(Debug)]
pub enum Command {
    /// A job request seen on `relay` (signature already verified by the relay pool).
    Request {
        event: Box<Event>,
        relay: Option<RelayUrl>,
    },
    /// A NIP-09 deletion (kind 5), possibly cancelling one of our jobs.
    Deletion(Box<Event>),
    /// A subscribe or unsubscribe request (NIP-88 kind 7001 / 7002) addressed to us.
    Subscribe(Box<Event>),
    /// A payment whose evidence a rail verified end to end.
    Payment(Box<VerifiedPayment>),
    /// A rail refused a payment offered for a job (a token in a public tag, say): the customer
    /// is told, under that job. `request` is the job's request event, read again for the reply
    /// if the job no longer holds a reply context.
    PaymentRefused {
        job: JobId,
        reason: String,
        request: Box<Event>,
    },
    /// The Lightning backend created the invoice for a quote.
    InvoiceIssued {
        request: InvoiceRequest,
        invoice: IssuedInvoice,
    },
    /// The Lightning backend could not create the invoice: quote without one.
    InvoiceFailed {
        request: InvoiceRequest,
        reason: String,
    },
    /// A refund desk found a route for exactly what a refund owes.
    RefundRouted {
        refund: RefundId,
        attempt: u32,
        route: paydvm_ledger::RefundRoute,
    },
    /// A refund desk could not route a refund now.
    RefundDeferred { refund: RefundId, reason: String },
    /// What a refund desk learnt about a refund payment.
    RefundOutcome {
        refund: RefundId,
        attempt: u32,
        status: RefundStatus,
    },
    /// An executor attempt ended.
    ExecFinished {
        job: JobId,
        attempt: u32,
        outcome: Result<String, ExecFailure>,
    },
    /// A zap receipt (kind 9735) that names us as the zap's sender (`P`): perhaps the receipt
    /// of a refund we sent as a zap. Only the event's signature is checked so far.
    RefundZapReceipt(Box<Event>),
    /// The outbox delivered an effect.
    Published { effect: EffectId, detail: String },
    /// The outbox could not deliver an effect after its attempts; it stays pending.
    PublishGaveUp { effect: EffectId },
    /// Which of `refs` the ledger has already credited (payment references and linked refs,
    /// e.g. proof Ys). Answered after every command sent before it.
    CreditedRefs {
        refs: Vec<String>,
        reply: oneshot::Sender<Vec<String>>,
    },
    /// Read one job's record.
    Job {
        job: JobId,
        reply: oneshot::Sender<Option<JobRecord>>,
    },
    /// Send `job` on `tell` once the job is past `received` (quoted, refused, ended): a rail
    /// holding a payment for it (a swapped Cashu token) credits it then, not on a timer. Told at
    /// once if it is past already; see `quote_waiters` for when a tell is dropped.
    WhenQuoted {
        job: JobId,
        tell: mpsc::Sender<JobId>,
    },
    /// Periodic: expire quotes, retry refunds, re-send what the outbox gave up on.
    Tick,
    /// Publish the NIP-89 announcements, profile and markers that changed (no job).
    Announce(Vec<EventBuilder>),
    /// The node's whole set of announcements for this run: published where changed, and the
    /// stored handler informations and tiers it no longer has withdrawn (NIP-09).
    AnnounceAll(Vec<EventBuilder>),
    /// List the stored announcements a relay should hold (`announce::stored_announcements`).
    Announcements { reply: oneshot::Sender<Vec<Event>> },
    /// An operator's request (retry, re-route, write off, resolve a refund; add float),
    /// answered once it is on disk.
    Operator {
        request: OperatorRequest,
        reply: oneshot::Sender<OperatorReply>,
    },
    /// Stop taking work; close once the outbox has drained.
    Shutdown { done: oneshot::Sender<()> },
    /// The outbox finished everything it was given (only after `Shutdown`).
    OutboxDrained,
    /// The ledger file's WAL sync thread finished a sync: written batches may be released.
    Synced,
}

/// Everything the core owns.
pub struct CoreParts {
    pub store: LedgerHandle,
    pub policy: Policy,
    pub keys: nostr_sdk::prelude::Keys,
    pub offered: Vec<u16>,
    pub relays: Relays,
    pub executors: Arc<Executors>,
    /// Where the attempts of offers run by any node go (`execute_on = "any_node"`).
    pub shared: Option<SharedExecution>,
    pub commands: mpsc::Sender<Command>,
    pub outbox: Outbox,
    /// The Lightning rail, when a backend is configured.
    pub invoices: Option<InvoiceDesk>,
    /// Lightning refunds, when a backend is configured.
    pub refunds: Option<RefundDesk>,
    /// Ecash refunds, when the Cashu rail is on.
    pub ecash_refunds: Option<EcashRefundDesk>,
    /// How long an undelivered effect waits before the outbox is given it again.
    pub resend_after: std::time::Duration,
    /// Who bears Cashu mint input fees, told in each quote; `None` when the Cashu rail is off.
    pub cashu_fees: Option<InputFees>,
    /// Where what was written is told (metrics, the status page's totals).
    pub telemetry: Telemetry,
    /// The ledger file `store` opened, watched for deletion and lost writability (`None` for a
    /// database: its server keeps its files).
    pub watch: Option<LedgerWatch>,
    /// Run before each sync of the ledger file's WAL; `None` outside tests.
    pub before_sync: Option<BeforeSync>,
}

/// Commands handled before one ledger write (group commit).
const MAX_BATCH: usize = 256;

/// What the staged groups release once the batch is on disk.
#[derive(Default)]
struct Batch {
    publications: Vec<Publication>,
    /// Actions of staged groups: only after the write.
    actions: Vec<Action>,
    /// The inputs decided into this batch, kept to decide again if its write fails.
    inputs: Vec<Input>,
    /// The job lifecycle lines of staged groups: logged only after the write.
    story: Vec<story::Step>,
    /// Whether the write stored something (rails waiting for quotes look again then).
    wrote: bool,
}

pub struct Core {
    store: LedgerHandle,
    decider: Decider,
    adapter: Nip90Adapter,
    /// Our node's key (the author of our refunds' zap requests).
    us: nostr_sdk::prelude::PublicKey,
    /// Reply contexts of the requests the decider holds (and, for one command, of a request
    /// that did not parse).
    contexts: HashMap<JobId, Nip90Context>,
    rejected: HashMap<JobId, Event>,
    executors: Arc<Executors>,
    /// Where attempts of the kinds the rails name shared go (`Rails::shared`).
    shared_work: Option<WorkDesk>,
    commands: mpsc::Sender<Command>,
    outbox: Option<Outbox>,
    invoices: Option<InvoiceDesk>,
    refunds: Option<RefundDesk>,
    ecash_refunds: Option<EcashRefundDesk>,
    /// Attempts in flight, to abort at shutdown.
    running: HashMap<JobId, AbortHandle>,
    batch: Batch,
    /// Notes what each staged group did; tells telemetry once the batch is written.
    observer: observe::Observer,
    closing: Option<oneshot::Sender<()>>,
    /// Whether the ledger can be written; what waits while it cannot.
    guard: ledger_fault::FaultGuard,
    /// Rails waiting for jobs to be quoted.
    quote_waiters: quote_waiters::QuoteWaiters,
    /// Tells failures of the ledger file's checkpoint thread.
    checkpoints: checkpoints::CheckpointWatch,
    /// Written batches waiting for the WAL sync before they are released (`durable`).
    held: durable::Held,
    /// Run before each WAL sync (tests hold or fail syncs with it).
    before_sync: Option<BeforeSync>,
}

impl Core {
    pub fn new(parts: CoreParts) -> Core {
        let rails = Rails {
            offered: parts.offered.clone(),
            invoices: parts.invoices.is_some(),
            lightning_refunds: parts.refunds.as_ref().map(RefundDesk::max_fee),
            ecash_refunds: parts.ecash_refunds.is_some(),
            resend_after_ms: u64::try_from(parts.resend_after.as_millis()).unwrap_or(u64::MAX),
            shared: parts
                .shared
                .as_ref()
                .map(|s| s.kinds.clone())
                .unwrap_or_default(),
        };
        let cashu_fees = parts.cashu_fees.map(|who| who.as_str());
        let mut core = Core {
            store: parts.store,
            decider: Decider::new(parts.policy, rails),
            us: parts.keys.public_key(),
            adapter: Nip90Adapter::new(parts.keys, parts.offered, parts.relays, cashu_fees),
            contexts: HashMap::new(),
            rejected: HashMap::new(),
            executors: parts.executors,
            shared_work: parts.shared.map(|s| s.desk),
            commands: parts.commands,
            outbox: Some(parts.outbox),
            invoices: parts.invoices,
            refunds: parts.refunds,
            ecash_refunds: parts.ecash_refunds,
            running: HashMap::new(),
            batch: Batch::default(),
            observer: observe::Observer::new(parts.telemetry),
            closing: None,
            guard: ledger_fault::FaultGuard::new(parts.watch),
            quote_waiters: quote_waiters::QuoteWaiters::default(),
            checkpoints: checkpoints::CheckpointWatch::default(),
            held: durable::Held::default(),
            before_sync: parts.before_sync,
        };
        core.io_aside();
        core
    }

    /// Set when the node must stop at once (see [`StopOrder`]).
    pub fn stop_order(&self) -> StopOrder {
        self.guard.stop_order()
    }

    /// What is wrong with the ledger right now (`None` while it can be written), kept up to
    /// date by the core (readiness checks, status).
    pub fn fault_report(&self) -> FaultReport {
        self.guard.report()
    }

    /// Runs the core on its own thread, so that deciding and the ledger's fsync never hold up
    /// the async tasks (intake, outbox, rails). The thread enters the runtime it was started
    /// from: the actions it performs start tasks there. It ends after `Shutdown` (or once every
    /// sender is gone) with the ledger closed.
    pub fn spawn(
        self,
        rx: mpsc::Receiver<Command>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("paydvm-core".into())
            .spawn(move || {
                let _entered = runtime.enter();
                self.run(rx);
            })
    }

    /// Takes commands until shutdown. Commands that are already waiting are handled as one batch:
    /// each becomes its own staged groups (decided on the state the previous ones left), the
    /// batch is written in one transaction, and only then are its events published and its
    /// actions performed. One fsync per batch instead of one per command; no side effect before
    /// its record is on disk. Blocks: run it on its own thread ([`Core::spawn`]).
    pub fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        'commands: while let Some(first) = rx.blocking_recv() {
            self.release_synced();
            // Before anything of the batch touches SQLite: is the ledger still fit to use?
            if !self.guard.faulted() {
                self.ledger_ok();
            }
            let mut next = Some(first);
            let mut handled = 0;
            while let Some(command) = next.take() {
                if !self.handle(command) {
                    break 'commands;
                }
                handled += 1;
                if handled < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            self.flush();
            self.release_synced();
            self.bound_held();
        }
        self.flush_durable();
        let closing = self.closing.take();
        if self.guard.faulted() {
            self.rescue_at_close();
        }
        if self.guard.unsafe_to_close() {
            // Closing writes (a snapshot, a checkpoint) to a file that cannot take it; what is
            // committed is in the WAL and is recovered at the next open.
            std::mem::forget(self.store);
        } else if let Err(e) = self.store.close() {
            // A snapshot at close: the next start replays nothing.
            warn!("closing the ledger: {e}");
        }
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    fn now(&self) -> UnixMs {
        UnixMs(now_ms())
    }

    /// Decides `input` and stages what was decided; false when nothing new was staged.
    fn input(&mut self, input: Input) -> bool {
        match self.decide(input) {
            Ok(decision) => self.apply(decision),
            Err(e) => {
                // The input comes again (catch-up, retry, restart).
                warn!("cannot read the records this input names; not decided now: {e}");
                false
            }
        }
    }

    /// The one way the shell decides: the records deciding `input` may read are brought back
    /// into memory first (see `decide::recall`), then the decider reads the state. Refused when
    /// they cannot be read: deciding without them could take an ended job for an unknown one
    /// (and the store could not write either).
    fn decide(&mut self, input: Input) -> Result<Decision, paydvm_ledger::LedgerError> {
        let now = self.now();
        let names = self.decider.recall(self.store.state(), now, &input);
        if !names.is_empty() {
            self.store.recall(&names)?;
        }
        Ok(self.decider.decide(self.store.state(), now, input))
    }

    /// Stages each group of `decision` (with its rendered replies); its actions wait for the
    /// write, loose actions too. True when some group was new.
    fn apply(&mut self, decision: Decision) -> bool {
        if let Some(e) = &decision.error {
            warn!("cannot decide: {e}");
        }
        let mut fresh = false;
        for group in decision.groups {
            fresh |= self.stage(group);
        }
        self.batch.actions.extend(decision.actions);
        fresh
    }

    /// One group: replies rendered and recorded with it, all or nothing.
    fn stage(&mut self, mut group: Group) -> bool {
        let rendered = match self.render(&mut group) {
            Ok(r) => r,
            Err(e) => {
                warn!("a reply cannot be built; the group is dropped: {e}");
                self.decider.forget(&group.actions);
                return false;
            }
        };
        let mut events = group.events;
        let mut publications = Vec::with_capacity(rendered.len());
        for (event, publication) in rendered {
            events.push(event);
            publications.extend(publication);
        }
        let before = observe::Observer::before(self.store.state(), &events);
        match self.store.stage(&events) {
            Ok(outcomes) if outcomes.iter().any(is_appended) => {
                // Only what was new: an event seen before was told when it was written.
                let fresh: Vec<&LedgerEvent> = events
                    .iter()
                    .zip(&outcomes)
                    .filter(|(_, outcome)| is_appended(outcome))
                    .map(|(event, _)| event)
                    .collect();
                self.observer.staged(self.store.state(), &fresh, before);
                self.batch.story.extend(story::steps(&events));
                self.batch.publications.extend(publications);
                self.batch.actions.extend(group.actions);
                true
            }
            Ok(_) => {
                debug!("seen before; nothing changed");
                self.decider.forget(&group.actions);
                false
            }
            Err(e) => {
                warn!("the ledger refused a group: {e}");
                self.decider.forget(&group.actions);
                false
            }
        }
    }

    /// Writes the staged groups; their events are published and their actions performed once the
    /// write is synced (`durable`: at once for a database). If the write fails, the store has
    /// undone the whole batch in memory and its actions are taken back: the inputs come again
    /// (relay catch-up, executor retry after restart). True when written.
    fn flush(&mut self) -> bool {
        let batch = std::mem::take(&mut self.batch);
        let groups = self.store.staged_groups();
        // A file that cannot be written is not written to (see `ledger_fault`).
        if groups > 0 && !self.ledger_ok() {
            self.store.discard_staged();
            self.observer.write_failed(Duration::ZERO);
            self.decider.forget(&batch.actions);
            self.park_inputs(batch.inputs);
            return false;
        }
        let started = Instant::now();
        match self.store.flush() {
            Ok(_) => {
                self.guard.written();
                if groups > 0 {
                    self.observer.written(started.elapsed());
                }
                self.hold_until_synced(Batch {
                    wrote: groups > 0,
                    ..batch
                });
                true
            }
            Err(e) => {
                self.observer.write_failed(started.elapsed());
                error!("writing the ledger failed; this batch is undone and waits: {e}");
                self.decider.forget(&batch.actions);
                self.write_failed(&e, batch.inputs);
                false
            }
        }
    }

    /// A written batch is on disk: log its story, publish its events, perform its actions.
    fn release(&mut self, batch: Batch) {
        for step in &batch.story {
            step.log();
        }
        if batch.wrote {
            self.quote_waiters.written(self.store.state());
        }
        for p in batch.publications {
            self.publish(p);
        }
        for action in batch.actions {
            self.perform(action);
        }
        self.after_write();
    }

    /// A write landed: refunds it made due are routed now (their loose actions at once; groups,
    /// such as a reason a refund waits, go with the next write).
    fn after_write(&mut self) {
        let decision = match self.decide(Input::Written) {
            Ok(decision) => decision,
            Err(e) => return warn!("refunds: {e}"),
        };
        if let Some(e) = &decision.error {
            warn!("refunds: {e}");
        }
        for group in decision.groups {
            self.stage(group);
        }
        for action in decision.actions {
            self.perform(action);
        }
    }

    /// Hands a publication to the outbox without waiting. When its queue is full the effect
    /// stays pending in the ledger and goes again after `resend_after`, as if the outbox had
    /// given up on it (see `queues`).
    fn publish(&mut self, p: Publication) {
        let Some(outbox) = &self.outbox else {
            return debug!(effect = %p.effect, "outbox closed; effect stays pending");
        };
        if let Err(effect) = outbox.publish(p) {
            warn!(%effect, "outbox queue full; the effect stays pending and goes again later");
            self.input(Input::EffectGaveUp { effect });
        }
    }

    /// Handles one command; false when the core must stop. While the ledger is faulted the
    /// command waits or is answered from memory (`ledger_fault`).
    fn handle(&mut self, command: Command) -> bool {
        if let Command::Synced = command {
            // Only a wake-up: each batch starts by releasing what is synced.
            return true;
        }
        if self.guard.faulted() {
            return self.handle_faulted(command);
        }
        self.handle_now(command)
    }

    fn handle_now(&mut self, command: Command) -> bool {
        let closing = self.closing.is_some();
        match command {
            Command::Shutdown { done } => self.shutdown(done),
            Command::OutboxDrained => return !closing,
            Command::CreditedRefs { refs, reply } => {
                let _ = reply.send(self.credited(refs));
            }
            Command::Job { job, reply } => {
                // What the core answers is on disk: a caller may read the file next.
                self.flush_durable();
                let record = self
                    .store
                    .job(&job)
                    .inspect_err(|e| warn!(%job, "reading a job: {e}"))
                    .ok()
                    .flatten();
                let _ = reply.send(record);
            }
            Command::WhenQuoted { job, tell } => {
                self.quote_waiters.add(job, tell, self.store.state());
            }
            Command::Operator { request, reply } => {
                let _ = reply.send(self.operator(request));
            }
            Command::Announcements { reply } => {
                let author = self.adapter.keys().public_key();
                let stored =
                    super::announce::stored_announcements(self.store.state().effects(), &author);
                let _ = reply.send(stored);
            }
            Command::Announce(builders) if !closing => {
                if let Err(e) = self.announce(builders) {
                    warn!("announcing: {e:#}");
                }
            }
            Command::AnnounceAll(builders) if !closing => {
                if let Err(e) = self.announce_all(builders) {
                    warn!("announcing: {e:#}");
                }
            }
            // Money may have moved, or a delivery happened: recorded even while closing.
            command @ (Command::RefundOutcome { .. }
            | Command::Published { .. }
            | Command::PublishGaveUp { .. }) => self.handle_input(command),
            command if !closing => self.handle_input(command),
            other => debug!("shutting down; ignoring {other:?}"),
        }
        true
    }

    /// Tells what the ledger file's checkpoint thread failed since the last look.
    fn look_at_checkpoints(&mut self) {
        if let LedgerHandle::Sqlite(store) = &self.store {
            if let Some(stats) = store.checkpoint_stats() {
                let telemetry = self.observer.telemetry();
                self.checkpoints.look(&stats, telemetry, Instant::now());
            }
        }
    }

    /// Commands that are inputs of the decision core.
    fn handle_input(&mut self, command: Command) {
        let input = match self.input_of(command) {
            Ok(Some(input)) => input,
            Ok(None) => return,
            Err(e) => return warn!("command failed: {e:#}"),
        };
        if matches!(input, Input::ClockTicked) {
            self.look_at_checkpoints();
        } else {
            self.batch.inputs.push(input.clone());
        }
        let request_job = match &input {
            Input::RequestArrived(r) => Some(r.job.clone()),
            Input::PaymentRefused { job, .. } | Input::RequestUnparsable { job, .. } => {
                Some(job.clone())
            }
            _ => None,
        };
        self.input(input);
        // A reply context outlives its request only while the decider keeps the request.
        if let Some(job) = request_job {
            if !self.decider.memory().holds(&job) {
                self.contexts.remove(&job);
            }
        }
        self.rejected.clear();
    }

    fn shutdown(&mut self, done: oneshot::Sender<()>) {
        self.flush_durable();
        for (_, handle) in self.running.drain() {
            handle.abort();
        }
        self.closing = Some(done);
        // Dropping the sender lets the outbox finish what it has, then report.
        self.outbox = None;
    }

    /// Only what is on disk counts as credited.
    fn credited(&mut self, refs: Vec<String>) -> Vec<String> {
        self.flush_durable();
        let store = &self.store;
        // A reference the store cannot answer for counts as credited: the rail holds back.
        refs.into_iter()
            .filter(|r| {
                paydvm_ledger::PaymentRef::new(r.as_str()).is_ok_and(|r| {
                    store
                        .payment_ref_seq(&r)
                        .inspect_err(|e| warn!(reference = %r, "reading the ledger: {e}"))
                        .map_or(true, |seq| seq.is_some())
                })
            })
            .collect()
    }

    /// Decided, written and answered once on disk.
    fn operator(&mut self, request: OperatorRequest) -> OperatorReply {
        let id = request.id.clone();
        let decision = match self.decide(Input::OperatorAsked(request)) {
            Ok(decision) => decision,
            Err(e) => return OperatorReply::refused(format!("cannot read the ledger: {e}")),
        };
        if let Some(why) = decision.refused.clone() {
            return OperatorReply::refused(why);
        }
        let what: Vec<&'static str> = decision
            .groups
            .iter()
            .flat_map(|g| g.events.iter().map(|e| e.body.type_name()))
            .collect();
        if !self.apply(decision) {
            return OperatorReply::ok(format!(
                "already done, or refused by the ledger (request {id})"
            ));
        }
        if !self.flush_durable() {
            return OperatorReply::refused("writing the ledger failed; nothing changed");
        }
        info!(%id, ?what, "operator request recorded");
        OperatorReply::ok(format!("recorded {} (request {id})", what.join(", ")))
    }

    /// Performs one action of a group that is on disk.
    fn perform(&mut self, action: Action) {
        match action {
            Action::RunExecutor { work, attempt } => {
                let Ok(job) = JobId::new(work.id.clone()) else {
                    return;
                };
                let commands = self.commands.clone();
                let shared = self.decider.rails().shared.contains(&work.kind);
                let handle = match &self.shared_work {
                    Some(desk) if shared => desk.spawn(job.clone(), work, attempt, commands),
                    _ => worker::spawn(
                        Arc::clone(&self.executors),
                        job.clone(),
                        work,
                        attempt,
                        commands,
                    ),
                };
                self.running.insert(job, handle);
            }
            Action::RequestInvoice {
                job,
                amount,
                expires_at,
            } => self.request_invoice(job.to_string(), false, amount, expires_at),
            Action::WatchInvoice {
                job,
                invoice,
                expires_at,
            } => self.watch_invoice(&invoice, job.as_str(), expires_at),
            Action::RouteRefund(order) => self.route_refund(order),
            Action::PayRefund {
                refund,
                attempt,
                route,
            } => self.pay_refund(refund, attempt, route, false),
            Action::LookUpRefund {
                refund,
                attempt,
                route,
            } => self.pay_refund(refund, attempt, route, true),
            Action::AbandonRoute { route, reason } => {
                if let (paydvm_ledger::Asset::Mint { .. }, Some(desk)) =
                    (&route.asset, &self.ecash_refunds)
                {
                    desk.abandon(route.lookup.clone(), reason);
                }
            }
            Action::RequestSubscriptionInvoice {
                subscription,
                amount,
                expires_at,
            } => self.request_invoice(subscription.to_string(), true, amount, expires_at),
            Action::WatchSubscriptionInvoice {
                subscription,
                invoice,
                expires_at,
            } => self.watch_invoice(&invoice, subscription.as_str(), expires_at),
            Action::Resend(effect) => self.resend(&effect),
            Action::Forget(job) => {
                self.contexts.remove(&job);
                self.running.remove(&job);
            }
        }
    }

    /// Asks the Lightning backend (if any) for the invoice of a quote; the answer comes back as
    /// a command naming `tag` (a job, or a subscription when `subscription`).
    fn request_invoice(
        &self,
        tag: String,
        subscription: bool,
        amount: paydvm_ledger::Msat,
        expires_at: UnixMs,
    ) {
        if let Some(desk) = &self.invoices {
            let request = InvoiceRequest {
                job: tag,
                subscription,
                amount,
                expires_at_ms: expires_at.0,
            };
            desk.request(request, now_ms());
        }
    }

    /// Watches a quote's invoice until it settles (the settlement names `tag`) or expires.
    fn watch_invoice(&self, invoice: &IssuedInvoice, tag: &str, expires_at: UnixMs) {
        if let Some(desk) = &self.invoices {
            desk.watch(invoice, tag, expires_at.0);
        }
    }

    fn route_refund(&self, order: RefundRouteOrder) {
        match (order, &self.refunds, &self.ecash_refunds) {
            (
                RefundRouteOrder::Lightning {
                    refund,
                    attempt,
                    amount,
                    customer,
                    refund_to,
                },
                Some(desk),
                _,
            ) => desk.route(RefundOrder {
                zap: self.zap_target(&refund),
                refund,
                attempt,
                amount,
                customer: customer.to_string(),
                refund_to,
            }),
            (
                RefundRouteOrder::Ecash {
                    refund,
                    attempt,
                    amount,
                    customer,
                    mint,
                },
                _,
                Some(desk),
            ) => desk.route(EcashOrder {
                refund,
                attempt,
                amount,
                customer: customer.to_string(),
                mint,
            }),
            (order, ..) => warn!(?order, "no desk for this refund"),
        }
    }

    /// Pays a recorded refund, or (with `look_up`) asks its rail what became of it: a Lightning
    /// look-up by payment hash; for ecash, running the attempt again (its token is made once).
    fn pay_refund(
        &self,
        refund: RefundId,
        attempt: u32,
        route: paydvm_ledger::RefundRoute,
        look_up: bool,
    ) {
        match (&route.asset, &self.refunds, &self.ecash_refunds) {
            (paydvm_ledger::Asset::Lightning, Some(desk), _) if look_up => {
                info!(%refund, "looking up a refund payment before anything else");
                desk.look_up(refund, attempt, route);
            }
            (paydvm_ledger::Asset::Lightning, Some(desk), _) => desk.pay(refund, attempt, route),
            (paydvm_ledger::Asset::Mint { .. }, _, Some(desk)) => {
                // An open refund is in memory; its job is named in the hand-over.
                let job = self
                    .store
                    .state()
                    .refund(&refund)
                    .and_then(|r| r.job.clone());
                desk.pay(refund, job, attempt, route)
            }
            _ => warn!(%refund, "no rail to pay a recorded refund over"),
        }
    }

    /// Hands the outbox an effect again: the stored signed event, never re-signed.
    fn resend(&mut self, effect: &EffectId) {
        let record = match self.store.effect(effect) {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(e) => return warn!(%effect, "cannot read effect to re-send: {e}"),
        };
        match publication_from_payload(effect.as_str(), &record.payload) {
            Ok(p) => {
                debug!(%effect, "re-sending an undelivered effect");
                self.publish(p);
            }
            Err(e) => warn!(%effect, "cannot re-send effect: {e:#}"),
        }
    }

    /// Signs and stores (as outbox effects, `job = None`, key `announce:<event id>`) the
    /// announcements that differ from the last stored ones for their address; see
    /// [`announce`](super::announce). Returns how many were new.
    pub fn announce(&mut self, builders: Vec<EventBuilder>) -> anyhow::Result<usize> {
        let us = self.adapter.keys().public_key();
        self.announce_unsigned(builders.into_iter().map(|b| b.build(us)).collect())
    }

    /// [`Core::announce`] for the node's whole set, then the NIP-09 deletions withdrawing the
    /// stored handler informations and tiers the set no longer has (each once: a withdrawn
    /// address is not withdrawn again). Returns how many events were staged.
    pub fn announce_all(&mut self, builders: Vec<EventBuilder>) -> anyhow::Result<usize> {
        let us = self.adapter.keys().public_key();
        let current: Vec<UnsignedEvent> = builders.into_iter().map(|b| b.build(us)).collect();
        let withdrawals: Vec<UnsignedEvent> =
            super::announce::withdrawals(self.store.state().effects(), &us, &current)
                .into_iter()
                .map(|b| b.build(us))
                .collect();
        for deletion in &withdrawals {
            info!(tags = ?deletion.tags, "withdrawing an announcement no longer offered");
        }
        self.announce_unsigned(current.into_iter().chain(withdrawals).collect())
    }

    fn announce_unsigned(&mut self, events: Vec<UnsignedEvent>) -> anyhow::Result<usize> {
        let mut fresh = 0;
        for unsigned in events {
            if super::announce::same_as_last(self.store.state().effects(), &unsigned) {
                debug!(
                    kind = unsigned.kind.as_u16(),
                    "announcement unchanged; not re-sent"
                );
                continue;
            }
            let event = unsigned.sign_with_keys(self.adapter.keys())?;
            let relays = self.adapter.reply_relays(None);
            let outbound = Nip90Adapter::publishable(&event, &relays)?;
            let record = LedgerEvent::new(
                keys::announcement(&outbound.id)?,
                self.now(),
                EventBody::EffectRequested {
                    effect: EffectId::new(outbound.id.clone())?,
                    job: None,
                    subscription: None,
                    action: paydvm_ledger::EffectAction::Publish,
                    payload: outbound.payload.clone(),
                },
            );
            let publication = publication_from_payload(&outbound.id, &outbound.payload)?;
            if self.store.stage(&[record])?.iter().any(is_appended) {
                self.batch.publications.push(publication);
                fresh += 1;
            }
        }
        Ok(fresh)
    }
}

fn is_appended(outcome: &paydvm_ledger::AppendOutcome) -> bool {
    matches!(outcome, paydvm_ledger::AppendOutcome::Appended { .. })
}

/// The publication stored in an `effect_requested` payload: `{"event": …, "relays": […]}`.
pub fn publication_from_payload(effect: &str, payload: &str) -> anyhow::Result<Publication> {
    let effect = EffectId::new(effect).map_err(|e| anyhow!("{e}"))?;
    let value: serde_json::Value = serde_json::from_str(payload)?;
    let event = Event::from_json(value["event"].to_string())?;
    let relays = value["relays"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().and_then(|r| RelayUrl::parse(r).ok()))
                .collect()
        })
        .unwrap_or_default();
    Ok(Publication {
        effect,
        event,
        relays,
    })
}

/// A job id from a rail or desk (outside text): checked.
fn job_id(id: &str) -> anyhow::Result<JobId> {
    JobId::new(id).map_err(|e| anyhow!("{e}"))
}

/// A pubkey from an event (outside text): checked.
fn pubkey(hex: String) -> anyhow::Result<Pubkey> {
    Pubkey::new(hex).map_err(|e| anyhow!("{e}"))
}
