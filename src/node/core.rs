//! The core actor: the only owner of the ledger [`Store`]. It takes one [`Command`] at a time,
//! decides with the [`Policy`], and stages each decision as ONE all-or-nothing group together with
//! the signed events it must publish (outbox effects). The commands waiting at one moment are
//! written as one transaction (group commit); side effects start only after that write.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use nostr_sdk::prelude::{
    Event, EventBuilder, JsonUtil, Keys, Kind, RelayUrl, Tag, TagKind, Timestamp,
};
use paydvm_ledger::store::Store;
use paydvm_ledger::{
    Account, AppendOutcome, Disposition, EffectId, EffectOutcome, EventBody, IdemKey, JobId,
    JobRecord, JobState, LedgerEvent, Msat, PaymentOption, PaymentRef, Pubkey, QueueReason,
    RefundId, UnixMs,
};
use paydvm_policies::{
    Admission, AdmissionFacts, FailureDecision, InputMeasure, Policy, PriceDecision,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::{debug, error, info, warn};

mod operator;
mod payment;
mod refunds;

pub use self::payment::VerifiedPayment;
pub use self::refunds::RefundStatus;

use super::ecash_refunds::EcashRefundDesk;
use super::invoicing::{InvoiceDesk, InvoiceRequest};
use super::outbox::{Outbox, Publication};
use super::refunds::RefundDesk;
use super::{now_ms, worker};
use crate::config::{InputFees, Relays};
use crate::executor::Executors;
use crate::lightning::{Invoice, IssuedInvoice};
use crate::protocol::nip90::{
    feedback_event, parse_request, result_event, Amount, Feedback, JobResult, ParsedRequest,
    RequestError, Status, FEEDBACK_KIND,
};

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
    /// A payment whose evidence a rail verified end to end.
    Payment(Box<VerifiedPayment>),
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
    /// The refund desk found an invoice for exactly what a refund owes.
    RefundRouted {
        refund: String,
        attempt: u32,
        route: paydvm_ledger::RefundRoute,
    },
    /// The refund desk could not route a refund now.
    RefundDeferred { refund: String, reason: String },
    /// What a refund desk learnt about a refund payment.
    RefundOutcome {
        refund: String,
        attempt: u32,
        status: RefundStatus,
    },
    /// An executor attempt ended.
    ExecFinished {
        job: String,
        attempt: u32,
        outcome: Result<String, ExecFailure>,
    },
    /// The outbox delivered an effect.
    Published { effect: String, detail: String },
    /// The outbox could not deliver an effect after its attempts; it stays pending.
    PublishGaveUp { effect: String },
    /// Which of `refs` the ledger has already credited (payment references and linked refs,
    /// e.g. proof Ys). Answered after every command sent before it.
    CreditedRefs {
        refs: Vec<String>,
        reply: oneshot::Sender<Vec<String>>,
    },
    /// Read one job's record.
    Job {
        job: String,
        reply: oneshot::Sender<Option<JobRecord>>,
    },
    /// Periodic: expire quotes whose time ran out.
    Tick,
    /// Publish the NIP-89 announcements and profile that changed (see [`Core::announce`]).
    Announce(Vec<EventBuilder>),
    /// An operator's request (retry, re-route, write off, resolve a refund; add float),
    /// answered once it is on disk.
    Operator {
        request: crate::operator::OperatorRequest,
        reply: oneshot::Sender<crate::operator::OperatorReply>,
    },
    /// Stop taking work; close once the outbox has drained.
    Shutdown { done: oneshot::Sender<()> },
    /// The outbox finished everything it was given (only after `Shutdown`).
    OutboxDrained,
}

/// A failed attempt, as the core needs it: the customer-safe reason and whether to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecFailure {
    pub reason: String,
    pub retryable: bool,
}

/// Everything the core owns.
pub struct CoreParts {
    pub store: Store,
    pub policy: Policy,
    pub keys: Keys,
    pub offered: Vec<u16>,
    pub relays: Relays,
    pub executors: Arc<Executors>,
    pub commands: mpsc::UnboundedSender<Command>,
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
}

/// What start-up found: where intake catches up from and which requests it must fetch again.
#[derive(Debug, Default)]
pub struct Startup {
    /// The newest `at` in the ledger, if any event exists.
    pub newest_at: Option<u64>,
    /// Request event ids (hex) of jobs that may still run: see [`needs_request_after_restart`].
    pub pending_requests: Vec<String>,
}

/// A request the core keeps in memory while its job may still need it (to run, to reply).
struct Pending {
    request: ParsedRequest,
    relay: Option<RelayUrl>,
}

/// Largest result event we publish: relays commonly refuse events over 64 KiB (LocalRelay does),
/// and a result embeds the request.
const MAX_RESULT_EVENT_BYTES: usize = 60 * 1024;

/// Commands handled before one ledger write (group commit).
const MAX_BATCH: usize = 256;

/// Side effects of staged groups, released once the batch is on disk.
#[derive(Default)]
struct Deferred {
    publications: Vec<Publication>,
    attempts: Vec<(JobId, crate::job::Job, u32)>,
    /// Invoices to ask the backend for (the job's `job_received` is in the batch).
    invoice_requests: Vec<InvoiceRequest>,
    /// Invoices to watch (their `quote_issued` is in the batch), with the quote's expiry (ms).
    watches: Vec<(IssuedInvoice, JobId, u64)>,
    /// Refunds to pay (their `refund_started` is in the batch).
    refund_payments: Vec<refunds::RefundPayment>,
}

pub struct Core {
    store: Store,
    policy: Policy,
    keys: Keys,
    offered: Vec<u16>,
    relays: Relays,
    executors: Arc<Executors>,
    commands: mpsc::UnboundedSender<Command>,
    outbox: Option<Outbox>,
    invoices: Option<InvoiceDesk>,
    refunds: Option<RefundDesk>,
    ecash_refunds: Option<EcashRefundDesk>,
    refund_tasks: HashMap<String, refunds::RefundTask>,
    requests: HashMap<String, Pending>,
    /// Jobs whose invoice the backend is making (a second sighting must not ask again).
    awaiting_invoice: HashSet<String>,
    /// Attempts in flight; `None` until the batch that started it is on disk.
    running: HashMap<String, Option<AbortHandle>>,
    deferred: Deferred,
    /// Effects the outbox gave up on, and when: handed to it again after `resend_after`.
    gave_up: HashMap<String, UnixMs>,
    resend_after: std::time::Duration,
    closing: Option<oneshot::Sender<()>>,
    cashu_fees: Option<InputFees>,
}

