//! Lightning refunds end to end on 127.0.0.1: a real relay, the node on the built-in
//! `FakeLightning` (which records every payment it makes), and the customer's wallet as an
//! LNURL-pay server (the zapper fixture) that issues real regtest invoices.
//! Checked on both sides: the payments that left, and the ledger trail.

use std::sync::Arc;
use std::time::Duration;

use nostr_sdk::prelude::*;
use paydvm::lightning::fake::{FakeLightning, PayOutcome};
use paydvm::lightning::refund::MIN_EXPIRY_MARGIN_SECS;
use paydvm::lightning::{Invoice, PaymentStatus};
use paydvm::node::{NodeHandle, NodeOptions};
use paydvm::payments::lnurl_http::ScriptedDns;
use paydvm_ledger::store::Store;
use paydvm_ledger::{EventBody, JobState, Msat, RefundId, RefundRecord, RefundState};
use paydvm_testkit::zapper::{Zapper, ZapperOptions};

use crate::node::{is_status, setup, steps, wait_state, Customer, Setup};

const OWED: Msat = Msat::from_msat(5_000);
/// Two "no record" answers this far apart make a refund payment "never sent" (short for tests;
/// the look-ups themselves are a second apart at first).
const NEVER_SENT_AFTER: Duration = Duration::from_millis(200);

struct Refunds {
    s: Setup,
    ln: FakeLightning,
    wallet: Arc<Zapper>,
    customer: Customer,
}

async fn refunds(overcharge: Msat) -> Refunds {
    refunds_with("lnurl_http_loopback = true", |w| w.overcharge = overcharge).await
}

/// `node_settings` go into `[node]`; `wallet` adjusts the customer's LNURL-pay server.
async fn refunds_with(
    node_settings: &str,
    wallet_options: impl FnOnce(&mut ZapperOptions),
) -> Refunds {
    let r = refunds_without_float(node_settings, wallet_options).await;
    // Refunds over Lightning reserve the fee cap (10 sat by default) on top of what is owed.
    crate::node::float(&r.s.ledger(), 10_000);
    r
}

/// The same, with no operator float in the Lightning wallet.
async fn refunds_without_float(
    node_settings: &str,
    wallet_options: impl FnOnce(&mut ZapperOptions),
) -> Refunds {
    let s = setup(1, "refund").await;
    if !node_settings.is_empty() {
        s.add_node_settings(node_settings);
    }
    let customer = Customer::connect(&s.urls).await;
    let mut wallet = ZapperOptions::new("alice", customer.keys.public_key());
    wallet_options(&mut wallet);
    Refunds {
        s,
        ln: FakeLightning::new(),
        wallet: Arc::new(Zapper::start(wallet).await.unwrap()),
        customer,
    }
}

impl Refunds {
    async fn start(&self) -> NodeHandle {
        self.s
            .start_with(NodeOptions {
                lightning: Some(Arc::new(self.ln.clone())),
                never_sent_after: NEVER_SENT_AFTER,
                ..NodeOptions::default()
            })
            .await
    }

    /// Starts the node with the next refund payment lost before it leaves (the node "dies"
    /// between `refund_started` and the pay call), makes a failed paid job and stops the node
    /// there. Returns the job and the recorded route.
    async fn refund_recorded_but_never_sent(&mut self) -> (String, paydvm_ledger::RefundRoute) {
        self.ln.script_payment(PayOutcome::LostBeforeSending);
        let node = self.start().await;
        let job = self.failed_paid_job(true).await;
        wait_state(&node, &job, JobState::Refunding).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.ln.lost_requests() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no pay call");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        node.shutdown().await;
        assert!(self.ln.payments().is_empty(), "nothing left the wallet");
        let refund = refund_of(&self.s.store(), &job);
        assert_eq!(refund.state, RefundState::InFlight);
        (
            job,
            refund.route.expect("refund_started recorded the route"),
        )
    }

    /// A paid job that fails on every attempt; returns its id once it owes a refund.
    async fn failed_paid_job(&mut self, refund_tag: bool) -> String {
        let address = refund_tag.then(|| self.wallet.lud16().to_string());
        self.failed_paid_job_to(address.as_deref()).await
    }

