//! Payment evidence from the outside world, verified before the core may credit it.
//!
//! - [`lnurl`]: lightning addresses, LNURL-pay endpoints (cached `nostrPubkey`), callbacks.
//! - [`lnurl_http`]: the HTTP client every LNURL call goes through, which refuses hosts that are
//!   not public (checked again on every address a name resolves to).
//! - [`zap`]: NIP-57 zap receipts (kind 9735), a pure verifier.

pub mod lnurl;
pub mod lnurl_http;
pub mod zap;

#[cfg(test)]
mod zap_vectors;
