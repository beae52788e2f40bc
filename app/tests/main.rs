//! The root crate's integration tests: one target, one module per concern.
mod announce;
mod cashu;
mod cashu_mint;
mod cli;
mod crash_node;
mod ecash_refunds;
mod init;
mod lightning;
mod lightning_nwc;
mod lnbits;
mod node;
mod nutshell;
mod payments;
mod reconcile;
mod refunds;
mod tokens;
mod zaps;
