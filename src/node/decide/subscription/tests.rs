//! Subscriptions in the decision core, over an in-memory ledger: quoted once, funded by verified
//! payments only, granted a period with its quota, used by covered jobs, renewed or expired by
//! time.

use paydvm_ledger::{
    Account, Asset, EntitlementState, EventId, JobState, Msat, Rail, SubscriptionId,
};

use super::super::harness::{customer, hex, job_id, rails, request, started, Harness, POLICY};
use super::super::{
    Action, ExecFailure, Input, NoticeKind, ReplyKind, SubscribeRequest, UnsubscribeRequest,
    VerifiedPayment,
};
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

fn unsubscribe(h: &mut Harness, seed: &str, who: &str) -> super::super::harness::Outcome {
    h.input(Input::UnsubscribeArrived(UnsubscribeRequest {
        subscription: sub_id(seed),
        author: customer(who),
        request: EventId::new(hex(&format!("7002:{seed}:{who}"))).unwrap(),
    }))
}

/// The subscription refunds: (amount, from) of each, in id order.
fn refunds_of(h: &Harness, seed: &str) -> Vec<(Msat, String)> {
    let prefix = format!("sub:{}:", sub_id(seed));
    let mut found: Vec<_> = h
        .state()
        .refunds()
        .filter(|r| r.refund.as_str().starts_with(&prefix))
        .map(|r| {
            assert_eq!(r.customer, customer("alice"));
            assert_eq!(r.asset, Some(Asset::Lightning));
            (r.amount, r.refund.as_str()[prefix.len()..].to_owned())
        })
        .collect();
    found.sort_by(|a, b| a.1.cmp(&b.1));
    found
}

fn policy_refunding_unused() -> String {
    policy().replace(
        "kinds = [5050]",
        "kinds = [5050]\non_cancel = \"refund_unused\"",
    )
}

#[test]
fn cancelling_keeps_the_period_refunds_what_was_paid_ahead_and_stops_renewal() {
    let mut h = harness();
    paid_subscription(&mut h, "s");
    pay(&mut h, "ahead", sub_id("s").as_str(), 20_000);
    // Only the subscriber can cancel.
    let events = h.ledger.next_seq();
    assert!(unsubscribe(&mut h, "s", "mallory").notices.is_empty());
    assert_eq!(h.ledger.next_seq(), events);

    h.now += 60_000;
    let out = unsubscribe(&mut h, "s", "alice");
    let NoticeKind::Cancelled { note } = &out.notices[0].kind else {
        panic!("cancelled: {out:?}")
    };
    assert!(note.contains("20000 msat will be refunded"), "{note}");
    let rec = record(&h, "s");
    assert_eq!(rec.cancelled_at.map(|t| t.0), Some(h.now));
    assert_eq!(rec.state, EntitlementState::Active, "the period runs on");
    assert_eq!(held(&h, "s"), Msat::ZERO);
    assert_eq!(
        refunds_of(&h, "s"),
        vec![(Msat::from_msat(20_000), "held".into())]
    );
    // Seen again: nothing new.
    let events = h.ledger.next_seq();
    assert!(unsubscribe(&mut h, "s", "alice").notices.is_empty());
    assert_eq!(h.ledger.next_seq(), events);

    // Jobs still run on the quota until the end; then no renewal.
    let out = h.input(Input::RequestArrived(Box::new(request("j", "alice", 5050))));
    assert!(matches!(out.replies[0].kind, ReplyKind::Processing));
    h.now = rec.period_end.0;
    h.input(Input::ClockTicked);
    assert_eq!(record(&h, "s").state, EntitlementState::Expired);

    // A payment after the cancellation is booked and owed back, all of it.
    let out = pay(&mut h, "late", sub_id("s").as_str(), PRICE);
    assert!(
        matches!(&out.notices[0].kind, NoticeKind::Error { reason } if reason.contains("cancelled")),
        "{out:?}"
    );
    assert_eq!(record(&h, "s").state, EntitlementState::Expired);
    let late = hex("ref:late");
    assert_eq!(
        refunds_of(&h, "s"),
        vec![
            (Msat::from_msat(PRICE), late),
            (Msat::from_msat(20_000), "held".into())
        ]
    );
    assert_eq!(held(&h, "s"), Msat::ZERO);
}

