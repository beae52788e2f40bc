//! What happens to a paid job that fails or is cancelled.

use crate::check::Check;
use crate::error::PolicyError;
use crate::payments::Disposition;
use crate::raw::RawFailures;

pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const MAX_MAX_ATTEMPTS: u32 = 10;

/// The decision after an executor attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureDecision {
    /// Queue the job again.
    Retry,
    /// Give up and refund what was received for the job.
    Refund,
    /// Give up and credit what was received for the job to the customer.
    Credit,
}

/// The validated `[failures]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailureRules {
    /// Total executor attempts, including the first.
    pub max_attempts: u32,
    pub then: Disposition,
    pub on_cancel: Disposition,
}

impl Default for FailureRules {
    fn default() -> Self {
        FailureRules {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            then: Disposition::Refund,
            on_cancel: Disposition::Refund,
        }
    }
}

impl FailureRules {
    /// `attempts_so_far` counts every attempt made, including the one that just failed.
    pub fn on_failure(&self, attempts_so_far: u32, retryable: bool) -> FailureDecision {
        if retryable && attempts_so_far < self.max_attempts {
            return FailureDecision::Retry;
        }
        match self.then {
            Disposition::Refund => FailureDecision::Refund,
            Disposition::Credit => FailureDecision::Credit,
        }
    }

    pub(crate) fn from_raw(raw: RawFailures, check: Check<'_>) -> Result<Self, PolicyError> {
        let defaults = FailureRules::default();
        let max_attempts = match raw.max_attempts {
            Some(v) => {
                let v = check.int_in("failures.max_attempts", v, 1, MAX_MAX_ATTEMPTS.into())?;
                u32::try_from(v).map_err(|_| check.invalid("failures.max_attempts", "too large"))?
            }
            None => defaults.max_attempts,
        };
        let then = match raw.then {
            Some(choice) => check.disposition("failures.then", &choice)?,
            None => defaults.then,
        };
        let on_cancel = match raw.on_cancel {
            Some(choice) => check.disposition("failures.on_cancel", &choice)?,
            None => defaults.on_cancel,
        };
        Ok(FailureRules {
            max_attempts,
            then,
            on_cancel,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(max_attempts: u32, then: Disposition) -> FailureRules {
        FailureRules {
            max_attempts,
            then,
            on_cancel: Disposition::Refund,
        }
    }

    #[test]
    fn retryable_failures_retry_until_attempts_run_out() {
        let r = rules(3, Disposition::Refund);
        assert_eq!(r.on_failure(1, true), FailureDecision::Retry);
        assert_eq!(r.on_failure(2, true), FailureDecision::Retry);
        assert_eq!(r.on_failure(3, true), FailureDecision::Refund);
        assert_eq!(r.on_failure(9, true), FailureDecision::Refund);
    }

    #[test]
    fn permanent_failures_never_retry() {
        assert_eq!(
            rules(3, Disposition::Refund).on_failure(1, false),
            FailureDecision::Refund
        );
        assert_eq!(
            rules(3, Disposition::Credit).on_failure(1, false),
            FailureDecision::Credit
        );
    }

    #[test]
    fn one_attempt_means_no_retry() {
        assert_eq!(
            rules(1, Disposition::Credit).on_failure(1, true),
            FailureDecision::Credit
        );
    }
}
