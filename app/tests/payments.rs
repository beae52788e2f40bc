//! The core's payment path: a verified payment (as a rail hands it over) booked under the payment
//! policy, against a real relay and customer. The rails' own evidence checks are tested with the
//! rails; here the evidence is taken as verified and the booking is what is checked.

use nostr_sdk::prelude::*;
use paydvm::node::VerifiedPayment;
use paydvm_ledger::{Account, Asset, JobId, JobState, Msat, Pubkey, Rail, RefundId};

use crate::node::{is_status, job_state, setup, steps, tag_values, wait_state, Customer};

fn invoice_payment(
    idem: &str,
    reference: &str,
    msat: u64,
    names: Option<String>,
) -> VerifiedPayment {
    VerifiedPayment {
        idem: idem.to_owned(),
        rail: Rail::Invoice,
        asset: Asset::Lightning,
        reference: reference.to_owned(),
        linked: Vec::new(),
        amount: Msat::from_msat(msat),
        fee: Msat::ZERO,
        evidence: None,
        payer: None,
        names,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_then_full_payment_runs_the_job_once() {
    let s = setup(1, "refund").await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let request = customer.request(5050, "abc", &[&["param", "mode", "upper"]]);
    customer.client.send_event(&request).await.unwrap();
    let job = request.id.to_hex();
    let quote = customer
        .wait_for(request.id, is_status("payment-required"))
        .await;

    let payments = node.payments();
    assert!(
        payments
            .send(invoice_payment("pay:1", "hash-1", 2_000, Some(job.clone())))
            .await
    );
    wait_state(&node, &job, JobState::PartiallyPaid).await;
    let owed = customer
        .wait_for(request.id, |e| {
            is_status("payment-required")(e) && e.id != quote.id
        })
        .await;
    assert_eq!(tag_values(&owed, "amount").unwrap(), ["3000"]);

    // The rest names the quote's feedback event, as a zap on the feedback does.
    let rest = invoice_payment("pay:2", "hash-2", 3_000, Some(quote.id.to_hex()));
    payments.send(rest.clone()).await;
    payments.send(rest).await;
    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6050))
        .await;
    assert_eq!(result.content, "ABC");
    wait_state(&node, &job, JobState::Succeeded).await;
    node.shutdown().await;

    let store = s.store();
    assert_eq!(
        steps(&store, &job),
        [
            "job_received",
            "quote_issued",
            "payment_received",
            "payment_received",
            "job_queued",
            "processing_started",
            "result_published"
        ]
    );
    let record = store
        .state()
        .job(&JobId::new(&job).unwrap())
        .cloned()
        .unwrap();
    assert_eq!(record.funded_total, Msat::from_msat(5_000));
    assert_eq!(record.revenue, Msat::from_msat(5_000));
    assert_eq!(record.attempts, 1);
    assert!(store.verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_reference_credits_nothing_and_excess_is_refunded() {
    let s = setup(1, "refund").await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let request = customer.request(5050, "abc", &[]);
    customer.client.send_event(&request).await.unwrap();
    let job = request.id.to_hex();
    customer
        .wait_for(request.id, is_status("payment-required"))
        .await;

    let payments = node.payments();
    payments
        .send(invoice_payment("pay:a", "hash-a", 8_000, Some(job.clone())))
        .await;
    // New evidence carrying the same payment reference: refused by the ledger.
    payments
        .send(invoice_payment("pay:b", "hash-a", 8_000, Some(job.clone())))
        .await;
    customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6050))
        .await;
    wait_state(&node, &job, JobState::Succeeded).await;
    node.shutdown().await;

    let store = s.store();
    let record = store
        .state()
        .job(&JobId::new(&job).unwrap())
        .cloned()
        .unwrap();
    assert_eq!(record.funded_total, Msat::from_msat(8_000));
    assert_eq!(record.revenue, Msat::from_msat(5_000));
    let excess = RefundId::new(format!("{job}:excess:hash-a")).unwrap();
    assert_eq!(
        store.state().refund(&excess).unwrap().amount,
        Msat::from_msat(3_000)
    );
    assert_eq!(
        store
            .state()
            .balance(&Account::Asset(Asset::Lightning))
            .debits,
        Msat::from_msat(8_000)
    );
    assert_eq!(job_state(&store, &job), JobState::Succeeded);
    assert!(store.verify().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_naming_no_job_go_to_credit_or_unmatched() {
    let s = setup(1, "refund").await;
    let node = s.start().await;
    let payer = Keys::generate().public_key().to_hex();
    let payments = node.payments();
    let mut credit = invoice_payment("pay:c", "hash-c", 4_000, None);
    credit.payer = Some(payer.clone());
    payments.send(credit).await;
    let stranger = EventId::all_zeros().to_hex();
    payments
        .send(invoice_payment("pay:u", "hash-u", 1_000, Some(stranger)))
        .await;
    // A job read forces the core to have handled both payments (one command at a time).
    assert!(node.job(&EventId::all_zeros().to_hex()).await.is_none());
    node.shutdown().await;

    let store = s.store();
    assert_eq!(
        store
            .state()
            .held(&Account::Credit(Pubkey::new(payer).unwrap())),
        Msat::from_msat(4_000)
    );
    assert_eq!(
        store.state().held(&Account::Unmatched),
        Msat::from_msat(1_000)
    );
    assert!(store.verify().is_ok());
}
