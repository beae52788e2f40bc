//! The decision core, one input kind at a time, over an in-memory ledger (see [`super::harness`]):
//! what each input records, replies and sets going, and that the same input again changes
//! nothing.

use paydvm_ledger::{
    Asset, EffectId, FeePayer, JobState, Msat, Rail, RefundId, RefundRoute, RefundState,
};

use super::harness::{customer, hex, job_id, rails, request, started, Harness};
use super::{
    Action, ExecFailure, Input, Rails, RefundRouteOrder, RefundStatus, ReplyKind, VerifiedPayment,
};
use crate::operator::{OperatorAction, OperatorRequest};

const PRICE: u64 = 10_000;
const MINT: &str = "http://127.0.0.1:3338";

fn arrive(h: &mut Harness, seed: &str, kind: u16) -> super::harness::Outcome {
    h.input(Input::RequestArrived(Box::new(request(
        seed, "alice", kind,
    ))))
}

fn payment(seed: &str, names: &str, msat: u64, asset: Asset) -> Input {
    let rail = match asset {
        Asset::Lightning => Rail::Invoice,
        Asset::Mint { .. } => Rail::NutZap,
    };
    Input::PaymentVerified(Box::new(VerifiedPayment {
        idem: format!("pay:{seed}"),
        rail,
        asset,
        reference: format!("ref:{seed}"),
        linked: vec![],
        amount: Msat::from_msat(msat),
        fee: Msat::ZERO,
        evidence: None,
        payer: Some(customer("alice").to_string()),
        names: Some(names.to_owned()),
    }))
}

fn mint() -> Asset {
    Asset::Mint { url: MINT.into() }
}

fn finished(seed: &str, attempt: u32, outcome: Result<&str, bool>) -> Input {
    Input::ExecutorFinished {
        job: job_id(seed),
        attempt,
        outcome: outcome.map(str::to_owned).map_err(|retryable| ExecFailure {
            reason: "the model is down".into(),
            retryable,
        }),
    }
}

fn state(h: &Harness, seed: &str) -> JobState {
    h.state().job(&job_id(seed)).expect("the job").state
}

fn operator(action: OperatorAction) -> Input {
    Input::OperatorAsked(OperatorRequest {
        id: hex(&format!("{action:?}"))[..16].to_owned(),
        note: "test".into(),
        action,
    })
}

fn route_order(actions: &[Action]) -> Option<&RefundRouteOrder> {
    actions.iter().find_map(|a| match a {
        Action::RouteRefund(order) => Some(order),
        _ => None,
    })
}

/// A paid job (Lightning) that failed on every attempt: its refund is due.
fn failed_paid_job(h: &mut Harness, seed: &str, asset: Asset) -> RefundId {
    arrive(h, seed, 5050);
    h.input(payment(seed, job_id(seed).as_str(), PRICE, asset));
    h.input(finished(seed, 1, Err(true)));
    h.input(finished(seed, 2, Err(true)));
    assert_eq!(state(h, seed), JobState::RefundDue);
    RefundId::new(format!("{}:fail", job_id(seed))).unwrap()
}

#[test]
fn a_free_request_is_queued_and_started_once() {
    let mut h = Harness::new(rails());
    let out = arrive(&mut h, "free", 5001);
    assert_eq!(started(&out.actions, &job_id("free")), Some(1));
    assert_eq!(out.replies[0].kind, ReplyKind::Processing);
    assert_eq!(state(&h, "free"), JobState::Processing);
    assert!(h.decider.memory().is_running(&job_id("free")));

    let again = arrive(&mut h, "free", 5001);
    assert!(
        again.actions.is_empty() && again.replies.is_empty(),
        "{again:?}"
    );
}

#[test]
fn a_priced_request_is_quoted_until_it_is_paid_then_runs_and_its_result_is_revenue() {
    let mut h = Harness::new(rails());
    let out = arrive(&mut h, "paid", 5050);
    assert!(started(&out.actions, &job_id("paid")).is_none());
    let expires = h.now + 600_000;
    assert_eq!(
        out.replies[0].kind,
        ReplyKind::PaymentRequired {
            amount: Msat::from_msat(PRICE),
            bolt11: None,
            expires_at: Some(paydvm_ledger::UnixMs(expires)),
            note: None,
        }
    );
    let paid = h.input(payment(
        "p1",
        job_id("paid").as_str(),
        PRICE,
        Asset::Lightning,
    ));
    assert_eq!(started(&paid.actions, &job_id("paid")), Some(1));
    let done = h.input(finished("paid", 1, Ok("the answer")));
    assert!(
        matches!(&done.replies[0].kind, ReplyKind::Result { content, .. } if content == "the answer")
    );
    assert_eq!(state(&h, "paid"), JobState::Succeeded);
    assert!(done.actions.contains(&Action::Forget(job_id("paid"))));
    assert!(!h.decider.memory().holds(&job_id("paid")));
    let revenue = h.state().held(&paydvm_ledger::Account::Revenue);
    assert_eq!(revenue, Msat::from_msat(PRICE));
}

