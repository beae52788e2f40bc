//! Millisatoshi amounts. Integer only; every operation that can overflow or underflow is checked.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Errors from money arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount overflow: {0} + {1} msat")]
    Overflow(u64, u64),
    #[error("amount underflow: {0} - {1} msat")]
    Underflow(u64, u64),
    #[error("amount overflow: {0} * {1}")]
    MulOverflow(u64, u64),
}

/// An amount in millisatoshis.
///
/// No `Add`/`Sub` operator impls on purpose: every caller has to decide what overflow means.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Msat(u64);

impl Msat {
    pub const ZERO: Msat = Msat(0);
    /// 21 M BTC in msat: no real amount exceeds it, so policies can reject anything larger.
    pub const MAX_SUPPLY: Msat = Msat(21_000_000 * 100_000_000 * 1_000);

    pub const fn from_msat(msat: u64) -> Self {
        Msat(msat)
    }

    pub fn from_sat(sat: u64) -> Result<Self, MoneyError> {
        sat.checked_mul(1_000)
            .map(Msat)
            .ok_or(MoneyError::MulOverflow(sat, 1_000))
    }

    pub const fn as_msat(self) -> u64 {
        self.0
    }

    /// Whole satoshis, rounded down; the remainder is `self.as_msat() % 1000`.
    pub const fn whole_sat_floor(self) -> u64 {
        self.0 / 1_000
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_add(self, other: Msat) -> Result<Msat, MoneyError> {
        self.0
            .checked_add(other.0)
            .map(Msat)
            .ok_or(MoneyError::Overflow(self.0, other.0))
    }

    pub fn checked_sub(self, other: Msat) -> Result<Msat, MoneyError> {
        self.0
            .checked_sub(other.0)
            .map(Msat)
            .ok_or(MoneyError::Underflow(self.0, other.0))
    }

    pub fn checked_mul(self, factor: u64) -> Result<Msat, MoneyError> {
        self.0
            .checked_mul(factor)
            .map(Msat)
            .ok_or(MoneyError::MulOverflow(self.0, factor))
    }

    /// `self - other`, or zero when `other` is larger.
    pub fn saturating_sub(self, other: Msat) -> Msat {
        Msat(self.0.saturating_sub(other.0))
    }

    /// Sum of amounts, failing on overflow.
    pub fn checked_sum<I: IntoIterator<Item = Msat>>(items: I) -> Result<Msat, MoneyError> {
        items
            .into_iter()
            .try_fold(Msat::ZERO, |acc, m| acc.checked_add(m))
    }
}

impl fmt::Display for Msat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} msat", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_arithmetic_rejects_overflow_and_underflow() {
        let max = Msat::from_msat(u64::MAX);
        assert_eq!(
            max.checked_add(Msat::from_msat(1)),
            Err(MoneyError::Overflow(u64::MAX, 1))
        );
        assert_eq!(
            Msat::ZERO.checked_sub(Msat::from_msat(1)),
            Err(MoneyError::Underflow(0, 1))
        );
        assert!(Msat::from_sat(u64::MAX).is_err());
        assert_eq!(Msat::from_sat(2).unwrap(), Msat::from_msat(2_000));
        assert_eq!(
            Msat::from_msat(5).checked_sub(Msat::from_msat(5)),
            Ok(Msat::ZERO)
        );
    }

    #[test]
    fn sum_is_checked() {
        let parts = [Msat::from_msat(u64::MAX), Msat::from_msat(1)];
        assert!(Msat::checked_sum(parts).is_err());
        assert_eq!(
            Msat::checked_sum([Msat::from_msat(1), Msat::from_msat(2)]),
            Ok(Msat::from_msat(3))
        );
    }

    #[test]
    fn serializes_as_plain_integer() {
        let s = serde_json::to_string(&Msat::from_msat(42)).unwrap();
        assert_eq!(s, "42");
    }
}
