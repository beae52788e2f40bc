//! Subscriptions after the first period, through the SQLite store: a cancellation, refunds of a
//! subscription's money (held, and the unused rest of a period), renewal quotes and quota units
//! given back — each accepted once and refused when the books would not balance.

use paydvm_ledger::store::Store;
use paydvm_ledger::*;

const PRICE: u64 = 20_000;
const HOUR: u64 = 3_600_000;

fn ev(k: &str, at: u64, body: EventBody) -> LedgerEvent {
    LedgerEvent::new(IdemKey::new(k).unwrap(), UnixMs(at), body)
}
fn sub() -> SubscriptionId {
    SubscriptionId::new("sub1").unwrap()
}
fn rid(s: &str) -> RefundId {
    RefundId::new(s).unwrap()
}

fn pay(k: &str, at: u64, amount: u64, asset: Asset) -> LedgerEvent {
    ev(
        k,
        at,
        EventBody::PaymentReceived(Payment {
            rail: Rail::Zap,
            asset,
            reference: PaymentRef::new(k).unwrap(),
            linked: vec![],
            amount: Msat::from_msat(amount),
            fee: Msat::ZERO,
            evidence: None,
            payer: None,
            target: PaymentTarget::Subscription {
                subscription: sub(),
            },
        }),
    )
}

fn refund(k: &str, at: u64, amount: u64, asset: Asset, from: SubscriptionFunds) -> LedgerEvent {
    ev(
        k,
        at,
        EventBody::SubscriptionRefundDue {
            subscription: sub(),
            refund: rid(k),
            amount: Msat::from_msat(amount),
            asset,
            from,
        },
    )
}

fn cancel(at: u64) -> LedgerEvent {
    ev(
        "cancel",
        at,
        EventBody::SubscriptionCancelled {
            subscription: sub(),
            request: EventId::new("7002").unwrap(),
        },
    )
}

/// A subscription of alice's with one period granted at t=10, paid over Lightning.
fn subscribed() -> Store {
    let mut store = Store::open_in_memory().unwrap();
    let events = [
        ev(
            "quote",
            1,
            EventBody::SubscriptionQuoted {
                subscription: sub(),
                subscriber: Pubkey::new("alice").unwrap(),
                tier: "gold".into(),
                price: Msat::from_msat(PRICE),
                period_ms: HOUR,
                quota: 1,
                options: vec![],
                expires_at: UnixMs(1_000),
            },
        ),
        pay("pay1", 10, PRICE, Asset::Lightning),
        ev(
            "grant",
            10,
            EventBody::EntitlementGranted {
                subscription: sub(),
                subscriber: Pubkey::new("alice").unwrap(),
                tier: "gold".into(),
                period_start: UnixMs(10),
                period_end: UnixMs(10 + HOUR),
                quota: 1,
                price: Msat::from_msat(PRICE),
            },
        ),
    ];
    for e in &events {
        store.append(e).unwrap();
    }
    store
}

fn refused(store: &mut Store, event: &LedgerEvent) -> String {
    let before = store.state().clone();
    match store.append(event) {
        Err(LedgerError::Refused { source, .. }) => {
            assert_eq!(store.state(), &before, "a refused event changed the state");
            source.to_string()
        }
        other => panic!("expected a refusal of {}, got {other:?}", event.key),
    }
}

#[test]
fn held_money_is_refunded_from_the_asset_it_came_in_and_never_beyond_what_is_held() {
    let mut store = subscribed();
    store
        .append(&pay("ahead", 20, 5_000, Asset::Lightning))
        .unwrap();
    let mint = Asset::Mint {
        url: "https://mint.example".into(),
    };
    let why = refused(
        &mut store,
        &refund("r-mint", 21, 5_000, mint, SubscriptionFunds::Held),
    );
    assert!(why.contains("asset of its latest payment"), "{why}");
    refused(
        &mut store,
        &refund(
            "r-more",
            21,
            5_001,
            Asset::Lightning,
            SubscriptionFunds::Held,
        ),
    );
    store
        .append(&refund(
            "r1",
            21,
            5_000,
            Asset::Lightning,
            SubscriptionFunds::Held,
        ))
        .unwrap();
    let state = store.state();
    assert_eq!(
        state.held(&Account::Subscription(sub())),
        Msat::ZERO,
        "all of it owed back"
    );
    let r = state.refund(&rid("r1")).unwrap();
    assert_eq!(
        (r.job.as_ref(), r.customer.as_str(), r.amount, r.state),
        (None, "alice", Msat::from_msat(5_000), RefundState::Due)
    );
    // The same refund id again is refused, whatever the amount.
    store
        .append(&pay("ahead2", 22, 1_000, Asset::Lightning))
        .unwrap();
    let again = ev(
        "r1-again",
        23,
        EventBody::SubscriptionRefundDue {
            subscription: sub(),
            refund: rid("r1"),
            amount: Msat::from_msat(1_000),
            asset: Asset::Lightning,
            from: SubscriptionFunds::Held,
        },
    );
    refused(&mut store, &again);
    assert!(store.verify().is_ok());
}

