//! The refund saga: prepare (choose and reserve inputs, derive outputs, write the record) → run
//! (swap; or, when the mint says the inputs are spent, learn from the mint what happened: NUT-07
//! states of our inputs, NUT-09 restore of our own deterministic outputs) → the customer's token.
//! Every step is recorded before the next one starts, so a crash anywhere resumes from the record
//! and the mint's answers. Nothing here trusts a library's recovery to say what happened.

use cdk::dhke::unblind_message;
use cdk::nuts::{BlindSignature, Proof, ProofDleq, PublicKey, State, SwapRequest};
use cdk::Amount;

use super::outputs::{derive_outputs, Output};
use super::ports::{MintFault, MintPort, SagaStore, StoreFault};
use super::record::{SagaRecord, Step};
use super::select::{select, split, Coin, FeePayer, SelectError};

/// Most proofs one refund swap may spend.
pub const MAX_INPUTS: usize = 64;

/// What the caller wants refunded.
#[derive(Debug, Clone)]
pub struct Order {
    pub tag: String,
    pub mint: String,
    pub unit: String,
    pub owed: u64,
    pub lock: Option<PublicKey>,
    pub fee_payer: FeePayer,
    /// Unix seconds (the caller's clock: the saga reads none).
    pub now: u64,
}

/// What a prepared attempt will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub token_value: u64,
    pub fee: u64,
    pub fee_payer: FeePayer,
    pub created_at: u64,
}

