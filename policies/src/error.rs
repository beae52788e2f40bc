//! Errors: loading a policy file, and the few decisions whose arithmetic can overflow.

/// A policy file could not be read, parsed or validated.
///
/// Every variant names the file; validation errors also name the field path
/// (`pricing.kind[2].per_unit_msat`, 0-based indices) and the reason.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}: cannot read policy file: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, a wrong value type or an unknown field; the toml message carries line and key.
    #[error("{file}: {source}")]
    Syntax {
        file: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("{file}: {field}: {reason}")]
    Invalid {
        file: String,
        field: String,
        reason: String,
    },
}

impl PolicyError {
    /// The field path of a validation error, if this is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            PolicyError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// A decision could not be computed because a result would not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    /// The price for this input exceeds `Msat::MAX_SUPPLY` (so also any u64 overflow).
    #[error("price for job kind {kind} is too large to charge (above 21 million BTC)")]
    PriceTooLarge { kind: u16 },
    #[error("time overflow: {now_ms} ms + {added_ms} ms does not fit in u64")]
    TimeOverflow { now_ms: u64, added_ms: u64 },
}

/// Adds a duration to a unix-millisecond timestamp without wrapping.
pub(crate) fn add_ms(now_ms: u64, added_ms: u64) -> Result<u64, DecisionError> {
    now_ms
        .checked_add(added_ms)
        .ok_or(DecisionError::TimeOverflow { now_ms, added_ms })
}
