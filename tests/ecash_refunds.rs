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
use crate::cashu_mint::{fetch, mint_proofs, setup, wallet, CashuSetup};
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

/// The customer's own wallet claims `proofs` at the mint (signing with `key` if locked).
async fn claim(s: &CashuSetup, proofs: Vec<Proof>, key: Option<&Keys>) -> u64 {
    let w = wallet(&s.mint.url).await;
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
    let mut customer = Customer::connect(&s.urls).await;
    // The customer takes NutZaps at our mint, locked to a key of their own.
    let p2pk = Keys::generate();
    let info = EventBuilder::new(Kind::from(10019), "").tags([
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
    // Asking the wallet again for that attempt's token makes no second one.
    let key =
        paydvm_mints::ReceiveKey::from_secret_bytes(&s.p2pk.secret_key().secret_bytes()).unwrap();
    let redeemer = paydvm_mints::Redeemer::open(&paydvm::config::wallet_path(&s.ledger()), key)
        .await
        .unwrap();
    let again = redeemer
        .refund_token(
            &s.mint.url,
            "sat",
            5,
            Some(&p2pk.public_key().to_hex()),
            &format!("{job}:fail#1"),
        )
        .await;
    assert!(
        matches!(&again, Err(paydvm_mints::RefundTokenError::AlreadyClaimed))
            || matches!(&again, Ok(t) if t.found_again),
        "{again:?}"
    );
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
