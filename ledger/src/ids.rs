//! Identifiers the ledger links together. All are opaque strings taken from the outside world
//! (Nostr event ids, payment hashes, proof Ys); the ledger bounds their length and charset so a
//! hostile relay event cannot bloat or corrupt the log.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest identifier accepted anywhere in the ledger. A bolt11 invoice is the longest thing we
/// store by reference; ids themselves are hashes.
pub const MAX_ID_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct IdError {
    pub what: &'static str,
    pub reason: &'static str,
}

fn check_id(what: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError {
            what,
            reason: "empty",
        });
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError {
            what,
            reason: "longer than 256 bytes",
        });
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(IdError {
            what,
            reason: "not printable ASCII",
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check_id($what, &s)?;
                Ok(Self(s.into()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A job, named by the id of the request event that created it.
    JobId,
    "job id"
);
string_id!(
    /// A Nostr event id (hex) of anything we received or published.
    EventId,
    "event id"
);
string_id!(
    /// A Nostr public key (hex, x-only).
    Pubkey,
    "pubkey"
);
string_id!(
    /// One refund obligation. Chosen by the caller from the cause (e.g. `<job>:fail`).
    RefundId,
    "refund id"
);
string_id!(
    /// A subscription (one subscriber on one tier).
    SubscriptionId,
    "subscription id"
);
string_id!(
    /// An outbox effect.
    EffectId,
    "effect id"
);
string_id!(
    /// The outside-world key that makes an event idempotent.
    IdemKey,
    "idempotency key"
);
string_id!(
    /// What proves one payment: a payment hash, a zap receipt id, a nutzap event id, a proof Y.
    /// Unique per rail: the same reference is credited at most once.
    PaymentRef,
    "payment reference"
);

/// Wall-clock time as unix milliseconds, always passed in by the caller.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixMs(pub u64);

impl fmt::Display for UnixMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_empty_long_and_non_ascii() {
        assert!(JobId::new("").is_err());
        assert!(JobId::new("a".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(JobId::new("a b").is_err());
        assert!(JobId::new("é").is_err());
        assert!(JobId::new("a".repeat(MAX_ID_LEN)).is_ok());
    }

    #[test]
    fn deserialization_validates() {
        assert!(serde_json::from_str::<Pubkey>("\"\"").is_err());
        assert_eq!(
            serde_json::from_str::<Pubkey>("\"ab\"").unwrap().as_str(),
            "ab"
        );
    }
}
