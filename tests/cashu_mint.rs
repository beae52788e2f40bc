//! Shared Cashu test setup: an in-process cdk mint (MintBuilder + FakeWallet, served by
//! cdk-axum on 127.0.0.1), customer wallets minting from it, and a node that trusts it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use cdk::amount::SplitTarget;
use cdk::mint::{MintBuilder, MintMeltLimits};
use cdk::nuts::nut00::KnownMethod;
use cdk::nuts::{CurrencyUnit, MintQuoteState, PaymentMethod, Proof, SpendingConditions};
use cdk::types::FeeReserve;
use cdk::wallet::Wallet;
use cdk::Amount;
use nostr_sdk::prelude::*;
use paydvm::config::{create_key_file, Config};
use paydvm::node::local_relay::EmbeddedRelay;
use paydvm::node::{Node, NodeHandle};
use paydvm_ledger::store::Store;
use paydvm_ledger::{EventBody, Rail};
use tokio::task::JoinHandle;

use crate::node::{start_relay, write_node_dir_with};

pub const WAIT: Duration = Duration::from_secs(20);

/// A Cashu mint the node and the customer reach over HTTP on 127.0.0.1.
pub trait MintUnderTest {
    fn url(&self) -> &str;
    /// NUT-02 `input_fee_ppk` of its keysets (the fee the node pays on its swap).
    fn input_fee_ppk(&self) -> u64;
}

impl<M: MintUnderTest> MintUnderTest for &M {
    fn url(&self) -> &str {
        (*self).url()
    }

    fn input_fee_ppk(&self) -> u64 {
        (*self).input_fee_ppk()
    }
}

/// The input fee (NUT-02) a swap of `inputs` proofs of one keyset costs: ppk summed, rounded up.
pub fn input_fee(mint: &impl MintUnderTest, inputs: usize) -> u64 {
    (inputs as u64 * mint.input_fee_ppk()).div_ceil(1000)
}

/// An in-process Cashu mint. `down` makes every request answer 503, as a mint behind a proxy
/// does while it is unavailable.
pub struct TestMint {
    pub url: String,
    down: Arc<AtomicBool>,
    _server: JoinHandle<()>,
}

impl TestMint {
    pub async fn start() -> TestMint {
        let db = Arc::new(cdk_sqlite::mint::memory::empty().await.unwrap());
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
                MintMeltLimits::new(1, 100_000),
                Arc::new(fake),
            )
            .await
            .unwrap();
        let seed = Keys::generate().secret_key().secret_bytes();
        let mint = builder
            .with_name("paydvm test mint".into())
            .build_with_seed(db, &seed)
            .await
            .unwrap();
        mint.start().await.unwrap();
        let router = cdk_axum::create_mint_router(Arc::new(mint), vec!["bolt11".to_owned()])
            .await
            .unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let gate = Arc::clone(&down);
        let router = router.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let gate = Arc::clone(&gate);
                async move {
                    if gate.load(Ordering::SeqCst) {
                        StatusCode::SERVICE_UNAVAILABLE.into_response()
                    } else {
                        next.run(req).await
                    }
                }
            },
        ));
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        TestMint {
            url,
            down,
            _server: server,
        }
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

impl MintUnderTest for TestMint {
    fn url(&self) -> &str {
        &self.url
    }

    fn input_fee_ppk(&self) -> u64 {
        0
    }
}

/// A cdk wallet (in memory) at `mint`.
pub async fn wallet(mint: &str) -> Wallet {
    let store = cdk_sqlite::wallet::memory::empty().await.unwrap();
    wallet_in(mint, Arc::new(store))
}

/// A cdk wallet with a fresh seed at `mint`, keeping its proofs in `store`.
pub fn wallet_in(
    mint: &str,
    store: Arc<dyn cdk::cdk_database::WalletDatabase<cdk::cdk_database::Error> + Send + Sync>,
) -> Wallet {
    let mut seed = [0u8; 64];
    seed[..32].copy_from_slice(&Keys::generate().secret_key().secret_bytes());
    seed[32..].copy_from_slice(&Keys::generate().secret_key().secret_bytes());
    Wallet::new(mint, CurrencyUnit::Sat, store, seed, None).unwrap()
}