#[test]
fn with_refund_unused_cancelling_refunds_the_rest_of_the_period_pro_rata_and_ends_it() {
    let mut h = Harness::with_policy(&policy_refunding_unused(), rails());
    paid_subscription(&mut h, "s");
    let revenue = h.state().balance(&Account::Revenue);
    h.now += HOUR_MS / 4;
    let out = unsubscribe(&mut h, "s", "alice");
    let NoticeKind::Cancelled { note } = &out.notices[0].kind else {
        panic!("cancelled: {out:?}")
    };
    let rest = PRICE * 3 / 4;
    assert!(
        note.contains(&format!("{rest} msat will be refunded")),
        "{note}"
    );
    assert!(note.contains("no period runs"), "{note}");
    assert_eq!(
        refunds_of(&h, "s"),
        vec![(Msat::from_msat(rest), "unused".into())]
    );
    let after = h.state().balance(&Account::Revenue);
    assert_eq!(
        after.credits.checked_sub(after.debits).unwrap(),
        revenue
            .credits
            .checked_sub(revenue.debits)
            .unwrap()
            .checked_sub(Msat::from_msat(rest))
            .unwrap(),
        "taken back from revenue"
    );
    let rec = record(&h, "s");
    assert_eq!(
        (rec.state, rec.period_end.0),
        (EntitlementState::Expired, h.now)
    );
    let out = h.input(Input::RequestArrived(Box::new(request("j", "alice", 5050))));
    assert!(
        matches!(out.replies[0].kind, ReplyKind::PaymentRequired { .. }),
        "the period ended: {out:?}"
    );
}

#[test]
fn money_beyond_the_next_period_is_refunded_not_kept() {
    let mut h = harness();
    paid_subscription(&mut h, "s");
    let out = pay(&mut h, "twice", sub_id("s").as_str(), PRICE + 5_000);
    let NoticeKind::Credited { note } = &out.notices[0].kind else {
        panic!("credited: {out:?}")
    };
    assert!(note.contains("5000 msat beyond"), "{note}");
    assert_eq!(held(&h, "s"), Msat::from_msat(PRICE));
    // The next period is paid for: a further payment is refunded whole.
    pay(&mut h, "thrice", sub_id("s").as_str(), 7_000);
    assert_eq!(held(&h, "s"), Msat::from_msat(PRICE));
    let mut want = vec![
        (Msat::from_msat(5_000), hex("ref:twice")),
        (Msat::from_msat(7_000), hex("ref:thrice")),
    ];
    want.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(refunds_of(&h, "s"), want);
}

#[test]
fn a_failed_job_on_the_quota_gives_its_unit_back_once_and_refunds_nothing() {
    let mut h = harness();
    paid_subscription(&mut h, "s");
    let out = h.input(Input::RequestArrived(Box::new(request("j", "alice", 5050))));
    let attempt = started(&out.actions, &job_id("j")).expect("started on the quota");
    assert_eq!(record(&h, "s").used, 1);
    let failure = ExecFailure {
        reason: "boom".into(),
        retryable: false,
    };
    h.input(Input::ExecutorFinished {
        job: job_id("j"),
        attempt,
        outcome: Err(failure.clone()),
    });
    assert_eq!(record(&h, "s").used, 0, "the unit came back");
    assert!(h.state().refunds().next().is_none(), "nothing was charged");
    let job = h.state().job(&job_id("j")).unwrap();
    assert_eq!(job.entitlement, None);
    // The same report again gives nothing more back.
    h.input(Input::ExecutorFinished {
        job: job_id("j"),
        attempt,
        outcome: Err(failure),
    });
    assert_eq!(record(&h, "s").used, 0);
}

#[test]
fn a_unit_of_an_ended_period_is_not_given_to_the_next() {
    let mut h = harness();
    paid_subscription(&mut h, "s");
    let out = h.input(Input::RequestArrived(Box::new(request("j", "alice", 5050))));
    let attempt = started(&out.actions, &job_id("j")).unwrap();
    pay(&mut h, "next", sub_id("s").as_str(), PRICE);
    h.now += HOUR_MS;
    h.input(Input::ClockTicked);
    assert_eq!(record(&h, "s").used, 0, "a new period");
    h.input(Input::ExecutorFinished {
        job: job_id("j"),
        attempt,
        outcome: Err(ExecFailure {
            reason: "late failure".into(),
            retryable: false,
        }),
    });
    assert_eq!(record(&h, "s").used, 0, "not 0 - 1, and nothing added");
    assert_eq!(
        h.state().job(&job_id("j")).unwrap().entitlement,
        Some(sub_id("s"))
    );
}

