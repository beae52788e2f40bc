//! Shared Cashu test setup: the in-process cdk mint of `paydvm_testkit::local_mint`, customer wallets minting from it, and a node that trusts it.

use std::sync::Arc;
use std::time::Duration;

use cdk::nuts::Proof;
use cdk::wallet::Wallet;
use nostr_sdk::prelude::*;
use paydvm_ledger::store::Store;
use paydvm_ledger::{EventBody, Rail};
use paydvm_testkit::fixture::Fixture;
use paydvm_testkit::local_mint::{self, LocalMint};

use crate::node::{test_node, Setup};

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

/// The library's in-process mint (`paydvm_testkit::local_mint`), as the tests use it.
pub struct TestMint(LocalMint, u64);

impl TestMint {
    pub async fn start() -> TestMint {
        TestMint::with_fee(0).await
    }

    /// A mint charging `input_fee_ppk` per input (NUT-02).
    pub async fn with_fee(input_fee_ppk: u64) -> TestMint {
        let mint = LocalMint::start_with_fee(input_fee_ppk)
            .await
            .expect("the local mint starts");
        TestMint(mint, input_fee_ppk)
    }

    pub fn set_down(&self, down: bool) {
        self.0.set_down(down);
    }
}

impl std::ops::Deref for TestMint {
    type Target = LocalMint;
    fn deref(&self) -> &LocalMint {
        &self.0
    }
}

impl MintUnderTest for TestMint {
    fn url(&self) -> &str {
        &self.0.url
    }

    fn input_fee_ppk(&self) -> u64 {
        self.1
    }
}

/// A cdk wallet (in memory) at `mint`.
pub async fn wallet(mint: &str) -> Wallet {
    local_mint::memory_wallet(mint).await.unwrap()
}

/// A cdk wallet with a fresh seed at `mint`, keeping its proofs in `store`.
pub fn wallet_in(
    mint: &str,
    store: Arc<dyn cdk::cdk_database::WalletDatabase<cdk::cdk_database::Error> + Send + Sync>,
) -> Wallet {
    local_mint::customer_wallet(mint, store).unwrap()
}

/// Mints `sat` from the FakeWallet (it pays its own invoices), locked to `lock` if given.
pub async fn mint_proofs(wallet: &Wallet, sat: u64, lock: Option<&str>) -> Vec<Proof> {
    local_mint::mint_ecash(wallet, sat, lock).await.unwrap()
}

pub struct CashuSetup<M = TestMint> {
    setup: Setup,
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
    let node = test_node("refund", "")
        .trust_mint(mint.url())
        .cashu_setting(cashu);
    let setup = Setup::build(Fixture::builder(node)).await;
    let p2pk = setup.p2pk.clone().expect("a Cashu node has a NutZap key");
    CashuSetup { setup, mint, p2pk }
}

/// The fixture: `config`, `urls`, `ledger()`, `store()`, `start()`.
impl<M> std::ops::Deref for CashuSetup<M> {
    type Target = Setup;
    fn deref(&self) -> &Setup {
        &self.setup
    }
}

impl<M: MintUnderTest> CashuSetup<M> {
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
    wallet_balance_at(&s.ledger(), &s.p2pk, s.mint.url()).await
}

/// What the Cashu wallet of the node whose local files are named after `base` (the ledger
/// file, or `<state_dir>/paydvm`) holds at `mint`, in sat; `p2pk` is its NutZap key.
pub async fn wallet_balance_at(base: &std::path::Path, p2pk: &Keys, mint: &str) -> u64 {
    let key =
        paydvm_mints::ReceiveKey::from_secret_bytes(&p2pk.secret_key().secret_bytes()).unwrap();
    let wallet_path = paydvm::config::wallet_path(base);
    let redeemer = paydvm_mints::Redeemer::open(&wallet_path, key)
        .await
        .unwrap();
    redeemer.balance(mint, "sat").await.unwrap()
}
