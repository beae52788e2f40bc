//! The NutZap rail end to end: an in-process cdk mint (MintBuilder + FakeWallet, served by
//! cdk-axum on 127.0.0.1), a LocalRelay, the node, and a customer whose cdk wallet mints ecash
//! P2PK-locked to the key the node published in its kind 10019.

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
use cdk::wallet::{ReceiveOptions, Wallet};
use cdk::Amount;
use nostr_sdk::prelude::*;
use paydvm::config::{create_key_file, pending_path, Config};
use paydvm::node::local_relay::EmbeddedRelay;
use paydvm::node::{Node, NodeHandle};
use paydvm_ledger::store::Store;
use paydvm_ledger::{Asset, EventBody, JobId, JobState, Msat, Rail};
use paydvm_mints::PendingSwaps;
use tokio::task::JoinHandle;

use crate::node::{is_status, start_relay, steps, wait_state, write_node_dir_with, Customer};

const WAIT: Duration = Duration::from_secs(20);

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

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

/// A cdk wallet (in memory) at the test mint.
pub async fn wallet(mint: &TestMint) -> Wallet {
    let store = cdk_sqlite::wallet::memory::empty().await.unwrap();
    wallet_in(mint, Arc::new(store))
}

/// A cdk wallet with a fresh seed at the test mint, keeping its proofs in `store`.
pub fn wallet_in(
    mint: &TestMint,
    store: Arc<dyn cdk::cdk_database::WalletDatabase<cdk::cdk_database::Error> + Send + Sync>,
) -> Wallet {
    let mut seed = [0u8; 64];
    seed[..32].copy_from_slice(&Keys::generate().secret_key().secret_bytes());
    seed[32..].copy_from_slice(&Keys::generate().secret_key().secret_bytes());
    Wallet::new(&mint.url, CurrencyUnit::Sat, store, seed, None).unwrap()
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

/// A NIP-61 kind 9321 from `sender`.
pub fn nutzap(
    sender: &Keys,
    proofs: &[Proof],
    mint: &str,
    unit: &str,
    target: Option<EventId>,
    recipient: &PublicKey,
    comment: &str,
) -> Event {
    let mut tags: Vec<Tag> = proofs
        .iter()
        .map(|p| Tag::parse(["proof".to_owned(), serde_json::to_string(p).unwrap()]).unwrap())
        .collect();
    tags.push(Tag::parse(["unit", unit]).unwrap());
    tags.push(Tag::parse(["u", mint]).unwrap());
    if let Some(target) = target {
        tags.push(Tag::event(target));
        tags.push(Tag::parse(["k", "7000"]).unwrap());
    }
    tags.push(Tag::public_key(*recipient));
    EventBuilder::new(Kind::from(9321), comment)
        .tags(tags)
        .sign_with_keys(sender)
        .unwrap()
}

pub struct CashuSetup {
    _dir: tempfile::TempDir,
    pub config: PathBuf,
    _relay: EmbeddedRelay,
    pub urls: Vec<RelayUrl>,
    pub mint: TestMint,
    /// The node's P2PK receiving key (the test plays a thief with it in one case).
    p2pk: Keys,
}

pub async fn setup() -> CashuSetup {
    let mint = TestMint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (relay, url) = start_relay().await;
    let urls = vec![url];
    let policy = format!(
        "[[mints.trusted]]\nurl = \"{}\"\nunits = [\"sat\"]\n",
        mint.url
    );
    let config = write_node_dir_with(dir.path(), &urls, "refund", &policy);
    let p2pk = create_key_file(&dir.path().join("paydvm-nutzap.key")).unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[cashu]\np2pk_key_file = \"paydvm-nutzap.key\"\n");
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

impl CashuSetup {
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

async fn fetch(urls: &[RelayUrl], filter: Filter) -> Vec<Event> {
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

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn nutzap_payments(store: &Store) -> Vec<paydvm_ledger::Payment> {
    let (head, _) = store.head();
    (1..=head)
        .filter_map(|seq| store.event(seq).unwrap())
        .filter_map(|e| match e.event.body {
            EventBody::PaymentReceived(p) if p.rail == Rail::NutZap => Some(p),
            _ => None,
        })
        .collect()
}

/// A quoted 5050 job ("abc", 5000 msat) and its payment-required feedback.
pub async fn quoted_job(customer: &mut Customer) -> (Event, Event) {
    quoted_job_for(customer, "abc").await
}

/// A quoted 5050 job for `text` (5000 msat): distinct texts make distinct requests.
pub async fn quoted_job_for(customer: &mut Customer, text: &str) -> (Event, Event) {
    let request = customer.request(5050, text, &[]);
    customer.client.send_event(&request).await.unwrap();
    let quote = customer
        .wait_for(request.id, is_status("payment-required"))
        .await;
    (request, quote)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nutzap_pays_a_quoted_job_after_the_swap() {
    let s = setup().await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let (request, quote) = quoted_job(&mut customer).await;
    let job = request.id.to_hex();

    // Where to pay: the node's 10019 (our mint, our P2PK key, never the identity key).
    let info = fetch(
        &s.urls,
        Filter::new().kind(Kind::from(10019)).author(node.pubkey()),
    )
    .await;
    let info = info.first().expect("10019 published");
    let tag = |name: &str| {
        info.tags
            .iter()
            .find(|t| t.as_slice()[0] == name)
            .map(|t| t.as_slice().to_vec())
            .unwrap_or_else(|| panic!("no {name} tag"))
    };
    assert_eq!(tag("mint")[1..], [s.mint.url.clone(), "sat".into()]);
    let p2pk = tag("pubkey")[1].clone();
    let handlers = fetch(
        &s.urls,
        Filter::new().kind(Kind::from(31990)).author(node.pubkey()),
    )
    .await;
    for h in &handlers {
        let content: serde_json::Value = serde_json::from_str(&h.content).unwrap();
        assert_eq!(content["acceptsNutZaps"], true);
        assert_eq!(content["cashuAccepted"], true);
    }
    assert!(!handlers.is_empty());
    assert_eq!(p2pk, s.p2pk.public_key().to_hex());
    assert_ne!(p2pk, node.pubkey().to_hex());

    let wallet = wallet(&s.mint).await;
    let proofs = mint_proofs(&wallet, 5, Some(&format!("02{p2pk}"))).await;
    assert!(proofs.iter().all(|p| p.dleq.is_some()), "mint gave no DLEQ");
    let zap = nutzap(
        &customer.keys,
        &proofs,
        &s.mint.url,
        "sat",
        Some(quote.id),
        &node.pubkey(),
        "for the job",
    );
    customer.client.send_event(&zap).await.unwrap();

    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6050))
        .await;
    assert_eq!(result.content, "cba");
    wait_state(&node, &job, JobState::Succeeded).await;
    let stats = node.nutzap_stats().unwrap();
    // The rail counts a credit once the core confirms the booking, which may trail the job.
    wait_until("the rail saw the credit", || stats.credited() == 1).await;
    assert_eq!(stats.rejected(), 0);
    assert!(matches!(
        stats.mints().as_slice(),
        [(url, paydvm_mints::MintStatus::Up { keysets })] if *url == s.mint.url && *keysets >= 1
    ));

    // The redemption marker: public `e … redeemed` and `p`, content encrypted to ourselves.
    let markers = fetch(
        &s.urls,
        Filter::new().kind(Kind::from(7376)).author(node.pubkey()),
    )
    .await;
    let marker = markers.first().expect("7376 published");
    let tags: Vec<Vec<String>> = marker.tags.iter().map(|t| t.as_slice().to_vec()).collect();
    assert!(tags.contains(&vec![
        "e".into(),
        zap.id.to_hex(),
        s.urls[0].to_string(),
        "redeemed".into()
    ]));
    assert!(tags.contains(&vec!["p".into(), customer.keys.public_key().to_hex()]));
    assert!(
        !marker.content.contains("amount"),
        "content is not encrypted"
    );
    node.shutdown().await;

    let store = s.store();
    assert_eq!(
        steps(&store, &job),
        [
            "job_received",
            "quote_issued",
            "payment_received",
            "job_queued",
            "processing_started",
            "result_published"
        ]
    );
    let payments = nutzap_payments(&store);
    assert_eq!(payments.len(), 1);
    let p = &payments[0];
    assert_eq!(p.amount, Msat::from_msat(5_000));
    assert_eq!(
        p.asset,
        Asset::Mint {
            url: s.mint.url.clone()
        }
    );
    assert_eq!(p.reference.as_str(), format!("nutzap:{}", zap.id.to_hex()));
    let ys: Vec<String> = proofs.iter().map(|p| p.y().unwrap().to_hex()).collect();
    let linked: Vec<&str> = p.linked.iter().map(|r| r.as_str()).collect();
    assert_eq!(linked, ys.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(p.evidence.as_ref().unwrap().as_str(), zap.id.to_hex());
    let record = store
        .state()
        .job(&JobId::new(&job).unwrap())
        .cloned()
        .unwrap();
    assert_eq!(record.revenue, Msat::from_msat(5_000));
    assert!(store.verify().is_ok());

    // The swapped ecash is in the node's wallet: the ledger's asset account reconciles.
    let key =
        paydvm_mints::ReceiveKey::from_secret_bytes(&s.p2pk.secret_key().secret_bytes()).unwrap();
    let wallet_path = paydvm::config::wallet_path(&s.ledger());
    let redeemer = paydvm_mints::Redeemer::open(&wallet_path, key)
        .await
        .unwrap();
    assert_eq!(redeemer.balance(&s.mint.url, "sat").await.unwrap(), 5);
    assert_eq!(
        store
            .state()
            .balance(&paydvm_ledger::Account::Asset(Asset::Mint {
                url: s.mint.url.clone()
            }))
            .debits,
        Msat::from_msat(5_000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_nutzaps_credit_nothing_and_the_node_goes_on() {
    let s = setup().await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let (request, quote) = quoted_job(&mut customer).await;
    let job = request.id.to_hex();
    let us = node.pubkey();
    let wallet = wallet(&s.mint).await;
    let lock = s.lock();
    let send = |zap: Event| assert!(node.submit_nutzap(zap), "rail is on");
    let target = Some(quote.id);
    let ours = |sat| mint_proofs(&wallet, sat, Some(&lock));

    // Unlisted mint (same proofs would be fine otherwise).
    let p = ours(5).await;
    send(nutzap(
        &customer.keys,
        &p,
        "http://127.0.0.1:1",
        "sat",
        target,
        &us,
        "a",
    ));
    // Unit the mint is not trusted for.
    send(nutzap(
        &customer.keys,
        &p,
        &s.mint.url,
        "usd",
        target,
        &us,
        "b",
    ));
    // Locked to another key.
    let other = format!("02{}", Keys::generate().public_key().to_hex());
    let p_other = mint_proofs(&wallet, 5, Some(&other)).await;
    send(nutzap(
        &customer.keys,
        &p_other,
        &s.mint.url,
        "sat",
        target,
        &us,
        "c",
    ));
    // Locked to our identity key (NIP-61 forbids it).
    let identity = format!("02{}", us.to_hex());
    let p_id = mint_proofs(&wallet, 5, Some(&identity)).await;
    send(nutzap(
        &customer.keys,
        &p_id,
        &s.mint.url,
        "sat",
        target,
        &us,
        "d",
    ));
    // Tampered DLEQ.
    let mut p_bad = ours(5).await;
    let dleq = p_bad[0].dleq.as_mut().unwrap();
    let mut s_hex = dleq.s.to_secret_hex();
    let last = if s_hex.ends_with('1') { "2" } else { "1" };
    s_hex.replace_range(63..64, last);
    dleq.s = cdk::nuts::SecretKey::from_hex(&s_hex).unwrap();
    send(nutzap(
        &customer.keys,
        &p_bad,
        &s.mint.url,
        "sat",
        target,
        &us,
        "e",
    ));
    // Already spent at the mint: a thief with our key swapped them first.
    let p_spent = ours(5).await;
    let thief = self::wallet(&s.mint).await;
    let stolen = cdk::nuts::SecretKey::from_slice(&s.p2pk.secret_key().secret_bytes()).unwrap();
    thief
        .receive_proofs(
            p_spent.clone(),
            ReceiveOptions {
                p2pk_signing_keys: vec![stolen],
                ..Default::default()
            },
            None,
            None,
        )
        .await
        .unwrap();
    send(nutzap(
        &customer.keys,
        &p_spent,
        &s.mint.url,
        "sat",
        target,
        &us,
        "f",
    ));

    // A good one pays the job; the same event again and its proofs under a new event do not.
    let good = nutzap(&customer.keys, &p, &s.mint.url, "sat", target, &us, "good");
    send(good.clone());
    let stats = node.nutzap_stats().unwrap();
    wait_until("the good NutZap is credited", || stats.credited() == 1).await;
    send(good.clone());
    send(nutzap(
        &customer.keys,
        &p,
        &s.mint.url,
        "sat",
        target,
        &us,
        "replay",
    ));
    wait_until("all NutZaps decided", || {
        stats.rejected() + stats.credited() + stats.duplicates() == 9
    })
    .await;
    wait_state(&node, &job, JobState::Succeeded).await;
    assert_eq!(stats.rejected(), 7, "a–f and the replayed proofs");
    let reasons: Vec<String> = stats.refusals().into_iter().map(|(_, r)| r).collect();
    let expected = [
        "mint http://127.0.0.1:1 is not on our list",
        "unit usd is not accepted",
        "proof 0: locked to another key",
        "proof 0: locked to our Nostr identity key",
        "DLEQ proof does not verify",
        "already spent at the mint",
        "already credited under another payment",
    ];
    assert_eq!(reasons.len(), expected.len(), "{reasons:#?}");
    for (reason, want) in reasons.iter().zip(expected) {
        assert!(reason.contains(want), "{reason:?} is not {want:?}");
    }
    assert_eq!((stats.credited(), stats.duplicates()), (1, 1));
    node.shutdown().await;

    let store = s.store();
    let payments = nutzap_payments(&store);
    assert_eq!(payments.len(), 1);
    assert_eq!(
        payments[0].reference.as_str(),
        format!("nutzap:{}", good.id.to_hex())
    );
    let record = store
        .state()
        .job(&JobId::new(&job).unwrap())
        .cloned()
        .unwrap();
    assert_eq!(record.funded_total, Msat::from_msat(5_000));
    assert!(store
        .state()
        .held(&paydvm_ledger::Account::Unmatched)
        .is_zero());
    assert!(store.verify().is_ok());
    assert!(PendingSwaps::open(&pending_path(&s.ledger()))
        .unwrap()
        .all()
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mint_down_during_the_swap_leaves_it_pending_until_it_is_back() {
    let s = setup().await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let (request, quote) = quoted_job(&mut customer).await;
    let job = request.id.to_hex();
    let wallet = wallet(&s.mint).await;
    let proofs = mint_proofs(&wallet, 5, Some(&s.lock())).await;
    // The node has the mint's keysets (fetched at start); now the mint goes away.
    let stats = node.nutzap_stats().unwrap();
    wait_until("keysets loaded", || stats.ready()).await;
    s.mint.set_down(true);
    let zap = nutzap(
        &customer.keys,
        &proofs,
        &s.mint.url,
        "sat",
        Some(quote.id),
        &node.pubkey(),
        "while down",
    );
    customer.client.send_event(&zap).await.unwrap();
    wait_until("a swap attempt failed", || stats.retried() >= 2).await;
    assert_eq!(stats.credited(), 0);
    assert_eq!(node.job(&job).await.unwrap().state, JobState::Quoted);
    let pending = PendingSwaps::open(&pending_path(&s.ledger())).unwrap();
    assert_eq!(pending.all().unwrap().len(), 1, "recorded as pending");
    // Stopped while pending: nothing is lost across the restart.
    node.shutdown().await;
    assert!(nutzap_payments(&s.store()).is_empty());

    s.mint.set_down(false);
    let node = s.start().await;
    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6050))
        .await;
    assert_eq!(result.content, "cba");
    wait_state(&node, &job, JobState::Succeeded).await;
    // Seen again on the relay after the restart: still credited once.
    assert!(node.submit_nutzap(zap.clone()));
    let stats = node.nutzap_stats().unwrap();
    wait_until("the pending swap is credited", || stats.credited() == 1).await;
    wait_until("the replay is handled", || stats.duplicates() >= 1).await;
    assert_eq!(stats.credited(), 1, "the pending swap, once");
    assert_eq!(stats.rejected(), 0);
    node.shutdown().await;

    let store = s.store();
    let payments = nutzap_payments(&store);
    assert_eq!(payments.len(), 1);
    assert_eq!(
        payments[0].reference.as_str(),
        format!("nutzap:{}", zap.id.to_hex())
    );
    assert!(pending.all().unwrap().is_empty());
    assert!(store.verify().is_ok());
}
