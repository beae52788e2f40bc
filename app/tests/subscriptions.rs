//! Subscriptions (NIP-88 proposal) end to end on 127.0.0.1: a real relay, the node with the
//! built-in `FakeLightning` (real regtest invoices), and a customer. The customer reads our tier
//! (kind 37001), subscribes (kind 7001), pays the quoted invoice, gets our receipt (kind 7003)
//! and runs jobs on the quota until it is used up; or pays by zapping the subscribe request.
//! Checked on the relay and in the ledger.

use std::sync::Arc;
use std::time::Duration;

use nostr_sdk::prelude::*;
use paydvm::lightning::fake::FakeLightning;
use paydvm::lightning::Invoice;
use paydvm::node::NodeOptions;
use paydvm_ledger::{Account, EntitlementState, EventBody, Msat, SubscriptionId};
use paydvm_testkit::fixture::Fixture;
use paydvm_testkit::zapper;
use paydvm_testkit::zapper::customer::{request_zap_invoice, ZapOrder};
use paydvm_testkit::zapper::{Zapper, ZapperOptions};

use crate::node::{is_status, tag_values, test_node, Customer, Setup};

pub const TIER: &str = r#"
[[subscriptions.tier]]
id = "gold"
name = "Gold"
price_msat = 20000
period_secs = 3600
quota = 2
kinds = [5050]
"#;

async fn setup() -> Setup {
    let node = test_node("refund", "").policy(TIER);
    Setup::build(Fixture::builder(node).relays(1)).await
}

fn lightning(ln: &FakeLightning) -> NodeOptions {
    NodeOptions {
        lightning: Some(Arc::new(ln.clone())),
        ..NodeOptions::default()
    }
}

/// Our tier as a client finds it on the relay: the 37001 by the node with `d` = gold.
async fn tier_event(customer: &Customer, node: &PublicKey) -> Event {
    addressable(customer, node, 37001, "gold").await
}

