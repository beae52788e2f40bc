//! Cashu tokens in job requests end to end: an in-process cdk mint ([`crate::cashu_mint`]), a
//! LocalRelay, the node, and customers paying with `["cashu", token]` tags, encrypted or clear.
//! Each case checks the relay replies, the ledger trail and the proofs' state at the mint.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use cdk::mint_url::MintUrl;
use cdk::nuts::{CurrencyUnit, Proof, State, Token, TokenV3};
use nostr_sdk::prelude::*;
use paydvm::config::pending_path;
use paydvm::lightning::fake::FakeLightning;
use paydvm::lightning::{
    InvoiceDescription, InvoiceStatus, IssuedInvoice, LightningBackend, LightningError,
    PaymentStatus, Settlement,
};
use paydvm::node::tokens::{GIVEN_UP, PUBLIC_TOKEN_REFUSED};
use paydvm::node::NodeOptions;
use paydvm::protocol::nip90::Encryption;
use paydvm_ledger::{Account, Asset, JobState, Msat, Rail};
use paydvm_mints::{PendingRows, PendingSwaps};

use crate::cashu_mint::{
    mint_proofs, payments, setup, setup_with, wallet, wallet_balance, CashuSetup,
};
use crate::node::{steps, tag_values, wait_state, Customer, PAID_AND_DONE};

pub(crate) fn v4(mint: &str, proofs: &[Proof]) -> String {
    Token::new(
        MintUrl::from_str(mint).unwrap(),
        proofs.to_vec(),
        None,
        CurrencyUnit::Sat,
    )
    .to_string()
}

fn v3(mint: &str, proofs: &[Proof]) -> String {
    TokenV3::new(
        MintUrl::from_str(mint).unwrap(),
        proofs.to_vec(),
        None,
        Some(CurrencyUnit::Sat),
    )
    .unwrap()
    .to_string()
}

/// A 5050 job ("abc", priced 5000 msat) whose tags are NIP-44 encrypted to the node.
fn encrypted_request(customer: &Customer, us: &PublicKey, token: &str) -> Event {
    encrypted_5050(
        customer,
        us,
        serde_json::json!([["i", "abc", "text"], ["cashu", token]]),
    )
}

/// A 5050 request whose tags (`inner`, a JSON array of tags) are NIP-44 encrypted to `us`.
pub(crate) fn encrypted_5050(
    customer: &Customer,
    us: &PublicKey,
    inner: serde_json::Value,
) -> Event {
    let content = Encryption::Nip44
        .encrypt(&customer.keys, us, &inner.to_string())
        .unwrap();
    EventBuilder::new(Kind::Custom(5050), content)
        .tags([
            Tag::parse(["p", &us.to_hex()]).unwrap(),
            Tag::parse(["encrypted"]).unwrap(),
        ])
        .sign_with_keys(&customer.keys)
        .unwrap()
}

/// The `status` tag (status, info) of a feedback event, decrypting it if it is encrypted.
fn status_of(e: &Event, customer: &Keys, us: &PublicKey) -> Option<(String, String)> {
    if e.kind != Kind::Custom(7000) {
        return None;
    }
    let tags: Vec<Vec<String>> = if tag_values(e, "encrypted").is_some() {
        let plain = Encryption::detect(&e.content)
            .decrypt(customer, us, &e.content)
            .ok()?;
        serde_json::from_str(&plain).ok()?
    } else {
        e.tags.iter().map(|t| t.as_slice().to_vec()).collect()
    };
    let status = tags
        .into_iter()
        .find(|t| t.first().map(String::as_str) == Some("status"))?;
    Some((
        status.get(1)?.clone(),
        status.get(2).cloned().unwrap_or_default(),
    ))
}

async fn wait_error(customer: &mut Customer, us: PublicKey, request: EventId) -> String {
    let keys = customer.keys.clone();
    let feedback = customer
        .wait_for(request, |e| {
            status_of(e, &keys, &us).is_some_and(|(s, _)| s == "error")
        })
        .await;
    status_of(&feedback, &keys, &us).unwrap().1
}

async fn wait_quoted(customer: &mut Customer, us: PublicKey, request: EventId) {
    let keys = customer.keys.clone();
    customer
        .wait_for(request, |e| {
            status_of(e, &keys, &us).is_some_and(|(s, _)| s == "payment-required")
        })
        .await;
}

async fn spent(s: &CashuSetup, proofs: &[Proof]) -> Vec<State> {
    wallet(&s.mint.url)
        .await
        .check_proofs_spent(proofs.to_vec())
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.state)
        .collect()
}