impl Plan {
    fn of(r: &SagaRecord) -> Plan {
        Plan {
            token_value: r.token_value,
            fee: r.fee,
            fee_payer: r.fee_payer.into(),
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    #[error("{0}")]
    Cannot(#[from] SelectError),
    #[error("the refund was prepared earlier and abandoned: {0}")]
    Abandoned(String),
    #[error("the mint's keyset cannot express {0} sat")]
    Denominations(u64),
    #[error("mint: {0:?}")]
    Mint(MintFault),
    #[error("{0}")]
    Store(#[from] StoreFault),
    #[error("{0}")]
    Outputs(String),
}

/// What running an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The customer's proofs, ready to hand over; `fee` the swap's input fee.
    Token { proofs: Vec<Proof>, plan: Plan },
    /// Explicitly failed: nothing of ours went to the customer; a new attempt may follow.
    Failed(String),
    /// Cannot tell yet (mint unreachable, ambiguous answer): run again later, never re-prepare.
    Unknown(String),
}

pub struct Saga<'a> {
    pub mint: &'a dyn MintPort,
    pub store: &'a dyn SagaStore,
    /// Our wallet seed: the outputs are derived from it and the tag.
    pub seed: &'a [u8],
}

impl Saga<'_> {
    /// Chooses and reserves the inputs and writes the record, once per tag (a second call
    /// returns the first plan). Nothing is sent to the mint's swap endpoint.
    pub async fn prepare(&self, order: &Order) -> Result<Plan, PrepareError> {
        if let Some(r) = self.store.load(&order.tag).await? {
            return match r.step {
                Step::Abandoned { reason } => Err(PrepareError::Abandoned(reason)),
                _ => Ok(Plan::of(&r)),
            };
        }
        let active = self
            .mint
            .active_keyset()
            .await
            .map_err(PrepareError::Mint)?;
        let proofs = self.store.unspent(&order.mint, &order.unit).await?;
        let mut coins = Vec::with_capacity(proofs.len());
        for p in &proofs {
            let fee_ppk = if p.keyset_id == active.id {
                active.fee_ppk
            } else {
                self.mint
                    .keyset(p.keyset_id)
                    .await
                    .map_err(PrepareError::Mint)?
                    .fee_ppk
            };
            let y = p.y().map_err(|e| PrepareError::Outputs(e.to_string()))?;
            coins.push(Coin {
                y: y.to_hex(),
                amount: u64::from(p.amount),
                fee_ppk,
            });
        }
        let chosen = select(&coins, order.owed, order.fee_payer, MAX_INPUTS)?;
        let denominations: Vec<u64> = active.keys.iter().map(|(a, _)| u64::from(*a)).collect();
        let token =
            split(chosen.token, &denominations).ok_or(PrepareError::Denominations(chosen.token))?;
        let change = split(chosen.change, &denominations)
            .ok_or(PrepareError::Denominations(chosen.change))?;
        let record = SagaRecord {
            tag: order.tag.clone(),
            mint: order.mint.clone(),
            unit: order.unit.clone(),
            keyset: active.id,
            lock: order.lock,
            owed: order.owed,
            token_value: chosen.token,
            fee: chosen.fee,
            fee_payer: order.fee_payer.into(),
            locked: token.len(),
            amounts: token.into_iter().chain(change).collect(),
            inputs: chosen.inputs.iter().map(|&i| proofs[i].clone()).collect(),
            created_at: order.now,
            step: Step::Prepared,
        };
        // The record first: a crash before the reservation leaves a record whose inputs are
        // merely unreserved (the swap still spends them); the reverse would strand them.
        self.store.save(&record).await?;
        let ys = record
            .input_ys()
            .map_err(|e| PrepareError::Outputs(e.to_string()))?;
        self.store.reserve(&order.tag, ys).await?;
        Ok(Plan::of(&record))
    }

    /// Takes the attempt as far as it can go: the customer's token, an explicit failure, or
    /// unknown (run again later).
    pub async fn run(&self, tag: &str) -> Outcome {
        let record = match self.store.load(tag).await {
            Ok(Some(r)) => r,
            Ok(None) => return Outcome::Unknown(format!("no saga record for {tag}")),
            Err(e) => return Outcome::Unknown(e.to_string()),
        };
        match record.step.clone() {
            Step::Abandoned { reason } => Outcome::Failed(reason),
            Step::Swapped {
                token,
                change,
                wallet_updated,
            } => {
                if !wallet_updated {
                    if let Err(e) = self.settle_wallet(&record, token.clone(), change).await {
                        return Outcome::Unknown(e.to_string());
                    }
                }
                Outcome::Token {
                    proofs: token,
                    plan: Plan::of(&record),
                }
            }
            Step::Prepared => self.swap(record).await,
        }
    }

    async fn swap(&self, record: SagaRecord) -> Outcome {
        let outputs = match self.outputs(&record) {
            Ok(o) => o,
            Err(e) => return Outcome::Unknown(e),
        };
        let request = SwapRequest::new(
            record.inputs.clone(),
            outputs.iter().map(|o| o.blinded.clone()).collect(),
        );
        match self.mint.swap(request).await {
            Ok(signatures) => self.finish(record, &outputs, signatures).await,
            Err(MintFault::Spent) => self.recover(record, &outputs).await,
            // Nothing happened at the mint either way: the attempt is abandoned (its inputs
            // released) and the next one plans afresh, on the refreshed keysets if they moved.
            Err(MintFault::Refused(reason) | MintFault::StaleKeyset(reason)) => {
                self.abandon_with(
                    record,
                    format!("the mint refused the refund swap: {reason}"),
                )
                .await
            }
            Err(MintFault::Unreachable(reason)) => Outcome::Unknown(reason),
        }
    }

    /// The mint says our inputs are spent: either our own swap went through earlier (its
    /// signatures can be restored) or something else spent them.
    async fn recover(&self, record: SagaRecord, outputs: &[Output]) -> Outcome {
        let ys = match record.input_ys() {
            Ok(ys) => ys,
            Err(e) => return Outcome::Unknown(e.to_string()),
        };
        let states = match self.mint.check_state(ys.clone()).await {
            Ok(s) => s,
            Err(f) => return Outcome::Unknown(format!("checking our inputs: {f:?}")),
        };
        if states
            .iter()
            .any(|s| matches!(s, State::Pending | State::PendingSpent))
        {
            return Outcome::Unknown("the mint says our inputs are pending".into());
        }
        if states.iter().all(|s| *s == State::Unspent) {
            return Outcome::Unknown("the mint said spent, yet our inputs are unspent".into());
        }
        let restored = match self
            .mint
            .restore(outputs.iter().map(|o| o.blinded.clone()).collect())
            .await
        {
            Ok(r) => r,
            Err(f) => return Outcome::Unknown(format!("restoring our outputs: {f:?}")),
        };
        if restored.is_empty() {
            // The mint never signed our outputs: these inputs were spent by something else.
            let spent: Vec<PublicKey> = ys
                .iter()
                .zip(&states)
                .filter(|(_, s)| **s == State::Spent)
                .map(|(y, _)| *y)
                .collect();
            if let Err(e) = self
                .store
                .settle(&record.mint, &record.unit, Vec::new(), spent)
                .await
            {
                return Outcome::Unknown(e.to_string());
            }
            return self
                .abandon_with(record, "our inputs were spent elsewhere".into())
                .await;
        }
        let mut signatures = Vec::with_capacity(outputs.len());
        for o in outputs {
            match restored
                .iter()
                .find(|(b, _)| b.blinded_secret == o.blinded.blinded_secret)
            {
                Some((_, sig)) => signatures.push(sig.clone()),
                None => {
                    return Outcome::Unknown("the mint restored only part of our outputs".into())
                }
            }
        }
        self.finish(record, outputs, signatures).await
    }

    /// Unblinds the signatures, records the token, then moves the wallet on.
    async fn finish(
        &self,
        mut record: SagaRecord,
        outputs: &[Output],
        signatures: Vec<BlindSignature>,
    ) -> Outcome {
        let proofs = match unblind(self.mint, outputs, signatures).await {
            Ok(p) => p,
            Err(e) => return Outcome::Unknown(e),
        };
        let (token, change) = proofs.split_at(record.locked);
        record.step = Step::Swapped {
            token: token.to_vec(),
            change: change.to_vec(),
            wallet_updated: false,
        };
        if let Err(e) = self.store.save(&record).await {
            return Outcome::Unknown(e.to_string());
        }
        if let Err(e) = self
            .settle_wallet(&record, token.to_vec(), change.to_vec())
            .await
        {
            return Outcome::Unknown(e.to_string());
        }
        Outcome::Token {
            proofs: token.to_vec(),
            plan: Plan::of(&record),
        }
    }

    async fn settle_wallet(
        &self,
        record: &SagaRecord,
        token: Vec<Proof>,
        change: Vec<Proof>,
    ) -> Result<(), StoreFault> {
        let spent = record.input_ys().map_err(|e| StoreFault(e.to_string()))?;
        self.store
            .settle(&record.mint, &record.unit, change.clone(), spent)
            .await?;
        let mut done = record.clone();
        done.step = Step::Swapped {
            token,
            change,
            wallet_updated: true,
        };
        self.store.save(&done).await
    }

    fn outputs(&self, r: &SagaRecord) -> Result<Vec<Output>, String> {
        derive_outputs(
            self.seed,
            &r.tag,
            r.keyset,
            &r.amounts,
            r.locked,
            r.lock.as_ref(),
        )
        .map_err(|e| e.to_string())
    }

    async fn abandon_with(&self, mut record: SagaRecord, reason: String) -> Outcome {
        if let Err(e) = self.store.release(&record.tag).await {
            return Outcome::Unknown(e.to_string());
        }
        record.step = Step::Abandoned {
            reason: reason.clone(),
        };
        match self.store.save(&record).await {
            Ok(()) => Outcome::Failed(reason),
            Err(e) => Outcome::Unknown(e.to_string()),
        }
    }

    /// Gives up an attempt that was prepared but never run (its `refund_started` was not
    /// written): releases its inputs, after the mint confirms none of them is spent.
    pub async fn abandon(&self, tag: &str, reason: &str) -> Result<bool, String> {
        let Some(record) = self.store.load(tag).await.map_err(|e| e.to_string())? else {
            return Ok(false);
        };
        if !matches!(record.step, Step::Prepared) {
            return Ok(false);
        }
        let ys = record.input_ys().map_err(|e| e.to_string())?;
        let states = self
            .mint
            .check_state(ys)
            .await
            .map_err(|f| format!("{f:?}"))?;
        if states.iter().any(|s| *s != State::Unspent) {
            return Err("an input is no longer unspent; keeping the attempt".into());
        }
        match self.abandon_with(record, reason.to_owned()).await {
            Outcome::Failed(_) => Ok(true),
            other => Err(format!("{other:?}")),
        }
    }

    /// Whether the customer has claimed the token of a swapped attempt (all its proofs spent).
    pub async fn claimed(&self, tag: &str) -> Result<Option<bool>, String> {
        let Some(record) = self.store.load(tag).await.map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let Step::Swapped { token, .. } = record.step else {
            return Ok(None);
        };
        let ys = token
            .iter()
            .map(|p| p.y())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let states = self
            .mint
            .check_state(ys)
            .await
            .map_err(|f| format!("{f:?}"))?;
        Ok(Some(
            !states.is_empty() && states.iter().all(|s| *s == State::Spent),
        ))
    }
}

/// Checks each signature against its output (amount, keyset, DLEQ when given) and unblinds it.
pub(crate) async fn unblind(
    mint: &dyn MintPort,
    outputs: &[Output],
    signatures: Vec<BlindSignature>,
) -> Result<Vec<Proof>, String> {
    if signatures.len() != outputs.len() {
        return Err(format!(
            "{} signatures for {} outputs",
            signatures.len(),
            outputs.len()
        ));
    }
    let mut proofs = Vec::with_capacity(outputs.len());
    for (o, sig) in outputs.iter().zip(signatures) {
        if sig.amount != Amount::from(o.amount) || sig.keyset_id != o.blinded.keyset_id {
            return Err("a signature does not match its output".into());
        }
        let keys = mint
            .keyset(sig.keyset_id)
            .await
            .map_err(|f| format!("{f:?}"))?
            .keys;
        let key = keys
            .amount_key(sig.amount)
            .ok_or("no mint key for an amount")?;
        if sig.dleq.is_some() {
            sig.verify_dleq(key, o.blinded.blinded_secret)
                .map_err(|e| format!("the mint's DLEQ proof is invalid: {e}"))?;
        }
        let c = unblind_message(&sig.c, &o.r, &key).map_err(|e| e.to_string())?;
        let mut proof = Proof::new(sig.amount, sig.keyset_id, o.secret.clone(), c);
        proof.dleq = sig.dleq.map(|d| ProofDleq::new(d.e, d.s, o.r.clone()));
        proofs.push(proof);
    }
    Ok(proofs)
}