#[test]
fn a_payment_seen_again_changes_nothing_and_a_partial_one_waits_for_the_rest() {
    let mut h = Harness::new(rails());
    arrive(&mut h, "part", 5050);
    let first = h.input(payment(
        "half",
        job_id("part").as_str(),
        PRICE / 2,
        Asset::Lightning,
    ));
    assert_eq!(state(&h, "part"), JobState::PartiallyPaid);
    assert!(started(&first.actions, &job_id("part")).is_none());
    let seq = h.ledger.next_seq();
    let again = h.input(payment(
        "half",
        job_id("part").as_str(),
        PRICE / 2,
        Asset::Lightning,
    ));
    assert_eq!(h.ledger.next_seq(), seq, "the same evidence is booked once");
    assert!(again.actions.is_empty() && again.replies.is_empty());
    let rest = h.input(payment(
        "rest",
        job_id("part").as_str(),
        PRICE / 2,
        Asset::Lightning,
    ));
    assert_eq!(started(&rest.actions, &job_id("part")), Some(1));
}

#[test]
fn with_a_lightning_rail_the_quote_waits_for_its_invoice_and_the_invoice_is_watched() {
    let mut r = rails();
    r.invoices = true;
    let mut h = Harness::new(r);
    let out = arrive(&mut h, "inv", 5050);
    assert_eq!(state(&h, "inv"), JobState::Received);
    let Some(Action::RequestInvoice {
        amount, expires_at, ..
    }) = out.actions.first().cloned()
    else {
        panic!("{out:?}");
    };
    assert_eq!(amount, Msat::from_msat(PRICE));
    let invoice = crate::lightning::IssuedInvoice {
        bolt11: "lnbcrt100n1test".into(),
        payment_hash: hex("hash"),
    };
    let quoted = h.input(Input::InvoiceIssued {
        job: job_id("inv"),
        amount,
        expires_at,
        invoice: Ok(invoice.clone()),
    });
    assert_eq!(state(&h, "inv"), JobState::Quoted);
    assert!(matches!(
        &quoted.replies[0].kind,
        ReplyKind::PaymentRequired { bolt11: Some(b), .. } if *b == invoice.bolt11
    ));
    assert!(quoted
        .actions
        .iter()
        .any(|a| matches!(a, Action::WatchInvoice { .. })));
}

#[test]
fn an_unoffered_kind_is_ignored_and_an_unparsable_request_is_rejected_once() {
    let mut h = Harness::new(rails());
    let out = arrive(&mut h, "other", 5999);
    assert!(out.replies.is_empty() && h.state().job(&job_id("other")).is_none());

    let bad = || Input::RequestUnparsable {
        job: job_id("bad"),
        customer: customer("alice"),
        kind: 5050,
        reason: "no input".into(),
    };
    let out = h.input(bad());
    assert_eq!(state(&h, "bad"), JobState::Rejected);
    assert_eq!(
        out.replies[0].kind,
        ReplyKind::Error {
            reason: "no input".into()
        }
    );
    assert!(h.input(bad()).replies.is_empty());
}

#[test]
fn a_result_for_an_attempt_that_is_not_the_current_one_is_ignored() {
    let mut h = Harness::new(rails());
    arrive(&mut h, "stale", 5001);
    let out = h.input(finished("stale", 7, Ok("late")));
    assert!(out.replies.is_empty());
    assert_eq!(state(&h, "stale"), JobState::Processing);
}

