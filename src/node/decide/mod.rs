//! The node's decision core: for each thing that happened ([`Input`]), what the ledger records,
//! what the customer is told and what the node does next ([`Decision`]) — decided from the
//! ledger state, the operator's policy and the time it is given. No clock, no randomness, no I/O
//! and no protocol types: the same function runs in the node and in the simulator.
//!
//! The shell (`node::core`) turns protocol events into inputs (through the protocol adapter),
//! renders each [`Reply`] as a signed event and records it with its group, writes each [`Group`]
//! as one all-or-nothing ledger group (group commit), and performs a group's [`Action`]s only
//! once that write is on disk. A group the ledger refuses, or a write that fails, takes its
//! actions back ([`Decider::forget`]).
//!
//! To add an input kind: a variant here, a handler in the module that owns that kind of
//! decision, and a line in the protocol adapter (or rail) that produces it.

mod exec;
mod expiry;
#[cfg(test)]
pub(super) mod harness;
pub mod keys;
mod memory;
mod operator;
mod payment;
mod recall;
mod refunds;
mod request;
mod restart;
#[cfg(test)]
mod sim;
mod subscription;
#[cfg(test)]
mod tests;

use paydvm_ledger::{
    EffectId, EventBody, EventId, JobId, LedgerEvent, LedgerState, Msat, Pubkey, Recall, RefundId,
    RefundRoute, SubscriptionId, UnixMs,
};
use paydvm_policies::Policy;

pub use self::memory::Memory;
pub use self::payment::VerifiedPayment;
pub use self::refunds::{RefundStatus, MAX_REFUND_ATTEMPTS};
pub use self::restart::needs_request_after_restart;
pub use self::subscription::{SubscribeRequest, UnsubscribeRequest};
use crate::job::Job;
use crate::lightning::refund::RefundAddress;
use crate::lightning::IssuedInvoice;
use crate::operator::OperatorRequest;

/// A job request as the decision core sees it: what the adapter read from the protocol event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    pub job: JobId,
    pub customer: Pubkey,
    /// What an executor will get.
    pub work: Job,
    /// The most the customer will pay.
    pub bid: Option<Msat>,
    /// Where Lightning refunds go, if the customer said.
    pub refund_to: Option<RefundAddress>,
    /// The request as received (opaque here), stored with `job_received` so the job can be
    /// resumed after a restart when no relay holds it any more.
    pub stored: Option<String>,
}

/// What an executor attempt came to, as the core needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecFailure {
    /// Safe to show the customer.
    pub reason: String,
    pub retryable: bool,
}

/// Something that happened.
#[derive(Debug, Clone)]
pub enum Input {
    /// A request of an offered kind, addressed to us (or to anyone), parsed.
    RequestArrived(Box<JobRequest>),
    /// A request of an offered kind that does not parse: `reason` is safe to show the customer.
    RequestUnparsable {
        job: JobId,
        customer: Pubkey,
        kind: u16,
        reason: String,
    },
    /// A NIP-09-style withdrawal by `author` of the jobs `targets` names.
    CancellationArrived {
        deletion: String,
        author: Pubkey,
        targets: Vec<JobId>,
    },
    /// A payment whose evidence a rail verified end to end.
    PaymentVerified(Box<VerifiedPayment>),
    /// A rail refused a payment offered for `job` (a token in a public tag, say).
    PaymentRefused {
        job: JobId,
        reason: String,
    },
    /// The Lightning backend made the invoice for a quote, or why the quote goes without one
    /// (said in the quote's note).
    InvoiceIssued {
        job: JobId,
        amount: Msat,
        expires_at: UnixMs,
        invoice: Result<IssuedInvoice, String>,
    },
    ExecutorFinished {
        job: JobId,
        attempt: u32,
        outcome: Result<String, ExecFailure>,
    },
    /// A refund desk found a route (an invoice; a prepared ecash attempt).
    RefundRouted {
        refund: RefundId,
        attempt: u32,
        route: RefundRoute,
    },
    /// A refund desk could not route a refund now.
    RefundDeferred {
        refund: RefundId,
        reason: String,
    },
    /// What a refund desk learnt about a payment.
    RefundOutcome {
        refund: RefundId,
        attempt: u32,
        status: RefundStatus,
    },
    /// The shell verified a zap receipt (kind 9735, every NIP-57 rule) that answers the zap
    /// request of `refund`'s recorded route: what it says, for the core to compare with that
    /// route before linking it.
    RefundZapReceipt(RefundZapReceipt),
    /// The outbox delivered an effect.
    EffectDelivered {
        effect: EffectId,
        detail: String,
    },
    /// The outbox gave up on an effect for now.
    EffectGaveUp {
        effect: EffectId,
    },
    /// Time passed: expire quotes, re-send what the outbox gave up on, retry refunds.
    ClockTicked,
    /// A ledger write landed: refunds it made due are routed now.
    Written,
    /// The node started: resume open work. `requests` are the stored requests of jobs that may
    /// still run or still owe a refund; `legacy_sources` the asset of each open refund that an
    /// older node wrote without one (`None`: paid from credit). The shell reads both from the
    /// ledger before deciding.
    Restarted {
        requests: Vec<JobRequest>,
        legacy_sources: Vec<(RefundId, Option<paydvm_ledger::Asset>)>,
    },
    OperatorAsked(OperatorRequest),
    /// A subscribe request (NIP-88 kind 7001) for one of our tiers.
    SubscribeArrived(SubscribeRequest),
    /// The Lightning backend made the invoice for a subscription's quote, or why not.
    SubscriptionInvoiceIssued {
        subscription: SubscriptionId,
        expires_at: UnixMs,
        invoice: Result<IssuedInvoice, String>,
    },
    /// An unsubscribe request (NIP-88 kind 7002) naming one of our subscriptions.
    UnsubscribeArrived(UnsubscribeRequest),
}

