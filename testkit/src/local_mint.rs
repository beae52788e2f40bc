//! An in-process Cashu mint on 127.0.0.1 for `paydvm demo`, the tests and the NutZap benchmark:
//! cdk's `MintBuilder` with its FakeWallet (which pays its own invoices, so minting needs no
//! Lightning) served by cdk-axum. Plus the customer's side: a throwaway cdk wallet and minting
//! ecash from it, optionally P2PK-locked.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use cdk::amount::SplitTarget;
use cdk::cdk_database::WalletDatabase;
use cdk::mint::{MintBuilder, MintMeltLimits};
use cdk::nuts::nut00::KnownMethod;
use cdk::nuts::{CurrencyUnit, MintQuoteState, PaymentMethod, Proof, SpendingConditions};
use cdk::types::FeeReserve;
use cdk::wallet::Wallet;
use cdk::Amount;
use tokio::task::JoinHandle;

/// How long minting waits for the FakeWallet to mark a quote paid.
const QUOTE_PAID_WITHIN: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum LocalMintError {
    #[error("cashu mint: {0}")]
    Mint(String),
    #[error("cannot listen on 127.0.0.1: {0}")]
    Listen(#[from] std::io::Error),
}

fn mint_error(e: impl std::fmt::Display) -> LocalMintError {
    LocalMintError::Mint(e.to_string())
}

/// Faults a test can put between a mint and its clients (the in-process mint here, or any mint
/// behind [`MintProxy`]).
#[derive(Default)]
pub struct MintFaults {
    /// Every request answers 503, as a mint behind a proxy does while it is unavailable.
    down: AtomicBool,
    /// Each swap is held this long (ms) before the mint performs it.
    hold_swaps_ms: AtomicU64,
    /// This many of the next swaps are performed, then answered 500 (the answer is lost).
    lose_swap_answers: AtomicU64,
    /// Swaps performed (answered or not).
    swaps: AtomicU64,
    /// Swap requests received (performed, refused or held), and those inside the fault layer
    /// now, and the most there were at one moment.
    swap_requests: AtomicU64,
    swaps_now: AtomicU64,
    most_swaps_at_once: AtomicU64,
}

/// A running mint, with faults a test can switch on. Stops when dropped.
pub struct LocalMint {
    pub url: String,
    faults: Arc<MintFaults>,
    server: JoinHandle<()>,
    /// The mint itself, for what a mint's operator does (rotating keysets).
    mint: Arc<cdk::mint::Mint>,
    input_fee_ppk: u64,
}

impl Drop for LocalMint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl LocalMint {
    /// A fresh mint (random seed, in-memory database, sat over bolt11, no input fee) on a free
    /// port.
    pub async fn start() -> Result<LocalMint, LocalMintError> {
        LocalMint::start_with_fee(0).await
    }

    /// The same with a NUT-02 input fee of `input_fee_ppk` on its sat keyset.
    pub async fn start_with_fee(input_fee_ppk: u64) -> Result<LocalMint, LocalMintError> {
        let db = Arc::new(
            cdk_sqlite::mint::memory::empty()
                .await
                .map_err(mint_error)?,
        );
        let mut builder = MintBuilder::new(db.clone());
        let fake = cdk_fake_wallet::FakeWallet::new(
            FeeReserve {
                min_fee_reserve: 1.into(),
                percent_fee_reserve: 1.0,
            },
            HashMap::default(),
            HashSet::default(),
            0,
            CurrencyUnit::Sat,
        );
        builder
            .add_payment_processor(
                CurrencyUnit::Sat,
                PaymentMethod::Known(KnownMethod::Bolt11),
                MintMeltLimits::new(1, 1_000_000),
                Arc::new(fake),
            )
            .await
            .map_err(mint_error)?;
        builder
            .set_unit_fee(&CurrencyUnit::Sat, input_fee_ppk)
            .map_err(mint_error)?;
        let seed: [u8; 32] = rand::random();
        let mint = builder
            .with_name("paydvm local mint".into())
            .build_with_seed(db, &seed)
            .await
            .map_err(mint_error)?;
        mint.start().await.map_err(mint_error)?;
        let mint = Arc::new(mint);
        let router = cdk_axum::create_mint_router(Arc::clone(&mint), vec!["bolt11".to_owned()])
            .await
            .map_err(mint_error)?;
        let faults = Arc::new(MintFaults::default());
        let (url, server) = serve_with_faults(router, Arc::clone(&faults)).await?;
        Ok(LocalMint {
            url,
            faults,
            server,
            mint,
            input_fee_ppk,
        })
    }

    /// Rotates the sat keyset, as a mint's operator does: a new keyset (same amounts and fee)
    /// becomes the active one and the old one inactive (its proofs are still redeemed, no new
    /// outputs are signed with it). Returns the new keyset's id.
    pub async fn rotate_keyset(&self) -> Result<String, LocalMintError> {
        let active = self
            .mint
            .get_active_keysets()
            .get(&CurrencyUnit::Sat)
            .copied()
            .ok_or_else(|| mint_error("no active sat keyset"))?;
        let amounts = self
            .mint
            .get_keyset_info(&active)
            .ok_or_else(|| mint_error("the active keyset has no info"))?
            .amounts;
        let v2 = active.get_version() == cdk::nuts::nut02::KeySetVersion::Version01;
        let info = self
            .mint
            .rotate_keyset(CurrencyUnit::Sat, amounts, self.input_fee_ppk, v2, None)
            .await
            .map_err(mint_error)?;
        Ok(info.id.to_string())
    }

    pub fn faults(&self) -> &MintFaults {
        &self.faults
    }
}

impl std::ops::Deref for LocalMint {
    type Target = MintFaults;
    fn deref(&self) -> &MintFaults {
        &self.faults
    }
}

impl MintFaults {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Holds every swap `hold` before performing it (a slow mint).
    pub fn hold_swaps(&self, hold: Duration) {
        let ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX);
        self.hold_swaps_ms.store(ms, Ordering::SeqCst);
    }

    /// The next `n` swaps are performed and then answered with a 500 (the answer is lost).
    pub fn lose_swap_answers(&self, n: u64) {
        self.lose_swap_answers.store(n, Ordering::SeqCst);
    }

    /// Swaps answered with success (a cached answer to a repeated request counts again).
    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::SeqCst)
    }

    /// Swap requests that reached the mint, whatever their answer.
    pub fn swap_requests(&self) -> u64 {
        self.swap_requests.load(Ordering::SeqCst)
    }

    /// The most swap requests that were in the mint (held or performed) at one moment.
    pub fn most_swaps_at_once(&self) -> u64 {
        self.most_swaps_at_once.load(Ordering::SeqCst)
    }
}

