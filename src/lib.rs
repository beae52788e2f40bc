//! paydvm: the node (relay intake, NIP-90 adapter, executors, effect outbox) and its CLI.
pub mod cli;
pub mod config;
pub mod executor;
pub mod job;
pub mod ledger_handle;
pub mod lightning;
pub mod node;
pub mod operator;
pub mod payments;
pub mod protocol;
pub mod reconcile;
