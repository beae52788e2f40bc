//! The root crate's integration tests: one target, one module per concern.
mod announce;
mod cashu;
mod cli;
mod crash_node;
mod init;
mod lightning;
mod lightning_nwc;
mod node;
mod payments;
mod reconcile;
mod zaps;
