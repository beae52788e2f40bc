//! Zaps (NIP-57) end to end: the node, a real LocalRelay, and the LNURL-pay zapper on
//! 127.0.0.1 (real regtest invoices, receipts published to the relay as a zapper does).
//! Checked on both sides: the relay events the customer sees and the ledger trail.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::SecretKey;
use nostr_sdk::prelude::*;
use paydvm::lightning::regtest_invoice::{regtest_invoice, InvoiceSpec};
use paydvm::node::zaps::ZapStats;
use paydvm::node::NodeHandle;
use paydvm_ledger::store::Store;
use paydvm_ledger::{
    Account, Asset, EventBody, JobId, JobState, Msat, PaymentTarget, QueueReason, Rail,
};
use paydvm_testkit::fixture::Fixture;
use paydvm_testkit::zapper::customer::{request_zap_invoice, ZapInvoice, ZapOrder};
use paydvm_testkit::zapper::{self, Zapper};

use crate::node::{is_status, steps, test_node, wait_state, Customer, Setup, PAID_AND_DONE};

const WAIT: Duration = Duration::from_secs(15);
const PRICE: u64 = 5_000;

struct ZapNode {
    /// The relay and the node directory.
    s: Setup,
    zapper: Zapper,
    urls: Vec<RelayUrl>,
    /// The zapper's receipt key and Lightning node key (a test forges with them).
    signer: Keys,
    node_key: SecretKey,
    pubkey: PublicKey,
}

impl ZapNode {
    /// A node whose lud16 is the zapper's address (5050 costs 5000 msat).
    async fn new() -> ZapNode {
        let mut fixture = Fixture::builder(test_node("refund", ""))
            .zapper("dvm")
            .build()
            .await
            .unwrap();
        let zapper = fixture.zapper.take().unwrap();
        let (signer, node_key) = (zapper.options().signer.clone(), zapper.options().node_key);
        let (urls, pubkey) = (fixture.urls.clone(), fixture.node_pubkey);
        ZapNode {
            s: Setup::from(fixture),
            zapper,
            urls,
            signer,
            node_key,
            pubkey,
        }
    }

    async fn start(&self) -> NodeHandle {
        self.s.start().await
    }

    fn store(&self) -> Store {
        self.s.store()
    }

    /// The customer's wallet asks our zapper for an invoice zapping `target`.
    async fn zap_invoice(&self, customer: &Keys, target: EventId, msat: u64) -> ZapInvoice {
        request_zap_invoice(
            customer,
            &ZapOrder {
                lud16: &self.zapper.lud16(),
                http_loopback: true,
                recipient: self.pubkey,
                target,
                amount: Msat::from_msat(msat),
                relays: &self.urls,
            },
        )
        .await
        .unwrap()
    }
}

/// A customer whose priced 5050 job got its payment-required feedback.
async fn quoted_job(z: &ZapNode) -> (Customer, Event, Event) {
    let mut customer = Customer::connect(&z.urls).await;
    let request = customer.request(5050, "zap me", &[&["param", "mode", "upper"]]);
    customer.client.send_event(&request).await.unwrap();
    let quote = customer
        .wait_for(request.id, is_status("payment-required"))
        .await;
    (customer, request, quote)
}