#[test]
fn a_retryable_failure_runs_again_then_the_refund_waits_for_lightning_float() {
    let mut h = Harness::new(rails());
    arrive(&mut h, "fail", 5050);
    h.input(payment(
        "f",
        job_id("fail").as_str(),
        PRICE,
        Asset::Lightning,
    ));
    let retry = h.input(finished("fail", 1, Err(true)));
    assert_eq!(started(&retry.actions, &job_id("fail")), Some(2));
    let end = h.input(finished("fail", 2, Err(true)));
    assert!(matches!(end.replies[0].kind, ReplyKind::Error { .. }));
    // The asset holds the payment (10 000) but a refund also reserves the 10 000 fee cap.
    assert!(route_order(&end.actions).is_none(), "{end:?}");
    let refund = RefundId::new(format!("{}:fail", job_id("fail"))).unwrap();
    let why = h.state().refund(&refund).unwrap().deferred.clone().unwrap();
    assert!(why.contains("float add lightning"), "{why}");

    let float = h.input(operator(OperatorAction::FloatAdd {
        asset: "lightning".into(),
        msat: 10_000,
    }));
    assert!(float.operator_refused.is_none(), "{float:?}");
    let Some(RefundRouteOrder::Lightning {
        amount, attempt, ..
    }) = route_order(&float.actions)
    else {
        panic!("routed once the float is booked: {float:?}");
    };
    assert_eq!((*amount, *attempt), (Msat::from_msat(PRICE), 1));
}

fn lightning_route() -> RefundRoute {
    RefundRoute {
        asset: Asset::Lightning,
        destination: "lnbcrt100n1refund".into(),
        lookup: hex("refund-hash"),
        fee_reserve: Msat::from_msat(10_000),
        zap: None,
    }
}

fn funded(h: &mut Harness) {
    h.input(operator(OperatorAction::FloatAdd {
        asset: "lightning".into(),
        msat: 50_000,
    }));
}

#[test]
fn a_routed_refund_is_recorded_before_it_is_paid_and_settles_once() {
    let mut h = Harness::new(rails());
    funded(&mut h);
    let refund = failed_paid_job(&mut h, "r", Asset::Lightning);
    let routed = || Input::RefundRouted {
        refund: refund.clone(),
        attempt: 1,
        route: lightning_route(),
    };
    let out = h.input(routed());
    assert_eq!(
        h.state().refund(&refund).unwrap().state,
        RefundState::InFlight
    );
    assert!(out
        .actions
        .iter()
        .any(|a| matches!(a, Action::PayRefund { attempt: 1, .. })));
    let twice = h.input(routed());
    assert!(
        !twice
            .actions
            .iter()
            .any(|a| matches!(a, Action::PayRefund { .. })),
        "a route that comes again is not paid again: {twice:?}"
    );
    let paid = || Input::RefundOutcome {
        refund: refund.clone(),
        attempt: 1,
        status: RefundStatus::Paid {
            fee: Msat::from_msat(12),
            fee_paid_by: FeePayer::Operator,
            evidence: "preimage".into(),
        },
    };
    h.input(paid());
    assert_eq!(state(&h, "r"), JobState::Refunded);
    let seq = h.ledger.next_seq();
    h.input(paid());
    assert_eq!(h.ledger.next_seq(), seq);
}

/// The other node (`other`, swapped in) books `failed` first; the same answer then reaches this
/// node late: it books nothing, and this node routes the refund's next attempt.
fn booked_elsewhere_first(h: &mut Harness, other: &mut super::Decider, failed: Input) {
    std::mem::swap(&mut h.decider, other);
    h.input(failed.clone());
    std::mem::swap(&mut h.decider, other);
    let seq = h.ledger.next_seq();
    let late = h.input(failed);
    assert_eq!(h.ledger.next_seq(), seq, "booked once");
    h.now += 3_600_000;
    let tick = h.input(Input::ClockTicked);
    let routed = route_order(&late.actions).or(route_order(&tick.actions));
    let Some(RefundRouteOrder::Lightning { attempt, .. }) = routed else {
        panic!("routed again: {late:?} {tick:?}");
    };
    assert_eq!(*attempt, 2);
}

/// Two nodes on one database: this node asked its desk for a route, another node started the
/// refund meanwhile (its write followed here). The desk's late answer, a route or a deferral,
/// is released, and the attempt the other node started is looked up here, never paid again.
#[test]
fn a_refund_another_node_started_meanwhile_is_looked_up_not_left_waiting() {
    for late_answer in ["routed", "deferred"] {
        let mut h = Harness::new(rails());
        funded(&mut h);
        let refund = failed_paid_job(&mut h, "two", Asset::Lightning);
        let routed = Input::RefundRouted {
            refund: refund.clone(),
            attempt: 1,
            route: lightning_route(),
        };
        // The other node: a decider of its own, writing the same ledger.
        let mut other = h.decider.clone();
        std::mem::swap(&mut h.decider, &mut other);
        h.input(routed.clone());
        std::mem::swap(&mut h.decider, &mut other);
        assert_eq!(
            h.state().refund(&refund).unwrap().state,
            RefundState::InFlight
        );
        let answer = match late_answer {
            "routed" => routed,
            _ => Input::RefundDeferred {
                refund: refund.clone(),
                reason: "the customer's wallet did not answer".into(),
            },
        };
        let out = h.input(answer);
        assert!(
            !out.actions
                .iter()
                .any(|a| matches!(a, Action::PayRefund { .. })),
            "{late_answer}: {out:?}"
        );
        assert!(
            out.actions
                .iter()
                .any(|a| matches!(a, Action::LookUpRefund { attempt: 1, .. })),
            "{late_answer}: the started attempt is looked up: {out:?}"
        );
    }
}

