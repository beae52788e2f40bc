//! Typed errors of the ledger core and its store.

use crate::event::Asset;
use crate::ids::{EffectId, IdemKey, JobId, PaymentRef, RefundId, SubscriptionId};
use crate::job::{JobInput, JobState};
use crate::money::{MoneyError, Msat};
use crate::refund::RefundState;

/// Why the core refused an event. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("job {0} already exists")]
    JobExists(JobId),
    #[error("job {0} does not exist")]
    UnknownJob(JobId),
    #[error("job {job}: {input} is not allowed in state {from}", input = input.as_str())]
    InvalidTransition {
        job: JobId,
        from: JobState,
        input: JobInput,
    },
    #[error("payment reference {0} was already credited")]
    DuplicatePaymentRef(PaymentRef),
    #[error("payment reference {0} appears twice in one payment")]
    RepeatedRefInPayment(PaymentRef),
    #[error("a payment amount must be positive")]
    ZeroAmount,
    #[error("payment fee {fee} exceeds the payment amount {amount}")]
    FeeExceedsPayment { fee: Msat, amount: Msat },
    #[error("a quote amount must be positive")]
    ZeroQuote,
    #[error("job {job}: payment exceeds the remaining {remaining} and no disposition for the excess {excess} was given")]
    UnhandledExcess {
        job: JobId,
        remaining: Msat,
        excess: Msat,
    },
    #[error("job {job}: an excess disposition was given but the payment leaves no excess")]
    NoExcess { job: JobId },
    #[error("job {job} holds {held}: the event must say whether it is refunded or credited")]
    HeldNeedsDisposition { job: JobId, held: Msat },
    #[error("job {job} holds nothing to refund or credit")]
    NothingHeld { job: JobId },
    #[error("quote for job {job} expires at {expires_at} ms, not yet expired at {at} ms")]
    QuoteNotExpired {
        job: JobId,
        expires_at: u64,
        at: u64,
    },
    #[error("job {job}: attempt {got} given, expected {expected}")]
    AttemptMismatch { job: JobId, expected: u32, got: u32 },
    #[error("refund {refund}: attempt {got} given, expected {expected}")]
    RefundAttemptMismatch {
        refund: RefundId,
        expected: u32,
        got: u32,
    },
    #[error("customer credit {available} is less than the {needed} needed")]
    InsufficientCredit { available: Msat, needed: Msat },
    #[error("refund {0} already exists")]
    RefundExists(RefundId),
    #[error("refund {0} does not exist")]
    UnknownRefund(RefundId),
    #[error("refund {refund}: cannot {action} in state {state}", state = state.as_str())]
    InvalidRefundTransition {
        refund: RefundId,
        state: RefundState,
        action: &'static str,
    },
    #[error("subscription {0} does not exist")]
    UnknownSubscription(SubscriptionId),
    #[error("subscription {subscription}: {reason}")]
    EntitlementRefused {
        subscription: SubscriptionId,
        reason: &'static str,
    },
    #[error("subscription {subscription} holds {available}, the period costs {price}")]
    InsufficientSubscriptionFunds {
        subscription: SubscriptionId,
        available: Msat,
        price: Msat,
    },
    #[error("effect {0} already exists")]
    EffectExists(EffectId),
    #[error("effect {0} does not exist")]
    UnknownEffect(EffectId),
    #[error("effect {0} is already done")]
    EffectAlreadyDone(EffectId),
    #[error("{field} is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
    #[error("{field}: more than {max} entries")]
    TooMany { field: &'static str, max: usize },
    #[error("{field} {amount} is above the 21M BTC supply")]
    AmountTooLarge { field: &'static str, amount: Msat },
    #[error("time {0} ms is out of range")]
    TimeOutOfRange(u64),
    #[error("account {account} would exceed the largest storable total")]
    TotalTooLarge { account: String },
    #[error("{0}")]
    Money(#[from] MoneyError),
    #[error("account {account} would go negative")]
    NegativeHeld { account: String },
    #[error("{account} has {has} available, {needs} needed")]
    AssetShort {
        account: String,
        has: Msat,
        needs: Msat,
    },
    #[error("job {job} holds money from prepaid credit: it goes back as credit, not as a refund")]
    CreditFundedRefund { job: JobId },
    #[error("refund {refund} is paid from {expected}, not {got}")]
    RefundAssetMismatch {
        refund: RefundId,
        expected: Asset,
        got: Asset,
    },
    #[error("refund fee {fee} paid by the customer exceeds the refund amount {amount}")]
    FeeExceedsRefund { fee: Msat, amount: Msat },
}

/// Errors from appending to or reading a ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("event {index} of the group ({key}) refused: {source}")]
    Refused {
        index: usize,
        key: IdemKey,
        #[source]
        source: TransitionError,
    },
    #[error("idempotency key {0} appears twice in one group")]
    KeyRepeatedInGroup(IdemKey),
    #[error("storage: {0}")]
    Storage(#[from] rusqlite::Error),
    /// A database server's error (a store other than SQLite: PostgreSQL).
    #[error("database: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    #[error("encoding: {0}")]
    Encoding(#[from] serde_json::Error),
    #[error("ledger file is corrupt: {0}")]
    Corrupt(String),
    #[error("ledger file {0} does not exist")]
    NotFound(String),
    #[error("{0} is not a paydvm ledger (schema version {1})")]
    NotALedger(String, u32),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("ledger schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("invariant violated: {0}")]
    Invariant(String),
    #[error("{0} staged groups are not written yet: flush first")]
    Staged(usize),
    #[error("the store was opened read-only")]
    ReadOnly,
    /// The store's memory no longer matches what it stores (a database write whose answer was
    /// lost turned out to have landed): it refuses to write until opened again.
    #[error("the store no longer matches its database ({0}); open it again")]
    OutOfStep(String),
    /// Syncing the WAL behind the commits failed (`store::wal_sync`): what was committed since
    /// the last good sync may not be on disk, so nothing more is released.
    #[error("{0}; what was committed since the last good sync may not be on disk")]
    SyncFailed(String),
}
