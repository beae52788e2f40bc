//! paydvm: a NIP-90 Data Vending Machine node with an event-sourced payments ledger.
pub mod cli;
pub mod workload;
