//! Validation helpers: turn a raw value into a typed one or a `PolicyError::Invalid`
//! naming the file, the field path and the reason.

use paydvm_ledger::Msat;

use crate::error::PolicyError;
use crate::payments::Disposition;

/// Validation context for one policy file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Check<'a> {
    pub file: &'a str,
}

impl Check<'_> {
    pub fn invalid(&self, field: &str, reason: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            file: self.file.to_owned(),
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    /// An integer in `min..=max`.
    pub fn int_in(&self, field: &str, value: i64, min: i64, max: i64) -> Result<i64, PolicyError> {
        if (min..=max).contains(&value) {
            Ok(value)
        } else if max == i64::MAX {
            Err(self.invalid(field, format!("must be at least {min}, got {value}")))
        } else {
            Err(self.invalid(
                field,
                format!("must be between {min} and {max}, got {value}"),
            ))
        }
    }

    /// A non-negative amount no larger than `Msat::MAX_SUPPLY`.
    pub fn msat(&self, field: &str, value: i64) -> Result<Msat, PolicyError> {
        let max = Msat::MAX_SUPPLY.as_msat();
        match u64::try_from(value) {
            Ok(v) if v <= max => Ok(Msat::from_msat(v)),
            Ok(_) => Err(self.invalid(
                field,
                format!("{value} msat is more than the total bitcoin supply ({max} msat)"),
            )),
            Err(_) => Err(self.invalid(field, format!("must not be negative, got {value}"))),
        }
    }

    /// A positive amount no larger than `Msat::MAX_SUPPLY`.
    pub fn positive_msat(&self, field: &str, value: i64) -> Result<Msat, PolicyError> {
        let amount = self.msat(field, value)?;
        if amount.is_zero() {
            return Err(self.invalid(field, "must be greater than 0"));
        }
        Ok(amount)
    }

    /// A duration in seconds in `min..=max`, returned in milliseconds.
    pub fn secs_as_ms(
        &self,
        field: &str,
        secs: i64,
        min: i64,
        max: i64,
    ) -> Result<u64, PolicyError> {
        let secs = self.int_in(field, secs, min, max)?;
        u64::try_from(secs)
            .ok()
            .and_then(|s| s.checked_mul(1_000))
            .ok_or_else(|| self.invalid(field, format!("{secs} seconds is too long to represent")))
    }

    /// `"refund"` or `"credit"`.
    pub fn disposition(&self, field: &str, value: &str) -> Result<Disposition, PolicyError> {
        match value {
            "refund" => Ok(Disposition::Refund),
            "credit" => Ok(Disposition::Credit),
            other => Err(self.invalid(
                field,
                format!("unknown choice {other:?}; expected \"refund\" or \"credit\""),
            )),
        }
    }
}