/// Mints `sat` from the FakeWallet (it pays its own invoices), locked to `lock` if given.
pub async fn mint_proofs(wallet: &Wallet, sat: u64, lock: Option<&str>) -> Vec<Proof> {
    let quote = wallet
        .mint_quote(PaymentMethod::BOLT11, Some(Amount::from(sat)), None, None)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let q = wallet.check_mint_quote_status(&quote.id).await.unwrap();
        if q.state == MintQuoteState::Paid {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "quote never paid");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let conditions = lock.map(|hex| {
        SpendingConditions::new_p2pk(cdk::nuts::PublicKey::from_hex(hex).unwrap(), None)
    });
    wallet
        .mint(&quote.id, SplitTarget::default(), conditions)
        .await
        .unwrap()
}

pub struct CashuSetup<M = TestMint> {
    _dir: tempfile::TempDir,
    pub config: PathBuf,
    _relay: EmbeddedRelay,
    pub urls: Vec<RelayUrl>,
    pub mint: M,
    /// The node's P2PK receiving key (the test plays a thief with it in one case).
    pub p2pk: Keys,
}

pub async fn setup() -> CashuSetup {
    setup_with("").await
}

/// A node trusting one in-process mint; `cashu` is appended to its `[cashu]` section.
pub async fn setup_with(cashu: &str) -> CashuSetup {
    setup_on(TestMint::start().await, cashu).await
}

/// A node directory trusting `mint` (sat), with a LocalRelay and a dedicated P2PK key.
pub async fn setup_on<M: MintUnderTest>(mint: M, cashu: &str) -> CashuSetup<M> {
    let dir = tempfile::tempdir().unwrap();
    let (relay, url) = start_relay().await;
    let urls = vec![url];
    let policy = format!(
        "[[mints.trusted]]\nurl = \"{}\"\nunits = [\"sat\"]\n",
        mint.url()
    );
    let config = write_node_dir_with(dir.path(), &urls, "refund", &policy);
    let p2pk = create_key_file(&dir.path().join("paydvm-nutzap.key")).unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[cashu]\np2pk_key_file = \"paydvm-nutzap.key\"\n");
    text.push_str(cashu);
    std::fs::write(&config, text).unwrap();
    CashuSetup {
        _dir: dir,
        config,
        _relay: relay,
        urls,
        mint,
        p2pk: p2pk.expose().clone(),
    }
}

impl<M: MintUnderTest> CashuSetup<M> {
    pub async fn start(&self) -> NodeHandle {
        Node::start(Config::load(&self.config).unwrap())
            .await
            .unwrap()
    }

    pub fn ledger(&self) -> PathBuf {
        self.config.parent().unwrap().join("paydvm.db")
    }

    pub fn store(&self) -> Store {
        Store::open_read_only(self.ledger()).unwrap()
    }

    /// The NIP-61 lock for our P2PK key: "02" + x-only.
    pub fn lock(&self) -> String {
        format!("02{}", self.p2pk.public_key().to_hex())
    }
}

pub async fn fetch(urls: &[RelayUrl], filter: Filter) -> Vec<Event> {
    let client = Client::default();
    for u in urls {
        client.add_relay(u.clone()).await.unwrap();
    }
    client.connect().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let events = client
            .fetch_events(filter.clone(), Duration::from_secs(2))
            .await
            .map(|e| e.into_iter().collect::<Vec<_>>())
            .unwrap_or_default();
        if !events.is_empty() || tokio::time::Instant::now() > deadline {
            client.shutdown().await;
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every `payment_received` on `rail`, in ledger order.
pub fn payments(store: &Store, rail: Rail) -> Vec<paydvm_ledger::Payment> {
    let (head, _) = store.head();
    (1..=head)
        .filter_map(|seq| store.event(seq).unwrap())
        .filter_map(|e| match e.event.body {
            EventBody::PaymentReceived(p) if p.rail == rail => Some(p),
            _ => None,
        })
        .collect()
}

/// What the node's Cashu wallet holds at `mint`, in sat.
pub async fn wallet_balance<M: MintUnderTest>(s: &CashuSetup<M>) -> u64 {
    let key =
        paydvm_mints::ReceiveKey::from_secret_bytes(&s.p2pk.secret_key().secret_bytes()).unwrap();
    let wallet_path = paydvm::config::wallet_path(&s.ledger());
    let redeemer = paydvm_mints::Redeemer::open(&wallet_path, key)
        .await
        .unwrap();
    redeemer.balance(s.mint.url(), "sat").await.unwrap()
}