#[test]
fn the_unused_rest_is_refunded_once_only_after_a_cancellation_and_ends_the_period() {
    let mut store = subscribed();
    let unused = |k: &str, at: u64, amount: u64| {
        refund(k, at, amount, Asset::Lightning, SubscriptionFunds::Unused)
    };
    let why = refused(&mut store, &unused("u0", 100, 10_000));
    assert!(why.contains("not cancelled"), "{why}");
    store.append(&cancel(100)).unwrap();
    refused(&mut store, &ev("cancel2", 101, cancel(101).body));
    refused(&mut store, &unused("u-big", 101, PRICE + 1));
    store.append(&unused("u1", 101, 15_000)).unwrap();
    let rec = store.state().subscription(&sub()).cloned().unwrap();
    assert_eq!(rec.state, EntitlementState::Expired);
    assert_eq!(rec.period_end, UnixMs(101));
    assert!(rec.unused_refunded && rec.cancelled_at == Some(UnixMs(100)));
    let why = refused(&mut store, &unused("u2", 102, 1));
    assert!(why.contains("no running period"), "{why}");
    // No period is granted to a cancelled subscription, whatever it holds.
    store
        .append(&pay("late", 103, PRICE, Asset::Lightning))
        .unwrap();
    let grant = ev(
        "grant2",
        104,
        EventBody::EntitlementGranted {
            subscription: sub(),
            subscriber: Pubkey::new("alice").unwrap(),
            tier: "gold".into(),
            period_start: UnixMs(104),
            period_end: UnixMs(104 + HOUR),
            quota: 1,
            price: Msat::from_msat(PRICE),
        },
    );
    let why = refused(&mut store, &grant);
    assert!(why.contains("cancelled"), "{why}");
    assert!(store.verify().is_ok());
}

#[test]
fn a_renewal_is_quoted_once_per_period_and_never_after_a_cancellation() {
    let mut store = subscribed();
    let renewal = |k: &str, after: u64| {
        ev(
            k,
            50,
            EventBody::SubscriptionRenewalQuoted {
                subscription: sub(),
                after: UnixMs(after),
                price: Msat::from_msat(PRICE),
                options: vec![],
                expires_at: UnixMs(after + 1_000),
            },
        )
    };
    refused(&mut store, &renewal("wrong-period", 11 + HOUR));
    store.append(&renewal("renew", 10 + HOUR)).unwrap();
    assert_eq!(
        store.state().subscription(&sub()).unwrap().renewal_quoted,
        Some(UnixMs(10 + HOUR))
    );
    refused(&mut store, &renewal("renew-again", 10 + HOUR));
    store.append(&cancel(60)).unwrap();
    assert!(store.verify().is_ok());
}

#[test]
fn a_failed_job_gives_its_quota_unit_back_once() {
    let mut store = subscribed();
    let j = JobId::new("j1").unwrap();
    let job_events = [
        ev(
            "recv",
            20,
            EventBody::JobReceived {
                job: j.clone(),
                request_event: EventId::new("j1").unwrap(),
                customer: Pubkey::new("alice").unwrap(),
                kind: 5050,
                request: None,
            },
        ),
        ev(
            "queue",
            20,
            EventBody::JobQueued {
                job: j.clone(),
                reason: QueueReason::Entitlement {
                    subscription: sub(),
                },
            },
        ),
        ev(
            "start",
            21,
            EventBody::ProcessingStarted {
                job: j.clone(),
                attempt: 1,
            },
        ),
    ];
    for e in &job_events {
        store.append(e).unwrap();
    }
    let back = |k: &str| {
        ev(
            k,
            30,
            EventBody::EntitlementUnitReturned {
                subscription: sub(),
                job: j.clone(),
            },
        )
    };
    let why = refused(&mut store, &back("early"));
    assert!(why.contains("only a failed job"), "{why}");
    store
        .append(&ev(
            "fail",
            25,
            EventBody::ProcessingFailed {
                job: j.clone(),
                attempt: 1,
                retryable: false,
                reason: "boom".into(),
            },
        ))
        .unwrap();
    assert_eq!(store.state().subscription(&sub()).unwrap().used, 1);
    store.append(&back("back")).unwrap();
    assert_eq!(store.state().subscription(&sub()).unwrap().used, 0);
    let why = refused(&mut store, &back("back-again"));
    assert!(why.contains("holds no unit"), "{why}");
    assert!(store.verify().is_ok());
}
