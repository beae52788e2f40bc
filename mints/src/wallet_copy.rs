//! Copying the node's Cashu wallet from one store to another when its ledger moves (`paydvm
//! ledger copy`: a wallet file beside an SQLite ledger into the ledger's PostgreSQL database, or
//! back). Copied through cdk's store interface, so both ends keep their own SQL: the mints with
//! their keysets, keys and counters; every proof with its state (unspent, reserved, pending) and
//! the operation holding it; the node's intake plans and refund sagas (its key-value records);
//! cdk's transactions, unfinished sagas and P2PK keys. Then both ends are read back and compared.
//!
//! The destination must hold nothing yet: a copy never merges two wallets, because proofs known
//! to two stores could be spent twice by two nodes.

use std::collections::BTreeMap;

use cdk::cdk_database::WalletDatabase;
use cdk::nuts::KeySet;

use crate::holdings::{store_holdings, Holding};
use crate::refund::record::NAMESPACE;

/// The key-value spaces the node writes (`refund::ports`): refund sagas and intake plans.
const KV_SPACES: [(&str, &str); 2] = [
    (NAMESPACE, crate::refund::record::SUB_NAMESPACE),
    (NAMESPACE, crate::refund::ports::INTAKE_NAMESPACE),
];

type Store = dyn WalletDatabase<cdk::cdk_database::Error> + Send + Sync;

#[derive(Debug, thiserror::Error)]
pub enum WalletCopyError {
    #[error("the destination wallet is not empty ({0}); a copy never merges two wallets")]
    NotEmpty(String),
    #[error("reading the source wallet: {0}")]
    Read(String),
    #[error("writing the destination wallet: {0}")]
    Write(String),
    #[error("the copied wallet differs from the source: {0}")]
    Differs(String),
}

/// What a copy moved: counts, and the unspent amounts per (mint, unit) found at both ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletCopied {
    pub mints: usize,
    pub keysets: usize,
    pub proofs: usize,
    pub records: usize,
    pub holdings: Vec<Holding>,
}

fn read(e: impl std::fmt::Display) -> WalletCopyError {
    WalletCopyError::Read(e.to_string())
}

fn write(e: impl std::fmt::Display) -> WalletCopyError {
    WalletCopyError::Write(e.to_string())
}

/// What a store holds, as comparable values: proofs by Y, records by space and key, keysets and
/// counters by id.
#[derive(Debug, PartialEq, Eq, Default)]
struct Contents {
    proofs: BTreeMap<String, String>,
    records: BTreeMap<(String, String, String), Vec<u8>>,
    keysets: BTreeMap<String, (String, u32)>,
    sagas: usize,
    transactions: usize,
}

impl Contents {
    fn is_empty(&self) -> bool {
        self.proofs.is_empty() && self.records.is_empty() && self.sagas == 0
    }

    /// The first difference, named for the operator.
    fn difference(&self, other: &Contents) -> Option<String> {
        let differs = |what: &str, a: usize, b: usize| Some(format!("{what}: {a} against {b}"));
        if self.proofs != other.proofs {
            return differs("proofs", self.proofs.len(), other.proofs.len());
        }
        if self.records != other.records {
            return differs("records", self.records.len(), other.records.len());
        }
        if self.keysets != other.keysets {
            return differs("keysets", self.keysets.len(), other.keysets.len());
        }
        if self.sagas != other.sagas {
            return differs("unfinished sagas", self.sagas, other.sagas);
        }
        if self.transactions != other.transactions {
            return differs("transactions", self.transactions, other.transactions);
        }
        None
    }
}

async fn contents(store: &Store) -> Result<Contents, String> {
    let e = |e: cdk::cdk_database::Error| e.to_string();
    let mut c = Contents::default();
    for p in store.get_proofs(None, None, None, None).await.map_err(e)? {
        // The whole record: proof, mint, unit, state and the operations holding it.
        let shown = serde_json::to_string(&p).map_err(|e| e.to_string())?;
        c.proofs.insert(p.y.to_hex(), shown);
    }
    for (space, sub) in KV_SPACES {
        for key in store.kv_list(space, sub).await.map_err(e)? {
            let value = store.kv_read(space, sub, &key).await.map_err(e)?;
            let at = (space.to_owned(), sub.to_owned(), key);
            c.records.insert(at, value.unwrap_or_default());
        }
    }
    for mint in store.get_mints().await.map_err(e)?.into_keys() {
        for k in store
            .get_mint_keysets(mint.clone())
            .await
            .map_err(e)?
            .unwrap_or_default()
        {
            let counter = store.increment_keyset_counter(&k.id, 0).await.map_err(e)?;
            c.keysets
                .insert(k.id.to_string(), (mint.to_string(), counter));
        }
    }
    c.sagas = store.get_incomplete_sagas().await.map_err(e)?.len();
    c.transactions = store
        .list_transactions(None, None, None)
        .await
        .map_err(e)?
        .len();
    Ok(c)
}

