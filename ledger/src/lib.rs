//! paydvm-ledger: the event-sourced payments ledger. No network, no clock reads, no randomness.
pub mod money;
pub use money::{Msat, MoneyError};
