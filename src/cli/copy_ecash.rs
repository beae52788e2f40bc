//! The ecash that goes with a ledger `paydvm ledger copy` moves: the Cashu wallet (the proofs
//! the node holds, with its intake plans and refund sagas) and the NutZaps and tokens verified but
//! not yet credited (the pending swaps). Beside a ledger file they are files; with a PostgreSQL
//! ledger they are in its database (`node::ecash_store`). A ledger copied without them would say
//! the node holds ecash its new place cannot spend or refund.
//!
//! Both ends are checked before the ledger is copied: the destination must hold no ecash (a copy
//! never merges two wallets). The source is only read; a node must not run on it again, since
//! its proofs are then in two places.

use std::sync::Arc;

use anyhow::{bail, Context};
use paydvm_mints::pending::{copy_rows, rows_held};
use paydvm_mints::wallet_copy::{copy_wallet, wallet_is_empty, WalletCopied};
use paydvm_mints::{PendingRows, WalletStore};
use tokio::runtime::Runtime;

use crate::config::LedgerPlace;
use crate::node::ecash_store::EcashStore;

/// A copy checked and ready to run once the ledger is copied.
pub(super) struct EcashCopy {
    from: EcashStore,
    to: EcashStore,
    wallet: Option<WalletStore>,
    pending: Option<Arc<dyn PendingRows>>,
    runtime: Runtime,
}

/// The ecash beside the ledger at `from` to copy beside `to`; `None` if there is none.
pub(super) fn beside(from: &LedgerPlace, to: &LedgerPlace) -> anyhow::Result<Option<EcashCopy>> {
    prepare(EcashStore::beside(from)?, EcashStore::beside(to)?)
}

/// The ecash in `from` to copy into `to`; `None` if there is none. Fails if the destination
/// already holds some.
pub(super) fn prepare(from: EcashStore, to: EcashStore) -> anyhow::Result<Option<EcashCopy>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let wallet = runtime
        .block_on(from.existing_wallet())
        .with_context(|| format!("reading the Cashu wallet {}", from.shown()))?;
    let pending = from.pending_if_any()?;
    if wallet.is_none() && pending.is_none() {
        return Ok(None);
    }
    let held = runtime.block_on(async {
        match to.existing_wallet().await? {
            Some(w) => Ok::<_, anyhow::Error>(!wallet_is_empty(w.as_ref()).await?),
            None => Ok(false),
        }
    });
    if held.with_context(|| format!("reading the destination's wallet {}", to.shown()))? {
        bail!(
            "{} already holds ecash; a copy never merges two wallets",
            to.shown()
        );
    }
    if let Some(pending) = to.pending_if_any()? {
        let rows = rows_held(pending.as_ref())?;
        if rows > 0 {
            bail!(
                "the destination already holds {rows} pending swaps, deferred events or given-up \
                 requests"
            );
        }
    }
    Ok(Some(EcashCopy {
        from,
        to,
        wallet,
        pending,
        runtime,
    }))
}

impl EcashCopy {
    /// Copies the wallet and the pending swaps, each read back from both ends; what was copied,
    /// for the operator (amounts and counts, never a proof).
    pub(super) fn run(self) -> anyhow::Result<String> {
        let mut said = Vec::new();
        if let Some(wallet) = &self.wallet {
            let dest = self.runtime.block_on(self.to.wallet_store())?;
            let copied = self
                .runtime
                .block_on(copy_wallet(wallet.as_ref(), dest.as_ref()))
                .with_context(|| format!("copying {} to {}", self.from.shown(), self.to.shown()))?;
            said.push(wallet_line(&copied));
        }
        if let Some(pending) = &self.pending {
            let n = copy_rows(pending.as_ref(), self.to.pending()?.as_ref())
                .context("copying the pending swaps")?;
            said.push(format!(
                "copied {} pending swaps and {} deferred events ({} requests remembered as given \
                 up); both ends read back the same",
                n.swaps, n.deferred, n.given_up
            ));
        }
        said.push(format!(
            "the ecash is now also in {}: run no node on the source's ecash again (its proofs \
             would be spent from two places)",
            self.to.shown()
        ));
        Ok(said.join("\n") + "\n")
    }
}

fn wallet_line(c: &WalletCopied) -> String {
    let held: Vec<String> = c
        .holdings
        .iter()
        .map(|h| format!("{} {} at {}", h.amount, h.unit, h.mint))
        .collect();
    let held = if held.is_empty() {
        "nothing unspent".to_owned()
    } else {
        held.join(", ")
    };
    format!(
        "copied the Cashu wallet: {} proofs ({held}), {} mints, {} keysets, {} records of \
         intakes and refunds; both ends read back the same",
        c.proofs, c.mints, c.keysets, c.records
    )
}
