//! How the node's Lightning wallet and trusted mints answer: probed at start and every
//! [`PROBE_EVERY`] (a wallet balance call; a mint's keysets), for `/readyz`, the status page and
//! the `paydvm_wallet_up` / `paydvm_mint_up` gauges.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use paydvm_mints::{MintRegistry, MintStatus, TrustedMint};
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::lightning::{LightningBackend, LightningError};
use crate::node::now_ms;
use crate::node::telemetry::Telemetry;

/// Time between two probe rounds.
pub const PROBE_EVERY: Duration = Duration::from_secs(30);
/// How long one probe may take before its backend counts as down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One backend as last probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendReport {
    /// `wallet:<backend>` or `mint:<url>`.
    pub name: String,
    /// `None`: not probed yet.
    pub up: Option<bool>,
    /// Why it is down (never a secret: backend errors do not carry keys).
    pub detail: String,
    /// Unix ms of the last probe (0: none yet).
    pub checked_at_ms: u64,
}

/// The last probe of each backend; shared by the prober (writer) and the handlers.
#[derive(Debug, Clone, Default)]
pub struct BackendBoard(Arc<Mutex<Vec<BackendReport>>>);

impl BackendBoard {
    pub fn snapshot(&self) -> Vec<BackendReport> {
        self.lock().clone()
    }

    fn set(&self, name: &str, up: bool, detail: String) {
        let mut reports = self.lock();
        let report = match reports.iter().position(|r| r.name == name) {
            Some(i) => &mut reports[i],
            None => {
                reports.push(BackendReport {
                    name: name.to_owned(),
                    up: None,
                    detail: String::new(),
                    checked_at_ms: 0,
                });
                reports.last_mut().expect("just pushed")
            }
        };
        report.up = Some(up);
        report.detail = detail;
        report.checked_at_ms = now_ms();
    }

    fn register(&self, name: String) {
        self.lock().push(BackendReport {
            name,
            up: None,
            detail: "not probed yet".to_owned(),
            checked_at_ms: 0,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<BackendReport>> {
        // Plain data: a panic elsewhere leaves it usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What to probe.
pub struct Probed {
    pub wallet: Option<Arc<dyn LightningBackend>>,
    pub mints: Vec<TrustedMint>,
    pub telemetry: Telemetry,
}

/// Starts the prober: one round now, then every [`PROBE_EVERY`]. Abort the handle to stop it.
pub fn start(board: BackendBoard, probed: Probed) -> JoinHandle<()> {
    if let Some(wallet) = &probed.wallet {
        board.register(format!("wallet:{}", wallet.name()));
    }
    for mint in &probed.mints {
        board.register(format!("mint:{}", mint.url));
    }
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PROBE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Some(wallet) = &probed.wallet {
                let (up, detail) = probe_wallet(wallet.as_ref()).await;
                probed.telemetry.wallet_up(wallet.name(), up);
                board.set(&format!("wallet:{}", wallet.name()), up, detail);
            }
            for mint in &probed.mints {
                let (up, detail) = probe_mint(mint).await;
                probed.telemetry.mint_up(&mint.url, up);
                board.set(&format!("mint:{}", mint.url), up, detail);
            }
        }
    })
}

/// A wallet is up when it answers a balance call; an NWC wallet that refuses the call answered
/// all the same (it may not grant `get_balance`).
async fn probe_wallet(wallet: &dyn LightningBackend) -> (bool, String) {
    match tokio::time::timeout(PROBE_TIMEOUT, wallet.balance()).await {
        Ok(Ok(_)) => (true, String::new()),
        Ok(Err(LightningError::Refused(_))) if wallet.name() == "nwc" => {
            (true, "answers (balance not granted)".to_owned())
        }
        Ok(Err(e)) => (false, e.to_string()),
        Err(_) => (
            false,
            format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
        ),
    }
}

/// A mint is up when it serves its keysets.
async fn probe_mint(mint: &TrustedMint) -> (bool, String) {
    let mut registry = MintRegistry::new(vec![mint.clone()]);
    match tokio::time::timeout(PROBE_TIMEOUT, registry.refresh_all()).await {
        Err(_) => (
            false,
            format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
        ),
        Ok(()) => match registry.status(&mint.url) {
            MintStatus::Up { .. } => (true, String::new()),
            MintStatus::Down { reason } => (false, reason),
            MintStatus::Unknown => (false, "no answer".to_owned()),
        },
    }
}
