//! Subscriptions in the decision core, over an in-memory ledger: quoted once, funded by verified
//! payments only, granted a period with its quota, used by covered jobs, renewed or expired by
//! time.

use paydvm_ledger::{Account, Asset, EntitlementState, JobState, Msat, Rail, SubscriptionId};

use super::super::harness::{customer, hex, job_id, rails, request, Harness, POLICY};
use super::super::{Action, Input, NoticeKind, ReplyKind, SubscribeRequest, VerifiedPayment};
use super::SubscriptionRecord;

const PRICE: u64 = 50_000;
const HOUR_MS: u64 = 3_600_000;

fn policy() -> String {
    format!(
        r#"{POLICY}
[[subscriptions.tier]]
id = "gold"
name = "Gold"
price_msat = {PRICE}
period_secs = 3600
quota = 2
kinds = [5050]
"#
    )
}

fn harness() -> Harness {
    Harness::with_policy(&policy(), rails())
}

fn sub_id(seed: &str) -> SubscriptionId {
    SubscriptionId::new(hex(&format!("7001:{seed}"))).unwrap()
}

fn subscribe(h: &mut Harness, seed: &str, who: &str, tier: &str) -> super::super::harness::Outcome {
    h.input(Input::SubscribeArrived(SubscribeRequest {
        subscription: sub_id(seed),
        subscriber: customer(who),
        tier: tier.into(),
    }))
}

fn pay(h: &mut Harness, key: &str, names: &str, msat: u64) -> super::super::harness::Outcome {
    h.input(Input::PaymentVerified(Box::new(VerifiedPayment {
        idem: format!("zap:{}", hex(key)),
        rail: Rail::Zap,
        asset: Asset::Lightning,
        reference: hex(&format!("ref:{key}")),
        linked: vec![],
        amount: Msat::from_msat(msat),
        fee: Msat::ZERO,
        evidence: None,
        payer: Some(customer("alice").to_string()),
        names: Some(names.to_owned()),
    })))
}

fn record(h: &Harness, seed: &str) -> SubscriptionRecord {
    h.state()
        .subscription(&sub_id(seed))
        .cloned()
        .expect("the subscription")
}

fn held(h: &Harness, seed: &str) -> Msat {
    h.state().held(&Account::Subscription(sub_id(seed)))
}

/// A subscription of alice's paid in full: its first period runs from the harness's time.
fn paid_subscription(h: &mut Harness, seed: &str) {
    subscribe(h, seed, "alice", "gold");
    let out = pay(h, &format!("{seed}:full"), sub_id(seed).as_str(), PRICE);
    assert!(
        matches!(out.notices[0].kind, NoticeKind::Receipt { .. }),
        "{out:?}"
    );
}

#[test]
fn a_subscribe_request_for_a_tier_is_quoted_once() {
    let mut h = harness();
    let out = subscribe(&mut h, "s", "alice", "gold");
    let [notice] = &out.notices[..] else {
        panic!("one notice: {out:?}")
    };
    assert_eq!(notice.subscriber, customer("alice"));
    assert!(matches!(
        &notice.kind,
        NoticeKind::PaymentRequired { amount, bolt11: None, expires_at: Some(_), .. }
            if *amount == Msat::from_msat(PRICE)
    ));
    let rec = record(&h, "s");
    assert_eq!(rec.state, EntitlementState::Quoted);
    assert_eq!(
        (rec.price, rec.period_ms, rec.quota),
        (Msat::from_msat(PRICE), HOUR_MS, 2)
    );
    // Seen again (another relay, a restart): nothing new.
    let events = h.ledger.next_seq();
    let again = subscribe(&mut h, "s", "alice", "gold");
    assert!(again.notices.is_empty());
    assert_eq!(h.ledger.next_seq(), events);
}

#[test]
fn an_unknown_tier_is_refused_and_nothing_is_recorded_for_it() {
    let mut h = harness();
    let out = subscribe(&mut h, "s", "alice", "platinum");
    assert!(
        matches!(&out.notices[0].kind, NoticeKind::Error { reason } if reason.contains("platinum"))
    );
    assert!(h.state().subscription(&sub_id("s")).is_none());
}

