//! Scaffolding for paydvm's tests, `paydvm demo` and the benchmarks: nothing here runs in a
//! production node.
//!
//! - [`fixture`]: one builder for the set-up they share (relay on 127.0.0.1, node directory with
//!   config, policy and key, optional local mint / zapper / fake Lightning).
//! - [`local_mint`]: an in-process Cashu mint on 127.0.0.1 and customer-wallet helpers.
//! - [`zapper`]: an LNURL-pay + NIP-57 zapper server on 127.0.0.1.
//! - [`workload`]: the deterministic job mix behind `ledger sample` and the ledger bench.
//! - [`bench_node`], [`bench_stats`], [`bench_pg`]: the shared parts of the bench binaries
//!   (`src/bin/`).
pub mod bench_node;
pub mod bench_pg;
pub mod bench_stats;
pub mod fixture;
pub mod local_mint;
pub mod workload;
pub mod zapper;