/// Waits until zap intake has counted `want` (verified, refused) receipts in this run.
async fn wait_zaps(stats: &Arc<ZapStats>, want: (u64, u64)) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = (
            stats.verified.load(Ordering::SeqCst),
            stats.refused.load(Ordering::SeqCst),
        );
        if seen == want {
            return;
        }
        assert!(
            seen.0 <= want.0 && seen.1 <= want.1,
            "more receipts than expected: {seen:?}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "zap intake saw {seen:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The zap payments the ledger holds for `job`.
fn zap_payments(store: &Store, job: &str) -> Vec<paydvm_ledger::Payment> {
    store
        .audit(job)
        .unwrap()
        .unwrap()
        .events
        .iter()
        .filter_map(|e| match &e.event {
            EventBody::PaymentReceived(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn tag(values: &[&str]) -> Tag {
    Tag::parse(values.iter().copied()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zap_on_the_payment_required_feedback_pays_and_runs_the_job() {
    let z = ZapNode::new().await;
    let node = z.start().await;
    let stats = node.zap_stats().expect("zap intake runs with a lud16");
    let (mut customer, request, quote) = quoted_job(&z).await;
    let job = request.id.to_hex();
    assert_eq!(
        crate::node::tag_values(&quote, "amount").unwrap()[0],
        PRICE.to_string()
    );

    let paid = z.zap_invoice(&customer.keys, quote.id, PRICE).await;
    let receipt = z.zapper.settle(&paid.bolt11).await.unwrap();
    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6050))
        .await;
    assert_eq!(result.content, "ZAP ME");
    wait_state(&node, &job, JobState::Succeeded).await;
    wait_zaps(&stats, (1, 0)).await;

    // The receipt is on the relay as a zapper publishes it.
    let on_relay = customer
        .client
        .fetch_events(Filter::new().id(receipt.id), WAIT)
        .await
        .unwrap();
    let on_relay = on_relay.first().expect("receipt on the relay");
    assert_eq!(on_relay.pubkey, z.zapper.nostr_pubkey());
    assert_eq!(on_relay.kind, Kind::from(9735));

    // The same payment inside a second receipt (new id, same bolt11) credits nothing.
    let again = zapper::receipt(
        &paid.zap_request.as_json(),
        &paid.zap_request,
        &paid.bolt11,
        None,
    )
    .custom_created_at(receipt.created_at + 1)
    .sign_with_keys(&z.signer)
    .unwrap();
    z.zapper.publish(&again, &z.urls).await.unwrap();
    wait_zaps(&stats, (2, 0)).await;
    // One command at a time: once this answers, the core has handled the second receipt.
    node.job(&job).await.unwrap();
    node.shutdown().await;

    // Restart: catch-up reads both receipts again; the ledger already has them.
    let node = z.start().await;
    let stats = node.zap_stats().unwrap();
    wait_zaps(&stats, (2, 0)).await;
    node.job(&job).await.unwrap();
    node.shutdown().await;

    let store = z.store();
    let steps: Vec<_> = steps(&store, &job);
    assert_eq!(steps, PAID_AND_DONE);
    let payments = zap_payments(&store, &job);
    assert_eq!(payments.len(), 1);
    let payment = &payments[0];
    assert_eq!(payment.rail, Rail::Zap);
    assert_eq!(payment.asset, Asset::Lightning);
    assert_eq!(payment.amount, Msat::from_msat(PRICE));
    assert_eq!(
        payment.evidence.as_ref().map(|e| e.to_string()),
        Some(receipt.id.to_hex())
    );
    assert_eq!(
        payment.payer.as_ref().map(|p| p.to_string()),
        Some(customer.keys.public_key().to_hex())
    );
    let invoice: lightning_invoice::Bolt11Invoice = paid.bolt11.parse().unwrap();
    assert_eq!(
        payment.reference.to_string(),
        invoice.payment_hash().to_string()
    );
    assert!(matches!(
        &payment.target,
        PaymentTarget::Job { job: j, .. } if j.as_str() == job
    ));
    let queued = store.audit(&job).unwrap().unwrap().events.iter().any(|e| {
        matches!(
            e.event,
            EventBody::JobQueued {
                reason: QueueReason::Paid,
                ..
            }
        )
    });
    assert!(queued, "job_queued{{paid}}");
    let record = store
        .state()
        .job(&JobId::new(&job).unwrap())
        .cloned()
        .unwrap();
    assert_eq!(record.funded_total, Msat::from_msat(PRICE));
    assert_eq!(record.revenue, Msat::from_msat(PRICE));
    assert_eq!(
        store
            .state()
            .balance(&Account::Asset(Asset::Lightning))
            .debits,
        Msat::from_msat(PRICE)
    );
    assert!(store.verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_zap_receipts_credit_nothing_and_the_job_stays_quoted() {
    let z = ZapNode::new().await;
    let node = z.start().await;
    let stats = node.zap_stats().unwrap();
    let (mut customer, request, quote) = quoted_job(&z).await;
    let job = request.id.to_hex();
    let attacker = Keys::generate();

    // Wrong signer: a well-formed receipt for a real zap invoice, signed by someone else.
    let genuine = z.zap_invoice(&customer.keys, quote.id, PRICE).await;
    let request_json = genuine.zap_request.as_json();
    let wrong_signer = zapper::receipt(&request_json, &genuine.zap_request, &genuine.bolt11, None)
        .sign_with_keys(&attacker)
        .unwrap();

    // Wrong amount: the zap request says 5000 msat, the invoice is for 1000 msat.
    let cheap = regtest_invoice(
        &z.node_key,
        &InvoiceSpec {
            amount_msat: 1_000,
            description_hash: sha256::Hash::hash(request_json.as_bytes()),
            preimage: [9; 32],
            created: Duration::from_secs(Timestamp::now().as_secs()),
            expiry: Duration::from_secs(600),
        },
    )
    .unwrap()
    .to_string();
    let wrong_amount = zapper::receipt(&request_json, &genuine.zap_request, &cheap, None)
        .sign_with_keys(&z.signer)
        .unwrap();

    // Wrong description hash: the description is the same zap request re-serialised.
    let reserialised = serde_json::to_string_pretty(
        &serde_json::from_str::<serde_json::Value>(&request_json).unwrap(),
    )
    .unwrap();
    let wrong_hash = zapper::receipt(&reserialised, &genuine.zap_request, &genuine.bolt11, None)
        .sign_with_keys(&z.signer)
        .unwrap();

    // A receipt for another job: the customer's second job is zapped, and the receipt's `e`
    // is rewritten to point at the first job's feedback.
    let other = customer.request(5050, "other", &[]);
    customer.client.send_event(&other).await.unwrap();
    let other_quote = customer
        .wait_for(other.id, is_status("payment-required"))
        .await;
    let for_other = z.zap_invoice(&customer.keys, other_quote.id, PRICE).await;
    let other_json = for_other.zap_request.as_json();
    let mut tags: Vec<Tag> =
        zapper::receipt(&other_json, &for_other.zap_request, &for_other.bolt11, None)
            .build(z.signer.public_key())
            .tags
            .iter()
            .filter(|t| t.as_slice()[0] != "e")
            .cloned()
            .collect();
    tags.push(tag(&["e", &quote.id.to_hex()]));
    let retargeted = EventBuilder::new(Kind::from(9735), "")
        .tags(tags)
        .sign_with_keys(&z.signer)
        .unwrap();

    for forged in [&wrong_signer, &wrong_amount, &wrong_hash, &retargeted] {
        z.zapper.publish(forged, &z.urls).await.unwrap();
    }
    wait_zaps(&stats, (0, 4)).await;

    // The other job, zapped for real, is paid: a receipt pays only the job it names.
    z.zapper.settle(&for_other.bolt11).await.unwrap();
    wait_state(&node, &other.id.to_hex(), JobState::Succeeded).await;
    wait_zaps(&stats, (1, 4)).await;
    assert_eq!(
        node.job(&job).await.map(|j| j.state),
        Some(JobState::Quoted)
    );
    node.shutdown().await;

    let store = z.store();
    assert!(zap_payments(&store, &job).is_empty());
    let record = store
        .state()
        .job(&JobId::new(&job).unwrap())
        .cloned()
        .unwrap();
    assert_eq!(record.state, JobState::Quoted);
    assert_eq!(record.funded_total, Msat::ZERO);
    assert_eq!(zap_payments(&store, &other.id.to_hex()).len(), 1);
    assert_eq!(store.state().held(&Account::Unmatched), Msat::ZERO);
    assert_eq!(
        store
            .state()
            .balance(&Account::Asset(Asset::Lightning))
            .debits,
        Msat::from_msat(PRICE)
    );
    assert!(store.verify().is_ok());
}