/// A verified receipt of a refund sent as a zap, as the shell read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundZapReceipt {
    pub refund: RefundId,
    pub receipt: paydvm_ledger::EventId,
    /// The zap request the receipt answers (its `description`).
    pub request: paydvm_ledger::EventId,
    /// Who signed the receipt.
    pub signer: Pubkey,
    /// The invoice it says was paid.
    pub bolt11: String,
}

/// A reply to the customer about a job, protocol-neutral; the adapter renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub job: JobId,
    pub kind: ReplyKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyKind {
    /// Pay this much (with this invoice, if there is one) before `expires_at`.
    PaymentRequired {
        amount: Msat,
        bolt11: Option<String>,
        expires_at: Option<UnixMs>,
        note: Option<String>,
    },
    Processing,
    /// The job's output; the reply may say it expires.
    Result {
        content: String,
        expires_at: Option<UnixMs>,
    },
    Error {
        reason: String,
    },
    /// The failed job's money went back: how much, and the id of the zap request it was sent
    /// with when it was a zap (a zapback).
    Refunded {
        amount: Msat,
        zap_request: Option<String>,
    },
}

/// A message to a subscriber about a subscription, protocol-neutral; the adapter renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub subscription: SubscriptionId,
    pub subscriber: Pubkey,
    pub kind: NoticeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeKind {
    /// Pay this much (with this invoice, if there is one) for the period.
    PaymentRequired {
        amount: Msat,
        bolt11: Option<String>,
        expires_at: Option<UnixMs>,
        note: Option<String>,
    },
    /// The node's receipt for a granted period (NIP-88 kind 7003): `payment` names the payment
    /// reference that completed the funding (`prepaid` for a renewal from funds held).
    Receipt {
        tier: String,
        period_start: UnixMs,
        period_end: UnixMs,
        payment: String,
    },
    /// Money was taken into the subscription's account without granting a period yet.
    Credited {
        note: String,
    },
    Error {
        reason: String,
    },
    /// The subscriber cancelled: until when the period runs and what will be refunded.
    Cancelled {
        note: String,
    },
}

/// Where a refund is routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundRouteOrder {
    Lightning {
        refund: RefundId,
        attempt: u32,
        amount: Msat,
        customer: Pubkey,
        refund_to: Option<RefundAddress>,
    },
    Ecash {
        refund: RefundId,
        attempt: u32,
        amount: Msat,
        customer: Pubkey,
        mint: String,
    },
}

/// What the node does once a group is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    RunExecutor {
        work: Job,
        attempt: u32,
    },
    RequestInvoice {
        job: JobId,
        amount: Msat,
        expires_at: UnixMs,
    },
    WatchInvoice {
        job: JobId,
        invoice: IssuedInvoice,
        expires_at: UnixMs,
    },
    RouteRefund(RefundRouteOrder),
    PayRefund {
        refund: RefundId,
        attempt: u32,
        route: RefundRoute,
    },
    LookUpRefund {
        refund: RefundId,
        attempt: u32,
        route: RefundRoute,
    },
    /// Release what a route holds (an ecash attempt's reserved proofs) that will not be paid.
    AbandonRoute {
        route: RefundRoute,
        reason: String,
    },
    /// Publish an effect already in the ledger again (the outbox gave up on it earlier).
    Resend(EffectId),
    /// The job will never need its request again: the shell drops its protocol context.
    Forget(JobId),
    RequestSubscriptionInvoice {
        subscription: SubscriptionId,
        amount: Msat,
        expires_at: UnixMs,
    },
    WatchSubscriptionInvoice {
        subscription: SubscriptionId,
        invoice: IssuedInvoice,
        expires_at: UnixMs,
    },
}