/// Our addressable event `kind:us:d` as a client finds it on the relay (published with the
/// node's other announcements, shortly after it starts).
async fn addressable(customer: &Customer, node: &PublicKey, kind: u16, d: &str) -> Event {
    let filter = Filter::new()
        .kind(Kind::Custom(kind))
        .author(*node)
        .identifier(d);
    for _ in 0..100 {
        let found = customer
            .client
            .fetch_events(filter.clone(), Duration::from_secs(2))
            .await
            .unwrap();
        if let Some(event) = found.into_iter().next() {
            return event;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the node never published {kind}:{d}");
}

/// The NIP-89 announcement `d` (kind 31990).
async fn announcement(customer: &Customer, node: &PublicKey, d: &str) -> Event {
    addressable(customer, node, 31990, d).await
}

fn subscribe(customer: &Customer, node: &PublicKey, tier: &Event) -> Event {
    let node = node.to_hex();
    let tags = [
        vec!["p".to_owned(), node.clone()],
        // NDK's shape: the tier by id and by address.
        vec!["e".to_owned(), tier.id.to_hex()],
        vec!["a".to_owned(), format!("37001:{node}:gold")],
        vec![
            "amount".to_owned(),
            "20000".into(),
            "msats".into(),
            "hourly".into(),
        ],
    ];
    EventBuilder::new(Kind::Custom(7001), "")
        .tags(tags.into_iter().map(|t| Tag::parse(t).unwrap()))
        .sign_with_keys(&customer.keys)
        .unwrap()
}

/// A customer (listening for our 7003s) who found our tier, subscribed with NDK's 7001 shape and
/// got the quote: the customer, the 7001 and the payment-required feedback.
pub async fn subscribed(urls: &[RelayUrl], us: &PublicKey) -> (Customer, Event, Event) {
    let mut customer = Customer::connect(urls).await;
    customer
        .client
        .subscribe(Filter::new().kind(Kind::Custom(7003)).author(*us), None)
        .await
        .unwrap();
    let tier = tier_event(&customer, us).await;
    let request = subscribe(&customer, us, &tier);
    customer.client.send_event(&request).await.unwrap();
    let quote = customer
        .wait_for(request.id, is_status("payment-required"))
        .await;
    (customer, request, quote)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_pays_a_period_gets_our_receipt_and_runs_jobs_on_the_quota() {
    let s = setup().await;
    let ln = FakeLightning::new();
    let node = s.start_with(lightning(&ln)).await;
    let us = node.pubkey();
    let (mut customer, request, quote) = subscribed(&s.urls, &us).await;
    let period_quote = quote.id;
    let tier = tier_event(&customer, &us).await;
    assert_eq!(
        tag_values(&tier, "amount").unwrap(),
        ["20000", "msats", "3600s"]
    );
    // The NIP-89 announcement of 5050 names the tier that covers it.
    let handler = announcement(&customer, &us, "paydvm-5050").await;
    let address = format!("37001:{}:gold", us.to_hex());
    assert_eq!(
        tag_values(&handler, "a").unwrap(),
        std::slice::from_ref(&address)
    );
    assert!(handler.content.contains(&address), "{}", handler.content);
    assert_eq!(tag_values(&tier, "p").unwrap(), [us.to_hex()]);
    let amount = tag_values(&quote, "amount").unwrap();
    assert_eq!(amount[0], "20000");
    let invoice = Invoice::parse(&amount[1]).expect("an invoice in the quote");
    assert_eq!(invoice.amount(), Some(Msat::from_msat(20_000)));
    ln.settle(&invoice.payment_hash()).unwrap();

    let receipt = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(7003))
        .await;
    assert_eq!(receipt.pubkey, us, "signed by the node");
    assert!(receipt.verify().is_ok());
    assert_eq!(
        tag_values(&receipt, "P").unwrap(),
        [customer.keys.public_key().to_hex()]
    );
    assert_eq!(tag_values(&receipt, "p").unwrap(), [us.to_hex()]);
    assert_eq!(tag_values(&receipt, "tier").unwrap(), ["gold"]);
    assert_eq!(
        tag_values(&receipt, "payment").unwrap(),
        [invoice.payment_hash()]
    );
    let valid = tag_values(&receipt, "valid").unwrap();
    let (from, to): (u64, u64) = (valid[0].parse().unwrap(), valid[1].parse().unwrap());
    assert_eq!(to - from, 3600);

    // Two jobs on the quota: no quote, straight to the result.
    for text in ["one", "two"] {
        let job = customer.request(5050, text, &[&["param", "mode", "upper"]]);
        customer.client.send_event(&job).await.unwrap();
        let result = customer
            .wait_for(job.id, |e| e.kind == Kind::Custom(6050))
            .await;
        assert_eq!(result.content, text.to_uppercase());
    }
    // The third is priced, and the quote says why.
    let third = customer.request(5050, "three", &[]);
    customer.client.send_event(&third).await.unwrap();
    let quote = customer
        .wait_for(third.id, is_status("payment-required"))
        .await;
    let status = tag_values(&quote, "status").unwrap();
    assert!(status[1].contains("quota used up (2 of 2"), "{status:?}");
    node.shutdown().await;

    let store = s.store();
    let id = SubscriptionId::new(request.id.to_hex()).unwrap();
    let record = store.state().subscription(&id).cloned().unwrap();
    assert_eq!(
        (record.state, record.used, record.quota),
        (EntitlementState::Active, 2, 2)
    );
    assert_eq!(
        store.state().held(&Account::Subscription(id.clone())),
        Msat::ZERO
    );
    // `paydvm status` lists it with its quota use.
    let status = paydvm::cli::status::summarize(store.state(), 0, String::new(), false);
    let [line] = &status.subscriptions[..] else {
        panic!("one active subscription: {:?}", status.subscriptions)
    };
    assert_eq!((line.tier.as_str(), line.used, line.quota), ("gold", 2, 2));
    assert_eq!(line.subscriber, customer.keys.public_key().to_hex());
    // `paydvm audit <7001 id>`: the quote, the payment, the period and the jobs on its quota…
    let trail = store.audit(id.as_str()).unwrap().expect("a trail");
    let types: Vec<&str> = trail
        .events
        .iter()
        .map(|e| e.event.type_name())
        .filter(|t| !t.starts_with("effect_"))
        .collect();
    // …and what we told the subscriber: the period's quote and the 7003 the relay carried.
    let told: Vec<String> = trail
        .events
        .iter()
        .filter_map(|e| match &e.event {
            EventBody::EffectRequested { effect, .. } => Some(effect.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(told, [period_quote.to_hex(), receipt.id.to_hex()]);
    assert_eq!(
        types,
        [
            "subscription_quoted",
            "payment_received",
            "entitlement_granted",
            "job_queued",
            "job_queued"
        ]
    );
    // The invoice's payment hash finds the quote and the payment too.
    let by_hash = store
        .audit(&invoice.payment_hash())
        .unwrap()
        .expect("a trail");
    let types: Vec<&str> = by_hash.events.iter().map(|e| e.event.type_name()).collect();
    assert_eq!(types, ["subscription_quoted", "payment_received"]);
    assert_eq!(
        store.state().balance(&Account::Revenue).credits,
        Msat::from_msat(20_000),
        "the period's price is revenue; the quota jobs charged nothing"
    );
    assert!(store.verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_signed_by_anyone_else_grants_nothing() {
    let s = setup().await;
    let node = s.start().await;
    let us = node.pubkey();
    let (mut customer, request, _) = subscribed(&s.urls, &us).await;
    // The customer (or a "verifier" of their choice) writes a receipt for themselves.
    let now = Timestamp::now().as_secs();
    let forged = EventBuilder::new(Kind::Custom(7003), "")
        .tags(
            [
                vec!["p".to_owned(), us.to_hex()],
                vec!["P".to_owned(), customer.keys.public_key().to_hex()],
                vec!["e".to_owned(), request.id.to_hex()],
                vec![
                    "valid".to_owned(),
                    now.to_string(),
                    (now + 3600).to_string(),
                ],
                vec!["tier".to_owned(), "gold".into()],
            ]
            .into_iter()
            .map(|t| Tag::parse(t).unwrap()),
        )
        .sign_with_keys(&customer.keys)
        .unwrap();
    customer.client.send_event(&forged).await.unwrap();
    let job = customer.request(5050, "free ride?", &[]);
    customer.client.send_event(&job).await.unwrap();
    customer
        .wait_for(job.id, is_status("payment-required"))
        .await;
    node.shutdown().await;
    let store = s.store();
    let id = SubscriptionId::new(request.id.to_hex()).unwrap();
    let record = store.state().subscription(&id).cloned().unwrap();
    assert_eq!(record.state, EntitlementState::Quoted);
    assert_eq!(store.state().balance(&Account::Revenue).credits, Msat::ZERO);
}

/// Zaps that e-tag the 7001 pay for it, verified like a job's zaps: an underpayment leaves the
/// rest owed, the rest completes the period; a receipt signed by another key than our LNURL
/// server's counts for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zaps_on_the_subscribe_request_pay_the_period() {
    let mut fixture = Fixture::builder(test_node("refund", "").policy(TIER))
        .zapper("dvm")
        .build()
        .await
        .unwrap();
    let zapper = fixture.zapper.take().unwrap();
    let s = Setup::from(fixture);
    let node = s.start().await;
    let us = node.pubkey();
    let stats = node.zap_stats().expect("zap intake runs with a lud16");
    let (mut customer, request, _) = subscribed(&s.urls, &us).await;
    let (lud16, keys, target) = (zapper.lud16(), customer.keys.clone(), request.id);
    let zap = |msat: u64| {
        let order = ZapOrder {
            lud16: &lud16,
            http_loopback: true,
            recipient: us,
            target,
            amount: Msat::from_msat(msat),
            relays: &s.urls,
        };
        let keys = keys.clone();
        async move { request_zap_invoice(&keys, &order).await.unwrap() }
    };

    // A forged receipt (right zap request, wrong signer) for the whole price.
    let forged_zap = zap(20_000).await;
    let forged = zapper::receipt(
        &forged_zap.zap_request.as_json(),
        &forged_zap.zap_request,
        &forged_zap.bolt11,
        None,
    )
    .sign_with_keys(&Keys::generate())
    .unwrap();
    zapper.publish(&forged, &s.urls).await.unwrap();
    wait_for_zaps(&stats, (0, 1)).await;

    let first = zap(12_000).await;
    zapper.settle(&first.bolt11).await.unwrap();
    let owed = customer
        .wait_for(request.id, |e| {
            is_status("payment-required")(e)
                && tag_values(e, "amount").is_some_and(|a| a[0] == "8000")
        })
        .await;
    assert!(tag_values(&owed, "status").unwrap()[1].contains("8000 msat still owed"));
    let rest = zap(8_000).await;
    zapper.settle(&rest.bolt11).await.unwrap();
    let receipt = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(7003))
        .await;
    assert_eq!(receipt.pubkey, us);
    wait_for_zaps(&stats, (2, 1)).await;
    node.shutdown().await;

    let store = s.store();
    let id = SubscriptionId::new(request.id.to_hex()).unwrap();
    let record = store.state().subscription(&id).cloned().unwrap();
    assert_eq!(record.state, EntitlementState::Active);
    assert_eq!(
        store.state().balance(&Account::Revenue).credits,
        Msat::from_msat(20_000)
    );
    assert!(store.verify().is_ok());
}

async fn wait_for_zaps(stats: &paydvm::node::zaps::ZapStats, want: (u64, u64)) {
    use std::sync::atomic::Ordering;
    for _ in 0..300 {
        let seen = (
            stats.verified.load(Ordering::SeqCst),
            stats.refused.load(Ordering::SeqCst),
        );
        if seen == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("zap intake did not reach {want:?}");
}

/// A NutZap that e-tags the subscribe request pays the period: P2PK-locked to our 10019 key,
/// verified and swapped at the trusted mint like a job's NutZap; our 7003 follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nutzap_on_the_subscribe_request_pays_the_period() {
    use crate::cashu_mint::{mint_proofs, wallet, MintUnderTest, TestMint};
    let mint = TestMint::start().await;
    let node_dir = test_node("refund", "").policy(TIER).trust_mint(mint.url());
    let s = Setup::build(Fixture::builder(node_dir)).await;
    let lock = format!("02{}", s.p2pk.clone().unwrap().public_key().to_hex());
    let node = s.start().await;
    let us = node.pubkey();
    let (mut customer, request, _) = subscribed(&s.urls, &us).await;

    let ecash = wallet(mint.url()).await;
    let proofs = mint_proofs(&ecash, 20, Some(&lock)).await;
    let zap = crate::cashu::nutzap(
        &customer.keys,
        &proofs,
        mint.url(),
        "sat",
        Some(request.id),
        &us,
        "gold, please",
    );
    customer.client.send_event(&zap).await.unwrap();
    let receipt = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(7003))
        .await;
    assert_eq!(receipt.pubkey, us);
    assert_eq!(tag_values(&receipt, "tier").unwrap(), ["gold"]);
    node.shutdown().await;

    let store = s.store();
    let id = SubscriptionId::new(request.id.to_hex()).unwrap();
    assert_eq!(
        store.state().subscription(&id).unwrap().state,
        EntitlementState::Active
    );
    let trail = store.audit(id.as_str()).unwrap().expect("a trail");
    let paid = trail.events.iter().any(|e| {
        matches!(&e.event, paydvm_ledger::EventBody::PaymentReceived(p)
            if p.rail == paydvm_ledger::Rail::NutZap && p.amount == Msat::from_msat(20_000))
    });
    assert!(paid, "the NutZap booked to the subscription");
    assert!(store.verify().is_ok());
}

/// A subscriber who cancels under a tier that refunds the unused rest: our feedback says so,
/// the refund is paid once over Lightning to the lightning address in the subscriber's profile,
/// the period ends, and the next job is priced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_refunds_the_unused_rest_of_the_period_over_lightning() {
    let node = test_node("refund", "").policy(&TIER.replace(
        "kinds = [5050]",
        "kinds = [5050]\non_cancel = \"refund_unused\"",
    ));
    let s = Setup::build(Fixture::builder(node).relays(1)).await;
    s.add_node_settings("lnurl_http_loopback = true");
    // Lightning refunds reserve the fee cap on top of what is owed.
    crate::node::float(&s.ledger(), 10_000);
    let ln = FakeLightning::new();
    let node = s.start_with(lightning(&ln)).await;
    let us = node.pubkey();
    let (mut customer, request, quote) = subscribed(&s.urls, &us).await;
    let tier = tier_event(&customer, &us).await;
    assert_eq!(tag_values(&tier, "cancel").unwrap(), ["refund_unused"]);
    assert_eq!(tag_values(&tier, "paid_ahead").unwrap(), ["next_period"]);
    let wallet = Zapper::start(ZapperOptions::new("alice", customer.keys.public_key()))
        .await
        .unwrap();
    let profile = Metadata::new().lud16(wallet.lud16().to_string());
    customer
        .client
        .send_event_builder(EventBuilder::metadata(&profile))
        .await
        .unwrap();
    let invoice = Invoice::parse(&tag_values(&quote, "amount").unwrap()[1]).unwrap();
    ln.settle(&invoice.payment_hash()).unwrap();
    customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(7003))
        .await;

    let stop = EventBuilder::new(Kind::Custom(7002), "")
        .tags([Tag::public_key(us), Tag::event(request.id)])
        .sign_with_keys(&customer.keys)
        .unwrap();
    customer.client.send_event(&stop).await.unwrap();
    let said = customer
        .wait_for(request.id, |e| {
            tag_values(e, "status").is_some_and(|s| s[0] == "success" && s[1].contains("cancelled"))
        })
        .await;
    let status = tag_values(&said, "status").unwrap();
    assert!(status[1].contains("will be refunded"), "{status:?}");
    let id = SubscriptionId::new(request.id.to_hex()).unwrap();
    let refund = paydvm_ledger::RefundId::new(format!("sub:{id}:unused")).unwrap();
    let settled = wait_refund_settled(&node, &refund).await;
    assert!(settled.amount <= Msat::from_msat(20_000));
    assert!(settled.amount >= Msat::from_msat(19_000), "{settled:?}");
    assert_eq!(ln.payments().len(), 1, "paid once");
    assert_eq!(ln.payments()[0].bolt11, wallet.issued()[0].bolt11);

    let job = customer.request(5050, "after", &[]);
    customer.client.send_event(&job).await.unwrap();
    let quote = customer
        .wait_for(job.id, is_status("payment-required"))
        .await;
    assert!(tag_values(&quote, "status").unwrap()[1].contains("period has ended"));
    node.shutdown().await;

    let store = s.store();
    let record = store.state().subscription(&id).cloned().unwrap();
    assert_eq!(record.state, EntitlementState::Expired);
    assert!(record.cancelled_at.is_some() && record.unused_refunded);
    let trail = store.audit(id.as_str()).unwrap().expect("a trail");
    let types: Vec<&str> = trail.events.iter().map(|e| e.event.type_name()).collect();
    for step in [
        "subscription_cancelled",
        "subscription_refund_due",
        "refund_started",
        "refund_settled",
    ] {
        assert!(types.contains(&step), "{step} missing from {types:?}");
    }
    assert_eq!(trail.refunds.len(), 1);
    assert_eq!(trail.refunds[0].state, paydvm_ledger::RefundState::Settled);
    assert!(store.verify().is_ok());
}

async fn wait_refund_settled(
    node: &paydvm::node::NodeHandle,
    refund: &paydvm_ledger::RefundId,
) -> paydvm_ledger::RefundRecord {
    for _ in 0..300 {
        // `job()` answers after flushing, so the file is current.
        let _ = node.job("0").await;
        let store = paydvm_ledger::store::Store::open_read_only(node.ledger_path()).unwrap();
        let found = store.state().refund(refund).cloned();
        if let Some(r) = found.filter(|r| r.state == paydvm_ledger::RefundState::Settled) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("refund {refund} never settled");
}
