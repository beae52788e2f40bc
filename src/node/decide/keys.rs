//! Every idempotency key the node writes, built here and nowhere else. Each comes from the
//! outside world (a request id, a deletion id, an attempt number the ledger counted, a
//! refund id named after its cause), so an input seen again makes the same key and changes
//! nothing (`AppendOutcome::Duplicate`).

use paydvm_ledger::{EffectId, IdError, IdemKey, JobId, RefundId, SubscriptionId, UnixMs};
use sha2::{Digest, Sha256};

type Key = Result<IdemKey, IdError>;

/// The key of a payment the rails verified, as text (the decision core checks it): a settled
/// invoice by its payment hash.
pub fn invoice_payment(payment_hash: &str) -> String {
    format!("invoice:{payment_hash}")
}

/// A zap by its receipt's event id (hex).
pub fn zap_payment(receipt_id: &str) -> String {
    format!("zap:{receipt_id}")
}

/// Ecash (a NutZap or a token) by its reference, the hash of its proofs' Ys: the same proofs
/// make the same key whichever way they came.
pub fn ecash_payment(reference: &str) -> String {
    reference.to_owned()
}

pub fn received(job: &JobId) -> Key {
    IdemKey::new(format!("recv:{job}"))
}

pub fn rejected(job: &JobId) -> Key {
    IdemKey::new(format!("reject:{job}"))
}

pub fn quoted(job: &JobId) -> Key {
    IdemKey::new(format!("quote:{job}"))
}

/// The `n`th queueing of `job` (`n` = attempts so far: 0 when paid or free, then per retry).
pub fn queued(job: &JobId, n: u32) -> Key {
    IdemKey::new(format!("queue:{job}:{n}"))
}

pub fn started(job: &JobId, attempt: u32) -> Key {
    IdemKey::new(format!("start:{job}:{attempt}"))
}

pub fn failed(job: &JobId, attempt: u32) -> Key {
    IdemKey::new(format!("fail:{job}:{attempt}"))
}

pub fn result(job: &JobId) -> Key {
    IdemKey::new(format!("result:{job}"))
}

pub fn refund_due(job: &JobId) -> Key {
    IdemKey::new(format!("refund-due:{job}"))
}

pub fn credited(job: &JobId) -> Key {
    IdemKey::new(format!("credit:{job}"))
}

pub fn closed(job: &JobId) -> Key {
    IdemKey::new(format!("close:{job}"))
}

/// A quote's expiry, given what the job was paid in all (`funded`): a late payment within the
/// grace window can reopen an expired job (`partially_paid`), and its next expiry must not be
/// taken for the first one seen again.
pub fn expired(job: &JobId, funded: paydvm_ledger::Msat) -> Key {
    IdemKey::new(format!("expire:{job}:{}", funded.as_msat()))
}

/// A withdrawal; with `several`, one deletion names several of our jobs.
pub fn cancelled(deletion: &str, job: &JobId, several: bool) -> Key {
    if several {
        IdemKey::new(format!("cancel:{deletion}:{job}"))
    } else {
        IdemKey::new(format!("cancel:{deletion}"))
    }
}

/// An effect (a signed event to publish) recorded for a job.
pub fn effect(event_id: &str) -> Key {
    IdemKey::new(format!("effect:{event_id}"))
}

/// An announcement (NIP-89, profile, 10019, NutZap markers): recorded with no job.
pub fn announcement(event_id: &str) -> Key {
    IdemKey::new(format!("announce:{event_id}"))
}

pub fn delivered(effect: &EffectId) -> Key {
    IdemKey::new(format!("done:{effect}"))
}

/// Why a refund waits, once per distinct reason per attempt count.
pub fn refund_deferred(refund: &RefundId, attempts: u32, reason: &str) -> Key {
    let digest = hex::encode(&Sha256::digest(reason.as_bytes())[..8]);
    IdemKey::new(format!("refund-deferred:{refund}:{attempts}:{digest}"))
}

pub fn refund_started(refund: &RefundId, attempt: u32) -> Key {
    IdemKey::new(format!("refund-start:{refund}:{attempt}"))
}

pub fn refund_settled(refund: &RefundId) -> Key {
    IdemKey::new(format!("refund-settled:{refund}"))
}

pub fn refund_unknown(refund: &RefundId, attempt: u32) -> Key {
    IdemKey::new(format!("refund-unknown:{refund}:{attempt}"))
}

/// One zap receipt per refund: a second (another relay's copy, a re-published one) is not
/// linked again.
pub fn refund_zap_receipt(refund: &RefundId) -> Key {
    IdemKey::new(format!("refund-zap-receipt:{refund}"))
}

pub fn refund_failed(refund: &RefundId, attempt: u32) -> Key {
    IdemKey::new(format!("refund-failed:{refund}:{attempt}"))
}

pub fn refund_credited_back(refund: &RefundId) -> Key {
    IdemKey::new(format!("refund-credited-back:{refund}"))
}

/// A job's own refund, named after why it is owed (`fail`, `cancel`, `expiry`).
pub fn job_refund(job: &JobId, why: &str) -> Result<RefundId, IdError> {
    RefundId::new(format!("{job}:{why}"))
}

/// A refund of one payment (`excess` over the price, or `return`ed whole).
pub fn payment_refund(job: &JobId, why: &str, reference: &str) -> Result<RefundId, IdError> {
    RefundId::new(format!("{job}:{why}:{reference}"))
}

pub fn subscription_quoted(subscription: &SubscriptionId) -> Key {
    IdemKey::new(format!("sub-quote:{subscription}"))
}

/// The period granted after the one ending at `after` (zero: the first): granted once.
pub fn entitlement_granted(subscription: &SubscriptionId, after: UnixMs) -> Key {
    IdemKey::new(format!("sub-grant:{subscription}:{}", after.0))
}

/// The period ending at `end` expired.
pub fn entitlement_expired(subscription: &SubscriptionId, end: UnixMs) -> Key {
    IdemKey::new(format!("sub-expired:{subscription}:{}", end.0))
}

/// A subscription cancelled by the subscriber (once per subscription).
pub fn subscription_cancelled(subscription: &SubscriptionId) -> Key {
    IdemKey::new(format!("sub-cancel:{subscription}"))
}

/// A subscription refund: of a payment it could not use (keyed by the payment reference), or
/// of the unused rest of a period (`unused`).
pub fn subscription_refund(subscription: &SubscriptionId, why: &str) -> Result<RefundId, IdError> {
    // A payment reference can be long: a digest keeps the id within bounds, still one per cause.
    let why = match why.len() > 64 {
        true => hex::encode(&Sha256::digest(why.as_bytes())[..16]),
        false => why.to_owned(),
    };
    RefundId::new(format!("sub:{subscription}:{why}"))
}

/// The ledger event creating [`subscription_refund`]'s refund.
pub fn subscription_refund_due(refund: &RefundId) -> Key {
    IdemKey::new(format!("sub-refund:{refund}"))
}

/// A failed job's quota unit given back (once per job).
pub fn unit_returned(job: &JobId) -> Key {
    IdemKey::new(format!("sub-unit-back:{job}"))
}

/// The renewal quote of the period after the one ending at `after` (once per period).
pub fn renewal_quoted(subscription: &SubscriptionId, after: UnixMs) -> Key {
    IdemKey::new(format!("sub-renew:{subscription}:{}", after.0))
}
