//! Lightning: one backend trait (create / look up / pay invoices, settlement notifications), BOLT 11
//! parsing, and the backends: [`fake::FakeLightning`] (demo and tests), NWC and LNbits.
//!
//! Statuses are tri-state on purpose: a backend that cannot say what happened answers `Unknown`,
//! never `Failed`. Only an explicit "failed" from the backend may end an outgoing payment. A
//! look-up of an outgoing payment has a fourth answer, `NotFound`: the wallet says, in so many
//! words, that it holds no payment with this hash (see [`PaymentStatus::NotFound`]).

pub mod bolt11;
pub mod fake;
pub mod lnbits;
pub mod nwc;
pub mod refund;
pub mod regtest_invoice;
pub mod watch;

use async_trait::async_trait;
use paydvm_ledger::Msat;
use tokio::sync::broadcast;

pub use bolt11::{Bolt11Error, Invoice};

/// What an invoice we create says it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvoiceDescription {
    Text(String),
    /// SHA-256 of a description given out of band (LNURL metadata, a zap request).
    Hash([u8; 32]),
}

/// An invoice a backend created for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedInvoice {
    pub bolt11: String,
    /// Lower-case hex.
    pub payment_hash: String,
}

/// What the backend knows about an invoice we issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvoiceStatus {
    /// Paid: `amount` is what we received, `settled_at` unix seconds.
    Settled {
        amount: Msat,
        settled_at: u64,
    },
    Open,
    Expired,
    /// The backend could not say (transport error, not found, unexpected answer).
    Unknown(String),
}

/// What the backend knows about an outgoing payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentStatus {
    Settled {
        /// Lower-case hex.
        preimage: String,
        fee: Msat,
    },
    /// Only when the backend says explicitly that the payment failed and will not complete.
    Failed(String),
    /// Anything else: in flight, timed out, an error we cannot interpret. Stays pending.
    Unknown(String),
    /// Only from [`LightningBackend::lookup_payment`], never from `pay_invoice`: the wallet
    /// answered definitely that it has no record of an outgoing payment with this hash (NWC
    /// `NOT_FOUND`, LNbits' own 404 "Payment does not exist."). A transport error or an
    /// answer we cannot read is `Unknown`, never this. On its own it proves nothing about a pay
    /// request that may still be on its way: the refund desk trusts it only when two look-ups
    /// some time apart both say so (`node/refunds/look_up.rs`).
    NotFound,
}

/// An invoice of ours that was paid, as announced by the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub payment_hash: String,
    pub amount: Msat,
    /// Unix seconds.
    pub settled_at: u64,
}

/// Errors a backend call can return. A call that may have reached the wallet (e.g. `pay_invoice`)
/// does not return an error for a lost answer: it returns an `Unknown` status.
#[derive(Debug, thiserror::Error)]
pub enum LightningError {
    #[error("the Lightning backend refused the request: {0}")]
    Refused(String),
    #[error("cannot reach the Lightning backend: {0}")]
    Unreachable(String),
    #[error("the Lightning backend answered something unexpected: {0}")]
    BadAnswer(String),
    #[error(transparent)]
    Invoice(#[from] Bolt11Error),
    #[error("amount out of range: {0}")]
    Amount(String),
}

/// A Lightning wallet as paydvm uses it.
#[async_trait]
pub trait LightningBackend: Send + Sync {
    /// A short name for logs and `paydvm status` ("fake", "nwc", "lnbits").
    fn name(&self) -> &'static str;

    async fn create_invoice(
        &self,
        amount: Msat,
        description: InvoiceDescription,
        expiry_secs: u64,
    ) -> Result<IssuedInvoice, LightningError>;

    async fn lookup_invoice(&self, payment_hash: &str) -> InvoiceStatus;

    /// Pays `bolt11` (which must carry an amount) paying at most `max_fee` in routing fees.
    /// Never answers [`PaymentStatus::NotFound`].
    async fn pay_invoice(&self, bolt11: &str, max_fee: Msat) -> PaymentStatus;

    /// What became of an outgoing payment, by its payment hash. `NotFound` only when the
    /// wallet says definitely that it has no such payment.
    async fn lookup_payment(&self, payment_hash: &str) -> PaymentStatus;

    /// What the wallet holds, as the wallet reports it (for `paydvm reconcile`).
    async fn balance(&self) -> Result<Msat, LightningError>;

    /// Settled-invoice notifications, if the backend sends them. `None` means the caller must
    /// poll [`LightningBackend::lookup_invoice`] (see [`watch`]). A notification is a hint to
    /// look up, never proof on its own.
    fn settlements(&self) -> Option<broadcast::Receiver<Settlement>>;
}
