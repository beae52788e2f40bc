//! Why a job request was refused. Every message is short and bounded: customers see it.

use super::encryption::CryptoError;
use super::limits::Limit;

/// A request that cannot become a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("kind {0} is not a job request kind (5000-5999)")]
    NotAJobRequest(u16),
    #[error("limit exceeded: {0}")]
    LimitExceeded(Limit),
    #[error("input tag without data")]
    MissingInputData,
    #[error("input tag without a type")]
    MissingInputType,
    /// Holds at most [`EXCERPT_CHARS`] characters of the type.
    #[error("unknown input type {0:?}")]
    UnknownInputType(String),
    #[error("event or job input is not a hex event id")]
    BadInputEventId,
    #[error("param tag needs a key and at least one value")]
    BadParam,
    #[error("output tag without a MIME type")]
    MissingOutputType,
    #[error("more than one {0} tag")]
    DuplicateTag(&'static str),
    #[error("bad bid: {0}")]
    BadBid(#[from] BidError),
    #[error("p tag is not a hex public key")]
    BadProviderKey,
    #[error("encrypted for another service provider")]
    NotForUs,
    #[error("cannot decrypt the request: {0}")]
    BadEncryption(CryptoError),
    #[error("decrypted content is not a JSON array of string tags")]
    BadEncryptedTags,
    #[error(transparent)]
    BadRefundAddress(#[from] crate::lightning::refund::BadRefundAddress),
    /// Never holds the token: it is a bearer secret.
    #[error("cashu tag does not hold a cashuA or cashuB token")]
    BadPaymentToken,
}

/// Why a `bid` tag is not an msat amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BidError {
    #[error("no amount")]
    Missing,
    #[error("empty amount")]
    Empty,
    #[error("negative amount")]
    Negative,
    #[error("not a decimal msat amount")]
    NotDecimal,
    #[error("amount does not fit in 64 bits")]
    Overflow,
    #[error("amount above the bitcoin supply")]
    AboveMaxSupply,
    #[error("more than one bid tag")]
    Duplicate,
}

impl From<Limit> for RequestError {
    fn from(limit: Limit) -> Self {
        RequestError::LimitExceeded(limit)
    }
}

impl RequestError {
    /// A short reason safe to put in an `error` feedback.
    pub fn customer_message(&self) -> String {
        match self {
            // The crate's reason names internals (padding, MAC, base64) that help nobody.
            RequestError::BadEncryption(e) => format!("cannot decrypt the {} request", e.scheme),
            other => other.to_string(),
        }
    }
}

/// How much of an untrusted string an error may carry.
pub(super) const EXCERPT_CHARS: usize = 32;

pub(super) fn excerpt(s: &str) -> String {
    let mut chars = s.chars();
    let mut out: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}
