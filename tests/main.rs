//! The root crate's integration tests: one target, one module per concern.
mod cli;
mod init;
mod node;
