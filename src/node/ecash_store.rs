//! Where the node keeps its ecash: the Cashu wallet (cdk's store of the proofs it received) and
//! the NutZaps and tokens verified but not yet credited (the pending swaps).
//!
//! Beside a ledger file they are files (`<ledger>.cashu-wallet`, `<ledger>.cashu-pending`). With
//! the ledger on PostgreSQL they are in the same database (the wallet in schema
//! `paydvm_cashu_wallet`, the pending swaps in `cashu_pending_swaps`), so a standby on another
//! machine that takes over the ledger takes over the ecash with it. A node whose `state_dir`
//! already holds a wallet file from before keeps using its files (it is not moved: see
//! `docs/postgres.md`), and says so at start.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use paydvm_ledger_pg::cashu_wallet::{self, WALLET_SCHEMA};
use paydvm_ledger_pg::pending_swaps::{DeferredEventRow, PendingRow, PgPendingSwaps, Rows};
use paydvm_ledger_pg::{PgError, PgLocation};
use paydvm_mints::pending::{back_off_delay, decode_row, nutzap_body, PendingError};
use paydvm_mints::{
    DeferredRow, Holding, PendingRows, PendingSwap, PendingSwaps, ReceiveKey, Redeemer,
    VerifiedNutZap, WalletStore,
};

use crate::config::{self, LedgerPlace};

pub enum EcashStore {
    /// Files beside the ledger file, or in a PostgreSQL node's `state_dir` from before.
    Files { wallet: PathBuf, pending: PathBuf },
    /// The ledger's PostgreSQL database.
    Database(Box<PgLocation>),
}

impl EcashStore {
    /// The node's: in its ledger's database, unless a wallet file from before is in its
    /// `state_dir`.
    pub fn of(node: &config::Node) -> anyhow::Result<EcashStore> {
        let base = node.local_base();
        let files = EcashStore::Files {
            wallet: config::wallet_path(&base),
            pending: config::pending_path(&base),
        };
        match &node.ledger {
            LedgerPlace::File(_) => Ok(files),
            LedgerPlace::Postgres(_) if config::wallet_path(&base).exists() => Ok(files),
            LedgerPlace::Postgres(url) => Ok(EcashStore::Database(Box::new(
                url.location().context("node.ledger")?,
            ))),
        }
    }

    /// The ecash that goes with a ledger at `place` (`paydvm ledger copy`): the files beside a
    /// ledger file, or the ledger's database.
    pub fn beside(place: &LedgerPlace) -> anyhow::Result<EcashStore> {
        Ok(match place {
            LedgerPlace::File(path) => EcashStore::Files {
                wallet: config::wallet_path(path),
                pending: config::pending_path(path),
            },
            LedgerPlace::Postgres(url) => {
                EcashStore::Database(Box::new(url.location().context("the ledger's URL")?))
            }
        })
    }

    /// The wallet store if one was ever made (nothing is created).
    pub async fn existing_wallet(&self) -> anyhow::Result<Option<WalletStore>> {
        let exists = match self {
            EcashStore::Files { wallet, .. } => wallet.exists(),
            EcashStore::Database(location) => {
                cashu_wallet::wallet_exists(location, WALLET_SCHEMA).await?
            }
        };
        match exists {
            true => self.wallet_store().await.map(Some),
            false => Ok(None),
        }
    }

    /// The wallet store, created if it is not there yet.
    pub async fn wallet_store(&self) -> anyhow::Result<WalletStore> {
        let store: WalletStore = match self {
            EcashStore::Files { wallet, .. } => paydvm_mints::redeem::wallet_file(wallet).await?,
            EcashStore::Database(location) => Arc::new(
                cashu_wallet::open_wallet(location, WALLET_SCHEMA)
                    .await
                    .with_context(|| format!("opening the Cashu wallet in {}", self.shown()))?,
            ),
        };
        Ok(store)
    }

    /// Where it is, without secrets (for logs and errors).
    pub fn shown(&self) -> String {
        match self {
            EcashStore::Files { wallet, .. } => wallet.display().to_string(),
            EcashStore::Database(location) => {
                format!("schema {WALLET_SCHEMA} of {location}")
            }
        }
    }

    /// Whether a standby on another machine can take the ecash over (it is in the database).
    pub fn is_shared(&self) -> bool {
        matches!(self, EcashStore::Database(_))
    }

    /// The wallet, created if it is not there yet.
    pub async fn redeemer(&self, key: ReceiveKey) -> anyhow::Result<Redeemer> {
        Ok(Redeemer::on_store(self.wallet_store().await?, key))
    }

    /// The pending swaps, created if they are not there yet (blocking: call from a blocking
    /// context or before the rails start).
    pub fn pending(&self) -> anyhow::Result<Arc<dyn PendingRows>> {
        match self {
            EcashStore::Files { pending, .. } => Ok(Arc::new(
                PendingSwaps::open(pending)
                    .with_context(|| format!("opening {}", pending.display()))?,
            )),
            EcashStore::Database(location) => Ok(Arc::new(PgPending(
                PgPendingSwaps::open(location)
                    .with_context(|| format!("opening the pending swaps in {location}"))?,
            ))),
        }
    }