/// Two nodes on one database: this node looks up the attempt another node started; the other
/// books it failed before the answer comes. The late answer books nothing, and this node still
/// routes the refund's next attempt.
#[test]
fn a_look_up_answered_after_another_node_booked_the_outcome_leaves_the_refund_routable() {
    let mut h = Harness::new(rails());
    funded(&mut h);
    let refund = failed_paid_job(&mut h, "two", Asset::Lightning);
    let mut other = h.decider.clone();
    let failed = Input::RefundOutcome {
        refund: refund.clone(),
        attempt: 1,
        status: RefundStatus::Failed("no route".into()),
    };
    let routed = Input::RefundRouted {
        refund: refund.clone(),
        attempt: 1,
        route: lightning_route(),
    };
    std::mem::swap(&mut h.decider, &mut other);
    h.input(routed.clone());
    std::mem::swap(&mut h.decider, &mut other);
    // This node's own desk answers late: released, and the other's attempt looked up.
    let looked = h.input(routed);
    assert!(
        looked
            .actions
            .iter()
            .any(|a| matches!(a, Action::LookUpRefund { attempt: 1, .. })),
        "{looked:?}"
    );
    booked_elsewhere_first(&mut h, &mut other, failed);
}

/// Two nodes on one database: this node paid attempt 1; the other, looking it up, booked it
/// failed first. This node's own answer then books nothing, and the refund is routed again.
#[test]
fn a_payout_answered_after_another_node_booked_its_outcome_leaves_the_refund_routable() {
    let mut h = Harness::new(rails());
    funded(&mut h);
    let refund = failed_paid_job(&mut h, "paid", Asset::Lightning);
    let paid = h.input(Input::RefundRouted {
        refund: refund.clone(),
        attempt: 1,
        route: lightning_route(),
    });
    assert!(paid
        .actions
        .iter()
        .any(|a| matches!(a, Action::PayRefund { attempt: 1, .. })));
    let failed = Input::RefundOutcome {
        refund: refund.clone(),
        attempt: 1,
        status: RefundStatus::Failed("no route".into()),
    };
    let mut other = h.decider.clone();
    booked_elsewhere_first(&mut h, &mut other, failed);
}

/// Two nodes on one database: this node looks up attempt 1; the other books it failed and
/// starts attempt 2. The late answer about attempt 1 ends this node's look-up, so attempt 2 is
/// looked up here too (the other node may be gone).
#[test]
fn a_late_answer_about_an_earlier_attempt_lets_the_current_one_be_looked_up() {
    let mut h = Harness::new(rails());
    funded(&mut h);
    let refund = failed_paid_job(&mut h, "late", Asset::Lightning);
    let routed = |attempt| Input::RefundRouted {
        refund: refund.clone(),
        attempt,
        route: lightning_route(),
    };
    let failed = Input::RefundOutcome {
        refund: refund.clone(),
        attempt: 1,
        status: RefundStatus::Failed("no route".into()),
    };
    let mut other = h.decider.clone();
    std::mem::swap(&mut h.decider, &mut other);
    h.input(routed(1));
    std::mem::swap(&mut h.decider, &mut other);
    let looked = h.input(routed(1));
    assert!(looked
        .actions
        .iter()
        .any(|a| matches!(a, Action::LookUpRefund { attempt: 1, .. })));
    std::mem::swap(&mut h.decider, &mut other);
    h.input(failed.clone());
    h.now += 3_600_000;
    h.input(Input::ClockTicked);
    h.input(routed(2));
    std::mem::swap(&mut h.decider, &mut other);
    assert_eq!(h.state().refund(&refund).unwrap().attempts, 2);
    let late = h.input(failed);
    assert!(
        late.actions
            .iter()
            .any(|a| matches!(a, Action::LookUpRefund { attempt: 2, .. })),
        "{late:?}"
    );
}

