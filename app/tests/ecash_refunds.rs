//! Ecash refunds end to end on 127.0.0.1: a NutZap-paid job fails and the node pays it back from
//! its cdk wallet at the same in-process mint, either as a NutZap locked to the key in the
//! customer's kind 10019 or, without one, as a token in a NIP-17 private message. The customer
//! claims the refund at the mint with their own wallet: that is the proof it arrived.

use std::time::Duration;

use cdk::nuts::{Proof, SecretKey as CashuSecretKey};
use cdk::wallet::ReceiveOptions;
use nostr_sdk::prelude::*;
use paydvm_ledger::{JobState, Msat, RefundId, RefundState};

use crate::cashu::nutzap;
use crate::cashu_mint::{
    fetch, mint_proofs, setup, setup_on, wallet, wallet_balance, CashuSetup, MintUnderTest,
    TestMint,
};
use crate::node::{is_status, wait_state, Customer};

/// A NutZap-paid job that fails: returns the request once the node owes a refund.
async fn failed_nutzap_job(s: &CashuSetup, customer: &mut Customer) -> Event {
    let request = customer.request(5050, "abc", &[&["param", "mode", "fail"]]);
    customer.client.send_event(&request).await.unwrap();
    let quote = customer
        .wait_for(request.id, is_status("payment-required"))
        .await;
    let proofs = mint_proofs(&wallet(&s.mint.url).await, 5, Some(&s.lock())).await;
    let node_key = PublicKey::from_hex(&quote.pubkey.to_hex()).unwrap();
    let zap = nutzap(
        &customer.keys,
        &proofs,
        &s.mint.url,
        "sat",
        Some(quote.id),
        &node_key,
        "pay",
    );
    customer.client.send_event(&zap).await.unwrap();
    customer.wait_for(request.id, is_status("error")).await;
    request
}

fn refund_state(s: &CashuSetup, job: &str) -> (RefundState, u32, String) {
    let id = RefundId::new(format!("{job}:fail")).unwrap();
    let r = s
        .store()
        .state()
        .refund(&id)
        .cloned()
        .expect("a refund is owed");
    (
        r.state,
        r.attempts,
        r.route.map(|r| r.destination).unwrap_or_default(),
    )
}

/// The wallet tag of a job's `:fail` refund attempt, as the ledger recorded its route.
fn refund_tag<M: MintUnderTest>(s: &CashuSetup<M>, job: &str) -> String {
    let id = RefundId::new(format!("{job}:fail")).unwrap();
    let r = s.store().state().refund(&id).cloned().expect("a refund");
    r.route.expect("a route").lookup
}