    /// Unspent proofs per (mint, unit); nothing if no wallet was ever made (none is made here).
    pub async fn holdings(&self) -> anyhow::Result<Vec<Holding>> {
        let shown = self.shown();
        match self {
            EcashStore::Files { wallet, .. } => Ok(paydvm_mints::wallet_holdings(wallet).await?),
            EcashStore::Database(_) => match self.existing_wallet().await? {
                Some(store) => Ok(paydvm_mints::store_holdings(store.as_ref(), &shown).await?),
                None => Ok(Vec::new()),
            },
        }
    }

    /// The pending swaps if any were ever recorded (none are created here).
    pub fn pending_if_any(&self) -> anyhow::Result<Option<Arc<dyn PendingRows>>> {
        match self {
            EcashStore::Files { pending, .. } if !pending.exists() => Ok(None),
            EcashStore::Files { .. } => self.pending().map(Some),
            EcashStore::Database(location) => Ok(PgPendingSwaps::open_existing(location)
                .with_context(|| format!("reading the pending swaps in {location}"))?
                .map(|p| Arc::new(PgPending(p)) as Arc<dyn PendingRows>)),
        }
    }
}

/// The pending swaps in PostgreSQL, read and written as the file store's rows.
struct PgPending(PgPendingSwaps);

fn db(e: PgError) -> PendingError {
    PendingError::Database(Box::new(e))
}

fn swap(row: PendingRow) -> Result<PendingSwap, PendingError> {
    decode_row(
        row.event_id,
        &row.nutzap,
        row.received,
        row.fee,
        row.attempts,
        row.next_try_ms,
    )
}

impl PendingRows for PgPending {
    fn insert(&self, nutzap: &VerifiedNutZap, now_ms: u64) -> Result<bool, PendingError> {
        let body = nutzap_body(nutzap)?;
        self.0.insert(&nutzap.event_id, &body, now_ms).map_err(db)
    }

    fn mark_swapped(&self, event_id: &str, received: u64, fee: u64) -> Result<(), PendingError> {
        self.0.mark_swapped(event_id, received, fee).map_err(db)
    }

    fn back_off(&self, event_id: &str, now_ms: u64) -> Result<u64, PendingError> {
        let attempts = self.0.attempts(event_id).map_err(db)?;
        let next = now_ms.saturating_add(back_off_delay(attempts));
        self.0.failed_attempt(event_id, next).map_err(db)?;
        Ok(next)
    }

    fn remove(&self, event_id: &str) -> Result<(), PendingError> {
        self.0.remove(event_id).map_err(db)
    }

    fn get(&self, event_id: &str) -> Result<Option<PendingSwap>, PendingError> {
        let mut rows = self.0.rows(Rows::One(event_id)).map_err(db)?;
        rows.pop().map(swap).transpose()
    }

    fn due(&self, now_ms: u64) -> Result<Vec<PendingSwap>, PendingError> {
        let rows = self.0.rows(Rows::DueAt(now_ms)).map_err(db)?;
        rows.into_iter().map(swap).collect()
    }

    fn all(&self) -> Result<Vec<PendingSwap>, PendingError> {
        let rows = self.0.rows(Rows::All).map_err(db)?;
        rows.into_iter().map(swap).collect()
    }

    fn keep_deferred(&self, row: &DeferredRow) -> Result<(), PendingError> {
        let row = DeferredEventRow {
            event_id: row.event_id.clone(),
            event: row.event.clone(),
            tries: row.tries,
            next_try_ms: row.next_try_ms,
            first_ms: row.first_ms,
        };
        self.0.keep_deferred(&row).map_err(db)
    }

    fn forget_deferred(&self, event_id: &str) -> Result<(), PendingError> {
        self.0.forget_deferred(event_id).map_err(db)
    }

    fn give_up_deferred(&self, event_id: &str, now_ms: u64) -> Result<(), PendingError> {
        let forget = (
            now_ms.saturating_sub(paydvm_mints::pending::GIVEN_UP_FOR_MS),
            paydvm_mints::pending::GIVEN_UP_KEPT,
        );
        self.0
            .give_up_deferred(event_id, now_ms, forget)
            .map_err(db)
    }

    fn given_up(&self, event_id: &str) -> Result<bool, PendingError> {
        self.0.given_up(event_id).map_err(db)
    }

    fn given_up_marks(&self) -> Result<Vec<(String, u64)>, PendingError> {
        self.0.given_up_marks().map_err(db)
    }

    fn deferred(&self) -> Result<Vec<DeferredRow>, PendingError> {
        let rows = self.0.deferred().map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|r| DeferredRow {
                event_id: r.event_id,
                event: r.event,
                tries: r.tries,
                next_try_ms: r.next_try_ms,
                first_ms: r.first_ms,
            })
            .collect())
    }
}
