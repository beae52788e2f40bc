//! What the refund saga needs from the outside: the mint (NUT-03 swap, NUT-07 states, NUT-09
//! restore, keysets) and the wallet store (our proofs, reservations, the saga records). The saga
//! is written against these two traits, so it runs the same over cdk (here) and in a simulator.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use cdk::cdk_database::WalletDatabase;
use cdk::mint_url::MintUrl;
use cdk::nuts::{
    BlindSignature, BlindedMessage, CheckStateRequest, CurrencyUnit, Id, Keys, Proof, PublicKey,
    RestoreRequest, State, SwapRequest,
};
use cdk::wallet::types::KeysetLoadPolicy;
use cdk::wallet::types::ProofInfo;
use cdk::wallet::Wallet;

use super::record::{operation_id, store_key, SagaRecord, NAMESPACE, SUB_NAMESPACE};

/// Where intake plans are kept (beside the refund sagas).
pub(crate) const INTAKE_NAMESPACE: &str = "intake_plan_v1";

/// How a call to the mint went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MintFault {
    /// The inputs are spent (or the outputs already signed): the swap may have happened before.
    Spent,
    /// The mint refused the request for good; nothing happened.
    Refused(String),
    /// No answer, or one we cannot read: anything may have happened.
    Unreachable(String),
    /// The mint refused our outputs' keyset as inactive (it rotated its keysets after the
    /// wallet cached the list, which is now fetched again): nothing happened, and a new plan on
    /// the active keyset will do.
    StaleKeyset(String),
}

/// A keyset as the saga uses it.
#[derive(Debug, Clone)]
pub struct KeysetInfo {
    pub id: Id,
    pub keys: Keys,
    pub fee_ppk: u64,
}

#[async_trait]
pub trait MintPort: Send + Sync {
    /// The active keyset of the wallet's unit.
    async fn active_keyset(&self) -> Result<KeysetInfo, MintFault>;
    /// Any keyset of this mint (inputs may come from an older one).
    async fn keyset(&self, id: Id) -> Result<KeysetInfo, MintFault>;
    async fn swap(&self, request: SwapRequest) -> Result<Vec<BlindSignature>, MintFault>;
    /// The state of each Y, in the order given.
    async fn check_state(&self, ys: Vec<PublicKey>) -> Result<Vec<State>, MintFault>;
    /// Signatures the mint holds for any of `outputs`, paired with the output they sign.
    async fn restore(
        &self,
        outputs: Vec<BlindedMessage>,
    ) -> Result<Vec<(BlindedMessage, BlindSignature)>, MintFault>;
}

/// Why the wallet store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("wallet store: {0}")]
pub struct StoreFault(pub String);

fn store_fault(e: impl std::fmt::Display) -> StoreFault {
    StoreFault(e.to_string())
}

#[async_trait]
pub trait SagaStore: Send + Sync {
    async fn load(&self, tag: &str) -> Result<Option<SagaRecord>, StoreFault>;
    async fn save(&self, record: &SagaRecord) -> Result<(), StoreFault>;
    async fn list(&self) -> Result<Vec<SagaRecord>, StoreFault>;
    /// Our unlocked, unspent, unreserved proofs at the mint in the unit.
    async fn unspent(&self, mint: &str, unit: &str) -> Result<Vec<Proof>, StoreFault>;
    /// Holds `ys` for the tag's attempt, so nothing else spends them.
    async fn reserve(&self, tag: &str, ys: Vec<PublicKey>) -> Result<(), StoreFault>;
    /// Gives back what the tag's attempt reserved.
    async fn release(&self, tag: &str) -> Result<(), StoreFault>;
    /// The plan of an intake swap (`intake::IntakePlan`), if one was written.
    async fn load_intake(&self, tag: &str)
        -> Result<Option<crate::intake::IntakePlan>, StoreFault>;
    async fn save_intake(
        &self,
        tag: &str,
        plan: &crate::intake::IntakePlan,
    ) -> Result<(), StoreFault>;
    async fn forget_intake(&self, tag: &str) -> Result<(), StoreFault>;
    /// After a swap: `change` joins the wallet, `spent` leaves it. Idempotent.
    async fn settle(
        &self,
        mint: &str,
        unit: &str,
        change: Vec<Proof>,
        spent: Vec<PublicKey>,
    ) -> Result<(), StoreFault>;
}

/// The mint side over cdk's HTTP connector (and its pacing).
pub struct CdkMint(pub Wallet);