/// Counts a swap request in the mint while it lives.
struct SwapInMint<'a>(&'a MintFaults);

impl<'a> SwapInMint<'a> {
    fn enter(faults: &'a MintFaults) -> Self {
        faults.swap_requests.fetch_add(1, Ordering::SeqCst);
        let now = faults.swaps_now.fetch_add(1, Ordering::SeqCst) + 1;
        faults.most_swaps_at_once.fetch_max(now, Ordering::SeqCst);
        SwapInMint(faults)
    }
}

impl Drop for SwapInMint<'_> {
    fn drop(&mut self) {
        self.0.swaps_now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves `router` on a free 127.0.0.1 port behind the fault layer: (URL, server task).
async fn serve_with_faults(
    router: axum::Router,
    faults: Arc<MintFaults>,
) -> Result<(String, JoinHandle<()>), LocalMintError> {
    let router = router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            faulty(Arc::clone(&faults), req, next)
        },
    ));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!("local mint stopped: {e}");
        }
    });
    Ok((url, server))
}

/// Another mint (Nutshell in a child process, say) behind the same fault layer: every request
/// is forwarded to `upstream` as it came. Stops when dropped.
pub struct MintProxy {
    pub url: String,
    faults: Arc<MintFaults>,
    server: JoinHandle<()>,
}

impl Drop for MintProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl std::ops::Deref for MintProxy {
    type Target = MintFaults;
    fn deref(&self) -> &MintFaults {
        &self.faults
    }
}

