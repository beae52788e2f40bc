//! What a job holds, by where the money came from, and the rule that picks the asset a refund of
//! that money is paid from.
//!
//! The rule is decided here, once, so the node and the ledger cannot disagree: the source
//! holding the most for the job wins; ties go to the smaller `Asset` (Lightning first, then mints
//! by URL). Money that came from prepaid credit is never refunded over a rail: it goes back as
//! credit (`credit_granted`).

use serde::{Deserialize, Serialize};

use crate::error::TransitionError;
use crate::event::Asset;
use crate::job::JobRecord;
use crate::money::{MoneyError, Msat};

/// An amount of one asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetAmount {
    pub asset: Asset,
    pub amount: Msat,
}

impl JobRecord {
    /// Everything the job holds, whatever its source.
    pub fn held_total(&self) -> Result<Msat, MoneyError> {
        Msat::checked_sum(self.held_assets.iter().map(|h| h.amount))?.checked_add(self.held_credit)
    }

    /// The asset a refund of everything this job holds is paid from. Refused when the job
    /// holds nothing, or holds money that came from prepaid credit.
    pub fn refund_asset(&self) -> Result<Asset, TransitionError> {
        if !self.held_credit.is_zero() {
            return Err(TransitionError::CreditFundedRefund {
                job: self.job.clone(),
            });
        }
        // `held_assets` is sorted by asset, so keeping the first of equal amounts breaks ties
        // toward the smaller asset.
        let mut best: Option<&AssetAmount> = None;
        for h in self.held_assets.iter().filter(|h| !h.amount.is_zero()) {
            if best.is_none_or(|b| h.amount > b.amount) {
                best = Some(h);
            }
        }
        best.map(|b| b.asset.clone())
            .ok_or_else(|| TransitionError::NothingHeld {
                job: self.job.clone(),
            })
    }

    /// Count `amount` of `asset` as held (applied to the price).
    pub(crate) fn hold_asset(&mut self, asset: &Asset, amount: Msat) -> Result<(), MoneyError> {
        if amount.is_zero() {
            return Ok(());
        }
        match self.held_assets.binary_search_by(|h| h.asset.cmp(asset)) {
            Ok(i) => {
                let h = &mut self.held_assets[i];
                h.amount = h.amount.checked_add(amount)?;
            }
            Err(i) => self.held_assets.insert(
                i,
                AssetAmount {
                    asset: asset.clone(),
                    amount,
                },
            ),
        }
        Ok(())
    }

    /// Count `amount` of prepaid credit as held.
    pub(crate) fn hold_credit(&mut self, amount: Msat) -> Result<(), MoneyError> {
        self.held_credit = self.held_credit.checked_add(amount)?;
        Ok(())
    }

    /// The held money was released (refunded, credited or recognised as revenue).
    pub(crate) fn release_sources(&mut self) {
        self.held_assets.clear();
        self.held_credit = Msat::ZERO;
    }
}
