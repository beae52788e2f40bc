//! cdk's recovery of its own half-done sagas, bounded. paydvm no longer starts cdk sagas (intake
//! and refunds run their own: `intake`, `refund::saga`), but wallets written by older versions
//! may hold some, such as refund sends with P2PK outputs cdk can never recover. Unbounded, such a
//! saga made every swap ask the mint to restore first: 121,073 `POST /v1/restore` against 721
//! swaps in one run. So recovery runs only when the store holds an incomplete saga for the
//! wallet's mint and unit, and after a failure it waits (doubling) before trying again. It
//! decides nothing for intake or refunds.

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
}
