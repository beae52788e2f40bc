//! Ecash refunds: a token from our wallet at one mint, made by our own saga (see [`saga`]) so
//! that after a crash or a concurrent wallet operation the mint's own answers — not a shared
//! library's recovery — decide what happened. One attempt (`tag`) makes at most one token: its
//! outputs are derived from the tag, so a swap that went through before a crash is restored
//! (NUT-09), never made again.

pub mod outputs;
pub mod ports;
pub mod record;
pub mod saga;
#[cfg(test)]
mod saga_tests;
pub mod select;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
#[cfg(test)]
mod store_tests;

use std::collections::HashMap;
use std::sync::Arc;

use cdk::nuts::Proof;
use tokio::sync::Mutex;

pub use outputs::lock_key;
pub use record::SagaRecord;
pub use saga::{Outcome, Plan, PrepareError};
pub use select::FeePayer;

use crate::redeem::Redeemer;
use ports::{CdkMint, CdkStore};
use record::Step;
use saga::{Order, Saga};

/// A refund token, ready to hand over.
#[derive(Clone, PartialEq, Eq)]
pub struct RefundToken {
    /// The token as a `cashuB` string (a bearer secret unless locked).
    pub token: String,
    /// Each proof as JSON, for NutZap `proof` tags.
    pub proofs: Vec<String>,
    pub plan: Plan,
}

impl std::fmt::Debug for RefundToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefundToken")
            .field("proofs", &self.proofs.len())
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

/// What one refund attempt asks for.
#[derive(Debug, Clone)]
pub struct RefundRequest<'a> {
    pub tag: &'a str,
    pub mint: &'a str,
    pub unit: &'a str,
    pub owed: u64,
    /// The customer's key (x-only or compressed hex) for a locked NutZap; none for a message.
    pub lock: Option<&'a str>,
    pub fee_payer: FeePayer,
    /// Unix seconds.
    pub now: u64,
}

/// What running an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundRun {
    Token(RefundToken),
    /// Explicitly failed: nothing went to the customer; a new attempt may follow.
    Failed(String),
    /// Cannot tell yet: run it again later.
    Unknown(String),
}

/// One lock per (mint, unit): choosing inputs and swapping them happen one refund at a time, so
/// two refunds never pick the same proofs. Incoming swaps do not take it.
#[derive(Default)]
pub(crate) struct RefundLocks(Mutex<HashMap<MintUnit, Arc<Mutex<()>>>>);

/// A mint's URL and a unit on it.
type MintUnit = (String, String);

impl RefundLocks {
    async fn of(&self, mint: &str, unit: &str) -> Arc<Mutex<()>> {
        let mut locks = self.0.lock().await;
        Arc::clone(locks.entry((mint.to_owned(), unit.to_owned())).or_default())
    }
}

/// A saga over cdk: the wallet's connector, the wallet store, our seed.
struct SagaParts {
    mint: CdkMint,
    store: CdkStore,
    seed: [u8; 64],
}

impl SagaParts {
    fn saga(&self) -> Saga<'_> {
        Saga {
            mint: &self.mint,
            store: &self.store,
            seed: &self.seed,
        }
    }
}

fn proofs_json(proofs: &[Proof]) -> Result<Vec<String>, String> {
    proofs
        .iter()
        .map(|p| serde_json::to_string(p).map_err(|e| e.to_string()))
        .collect()
}

impl Redeemer {
    /// Prepares attempt `tag` once: chooses and reserves the inputs and records the plan (what
    /// the customer's token will be worth and the mint's fee). Sends nothing to be swapped.
    pub async fn prepare_refund(&self, req: &RefundRequest<'_>) -> Result<Plan, PrepareError> {
        let lock = req
            .lock
            .map(lock_key)
            .transpose()
            .map_err(|e| PrepareError::Outputs(e.to_string()))?;
        let wallet = self
            .wallet(req.mint, req.unit)
            .await
            .map_err(|e| PrepareError::Outputs(e.to_string()))?;
        let guard = self.refund_locks.of(req.mint, req.unit).await;
        let _held = guard.lock().await;
        let parts = self.saga_parts(wallet.clone());
        let saga = parts.saga();
        saga.prepare(&Order {
            tag: req.tag.to_owned(),
            mint: req.mint.to_owned(),
            unit: req.unit.to_owned(),
            owed: req.owed,
            lock,
            fee_payer: req.fee_payer,
            now: req.now,
        })
        .await
    }