fn mint_fault(e: cdk::Error) -> MintFault {
    match e {
        cdk::Error::TokenAlreadySpent | cdk::Error::BlindedMessageAlreadySigned => MintFault::Spent,
        e if e.is_definitive_failure() => MintFault::Refused(e.to_string()),
        e => MintFault::Unreachable(e.to_string()),
    }
}

fn keyset_info(k: cdk::nuts::KeySet, fee_ppk: u64) -> KeysetInfo {
    KeysetInfo {
        id: k.id,
        keys: k.keys,
        fee_ppk,
    }
}

#[async_trait]
impl MintPort for CdkMint {
    async fn active_keyset(&self) -> Result<KeysetInfo, MintFault> {
        let k = self.0.active_keyset().await.map_err(mint_fault)?;
        Ok(keyset_info(k.clone(), k.input_fee_ppk))
    }

    async fn keyset(&self, id: Id) -> Result<KeysetInfo, MintFault> {
        let k = match self.0.keyset(id).await {
            // Made after the wallet cached the mint's list (a rotation): the list is fetched
            // again before the keyset is called unknown (cdk would wait out its hour).
            Err(cdk::Error::UnknownKeySet) => {
                self.0
                    .keyset_with_policy(id, KeysetLoadPolicy::Refresh)
                    .await
            }
            other => other,
        }
        .map_err(mint_fault)?;
        let fee = self.0.get_keyset_fees_by_id(id).await.map_err(mint_fault)?;
        Ok(keyset_info(k, fee))
    }

    async fn swap(&self, request: SwapRequest) -> Result<Vec<BlindSignature>, MintFault> {
        let connector = self.0.mint_connector();
        match connector.post_swap(request).await {
            Ok(answer) => Ok(answer.signatures),
            Err(cdk::Error::InactiveKeyset) => {
                // The outputs were planned on a keyset the mint has since rotated out: fetch
                // its list now so the next plan takes the active one.
                let refreshed = self.0.keysets(KeysetLoadPolicy::Refresh).await;
                let reason = match refreshed {
                    Ok(_) => "the mint rotated its keyset; planning again on the new one".into(),
                    Err(e) => format!("the mint rotated its keyset; its list: {e}"),
                };
                Err(MintFault::StaleKeyset(reason))
            }
            Err(e) => Err(mint_fault(e)),
        }
    }

    async fn check_state(&self, ys: Vec<PublicKey>) -> Result<Vec<State>, MintFault> {
        let asked = ys.clone();
        let answer = self
            .0
            .mint_connector()
            .post_check_state(CheckStateRequest { ys })
            .await
            .map_err(mint_fault)?;
        asked
            .iter()
            .map(|y| {
                answer
                    .states
                    .iter()
                    .find(|s| s.y == *y)
                    .map(|s| s.state)
                    .ok_or_else(|| MintFault::Unreachable("the mint left a proof out".into()))
            })
            .collect()
    }

    async fn restore(
        &self,
        outputs: Vec<BlindedMessage>,
    ) -> Result<Vec<(BlindedMessage, BlindSignature)>, MintFault> {
        let answer = self
            .0
            .mint_connector()
            .post_restore(RestoreRequest { outputs })
            .await
            .map_err(mint_fault)?;
        if answer.outputs.len() != answer.signatures.len() {
            return Err(MintFault::Unreachable(
                "restore paired outputs and signatures unevenly".into(),
            ));
        }
        Ok(answer.outputs.into_iter().zip(answer.signatures).collect())
    }
}

/// The store side over cdk's wallet database (the same SQLite file the wallet uses).
pub struct CdkStore(pub Arc<dyn WalletDatabase<cdk::cdk_database::Error> + Send + Sync>);

fn mint_url(mint: &str) -> Result<MintUrl, StoreFault> {
    crate::mint_url_of(mint).map_err(store_fault)
}

fn unit_of(unit: &str) -> Result<CurrencyUnit, StoreFault> {
    unit.parse::<CurrencyUnit>().map_err(store_fault)
}

#[async_trait]
impl SagaStore for CdkStore {
    async fn load(&self, tag: &str) -> Result<Option<SagaRecord>, StoreFault> {
        let bytes = self
            .0
            .kv_read(NAMESPACE, SUB_NAMESPACE, &store_key(tag))
            .await
            .map_err(store_fault)?;
        bytes
            .map(|b| serde_json::from_slice(&b).map_err(store_fault))
            .transpose()
    }