#[test]
fn an_unknown_outcome_stays_pending_and_is_looked_up_never_paid_again() {
    let mut h = Harness::new(rails());
    funded(&mut h);
    let refund = failed_paid_job(&mut h, "u", Asset::Lightning);
    h.input(Input::RefundRouted {
        refund: refund.clone(),
        attempt: 1,
        route: lightning_route(),
    });
    let out = h.input(Input::RefundOutcome {
        refund: refund.clone(),
        attempt: 1,
        status: RefundStatus::Unknown("timeout".into()),
    });
    assert_eq!(
        h.state().refund(&refund).unwrap().state,
        RefundState::Unknown
    );
    assert!(out
        .actions
        .iter()
        .any(|a| matches!(a, Action::LookUpRefund { .. })));
    h.now += 3_600_000;
    let later = h.input(Input::ClockTicked);
    assert!(route_order(&later.actions).is_none(), "{later:?}");
    assert!(!later
        .actions
        .iter()
        .any(|a| matches!(a, Action::PayRefund { .. })));
}

#[test]
fn a_failed_refund_payment_is_routed_again_after_a_wait_with_the_next_attempt() {
    let mut h = Harness::new(rails());
    funded(&mut h);
    let refund = failed_paid_job(&mut h, "again", Asset::Lightning);
    h.input(Input::RefundRouted {
        refund: refund.clone(),
        attempt: 1,
        route: lightning_route(),
    });
    let failed = h.input(Input::RefundOutcome {
        refund: refund.clone(),
        attempt: 1,
        status: RefundStatus::Failed("no route".into()),
    });
    assert!(
        route_order(&failed.actions).is_none(),
        "waits first: {failed:?}"
    );
    assert!(route_order(&h.input(Input::ClockTicked).actions).is_none());
    h.now += 5_000;
    let tick = h.input(Input::ClockTicked);
    let Some(RefundRouteOrder::Lightning { attempt, .. }) = route_order(&tick.actions) else {
        panic!("{tick:?}");
    };
    assert_eq!(*attempt, 2);
}

#[test]
fn an_ecash_paid_job_is_refunded_from_its_mint_and_a_route_for_another_asset_is_released() {
    let mut h = Harness::new(rails());
    let refund = failed_paid_job(&mut h, "e", mint());
    let state = h.state().refund(&refund).unwrap().clone();
    assert_eq!(state.asset, Some(mint()));
    let wrong = h.input(Input::RefundRouted {
        refund: refund.clone(),
        attempt: 1,
        route: lightning_route(),
    });
    assert!(
        wrong
            .actions
            .iter()
            .any(|a| matches!(a, Action::AbandonRoute { .. })),
        "{wrong:?}"
    );
    assert_eq!(h.state().refund(&refund).unwrap().state, RefundState::Due);
    let Some(RefundRouteOrder::Ecash { mint: url, .. }) = route_order(&wrong.actions) else {
        panic!("routed again, from the mint: {wrong:?}");
    };
    assert_eq!(url, MINT);
}

#[test]
fn a_cancellation_by_the_customer_returns_what_the_job_holds_and_anyone_elses_is_ignored() {
    let mut h = Harness::new(rails());
    arrive(&mut h, "c", 5050);
    h.input(payment("c", job_id("c").as_str(), PRICE / 2, mint()));
    let cancel = |by: &str| Input::CancellationArrived {
        deletion: hex(&format!("deletion by {by}")),
        author: customer(by),
        targets: vec![job_id("c")],
    };
    h.input(cancel("mallory"));
    assert_eq!(state(&h, "c"), JobState::PartiallyPaid);
    let out = h.input(cancel("alice"));
    assert_eq!(state(&h, "c"), JobState::RefundDue);
    assert!(out.actions.contains(&Action::Forget(job_id("c"))));
    assert!(matches!(
        route_order(&out.actions),
        Some(RefundRouteOrder::Ecash { .. })
    ));
}

#[test]
fn time_expires_quotes_and_forgets_their_requests_after_the_grace_window() {
    let mut h = Harness::new(rails());
    arrive(&mut h, "x", 5050);
    h.now += 599_999;
    h.input(Input::ClockTicked);
    assert_eq!(state(&h, "x"), JobState::Quoted);
    h.now += 1;
    h.input(Input::ClockTicked);
    assert_eq!(state(&h, "x"), JobState::Expired);
    assert!(
        h.decider.memory().holds(&job_id("x")),
        "a late payment may still come"
    );
    h.now += 300_000;
    let out = h.input(Input::ClockTicked);
    assert!(out.actions.contains(&Action::Forget(job_id("x"))));
    assert!(!h.decider.memory().holds(&job_id("x")));
}

