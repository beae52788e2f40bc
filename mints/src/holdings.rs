//! What the node's cdk wallet store holds, per mint and unit, read straight from the store: no
//! mint is contacted and nothing is written (for `paydvm reconcile`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use cdk::cdk_database::WalletDatabase;
use cdk::nuts::{CurrencyUnit, State};

use crate::redeem::RedeemError;
use crate::url::normalise_mint_url;

/// Unspent ecash at one mint in one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// Normalised like the ledger's `asset:mint:<url>`.
    pub mint: String,
    /// Lowercase NUT-01 unit name ("sat", "msat").
    pub unit: String,
    pub amount: u64,
}

/// Unspent proofs in the wallet store at `path`, summed per (mint, unit). A store that does not
/// exist holds nothing (and is not created).
pub async fn wallet_holdings(path: &Path) -> Result<Vec<Holding>, RedeemError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let store = crate::redeem::sqlite_store(path).await?;
    store_holdings(&store, &path.display().to_string()).await
}

/// Unspent proofs in an open wallet store, summed per (mint, unit); `shown` names the store in
/// errors.
pub async fn store_holdings(
    store: &dyn WalletDatabase<cdk::cdk_database::Error>,
    shown: &str,
) -> Result<Vec<Holding>, RedeemError> {
    let store_err = |reason: String| RedeemError::Store {
        path: shown.to_owned(),
        reason,
    };
    // Per mint and keyset unit, the store's own unspent sum (what cdk's `total_balance` reads).
    let mints = store
        .get_mints()
        .await
        .map_err(|e| store_err(e.to_string()))?;
    let mut sums: BTreeMap<(String, String), u64> = BTreeMap::new();
    for mint in mints.into_keys() {
        let keysets = store
            .get_mint_keysets(mint.clone())
            .await
            .map_err(|e| store_err(e.to_string()))?
            .unwrap_or_default();
        let units: BTreeSet<CurrencyUnit> = keysets.into_iter().map(|k| k.unit).collect();
        for unit in units {
            let amount = store
                .get_balance(
                    Some(mint.clone()),
                    Some(unit.clone()),
                    Some(vec![State::Unspent]),
                )
                .await
                .map_err(|e| store_err(e.to_string()))?;
            if amount > 0 {
                let key = (
                    normalise_mint_url(&mint.to_string()),
                    unit.to_string().to_ascii_lowercase(),
                );
                let sum = sums.entry(key).or_default();
                *sum = sum
                    .checked_add(amount)
                    .ok_or_else(|| store_err("unspent total overflows u64".into()))?;
            }
        }
    }
    Ok(sums
        .into_iter()
        .map(|((mint, unit), amount)| Holding { mint, unit, amount })
        .collect())
}