fn key(k: String) -> anyhow::Result<IdemKey> {
    IdemKey::new(k).map_err(|e| anyhow!("{e}"))
}

fn job_id(id: &str) -> anyhow::Result<JobId> {
    JobId::new(id).map_err(|e| anyhow!("{e}"))
}

impl Core {
    pub fn new(parts: CoreParts) -> Core {
        Core {
            store: parts.store,
            policy: parts.policy,
            keys: parts.keys,
            offered: parts.offered,
            relays: parts.relays,
            executors: parts.executors,
            commands: parts.commands,
            outbox: Some(parts.outbox),
            invoices: parts.invoices,
            refunds: parts.refunds,
            ecash_refunds: parts.ecash_refunds,
            refund_tasks: HashMap::new(),
            requests: HashMap::new(),
            awaiting_invoice: HashSet::new(),
            running: HashMap::new(),
            deferred: Deferred::default(),
            gave_up: HashMap::new(),
            resend_after: parts.resend_after,
            closing: None,
            cashu_fees: parts.cashu_fees,
        }
    }

    /// Re-sends every undelivered effect (the stored signed event, never re-signed), resumes the
    /// jobs whose request the ledger stored, and lists those whose request must come from a relay
    /// again (ledgers written before requests were stored).
    pub fn startup(&mut self) -> anyhow::Result<Startup> {
        let mut resend = Vec::new();
        for effect in self.store.state().effects() {
            if effect.outcome.is_some() || effect.action != "publish" {
                continue;
            }
            match publication_from_payload(effect.effect.as_str(), &effect.payload) {
                Ok(p) => resend.push(p),
                Err(e) => warn!(effect = %effect.effect, "cannot re-send effect: {e:#}"),
            }
        }
        if !resend.is_empty() {
            info!(count = resend.len(), "re-sending undelivered effects");
        }
        for p in resend {
            self.publish(p);
        }
        self.watch_open_invoices()?;
        self.abandon_unstarted_ecash_refunds();
        let resumable: Vec<JobRecord> = self
            .store
            .state()
            .jobs()
            .filter(|j| needs_request_after_restart(j.state))
            .cloned()
            .collect();
        let mut pending_requests = Vec::new();
        for record in resumable {
            match self.stored_pending(&record.job) {
                Ok(Some(pending)) => {
                    let job = record.job.clone();
                    if let Err(e) = self.seen_again(record, pending) {
                        warn!(%job, "cannot resume: {e:#}");
                    }
                }
                Ok(None) => pending_requests.push(record.request_event.to_string()),
                Err(e) => {
                    warn!(job = %record.job, "stored request unusable, fetching it again: {e:#}");
                    pending_requests.push(record.request_event.to_string());
                }
            }
        }
        self.flush();
        // The first flush drives the open refunds, which may stage `refund_deferred`: write it.
        self.flush();
        let (seq, _) = self.store.head();
        let newest_at = if seq == 0 {
            None
        } else {
            self.store.event(seq)?.map(|e| e.event.at.0)
        };
        Ok(Startup {
            newest_at,
            pending_requests,
        })
    }