/// The ledger's Cashu token payments, and what its Cashu asset account at the test mint holds
/// (after any mint input fee).
fn token_ledger(s: &CashuSetup) -> (Vec<paydvm_ledger::Payment>, Msat) {
    let store = s.store();
    assert!(store.verify().is_ok());
    let asset = Account::Asset(Asset::Mint {
        url: s.mint.url.clone(),
    });
    (
        payments(&store, Rail::CashuToken),
        Msat::from_msat(
            u64::try_from(store.state().balance(&asset).signed(true)).expect("an asset is >= 0"),
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_token_pays_its_job_once_and_a_second_request_with_it_gets_nothing() {
    let s = setup().await;
    let node = s.start().await;
    let us = node.pubkey();
    let mut customer = Customer::connect(&s.urls).await;
    let proofs = mint_proofs(&wallet(&s.mint.url).await, 5, None).await;
    let token = v4(&s.mint.url, &proofs);
    assert!(token.starts_with("cashuB"));

    let request = encrypted_request(&customer, &us, &token);
    customer.client.send_event(&request).await.unwrap();
    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6050))
        .await;
    let plain = Encryption::Nip44
        .decrypt(&customer.keys, &us, &result.content)
        .unwrap();
    assert_eq!(plain, "cba");
    let job = request.id.to_hex();
    wait_state(&node, &job, JobState::Succeeded).await;
    assert_eq!(spent(&s, &proofs).await, vec![State::Spent; proofs.len()]);

    // The same token in another request: nothing credited, the customer is told, job quoted.
    let again = encrypted_request(&customer, &us, &token);
    customer.client.send_event(&again).await.unwrap();
    let reason = wait_error(&mut customer, us, again.id).await;
    assert!(reason.contains("already used"), "{reason}");
    assert!(!reason.contains(&token[6..]), "the token leaked");
    assert_eq!(
        node.job(&again.id.to_hex()).await.unwrap().state,
        JobState::Quoted
    );
    node.shutdown().await;

    assert_eq!(steps(&s.store(), &job), PAID_AND_DONE);
    let (payments, asset) = token_ledger(&s);
    assert_eq!(payments.len(), 1);
    let p = &payments[0];
    let ys: Vec<String> = proofs.iter().map(|p| p.y().unwrap().to_hex()).collect();
    assert_eq!(p.reference.as_str(), paydvm_mints::token_id(&ys));
    let linked: Vec<String> = p.linked.iter().map(|r| r.as_str().to_owned()).collect();
    assert_eq!(linked, ys);
    assert_eq!(p.amount, Msat::from_msat(5_000));
    assert_eq!(
        p.payer.as_ref().unwrap().as_str(),
        customer.keys.public_key().to_hex()
    );
    assert_eq!(
        p.asset,
        Asset::Mint {
            url: s.mint.url.clone()
        }
    );
    // The job stored its request as the signed event: ciphertext, so the token is not in it.
    let record = s
        .store()
        .state()
        .job(&paydvm_ledger::JobId::new(&job).unwrap())
        .cloned();
    assert_eq!(record.unwrap().revenue, Msat::from_msat(5_000));
    assert_eq!(asset, Msat::from_msat(5_000));
    assert_eq!(
        wallet_balance(&s).await,
        5,
        "the wallet holds what the ledger says"
    );
    // The wallet and the pending store hold bearer ecash: readable by their owner only,
    // whatever the umask (this process's is 022).
    for file in [
        paydvm::config::wallet_path(&s.ledger()),
        paydvm::config::pending_path(&s.ledger()),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_and_unlisted_mint_tokens_are_refused_and_stay_unspent() {
    let s = setup().await;
    let node = s.start().await;
    let us = node.pubkey();
    let mut customer = Customer::connect(&s.urls).await;
    let wallet = wallet(&s.mint.url).await;

    // In a clear tag, with the default policy (refuse).
    let public = mint_proofs(&wallet, 5, None).await;
    let request = customer.request(5050, "abc", &[&["cashu", &v4(&s.mint.url, &public)]]);
    customer.client.send_event(&request).await.unwrap();
    wait_quoted(&mut customer, us, request.id).await;
    let reason = wait_error(&mut customer, us, request.id).await;
    assert_eq!(reason, PUBLIC_TOKEN_REFUSED);

    // Encrypted, but from a mint we do not trust (the proofs are good at our mint).
    let unlisted = mint_proofs(&wallet, 5, None).await;
    let elsewhere = encrypted_request(&customer, &us, &v4("http://127.0.0.1:1", &unlisted));
    customer.client.send_event(&elsewhere).await.unwrap();
    let reason = wait_error(&mut customer, us, elsewhere.id).await;
    assert!(reason.contains("is not on our list"), "{reason}");

    for job in [&request, &elsewhere] {
        let state = node.job(&job.id.to_hex()).await.unwrap().state;
        assert_eq!(state, JobState::Quoted);
    }
    node.shutdown().await;
    assert_eq!(spent(&s, &public).await, vec![State::Unspent; public.len()]);
    assert_eq!(
        spent(&s, &unlisted).await,
        vec![State::Unspent; unlisted.len()]
    );
    let (payments, asset) = token_ledger(&s);
    assert!(payments.is_empty());
    assert!(asset.is_zero());
}

/// A token whose mint cannot be reached is put off and kept in the pending store (with when it
/// was first put off) across a restart; once `token_wait_secs` has passed since then, the
/// customer is told it was not taken, nothing is kept any more but the mark that it was given
/// up, and the token is still unspent at the mint (theirs to use), also after a restart with the
/// mint back offers the request again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_mint_stays_down_is_given_up_and_its_customer_told() {
    let s = setup_with("token_wait_secs = 4\n").await;
    let proofs = mint_proofs(&wallet(&s.mint.url).await, 5, None).await;
    s.mint.set_down(true);
    let node = s.start().await;
    let us = node.pubkey();
    let mut customer = Customer::connect(&s.urls).await;
    let request = encrypted_request(&customer, &us, &v4(&s.mint.url, &proofs));
    customer.client.send_event(&request).await.unwrap();
    wait_quoted(&mut customer, us, request.id).await;
    let stats = node.nutzap_stats().unwrap();
    crate::cashu_mint::wait_until("the token is put off", || stats.retried() >= 1).await;
    node.shutdown().await;
    let pending = PendingSwaps::open(&pending_path(&s.ledger())).unwrap();
    assert_eq!(pending.deferred().unwrap().len(), 1, "kept across the stop");

    let node = s.start().await;
    let reason = wait_error(&mut customer, us, request.id).await;
    assert_eq!(reason, GIVEN_UP);
    assert_eq!(
        node.job(&request.id.to_hex()).await.unwrap().state,
        JobState::Quoted
    );
    node.shutdown().await;
    assert!(pending.deferred().unwrap().is_empty(), "nothing kept");
    assert!(pending.all().unwrap().is_empty());
    assert!(pending.given_up(&request.id.to_hex()).unwrap());

    // The mint is back, and the next start's catch-up offers the request again (it is younger
    // than the give-up's reply by far less than 10 minutes): the tokens its customer was told
    // are theirs are not redeemed after all.
    s.mint.set_down(false);
    let node = s.start().await;
    let stats = node.nutzap_stats().unwrap();
    crate::cashu_mint::wait_until("the request is offered again", || {
        stats.duplicates() >= 1 || stats.credited() >= 1
    })
    .await;
    assert_eq!((stats.duplicates(), stats.credited()), (1, 0));
    assert_eq!(
        node.job(&request.id.to_hex()).await.unwrap().state,
        JobState::Quoted
    );
    node.shutdown().await;
    assert_eq!(spent(&s, &proofs).await, vec![State::Unspent; proofs.len()]);
    let (payments, asset) = token_ledger(&s);
    assert!(payments.is_empty());
    assert!(asset.is_zero());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_race_swap_a_public_cashua_token_pays() {
    let s = setup_with("public_tokens = \"race_swap\"\n").await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let proofs = mint_proofs(&wallet(&s.mint.url).await, 5, None).await;
    let token = v3(&s.mint.url, &proofs);
    assert!(token.starts_with("cashuA"));

    let request = customer.request(5050, "abc", &[&["cashu", &token]]);
    customer.client.send_event(&request).await.unwrap();
    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6050))
        .await;
    assert_eq!(result.content, "cba");
    wait_state(&node, &request.id.to_hex(), JobState::Succeeded).await;
    node.shutdown().await;

    assert_eq!(spent(&s, &proofs).await, vec![State::Spent; proofs.len()]);
    let (payments, asset) = token_ledger(&s);
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].amount, Msat::from_msat(5_000));
    assert_eq!(
        payments[0].evidence.as_ref().unwrap().as_str(),
        request.id.to_hex()
    );
    assert_eq!(asset, Msat::from_msat(5_000));
    assert_eq!(wallet_balance(&s).await, 5);
}

