//! The refund saga's own record, one per refund attempt (its tag), kept in the wallet store's
//! key-value space. The record — not a library's recovery — says how far an attempt got:
//! `prepared` (inputs chosen and reserved, nothing sent), `swapped` (the mint signed our outputs;
//! the customer's token is here), or `abandoned` (released; nothing left our wallet).

use cdk::nuts::{Id, Proof, PublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::select::FeePayer;

/// Key-value namespaces (cdk allows `[A-Za-z0-9_-]`, ≤ 120 characters).
pub const NAMESPACE: &str = "paydvm";
pub const SUB_NAMESPACE: &str = "refund_saga_v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payer {
    Operator,
    Customer,
}

impl From<FeePayer> for Payer {
    fn from(p: FeePayer) -> Self {
        match p {
            FeePayer::Operator => Payer::Operator,
            FeePayer::Customer => Payer::Customer,
        }
    }
}

impl From<Payer> for FeePayer {
    fn from(p: Payer) -> Self {
        match p {
            Payer::Operator => FeePayer::Operator,
            Payer::Customer => FeePayer::Customer,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    Prepared,
    /// The mint signed our outputs. `wallet_updated`: the change is in the wallet store and the
    /// inputs are gone from it.
    Swapped {
        token: Vec<Proof>,
        change: Vec<Proof>,
        wallet_updated: bool,
    },
    Abandoned {
        reason: String,
    },
}

#[derive(Clone, Serialize, Deserialize)]
pub struct SagaRecord {
    /// The refund attempt (`<refund id>#<attempt>`).
    pub tag: String,
    pub mint: String,
    pub unit: String,
    /// The keyset the outputs are signed under.
    pub keyset: Id,
    /// Compressed key the customer's outputs are locked to (a NutZap); none for a private message.
    pub lock: Option<PublicKey>,
    pub owed: u64,
    /// What the customer's token is worth (owed, or owed − fee when the customer bears it).
    pub token_value: u64,
    pub fee: u64,
    pub fee_payer: Payer,
    /// Output amounts: the customer's first (`locked` of them), then our change.
    pub amounts: Vec<u64>,
    pub locked: usize,
    pub inputs: Vec<Proof>,
    /// Unix seconds the attempt was prepared: hand-over events carry it, so re-sending one gives
    /// the same event id.
    pub created_at: u64,
    pub step: Step,
}

impl std::fmt::Debug for SagaRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let step = match &self.step {
            Step::Prepared => "prepared",
            Step::Swapped { .. } => "swapped",
            Step::Abandoned { .. } => "abandoned",
        };
        f.debug_struct("SagaRecord")
            .field("tag", &self.tag)
            .field("mint", &self.mint)
            .field("token_value", &self.token_value)
            .field("fee", &self.fee)
            .field("inputs", &self.inputs.len())
            .field("step", &step)
            .finish_non_exhaustive()
    }
}

impl SagaRecord {
    pub fn input_ys(&self) -> Result<Vec<PublicKey>, cdk::nuts::nut00::Error> {
        self.inputs.iter().map(|p| p.y()).collect()
    }

    pub fn input_total(&self) -> u64 {
        self.inputs.iter().map(|p| u64::from(p.amount)).sum()
    }
}

/// The store key of a tag (tags hold `:` and `#`, which keys may not).
pub fn store_key(tag: &str) -> String {
    hex::encode(Sha256::digest(tag.as_bytes()))
}

/// The operation id our reservation of a tag's inputs is held under: derived from the tag, so a
/// restart releases exactly what the attempt reserved.
pub fn operation_id(tag: &str) -> uuid::Uuid {
    let digest = Sha256::digest([b"paydvm-refund-op:".as_slice(), tag.as_bytes()].concat());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}