#[test]
fn the_next_period_is_quoted_once_before_the_running_one_ends() {
    let mut rails = rails();
    rails.invoices = true;
    let mut h = Harness::with_policy(&policy(), rails);
    subscribe(&mut h, "s", "alice", "gold");
    h.input(Input::SubscriptionInvoiceIssued {
        subscription: sub_id("s"),
        expires_at: paydvm_ledger::UnixMs(h.now + 60_000),
        invoice: Err("test: no invoice".into()),
    });
    pay(&mut h, "first", sub_id("s").as_str(), PRICE);
    let end = record(&h, "s").period_end;
    // Outside the window (a tenth of the hour before the end): nothing.
    h.now = end.0 - 400_000;
    assert!(h.input(Input::ClockTicked).actions.is_empty());
    h.now = end.0 - 300_000;
    let out = h.input(Input::ClockTicked);
    let Some(Action::RequestSubscriptionInvoice {
        amount, expires_at, ..
    }) = out.actions.first()
    else {
        panic!("an invoice for the renewal: {out:?}")
    };
    assert_eq!(*amount, Msat::from_msat(PRICE));
    assert_eq!(
        expires_at.0,
        end.0 + 360_000,
        "payable until the grace ends"
    );
    // Asked once while the invoice is being made.
    assert!(h.input(Input::ClockTicked).actions.is_empty());
    let invoice = crate::lightning::IssuedInvoice {
        bolt11: "lnbcrt500n1renew".into(),
        payment_hash: hex("renew-hash"),
    };
    let out = h.input(Input::SubscriptionInvoiceIssued {
        subscription: sub_id("s"),
        expires_at: *expires_at,
        invoice: Ok(invoice),
    });
    let NoticeKind::PaymentRequired {
        bolt11: Some(bolt11),
        note: Some(note),
        ..
    } = &out.notices[0].kind
    else {
        panic!("a renewal quote: {out:?}")
    };
    assert_eq!(bolt11, "lnbcrt500n1renew");
    assert!(note.contains("renewal"), "{note}");
    assert!(out
        .actions
        .iter()
        .any(|a| matches!(a, Action::WatchSubscriptionInvoice { .. })));
    assert_eq!(record(&h, "s").renewal_quoted, Some(end));
    // Once per period.
    let later = h.input(Input::ClockTicked);
    assert!(later.actions.is_empty() && later.notices.is_empty());
    // Paid: the next period follows back to back.
    pay(&mut h, "renewal", sub_id("s").as_str(), PRICE);
    h.now = end.0;
    let out = h.input(Input::ClockTicked);
    assert!(
        matches!(&out.notices[0].kind, NoticeKind::Receipt { period_start, .. } if *period_start == end),
        "{out:?}"
    );
}

#[test]
fn a_cancelled_subscription_is_not_quoted_again() {
    let mut h = harness();
    paid_subscription(&mut h, "s");
    unsubscribe(&mut h, "s", "alice");
    h.now = record(&h, "s").period_end.0 - 1_000;
    let out = h.input(Input::ClockTicked);
    assert!(out.notices.is_empty(), "{out:?}");
}

#[test]
fn a_late_payment_within_grace_continues_back_to_back_and_after_it_starts_anew() {
    for (late_ms, continues) in [(100_000, true), (400_000, false)] {
        let mut h = harness();
        paid_subscription(&mut h, "s");
        let end = record(&h, "s").period_end;
        h.now = end.0 + late_ms;
        h.input(Input::ClockTicked);
        assert_eq!(record(&h, "s").state, EntitlementState::Expired);
        let out = pay(&mut h, "late", sub_id("s").as_str(), PRICE);
        let NoticeKind::Receipt { period_start, .. } = &out.notices[0].kind else {
            panic!("a receipt: {out:?}")
        };
        let want = if continues { end.0 } else { h.now };
        assert_eq!(period_start.0, want, "{late_ms} ms late");
    }
}

#[test]
fn a_result_of_a_job_on_the_quota_does_not_expire_before_the_paid_window() {
    let policy = format!("{}\n", policy()).replace(
        "[[subscriptions.tier]]",
        "[results]\nexpiration_secs = 60\n\n[[subscriptions.tier]]",
    );
    let mut h = Harness::with_policy(&policy, rails());
    paid_subscription(&mut h, "s");
    let end = record(&h, "s").period_end;
    let out = h.input(Input::RequestArrived(Box::new(request("j", "alice", 5050))));
    let attempt = started(&out.actions, &job_id("j")).unwrap();
    let out = h.input(Input::ExecutorFinished {
        job: job_id("j"),
        attempt,
        outcome: Ok("done".into()),
    });
    let ReplyKind::Result { expires_at, .. } = &out.replies[0].kind else {
        panic!("a result: {out:?}")
    };
    assert_eq!(*expires_at, Some(end));
}

/// A tier with `paid_ahead = "refund"`: a second payment while the period runs and before the
/// renewal window opens is refunded whole (and the subscriber told so); once the window is open
/// a payment pays the next period as usual.
#[test]
fn a_tier_refunding_money_paid_ahead_refunds_it_until_the_renewal_window() {
    let policy = policy().replace("kinds = [5050]", "kinds = [5050]\npaid_ahead = \"refund\"");
    let mut h = Harness::with_policy(&policy, rails());
    paid_subscription(&mut h, "s");
    let out = pay(&mut h, "again", sub_id("s").as_str(), 7_000);
    let NoticeKind::Credited { note } = &out.notices[0].kind else {
        panic!("told: {out:?}")
    };
    assert!(
        note.contains("7000 msat received will be refunded"),
        "{note}"
    );
    assert_eq!(held(&h, "s"), Msat::ZERO);
    assert_eq!(
        refunds_of(&h, "s"),
        [(Msat::from_msat(7_000), hex("ref:again"))]
    );
    // The renewal window (a tenth of the hour before the end) is open: the payment is kept.
    let end = h.state().subscription(&sub_id("s")).unwrap().period_end.0;
    h.now = end - HOUR_MS / 20;
    pay(&mut h, "renewal", sub_id("s").as_str(), PRICE);
    assert_eq!(held(&h, "s"), Msat::from_msat(PRICE));
    assert_eq!(refunds_of(&h, "s").len(), 1);
}