/// The customer's own wallet claims `proofs` at the mint (signing with `key` if locked).
pub(crate) async fn claim<M: MintUnderTest>(
    s: &CashuSetup<M>,
    proofs: Vec<Proof>,
    key: Option<&Keys>,
) -> u64 {
    let w = wallet(s.mint.url()).await;
    let signing = key
        .map(|k| vec![CashuSecretKey::from_slice(&k.secret_key().secret_bytes()).unwrap()])
        .unwrap_or_default();
    let options = ReceiveOptions {
        p2pk_signing_keys: signing,
        ..Default::default()
    };
    u64::from(w.receive_proofs(proofs, options, None, None).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_nutzap_job_is_refunded_as_a_nutzap_locked_to_the_customers_10019_key() {
    let s = setup().await;
    // This node never contacts a relay on its own host on a customer's say-so (the fixture
    // allows it); our relay is ours, so it is used all the same.
    crate::node::refuse_customer_loopback(&s.config);
    let (inside, connections) = crate::node::counting_listener().await;
    let mut customer = Customer::connect(&s.urls).await;
    // The customer takes NutZaps at our mint, locked to a key of their own; its 10019 also
    // names an address on the node's host as a relay.
    let p2pk = Keys::generate();
    let info = EventBuilder::new(Kind::from(10019), "").tags([
        Tag::parse(["relay", inside.as_str()]).unwrap(),
        Tag::parse(["relay", s.urls[0].as_str()]).unwrap(),
        Tag::parse(["mint", s.mint.url.as_str(), "sat"]).unwrap(),
        Tag::parse(["pubkey", &p2pk.public_key().to_hex()]).unwrap(),
    ]);
    customer.client.send_event_builder(info).await.unwrap();
    let node = s.start().await;
    let request = failed_nutzap_job(&s, &mut customer).await;
    let job = request.id.to_hex();
    wait_state(&node, &job, JobState::Refunded).await;
    node.shutdown().await;

    let (state, attempts, destination) = refund_state(&s, &job);
    assert_eq!((state, attempts), (RefundState::Settled, 1));
    assert!(destination.starts_with("nutzap "), "{destination}");
    // The refund NutZap on the relay: from the node, to the customer, naming the job.
    let refunds = fetch(
        &s.urls,
        Filter::new()
            .kind(Kind::from(9321))
            .pubkey(customer.keys.public_key()),
    )
    .await;
    assert_eq!(refunds.len(), 1, "exactly one refund NutZap");
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    let zap = &refunds[0];
    assert!(zap.tags.event_ids().any(|id| *id == request.id));
    let proofs: Vec<Proof> = zap
        .tags
        .iter()
        .filter(|t| t.kind() == TagKind::custom("proof"))
        .map(|t| serde_json::from_str(t.content().unwrap()).unwrap())
        .collect();
    let total: u64 = proofs.iter().map(|p| u64::from(p.amount)).sum();
    assert_eq!(total, 5);
    // Locked: only the customer's 10019 key can claim it.
    assert!(wallet(&s.mint.url)
        .await
        .receive_proofs(proofs.clone(), ReceiveOptions::default(), None, None)
        .await
        .is_err());
    assert_eq!(claim(&s, proofs, Some(&p2pk)).await, 5);
    // The node's wallet gave back what it took: nothing left at the mint for this job.
    assert_eq!(crate::cashu_mint::wallet_balance(&s).await, 0);
    // Running that attempt again gives the same token back (made once), now seen as claimed.
    let key =
        paydvm_mints::ReceiveKey::from_secret_bytes(&s.p2pk.secret_key().secret_bytes()).unwrap();
    let redeemer = paydvm_mints::Redeemer::open(&paydvm::config::wallet_path(&s.ledger()), key)
        .await
        .unwrap();
    let swaps = s.mint.swaps();
    let tag = refund_tag(&s, &job);
    assert!(matches!(
        redeemer.run_refund(&tag).await,
        paydvm_mints::RefundRun::Token(_)
    ));
    assert_eq!(redeemer.refund_claimed(&tag).await, Ok(Some(true)));
    assert_eq!(s.mint.swaps(), swaps, "no second swap");
    assert_eq!(redeemer.balance(&s.mint.url, "sat").await.unwrap(), 0);
    let store = s.store();
    let refund = store
        .state()
        .refund(&RefundId::new(format!("{job}:fail")).unwrap())
        .cloned()
        .unwrap();
    assert_eq!(refund.amount, Msat::from_msat(5_000));
    assert!(store.verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_10019_the_refund_token_comes_in_a_private_message_and_only_once() {
    let s = setup().await;
    let mut customer = Customer::connect(&s.urls).await;
    let node = s.start().await;
    let request = failed_nutzap_job(&s, &mut customer).await;
    let job = request.id.to_hex();
    wait_state(&node, &job, JobState::Refunded).await;
    node.shutdown().await;
    let (_, _, destination) = refund_state(&s, &job);
    assert!(destination.starts_with("dm "), "{destination}");

    // A restart finds the refund settled and sends nothing more.
    let node = s.start().await;
    let _ = node.job(&job).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.shutdown().await;

    let wraps = fetch(
        &s.urls,
        Filter::new()
            .kind(Kind::GiftWrap)
            .pubkey(customer.keys.public_key()),
    )
    .await;
    assert_eq!(wraps.len(), 1, "one private message");
    let opened = customer.client.unwrap_gift_wrap(&wraps[0]).await.unwrap();
    let text = opened.rumor.content;
    assert!(text.contains(&job), "{text}");
    let token_text = text.split_whitespace().last().unwrap();
    let claimed = wallet(&s.mint.url)
        .await
        .receive(token_text, ReceiveOptions::default())
        .await
        .unwrap();
    assert_eq!(u64::from(claimed), 5);
    assert!(s.store().verify().is_ok());
}

/// The customer's kind 10019: NutZaps at our mint, locked to a key of their own (returned).
pub(crate) async fn publish_10019<M: MintUnderTest>(
    s: &CashuSetup<M>,
    customer: &Customer,
) -> Keys {
    publish_10019_on(customer, &s.urls[0], s.mint.url()).await
}

/// The customer's kind 10019 on `relay`: NutZaps at `mint` (sat), locked to a key of their own
/// (returned).
pub(crate) async fn publish_10019_on(customer: &Customer, relay: &RelayUrl, mint: &str) -> Keys {
    let p2pk = Keys::generate();
    let info = EventBuilder::new(Kind::from(10019), "").tags([
        Tag::parse(["relay", relay.as_str()]).unwrap(),
        Tag::parse(["mint", mint, "sat"]).unwrap(),
        Tag::parse(["pubkey", &p2pk.public_key().to_hex()]).unwrap(),
    ]);
    customer.client.send_event_builder(info).await.unwrap();
    p2pk
}

/// A 5050 request in `mode`, answered with `payment-required`: (job id, the quote).
pub(crate) async fn quoted_job(customer: &mut Customer, mode: &str) -> (String, Event) {
    let request = customer.request(5050, "abc", &[&["param", "mode", mode]]);
    customer.client.send_event(&request).await.unwrap();
    let quote = customer
        .wait_for(request.id, is_status("payment-required"))
        .await;
    (request.id.to_hex(), quote)
}

/// Pays `quote` with a NutZap of `sat` locked to the node's key.
pub(crate) async fn pay_by_nutzap<M: MintUnderTest>(
    s: &CashuSetup<M>,
    customer: &Customer,
    quote: &Event,
    sat: u64,
) {
    send_nutzap(customer, s.mint.url(), &s.lock(), quote, sat).await;
}

/// Pays `quote` with a NutZap of `sat` at `mint`, locked to `lock` (the node's "02" + x-only
/// NutZap key).
pub(crate) async fn send_nutzap(
    customer: &Customer,
    mint: &str,
    lock: &str,
    quote: &Event,
    sat: u64,
) {
    let proofs = mint_proofs(&wallet(mint).await, sat, Some(lock)).await;
    let zap = nutzap(
        &customer.keys,
        &proofs,
        mint,
        "sat",
        Some(quote.id),
        &quote.pubkey,
        "pay",
    );
    customer.client.send_event(&zap).await.unwrap();
}

/// The refund NutZaps on the relay for `job`, and their proofs.
pub(crate) async fn refund_nutzaps(
    urls: &[RelayUrl],
    customer: &Customer,
    job: &str,
) -> Vec<Vec<Proof>> {
    let job = EventId::from_hex(job).unwrap();
    fetch(
        urls,
        Filter::new()
            .kind(Kind::from(9321))
            .pubkey(customer.keys.public_key()),
    )
    .await
    .into_iter()
    .filter(|z| z.tags.event_ids().any(|id| *id == job))
    .map(|z| {
        z.tags
            .iter()
            .filter(|t| t.kind() == TagKind::custom("proof"))
            .map(|t| serde_json::from_str(t.content().unwrap()).unwrap())
            .collect()
    })
    .collect()
}

/// Issue 10, problem 1: while a refund's swap is slow at the mint, a NutZap for another job
/// arrives. The refund is booked settled only once its token was handed over, and the customer
/// can claim it; the other job is paid and the wallet holds exactly its money.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nutzap_arriving_during_a_slow_refund_swap_never_makes_the_refund_look_paid() {
    let s = setup().await;
    let mut customer = Customer::connect(&s.urls).await;
    let p2pk = publish_10019(&s, &customer).await;
    let node = s.start().await;
    let (failing, fail_quote) = quoted_job(&mut customer, "fail").await;
    let (other, other_quote) = quoted_job(&mut customer, "upper").await;
    s.mint.hold_swaps(Duration::from_secs(3));
    pay_by_nutzap(&s, &customer, &fail_quote, 5).await;
    // The refund is recorded as started; its swap is now held at the mint.
    wait_state(&node, &failing, JobState::Refunding).await;
    pay_by_nutzap(&s, &customer, &other_quote, 5).await;
    wait_state(&node, &other, JobState::Succeeded).await;
    wait_state(&node, &failing, JobState::Refunded).await;
    node.shutdown().await;
    s.mint.hold_swaps(Duration::ZERO);

    let handed_over = refund_nutzaps(&s.urls, &customer, &failing).await;
    assert_eq!(handed_over.len(), 1, "the refund was handed over once");
    assert_eq!(claim(&s, handed_over[0].clone(), Some(&p2pk)).await, 5);
    assert_eq!(
        wallet_balance(&s).await,
        5,
        "the other job's 5 sat, nothing stranded"
    );
    assert_eq!(refund_state(&s, &failing).0, RefundState::Settled);
    assert!(s.store().verify().is_ok());
}

/// Issue 10, problem 2: the mint performs the refund's swap but its answer is lost, and the node
/// stops before learning anything. After the restart the token is restored from the mint (our
/// outputs are derived from the attempt), handed over once, and claimable; no second swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_swap_whose_answer_was_lost_before_a_restart_is_restored_and_paid_once() {
    let s = setup().await;
    let mut customer = Customer::connect(&s.urls).await;
    let p2pk = publish_10019(&s, &customer).await;
    let node = s.start().await;
    let (job, quote) = quoted_job(&mut customer, "fail").await;
    // Swaps take 2 s: time to arm the fault after the payment's own swap, before the refund's.
    s.mint.hold_swaps(Duration::from_secs(2));
    pay_by_nutzap(&s, &customer, &quote, 5).await;
    wait_state(&node, &job, JobState::Refunding).await;
    s.mint.lose_swap_answers(1);
    wait_state(&node, &job, JobState::RefundPending).await;
    node.shutdown().await;
    assert_eq!(s.mint.swaps(), 2, "the payment's swap and the refund's");
    assert_eq!(refund_state(&s, &job).0, RefundState::Unknown);
    s.mint.hold_swaps(Duration::ZERO);

    // The restarted node sends the same swap again (same inputs, same derived outputs): the mint
    // answers it from its NUT-19 cache or says "spent" and restores our outputs; either way it
    // signs nothing new.
    let node = s.start().await;
    wait_state(&node, &job, JobState::Refunded).await;
    node.shutdown().await;
    let handed_over = refund_nutzaps(&s.urls, &customer, &job).await;
    assert_eq!(handed_over.len(), 1);
    assert_eq!(claim(&s, handed_over[0].clone(), Some(&p2pk)).await, 5);
    assert_eq!(wallet_balance(&s).await, 0);
    assert!(s.store().verify().is_ok());
}

/// Issue 10, problem 5: the operator bears the mint's input fee; a 5-sat NutZap leaves less than
/// 5 sat in the wallet, so the 5-sat refund cannot be paid from this mint. It waits with the numbers and
/// what the operator can do, instead of asking the mint for money the wallet does not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_borne_fee_refund_the_wallet_cannot_cover_waits_with_the_reason() {
    let s = setup_on(TestMint::with_fee(400).await, "").await;
    let mut customer = Customer::connect(&s.urls).await;
    publish_10019(&s, &customer).await;
    let node = s.start().await;
    let (job, quote) = quoted_job(&mut customer, "fail").await;
    pay_by_nutzap(&s, &customer, &quote, 5).await;
    wait_state(&node, &job, JobState::RefundDue).await;
    let id = RefundId::new(format!("{job}:fail")).unwrap();
    let deadline = tokio::time::Instant::now() + crate::cashu_mint::WAIT;
    let reason = loop {
        let deferred = s
            .store()
            .state()
            .refund(&id)
            .and_then(|r| r.deferred.clone());
        if let Some(reason) = deferred {
            break reason;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refund never said why it waits"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    node.shutdown().await;
    // The payment's swap cost a fee, so the wallet (and the ledger's account for it) holds less
    // than the 5 sat owed.
    let held = wallet_balance(&s).await;
    assert!(held < 5, "{held}");
    assert!(
        reason.contains(&format!("has {} msat available", held * 1000)),
        "{reason}"
    );
    assert!(reason.contains("this refund needs 5000 msat"), "{reason}");
    assert!(
        reason.contains("float") && reason.contains("write-off"),
        "{reason}"
    );
    assert_eq!(
        s.mint.swaps(),
        1,
        "only the payment's swap: nothing was asked of the mint for the refund"
    );
    assert!(s.store().verify().is_ok());
}

/// The mint rotates its keyset while a refund's swap is on its way, planned on the keyset the
/// node's wallet had cached: the mint refuses outputs on an inactive keyset, the attempt is
/// abandoned (nothing happened at the mint), the wallet fetches the mint's list, and the next
/// attempt plans on the new keyset and pays the refund once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_planned_on_a_keyset_the_mint_rotated_out_is_planned_again_and_paid_once() {
    let s = setup().await;
    let mut customer = Customer::connect(&s.urls).await;
    let p2pk = publish_10019(&s, &customer).await;
    let node = s.start().await;
    let (job, quote) = quoted_job(&mut customer, "fail").await;
    // Swaps take 2 s: the payment's own swap warms the wallet's keyset cache, and the rotation
    // lands while the refund's swap (planned on that cache) waits at the mint.
    s.mint.hold_swaps(Duration::from_secs(2));
    pay_by_nutzap(&s, &customer, &quote, 5).await;
    wait_state(&node, &job, JobState::Refunding).await;
    let rotated = s.mint.rotate_keyset().await.unwrap();
    wait_state(&node, &job, JobState::Refunded).await;
    node.shutdown().await;
    s.mint.hold_swaps(Duration::ZERO);

    let (state, attempts, _) = refund_state(&s, &job);
    assert_eq!((state, attempts), (RefundState::Settled, 2));
    let reasons = crate::refunds::refund_reasons(&s.store(), &job);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("rotated its keyset"), "{reasons:?}");
    let handed_over = refund_nutzaps(&s.urls, &customer, &job).await;
    assert_eq!(handed_over.len(), 1, "the refund was handed over once");
    assert!(
        handed_over[0]
            .iter()
            .all(|p| p.keyset_id.to_string() == rotated),
        "the refund's proofs are of the new keyset"
    );
    assert_eq!(claim(&s, handed_over[0].clone(), Some(&p2pk)).await, 5);
    assert_eq!(wallet_balance(&s).await, 0);
    assert!(s.store().verify().is_ok());
}