    /// The same, with `refund` (if any) in the request's `refund` tag.
    async fn failed_paid_job_to(&mut self, refund: Option<&str>) -> String {
        let mut tags: Vec<&[&str]> = vec![&["param", "mode", "fail"]];
        let refund = refund.map(|address| ["refund", address]);
        if let Some(refund) = &refund {
            tags.push(refund);
        }
        let request = self.customer.request(5050, "abc", &tags);
        self.customer.client.send_event(&request).await.unwrap();
        let quote = self
            .customer
            .wait_for(request.id, is_status("payment-required"))
            .await;
        let bolt11 = crate::node::tag_values(&quote, "amount").unwrap()[1].clone();
        let hash = Invoice::parse(&bolt11).unwrap().payment_hash();
        self.ln.settle(&hash).unwrap();
        self.customer.wait_for(request.id, is_status("error")).await;
        request.id.to_hex()
    }
}

fn refund_of(store: &Store, job: &str) -> RefundRecord {
    let id = RefundId::new(format!("{job}:fail")).unwrap();
    store
        .state()
        .refund(&id)
        .cloned()
        .expect("a refund is owed")
}

async fn wait_refund(node: &NodeHandle, job: &str, pred: impl Fn(&RefundRecord) -> bool) {
    let id = RefundId::new(format!("{job}:fail")).unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        // `job()` answers after flushing, so the file is current.
        let _ = node.job(job).await;
        let store = Store::open_read_only(node.ledger_path()).unwrap();
        if store.state().refund(&id).is_some_and(&pred) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refund of {job} never got there: {:?}",
            store.state().refund(&id)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_is_refunded_once_to_the_address_in_its_request() {
    let mut r = refunds(Msat::ZERO).await;
    let node = r.start().await;
    let job = r.failed_paid_job(true).await;
    wait_state(&node, &job, JobState::Refunded).await;
    node.shutdown().await;

    // Exactly one payment left: the invoice the customer's wallet issued, for what was owed.
    let paid = r.ln.payments();
    assert_eq!(paid.len(), 1, "{paid:?}");
    let issued = r.wallet.issued();
    assert_eq!(issued.len(), 1);
    assert_eq!(paid[0].bolt11, issued[0].bolt11);
    assert_eq!(paid[0].amount, OWED);
    assert!(matches!(paid[0].status, PaymentStatus::Settled { .. }));

    let store = r.s.store();
    assert_eq!(
        steps(&store, &job),
        [
            "job_received",
            "quote_issued",
            "payment_received",
            "job_queued",
            "processing_started",
            "processing_failed",
            "refund_due",
            "refund_started",
            "refund_settled"
        ]
    );
    let refund = refund_of(&store, &job);
    assert_eq!(refund.state, RefundState::Settled);
    assert_eq!(refund.amount, OWED);
    let route = refund.route.unwrap();
    assert_eq!(route.destination, issued[0].bolt11);
    assert_eq!(route.lookup, paid[0].payment_hash);
    assert!(store.verify().is_ok());

    // A restart finds nothing left to pay.
    let node = r.start().await;
    let _ = node.job(&job).await;
    node.shutdown().await;
    assert_eq!(r.ln.payments().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_refund_tag_the_lud16_in_the_customers_profile_is_paid() {
    let mut r = refunds(Msat::ZERO).await;
    let profile = Metadata::new().lud16(r.wallet.lud16().to_string());
    r.customer
        .client
        .send_event_builder(EventBuilder::metadata(&profile))
        .await
        .unwrap();
    let node = r.start().await;
    let job = r.failed_paid_job(false).await;
    wait_state(&node, &job, JobState::Refunded).await;
    node.shutdown().await;
    assert_eq!(r.ln.payments().len(), 1);
    assert_eq!(r.ln.payments()[0].bolt11, r.wallet.issued()[0].bolt11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_for_more_than_owed_is_refused_and_the_refund_waits_with_the_reason() {
    let mut r = refunds(Msat::from_msat(1_000)).await;
    let node = r.start().await;
    let job = r.failed_paid_job(true).await;
    wait_refund(&node, &job, |f| f.deferred.is_some()).await;
    node.shutdown().await;

    assert!(r.ln.payments().is_empty(), "nothing may be paid");
    let store = r.s.store();
    let refund = refund_of(&store, &job);
    assert_eq!(refund.state, RefundState::Due);
    let reason = refund.deferred.unwrap();
    assert!(
        reason.contains("6000 msat") && reason.contains("5000 msat are owed"),
        "{reason}"
    );
    assert_eq!(crate::node::job_state(&store, &job), JobState::RefundDue);
    assert_eq!(steps(&store, &job).last(), Some(&"refund_deferred"));
    assert!(store.verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_mid_payment_looks_the_refund_up_and_never_pays_twice() {
    let mut r = refunds(Msat::ZERO).await;
    // The payment leaves, then the node stops before the backend answers.
    r.ln.script_payment(PayOutcome::Hang);
    let node = r.start().await;
    let job = r.failed_paid_job(true).await;
    wait_state(&node, &job, JobState::Refunding).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while r.ln.payments().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no payment left");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    node.shutdown().await;
    let store = r.s.store();
    assert_eq!(refund_of(&store, &job).state, RefundState::InFlight);
    drop(store);

    // Restarted while the network still says nothing: recorded unknown, looked up, not paid,
    // however long it stays in flight (three look-ups span more than `NEVER_SENT_AFTER`: an
    // in-flight answer is not "no record").
    let node = r.start().await;
    wait_state(&node, &job, JobState::RefundPending).await;
    let hash = r.ln.payments()[0].payment_hash.clone();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while r.ln.lookups_of(&hash) < 3 {
        assert_eq!(r.ln.payments().len(), 1, "paid again while in flight");
        assert!(tokio::time::Instant::now() < deadline, "not looked up");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(r.ln.payments().len(), 1);
    // The payment turns out to have gone through.
    r.ln.resolve_payment(
        &hash,
        PaymentStatus::Settled {
            preimage: "00".repeat(32),
            fee: Msat::from_msat(3),
        },
    )
    .unwrap();
    wait_state(&node, &job, JobState::Refunded).await;
    node.shutdown().await;

    assert_eq!(r.ln.payments().len(), 1, "exactly one payment");
    let store = r.s.store();
    let refund = refund_of(&store, &job);
    assert_eq!((refund.state, refund.attempts), (RefundState::Settled, 1));
    assert_eq!(refund.fee, Msat::from_msat(3));
    assert_eq!(
        steps(&store, &job)[6..],
        [
            "refund_due",
            "refund_started",
            "refund_outcome_unknown",
            "refund_settled"
        ]
    );
    assert!(store.verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicitly_failed_refund_payment_is_tried_again_with_a_fresh_invoice() {
    let mut r = refunds(Msat::ZERO).await;
    r.ln.script_payment(PayOutcome::Fail("no route".into()));
    let node = r.start().await;
    let job = r.failed_paid_job(true).await;
    wait_state(&node, &job, JobState::Refunded).await;
    node.shutdown().await;

    let paid = r.ln.payments();
    assert_eq!(paid.len(), 2);
    assert!(matches!(paid[0].status, PaymentStatus::Failed(_)));
    assert!(matches!(paid[1].status, PaymentStatus::Settled { .. }));
    assert_ne!(paid[0].payment_hash, paid[1].payment_hash);
    let store = r.s.store();
    let refund = refund_of(&store, &job);
    assert_eq!((refund.state, refund.attempts), (RefundState::Settled, 2));
    assert!(store.verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_is_refunded_over_nwc_end_to_end() {
    let mut r = refunds(Msat::ZERO).await;
    let w = crate::lightning_nwc::wallet(&r.s.urls).await;
    // The wallet behind NWC learns each payee's preimage as a real payment would.
    let wallet = Arc::clone(&r.wallet);
    let payee = Arc::clone(&wallet);
    w.fake.learn_preimages_from(Arc::new(move |hash: &str| {
        payee
            .issued()
            .into_iter()
            .find(|i| Invoice::parse(&i.bolt11).is_ok_and(|inv| inv.payment_hash() == hash))
            .map(|i| i.preimage)
    }));
    let node =
        r.s.start_with(NodeOptions {
            lightning: Some(w.backend.clone()),
            ..NodeOptions::default()
        })
        .await;
    let address = wallet.lud16().to_string();
    let request = r.customer.request(
        5050,
        "abc",
        &[&["param", "mode", "fail"], &["refund", address.as_str()]],
    );
    r.customer.client.send_event(&request).await.unwrap();
    let quote = r
        .customer
        .wait_for(request.id, is_status("payment-required"))
        .await;
    let bolt11 = crate::node::tag_values(&quote, "amount").unwrap()[1].clone();
    w.fake
        .settle(&Invoice::parse(&bolt11).unwrap().payment_hash())
        .unwrap();
    let job = request.id.to_hex();
    wait_state(&node, &job, JobState::Refunded).await;
    node.shutdown().await;

    // Paid over NWC: the wallet service made exactly one payment, to the customer's invoice.
    let paid = w.fake.payments();
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!(paid[0].bolt11, wallet.issued()[0].bolt11);
    assert_eq!(paid[0].amount, OWED);
    let store = r.s.store();
    let refund = refund_of(&store, &job);
    assert_eq!((refund.state, refund.attempts), (RefundState::Settled, 1));
    assert_eq!(refund.route.unwrap().lookup, paid[0].payment_hash);
    assert!(store.verify().is_ok());
}

/// The ledger's reason for deferring `job`'s refund, once it has one.
async fn deferred_reason(node: &NodeHandle, s: &Setup, job: &str) -> String {
    wait_refund(node, job, |f| f.deferred.is_some()).await;
    let store = s.store();
    assert_eq!(refund_of(&store, job).state, RefundState::Due);
    assert_eq!(steps(&store, job).last(), Some(&"refund_deferred"));
    refund_of(&store, job).deferred.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_addresses_on_the_nodes_own_host_are_refused_without_a_connection() {
    // lnurl_http_loopback off: a production node. The customer's wallet is live on 127.0.0.1
    // and would answer; the addresses below all reach it at the TCP level.
    let mut r = refunds_with("", |_| {}).await;
    let node = r.start().await;
    let port = r.wallet.port();
    for (address, rule) in [
        (
            format!("alice@[::ffff:127.0.0.1]:{port}"),
            "[::ffff:7f00:1] is a loopback address (IPv4-mapped form of 127.0.0.1, in 127.0.0.0/8)",
        ),
        (
            format!("alice@0.0.0.0:{port}"),
            "0.0.0.0 is an unspecified address (0.0.0.0/8)",
        ),
        (
            format!("alice@2130706433:{port}"),
            "127.0.0.1 is a loopback address (127.0.0.0/8)",
        ),
    ] {
        let job = r.failed_paid_job_to(Some(&address)).await;
        let reason = deferred_reason(&node, &r.s, &job).await;
        assert_eq!(
            reason,
            format!("refund address {address}: LNURL pay endpoint refused: {rule}")
        );
    }
    node.shutdown().await;
    assert_eq!(r.wallet.connections(), 0, "nothing reached the wallet");
    assert!(r.ln.payments().is_empty());
    assert!(r.s.store().verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_address_whose_name_resolves_to_loopback_is_refused_without_a_connection() {
    let mut r = refunds_with("", |_| {}).await;
    // Plain and IPv4-mapped loopback: the wallet on 127.0.0.1 is reachable at both.
    let loopback = [
        "127.0.0.1".parse().unwrap(),
        "::ffff:127.0.0.1".parse().unwrap(),
    ];
    let dns = Arc::new(ScriptedDns::new().answer("wallet.example.com", &loopback));
    let node =
        r.s.start_with(NodeOptions {
            lightning: Some(Arc::new(r.ln.clone())),
            lnurl_dns: Some(dns.clone()),
            ..NodeOptions::default()
        })
        .await;
    let address = format!("alice@wallet.example.com:{}", r.wallet.port());
    let job = r.failed_paid_job_to(Some(&address)).await;
    let reason = deferred_reason(&node, &r.s, &job).await;
    node.shutdown().await;
    assert_eq!(
        reason,
        format!(
            "refund address {address}: LNURL pay endpoint refused: wallet.example.com resolves \
             to 127.0.0.1, a loopback address (127.0.0.0/8) and ::ffff:127.0.0.1, a loopback \
             address (IPv4-mapped form of 127.0.0.1, in 127.0.0.0/8)"
        )
    );
    assert!(
        dns.lookups() >= 1,
        "refused at connect time, after resolving"
    );
    assert_eq!(r.wallet.connections(), 0);
    assert!(r.ln.payments().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_on_a_private_host_is_refused_before_connecting() {
    // The wallet (loopback, allowed in this test) answers its pay endpoint with a callback
    // into a private network.
    let callback = "http://10.255.255.1:9735/cb";
    let mut r = refunds_with("lnurl_http_loopback = true", |w| {
        w.callback = Some(callback.to_owned())
    })
    .await;
    let node = r.start().await;
    let job = r.failed_paid_job(true).await;
    let reason = deferred_reason(&node, &r.s, &job).await;
    node.shutdown().await;
    assert_eq!(
        reason,
        format!(
            "refund address {}: LNURL callback refused: 10.255.255.1 is a private address \
             (10.0.0.0/8)",
            r.wallet.lud16()
        )
    );
    assert!(r.wallet.issued().is_empty());
    assert!(r.ln.payments().is_empty());
}

/// The `refund_outcome_unknown` / `refund_failed` reasons in a job's trail.
pub(crate) fn refund_reasons(store: &Store, job: &str) -> Vec<String> {
    store
        .audit(job)
        .unwrap()
        .unwrap()
        .events
        .into_iter()
        .filter_map(|e| match e.event {
            EventBody::RefundOutcomeUnknown { reason, .. }
            | EventBody::RefundFailed { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_whose_pay_request_never_left_is_paid_once_with_the_same_invoice_after_a_restart()
{
    let mut r = refunds(Msat::ZERO).await;
    let (job, route) = r.refund_recorded_but_never_sent().await;

    // Restarted: the wallet has no record of the payment, twice; the same invoice is paid.
    let node = r.start().await;
    wait_state(&node, &job, JobState::Refunded).await;
    node.shutdown().await;

    assert_eq!(r.ln.times_paid(&route.lookup), 1, "exactly one payment");
    let paid = r.ln.payments();
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!(paid[0].bolt11, route.destination, "the recorded invoice");
    assert_eq!(paid[0].amount, OWED);
    assert_eq!(
        r.wallet.issued().len(),
        1,
        "no second invoice was asked for"
    );
    // It was a zapback: the one zap request the customer's server saw is the one recorded.
    let zap = route
        .zap
        .as_ref()
        .expect("the route recorded the zap request");
    let asked = Event::from_json(r.wallet.issued()[0].zap_request.as_ref().unwrap()).unwrap();
    assert_eq!(asked.id.to_hex(), zap.request.as_str());
    let store = r.s.store();
    let refund = refund_of(&store, &job);
    assert_eq!((refund.state, refund.attempts), (RefundState::Settled, 1));
    assert_eq!(
        steps(&store, &job)[6..],
        [
            "refund_due",
            "refund_started",
            "refund_outcome_unknown",
            "refund_settled"
        ]
    );
    let reasons = refund_reasons(&store, &job);
    assert!(
        reasons[0].contains("no record of this payment"),
        "{reasons:?}"
    );
    assert!(store.verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_sent_refund_whose_invoice_expired_fails_and_a_fresh_invoice_is_paid_once() {
    // Invoices that leave the node a few seconds to pay them within the safety margin.
    let expiry = Duration::from_secs(MIN_EXPIRY_MARGIN_SECS + 3);
    let mut r = refunds_with("lnurl_http_loopback = true", |w| w.invoice_expiry = expiry).await;
    let (job, route) = r.refund_recorded_but_never_sent().await;

    // Down until the recorded invoice is too close to its expiry to be paid safely.
    let invoice = Invoice::parse(&route.destination).unwrap();
    let deadline = tokio::time::Instant::now() + expiry;
    while !invoice.is_expired_at(paydvm::node::now_ms() / 1000 + MIN_EXPIRY_MARGIN_SECS) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the invoice never aged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let node = r.start().await;
    wait_state(&node, &job, JobState::Refunded).await;
    node.shutdown().await;

    assert_eq!(
        r.ln.times_paid(&route.lookup),
        0,
        "the old invoice is never paid"
    );
    let paid = r.ln.payments();
    assert_eq!(paid.len(), 1, "exactly one payment: {paid:?}");
    let issued = r.wallet.issued();
    assert_eq!(issued.len(), 2, "a fresh invoice for the second attempt");
    assert_ne!(paid[0].payment_hash, route.lookup);
    assert!(issued.iter().any(|i| i.bolt11 == paid[0].bolt11));
    let store = r.s.store();
    let refund = refund_of(&store, &job);
    assert_eq!((refund.state, refund.attempts), (RefundState::Settled, 2));
    assert_eq!(refund.route.unwrap().lookup, paid[0].payment_hash);
    assert_eq!(
        steps(&store, &job)[6..],
        [
            "refund_due",
            "refund_started",
            "refund_outcome_unknown",
            "refund_failed",
            "refund_started",
            "refund_settled"
        ]
    );
    let reasons = refund_reasons(&store, &job);
    assert!(
        reasons[1].contains("never sent") && reasons[1].contains("expires at"),
        "{reasons:?}"
    );
    assert!(store.verify().is_ok());
}

/// `paydvm <args> --config <the node's config>`: exit code and what it printed.
fn operator(r: &Refunds, args: &[&str]) -> (i32, String) {
    crate::cli::paydvm_with_config(&r.s.config, args)
}

/// Issue 10, problems 5 and 9: a refund the Lightning account cannot cover (the job's 5000 msat
/// but not the 10 sat fee cap) waits with the numbers; `paydvm refund list` shows why and what to
/// do; the operator books float through the running node (`paydvm float add`, recorded with
/// their note) and the refund is paid at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_short_of_the_fee_cap_waits_until_the_operator_adds_float() {
    let mut r = refunds_without_float("lnurl_http_loopback = true", |_| {}).await;
    let node = r.start().await;
    let job = r.failed_paid_job(true).await;
    let reason = deferred_reason(&node, &r.s, &job).await;
    assert!(
        reason.contains("asset:lightning has 5000 msat available")
            && reason.contains("needs 15000 msat")
            && reason.contains("paydvm float add"),
        "{reason}"
    );
    assert!(
        r.ln.payments().is_empty(),
        "nothing paid on money the ledger cannot see"
    );
    let refund = format!("{job}:fail");
    let (code, listed) = operator(&r, &["refund", "list"]);
    assert_eq!(code, 0, "{listed}");
    assert!(
        listed.contains(&refund) && listed.contains("5000 msat available"),
        "{listed}"
    );

    let (code, said) = operator(
        &r,
        &["float", "add", "lightning", "10000", "--note", "fees float"],
    );
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("by the running node"), "{said}");
    wait_state(&node, &job, JobState::Refunded).await;
    node.shutdown().await;

    assert_eq!(r.ln.payments().len(), 1);
    let store = r.s.store();
    let float = paydvm_ledger::Account::Float;
    assert_eq!(store.state().balance(&float).signed(false), 10_000);
    let (head, _) = store.head();
    let floats: Vec<String> = (1..=head)
        .filter_map(|seq| store.event(seq).unwrap())
        .filter_map(|e| match e.event.body {
            EventBody::FloatAdded {
                cause: paydvm_ledger::Cause::Operator { note },
                ..
            } => Some(note),
            _ => None,
        })
        .collect();
    assert_eq!(floats, ["fees float"]);
    assert!(store.verify().is_ok());
}

/// Issue 10, problem 9: every waiting refund has a way out, recorded with the operator as the
/// cause. On a stopped node the command writes its ledger under the single-instance lock; a
/// refund whose payment may still complete is never written off; a second node on the same
/// ledger is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_write_off_a_waiting_refund_and_cannot_touch_one_in_flight() {
    // No refund address and no profile: the refund waits ("no refund address").
    let mut r = refunds_with("lnurl_http_loopback = true", |_| {}).await;
    let node = r.start().await;
    let job = r.failed_paid_job(false).await;
    deferred_reason(&node, &r.s, &job).await;
    // One node per ledger.
    let second =
        paydvm::node::Node::start(paydvm::config::Config::load(&r.s.config).unwrap()).await;
    let refused = second
        .err()
        .expect("a second node on the same ledger is refused");
    assert!(
        format!("{refused:#}").contains("in use by another paydvm"),
        "{refused:#}"
    );
    node.shutdown().await;

    let refund = format!("{job}:fail");
    // Without a note nothing is done.
    let (code, _) = operator(&r, &["refund", "write-off", &refund, "--to", "credit"]);
    assert_ne!(code, 0);
    let (code, said) = operator(
        &r,
        &[
            "refund",
            "write-off",
            &refund,
            "--to",
            "credit",
            "--note",
            "customer asked for credit",
        ],
    );
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("node stopped"), "{said}");
    let store = r.s.store();
    let record = refund_of(&store, &job);
    assert_eq!(record.state, RefundState::WrittenOff);
    assert_eq!(
        store
            .state()
            .job(&paydvm_ledger::JobId::new(&job).unwrap())
            .unwrap()
            .state,
        JobState::Credited
    );
    assert_eq!(
        store
            .state()
            .held(&paydvm_ledger::Account::Credit(record.customer.clone())),
        OWED
    );
    assert!(store.verify().is_ok());
    drop(store);
    // Written off: nothing waits any more.
    let (code, said) = operator(&r, &["refund", "retry", &refund, "--note", "again"]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("nothing waits"), "{said}");
}

/// A refund whose payment is in flight cannot be retried, re-routed or written off (its payment
/// may still complete); after checking the wallet the operator resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_in_flight_is_only_resolved_by_the_operator_after_checking_the_wallet() {
    let mut r = refunds(Msat::ZERO).await;
    r.ln.script_payment(PayOutcome::Hang);
    let node = r.start().await;
    let job = r.failed_paid_job(true).await;
    wait_state(&node, &job, JobState::Refunding).await;
    let refund = format!("{job}:fail");
    let (code, said) = operator(
        &r,
        &[
            "refund",
            "write-off",
            &refund,
            "--to",
            "income",
            "--note",
            "x",
        ],
    );
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("may still complete"), "{said}");
    let (code, said) = operator(
        &r,
        &[
            "refund",
            "resolve",
            &refund,
            "paid",
            "--fee-msat",
            "2",
            "--note",
            "seen in the wallet",
        ],
    );
    assert_eq!(code, 0, "{said}");
    wait_state(&node, &job, JobState::Refunded).await;
    node.shutdown().await;
    let store = r.s.store();
    let record = refund_of(&store, &job);
    assert_eq!(
        (record.state, record.fee),
        (RefundState::Settled, Msat::from_msat(2))
    );
    assert_eq!(
        record.evidence.as_deref(),
        Some("operator: seen in the wallet")
    );
    assert!(store.verify().is_ok());
}

/// The zap request the customer's LNURL server received for the refund of `job`'s invoice.
fn zap_request_of(r: &Refunds, bolt11: &str) -> Event {
    let issued = r.wallet.issued();
    let issued = issued.iter().find(|i| i.bolt11 == bolt11).expect("issued");
    Event::from_json(issued.zap_request.as_deref().expect("a zap request")).unwrap()
}

/// The job's last feedback, once it names the refund.
async fn refund_feedback(r: &mut Refunds, job: &str) -> Event {
    let id = EventId::from_hex(job).unwrap();
    r.customer
        .wait_for(id, |e| {
            is_status("error")(e)
                && (e.content.contains("refunded") || status_info(e).contains("refunded"))
        })
        .await
}

fn status_info(e: &Event) -> String {
    crate::node::tag_values(e, "status")
        .map(|v| v.join(" "))
        .unwrap_or_default()
}

/// Issue 16: the customer's LNURL server allows Nostr, so the refund is a zap that points at the
/// job; the server's receipt is verified and linked to the refund; `paydvm ledger audit` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_is_refunded_by_zap_and_its_receipt_is_linked() {
    let mut r = refunds(Msat::ZERO).await;
    let node = r.start().await;
    let us = node.pubkey();
    let job = r.failed_paid_job(true).await;
    wait_state(&node, &job, JobState::Refunded).await;

    let paid = r.ln.payments();
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!(paid[0].amount, OWED);
    let request = zap_request_of(&r, &paid[0].bolt11);
    assert!(request.verify().is_ok());
    assert_eq!(request.pubkey, us, "signed by the node");
    let tag = |name: &str| crate::node::tag_values(&request, name).unwrap();
    assert_eq!(tag("p")[0], r.customer.keys.public_key().to_hex());
    assert_eq!(tag("e")[0], job);
    assert_eq!(tag("amount")[0], OWED.as_msat().to_string());
    for relay in &r.s.urls {
        assert!(tag("relays").contains(&relay.to_string()), "{relay}");
    }
    assert!(request.content.contains(&job) && request.content.contains("failed"));
    let route = refund_of(&r.s.store(), &job).route.unwrap();
    let zap = route.zap.clone().expect("a zapback");
    assert_eq!(zap.request.as_str(), request.id.to_hex());
    assert_eq!(zap.signer.as_str(), r.wallet.nostr_pubkey().to_hex());

    // The job's last feedback names the refund and its zap request.
    let feedback = refund_feedback(&mut r, &job).await;
    let said = format!("{} {}", feedback.content, status_info(&feedback));
    assert!(
        said.contains("5000 msat") && said.contains(&request.id.to_hex()),
        "{said}"
    );

    // The customer's wallet gets paid and its server publishes the receipt to our relays.
    let receipt = r.wallet.settle(&paid[0].bolt11).await.unwrap();
    wait_refund(&node, &job, |f| f.zap_receipt.is_some()).await;
    node.shutdown().await;

    let store = r.s.store();
    let refund = refund_of(&store, &job);
    assert_eq!(refund.zap_receipt.unwrap().as_str(), receipt.id.to_hex());
    assert_eq!(refund.state, RefundState::Settled);
    assert_eq!(
        steps(&store, &job)[6..],
        [
            "refund_due",
            "refund_started",
            "refund_settled",
            "refund_zap_receipt"
        ]
    );
    assert_eq!(r.ln.payments().len(), 1, "the receipt pays nothing again");
    assert!(store.verify().is_ok());
    let ledger = r.s.ledger();
    let audit = crate::cli::paydvm(&["ledger", "audit", ledger.to_str().unwrap(), &job]);
    let text = crate::cli::stdout(&audit);
    assert!(
        text.contains(&format!("zap receipt {}", receipt.id.to_hex())),
        "{text}"
    );
    assert!(
        text.contains(&format!("zap request {}", request.id.to_hex())),
        "{text}"
    );
}

/// Receipts that are not the receipt of our refund zap are not linked: another signer than the
/// server's nostrPubkey, an invoice for another amount, another zap request. They arrive first;
/// the genuine receipt, published last on the same relay, is the one linked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_refund_zap_receipts_are_not_linked() {
    use paydvm::lightning::regtest_invoice::{regtest_invoice, InvoiceSpec};
    use paydvm_testkit::zapper::receipt;

    let mut r = refunds(Msat::ZERO).await;
    let node = r.start().await;
    let job = r.failed_paid_job(true).await;
    wait_state(&node, &job, JobState::Refunded).await;
    let bolt11 = r.ln.payments()[0].bolt11.clone();
    let request = zap_request_of(&r, &bolt11);
    let json = request.as_json();
    let signer = r.wallet.options().signer.clone();
    let invoice = |description: &str, msat: u64, preimage: u8| {
        regtest_invoice(
            &r.wallet.options().node_key,
            &InvoiceSpec {
                amount_msat: msat,
                description_hash: <bitcoin::hashes::sha256::Hash as bitcoin::hashes::Hash>::hash(
                    description.as_bytes(),
                ),
                preimage: [preimage; 32],
                created: Duration::from_secs(paydvm::node::now_ms() / 1000),
                expiry: Duration::from_secs(600),
            },
        )
        .unwrap()
        .to_string()
    };
    let sign = |builder: EventBuilder, keys: &Keys| builder.sign_with_keys(keys).unwrap();

    let other_signer = sign(receipt(&json, &request, &bolt11, None), &Keys::generate());
    let more = invoice(&json, OWED.as_msat() + 1_000, 9);
    let other_amount = sign(receipt(&json, &request, &more, None), &signer);
    let theirs = sign(
        EventBuilder::new(Kind::from(9734), "").tags(request.tags.iter().cloned()),
        &Keys::generate(),
    );
    let theirs_json = theirs.as_json();
    let theirs_paid = invoice(&theirs_json, OWED.as_msat(), 8);
    let other_request = sign(receipt(&theirs_json, &theirs, &theirs_paid, None), &signer);
    for forged in [&other_signer, &other_amount, &other_request] {
        r.wallet.publish(forged, &r.s.urls).await.unwrap();
    }
    let genuine = r.wallet.settle(&bolt11).await.unwrap();
    wait_refund(&node, &job, |f| f.zap_receipt.is_some()).await;
    node.shutdown().await;

    let refund = refund_of(&r.s.store(), &job);
    assert_eq!(refund.zap_receipt.unwrap().as_str(), genuine.id.to_hex());
}

/// An address whose LNURL server does not allow Nostr gets a plain LNURL payment, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_without_allows_nostr_gets_a_plain_refund() {
    let mut r = refunds_with("lnurl_http_loopback = true", |w| w.allows_nostr = false).await;
    let node = r.start().await;
    let job = r.failed_paid_job(true).await;
    wait_state(&node, &job, JobState::Refunded).await;
    let feedback = refund_feedback(&mut r, &job).await;
    node.shutdown().await;

    let issued = r.wallet.issued();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].zap_request, None, "no zap request was sent");
    assert_eq!(r.ln.payments()[0].bolt11, issued[0].bolt11);
    let refund = refund_of(&r.s.store(), &job);
    assert_eq!(refund.route.unwrap().zap, None);
    let said = format!("{} {}", feedback.content, status_info(&feedback));
    assert!(
        said.contains("refunded 5000 msat") && !said.contains("zap"),
        "{said}"
    );
}

/// Issue 16: the node stops after its zap request reached the customer's LNURL server (the
/// invoice is made) but before the route is recorded. That invoice is never paid: the next start
/// signs a new zap request, records it with its invoice, and pays once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_between_the_zap_request_and_the_payment_pays_once() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = Arc::clone(&gate);
    let mut r = refunds_with("lnurl_http_loopback = true", |w| w.answer_gate = Some(held)).await;
    let node = r.start().await;
    let job = r.failed_paid_job(true).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while r.wallet.issued().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no invoice request");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.shutdown().await;
    let first = r.wallet.issued()[0].clone();
    assert!(first.zap_request.is_some());
    assert_eq!(refund_of(&r.s.store(), &job).state, RefundState::Due);

    gate.add_permits(16);
    let node = r.start().await;
    wait_state(&node, &job, JobState::Refunded).await;
    node.shutdown().await;

    let paid = r.ln.payments();
    assert_eq!(paid.len(), 1, "exactly one payment: {paid:?}");
    assert_eq!(
        r.ln.times_paid(&first.payment_hash),
        0,
        "the first invoice is never paid"
    );
    let route = refund_of(&r.s.store(), &job).route.unwrap();
    assert_eq!(route.destination, paid[0].bolt11);
    let second = zap_request_of(&r, &paid[0].bolt11);
    assert_eq!(route.zap.unwrap().request.as_str(), second.id.to_hex());
    assert_ne!(
        first.zap_request.as_deref(),
        Some(second.as_json().as_str())
    );
}
