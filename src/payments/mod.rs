//! Payment evidence from the outside world, verified before the core may credit it.
//!
//! - [`zap`]: NIP-57 zap receipts (kind 9735), a pure verifier.
//! - [`zapper`]: a test/demo LNURL-pay + zapper server on 127.0.0.1.

pub mod zap;
pub mod zapper;

#[cfg(test)]
mod zap_vectors;
