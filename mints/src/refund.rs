//! Ecash refunds: a token from our wallet at one mint, made at most once per refund attempt.
//!
//! cdk records every send (a transaction with our metadata, and a saga holding the token) in
//! the wallet store before it returns. So an attempt interrupted by a crash finds its token
//! again by the attempt's tag instead of making a second one: the same proofs go out again,
//! and proofs can only be claimed once.

use std::collections::HashMap;
use std::str::FromStr;

use cdk::amount::SplitTarget;
use cdk::nuts::{PublicKey, SpendingConditions};
use cdk::wallet::types::{OperationData, TransactionDirection};
use cdk::wallet::{SendOptions, Wallet};
use cdk::Amount;

use crate::redeem::Redeemer;

/// The wallet-transaction metadata key naming the refund attempt a send pays.
pub const REFUND_TAG: &str = "paydvm_refund";

/// A refund token, ready to hand over.
#[derive(Clone, PartialEq, Eq)]
pub struct RefundToken {
    /// The token as a `cashuB` string (a bearer secret unless locked).
    pub token: String,
    /// Each proof as JSON, for NutZap `proof` tags.
    pub proofs: Vec<String>,
    /// Input fees the mint charged to make it, in the unit.
    pub fee: u64,
    /// Whether it was made by an earlier call (a retry after a crash).
    pub found_again: bool,
}

impl std::fmt::Debug for RefundToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefundToken")
            .field("proofs", &self.proofs.len())
            .field("fee", &self.fee)
            .field("found_again", &self.found_again)
            .finish_non_exhaustive()
    }
}

/// Why a refund token was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundTokenError {
    #[error("not enough ecash at {mint}: {reason}")]
    Insufficient { mint: String, reason: String },
    #[error("the lock key is not a secp256k1 public key")]
    BadLock,
    /// The send was made earlier and its token is no longer in the store (claimed and
    /// finalised): there is nothing left to hand over, and nothing to make again.
    #[error("the refund token was made earlier and has been claimed")]
    AlreadyClaimed,
    /// The mint or the store failed; nothing was sent, or the send is recorded for next time.
    #[error("{0}")]
    Retry(String),
}

impl Redeemer {
    /// The token paying `amount` units at `mint` for refund attempt `tag`, P2PK-locked to
    /// `lock` (hex, x-only or compressed) if given. Made once: a second call with the same
    /// `tag` returns the first token.
    pub async fn refund_token(
        &self,
        mint: &str,
        unit: &str,
        amount: u64,
        lock: Option<&str>,
        tag: &str,
    ) -> Result<RefundToken, RefundTokenError> {
        let retry = |e: &dyn std::fmt::Display| RefundTokenError::Retry(e.to_string());
        let wallet = self.wallet(mint, unit).await.map_err(|e| retry(&e))?;
        wallet
            .recover_incomplete_sagas()
            .await
            .map_err(|e| retry(&e))?;
        if let Some(found) = self.refund_sent(&wallet, tag).await? {
            return Ok(found);
        }
        let conditions = lock
            .map(lock_key)
            .transpose()?
            .map(|key| SpendingConditions::new_p2pk(key, None));
        let options = SendOptions {
            conditions,
            amount_split_target: SplitTarget::default(),
            include_fee: false,
            metadata: HashMap::from([(REFUND_TAG.to_owned(), tag.to_owned())]),
            ..Default::default()
        };
        let prepared = match wallet.prepare_send(Amount::from(amount), options).await {
            Ok(p) => p,
            Err(cdk::Error::InsufficientFunds) => {
                return Err(RefundTokenError::Insufficient {
                    mint: mint.to_owned(),
                    reason: format!("{amount} {unit} asked"),
                })
            }
            Err(e) => return Err(retry(&e)),
        };
        prepared.confirm(None).await.map_err(|e| retry(&e))?;
        // The proofs to hand over are the swap's outputs (locked), which cdk keeps with the
        // send: read them back from there, the same way a retry after a crash does.
        match self.refund_sent(&wallet, tag).await? {
            Some(made) => Ok(RefundToken {
                found_again: false,
                ..made
            }),
            None => Err(RefundTokenError::Retry(
                "the wallet did not record the refund it made".into(),
            )),
        }
    }

    /// The send an earlier call made for `tag`, if any.
    async fn refund_sent(
        &self,
        wallet: &Wallet,
        tag: &str,
    ) -> Result<Option<RefundToken>, RefundTokenError> {
        let sent = wallet
            .list_transactions(Some(TransactionDirection::Outgoing))
            .await
            .map_err(|e| RefundTokenError::Retry(e.to_string()))?;
        let Some(tx) = sent
            .into_iter()
            .find(|tx| tx.metadata.get(REFUND_TAG).map(String::as_str) == Some(tag))
        else {
            return Ok(None);
        };
        let saga = match tx.saga_id {
            Some(id) => self
                .store()
                .get_saga(&id)
                .await
                .map_err(|e| RefundTokenError::Retry(e.to_string()))?,
            None => None,
        };
        let Some(OperationData::Send(data)) = saga.map(|s| s.data) else {
            return Err(RefundTokenError::AlreadyClaimed);
        };
        let (Some(token), Some(proofs)) = (data.token, data.proofs) else {
            return Err(RefundTokenError::AlreadyClaimed);
        };
        Ok(Some(RefundToken {
            token,
            proofs: proofs_json(&proofs)?,
            fee: u64::from(tx.fee),
            found_again: true,
        }))
    }
}

fn proofs_json(proofs: &[cdk::nuts::Proof]) -> Result<Vec<String>, RefundTokenError> {
    proofs
        .iter()
        .map(|p| serde_json::to_string(p).map_err(|e| RefundTokenError::Retry(e.to_string())))
        .collect()
}

/// A NIP-61 `pubkey` (x-only, locked to with the `02` prefix) or a compressed key.
fn lock_key(hex: &str) -> Result<PublicKey, RefundTokenError> {
    let full = if hex.len() == 64 {
        format!("02{hex}")
    } else {
        hex.to_owned()
    };
    PublicKey::from_str(&full).map_err(|_| RefundTokenError::BadLock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_x_only_or_compressed() {
        let x = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
        assert_eq!(lock_key(x).unwrap().to_hex(), format!("02{x}"));
        assert_eq!(
            lock_key(&format!("03{x}")).unwrap().to_hex(),
            format!("03{x}")
        );
        assert_eq!(lock_key("zz"), Err(RefundTokenError::BadLock));
        assert_eq!(lock_key(&"00".repeat(32)), Err(RefundTokenError::BadLock));
    }
}