    async fn save(&self, record: &SagaRecord) -> Result<(), StoreFault> {
        let bytes = serde_json::to_vec(record).map_err(store_fault)?;
        self.0
            .kv_write(NAMESPACE, SUB_NAMESPACE, &store_key(&record.tag), &bytes)
            .await
            .map_err(store_fault)
    }

    async fn list(&self) -> Result<Vec<SagaRecord>, StoreFault> {
        let keys = self
            .0
            .kv_list(NAMESPACE, SUB_NAMESPACE)
            .await
            .map_err(store_fault)?;
        let mut records = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(bytes) = self
                .0
                .kv_read(NAMESPACE, SUB_NAMESPACE, &key)
                .await
                .map_err(store_fault)?
            {
                records.push(serde_json::from_slice(&bytes).map_err(store_fault)?);
            }
        }
        Ok(records)
    }

    async fn load_intake(
        &self,
        tag: &str,
    ) -> Result<Option<crate::intake::IntakePlan>, StoreFault> {
        let bytes = self
            .0
            .kv_read(NAMESPACE, INTAKE_NAMESPACE, &store_key(tag))
            .await
            .map_err(store_fault)?;
        bytes
            .map(|b| serde_json::from_slice(&b).map_err(store_fault))
            .transpose()
    }

    async fn save_intake(
        &self,
        tag: &str,
        plan: &crate::intake::IntakePlan,
    ) -> Result<(), StoreFault> {
        let bytes = serde_json::to_vec(plan).map_err(store_fault)?;
        self.0
            .kv_write(NAMESPACE, INTAKE_NAMESPACE, &store_key(tag), &bytes)
            .await
            .map_err(store_fault)
    }

    async fn forget_intake(&self, tag: &str) -> Result<(), StoreFault> {
        self.0
            .kv_remove(NAMESPACE, INTAKE_NAMESPACE, &store_key(tag))
            .await
            .map_err(store_fault)
    }

    async fn unspent(&self, mint: &str, unit: &str) -> Result<Vec<Proof>, StoreFault> {
        let found = self
            .0
            .get_proofs(
                Some(mint_url(mint)?),
                Some(unit_of(unit)?),
                Some(vec![State::Unspent]),
                None,
            )
            .await
            .map_err(store_fault)?;
        Ok(found
            .into_iter()
            .filter(|info| info.spending_condition.is_none())
            .map(|info| info.proof)
            .collect())
    }

    async fn reserve(&self, tag: &str, ys: Vec<PublicKey>) -> Result<(), StoreFault> {
        self.0
            .reserve_proofs(ys, &operation_id(tag))
            .await
            .map_err(store_fault)
    }

    async fn release(&self, tag: &str) -> Result<(), StoreFault> {
        self.0
            .release_proofs(&operation_id(tag))
            .await
            .map_err(store_fault)
    }

    /// Idempotent even after a settle that committed but whose answer was lost, and whose
    /// proofs were used since: a change proof the store already holds, in any state, is left
    /// as it is (a refund may have reserved or spent it), and spent proofs are kept, marked
    /// spent, never deleted, so that settling again cannot bring one back as unspent (cdk's
    /// insert would overwrite a row's state, and re-add a deleted one).
    async fn settle(
        &self,
        mint: &str,
        unit: &str,
        change: Vec<Proof>,
        spent: Vec<PublicKey>,
    ) -> Result<(), StoreFault> {
        let (url, unit) = (mint_url(mint)?, unit_of(unit)?);
        let mut added = change
            .into_iter()
            .map(|p| ProofInfo::new(p, url.clone(), State::Unspent, unit.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(store_fault)?;
        if !added.is_empty() {
            let ys = added.iter().map(|info| info.y).collect();
            let known: HashSet<PublicKey> = self
                .0
                .get_proofs_by_ys(ys)
                .await
                .map_err(store_fault)?
                .into_iter()
                .map(|info| info.y)
                .collect();
            added.retain(|info| !known.contains(&info.y));
        }
        // Spent first: stopped between the two, the inputs cannot be released and spent again,
        // and the change, not yet added, cannot be used before the next settle adds it.
        if !spent.is_empty() {
            self.0
                .update_proofs_state(spent, State::Spent)
                .await
                .map_err(store_fault)?;
        }
        if !added.is_empty() {
            self.0
                .update_proofs(added, Vec::new())
                .await
                .map_err(store_fault)?;
        }
        Ok(())
    }
}