#[test]
fn with_a_lightning_backend_the_quote_waits_for_its_invoice_and_watches_it() {
    let mut rails = rails();
    rails.invoices = true;
    let mut h = Harness::with_policy(&policy(), rails);
    let out = subscribe(&mut h, "s", "alice", "gold");
    let Some(Action::RequestSubscriptionInvoice {
        amount, expires_at, ..
    }) = out.actions.first()
    else {
        panic!("an invoice asked for: {out:?}")
    };
    assert_eq!(*amount, Msat::from_msat(PRICE));
    assert!(h.state().subscription(&sub_id("s")).is_none());
    let invoice = crate::lightning::IssuedInvoice {
        bolt11: "lnbcrt500n1fake".into(),
        payment_hash: hex("hash"),
    };
    let out = h.input(Input::SubscriptionInvoiceIssued {
        subscription: sub_id("s"),
        expires_at: *expires_at,
        invoice: Ok(invoice),
    });
    assert!(matches!(
        &out.notices[0].kind,
        NoticeKind::PaymentRequired { bolt11: Some(b), .. } if b == "lnbcrt500n1fake"
    ));
    assert!(out
        .actions
        .iter()
        .any(|a| matches!(a, Action::WatchSubscriptionInvoice { .. })));
    assert_eq!(record(&h, "s").state, EntitlementState::Quoted);
}

#[test]
fn payments_fund_the_subscription_and_the_full_price_grants_one_period_with_a_receipt() {
    let mut h = harness();
    subscribe(&mut h, "s", "alice", "gold");
    let out = pay(&mut h, "part", sub_id("s").as_str(), 20_000);
    assert!(matches!(
        &out.notices[0].kind,
        NoticeKind::PaymentRequired { amount, .. } if *amount == Msat::from_msat(30_000)
    ));
    assert_eq!(held(&h, "s"), Msat::from_msat(20_000));
    assert_eq!(record(&h, "s").state, EntitlementState::Quoted);

    let out = pay(&mut h, "rest", sub_id("s").as_str(), 30_000);
    let NoticeKind::Receipt {
        period_start,
        period_end,
        tier,
        payment,
    } = &out.notices[0].kind
    else {
        panic!("a receipt: {out:?}")
    };
    assert_eq!((period_start.0, period_end.0), (h.now, h.now + HOUR_MS));
    assert_eq!(
        (tier.as_str(), payment.as_str()),
        ("gold", hex("ref:rest").as_str())
    );
    let rec = record(&h, "s");
    assert_eq!(
        (rec.state, rec.used, rec.quota),
        (EntitlementState::Active, 0, 2)
    );
    assert_eq!(held(&h, "s"), Msat::ZERO);
    assert_eq!(
        h.state().balance(&Account::Revenue).credits,
        Msat::from_msat(PRICE)
    );

    // The same payment again is a no-op: no second period, no double count.
    let again = pay(&mut h, "rest", sub_id("s").as_str(), 30_000);
    assert!(again.notices.is_empty());
    assert_eq!(
        h.state().balance(&Account::Revenue).credits,
        Msat::from_msat(PRICE)
    );
}

