//! The ledger's event catalogue. Each event is a fact (something happened outside) or a decision
//! (a policy outcome the node recorded); both carry an idempotency key from the outside world.

use serde::{Deserialize, Serialize};

use crate::ids::{
    EffectId, EventId, IdemKey, JobId, PaymentRef, Pubkey, RefundId, SubscriptionId, UnixMs,
};
use crate::money::Msat;

/// Most linked payment references (e.g. proof Ys of one NutZap) one payment may carry.
pub const MAX_LINKED_REFS: usize = 256;
/// Longest free-text field (reasons, destinations) in an event.
pub const MAX_TEXT_LEN: usize = 1024;
/// Largest effect payload (a signed Nostr event to publish).
pub const MAX_PAYLOAD_LEN: usize = 128 * 1024;
/// Most payment options a quote may list.
pub const MAX_PAYMENT_OPTIONS: usize = 16;

/// One entry of the append-only log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEvent {
    pub key: IdemKey,
    pub at: UnixMs,
    pub body: EventBody,
}

impl LedgerEvent {
    pub fn new(key: IdemKey, at: UnixMs, body: EventBody) -> Self {
        LedgerEvent { key, at, body }
    }
}

/// Where money sits on our side once received.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "asset", rename_all = "snake_case")]
pub enum Asset {
    /// Our Lightning wallet (invoices we issued, zaps).
    Lightning,
    /// Ecash held at one Cashu mint.
    Mint { url: String },
}

impl std::fmt::Display for Asset {
    /// The asset's part of its account name: `lightning` or `mint:<url>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Asset::Lightning => f.write_str("lightning"),
            Asset::Mint { url } => write!(f, "mint:{url}"),
        }
    }
}

/// How a payment reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rail {
    Invoice,
    Zap,
    NutZap,
    CashuToken,
    /// Paid outside the node and recorded by the operator.
    Manual,
}

impl Rail {
    pub fn as_str(self) -> &'static str {
        match self {
            Rail::Invoice => "invoice",
            Rail::Zap => "zap",
            Rail::NutZap => "nutzap",
            Rail::CashuToken => "cashu_token",
            Rail::Manual => "manual",
        }
    }
}

/// A way the customer may pay a quote, as offered in the `payment-required` feedback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "option", rename_all = "snake_case")]
pub enum PaymentOption {
    Invoice {
        payment_hash: String,
        bolt11: String,
    },
    Zap {
        target_event: EventId,
    },
    NutZap,
    CashuToken,
}

/// What happens to money that does not count toward a job's price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "disposition", rename_all = "snake_case")]
pub enum Disposition {
    /// Owed back to the customer under this refund id. `asset` is the asset the refund is paid
    /// from: for a payment's excess or a whole payment it is the payment's asset (given or not);
    /// for a job's held money it must be what [`crate::LedgerState::refund_asset_for`] says.
    /// Absent in events written before refund assets were recorded.
    Refund {
        refund: RefundId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        asset: Option<Asset>,
    },
    /// Added to the customer's prepaid credit.
    Credit,
}

/// How a payment that names a job is booked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "apply", rename_all = "snake_case")]
pub enum JobPayment {
    /// Counts toward the quote; anything above the remaining price needs `excess`.
    Apply { excess: Option<Disposition> },
    /// The job cannot take it (late beyond grace, already paid, finished): all of it goes here.
    Whole(Disposition),
}

/// Who a payment is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "target", rename_all = "snake_case")]
pub enum PaymentTarget {
    Job {
        job: JobId,
        booking: JobPayment,
    },
    /// Prepaid credit top-up for a pubkey (e.g. a NutZap with no job).
    Credit {
        pubkey: Pubkey,
    },
    Subscription {
        subscription: SubscriptionId,
    },
    /// Verified money that matches nothing we know (unknown job, someone else's job).
    Unmatched {
        reason: String,
    },
}

/// One verified incoming payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub rail: Rail,
    pub asset: Asset,
    /// The reference that must never be credited twice.
    pub reference: PaymentRef,
    /// Further references consumed by this payment (e.g. Cashu proof Ys).
    pub linked: Vec<PaymentRef>,
    pub amount: Msat,
    /// What taking the payment cost us (mint input fees): booked to `expense:fees`, so the
    /// asset account holds `amount - fee`. Absent in events written before fees were booked.
    #[serde(default, skip_serializing_if = "is_zero_msat")]
    pub fee: Msat,
    /// The Nostr event that carried the evidence (zap receipt, nutzap), if any.
    pub evidence: Option<EventId>,
    pub payer: Option<Pubkey>,
    pub target: PaymentTarget,
}

