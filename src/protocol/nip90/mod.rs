//! NIP-90 (Data Vending Machines): our own tag model for job requests, feedback and results.
//!
//! nostr 0.44 still ships NIP-90 helpers, but upstream deleted them later; owning the tag model
//! keeps a crate upgrade from breaking the wire format. Requests become a typed [`crate::job::Job`];
//! replies are unsigned [`nostr_sdk::EventBuilder`]s that the outbox signs.

mod adapter;
mod encryption;
mod error;
mod feedback;
mod limits;
mod reply;
mod request;
mod result;
mod tags;

#[cfg(test)]
mod test_support;

pub use adapter::{Nip90Adapter, Nip90Context, MAX_RESULT_EVENT_BYTES};
pub use encryption::{CryptoError, Encryption};
pub use error::{BidError, RequestError};
pub use feedback::{feedback_event, Feedback, Status};
pub use limits::Limit;
pub use reply::{Amount, ReplyError};
pub use request::{parse_request, ParsedRequest, PaymentToken, Visibility};
pub use result::{result_event, JobResult};

/// Job request kinds; the result kind is the request kind + [`RESULT_KIND_OFFSET`].
pub const REQUEST_KINDS: std::ops::RangeInclusive<u16> = 5000..=5999;
pub const RESULT_KIND_OFFSET: u16 = 1000;
pub const FEEDBACK_KIND: u16 = 7000;