/// One all-or-nothing ledger group, the replies recorded with it and what follows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    pub events: Vec<LedgerEvent>,
    pub replies: Vec<Reply>,
    /// Messages about subscriptions, recorded as the node's own effects (no job).
    pub notices: Vec<Notice>,
    pub actions: Vec<Action>,
}

impl Group {
    fn new(events: Vec<LedgerEvent>) -> Group {
        Group {
            events,
            ..Group::default()
        }
    }

    fn reply(mut self, job: &JobId, kind: ReplyKind) -> Group {
        self.replies.push(Reply {
            job: job.clone(),
            kind,
        });
        self
    }

    fn notice(mut self, subscription: &SubscriptionId, to: &Pubkey, kind: NoticeKind) -> Group {
        self.notices.push(Notice {
            subscription: subscription.clone(),
            subscriber: to.clone(),
            kind,
        });
        self
    }

    fn then(mut self, action: Action) -> Group {
        self.actions.push(action);
        self
    }
}

/// What the core decided about one input: groups in order (each independent of the outcome of
/// the others), actions needing no ledger write, and for an operator, what to answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub groups: Vec<Group>,
    pub actions: Vec<Action>,
    /// For [`Input::OperatorAsked`]: the refusal, if the request was refused before any write.
    pub refused: Option<String>,
    /// Why the input could not be decided (an id too long to key, a policy overflow): the shell
    /// logs it and goes on.
    pub error: Option<String>,
}

