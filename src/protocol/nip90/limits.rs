//! Bounds on everything a request can make us hold or process; each is checked before the work.

use std::fmt;

/// One bound on untrusted request data. [`Limit::max`] is the largest accepted value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// `i` tags.
    Inputs,
    /// `param` tags.
    Params,
    /// Sum of all inputs' data, in bytes.
    TotalInputBytes,
    /// Any single tag value, in bytes.
    TagValueBytes,
    /// Values in one tag (after its name).
    TagValues,
    /// Tags, clear and encrypted together.
    Tags,
    /// The event content (the ciphertext for encrypted requests), in bytes.
    ContentBytes,
    /// `cashu` tags (Cashu tokens paying for the job).
    PaymentTokens,
    /// One serialised Cashu token (`cashuA…`/`cashuB…`), in bytes.
    PaymentTokenBytes,
}

impl Limit {
    pub const fn max(self) -> usize {
        match self {
            Limit::Inputs => 20,
            Limit::Params => 32,
            Limit::TotalInputBytes => 64 * 1024,
            Limit::TagValueBytes => 64 * 1024,
            Limit::TagValues => 64,
            Limit::Tags => 256,
            Limit::ContentBytes => 128 * 1024,
            Limit::PaymentTokens => 2,
            // Room for ~64 proofs with DLEQ in V3 JSON; a job needs a handful.
            Limit::PaymentTokenBytes => 16 * 1024,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Limit::Inputs => "inputs",
            Limit::Params => "params",
            Limit::TotalInputBytes => "total input bytes",
            Limit::TagValueBytes => "tag value bytes",
            Limit::TagValues => "values per tag",
            Limit::Tags => "tags",
            Limit::ContentBytes => "content bytes",
            Limit::PaymentTokens => "cashu tokens",
            Limit::PaymentTokenBytes => "cashu token bytes",
        }
    }

    /// `Err(self)` when `actual` is above the limit.
    pub(super) fn check(self, actual: usize) -> Result<(), Limit> {
        if actual > self.max() {
            Err(self)
        } else {
            Ok(())
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (max {})", self.name(), self.max())
    }
}

/// Relay URLs kept from a request's `relays` tag; the rest are dropped, not refused.
pub(super) const MAX_REPLY_RELAYS: usize = 8;
