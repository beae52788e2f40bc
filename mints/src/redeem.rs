//! Redemption: a NUT-03 swap of a verified NutZap's proofs (with our P2PK witnesses) into fresh
//! proofs only we know, through cdk's wallet. Only a successful swap proves the proofs were
//! unspent, so nothing is credited before it.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cdk::cdk_database::WalletDatabase;
use cdk::nuts::{CurrencyUnit, SecretKey};

use cdk::wallet::types::KeysetLoadPolicy;
use cdk::wallet::{ReceiveOptions, Wallet, WalletBuilder};
use cdk_sqlite::WalletSqliteDatabase;
use sha2::{Digest, Sha512};
use tokio::sync::Mutex;

use crate::intake::Intake;
use crate::mint_url_of;
use crate::refund::ports::{CdkMint, CdkStore};
use crate::verify::VerifiedNutZap;

/// Our dedicated P2PK receiving key (NIP-61: never the identity key). Prints as `***`.
#[derive(Clone)]
pub struct ReceiveKey(SecretKey);

impl ReceiveKey {
    pub fn from_secret_bytes(bytes: &[u8; 32]) -> Option<Self> {
        SecretKey::from_slice(bytes).ok().map(ReceiveKey)
    }

    /// The x-only public key (64 hex) published in our kind 10019 `pubkey` tag.
    pub fn xonly_hex(&self) -> String {
        hex::encode(self.0.public_key().x_only_public_key().serialize())
    }

    /// The cdk wallet seed, derived from this key so one secret backs both.
    pub(crate) fn wallet_seed(&self) -> [u8; 64] {
        let mut h = Sha512::new();
        h.update(b"paydvm-cashu-wallet-seed-v1");
        h.update(self.0.as_secret_bytes());
        h.finalize().into()
    }
}

impl fmt::Debug for ReceiveKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What a swap attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapOutcome {
    /// The mint swapped the proofs; `received` units are ours (after `fee` input fees).
    Swapped { received: u64, fee: u64 },
    /// The mint says the proofs were spent by someone (and not by a swap of ours).
    AlreadySpent,
    /// The mint refused the proofs for good (invalid, unknown keyset…).
    Refused { reason: String },
    /// The mint could not be reached or gave an ambiguous answer: try again later.
    Retry { reason: String },
}

/// Errors opening the wallet store.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    #[error("cashu wallet store {path}: {reason}")]
    Store { path: String, reason: String },
    #[error("mint {mint}: {reason}")]
    Wallet { mint: String, reason: String },
}

/// How fast the wallet may call one mint. cdk paces by default (a burst of 20, then 20 per
/// minute): right for a shared public mint, too slow for a busy node at its own mint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MintPacing {
    #[default]
    CdkDefault,
    /// A burst of this many requests, then this many per minute.
    PerMinute(std::num::NonZeroU32),
    Off,
}

/// cdk's wallet store: an SQLite file beside a file ledger, or the ledger's PostgreSQL database.
pub type WalletStore = Arc<dyn WalletDatabase<cdk::cdk_database::Error> + Send + Sync>;

/// One cdk wallet per (mint, unit), sharing one store.
pub struct Redeemer {
    key: ReceiveKey,
    pacing: MintPacing,
    store: WalletStore,
    wallets: Mutex<HashMap<(String, String), KnownWallet>>,
    pub(crate) refund_locks: crate::refund::RefundLocks,
    recovery: crate::recovery::RecoveryGate,
}

/// A wallet of the redeemer's, and whether its mint's keys were fetched since it was made.
#[derive(Clone)]
struct KnownWallet {
    wallet: Wallet,
    keys_fetched: Arc<AtomicBool>,
}