pub(crate) fn is_zero_msat(m: &Msat) -> bool {
    m.is_zero()
}

/// Why a job was allowed into the executor queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum QueueReason {
    Free,
    Paid,
    /// Debits the customer's prepaid credit in the same event.
    CreditDebit {
        amount: Msat,
    },
    /// Uses one job of the subscription's quota in the same event.
    Entitlement {
        subscription: SubscriptionId,
    },
    /// Another attempt after a retryable failure.
    Retry,
}

/// How an outgoing refund is being paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRoute {
    pub asset: Asset,
    /// What we pay: a bolt11 invoice, a lightning address, a NutZap target.
    pub destination: String,
    /// The handle to look the payment up by after a crash (payment hash, token id).
    pub lookup: String,
    /// The most the payout may cost in fees (the Lightning fee cap, the mint's input fee): held
    /// back from the asset together with the amount while the refund is in flight or unknown.
    /// Absent (zero) in events written before reservations.
    #[serde(default, skip_serializing_if = "is_zero_msat")]
    pub fee_reserve: Msat,
    /// A Lightning refund sent as a NIP-57 zap ("zapback"): the zap request the invoice commits
    /// to and the key that must sign its receipt. Absent for plain payments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zap: Option<RefundZap>,
}

/// The zap a Lightning refund was sent as: enough to recognise its receipt (kind 9735) later,
/// after any restart, without trusting anything the receipt says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundZap {
    /// Id of our signed kind 9734 zap request (the invoice's description hash commits to it).
    pub request: EventId,
    /// The customer's LNURL server's `nostrPubkey`: the only key whose receipt counts.
    pub signer: Pubkey,
}

/// Who bore a refund payout's fee.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeePayer {
    /// We paid it on top of the refund amount: booked to `expense:fees`.
    #[default]
    Operator,
    /// It came out of the refund (an ecash refund token worth amount − fee): nothing is booked
    /// to `expense:fees`; the customer received amount − fee.
    Customer,
}

impl FeePayer {
    pub fn is_operator(&self) -> bool {
        *self == FeePayer::Operator
    }
}

/// Who decided an operator-style resolution, and why (free text, at most [`MAX_TEXT_LEN`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Cause {
    /// A person running the node (CLI, admin command).
    Operator { note: String },
    /// The node itself, by a rule (e.g. fixing a refund recorded by an older version).
    Node { note: String },
}

impl Cause {
    pub fn note(&self) -> &str {
        match self {
            Cause::Operator { note } | Cause::Node { note } => note,
        }
    }
}

/// Where a written-off refund's money goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteOffTo {
    /// Back to the customer as prepaid credit (`liability:credit:<customer>`).
    Credit,
    /// Kept: booked to `income:written_off` (the customer cannot be paid and gave up).
    Income,
}

/// Which way an operator moves a customer's prepaid credit (`credit_adjusted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditDirection {
    /// The operator gives credit: `equity:float` → `liability:credit:<customer>`.
    Increase,
    /// The operator takes credit back: `liability:credit:<customer>` → `equity:float`; never
    /// more than the customer holds.
    Decrease,
}

/// How an outbox effect ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum EffectOutcome {
    Delivered { detail: String },
    Abandoned { reason: String },
}

