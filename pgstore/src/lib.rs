//! paydvm-ledger-pg: the ledger on PostgreSQL, an implementation of
//! [`paydvm_ledger::LedgerStore`] that passes the same conformance suite as the SQLite store.
//!
//! The state the core decides on is in memory, as with SQLite; PostgreSQL holds the log and its
//! projections, written one transaction per flush. The trait is blocking: the store owns a small
//! tokio runtime and waits on it (see `client`). See `docs/postgres.md`.

mod audit;
pub mod cashu_wallet;
mod client;
#[doc(hidden)]
pub mod cut_proxy;
mod load;
mod location;
mod node_lock;
mod page;
pub mod pending_swaps;
mod read;
mod schema;
mod store;
pub mod throwaway;
mod trait_impl;
mod verify;
mod work_queue;
mod work_wakeups;
mod write;

pub use client::PgError;
pub use client::CONNECT_TIMEOUT;
pub use location::{shown_url, LocationError, PgLocation};
pub use node_lock::{NodeLock, NodeLockError, NODE_LOCK_KEY};
pub use schema::SCHEMA_VERSION;
pub use store::PgStore;
pub use work_queue::{Claimed, Finished, Submission, WorkQueue};
pub use work_wakeups::{Wakeups, WorkChannel};
