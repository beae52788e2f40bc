//! Invoices per quote over the Lightning rail, end to end on 127.0.0.1: a real relay, the node
//! and a customer; the built-in `FakeLightning` issues real regtest invoices and plays the payer.
//! Checked on both sides: what the customer sees on the relay and the ledger trail.

use std::sync::Arc;

use async_trait::async_trait;
use nostr_sdk::prelude::*;
use paydvm::lightning::bolt11::Description;
use paydvm::lightning::fake::FakeLightning;
use paydvm::lightning::{
    Invoice, InvoiceDescription, InvoiceStatus, IssuedInvoice, LightningBackend, LightningError,
    PaymentStatus, Settlement,
};
use paydvm::node::NodeOptions;
use paydvm_ledger::store::Store;
use paydvm_ledger::{
    EventBody, JobId, JobState, Msat, PaymentOption, PaymentTarget, QueueReason, Rail,
};
use tokio::sync::broadcast;

use crate::node::{is_status, setup, steps, tag_values, wait_state, Customer, PAID_AND_DONE};

fn with_backend(backend: Arc<dyn LightningBackend>) -> NodeOptions {
    NodeOptions {
        lightning: Some(backend),
        ..NodeOptions::default()
    }
}

fn bodies(store: &Store, job: &str) -> Vec<EventBody> {
    store
        .audit(job)
        .unwrap()
        .unwrap()
        .events
        .into_iter()
        .map(|e| e.event)
        .collect()
}

/// The `["amount", msat, bolt11]` of a payment-required feedback, parsed and checked.
pub fn quoted_invoice(feedback: &Event, job: &str) -> Invoice {
    let amount = tag_values(feedback, "amount").expect("amount tag");
    assert_eq!(amount.len(), 2, "{amount:?}");
    assert_eq!(amount[0], "5000");
    let invoice = Invoice::parse(&amount[1]).expect("a valid bolt11");
    assert_eq!(invoice.amount(), Some(Msat::from_msat(5_000)));
    assert_eq!(
        invoice.description(),
        Description::Text(format!("paydvm job {job}"))
    );
    invoice
}