#[test]
fn an_effect_the_outbox_gave_up_on_is_handed_over_again_unless_it_was_delivered() {
    let mut h = Harness::new(rails());
    arrive(&mut h, "fx", 5001);
    let effects: Vec<EffectId> = h.state().effects().map(|e| e.effect.clone()).collect();
    let [effect] = effects.as_slice() else {
        panic!("{effects:?}");
    };
    h.input(Input::EffectGaveUp {
        effect: effect.clone(),
    });
    h.now += 29_999;
    assert!(!h
        .input(Input::ClockTicked)
        .actions
        .contains(&Action::Resend(effect.clone())));
    h.now += 1;
    assert!(h
        .input(Input::ClockTicked)
        .actions
        .contains(&Action::Resend(effect.clone())));

    h.input(Input::EffectGaveUp {
        effect: effect.clone(),
    });
    h.input(Input::EffectDelivered {
        effect: effect.clone(),
        detail: "relay ok".into(),
    });
    assert!(h.state().effects().all(|e| e.outcome.is_some()));
    h.now += 60_000;
    assert!(!h
        .input(Input::ClockTicked)
        .actions
        .contains(&Action::Resend(effect.clone())));
}

#[test]
fn after_a_restart_a_job_that_was_processing_counts_as_interrupted_and_runs_again() {
    let mut h = Harness::new(rails());
    arrive(&mut h, "crash", 5001);
    let out = h.restart(vec![request("crash", "alice", 5001)]);
    assert_eq!(started(&out.actions, &job_id("crash")), Some(2));
    let job = h.state().job(&job_id("crash")).unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Processing, 2));
    assert!(
        out.actions.iter().any(|a| matches!(a, Action::Resend(_))),
        "the undelivered processing reply is handed over again: {out:?}"
    );
}

/// Two nodes on one database: this node runs attempt 1; the other, restarting, counted it
/// interrupted and ran attempt 2, then stopped for good. This node takes the other's work over
/// as a restart does: attempt 2 counts interrupted and attempt 3 runs here (the stale attempt 1
/// it still runs does not hold the job), and attempt 1's late outcome changes nothing.
#[test]
fn a_node_still_running_a_stale_attempt_takes_the_job_back_from_a_node_that_is_gone() {
    let policy = super::harness::POLICY.replace("max_attempts = 2", "max_attempts = 3");
    let mut h = Harness::with_policy(&policy, rails());
    let job = job_id("back");
    assert_eq!(
        started(&arrive(&mut h, "back", 5001).actions, &job),
        Some(1)
    );
    let here = h.decider.clone();
    let other = h.restart(vec![request("back", "alice", 5001)]);
    assert_eq!(started(&other.actions, &job), Some(2));
    h.decider = here;
    let took_over = h.input(Input::Restarted {
        requests: vec![request("back", "alice", 5001)],
        legacy_sources: vec![],
    });
    assert_eq!(started(&took_over.actions, &job), Some(3), "{took_over:?}");
    let late = h.input(finished("back", 1, Ok("stale")));
    assert!(late.replies.is_empty(), "{late:?}");
    assert!(h.decider.memory().is_running(&job), "attempt 3 still runs");
    h.input(finished("back", 3, Ok("done")));
    assert_eq!(state(&h, "back"), JobState::Succeeded);
}

#[test]
fn after_a_restart_a_shared_attempt_is_resumed_as_the_same_attempt() {
    let mut h = Harness::new(Rails {
        shared: vec![5001],
        ..rails()
    });
    arrive(&mut h, "elsewhere", 5001);
    let out = h.restart(vec![request("elsewhere", "alice", 5001)]);
    // Another node may still run attempt 1: it is waited for again, not failed and restarted.
    assert_eq!(started(&out.actions, &job_id("elsewhere")), Some(1));
    let job = h.state().job(&job_id("elsewhere")).unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Processing, 1));
    let out = h.input(finished("elsewhere", 1, Ok("done")));
    assert!(out.error.is_none(), "{out:?}");
    assert_eq!(state(&h, "elsewhere"), JobState::Succeeded);
}

#[test]
fn an_operator_request_the_ledger_cannot_take_is_refused_with_a_reason() {
    let mut h = Harness::new(rails());
    let out = h.input(operator(OperatorAction::RefundRetry {
        refund: "nosuch:fail".into(),
    }));
    let why = out.operator_refused.expect("refused");
    assert!(why.contains("nosuch"), "{why}");
}

#[test]
fn a_refused_payment_is_told_under_its_job_and_nothing_is_said_for_an_unknown_job() {
    let mut h = Harness::new(rails());
    arrive(&mut h, "tok", 5050);
    let out = h.input(Input::PaymentRefused {
        job: job_id("tok"),
        reason: "token from an untrusted mint".into(),
    });
    assert_eq!(
        out.replies[0].kind,
        ReplyKind::Error {
            reason: "token from an untrusted mint".into()
        }
    );
    assert_eq!(state(&h, "tok"), JobState::Quoted);
    let none = h.input(Input::PaymentRefused {
        job: job_id("nope"),
        reason: "x".into(),
    });
    assert!(none.replies.is_empty());
}