/// Why an input could not be decided. Rare by construction: ids come validated, and the policy
/// checks its arithmetic.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error(transparent)]
    Id(#[from] paydvm_ledger::IdError),
    #[error(transparent)]
    Policy(#[from] paydvm_policies::DecisionError),
    #[error(transparent)]
    Ledger(#[from] paydvm_ledger::TransitionError),
    #[error(transparent)]
    Money(#[from] paydvm_ledger::MoneyError),
    #[error("a result reply with no result_published for {0}")]
    ResultWithoutRecord(JobId),
}

type Decided = Result<Decision, DecideError>;

/// A rendered reply (its event's id and payload) as its group records it: the returned
/// `effect_requested` under the reply's job, and for a result, the id put into the group's
/// `result_published`. The shell, the test harness and the simulator record replies this way.
pub fn record_reply(
    events: &mut [LedgerEvent],
    reply: &Reply,
    id: &str,
    payload: String,
    at: UnixMs,
) -> Result<LedgerEvent, DecideError> {
    if matches!(reply.kind, ReplyKind::Result { .. }) {
        let result = events.iter_mut().find_map(|e| match &mut e.body {
            EventBody::ResultPublished { job, result_event } if *job == reply.job => {
                Some(result_event)
            }
            _ => None,
        });
        let result = result.ok_or_else(|| DecideError::ResultWithoutRecord(reply.job.clone()))?;
        *result = EventId::new(id)?;
    }
    Ok(LedgerEvent::new(
        keys::effect(id)?,
        at,
        EventBody::EffectRequested {
            effect: EffectId::new(id)?,
            job: Some(reply.job.clone()),
            subscription: None,
            action: paydvm_ledger::EffectAction::Publish,
            payload,
        },
    ))
}

/// A rendered notice as its group records it: an `effect_requested` with no job, naming the
/// subscription it is about (so the subscription's audit trail lists it).
pub fn record_notice(
    id: &str,
    notice: &Notice,
    payload: String,
    at: UnixMs,
) -> Result<LedgerEvent, DecideError> {
    Ok(LedgerEvent::new(
        keys::effect(id)?,
        at,
        EventBody::EffectRequested {
            effect: EffectId::new(id)?,
            job: None,
            subscription: Some(notice.subscription.clone()),
            action: paydvm_ledger::EffectAction::Publish,
            payload,
        },
    ))
}

fn settle(decided: Decided) -> Decision {
    decided.unwrap_or_else(|e| Decision {
        error: Some(e.to_string()),
        ..Decision::default()
    })
}

impl Decision {
    fn group(group: Group) -> Decision {
        Decision {
            groups: vec![group],
            ..Decision::default()
        }
    }

    fn actions(actions: Vec<Action>) -> Decision {
        Decision {
            actions,
            ..Decision::default()
        }
    }

    fn push(&mut self, group: Group) {
        self.groups.push(group);
    }

    fn extend(&mut self, other: Decision) {
        self.groups.extend(other.groups);
        self.actions.extend(other.actions);
    }
}

/// What the decisions depend on besides the policy: which rails this node has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rails {
    /// Request kinds offered.
    pub offered: Vec<u16>,
    /// A Lightning backend makes an invoice per quote.
    pub invoices: bool,
    /// Lightning refunds are possible; their routing-fee cap (reserved from the account).
    pub lightning_refunds: Option<Msat>,
    /// Ecash refunds are possible (the Cashu rail is on).
    pub ecash_refunds: bool,
    /// How long an effect the outbox gave up on waits before it is handed over again.
    pub resend_after_ms: u64,
    /// Kinds whose attempts any node may run (shared execution): one that was running when the
    /// node stopped may still be running elsewhere, so a restart resumes it as the same attempt
    /// instead of counting it interrupted.
    pub shared: Vec<u16>,
}

/// The decision core: the policy, the rails, and what it remembers between inputs (see
/// [`Memory`]: never money, only work in progress).
#[derive(Clone)]
pub struct Decider {
    policy: Policy,
    rails: Rails,
    memory: Memory,
}

/// Every decision has the state it reads, the time, and the decider's own parts.
struct Ctx<'a> {
    ledger: &'a LedgerState,
    now: UnixMs,
    policy: &'a Policy,
    rails: &'a Rails,
}

impl Decider {
    pub fn new(policy: Policy, rails: Rails) -> Decider {
        Decider {
            policy,
            rails,
            memory: Memory::default(),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn rails(&self) -> &Rails {
        &self.rails
    }

    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// The records deciding `input` at `now` may read that a store keeping only open work may
    /// have let go of: the shell recalls them into the state before [`Decider::decide`].
    pub fn recall(&self, ledger: &LedgerState, now: UnixMs, input: &Input) -> Recall {
        recall::names(ledger, &self.memory, now, input)
    }

    /// Decides what `input` means, given the ledger state and the time.
    pub fn decide(&mut self, ledger: &LedgerState, now: UnixMs, input: Input) -> Decision {
        let ctx = Ctx {
            ledger,
            now,
            policy: &self.policy,
            rails: &self.rails,
        };
        let m = &mut self.memory;
        settle(match input {
            Input::RequestArrived(request) => request::arrived(&ctx, m, *request),
            Input::RequestUnparsable {
                job,
                customer,
                kind,
                reason,
            } => request::unparsable(&ctx, job, customer, kind, reason),
            Input::CancellationArrived {
                deletion,
                author,
                targets,
            } => expiry::cancelled(&ctx, m, &deletion, &author, targets),
            Input::PaymentVerified(payment) => payment::verified(&ctx, m, &payment),
            Input::PaymentRefused { job, reason } => payment::refused(&ctx, &job, reason),
            Input::InvoiceIssued {
                job,
                amount,
                expires_at,
                invoice,
            } => request::invoice_issued(&ctx, m, job, amount, expires_at, invoice),
            Input::ExecutorFinished {
                job,
                attempt,
                outcome,
            } => exec::finished(&ctx, m, &job, attempt, outcome),
            Input::RefundRouted {
                refund,
                attempt,
                route,
            } => refunds::routed(&ctx, m, &refund, attempt, route),
            Input::RefundDeferred { refund, reason } => {
                refunds::deferred(&ctx, m, &refund, &reason)
            }
            Input::RefundOutcome {
                refund,
                attempt,
                status,
            } => refunds::outcome(&ctx, m, &refund, attempt, status),
            Input::RefundZapReceipt(receipt) => refunds::zap_receipt(&ctx, &receipt),
            Input::EffectDelivered { effect, detail } => {
                expiry::delivered(&ctx, m, &effect, detail)
            }
            Input::EffectGaveUp { effect } => {
                m.gave_up.insert(effect, now);
                Ok(Decision::default())
            }
            Input::ClockTicked => expiry::ticked(&ctx, m),
            Input::Written => refunds::drive(&ctx, m),
            Input::Restarted {
                requests,
                legacy_sources,
            } => restart::restarted(&ctx, m, requests, legacy_sources),
            Input::OperatorAsked(request) => operator::asked(&ctx, m, &request),
            Input::SubscribeArrived(request) => subscription::arrived(&ctx, m, request),
            Input::SubscriptionInvoiceIssued {
                subscription,
                expires_at,
                invoice,
            } => subscription::invoice_issued(&ctx, m, subscription, expires_at, invoice),
            Input::UnsubscribeArrived(request) => subscription::unsubscribed(&ctx, request),
        })
    }

    /// A group's actions will not happen (the ledger refused the group, or the write failed):
    /// what the decider remembered about them is undone, so the inputs can come again.
    pub fn forget(&mut self, actions: &[Action]) {
        self.memory.forget(actions);
    }
}