pub fn assert_paid_trail(store: &Store, job: &str, hash: &str) {
    assert_eq!(steps(store, job), PAID_AND_DONE);
    let events = bodies(store, job);
    let options = events
        .iter()
        .find_map(|b| match b {
            EventBody::QuoteIssued { options, .. } => Some(options.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        matches!(&options[..], [PaymentOption::Invoice { payment_hash, .. }] if payment_hash == hash)
    );
    let payment = events
        .iter()
        .find_map(|b| match b {
            EventBody::PaymentReceived(p) => Some(p.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(payment.rail, Rail::Invoice);
    assert_eq!(payment.reference.as_str(), hash);
    assert_eq!(payment.amount, Msat::from_msat(5_000));
    assert!(matches!(payment.target, PaymentTarget::Job { job: ref j, .. } if j.as_str() == job));
    assert!(events.iter().any(|b| matches!(
        b,
        EventBody::JobQueued {
            reason: QueueReason::Paid,
            ..
        }
    )));
    let record = store
        .state()
        .job(&JobId::new(job).unwrap())
        .cloned()
        .unwrap();
    assert_eq!(record.revenue, Msat::from_msat(5_000));
    assert_eq!(record.attempts, 1);
    assert!(store.verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoice_paid_job_runs_once_after_settlement() {
    let s = setup(1, "refund").await;
    let ln = FakeLightning::new();
    let node = s.start_with(with_backend(Arc::new(ln.clone()))).await;
    let mut customer = Customer::connect(&s.urls).await;
    let request = customer.request(5050, "abc", &[&["param", "mode", "upper"]]);
    customer.client.send_event(&request).await.unwrap();
    let job = request.id.to_hex();

    let quote = customer
        .wait_for(request.id, is_status("payment-required"))
        .await;
    let invoice = quoted_invoice(&quote, &job);
    assert_eq!(invoice.payee(), ln.node_id());
    assert_eq!(ln.invoices_created(), 1);
    assert_eq!(node.job(&job).await.unwrap().state, JobState::Quoted);

    ln.settle(&invoice.payment_hash()).unwrap();
    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6050))
        .await;
    assert_eq!(result.content, "ABC");
    wait_state(&node, &job, JobState::Succeeded).await;
    // The same settlement handed over again (a second notification) changes nothing.
    let payments = node.payments();
    let handed = payments.send(paydvm::node::VerifiedPayment {
        idem: format!("invoice:{}", invoice.payment_hash()),
        rail: Rail::Invoice,
        asset: paydvm_ledger::Asset::Lightning,
        reference: invoice.payment_hash(),
        linked: Vec::new(),
        amount: Msat::from_msat(5_000),
        fee: Msat::ZERO,
        evidence: None,
        payer: None,
        names: Some(job.clone()),
    });
    assert!(handed.await, "the core takes it");
    assert_eq!(node.job(&job).await.unwrap().state, JobState::Succeeded);
    node.shutdown().await;

    assert_paid_trail(&s.store(), &job, &invoice.payment_hash());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoice_settled_while_the_node_is_down_is_found_at_restart() {
    let s = setup(1, "refund").await;
    // No notifications: the node must find the settlement by looking the invoice up.
    let ln = FakeLightning::without_notifications();
    let node = s.start_with(with_backend(Arc::new(ln.clone()))).await;
    let mut customer = Customer::connect(&s.urls).await;
    let request = customer.request(5050, "abc", &[]);
    customer.client.send_event(&request).await.unwrap();
    let job = request.id.to_hex();
    let quote = customer
        .wait_for(request.id, is_status("payment-required"))
        .await;
    let invoice = quoted_invoice(&quote, &job);
    node.shutdown().await;

    ln.settle(&invoice.payment_hash()).unwrap();
    let node = s.start_with(with_backend(Arc::new(ln.clone()))).await;
    customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6050))
        .await;
    wait_state(&node, &job, JobState::Succeeded).await;
    node.shutdown().await;

    assert_eq!(
        ln.invoices_created(),
        1,
        "a restart must not issue a second invoice"
    );
    assert_paid_trail(&s.store(), &job, &invoice.payment_hash());
}

/// A backend that cannot make invoices (a wallet that is down).
struct Unreachable;

#[async_trait]
impl LightningBackend for Unreachable {
    fn name(&self) -> &'static str {
        "unreachable"
    }
    async fn create_invoice(
        &self,
        _: Msat,
        _: InvoiceDescription,
        _: u64,
    ) -> Result<IssuedInvoice, LightningError> {
        Err(LightningError::Unreachable("connection refused".into()))
    }
    async fn lookup_invoice(&self, _: &str) -> InvoiceStatus {
        InvoiceStatus::Unknown("down".into())
    }
    async fn pay_invoice(&self, _: &str, _: Msat) -> PaymentStatus {
        PaymentStatus::Unknown("down".into())
    }
    async fn lookup_payment(&self, _: &str) -> PaymentStatus {
        PaymentStatus::Unknown("down".into())
    }
    async fn balance(&self) -> Result<Msat, LightningError> {
        Err(LightningError::Unreachable("connection refused".into()))
    }
    fn settlements(&self) -> Option<broadcast::Receiver<Settlement>> {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_cannot_make_invoices_still_gets_a_quote_out() {
    let s = setup(1, "refund").await;
    let node = s.start_with(with_backend(Arc::new(Unreachable))).await;
    let mut customer = Customer::connect(&s.urls).await;
    let request = customer.request(5050, "abc", &[]);
    customer.client.send_event(&request).await.unwrap();
    let job = request.id.to_hex();
    let quote = customer
        .wait_for(request.id, is_status("payment-required"))
        .await;
    assert_eq!(tag_values(&quote, "amount").unwrap(), ["5000"]);
    wait_state(&node, &job, JobState::Quoted).await;
    node.shutdown().await;

    let store = s.store();
    assert_eq!(steps(&store, &job), ["job_received", "quote_issued"]);
    assert!(bodies(&store, &job)
        .iter()
        .any(|b| matches!(b, EventBody::QuoteIssued { options, .. } if options.is_empty())));
}
