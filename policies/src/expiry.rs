//! How long quotes stay payable and how long results stay on relays.

use crate::check::Check;
use crate::error::PolicyError;
use crate::raw::{RawQuote, RawResults};

pub const DEFAULT_QUOTE_EXPIRY_SECS: i64 = 600;
pub const MAX_QUOTE_EXPIRY_SECS: i64 = 86_400;
pub const MIN_RESULT_EXPIRATION_SECS: i64 = 60;

/// `[quote] expiry_secs` in milliseconds.
pub(crate) fn quote_expiry_ms(raw: RawQuote, check: Check<'_>) -> Result<u64, PolicyError> {
    check.secs_as_ms(
        "quote.expiry_secs",
        raw.expiry_secs.unwrap_or(DEFAULT_QUOTE_EXPIRY_SECS),
        1,
        MAX_QUOTE_EXPIRY_SECS,
    )
}

/// `[results] expiration_secs` in milliseconds; `None` means results carry no NIP-40 expiration.
pub(crate) fn result_expiration_ms(
    raw: RawResults,
    check: Check<'_>,
) -> Result<Option<u64>, PolicyError> {
    raw.expiration_secs
        .map(|secs| {
            check.secs_as_ms(
                "results.expiration_secs",
                secs,
                MIN_RESULT_EXPIRATION_SECS,
                i64::MAX,
            )
        })
        .transpose()
}
