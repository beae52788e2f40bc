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

/// The longest `results.processing_feedback_after_secs`: past an hour a customer has long given up.
pub const MAX_PROCESSING_FEEDBACK_AFTER_SECS: i64 = 3_600;

/// How long a job that needed no payment runs before its `processing` feedback is sent; 0 (the
/// default): at once, with the job's start.
pub(crate) fn processing_feedback_after_ms(
    raw: &RawResults,
    check: Check<'_>,
) -> Result<u64, PolicyError> {
    raw.processing_feedback_after_secs.map_or(Ok(0), |secs| {
        check.secs_as_ms(
            "results.processing_feedback_after_secs",
            secs,
            0,
            MAX_PROCESSING_FEEDBACK_AFTER_SECS,
        )
    })
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