/// A Lightning backend that takes `delay` to make each invoice (a slow wallet service).
struct SlowInvoices {
    fake: FakeLightning,
    delay: Duration,
}

#[async_trait]
impl LightningBackend for SlowInvoices {
    fn name(&self) -> &'static str {
        "slow"
    }
    async fn create_invoice(
        &self,
        amount: Msat,
        description: InvoiceDescription,
        expiry_secs: u64,
    ) -> Result<IssuedInvoice, LightningError> {
        tokio::time::sleep(self.delay).await;
        self.fake
            .create_invoice(amount, description, expiry_secs)
            .await
    }
    async fn lookup_invoice(&self, payment_hash: &str) -> InvoiceStatus {
        self.fake.lookup_invoice(payment_hash).await
    }
    async fn pay_invoice(&self, bolt11: &str, max_fee: Msat) -> PaymentStatus {
        self.fake.pay_invoice(bolt11, max_fee).await
    }
    async fn lookup_payment(&self, payment_hash: &str) -> PaymentStatus {
        self.fake.lookup_payment(payment_hash).await
    }
    async fn balance(&self) -> Result<Msat, LightningError> {
        self.fake.balance().await
    }
    fn settlements(&self) -> Option<tokio::sync::broadcast::Receiver<Settlement>> {
        self.fake.settlements()
    }
}

