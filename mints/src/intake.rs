//! Taking ecash in (NutZaps, tokens in requests): a NUT-03 swap of the verified proofs (each
//! P2PK-locked one witnessed with our key) into outputs derived from our seed and the payment's
//! id, by the same rules as refunds (`refund::saga`). The plan (keyset, output amounts, fee) is
//! written before the swap is sent, so every later attempt sends the same outputs. That is what
//! makes "the mint says these proofs are spent" answerable: NUT-09 restore of our own outputs
//! gives the signatures back if the swap was ours, and nothing if someone else spent them. cdk's
//! receive saga cannot tell these apart (its recovery marks a receive "completed" even when the
//! mint restored nothing), so it is not used here.

use cdk::nuts::{Proof, SecretKey, SpendingConditions, SwapRequest};
use serde::{Deserialize, Serialize};

use crate::redeem::SwapOutcome;
use crate::refund::outputs::{derive_outputs, Output};
use crate::refund::ports::{MintFault, MintPort, SagaStore};
use crate::refund::saga::unblind;
use crate::refund::select::{input_fee, split};
use crate::verify::VerifiedNutZap;

/// What an intake swap sends, fixed by the first attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakePlan {
    pub keyset: cdk::nuts::Id,
    pub amounts: Vec<u64>,
    pub fee: u64,
}

/// The saga tag of one payment's intake (outputs are derived from it).
pub fn intake_tag(nutzap: &VerifiedNutZap) -> String {
    format!("intake:{}", nutzap.event_id)
}

pub struct Intake<'a> {
    pub mint: &'a dyn MintPort,
    pub store: &'a dyn SagaStore,
    pub seed: &'a [u8],
    pub key: &'a SecretKey,
}

fn retry(reason: impl std::fmt::Display) -> SwapOutcome {
    SwapOutcome::Retry {
        reason: reason.to_string(),
    }
}

impl Intake<'_> {
    pub async fn swap(&self, nutzap: &VerifiedNutZap) -> SwapOutcome {
        let tag = intake_tag(nutzap);
        let plan = match self.plan(&tag, nutzap).await {
            Ok(plan) => plan,
            Err(outcome) => return outcome,
        };
        let outputs = match derive_outputs(self.seed, &tag, plan.keyset, &plan.amounts, 0, None) {
            Ok(o) => o,
            Err(e) => return retry(e),
        };
        let inputs = match witnessed(&nutzap.proofs, self.key) {
            Ok(i) => i,
            Err(reason) => return SwapOutcome::Refused { reason },
        };
        let blinded = outputs.iter().map(|o| o.blinded.clone()).collect();
        match self.mint.swap(SwapRequest::new(inputs, blinded)).await {
            Ok(signatures) => self.finish(nutzap, &plan, &outputs, signatures).await,
            Err(MintFault::Spent) => self.spent(nutzap, &plan, &outputs).await,
            Err(MintFault::Refused(reason)) => {
                // Nothing happened at the mint: a later attempt may plan afresh.
                let _ = self.store.forget_intake(&tag).await;
                SwapOutcome::Refused { reason }
            }
            // Nothing happened either, but the payment is good: planned again on the keyset
            // the mint uses now, at the next attempt.
            Err(MintFault::StaleKeyset(reason)) => match self.store.forget_intake(&tag).await {
                Ok(()) => retry(reason),
                Err(e) => retry(format!("{reason}; forgetting the old plan: {e}")),
            },
            Err(MintFault::Unreachable(reason)) => retry(reason),
        }
    }

    /// The recorded plan, or a new one on the active keyset (written before anything is sent).
    async fn plan(&self, tag: &str, nutzap: &VerifiedNutZap) -> Result<IntakePlan, SwapOutcome> {
        if let Some(plan) = self.store.load_intake(tag).await.map_err(retry)? {
            return Ok(plan);
        }
        let active = self
            .mint
            .active_keyset()
            .await
            .map_err(|f| retry(format!("{f:?}")))?;
        let mut ppks = Vec::with_capacity(nutzap.proofs.len());
        for p in &nutzap.proofs {
            let ppk = if p.keyset_id == active.id {
                active.fee_ppk
            } else {
                match self.mint.keyset(p.keyset_id).await {
                    Ok(k) => k.fee_ppk,
                    Err(MintFault::Refused(reason)) => return Err(SwapOutcome::Refused { reason }),
                    Err(f) => return Err(retry(format!("{f:?}"))),
                }
            };
            ppks.push(ppk);
        }
        let fee = input_fee(ppks);
        let Some(received) = nutzap.units.checked_sub(fee).filter(|r| *r > 0) else {
            return Err(SwapOutcome::Refused {
                reason: format!(
                    "the mint's input fee ({fee}) leaves nothing of {}",
                    nutzap.units
                ),
            });
        };
        let denominations: Vec<u64> = active.keys.iter().map(|(a, _)| u64::from(*a)).collect();
        let amounts = split(received, &denominations)
            .ok_or_else(|| retry(format!("the keyset cannot express {received}")))?;
        let plan = IntakePlan {
            keyset: active.id,
            amounts,
            fee,
        };
        self.store.save_intake(tag, &plan).await.map_err(retry)?;
        Ok(plan)
    }

    /// The mint says the proofs are spent: ours if it holds signatures for our outputs.
    async fn spent(
        &self,
        nutzap: &VerifiedNutZap,
        plan: &IntakePlan,
        outputs: &[Output],
    ) -> SwapOutcome {
        let blinded: Vec<_> = outputs.iter().map(|o| o.blinded.clone()).collect();
        let restored = match self.mint.restore(blinded).await {
            Ok(r) => r,
            Err(f) => return retry(format!("restoring our outputs: {f:?}")),
        };
        if restored.is_empty() {
            return SwapOutcome::AlreadySpent;
        }
        let mut signatures = Vec::with_capacity(outputs.len());
        for o in outputs {
            match restored
                .iter()
                .find(|(b, _)| b.blinded_secret == o.blinded.blinded_secret)
            {
                Some((_, sig)) => signatures.push(sig.clone()),
                None => return retry("the mint restored only part of our outputs"),
            }
        }
        self.finish(nutzap, plan, outputs, signatures).await
    }

    async fn finish(
        &self,
        nutzap: &VerifiedNutZap,
        plan: &IntakePlan,
        outputs: &[Output],
        signatures: Vec<cdk::nuts::BlindSignature>,
    ) -> SwapOutcome {
        let proofs = match unblind(self.mint, outputs, signatures).await {
            Ok(p) => p,
            Err(e) => return retry(e),
        };
        let received = proofs.iter().map(|p| u64::from(p.amount)).sum();
        if let Err(e) = self
            .store
            .settle(&nutzap.mint, &nutzap.unit, proofs, Vec::new())
            .await
        {
            return retry(e);
        }
        SwapOutcome::Swapped {
            received,
            fee: plan.fee,
        }
    }
}

/// The proofs with a P2PK witness (our signature) on each one locked by NUT-11; unlocked ones
/// (tokens in requests may be) go as they are.
fn witnessed(proofs: &[Proof], key: &SecretKey) -> Result<Vec<Proof>, String> {
    proofs
        .iter()
        .map(|p| {
            let mut p = p.clone();
            let locked = matches!(
                SpendingConditions::try_from(&p.secret),
                Ok(SpendingConditions::P2PKConditions { .. })
            );
            if locked {
                p.sign_p2pk(key.clone()).map_err(|e| e.to_string())?;
            }
            Ok(p)
        })
        .collect()
}