/// Every kind of ledger event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    JobReceived {
        job: JobId,
        request_event: EventId,
        customer: Pubkey,
        kind: u16,
        /// The request as received (signed Nostr event JSON), so that a job can resume after a
        /// restart when no relay holds its request any more. Absent in older ledgers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<String>,
    },
    JobRejected {
        job: JobId,
        reason: String,
    },
    QuoteIssued {
        job: JobId,
        amount: Msat,
        expires_at: UnixMs,
        options: Vec<PaymentOption>,
    },
    PaymentReceived(Payment),
    /// The quote ran out; money held for a partial payment must be dispositioned.
    QuoteExpired {
        job: JobId,
        held: Option<Disposition>,
    },
    JobCancelled {
        job: JobId,
        deletion_event: EventId,
        held: Option<Disposition>,
    },
    JobQueued {
        job: JobId,
        reason: QueueReason,
    },
    ProcessingStarted {
        job: JobId,
        attempt: u32,
    },
    ProcessingFailed {
        job: JobId,
        attempt: u32,
        retryable: bool,
        reason: String,
    },
    /// A failed job with nothing held is given up.
    JobClosed {
        job: JobId,
        reason: String,
    },
    /// The result event was signed and stored for publishing: revenue is recognised here.
    ResultPublished {
        job: JobId,
        result_event: EventId,
    },
    /// Everything a failed job holds becomes owed to the customer. `asset` must be what
    /// [`crate::LedgerState::refund_asset_for`] says; absent in events written before refund
    /// assets were recorded (then the refund's asset stays open).
    RefundDue {
        job: JobId,
        refund: RefundId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        asset: Option<Asset>,
    },
    /// Everything a failed job holds becomes the customer's prepaid credit.
    CreditGranted {
        job: JobId,
    },
    /// A refund could not be started (no destination, the customer's invoice refused, the rail
    /// unavailable): it stays owed, with this as the reason shown to the operator.
    RefundDeferred {
        refund: RefundId,
        reason: String,
    },
    /// The exact payment is recorded before it is attempted.
    RefundStarted {
        refund: RefundId,
        attempt: u32,
        route: RefundRoute,
    },
    RefundSettled {
        refund: RefundId,
        fee: Msat,
        /// Who bore `fee`; absent (the operator) in older events.
        #[serde(default, skip_serializing_if = "FeePayer::is_operator")]
        fee_paid_by: FeePayer,
        /// What proves the payout: the hand-over event id, a preimage, "claimed", a note.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        evidence: Option<String>,
        /// Set when someone resolved an unknown outcome by hand (checked the wallet).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<Cause>,
    },
    /// The backend could not say whether the payment went through: stays pending, looked up later.
    RefundOutcomeUnknown {
        refund: RefundId,
        reason: String,
    },
    /// The backend said explicitly that the payment failed.
    RefundFailed {
        refund: RefundId,
        reason: String,
        /// Set when someone resolved an unknown outcome by hand (checked the wallet).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<Cause>,
    },
    /// A waiting refund (due or failed) will be paid from `asset` instead.
    RefundRerouted {
        refund: RefundId,
        asset: Asset,
        cause: Cause,
    },
    /// A waiting refund (due or failed) gets a fresh count of attempts before it is parked.
    RefundRetried {
        refund: RefundId,
        cause: Cause,
    },
    /// A waiting refund (due or failed) will not be paid: its money becomes the customer's
    /// credit or our income.
    RefundWrittenOff {
        refund: RefundId,
        to: WriteOffTo,
        cause: Cause,
    },
    /// The operator put their own money into a wallet (e.g. to cover fees).
    FloatAdded {
        asset: Asset,
        amount: Msat,
        cause: Cause,
    },
    EntitlementGranted {
        subscription: SubscriptionId,
        subscriber: Pubkey,
        tier: String,
        period_start: UnixMs,
        period_end: UnixMs,
        quota: u32,
        price: Msat,
    },
    EntitlementExpired {
        subscription: SubscriptionId,
    },
    /// A subscribe request (NIP-88 kind 7001, whose id is the subscription's) for one of our
    /// tiers was quoted: the subscription exists, unpaid, with the terms the subscriber was
    /// offered. Payments naming it fund it; a funded subscription is granted periods
    /// ([`EventBody::EntitlementGranted`]).
    SubscriptionQuoted {
        subscription: SubscriptionId,
        subscriber: Pubkey,
        tier: String,
        /// The price of one period.
        price: Msat,
        period_ms: u64,
        /// Jobs per period.
        quota: u32,
        /// How the first period can be paid (an invoice, zaps, NutZaps).
        options: Vec<PaymentOption>,
        /// When the offered invoice stops being payable.
        expires_at: UnixMs,
    },
    EffectRequested {
        effect: EffectId,
        job: Option<JobId>,
        /// The subscription a job-less notice is about (a 7003 receipt, a period's quote, a
        /// cancellation notice), so the subscription's audit trail lists what we told the
        /// subscriber. Absent in ledgers written before it existed (their hash chain unchanged).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subscription: Option<SubscriptionId>,
        action: crate::effect::EffectAction,
        payload: String,
    },
    EffectDone {
        effect: EffectId,
        outcome: EffectOutcome,
    },
    /// The operator granted or took back a customer's prepaid credit by hand (goodwill, a
    /// correction). Booked against `equity:float`: the operator's own money.
    CreditAdjusted {
        customer: Pubkey,
        direction: CreditDirection,
        amount: Msat,
        cause: Cause,
    },
    /// The customer's LNURL server published the zap receipt of a refund sent as a zap, and the
    /// node verified it against the route's zap (signer, invoice, zap request). Moves no money:
    /// the refund is settled by our payment's outcome, never by a receipt.
    RefundZapReceipt {
        refund: RefundId,
        receipt: EventId,
    },
    /// The subscriber withdrew (NIP-88 kind 7002, `request`): no period is granted after the
    /// current one, and payments naming the subscription from now on are refunded.
    SubscriptionCancelled {
        subscription: SubscriptionId,
        request: EventId,
    },
    /// Money of a subscription becomes owed back to its subscriber under `refund`, paid from
    /// `asset` (the asset of the subscription's latest payment). `from` says whose money it is:
    /// what its account holds (a payment it cannot use), or the unused rest of the running
    /// period (taken back from revenue; the period ends now).
    SubscriptionRefundDue {
        subscription: SubscriptionId,
        refund: RefundId,
        amount: Msat,
        asset: Asset,
        from: SubscriptionFunds,
    },
    /// The next period of a running subscription was quoted before the current one ends
    /// (`after` = the current period's end): once per period.
    SubscriptionRenewalQuoted {
        subscription: SubscriptionId,
        after: UnixMs,
        price: Msat,
        options: Vec<PaymentOption>,
        expires_at: UnixMs,
    },
    /// A job that ran on a subscription's quota failed: its unit goes back to the period it was
    /// taken from (once per job; nothing when that period is over).
    EntitlementUnitReturned {
        subscription: SubscriptionId,
        job: JobId,
    },
}