/// A token reaches the Cashu rail before its job is quoted (the quote waits for the invoice): it
/// is swapped, its attempt stops waiting after 500 ms and the rail holds it; the core tells the
/// rail when the quote is written (`Command::WhenQuoted`), so the credit follows the quote at
/// once. Without the tell the held row would be let go to the retry timer only 5 s after it was
/// held (3.5 s after a 2 s invoice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_waiting_for_a_slow_invoice_is_taken_when_the_quote_is_written() {
    let s = setup().await;
    let backend = SlowInvoices {
        fake: FakeLightning::new(),
        delay: Duration::from_secs(2),
    };
    let options = NodeOptions {
        lightning: Some(Arc::new(backend)),
        ..NodeOptions::default()
    };
    let node = s.start_with(options).await;
    let us = node.pubkey();
    let mut customer = Customer::connect(&s.urls).await;
    let proofs = mint_proofs(&wallet(&s.mint.url).await, 5, None).await;
    let request = encrypted_request(&customer, &us, &v4(&s.mint.url, &proofs));
    customer.client.send_event(&request).await.unwrap();
    customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6050))
        .await;
    let job = request.id.to_hex();
    wait_state(&node, &job, JobState::Succeeded).await;
    node.shutdown().await;

    let store = s.store();
    assert_eq!(steps(&store, &job), PAID_AND_DONE);
    let trail = store.audit(&job).unwrap().unwrap().events;
    let at = |name: &str| {
        let e = trail.iter().find(|e| e.event.type_name() == name);
        e.unwrap_or_else(|| panic!("no {name}")).at
    };
    let (received, quoted, paid) = (
        at("job_received"),
        at("quote_issued"),
        at("payment_received"),
    );
    assert!(quoted - received >= 1_900, "the invoice took its 2 s");
    assert!(
        paid - quoted < 1_500,
        "the token was taken {} ms after the quote",
        paid - quoted
    );
    assert!(store.verify().is_ok());
}

/// The swap does not wait for the quote: with an invoice that takes 30 s, the token is spent at
/// the mint while the job is still `received`, and nothing is credited yet (a payment for a job
/// not quoted would be returned). The node stops there; the swapped row waits in the pending
/// store. Restarted with a quick Lightning backend, the job is quoted again and the token is
/// credited to it once: one payment, the wallet holds what the ledger says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_swapped_before_its_quote_and_credited_after_it_also_across_a_restart() {
    let s = setup().await;
    let slow = SlowInvoices {
        fake: FakeLightning::new(),
        delay: Duration::from_secs(30),
    };
    let node = s
        .start_with(NodeOptions {
            lightning: Some(Arc::new(slow)),
            ..NodeOptions::default()
        })
        .await;
    let us = node.pubkey();
    let customer = Customer::connect(&s.urls).await;
    let proofs = mint_proofs(&wallet(&s.mint.url).await, 5, None).await;
    let request = encrypted_request(&customer, &us, &v4(&s.mint.url, &proofs));
    customer.client.send_event(&request).await.unwrap();
    let job = request.id.to_hex();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while spent(&s, &proofs).await != vec![State::Spent; proofs.len()] {
        assert!(tokio::time::Instant::now() < deadline, "never swapped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let record = node.job(&job).await.unwrap();
    assert_eq!(record.state, JobState::Received, "swapped before the quote");
    assert!(
        record.funded_total.is_zero(),
        "nothing credited before the quote"
    );
    node.shutdown().await;
    assert!(token_ledger(&s).0.is_empty());

    let node = s.start().await;
    wait_state(&node, &job, JobState::Succeeded).await;
    node.shutdown().await;
    let store = s.store();
    assert_eq!(steps(&store, &job), PAID_AND_DONE);
    let trail = store.audit(&job).unwrap().unwrap().events;
    let at = |name: &str| trail.iter().position(|e| e.event.type_name() == name);
    assert!(at("quote_issued") < at("payment_received"));
    let (payments, asset) = token_ledger(&s);
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].amount, Msat::from_msat(5_000));
    assert_eq!(asset, Msat::from_msat(5_000));
    assert_eq!(wallet_balance(&s).await, 5);
}