/// cdk's SQLite wallet store at `path` (created if missing).
pub(crate) async fn sqlite_store(path: &Path) -> Result<WalletSqliteDatabase, RedeemError> {
    WalletSqliteDatabase::new(path.to_path_buf())
        .await
        .map_err(|e| RedeemError::Store {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// The wallet store in the file at `path`, created if missing. The file holds bearer ecash: it
/// is made private (mode 0600) first.
pub async fn wallet_file(path: &Path) -> Result<WalletStore, RedeemError> {
    crate::private_file::make_private(path).map_err(|e| RedeemError::Store {
        path: path.display().to_string(),
        reason: format!("cannot make it private (mode 0600): {e}"),
    })?;
    Ok(Arc::new(sqlite_store(path).await?))
}

impl Redeemer {
    /// Opens (or creates) the wallet store at `path`.
    /// The file holds bearer ecash: it is made private (mode 0600) first.
    pub async fn open(path: &Path, key: ReceiveKey) -> Result<Self, RedeemError> {
        Ok(Redeemer::on_store(wallet_file(path).await?, key))
    }

    /// A redeemer on a store opened elsewhere (the node's wallet in PostgreSQL).
    pub fn on_store(store: WalletStore, key: ReceiveKey) -> Self {
        Redeemer {
            key,
            pacing: MintPacing::default(),
            store,
            wallets: Mutex::new(HashMap::new()),
            refund_locks: Default::default(),
            recovery: Default::default(),
        }
    }

    /// Sets how fast the wallets may call each mint (before the first call).
    pub fn with_pacing(mut self, pacing: MintPacing) -> Self {
        self.pacing = pacing;
        self
    }

    pub(crate) fn store(&self) -> &WalletStore {
        &self.store
    }

    pub(crate) fn seed(&self) -> [u8; 64] {
        self.key.wallet_seed()
    }

    /// The wallet at (`mint`, `unit`), its mint's keys fetched from the mint once: for every
    /// operation that makes outputs.
    ///
    /// Why fetched and not read from the store: cdk writes a mint's keysets and their keys in
    /// separate steps, and a wallet that reads the store in between (another node on the same
    /// database, another wallet here) caches the keysets without keys and then refuses every
    /// swap with "Unknown Keyset" for an hour (its cache's lifetime). Fetching fills in the
    /// missing keys; if the mint cannot be reached the wallet is fetched for again next time.
    pub(crate) async fn wallet(&self, mint: &str, unit: &str) -> Result<Wallet, RedeemError> {
        let known = self.known_wallet(mint, unit).await?;
        if !known.keys_fetched.load(Ordering::Acquire) {
            let keysets = known.wallet.keysets(KeysetLoadPolicy::Refresh).await;
            keysets.map_err(|e| RedeemError::Wallet {
                mint: mint.to_owned(),
                reason: format!("its keys: {e}"),
            })?;
            known.keys_fetched.store(true, Ordering::Release);
        }
        Ok(known.wallet)
    }

    /// The wallet at (`mint`, `unit`) as made, nothing fetched: enough to read the store.
    async fn known_wallet(&self, mint: &str, unit: &str) -> Result<KnownWallet, RedeemError> {
        let mut wallets = self.wallets.lock().await;
        let k = (mint.to_owned(), unit.to_owned());
        if let Some(w) = wallets.get(&k) {
            return Ok(w.clone());
        }
        let err = |reason: String| RedeemError::Wallet {
            mint: mint.to_owned(),
            reason,
        };
        let builder = WalletBuilder::new()
            .mint_url(mint_url_of(mint).map_err(|e| err(e.to_string()))?)
            .unit(CurrencyUnit::from_str(unit).map_err(|e| err(e.to_string()))?)
            .localstore(Arc::clone(&self.store))
            .seed(self.key.wallet_seed());
        let builder = match self.pacing {
            MintPacing::CdkDefault => builder,
            MintPacing::PerMinute(n) => {
                builder.with_rate_limiting_config(cdk::wallet::RateLimitConfig::new(n, n))
            }
            MintPacing::Off => builder.without_rate_limiting(),
        };
        let known = KnownWallet {
            wallet: builder.build().map_err(|e| err(e.to_string()))?,
            keys_fetched: Arc::default(),
        };
        wallets.insert(k, known.clone());
        Ok(known)
    }

    /// Swaps the NutZap's (or request token's) proofs at its mint into outputs only we can
    /// unblind, witnessing each P2PK lock with our key (see [`crate::intake`]).
    pub async fn swap(&self, nutzap: &VerifiedNutZap) -> SwapOutcome {
        let wallet = match self.wallet(&nutzap.mint, &nutzap.unit).await {
            Ok(w) => w,
            Err(e) => {
                return SwapOutcome::Retry {
                    reason: e.to_string(),
                }
            }
        };
        // Leftovers of cdk's own sagas (from older versions), bounded; they decide nothing here.
        self.recovery.recover(&wallet, &self.store).await;
        let (mint, store, seed) = (
            CdkMint(wallet),
            CdkStore(Arc::clone(&self.store)),
            self.seed(),
        );
        Intake {
            mint: &mint,
            store: &store,
            seed: &seed,
            key: &self.key.0,
        }
        .swap(nutzap)
        .await
    }

    /// Unspent balance in `unit` at `mint`, as the wallet store has it.
    pub async fn balance(&self, mint: &str, unit: &str) -> Result<u64, RedeemError> {
        let known = self.known_wallet(mint, unit).await?;
        known
            .wallet
            .total_balance()
            .await
            .map(u64::from)
            .map_err(|e| RedeemError::Wallet {
                mint: mint.to_owned(),
                reason: e.to_string(),
            })
    }
}

/// Why operator float in ecash was not taken.
#[derive(Debug, thiserror::Error)]
pub enum FloatError {
    #[error("the token is not readable: {0}")]
    Token(String),
    #[error("the token is for {found}, not {expected}")]
    WrongMint { expected: String, found: String },
    #[error("the mint refused the token: {0}")]
    Refused(String),
}

impl Redeemer {
    /// Swaps an operator's token into our wallet at `mint`; what the wallet received (after the
    /// mint's input fee). The token is the operator's own money (operator float), so nothing
    /// here checks locks or DLEQ beyond what the swap itself proves.
    pub async fn receive_float(
        &self,
        mint: &str,
        unit: &str,
        token: &str,
    ) -> Result<u64, FloatError> {
        let parsed = cdk::nuts::Token::from_str(token.trim())
            .map_err(|e| FloatError::Token(e.to_string()))?;
        let found = parsed
            .mint_url()
            .map_err(|e| FloatError::Token(e.to_string()))?
            .to_string();
        if crate::normalise_mint_url(&found) != crate::normalise_mint_url(mint) {
            return Err(FloatError::WrongMint {
                expected: mint.to_owned(),
                found,
            });
        }
        let wallet = self
            .wallet(mint, unit)
            .await
            .map_err(|e| FloatError::Refused(e.to_string()))?;
        wallet
            .receive(token.trim(), ReceiveOptions::default())
            .await
            .map(u64::from)
            .map_err(|e| FloatError::Refused(e.to_string()))
    }
}