#[test]
fn covered_jobs_run_on_the_quota_then_are_priced_with_the_reason() {
    let mut h = harness();
    paid_subscription(&mut h, "s");
    for (n, seed) in ["j1", "j2"].into_iter().enumerate() {
        let out = h.input(Input::RequestArrived(Box::new(request(
            seed, "alice", 5050,
        ))));
        assert!(
            matches!(out.replies[0].kind, ReplyKind::Processing),
            "{out:?}"
        );
        let queued = h.state().job(&job_id(seed)).unwrap();
        assert_eq!(queued.state, JobState::Processing);
        assert_eq!(record(&h, "s").used, n as u32 + 1);
    }
    assert_eq!(
        h.state().held(&Account::Job(job_id("j1"))),
        Msat::ZERO,
        "nothing charged"
    );
    let out = h.input(Input::RequestArrived(Box::new(request(
        "j3", "alice", 5050,
    ))));
    let ReplyKind::PaymentRequired {
        note: Some(note), ..
    } = &out.replies[0].kind
    else {
        panic!("priced: {out:?}")
    };
    assert!(note.contains("quota used up (2 of 2"), "{note}");
    // Another customer's job is priced as always, without a note.
    let out = h.input(Input::RequestArrived(Box::new(request("b1", "bob", 5050))));
    assert!(matches!(
        out.replies[0].kind,
        ReplyKind::PaymentRequired { note: None, .. }
    ));
}

#[test]
fn a_kind_the_tier_does_not_cover_is_priced_or_free_as_usual() {
    let mut h = harness();
    paid_subscription(&mut h, "s");
    let out = h.input(Input::RequestArrived(Box::new(request(
        "free", "alice", 5001,
    ))));
    assert!(matches!(out.replies[0].kind, ReplyKind::Processing));
    assert_eq!(record(&h, "s").used, 0, "a free job uses no quota");
}

#[test]
fn an_ended_period_expires_without_funds_and_jobs_are_priced_again() {
    let mut h = harness();
    paid_subscription(&mut h, "s");
    h.now += HOUR_MS;
    h.input(Input::ClockTicked);
    assert_eq!(record(&h, "s").state, EntitlementState::Expired);
    let out = h.input(Input::RequestArrived(Box::new(request(
        "late", "alice", 5050,
    ))));
    let ReplyKind::PaymentRequired {
        note: Some(note), ..
    } = &out.replies[0].kind
    else {
        panic!("priced: {out:?}")
    };
    assert!(note.contains("period has ended"), "{note}");
    // Paying again starts a new period from now.
    let out = pay(&mut h, "renew", sub_id("s").as_str(), PRICE);
    let NoticeKind::Receipt { period_start, .. } = &out.notices[0].kind else {
        panic!("a receipt: {out:?}")
    };
    assert_eq!(period_start.0, h.now);
    assert_eq!(record(&h, "s").state, EntitlementState::Active);
}

#[test]
fn money_paid_during_a_period_renews_it_back_to_back() {
    let mut h = harness();
    paid_subscription(&mut h, "s");
    let first_end = record(&h, "s").period_end;
    let out = pay(&mut h, "ahead", sub_id("s").as_str(), PRICE);
    assert!(
        matches!(out.notices[0].kind, NoticeKind::Credited { .. }),
        "{out:?}"
    );
    assert_eq!(
        record(&h, "s").period_end,
        first_end,
        "the running period is not changed"
    );
    assert_eq!(held(&h, "s"), Msat::from_msat(PRICE));
    h.now = first_end.0 + 1_000;
    let out = h.input(Input::ClockTicked);
    let NoticeKind::Receipt {
        period_start,
        period_end,
        payment,
        ..
    } = &out.notices[0].kind
    else {
        panic!("a receipt for the renewal: {out:?}")
    };
    assert_eq!(
        (*period_start, period_end.0),
        (first_end, first_end.0 + HOUR_MS)
    );
    assert_eq!(payment, "prepaid");
    let rec = record(&h, "s");
    assert_eq!((rec.state, rec.used), (EntitlementState::Active, 0));
    assert_eq!(held(&h, "s"), Msat::ZERO);
    // The tick again changes nothing.
    assert!(h.input(Input::ClockTicked).notices.is_empty());
}

#[test]
fn a_payment_naming_nothing_we_know_funds_no_subscription() {
    let mut h = harness();
    let out = pay(&mut h, "stray", sub_id("never-subscribed").as_str(), PRICE);
    assert!(out.notices.is_empty());
    assert_eq!(h.state().held(&Account::Unmatched), Msat::from_msat(PRICE));
    assert!(h.state().subscriptions().next().is_none());
}