/// Whether a store holds no proofs, records or unfinished sagas (a wallet the node opened but
/// never used may hold a mint's keysets: those do not count).
pub async fn wallet_is_empty(store: &Store) -> Result<bool, WalletCopyError> {
    Ok(contents(store).await.map_err(read)?.is_empty())
}

/// Copies everything `from` holds into `to`, which must be empty, and compares the two.
pub async fn copy_wallet(from: &Store, to: &Store) -> Result<WalletCopied, WalletCopyError> {
    if !wallet_is_empty(to).await? {
        return Err(WalletCopyError::NotEmpty(
            "it holds proofs or records".into(),
        ));
    }
    let (mints, keysets) = copy_mints(from, to).await?;
    let proofs = from
        .get_proofs(None, None, None, None)
        .await
        .map_err(read)?;
    let copied_proofs = proofs.len();
    to.update_proofs(proofs, Vec::new()).await.map_err(write)?;
    let records = copy_records(from, to).await?;
    copy_cdk_history(from, to).await?;
    let (a, b) = (
        contents(from).await.map_err(read)?,
        contents(to).await.map_err(read)?,
    );
    if let Some(d) = a.difference(&b) {
        return Err(WalletCopyError::Differs(d));
    }
    let held = store_holdings(from, "the source").await.map_err(read)?;
    if held != store_holdings(to, "the copy").await.map_err(read)? {
        return Err(WalletCopyError::Differs("the unspent amounts".into()));
    }
    Ok(WalletCopied {
        mints,
        keysets,
        proofs: copied_proofs,
        records,
        holdings: held,
    })
}

/// The mints, each with its keysets, their keys and their counters.
async fn copy_mints(from: &Store, to: &Store) -> Result<(usize, usize), WalletCopyError> {
    let mints = from.get_mints().await.map_err(read)?;
    let mut keysets = 0;
    for (mint, info) in &mints {
        to.add_mint(mint.clone(), info.clone())
            .await
            .map_err(write)?;
        let infos = from.get_mint_keysets(mint.clone()).await.map_err(read)?;
        let infos = infos.unwrap_or_default();
        to.add_mint_keysets(mint.clone(), infos.clone())
            .await
            .map_err(write)?;
        for info in infos {
            if let Some(keys) = from.get_keys(&info.id).await.map_err(read)? {
                let keyset = KeySet {
                    id: info.id,
                    unit: info.unit.clone(),
                    active: Some(info.active),
                    keys,
                    input_fee_ppk: info.input_fee_ppk,
                    final_expiry: info.final_expiry,
                };
                to.add_keys(keyset).await.map_err(write)?;
            }
            let counter = from
                .increment_keyset_counter(&info.id, 0)
                .await
                .map_err(read)?;
            to.increment_keyset_counter(&info.id, counter)
                .await
                .map_err(write)?;
            keysets += 1;
        }
    }
    Ok((mints.len(), keysets))
}

/// The node's own records: refund sagas and intake plans.
async fn copy_records(from: &Store, to: &Store) -> Result<usize, WalletCopyError> {
    let mut n = 0;
    for (space, sub) in KV_SPACES {
        for key in from.kv_list(space, sub).await.map_err(read)? {
            if let Some(value) = from.kv_read(space, sub, &key).await.map_err(read)? {
                to.kv_write(space, sub, &key, &value).await.map_err(write)?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// cdk's own: its transactions, unfinished sagas (wallets from older versions may hold some)
/// and P2PK keys.
async fn copy_cdk_history(from: &Store, to: &Store) -> Result<(), WalletCopyError> {
    for t in from
        .list_transactions(None, None, None)
        .await
        .map_err(read)?
    {
        to.add_transaction(t).await.map_err(write)?;
    }
    for saga in from.get_incomplete_sagas().await.map_err(read)? {
        to.add_saga(saga).await.map_err(write)?;
    }
    for key in from.list_p2pk_keys().await.map_err(read)? {
        to.add_p2pk_key(
            &key.pubkey,
            key.derivation_path.clone(),
            key.derivation_index,
        )
        .await
        .map_err(write)?;
    }
    Ok(())
}