    /// Takes commands until shutdown. Commands that are already waiting are handled as one batch:
    /// each becomes its own staged group (decided on the state the previous ones left), the batch
    /// is written in one transaction, and only then are its events published and its attempts
    /// started. One fsync per batch instead of one per command; no side effect before its record
    /// is on disk.
    /// The request stored with `job`, checked again as if it had just arrived.
    fn stored_pending(&self, job: &JobId) -> anyhow::Result<Option<Pending>> {
        let Some(json) = self.store.stored_request(job)? else {
            return Ok(None);
        };
        let event = Event::from_json(json)?;
        event.verify()?;
        if event.id.to_hex() != job.as_str() {
            return Err(anyhow!("the stored request is another event"));
        }
        let request = parse_request(&event, &self.keys.public_key(), &self.keys)
            .map_err(|e| anyhow!("{}", e.customer_message()))?;
        Ok(Some(Pending {
            request,
            relay: None,
        }))
    }

    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        'commands: while let Some(first) = rx.recv().await {
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
        }
        self.flush();
        if let Some(done) = self.closing.take() {
            let _ = done.send(());
        }
    }

    /// Handles one command; false when the core must stop.
    fn handle(&mut self, command: Command) -> bool {
        let closing = self.closing.is_some();
        let result = match command {
            Command::Request { event, relay } if !closing => self.on_request(*event, relay),
            Command::Deletion(event) if !closing => self.on_deletion(&event),
            Command::Payment(payment) if !closing => self.on_payment(*payment),
            Command::InvoiceIssued { request, invoice } if !closing => {
                self.on_invoice_issued(request, invoice)
            }
            Command::InvoiceFailed { request, reason } if !closing => {
                warn!(job = %request.job, %reason, "no invoice; quoting without one");
                self.quote_received(request, None)
            }
            Command::ExecFinished {
                job,
                attempt,
                outcome,
            } if !closing => self.on_exec_finished(&job, attempt, outcome),
            Command::RefundRouted {
                refund,
                attempt,
                route,
            } if !closing => self.on_refund_routed(&refund, attempt, route),
            Command::RefundDeferred { refund, reason } if !closing => {
                self.on_refund_deferred(&refund, &reason)
            }
            // Money may have moved: recorded even while closing.
            Command::RefundOutcome {
                refund,
                attempt,
                status,
            } => self.on_refund_outcome(&refund, attempt, status),
            Command::Published { effect, detail } => self.on_published(&effect, detail),
            Command::PublishGaveUp { effect } => {
                let now = self.now();
                self.gave_up.insert(effect, now);
                Ok(())
            }
            Command::Tick if !closing => {
                let now = self.now();
                self.resend_stale(now);
                // Flushing drives the refunds (retries that came due) from what is on disk.
                self.expire_quotes().map(|()| {
                    self.flush();
                })
            }
            Command::Announce(builders) if !closing => self.announce(builders).map(|_| ()),
            Command::CreditedRefs { refs, reply } => {
                // Only what is on disk counts as credited.
                self.flush();
                let state = self.store.state();
                let known = refs
                    .into_iter()
                    .filter(|r| {
                        PaymentRef::new(r.as_str())
                            .is_ok_and(|r| state.payment_ref_seq(&r).is_some())
                    })
                    .collect();
                let _ = reply.send(known);
                Ok(())
            }
            Command::Job { job, reply } => {
                // What the core answers is on disk: a caller may read the file next.
                self.flush();
                let record = JobId::new(job)
                    .ok()
                    .and_then(|j| self.store.state().job(&j).cloned());
                let _ = reply.send(record);
                Ok(())
            }
            Command::Operator { request, reply } => {
                let _ = reply.send(self.on_operator(request));
                Ok(())
            }
            Command::Shutdown { done } => {
                self.flush();
                for handle in self.running.drain().filter_map(|(_, h)| h) {
                    handle.abort();
                }
                self.closing = Some(done);
                // Dropping the sender lets the outbox finish what it has, then report.
                self.outbox = None;
                Ok(())
            }
            Command::OutboxDrained => {
                if closing {
                    return false;
                }
                Ok(())
            }
            other => {
                debug!("shutting down; ignoring {other:?}");
                Ok(())
            }
        };
        if let Err(e) = result {
            warn!("command failed: {e:#}");
        }
        true
    }

    /// Writes the staged groups; then publishes their events and starts their attempts. If the
    /// write fails, the store has undone the whole batch in memory and its effects are dropped:
    /// the inputs come again (relay catch-up, executor retry after restart). True when written.
    fn flush(&mut self) -> bool {
        let deferred = std::mem::take(&mut self.deferred);
        match self.store.flush() {
            Ok(_) => {
                for p in deferred.publications {
                    self.publish(p);
                }
                if let Some(desk) = &self.invoices {
                    let now = now_ms();
                    for request in deferred.invoice_requests {
                        desk.request(request, now);
                    }
                    for (invoice, job, expires_at) in deferred.watches {
                        desk.watch(&invoice, job.as_str(), expires_at);
                    }
                }
                for (job, work, attempt) in deferred.attempts {
                    let handle = worker::spawn(
                        Arc::clone(&self.executors),
                        work,
                        attempt,
                        self.commands.clone(),
                    );
                    self.running.insert(job.to_string(), Some(handle));
                }
                self.pay_recorded_refunds(deferred.refund_payments);
                // A refund the batch made due is routed at once, not at the next tick.
                let now = self.now();
                if let Err(e) = self.drive_refunds(now) {
                    warn!("refunds: {e:#}");
                }
                true
            }
            Err(e) => {
                error!("writing the ledger failed; this batch is undone: {e}");
                for (job, _, _) in deferred.attempts {
                    self.running.remove(job.as_str());
                }
                for request in deferred.invoice_requests {
                    self.awaiting_invoice.remove(&request.job);
                }
                self.forget_refund_payments(deferred.refund_payments);
                false
            }
        }
    }

    fn now(&self) -> UnixMs {
        UnixMs(now_ms())
    }

    fn publish(&self, p: Publication) {
        match &self.outbox {
            Some(outbox) => outbox.publish(p),
            None => debug!(effect = %p.effect, "outbox closed; effect stays pending"),
        }
    }

    /// Hands the outbox again every effect it gave up on `resend_after` ago or earlier (a relay
    /// that was down, say): the same stored event, never re-signed.
    fn resend_stale(&mut self, now: UnixMs) {
        let after = self.resend_after.as_millis() as u64;
        let stale: Vec<String> = self
            .gave_up
            .iter()
            .filter(|(_, at)| now.0.saturating_sub(at.0) >= after)
            .map(|(effect, _)| effect.clone())
            .collect();
        for effect in stale {
            let record = EffectId::new(effect.as_str())
                .ok()
                .and_then(|id| self.store.state().effect(&id).cloned());
            match record {
                Some(record) if record.outcome.is_none() => {
                    match publication_from_payload(&effect, &record.payload) {
                        Ok(p) => {
                            debug!(%effect, "re-sending an undelivered effect");
                            self.publish(p);
                        }
                        Err(e) => warn!(%effect, "cannot re-send effect: {e:#}"),
                    }
                }
                _ => {}
            }
            self.gave_up.remove(&effect);
        }
    }

    /// Stages `events` as one group; `pubs` are published after the batch is written, and only
    /// if the group was new.
    fn commit(&mut self, events: Vec<LedgerEvent>, pubs: Vec<Publication>) -> anyhow::Result<bool> {
        let outcomes = self.store.stage(&events)?;
        let fresh = outcomes
            .iter()
            .any(|o| matches!(o, AppendOutcome::Appended { .. }));
        if fresh {
            self.deferred.publications.extend(pubs);
        }
        Ok(fresh)
    }

    /// Our relays, then the customer's (if allowed), without duplicates, at most `publish_cap`.
    fn reply_relays(&self, request: Option<&ParsedRequest>) -> Vec<RelayUrl> {
        let mut out: Vec<RelayUrl> = self.relays.urls.clone();
        for url in request.map(|r| r.relays.as_slice()).unwrap_or_default() {
            if let Ok(url) = RelayUrl::parse(url) {
                if self.relays.customer.allows(&url) && !out.contains(&url) {
                    out.push(url);
                }
            }
        }
        out.truncate(self.relays.publish_cap);
        out
    }

    /// The `effect_requested` event and the publication for one signed event.
    fn effect(
        &self,
        job: &JobId,
        event: Event,
        relays: Vec<RelayUrl>,
        at: UnixMs,
    ) -> anyhow::Result<(LedgerEvent, Publication)> {
        let idem = format!("effect:{}", event.id.to_hex());
        effect_requested(Some(job), idem, event, relays, at)
    }

    /// Signs and stores (as outbox effects, `job = None`, key `announce:<event id>`) the
    /// announcements that differ from the last stored ones for their address; see
    /// [`announce`](super::announce). Returns how many were new.
    pub fn announce(&mut self, builders: Vec<EventBuilder>) -> anyhow::Result<usize> {
        let mut fresh = 0;
        for builder in builders {
            let unsigned = builder.build(self.keys.public_key());
            if super::announce::same_as_last(self.store.state().effects(), &unsigned) {
                debug!(
                    kind = unsigned.kind.as_u16(),
                    "announcement unchanged; not re-sent"
                );
                continue;
            }
            let event = unsigned.sign_with_keys(&self.keys)?;
            let idem = format!("announce:{}", event.id.to_hex());
            let (effect, p) =
                effect_requested(None, idem, event, self.reply_relays(None), self.now())?;
            if self.commit(vec![effect], vec![p])? {
                fresh += 1;
            }
        }
        Ok(fresh)
    }

    fn feedback(
        &self,
        job: &JobId,
        pending: &Pending,
        feedback: Feedback,
        at: UnixMs,
    ) -> anyhow::Result<(LedgerEvent, Publication)> {
        let hint = pending.relay.as_ref().map(|r| r.to_string());
        let event = feedback_event(&pending.request, &feedback, hint.as_deref(), &self.keys)?
            .sign_with_keys(&self.keys)?;
        let relays = self.reply_relays(Some(&pending.request));
        self.effect(job, event, relays, at)
    }

    fn on_request(&mut self, event: Event, relay: Option<RelayUrl>) -> anyhow::Result<()> {
        let kind = event.kind.as_u16();
        if !self.offered.contains(&kind) {
            return Ok(());
        }
        let request = match parse_request(&event, &self.keys.public_key(), &self.keys) {
            Ok(r) => r,
            Err(RequestError::NotForUs) => return Ok(()),
            Err(e) => return self.reject_unparsed(&event, &e.customer_message()),
        };
        if request.addressed_to_us() == Some(false) {
            return Ok(());
        }
        let job = job_id(&request.job.id)?;
        let pending = Pending { request, relay };
        if let Some(record) = self.store.state().job(&job).cloned() {
            return self.seen_again(record, pending);
        }
        self.admit(job, pending)
    }

    /// A request whose job exists (second relay, restart, catch-up): nothing is appended, but a
    /// job left queued or processing by a previous run is resumed.
    fn seen_again(&mut self, record: JobRecord, pending: Pending) -> anyhow::Result<()> {
        let job = record.job.clone();
        if self.running.contains_key(job.as_str()) {
            return Ok(());
        }
        match record.state {
            JobState::Queued => {
                self.requests.insert(job.to_string(), pending);
                self.dispatch(&job)
            }
            JobState::Processing => {
                info!(%job, "resuming a job interrupted by a restart");
                self.requests.insert(job.to_string(), pending);
                self.fail(
                    &job,
                    record.attempts,
                    ExecFailure {
                        reason: "interrupted by restart".into(),
                        retryable: true,
                    },
                )
            }
            JobState::Received => {
                self.requests.entry(job.to_string()).or_insert(pending);
                self.requote(&job)
            }
            JobState::Quoted | JobState::PartiallyPaid | JobState::Paid | JobState::Expired => {
                self.requests.entry(job.to_string()).or_insert(pending);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// `job_received`; `keep` stores the request with it, for a job that may still run.
    fn received(
        &self,
        event_id: &str,
        pending: &Pending,
        at: UnixMs,
        keep: bool,
    ) -> anyhow::Result<LedgerEvent> {
        let job = &pending.request.job;
        let json = &pending.request.request_json;
        let request = (keep && json.len() <= paydvm_ledger::MAX_PAYLOAD_LEN).then(|| json.clone());
        Ok(LedgerEvent::new(
            key(format!("recv:{event_id}"))?,
            at,
            EventBody::JobReceived {
                job: job_id(&job.id)?,
                request_event: paydvm_ledger::EventId::new(event_id).map_err(|e| anyhow!("{e}"))?,
                customer: Pubkey::new(job.customer.clone()).map_err(|e| anyhow!("{e}"))?,
                kind: job.kind,
                request,
            },
        ))
    }

    fn admit(&mut self, job: JobId, pending: Pending) -> anyhow::Result<()> {
        let at = self.now();
        let customer =
            Pubkey::new(pending.request.job.customer.clone()).map_err(|e| anyhow!("{e}"))?;
        let kind = pending.request.job.kind;
        let pending_quotes = self
            .store
            .state()
            .jobs()
            .filter(|j| {
                // A job waiting for its invoice is a quote in the making: it counts too, so a
                // burst of requests cannot have the wallet make invoices past the limit.
                j.customer == customer
                    && matches!(j.state, JobState::Quoted | JobState::Received)
                    && quote_open(j.expires_at, at)
            })
            .count() as u32;
        let admission = self.policy.admit(&AdmissionFacts {
            customer_pubkey: customer.as_str(),
            kind,
            input_bytes: pending.request.job.input_bytes(),
            pending_quotes,
        });
        let price = match admission {
            Admission::Reject(reason) => return self.reject(job, pending, reason.to_string()),
            Admission::FreeListed => PriceDecision::Free,
            Admission::Priced => match self.policy.price(kind, &measure(&pending.request)) {
                Ok(p) => p,
                Err(e) => return self.reject(job, pending, e.to_string()),
            },
        };
        let received = self.received(job.as_str(), &pending, at, true)?;
        match price {
            PriceDecision::NotOffered => self.reject(
                job,
                pending,
                format!("job kind {kind} is not offered by this service"),
            ),
            PriceDecision::Free => self.queue(job, pending, received, QueueReason::Free),
            PriceDecision::Charge(amount) => {
                if let Some(bid) = pending.request.bid {
                    if bid < amount {
                        let reason = format!("bid below price: {} msat", amount.as_msat());
                        return self.reject(job, pending, reason);
                    }
                }
                let credit = self.store.state().held(&Account::Credit(customer));
                if credit >= amount {
                    self.queue(job, pending, received, QueueReason::CreditDebit { amount })
                } else {
                    self.quote(job, pending, received, amount)
                }
            }
        }
    }

    fn reject(&mut self, job: JobId, pending: Pending, reason: String) -> anyhow::Result<()> {
        let at = self.now();
        info!(%job, %reason, "rejecting");
        let received = self.received(job.as_str(), &pending, at, false)?;
        let (effect, p) = self.feedback(
            &job,
            &pending,
            Feedback::new(Status::Error).with_info(reason.clone()),
            at,
        )?;
        let rejected = LedgerEvent::new(
            key(format!("reject:{job}"))?,
            at,
            EventBody::JobRejected {
                job: job.clone(),
                reason,
            },
        );
        self.commit(vec![received, rejected, effect], vec![p])?;
        Ok(())
    }

    /// A request kind we offer that does not parse: recorded as received and rejected, with an
    /// `error` feedback built here (there is no [`ParsedRequest`] to build it from).
    fn reject_unparsed(&mut self, event: &Event, message: &str) -> anyhow::Result<()> {
        let at = self.now();
        let id = event.id.to_hex();
        let job = job_id(&id)?;
        info!(%job, %message, "rejecting an unparsable request");
        let feedback = EventBuilder::new(Kind::Custom(FEEDBACK_KIND), "")
            .tags([
                Tag::custom(
                    TagKind::custom("status"),
                    ["error".to_string(), message.to_string()],
                ),
                Tag::event(event.id),
                Tag::public_key(event.pubkey),
            ])
            .allow_self_tagging()
            .sign_with_keys(&self.keys)?;
        let (effect, p) = self.effect(&job, feedback, self.reply_relays(None), at)?;
        let events = vec![
            LedgerEvent::new(
                key(format!("recv:{id}"))?,
                at,
                EventBody::JobReceived {
                    job: job.clone(),
                    request_event: paydvm_ledger::EventId::new(id.clone())
                        .map_err(|e| anyhow!("{e}"))?,
                    customer: Pubkey::new(event.pubkey.to_hex()).map_err(|e| anyhow!("{e}"))?,
                    kind: event.kind.as_u16(),
                    request: None,
                },
            ),
            LedgerEvent::new(
                key(format!("reject:{job}"))?,
                at,
                EventBody::JobRejected {
                    job: job.clone(),
                    reason: message.to_string(),
                },
            ),
            effect,
        ];
        self.commit(events, vec![p])?;
        Ok(())
    }

    fn queue(
        &mut self,
        job: JobId,
        pending: Pending,
        received: LedgerEvent,
        reason: QueueReason,
    ) -> anyhow::Result<()> {
        let at = self.now();
        let (effect, p) = self.feedback(&job, &pending, Feedback::new(Status::Processing), at)?;
        let queued = LedgerEvent::new(
            key(format!("queue:{job}:0"))?,
            at,
            EventBody::JobQueued {
                job: job.clone(),
                reason,
            },
        );
        self.requests.insert(job.to_string(), pending);
        if self.commit(vec![received, queued, effect], vec![p])? {
            self.dispatch(&job)?;
        }
        Ok(())
    }

    fn quote(
        &mut self,
        job: JobId,
        pending: Pending,
        received: LedgerEvent,
        amount: Msat,
    ) -> anyhow::Result<()> {
        let at = self.now();
        let expires_at = UnixMs(self.policy.quote_expires_at(at.0)?);
        self.requests.insert(job.to_string(), pending);
        if self.invoices.is_some() {
            // The job waits in `received` while the backend makes its invoice (never on the
            // core's thread); the quote follows in its own group.
            if self.commit(vec![received], Vec::new())? {
                self.request_invoice(&job, amount, expires_at);
            }
            return Ok(());
        }
        self.issue_quote(&job, amount, expires_at, None, Some(received))
    }

    /// Asks for the job's invoice once the batch is on disk (never twice at a time).
    fn request_invoice(&mut self, job: &JobId, amount: Msat, expires_at: UnixMs) {
        if self.invoices.is_none() || !self.awaiting_invoice.insert(job.to_string()) {
            return;
        }
        self.deferred.invoice_requests.push(InvoiceRequest {
            job: job.to_string(),
            amount,
            expires_at_ms: expires_at.0,
        });
    }

    /// `quote_issued` (with the invoice as a payment option, if any) and the `payment-required`
    /// feedback carrying `["amount", msat, bolt11]`, in one group; then the invoice is watched.
    fn issue_quote(
        &mut self,
        job: &JobId,
        amount: Msat,
        expires_at: UnixMs,
        invoice: Option<IssuedInvoice>,
        received: Option<LedgerEvent>,
    ) -> anyhow::Result<()> {
        let at = self.now();
        let pending = self
            .requests
            .get(job.as_str())
            .ok_or_else(|| anyhow!("job {job} quoted but its request is not in memory"))?;
        let mut feedback = Feedback::new(Status::PaymentRequired)
            .with_amount(Amount {
                msat: amount,
                bolt11: invoice.as_ref().map(|i| i.bolt11.clone()),
            })
            .with_expiration(Timestamp::from_secs(expires_at.0 / 1000));
        if let Some(who) = self.cashu_fees {
            feedback = feedback.with_cashu_fees(who.as_str());
        }
        let (effect, p) = self.feedback(job, pending, feedback, at)?;
        let options = invoice
            .iter()
            .map(|i| PaymentOption::Invoice {
                payment_hash: i.payment_hash.clone(),
                bolt11: i.bolt11.clone(),
            })
            .collect();
        let quoted = LedgerEvent::new(
            key(format!("quote:{job}"))?,
            at,
            EventBody::QuoteIssued {
                job: job.clone(),
                amount,
                expires_at,
                options,
            },
        );
        let mut events: Vec<LedgerEvent> = received.into_iter().collect();
        events.push(quoted);
        events.push(effect);
        if self.commit(events, vec![p])? {
            if let Some(invoice) = invoice {
                self.deferred
                    .watches
                    .push((invoice, job.clone(), expires_at.0));
            }
        }
        Ok(())
    }

    /// The backend's invoice is checked, not trusted: it must parse, carry our payment hash and
    /// exactly the quoted amount, and not expire before the quote does (less a second for the
    /// BOLT 11 timestamp's rounding).
    fn on_invoice_issued(
        &mut self,
        request: InvoiceRequest,
        invoice: IssuedInvoice,
    ) -> anyhow::Result<()> {
        let checked = Invoice::parse(&invoice.bolt11)
            .map_err(|e| e.to_string())
            .and_then(|parsed| {
                if parsed.payment_hash() != invoice.payment_hash.to_ascii_lowercase() {
                    Err("payment hash differs from the one the backend reported".into())
                } else if parsed.amount() != Some(request.amount) {
                    Err(format!(
                        "amount {:?} differs from the quoted {} msat",
                        parsed.amount().map(Msat::as_msat),
                        request.amount.as_msat()
                    ))
                } else if parsed.expires_at() + 1 < request.expires_at_ms / 1000 {
                    Err("invoice expires before the quote".into())
                } else {
                    Ok(IssuedInvoice {
                        bolt11: parsed.as_str().to_owned(),
                        payment_hash: parsed.payment_hash(),
                    })
                }
            });
        match checked {
            Ok(invoice) => self.quote_received(request, Some(invoice)),
            Err(reason) => {
                warn!(job = %request.job, %reason, "refusing the backend's invoice; quoting without one");
                self.quote_received(request, None)
            }
        }
    }

    /// Issues the quote of a job that waited in `received` for its invoice, if it still waits.
    fn quote_received(
        &mut self,
        request: InvoiceRequest,
        invoice: Option<IssuedInvoice>,
    ) -> anyhow::Result<()> {
        self.awaiting_invoice.remove(&request.job);
        let job = job_id(&request.job)?;
        let state = self.store.state().job(&job).map(|r| r.state);
        if state != Some(JobState::Received) {
            debug!(%job, ?state, "invoice arrived for a job no longer waiting for its quote");
            return Ok(());
        }
        if !self.requests.contains_key(job.as_str()) {
            warn!(%job, "invoice arrived but the request is not in memory; quoting when seen again");
            return Ok(());
        }
        self.issue_quote(
            &job,
            request.amount,
            UnixMs(request.expires_at_ms),
            invoice,
            None,
        )
    }

    /// A priced job left in `received` by a restart (its invoice was being made): price it again
    /// and ask for the invoice (or quote without one).
    fn requote(&mut self, job: &JobId) -> anyhow::Result<()> {
        let Some(pending) = self.requests.get(job.as_str()) else {
            return Ok(());
        };
        let price = self
            .policy
            .price(pending.request.job.kind, &measure(&pending.request))?;
        let PriceDecision::Charge(amount) = price else {
            warn!(%job, ?price, "job waiting for its quote is no longer priced; left as is");
            return Ok(());
        };
        let at = self.now();
        let expires_at = UnixMs(self.policy.quote_expires_at(at.0)?);
        if self.invoices.is_some() {
            self.request_invoice(job, amount, expires_at);
            Ok(())
        } else {
            self.issue_quote(job, amount, expires_at, None, None)
        }
    }

    /// Watches again the invoices of quotes still open (after a restart): a settlement that
    /// happened while the node was down is found by the first lookup.
    fn watch_open_invoices(&self) -> anyhow::Result<()> {
        let Some(desk) = &self.invoices else {
            return Ok(());
        };
        let open: Vec<(JobId, UnixMs)> = self
            .store
            .state()
            .jobs()
            .filter(|j| matches!(j.state, JobState::Quoted | JobState::PartiallyPaid))
            .filter_map(|j| j.expires_at.map(|e| (j.job.clone(), e)))
            .collect();
        for (job, expires_at) in open {
            let Some(trail) = self.store.audit(job.as_str())? else {
                continue;
            };
            for event in &trail.events {
                if let EventBody::QuoteIssued { options, .. } = &event.event {
                    for option in options {
                        if let PaymentOption::Invoice {
                            payment_hash,
                            bolt11,
                        } = option
                        {
                            let invoice = IssuedInvoice {
                                bolt11: bolt11.clone(),
                                payment_hash: payment_hash.clone(),
                            };
                            desk.watch(&invoice, job.as_str(), expires_at.0);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts the next attempt of a queued job.
    fn dispatch(&mut self, job: &JobId) -> anyhow::Result<()> {
        let Some(record) = self.store.state().job(job) else {
            return Ok(());
        };
        if record.state != JobState::Queued || self.running.contains_key(job.as_str()) {
            return Ok(());
        }
        let Some(pending) = self.requests.get(job.as_str()) else {
            warn!(%job, "queued, but its request is not in memory; waiting to see it again");
            return Ok(());
        };
        let attempt = record.attempts + 1;
        let work = pending.request.job.clone();
        let started = LedgerEvent::new(
            key(format!("start:{job}:{attempt}"))?,
            self.now(),
            EventBody::ProcessingStarted {
                job: job.clone(),
                attempt,
            },
        );
        self.commit(vec![started], Vec::new())?;
        self.running.insert(job.to_string(), None);
        self.deferred.attempts.push((job.clone(), work, attempt));
        Ok(())
    }

    fn on_exec_finished(
        &mut self,
        job: &str,
        attempt: u32,
        outcome: Result<String, ExecFailure>,
    ) -> anyhow::Result<()> {
        self.running.remove(job);
        let job = job_id(job)?;
        let Some(record) = self.store.state().job(&job) else {
            return Ok(());
        };
        if record.state != JobState::Processing || record.attempts != attempt {
            debug!(%job, attempt, "stale executor outcome ignored");
            return Ok(());
        }
        match outcome {
            Ok(content) => self.succeed(&job, content),
            Err(failure) => self.fail(&job, attempt, failure),
        }
    }

    fn succeed(&mut self, job: &JobId, content: String) -> anyhow::Result<()> {
        let at = self.now();
        let pending = self
            .requests
            .get(job.as_str())
            .ok_or_else(|| anyhow!("job {job} finished but its request is not in memory"))?;
        let mut result = JobResult::new(content);
        result.expiration = self
            .policy
            .result_expires_at(at.0)?
            .map(|ms| Timestamp::from_secs(ms / 1000));
        let hint = pending.relay.as_ref().map(|r| r.to_string());
        let built = result_event(&pending.request, &result, hint.as_deref(), &self.keys)
            .map_err(|e| e.to_string())
            .and_then(|b| b.sign_with_keys(&self.keys).map_err(|e| e.to_string()))
            .and_then(|event| {
                let size = event.as_json().len();
                if size > MAX_RESULT_EVENT_BYTES {
                    Err(format!(
                        "the result is too large to deliver ({size} bytes; the limit is \
                         {MAX_RESULT_EVENT_BYTES})"
                    ))
                } else {
                    Ok(event)
                }
            });
        let event = match built {
            Ok(event) => event,
            // An output we cannot deliver is a failed attempt, not a job left processing.
            Err(reason) => {
                let attempt = self.store.state().job(job).map_or(0, |j| j.attempts);
                let failure = ExecFailure {
                    reason,
                    retryable: false,
                };
                return self.fail(job, attempt, failure);
            }
        };
        let result_id = event.id.to_hex();
        let relays = self.reply_relays(Some(&pending.request));
        let (effect, p) = self.effect(job, event, relays, at)?;
        let published = LedgerEvent::new(
            key(format!("result:{job}"))?,
            at,
            EventBody::ResultPublished {
                job: job.clone(),
                result_event: paydvm_ledger::EventId::new(result_id).map_err(|e| anyhow!("{e}"))?,
            },
        );
        self.commit(vec![published, effect], vec![p])?;
        self.requests.remove(job.as_str());
        info!(%job, "succeeded");
        Ok(())
    }

    /// A failed attempt (or one interrupted by a restart): record it and follow the policy.
    fn fail(&mut self, job: &JobId, attempt: u32, failure: ExecFailure) -> anyhow::Result<()> {
        let at = self.now();
        info!(%job, attempt, reason = %failure.reason, "attempt failed");
        let mut events = vec![LedgerEvent::new(
            key(format!("fail:{job}:{attempt}"))?,
            at,
            EventBody::ProcessingFailed {
                job: job.clone(),
                attempt,
                retryable: failure.retryable,
                reason: failure.reason.clone(),
            },
        )];
        let decision = self.policy.on_failure(attempt, failure.retryable);
        if decision == FailureDecision::Retry {
            events.push(LedgerEvent::new(
                key(format!("queue:{job}:{attempt}"))?,
                at,
                EventBody::JobQueued {
                    job: job.clone(),
                    reason: QueueReason::Retry,
                },
            ));
            if self.commit(events, Vec::new())? {
                self.dispatch(job)?;
            }
            return Ok(());
        }
        let held = self.store.state().held(&Account::Job(job.clone()));
        let wanted = match decision {
            FailureDecision::Credit => paydvm_policies::Disposition::Credit,
            _ => paydvm_policies::Disposition::Refund,
        };
        let end = if held.is_zero() {
            LedgerEvent::new(
                key(format!("close:{job}"))?,
                at,
                EventBody::JobClosed {
                    job: job.clone(),
                    reason: failure.reason.clone(),
                },
            )
        } else {
            let wanted = self.policy.refund_or_credit(held, wanted);
            match self.held_disposition(job, wanted, "fail")? {
                Disposition::Refund { refund, asset } => LedgerEvent::new(
                    key(format!("refund-due:{job}"))?,
                    at,
                    EventBody::RefundDue {
                        job: job.clone(),
                        refund,
                        asset,
                    },
                ),
                Disposition::Credit => LedgerEvent::new(
                    key(format!("credit:{job}"))?,
                    at,
                    EventBody::CreditGranted { job: job.clone() },
                ),
            }
        };
        events.push(end);
        let mut pubs = Vec::new();
        if let Some(pending) = self.requests.get(job.as_str()) {
            let feedback = Feedback::new(Status::Error).with_info(failure.reason.clone());
            let (effect, p) = self.feedback(job, pending, feedback, at)?;
            events.push(effect);
            pubs.push(p);
        }
        self.commit(events, pubs)?;
        self.requests.remove(job.as_str());
        Ok(())
    }

    /// Where everything `job` holds goes when the policy wants `wanted`: money that came from
    /// prepaid credit always goes back as credit (there is no payment to return it over); a
    /// refund (id `<job>:<why>`) is paid from the asset the ledger's rule names.
    fn held_disposition(
        &self,
        job: &JobId,
        wanted: paydvm_policies::Disposition,
        why: &str,
    ) -> anyhow::Result<Disposition> {
        let record = self
            .store
            .state()
            .job(job)
            .ok_or_else(|| anyhow!("no job {job}"))?;
        if wanted == paydvm_policies::Disposition::Credit || !record.held_credit.is_zero() {
            return Ok(Disposition::Credit);
        }
        Ok(Disposition::Refund {
            refund: RefundId::new(format!("{job}:{why}")).map_err(|e| anyhow!("{e}"))?,
            asset: Some(record.refund_asset()?),
        })
    }

    /// A NIP-09 deletion from a job's customer cancels the job if the ledger allows it.
    fn on_deletion(&mut self, event: &Event) -> anyhow::Result<()> {
        let author = event.pubkey.to_hex();
        let targets: Vec<JobId> = event
            .tags
            .iter()
            .filter_map(|t| match t.as_slice() {
                [name, id, ..] if name == "e" => JobId::new(id.clone()).ok(),
                _ => None,
            })
            .filter(|j| {
                self.store
                    .state()
                    .job(j)
                    .is_some_and(|r| r.customer.as_str() == author)
            })
            .collect();
        let deletion = event.id.to_hex();
        let several = targets.len() > 1;
        for job in targets {
            if self.running.contains_key(job.as_str()) {
                continue;
            }
            let held = self.store.state().held(&Account::Job(job.clone()));
            let disposition = self
                .policy
                .on_cancel(held)
                .map(|wanted| self.held_disposition(&job, wanted, "cancel"))
                .transpose()?;
            let k = if several {
                format!("cancel:{deletion}:{job}")
            } else {
                format!("cancel:{deletion}")
            };
            let cancelled = LedgerEvent::new(
                key(k)?,
                self.now(),
                EventBody::JobCancelled {
                    job: job.clone(),
                    deletion_event: paydvm_ledger::EventId::new(deletion.clone())
                        .map_err(|e| anyhow!("{e}"))?,
                    held: disposition,
                },
            );
            match self.commit(vec![cancelled], Vec::new()) {
                Ok(_) => {
                    self.requests.remove(job.as_str());
                    info!(%job, "cancelled by the customer");
                }
                Err(e) => debug!(%job, "cancellation refused: {e:#}"),
            }
        }
        Ok(())
    }

    /// Every `quoted` / `partially_paid` job past its `expires_at` gets `quote_expired`, with the
    /// policy's disposition for a partial payment. One group per job.
    fn expire_quotes(&mut self) -> anyhow::Result<()> {
        let now = self.now();
        let due: Vec<JobId> = self
            .store
            .state()
            .jobs()
            .filter(|j| matches!(j.state, JobState::Quoted | JobState::PartiallyPaid))
            .filter(|j| j.expires_at.is_some_and(|e| e <= now))
            .map(|j| j.job.clone())
            .collect();
        for job in due {
            let held = self.store.state().held(&Account::Job(job.clone()));
            let disposition = self
                .policy
                .on_expiry(held)
                .map(|wanted| self.held_disposition(&job, wanted, "expiry"))
                .transpose()?;
            let expired = LedgerEvent::new(
                key(format!("expire:{job}"))?,
                now,
                EventBody::QuoteExpired {
                    job: job.clone(),
                    held: disposition,
                },
            );
            match self.commit(vec![expired], Vec::new()) {
                Ok(_) => info!(%job, "quote expired"),
                Err(e) => warn!(%job, "cannot expire the quote: {e:#}"),
            }
        }
        self.forget_requests_past_grace(now);
        Ok(())
    }

    /// A late payment within the grace window still runs its job, so an expired job's request
    /// stays in memory until the window closes (or the job ends otherwise).
    fn forget_requests_past_grace(&mut self, now: UnixMs) {
        let grace = self.policy.payments().late_grace_ms;
        let state = self.store.state();
        self.requests.retain(|job, _| {
            let Some(record) = JobId::new(job.as_str()).ok().and_then(|j| state.job(&j)) else {
                return false;
            };
            match record.state {
                JobState::Expired => record
                    .expires_at
                    .is_some_and(|e| e.0.saturating_add(grace) > now.0),
                state => may_still_run(state),
            }
        });
    }

    fn on_published(&mut self, effect: &str, detail: String) -> anyhow::Result<()> {
        self.gave_up.remove(effect);
        let id = EffectId::new(effect).map_err(|e| anyhow!("{e}"))?;
        match self.store.state().effect(&id) {
            Some(e) if e.outcome.is_none() => {}
            _ => return Ok(()),
        }
        let done = LedgerEvent::new(
            key(format!("done:{effect}"))?,
            self.now(),
            EventBody::EffectDone {
                effect: id,
                outcome: EffectOutcome::Delivered { detail },
            },
        );
        self.commit(vec![done], Vec::new())
            .context("recording a delivered effect")?;
        Ok(())
    }
}

/// Jobs whose request must be in memory again after a restart: those that may still run (queued,
/// interrupted) and those a payment may still start (quoted, partly paid, expired within grace).
fn needs_request_after_restart(state: JobState) -> bool {
    matches!(
        state,
        JobState::Queued
            | JobState::Processing
            | JobState::Quoted
            | JobState::PartiallyPaid
            | JobState::Expired
            // Received only: its invoice was being made when the node stopped.
            | JobState::Received
    )
}

/// States from which a job can still reach an executor (its request is still needed).
fn may_still_run(state: JobState) -> bool {
    matches!(
        state,
        JobState::Received
            | JobState::Quoted
            | JobState::PartiallyPaid
            | JobState::Paid
            | JobState::Queued
            | JobState::Processing
            | JobState::Failed
    )
}

/// Whether a quote expiring at `expires_at` is still payable at `now`.
fn quote_open(expires_at: Option<UnixMs>, now: UnixMs) -> bool {
    match expires_at {
        Some(e) => e > now,
        None => true,
    }
}

/// Sizes of a request's inputs, for per-unit prices.
fn measure(request: &ParsedRequest) -> InputMeasure {
    let inputs = &request.job.inputs;
    InputMeasure {
        bytes: inputs.iter().map(|i| i.data.len() as u64).sum(),
        chars: inputs.iter().map(|i| i.data.chars().count() as u64).sum(),
        words: inputs
            .iter()
            .map(|i| i.data.split_whitespace().count() as u64)
            .sum(),
        inputs: inputs.len() as u64,
    }
}

/// The publication stored in an `effect_requested` payload: `{"event": …, "relays": […]}`.
pub fn publication_from_payload(effect: &str, payload: &str) -> anyhow::Result<Publication> {
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
        effect: effect.to_owned(),
        event,
        relays,
    })
}

/// The `effect_requested` event (idempotency key `idem`) and the publication for one signed
/// event.
fn effect_requested(
    job: Option<&JobId>,
    idem: String,
    event: Event,
    relays: Vec<RelayUrl>,
    at: UnixMs,
) -> anyhow::Result<(LedgerEvent, Publication)> {
    let id = event.id.to_hex();
    let payload = serde_json::json!({
        "event": serde_json::from_str::<serde_json::Value>(&event.as_json())?,
        "relays": relays.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
    })
    .to_string();
    let body = EventBody::EffectRequested {
        effect: EffectId::new(id.clone()).map_err(|e| anyhow!("{e}"))?,
        job: job.cloned(),
        action: "publish".into(),
        payload,
    };
    Ok((
        LedgerEvent::new(key(idem)?, at, body),
        Publication {
            effect: id,
            event,
            relays,
        },
    ))
}
