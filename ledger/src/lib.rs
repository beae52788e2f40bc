//! paydvm-ledger: the event-sourced payments ledger.
//!
//! No network, no clock reads, no randomness: time and ids come in as arguments. The only I/O is
//! the event store: the contract is [`LedgerStore`], the SQLite implementation [`store::Store`].
pub mod account;
pub mod chain;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod copy;
pub mod effect;
pub mod engine;
pub mod error;
pub mod event;
pub mod footprint;
pub mod held;
pub mod ids;
pub mod invariants;
pub mod job;
pub mod keyed;
pub mod ledger_store;
pub mod money;
pub mod refund;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod subscription;

pub use account::{Account, Balance, Posting};
pub use effect::{EffectAction, EffectRecord};
pub use engine::{AppendOutcome, Ledger, Prepared};
pub use error::{LedgerError, TransitionError};
pub use event::*;
pub use held::AssetAmount;
pub use ids::*;
pub use job::{JobInput, JobRecord, JobState};
pub use ledger_store::{
    Durability, InvoiceFor, LedgerStore, OpenReport, QuotedInvoice, Recall, Retention,
    SnapshotStats, SnapshotUse, StoreOptions,
};
pub use money::{MoneyError, Msat};
pub use refund::{RefundRecord, RefundState};
pub use state::{Change, LedgerState};
pub use store::replay::Followed;
pub use subscription::{EntitlementState, SubscriptionRecord};
