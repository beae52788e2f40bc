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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{EventId, JobId, Pubkey, UnixMs};
    use crate::job::JobState;

    fn job() -> JobRecord {
        JobRecord {
            job: JobId::new("j").unwrap(),
            request_event: EventId::new("e").unwrap(),
            customer: Pubkey::new("c").unwrap(),
            kind: 5050,
            received_at: UnixMs(0),
            state: JobState::Failed,
            price: None,
            expires_at: None,
            applied: Msat::ZERO,
            funded_total: Msat::ZERO,
            refunded_total: Msat::ZERO,
            revenue: Msat::ZERO,
            attempts: 1,
            refund: None,
            result_event: None,
            held_assets: Vec::new(),
            held_credit: Msat::ZERO,
            entitlement: None,
        }
    }

    fn mint(url: &str) -> Asset {
        Asset::Mint { url: url.into() }
    }

    fn holding(parts: &[(Asset, u64)]) -> JobRecord {
        let mut j = job();
        for (asset, amount) in parts {
            j.hold_asset(asset, Msat::from_msat(*amount)).unwrap();
        }
        j
    }

    #[test]
    fn the_source_holding_the_most_wins_whatever_the_order_it_came_in() {
        let parts = [
            (mint("https://b.example"), 4),
            (Asset::Lightning, 3),
            (mint("https://a.example"), 5),
        ];
        assert_eq!(
            holding(&parts).refund_asset(),
            Ok(mint("https://a.example"))
        );
        let mut reversed = parts.to_vec();
        reversed.reverse();
        assert_eq!(
            holding(&reversed).refund_asset(),
            Ok(mint("https://a.example"))
        );
        assert_eq!(holding(&parts).held_total(), Ok(Msat::from_msat(12)));
    }

    #[test]
    fn ties_go_to_lightning_then_to_the_mint_with_the_smaller_url() {
        let tie = [(mint("https://b.example"), 5), (Asset::Lightning, 5)];
        assert_eq!(holding(&tie).refund_asset(), Ok(Asset::Lightning));
        let mints = [
            (mint("https://b.example"), 5),
            (mint("https://a.example"), 5),
        ];
        assert_eq!(
            holding(&mints).refund_asset(),
            Ok(mint("https://a.example"))
        );
    }

    #[test]
    fn credit_funded_money_and_nothing_held_have_no_refund_asset() {
        let mut j = holding(&[(Asset::Lightning, 5)]);
        j.hold_credit(Msat::from_msat(1)).unwrap();
        assert!(matches!(
            j.refund_asset(),
            Err(TransitionError::CreditFundedRefund { .. })
        ));
        assert!(matches!(
            job().refund_asset(),
            Err(TransitionError::NothingHeld { .. })
        ));
        j.release_sources();
        assert_eq!(j.held_total(), Ok(Msat::ZERO));
    }
}