#[test]
fn a_group_the_ledger_refuses_takes_its_actions_back() {
    let mut h = Harness::new(rails());
    funded(&mut h);
    let refund = failed_paid_job(&mut h, "gone", Asset::Lightning);
    // Paid twice the route's asset can hold: the ledger refuses `refund_started`, so the pay
    // action never leaves and the decider does not think it is paying.
    let mut route = lightning_route();
    route.fee_reserve = Msat::from_msat(u64::MAX / 2);
    let out = h.input(Input::RefundRouted {
        refund: refund.clone(),
        attempt: 1,
        route,
    });
    assert!(
        !out.actions
            .iter()
            .any(|a| matches!(a, Action::PayRefund { .. })),
        "{out:?}"
    );
    assert_eq!(h.state().refund(&refund).unwrap().state, RefundState::Due);
}

/// Found by the simulator: a late payment within the grace window reopens an expired job
/// (`partially_paid`); its second expiry used to repeat the first one's idempotency key, so it
/// never happened and the money stayed in the job for good.
#[test]
fn a_job_reopened_by_a_late_partial_payment_expires_again_and_returns_what_it_holds() {
    let mut h = Harness::new(rails());
    arrive(&mut h, "late", 5050);
    h.now += 600_000;
    h.input(Input::ClockTicked);
    assert_eq!(state(&h, "late"), JobState::Expired);
    h.now += 1_000;
    h.input(payment("late", job_id("late").as_str(), PRICE / 2, mint()));
    assert_eq!(state(&h, "late"), JobState::PartiallyPaid);
    let out = h.input(Input::ClockTicked);
    assert_eq!(state(&h, "late"), JobState::RefundDue);
    assert!(
        matches!(
            route_order(&out.actions),
            Some(RefundRouteOrder::Ecash { .. })
        ),
        "{out:?}"
    );
}

/// A job that only owes a refund when the node restarts is not resumed, but the refund still
/// goes where the request said (its `refund` tag), not to the customer's profile.
#[test]
fn after_a_restart_a_refund_still_goes_to_the_address_the_request_gave() {
    let mut h = Harness::new(rails());
    funded(&mut h);
    let refund = failed_paid_job(&mut h, "addr", Asset::Lightning);
    let mut request = request("addr", "alice", 5050);
    let to: crate::lightning::refund::RefundAddress = "alice@example.com".parse().unwrap();
    request.refund_to = Some(to.clone());
    let out = h.restart(vec![request]);
    let Some(RefundRouteOrder::Lightning {
        refund: routed,
        refund_to,
        ..
    }) = route_order(&out.actions)
    else {
        panic!("{out:?}");
    };
    assert_eq!((routed, refund_to), (&refund, &Some(to)));
}

/// Issue 10, problem 6: a job paid in ecash, then paid again over Lightning (returned whole, from
/// Lightning), then failed: its refund comes from the mint, never over Lightning, whatever the
/// Lightning account holds.
#[test]
fn a_failed_job_is_refunded_from_the_asset_it_still_holds_not_one_already_returned() {
    let mut h = Harness::new(rails());
    funded(&mut h);
    arrive(&mut h, "mixed", 5050);
    let named = job_id("mixed");
    h.input(payment("ecash", named.as_str(), PRICE, mint()));
    let late = h.input(payment("ln", named.as_str(), PRICE, Asset::Lightning));
    let Some(RefundRouteOrder::Lightning { refund, .. }) = route_order(&late.actions) else {
        panic!("the second payment goes back over Lightning: {late:?}");
    };
    assert!(refund.as_str().contains(":return:"), "{refund}");
    h.input(finished("mixed", 1, Err(true)));
    let end = h.input(finished("mixed", 2, Err(true)));
    let fail = RefundId::new(format!("{named}:fail")).unwrap();
    assert_eq!(h.state().refund(&fail).unwrap().asset, Some(mint()));
    let Some(RefundRouteOrder::Ecash {
        refund, mint: url, ..
    }) = route_order(&end.actions)
    else {
        panic!("the failed job's refund goes from the mint: {end:?}");
    };
    assert_eq!((refund, url.as_str()), (&fail, MINT));
}