/// Where a subscription refund's money comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionFunds {
    /// What the subscription's account holds (paid, no period granted for it).
    Held,
    /// The unused rest of the running period, pro rata: taken back from revenue.
    Unused,
}

impl EventBody {
    /// Stable snake_case name of the event type (as in the JSON `type` field).
    pub fn type_name(&self) -> &'static str {
        match self {
            EventBody::JobReceived { .. } => "job_received",
            EventBody::JobRejected { .. } => "job_rejected",
            EventBody::QuoteIssued { .. } => "quote_issued",
            EventBody::PaymentReceived(_) => "payment_received",
            EventBody::QuoteExpired { .. } => "quote_expired",
            EventBody::JobCancelled { .. } => "job_cancelled",
            EventBody::JobQueued { .. } => "job_queued",
            EventBody::ProcessingStarted { .. } => "processing_started",
            EventBody::ProcessingFailed { .. } => "processing_failed",
            EventBody::JobClosed { .. } => "job_closed",
            EventBody::ResultPublished { .. } => "result_published",
            EventBody::RefundDue { .. } => "refund_due",
            EventBody::CreditGranted { .. } => "credit_granted",
            EventBody::RefundDeferred { .. } => "refund_deferred",
            EventBody::RefundStarted { .. } => "refund_started",
            EventBody::RefundSettled { .. } => "refund_settled",
            EventBody::RefundOutcomeUnknown { .. } => "refund_outcome_unknown",
            EventBody::RefundFailed { .. } => "refund_failed",
            EventBody::RefundRerouted { .. } => "refund_rerouted",
            EventBody::RefundRetried { .. } => "refund_retried",
            EventBody::RefundWrittenOff { .. } => "refund_written_off",
            EventBody::FloatAdded { .. } => "float_added",
            EventBody::EntitlementGranted { .. } => "entitlement_granted",
            EventBody::EntitlementExpired { .. } => "entitlement_expired",
            EventBody::SubscriptionQuoted { .. } => "subscription_quoted",
            EventBody::EffectRequested { .. } => "effect_requested",
            EventBody::EffectDone { .. } => "effect_done",
            EventBody::CreditAdjusted { .. } => "credit_adjusted",
            EventBody::RefundZapReceipt { .. } => "refund_zap_receipt",
            EventBody::SubscriptionCancelled { .. } => "subscription_cancelled",
            EventBody::SubscriptionRefundDue { .. } => "subscription_refund_due",
            EventBody::EntitlementUnitReturned { .. } => "entitlement_unit_returned",
            EventBody::SubscriptionRenewalQuoted { .. } => "subscription_renewal_quoted",
        }
    }
}
