//! The ledger's integration tests: one target, one module per concern.
mod checkpoints;
mod conformance;
mod crash;
mod model;
mod scenarios;
mod subscriptions;