    /// Runs a prepared attempt: its token (made now, or found again), or why not.
    pub async fn run_refund(&self, tag: &str) -> RefundRun {
        let record = match self.refund_record(tag).await {
            Ok(Some(r)) => r,
            Ok(None) => return RefundRun::Unknown(format!("no record of refund attempt {tag}")),
            Err(e) => return RefundRun::Unknown(e),
        };
        let wallet = match self.wallet(&record.mint, &record.unit).await {
            Ok(w) => w,
            Err(e) => return RefundRun::Unknown(e.to_string()),
        };
        let guard = self.refund_locks.of(&record.mint, &record.unit).await;
        let _held = guard.lock().await;
        let parts = self.saga_parts(wallet.clone());
        let saga = parts.saga();
        match saga.run(tag).await {
            Outcome::Token { proofs, plan } => {
                let token = cdk::nuts::Token::new(
                    wallet.mint_url.clone(),
                    proofs.clone(),
                    None,
                    wallet.unit.clone(),
                );
                match proofs_json(&proofs) {
                    Ok(json) => RefundRun::Token(RefundToken {
                        token: token.to_string(),
                        proofs: json,
                        plan,
                    }),
                    Err(e) => RefundRun::Unknown(e),
                }
            }
            Outcome::Failed(reason) => RefundRun::Failed(reason),
            Outcome::Unknown(reason) => RefundRun::Unknown(reason),
        }
    }

    /// Releases an attempt that was prepared but will never run. `Ok(false)`: nothing to release.
    pub async fn abandon_refund(&self, tag: &str, reason: &str) -> Result<bool, String> {
        let Some(record) = self.refund_record(tag).await? else {
            return Ok(false);
        };
        let wallet = self
            .wallet(&record.mint, &record.unit)
            .await
            .map_err(|e| e.to_string())?;
        let guard = self.refund_locks.of(&record.mint, &record.unit).await;
        let _held = guard.lock().await;
        let parts = self.saga_parts(wallet.clone());
        let saga = parts.saga();
        saga.abandon(tag, reason).await
    }

    /// Whether the customer has claimed a made token at the mint (`None`: no token was made).
    pub async fn refund_claimed(&self, tag: &str) -> Result<Option<bool>, String> {
        let Some(record) = self.refund_record(tag).await? else {
            return Ok(None);
        };
        let wallet = self
            .wallet(&record.mint, &record.unit)
            .await
            .map_err(|e| e.to_string())?;
        let parts = self.saga_parts(wallet.clone());
        let saga = parts.saga();
        saga.claimed(tag).await
    }

    /// Tags of attempts prepared but not run (for the node to abandon the ones it never started).
    pub async fn prepared_refunds(&self) -> Result<Vec<String>, String> {
        let records = ports::SagaStore::list(&CdkStore(Arc::clone(self.store())))
            .await
            .map_err(|e| e.to_string())?;
        Ok(records
            .into_iter()
            .filter(|r| matches!(r.step, Step::Prepared))
            .map(|r| r.tag)
            .collect())
    }

    fn saga_parts(&self, wallet: cdk::wallet::Wallet) -> SagaParts {
        SagaParts {
            mint: CdkMint(wallet),
            store: CdkStore(Arc::clone(self.store())),
            seed: self.seed(),
        }
    }

    async fn refund_record(&self, tag: &str) -> Result<Option<SagaRecord>, String> {
        ports::SagaStore::load(&CdkStore(Arc::clone(self.store())), tag)
            .await
            .map_err(|e| e.to_string())
    }
}
