//! cdk's recovery of its own half-done sagas, bounded: it runs only when the store holds an
//! incomplete saga for the wallet's mint and unit, and after a failure it waits (doubling) before
//! trying again. Unbounded, one saga cdk could never recover made every later swap ask the mint
//! to restore first: 121,073 `POST /v1/restore` against 721 swaps in one run.
//!
//! Recovery never holds up a swap. Only an unfinished incoming swap (a `receive` saga) changes
//! what a swap concludes: while one is left, "the mint says these proofs are spent" may mean
//! "we swapped them earlier", so the NutZap is retried later instead of refused. Leftovers of
//! other kinds (sends made by older versions for refunds, which cdk cannot recover) change
//! nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cdk::cdk_database::WalletDatabase;
use cdk::wallet::types::WalletSaga;
use cdk::wallet::Wallet;
use tokio::sync::Mutex;

const FIRST_WAIT: Duration = Duration::from_secs(5);
const MAX_WAIT: Duration = Duration::from_secs(600);

type Store = Arc<dyn WalletDatabase<cdk::cdk_database::Error> + Send + Sync>;

#[derive(Default)]
pub(crate) struct RecoveryGate(Mutex<GateState>);

#[derive(Default)]
struct GateState {
    /// No attempt before this.
    not_before: Option<Instant>,
    wait: Option<Duration>,
}

fn is_receive(saga: &WalletSaga) -> bool {
    matches!(saga.state, cdk::wallet::types::WalletSagaState::Receive(_))
}

async fn incomplete(wallet: &Wallet, store: &Store) -> Result<Vec<WalletSaga>, String> {
    Ok(store
        .get_incomplete_sagas()
        .await
        .map_err(|e| format!("reading the wallet's sagas: {e}"))?
        .into_iter()
        .filter(|s| s.mint_url == wallet.mint_url && s.unit == wallet.unit)
        .collect())
}

impl RecoveryGate {
    /// Recovers the wallet's incomplete sagas if there are any and the back-off allows.
    pub(crate) async fn recover(&self, wallet: &Wallet, store: &Store) {
        let pending = match incomplete(wallet, store).await {
            Ok(p) => p,
            Err(e) => return tracing::warn!("{e}"),
        };
        if pending.is_empty() {
            return;
        }
        let mut gate = self.0.lock().await;
        if gate.not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let report = wallet.recover_incomplete_sagas().await;
        let left = incomplete(wallet, store)
            .await
            .map(|l| l.len())
            .unwrap_or(usize::MAX);
        if left == 0 {
            *gate = GateState::default();
            return;
        }
        let wait = gate.wait.map_or(FIRST_WAIT, |w| (w * 2).min(MAX_WAIT));
        gate.wait = Some(wait);
        gate.not_before = Some(Instant::now() + wait);
        tracing::warn!(
            ?report,
            left,
            ?wait,
            "wallet sagas left unrecovered; trying again later"
        );
    }

    /// Whether an incoming swap at the wallet's mint is still unfinished: until it is, "the
    /// mint says these proofs are spent" may mean "we swapped them and have not recorded it".
    pub(crate) async fn receive_unfinished(&self, wallet: &Wallet, store: &Store) -> bool {
        incomplete(wallet, store)
            .await
            .map_or(true, |sagas| sagas.iter().any(is_receive))
    }
}
