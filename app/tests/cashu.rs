//! The NutZap rail end to end: an in-process cdk mint ([`crate::cashu_mint`]), a LocalRelay,
//! the node, and a customer whose cdk wallet mints ecash
//! P2PK-locked to the key the node published in its kind 10019. The checks take the mint as a
//! parameter ([`MintUnderTest`]) so app/tests/nutshell.rs runs them against Nutshell.

use std::future::Future;

use cdk::nuts::Proof;
use cdk::wallet::ReceiveOptions;
use nostr_sdk::prelude::*;
use paydvm::config::pending_path;
use paydvm_ledger::store::Store;
use paydvm_ledger::{Asset, JobId, JobState, Msat, Rail};
use paydvm_mints::{PendingRows, PendingSwaps};

pub use crate::cashu_mint::{
    fetch, input_fee, mint_proofs, payments, setup_on, wait_until, wallet, CashuSetup,
    MintUnderTest, TestMint,
};
use crate::node::{is_status, steps, tag_values, wait_state, Customer};

/// A node trusting `mint`.
pub async fn setup<M: MintUnderTest>(mint: M) -> CashuSetup<M> {
    setup_on(mint, "").await
}

fn nutzap_payments(store: &Store) -> Vec<paydvm_ledger::Payment> {
    payments(store, Rail::NutZap)
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

/// A quoted 5050 job ("abc", 5000 msat) and its payment-required feedback.
async fn quoted_job(customer: &mut Customer) -> (Event, Event) {
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
    let s = setup(TestMint::start().await).await;
    let customer = wallet(s.mint.url()).await;
    check_a_nutzap_pays_a_quoted_job(&s, |sat, lock| async move {
        mint_proofs(&customer, sat, Some(&lock)).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_nutzaps_credit_nothing_and_the_node_goes_on() {
    check_bad_nutzaps_credit_nothing(&setup(TestMint::start().await).await).await;
}

/// A customer reads our 10019, gets ecash locked to our P2PK key from `ecash(sat, lock)` and
/// NutZaps a quoted job: the node verifies, swaps, runs and delivers; ledger trail, 7376 and the
/// node's wallet agree.
pub async fn check_a_nutzap_pays_a_quoted_job<Fut>(
    s: &CashuSetup<impl MintUnderTest>,
    ecash: impl FnOnce(u64, String) -> Fut,
) where
    Fut: Future<Output = Vec<Proof>>,
{
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let (request, quote) = quoted_job(&mut customer).await;
    let job = request.id.to_hex();
    // The quote says who bears the mint's input fee (the operator, by default).
    assert_eq!(
        tag_values(&quote, "cashu_fees"),
        Some(vec!["operator".to_owned()])
    );

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
    assert_eq!(tag("mint")[1..], [s.mint.url().to_owned(), "sat".into()]);
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

    let proofs = ecash(5, format!("02{p2pk}")).await;
    assert!(proofs.iter().all(|p| p.dleq.is_some()), "mint gave no DLEQ");
    let zap = nutzap(
        &customer.keys,
        &proofs,
        s.mint.url(),
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
        [(url, paydvm_mints::MintStatus::Up { keysets })] if url == s.mint.url() && *keysets >= 1
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
            url: s.mint.url().to_owned()
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
    // The node pays the mint's input fee on its swap: the job gets the face value, the fee is
    // booked to expense:fees, so the asset account holds what the wallet holds.
    let fee = input_fee(&s.mint, proofs.len());
    let wallet_sat = redeemer.balance(s.mint.url(), "sat").await.unwrap();
    assert_eq!(wallet_sat, 5 - fee);
    assert_eq!(p.fee, Msat::from_msat(fee * 1000));
    let state = store.state();
    let mint_asset = paydvm_ledger::Account::Asset(Asset::Mint {
        url: s.mint.url().to_owned(),
    });
    assert_eq!(
        state.balance(&mint_asset).signed(true),
        i128::from(wallet_sat * 1000),
        "the ledger's mint account holds what the wallet holds"
    );
    assert_eq!(
        state.balance(&paydvm_ledger::Account::Fees).signed(true),
        i128::from(fee * 1000)
    );
}

/// Every must-reject case against one mint; only the one good NutZap credits.
pub async fn check_bad_nutzaps_credit_nothing(s: &CashuSetup<impl MintUnderTest>) {
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let (request, quote) = quoted_job(&mut customer).await;
    let job = request.id.to_hex();
    let us = node.pubkey();
    let wallet = wallet(s.mint.url()).await;
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
        s.mint.url(),
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
        s.mint.url(),
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
        s.mint.url(),
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
        s.mint.url(),
        "sat",
        target,
        &us,
        "e",
    ));
    // Already spent at the mint: a thief with our key swapped them first.
    let p_spent = ours(5).await;
    let thief = self::wallet(s.mint.url()).await;
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
        s.mint.url(),
        "sat",
        target,
        &us,
        "f",
    ));

    // A good one pays the job; the same event again and its proofs under a new event do not.
    let good = nutzap(&customer.keys, &p, s.mint.url(), "sat", target, &us, "good");
    send(good.clone());
    let stats = node.nutzap_stats().unwrap();
    wait_until("the good NutZap is credited", || stats.credited() == 1).await;
    send(good.clone());
    send(nutzap(
        &customer.keys,
        &p,
        s.mint.url(),
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
    assert_eq!(
        stats.rejected(),
        7,
        "a–f and the replayed proofs: {:#?}",
        stats.refusals()
    );
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
    // In any order: the spent NutZap's refusal comes from its swap at the mint, which a loaded
    // machine may finish after the replay's offline refusal.
    assert_eq!(reasons.len(), expected.len(), "{reasons:#?}");
    for want in expected {
        let found = reasons.iter().filter(|r| r.contains(want)).count();
        assert_eq!(found, 1, "{want:?} in {reasons:#?}");
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
    let s = setup(TestMint::start().await).await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let (request, quote) = quoted_job(&mut customer).await;
    let job = request.id.to_hex();
    let wallet = wallet(s.mint.url()).await;
    let proofs = mint_proofs(&wallet, 5, Some(&s.lock())).await;
    // The node has the mint's keysets (fetched at start); now the mint goes away.
    let stats = node.nutzap_stats().unwrap();
    wait_until("keysets loaded", || stats.ready()).await;
    s.mint.set_down(true);
    let zap = nutzap(
        &customer.keys,
        &proofs,
        s.mint.url(),
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

/// A NutZap that arrives while its mint cannot be asked for its keysets (the node started while
/// the mint was down) is put off, and kept in the pending store as the event it came in: after a
/// restart it is decided from there, though no relay offers it again (it was handed to the node
/// directly, never published), and pays its job once. Kept in memory only, it was lost with the
/// stop and the job stayed quoted. It waits longer than `token_wait_secs` meanwhile: that gives
/// up a request's tokens, never a NutZap (its proofs are locked to our key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nutzap_put_off_for_its_mint_is_kept_across_a_restart() {
    let s = setup_on(TestMint::start().await, "token_wait_secs = 1\n").await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let (request, quote) = quoted_job(&mut customer).await;
    let job = request.id.to_hex();
    let proofs = mint_proofs(&wallet(s.mint.url()).await, 5, Some(&s.lock())).await;
    node.shutdown().await;

    s.mint.set_down(true);
    let node = s.start().await;
    let stats = node.nutzap_stats().unwrap();
    wait_until("the rail is up", || stats.ready()).await;
    let zap = nutzap(
        &customer.keys,
        &proofs,
        s.mint.url(),
        "sat",
        Some(quote.id),
        &node.pubkey(),
        "mint down",
    );
    assert!(node.submit_nutzap(zap.clone()));
    // Tried at once, after 1 s and after 2 s more: past the tokens' wait.
    wait_until("the NutZap is put off thrice", || stats.retried() >= 3).await;
    assert_eq!(stats.rejected(), 0, "a NutZap is not given up");
    assert_eq!(stats.deferred(), 1);
    node.shutdown().await;
    let pending = PendingSwaps::open(&pending_path(&s.ledger())).unwrap();
    let kept = pending.deferred().unwrap();
    assert_eq!(kept.len(), 1, "kept across the stop");
    assert_eq!(kept[0].event_id, zap.id.to_hex());
    assert!(
        pending.all().unwrap().is_empty(),
        "not checked, so not pending"
    );
    assert!(nutzap_payments(&s.store()).is_empty());
    // Reconcile names it under its mint, in neither figure.
    let (_, report) = crate::reconcile::reconcile_json(&s.config).await;
    let mint = crate::reconcile::asset(&report, &format!("asset:mint:{}", s.mint.url()));
    let waits = format!("NutZap {} waits for this mint", zap.id.to_hex());
    assert!(mint["notes"].to_string().contains(&waits), "{report:#}");

    s.mint.set_down(false);
    let node = s.start().await;
    wait_state(&node, &job, JobState::Succeeded).await;
    let stats = node.nutzap_stats().unwrap();
    wait_until("credited", || stats.credited() == 1).await;
    assert_eq!(stats.deferred(), 0);
    node.shutdown().await;
    let store = s.store();
    let payments = nutzap_payments(&store);
    assert_eq!(payments.len(), 1);
    assert_eq!(
        payments[0].reference.as_str(),
        format!("nutzap:{}", zap.id.to_hex())
    );
    assert!(
        pending.deferred().unwrap().is_empty(),
        "forgotten once decided"
    );
    assert!(pending.all().unwrap().is_empty());
    assert_eq!(crate::cashu_mint::wallet_balance(&s).await, 5);
    assert!(store.verify().is_ok());
}

/// The mint rotates its keyset twice while the node runs, after the node's wallet swapped with
/// the first one (and cached the mint's list). After the first rotation a NutZap of proofs from
/// before it (their keyset now inactive: redeemed, never signed with) pays its job: the swap
/// planned on the cached, now inactive keyset is refused as such, the list is fetched again and
/// the swap planned afresh. After the second, a NutZap of the newest keyset's proofs (unknown to
/// the wallet's list) pays its job: the list is fetched again before the keyset is called
/// unknown. Before either fix the NutZap was refused for good ("Unknown Keyset" or "Inactive
/// Keyset") and its job stayed quoted, the proofs locked to our key and never redeemed. The
/// wallet holds every payment, and the ledger's mint asset says the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keysets_rotated_while_the_node_runs_still_take_old_and_new_proofs() {
    let s = setup(TestMint::start().await).await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let before = mint_proofs(&wallet(s.mint.url()).await, 5, Some(&s.lock())).await;
    let mut pay = async |text: &str, proofs: &[Proof]| {
        let (request, quote) = quoted_job_for(&mut customer, text).await;
        let zap = nutzap(
            &customer.keys,
            proofs,
            s.mint.url(),
            "sat",
            Some(quote.id),
            &node.pubkey(),
            text,
        );
        customer.client.send_event(&zap).await.unwrap();
        wait_state(&node, &request.id.to_hex(), JobState::Succeeded).await;
    };
    let first = mint_proofs(&wallet(s.mint.url()).await, 5, Some(&s.lock())).await;
    pay("before the rotations", &first).await;

    let second = s.mint.rotate_keyset().await.unwrap();
    assert_ne!(before[0].keyset_id.to_string(), second);
    pay("an inactive keyset's proofs", &before).await;

    let third = s.mint.rotate_keyset().await.unwrap();
    let newest = mint_proofs(&wallet(s.mint.url()).await, 5, Some(&s.lock())).await;
    assert!(newest.iter().all(|p| p.keyset_id.to_string() == third));
    pay("the newest keyset's proofs", &newest).await;
    let stats = node.nutzap_stats().unwrap();
    assert_eq!((stats.credited(), stats.rejected()), (3, 0));
    node.shutdown().await;

    let store = s.store();
    assert_eq!(nutzap_payments(&store).len(), 3);
    assert_eq!(crate::cashu_mint::wallet_balance(&s).await, 15);
    let asset = paydvm_ledger::Account::Asset(Asset::Mint {
        url: s.mint.url().to_owned(),
    });
    assert_eq!(store.state().balance(&asset).signed(true), 15_000);
    assert!(store.verify().is_ok());
}

/// NutZaps arriving together are swapped at once, not one after another, and each once: the
/// mint holds every swap 1.2 s (longer than the rail's 0.5 s retry tick, so a row being swapped
/// is due again meanwhile) while four NutZaps for four jobs arrive. Each job is paid once, the
/// mint was asked for four swaps and held at least two at the same moment, nothing was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nutzaps_arriving_together_are_swapped_at_once_and_each_once() {
    let s = setup(TestMint::start().await).await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let wallet = wallet(s.mint.url()).await;
    let stats = node.nutzap_stats().unwrap();
    wait_until("keysets loaded", || stats.ready()).await;
    let mut jobs = Vec::new();
    for i in 0..4 {
        let (request, quote) = quoted_job_for(&mut customer, &format!("together {i}")).await;
        let proofs = mint_proofs(&wallet, 5, Some(&s.lock())).await;
        let zap = nutzap(
            &customer.keys,
            &proofs,
            s.mint.url(),
            "sat",
            Some(quote.id),
            &node.pubkey(),
            "together",
        );
        jobs.push((request.id.to_hex(), zap));
    }
    s.mint.hold_swaps(std::time::Duration::from_millis(1200));
    for (_, zap) in &jobs {
        customer.client.send_event(zap).await.unwrap();
    }
    for (job, _) in &jobs {
        wait_state(&node, job, JobState::Succeeded).await;
    }
    s.mint.hold_swaps(std::time::Duration::ZERO);
    assert_eq!((stats.credited(), stats.rejected()), (4, 0));
    node.shutdown().await;
    assert_eq!(s.mint.swaps(), 4, "each NutZap swapped once");
    assert_eq!(
        s.mint.swap_requests(),
        4,
        "no NutZap sent to the mint twice"
    );
    assert!(
        s.mint.most_swaps_at_once() >= 2,
        "the swaps ran one after another"
    );
    let store = s.store();
    assert_eq!(nutzap_payments(&store).len(), 4);
    assert_eq!(crate::cashu_mint::wallet_balance(&s).await, 20);
    assert!(store.verify().is_ok());
}

/// The mint performs a NutZap's swap but its answer is lost, and the node stops. The swap's
/// outputs were planned (and written) before it was sent, so after the restart the same swap
/// is sent again: the mint answers it (or says "spent" and restores our outputs), and the job is
/// paid once, with the wallet holding exactly the NutZap's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nutzap_whose_swap_answer_was_lost_is_credited_once_after_a_restart() {
    let s = setup(TestMint::start().await).await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let (request, quote) = quoted_job(&mut customer).await;
    let job = request.id.to_hex();
    let proofs = mint_proofs(&wallet(s.mint.url()).await, 5, Some(&s.lock())).await;
    let stats = node.nutzap_stats().unwrap();
    wait_until("keysets loaded", || stats.ready()).await;
    s.mint.lose_swap_answers(1);
    let zap = nutzap(
        &customer.keys,
        &proofs,
        s.mint.url(),
        "sat",
        Some(quote.id),
        &node.pubkey(),
        "lost",
    );
    customer.client.send_event(&zap).await.unwrap();
    wait_until("the swap was performed", || s.mint.swaps() == 1).await;
    wait_until("its answer never came", || stats.retried() >= 1).await;
    node.shutdown().await;
    assert!(
        nutzap_payments(&s.store()).is_empty(),
        "nothing credited on a lost answer"
    );

    let node = s.start().await;
    wait_state(&node, &job, JobState::Succeeded).await;
    node.shutdown().await;
    let store = s.store();
    assert_eq!(nutzap_payments(&store).len(), 1);
    assert_eq!(crate::cashu_mint::wallet_balance(&s).await, 5);
    assert!(store.verify().is_ok());
}