impl MintProxy {
    pub async fn start(upstream: &str) -> Result<MintProxy, LocalMintError> {
        let upstream = upstream.trim_end_matches('/').to_owned();
        let http = reqwest::Client::new();
        let router = axum::Router::new().fallback(move |req: axum::extract::Request| {
            forward(http.clone(), upstream.clone(), req)
        });
        let faults = Arc::new(MintFaults::default());
        let (url, server) = serve_with_faults(router, Arc::clone(&faults)).await?;
        Ok(MintProxy {
            url,
            faults,
            server,
        })
    }
}

async fn forward(
    http: reqwest::Client,
    upstream: String,
    req: axum::extract::Request,
) -> axum::response::Response {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let method = req.method().clone();
    let body = match axum::body::to_bytes(req.into_body(), 1 << 20).await {
        Ok(b) => b,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let sent = http
        .request(method, format!("{upstream}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let Ok(answer) = sent else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = answer.bytes().await.unwrap_or_default();
    (status, [("content-type", "application/json")], bytes).into_response()
}

/// The fault layer in front of a mint's router.
async fn faulty(
    faults: Arc<MintFaults>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if faults.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if req.uri().path() != "/v1/swap" {
        return next.run(req).await;
    }
    let _in_mint = SwapInMint::enter(&faults);
    let hold = faults.hold_swaps_ms.load(Ordering::SeqCst);
    if hold > 0 {
        tokio::time::sleep(Duration::from_millis(hold)).await;
    }
    let answer = next.run(req).await;
    if answer.status().is_success() {
        faults.swaps.fetch_add(1, Ordering::SeqCst);
        let lost = faults
            .lose_swap_answers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if lost {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    }
    answer
}

/// A customer's cdk wallet (fresh seed, sat, no client-side pacing) at `mint`, keeping its
/// proofs in `store`.
pub fn customer_wallet(
    mint: &str,
    store: Arc<dyn WalletDatabase<cdk::cdk_database::Error> + Send + Sync>,
) -> Result<Wallet, LocalMintError> {
    let mut seed = [0u8; 64];
    seed[..32].copy_from_slice(&rand::random::<[u8; 32]>());
    seed[32..].copy_from_slice(&rand::random::<[u8; 32]>());
    cdk::wallet::WalletBuilder::new()
        .mint_url(paydvm_mints::mint_url_of(mint).map_err(mint_error)?)
        .unit(CurrencyUnit::Sat)
        .localstore(store)
        .seed(seed)
        .without_rate_limiting()
        .build()
        .map_err(mint_error)
}

/// A customer's wallet at `mint` with an in-memory store.
pub async fn memory_wallet(mint: &str) -> Result<Wallet, LocalMintError> {
    let store = cdk_sqlite::wallet::memory::empty()
        .await
        .map_err(mint_error)?;
    customer_wallet(mint, Arc::new(store))
}

/// Mints `sat` at the wallet's mint (its FakeWallet pays the quote itself), P2PK-locked to
/// `lock` (compressed hex) if given.
pub async fn mint_ecash(
    wallet: &Wallet,
    sat: u64,
    lock: Option<&str>,
) -> Result<Vec<Proof>, LocalMintError> {
    let quote = wallet
        .mint_quote(PaymentMethod::BOLT11, Some(Amount::from(sat)), None, None)
        .await
        .map_err(mint_error)?;
    let deadline = tokio::time::Instant::now() + QUOTE_PAID_WITHIN;
    while wallet
        .check_mint_quote_status(&quote.id)
        .await
        .map_err(mint_error)?
        .state
        != MintQuoteState::Paid
    {
        if tokio::time::Instant::now() > deadline {
            return Err(LocalMintError::Mint("the mint quote was never paid".into()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let conditions = lock
        .map(|hex| {
            cdk::nuts::PublicKey::from_hex(hex)
                .map(|key| SpendingConditions::new_p2pk(key, None))
                .map_err(mint_error)
        })
        .transpose()?;
    wallet
        .mint(&quote.id, SplitTarget::default(), conditions)
        .await
        .map_err(mint_error)
}