fn zap_route() -> RefundRoute {
    RefundRoute {
        zap: Some(paydvm_ledger::RefundZap {
            request: paydvm_ledger::EventId::new(hex("zap-request")).unwrap(),
            signer: paydvm_ledger::Pubkey::new(hex("lnurl-signer")).unwrap(),
        }),
        ..lightning_route()
    }
}

/// Issue 16: a zapback's receipt is linked when it answers the recorded zap exactly, once; one
/// that names another request, signer or invoice is not; the refund settles by the payment, and
/// the job's last reply names the refund and its zap request.
#[test]
fn a_zapback_receipt_is_linked_only_when_it_answers_the_recorded_zap() {
    let mut h = Harness::new(rails());
    funded(&mut h);
    let refund = failed_paid_job(&mut h, "z", Asset::Lightning);
    h.input(Input::RefundRouted {
        refund: refund.clone(),
        attempt: 1,
        route: zap_route(),
    });
    let paid = h.input(Input::RefundOutcome {
        refund: refund.clone(),
        attempt: 1,
        status: RefundStatus::Paid {
            fee: Msat::ZERO,
            fee_paid_by: FeePayer::Operator,
            evidence: "preimage".into(),
        },
    });
    assert_eq!(state(&h, "z"), JobState::Refunded);
    let Some(ReplyKind::Refunded {
        amount,
        zap_request,
    }) = paid.replies.first().map(|r| &r.kind)
    else {
        panic!("the job's last reply names the refund: {paid:?}");
    };
    assert_eq!(*amount, Msat::from_msat(PRICE));
    assert_eq!(zap_request.as_deref(), Some(hex("zap-request").as_str()));

    let receipt = |request: &str, signer: &str, bolt11: &str, id: &str| {
        Input::RefundZapReceipt(super::RefundZapReceipt {
            refund: refund.clone(),
            receipt: paydvm_ledger::EventId::new(hex(id)).unwrap(),
            request: paydvm_ledger::EventId::new(hex(request)).unwrap(),
            signer: paydvm_ledger::Pubkey::new(hex(signer)).unwrap(),
            bolt11: bolt11.into(),
        })
    };
    let route = lightning_route().destination;
    let seq = h.ledger.next_seq();
    for forged in [
        receipt("other-request", "lnurl-signer", &route, "r1"),
        receipt("zap-request", "other-signer", &route, "r2"),
        receipt("zap-request", "lnurl-signer", "lnbcrt100n1other", "r3"),
    ] {
        h.input(forged);
    }
    assert_eq!(h.ledger.next_seq(), seq, "nothing linked");
    h.input(receipt("zap-request", "lnurl-signer", &route, "good"));
    let linked = h.state().refund(&refund).unwrap().zap_receipt.clone();
    assert_eq!(linked.unwrap().as_str(), hex("good"));
    let seq = h.ledger.next_seq();
    h.input(receipt("zap-request", "lnurl-signer", &route, "again"));
    assert_eq!(h.ledger.next_seq(), seq, "one receipt per refund");
    assert_eq!(
        h.state().refund(&refund).unwrap().state,
        RefundState::Settled
    );
}

/// `results.processing_feedback_after_secs`: the `processing` feedback of a job queued without a
/// payment waits; it goes at the first tick past the wait while the job still runs, once, and a
/// job done sooner gets its result alone. With the default (0) it goes with the start (above).
#[test]
fn a_processing_feedback_that_waits_goes_only_to_a_job_still_running() {
    let policy = format!(
        "{}\n[results]\nprocessing_feedback_after_secs = 2\n",
        super::harness::POLICY
    );
    let mut h = Harness::with_policy(&policy, rails());
    let out = arrive(&mut h, "slow", 5001);
    assert_eq!(started(&out.actions, &job_id("slow")), Some(1));
    assert!(out.replies.is_empty(), "{:?}", out.replies);
    h.now += 1_999;
    assert!(h.input(Input::ClockTicked).replies.is_empty());
    h.now += 1;
    let out = h.input(Input::ClockTicked);
    assert_eq!(out.replies.len(), 1, "{:?}", out.replies);
    assert_eq!(out.replies[0].kind, ReplyKind::Processing);
    assert_eq!(out.replies[0].job, job_id("slow"));
    assert_eq!(state(&h, "slow"), JobState::Processing);
    assert!(h.input(Input::ClockTicked).replies.is_empty(), "sent once");

    arrive(&mut h, "fast", 5001);
    let done = h.input(finished("fast", 1, Ok("done")));
    assert!(matches!(done.replies[0].kind, ReplyKind::Result { .. }));
    h.now += 5_000;
    assert!(h.input(Input::ClockTicked).replies.is_empty());
    assert_eq!(state(&h, "fast"), JobState::Succeeded);
}
