//! Events for the contracts: small job, payment, refund and effect histories.

use crate::event::*;
use crate::ids::{
    EffectId, EventId, IdemKey, JobId, PaymentRef, Pubkey, RefundId, SubscriptionId, UnixMs,
};
use crate::money::Msat;

pub const PRICE: u64 = 10_000;
pub const MINT: &str = "http://127.0.0.1:3338";

pub fn job(j: &str) -> JobId {
    JobId::new(j).expect("test job id")
}

pub fn rid(r: &str) -> RefundId {
    RefundId::new(r).expect("test refund id")
}

pub fn eid(e: &str) -> EffectId {
    EffectId::new(e).expect("test effect id")
}

pub fn pref(r: &str) -> PaymentRef {
    PaymentRef::new(r).expect("test payment ref")
}

pub fn ev(key: &str, at: u64, body: EventBody) -> LedgerEvent {
    LedgerEvent::new(IdemKey::new(key).expect("test key"), UnixMs(at), body)
}

pub fn mint() -> Asset {
    Asset::Mint { url: MINT.into() }
}

/// The request stored with every received job.
pub fn request_of(j: &str) -> String {
    format!("{{\"id\":\"req-{j}\"}}")
}

pub fn received(j: &str) -> LedgerEvent {
    ev(
        &format!("recv:{j}"),
        1,
        EventBody::JobReceived {
            job: job(j),
            request_event: EventId::new(format!("req-{j}")).expect("event id"),
            customer: Pubkey::new("alice").expect("pubkey"),
            kind: 5050,
            request: Some(request_of(j)),
        },
    )
}

pub fn quote(j: &str) -> LedgerEvent {
    ev(
        &format!("quote:{j}"),
        2,
        EventBody::QuoteIssued {
            job: job(j),
            amount: Msat::from_msat(PRICE),
            expires_at: UnixMs(1_000_000),
            options: vec![PaymentOption::Invoice {
                payment_hash: format!("hash-{j}"),
                bolt11: format!("lnbcrt-{j}"),
            }],
        },
    )
}

/// Subscription `s` quoted: its first period offered with an invoice (`hash-sub-<s>`) and zaps.
pub fn subscription_quote(s: &str) -> LedgerEvent {
    ev(
        &format!("sub-quote:{s}"),
        2,
        EventBody::SubscriptionQuoted {
            subscription: SubscriptionId::new(s).expect("test subscription id"),
            subscriber: Pubkey::new("alice").expect("pubkey"),
            tier: "gold".into(),
            price: Msat::from_msat(PRICE),
            period_ms: 3_600_000,
            quota: 2,
            options: vec![
                PaymentOption::Invoice {
                    payment_hash: format!("hash-sub-{s}"),
                    bolt11: format!("lnbcrt-sub-{s}"),
                },
                PaymentOption::NutZap,
            ],
            expires_at: UnixMs(1_000_000),
        },
    )
}

/// A payment for job `j` under payment reference `reference`, idempotency key `pay:<reference>`.
pub fn pay_in(reference: &str, j: &str, asset: Asset, booking: JobPayment) -> LedgerEvent {
    let rail = match asset {
        Asset::Lightning => Rail::Invoice,
        Asset::Mint { .. } => Rail::NutZap,
    };
    ev(
        &format!("pay:{reference}"),
        3,
        EventBody::PaymentReceived(Payment {
            rail,
            asset,
            reference: pref(reference),
            linked: vec![],
            amount: Msat::from_msat(PRICE),
            fee: Msat::ZERO,
            evidence: None,
            payer: None,
            target: PaymentTarget::Job {
                job: job(j),
                booking,
            },
        }),
    )
}

/// A Lightning payment `late-<j>` for job `j` that ended already, owed back whole under refund
/// `<j>:late`.
pub fn late_payment_refunded(j: &str) -> LedgerEvent {
    pay_in(
        &format!("late-{j}"),
        j,
        Asset::Lightning,
        JobPayment::Whole(Disposition::Refund {
            refund: rid(&format!("{j}:late")),
            asset: None,
        }),
    )
}

pub fn pay(j: &str) -> LedgerEvent {
    pay_in(
        &format!("hash-{j}"),
        j,
        Asset::Lightning,
        JobPayment::Apply { excess: None },
    )
}

pub fn queued(j: &str) -> LedgerEvent {
    ev(
        &format!("queue:{j}"),
        4,
        EventBody::JobQueued {
            job: job(j),
            reason: QueueReason::Paid,
        },
    )
}

pub fn started(j: &str) -> LedgerEvent {
    ev(
        &format!("start:{j}"),
        5,
        EventBody::ProcessingStarted {
            job: job(j),
            attempt: 1,
        },
    )
}

pub fn published(j: &str) -> LedgerEvent {
    ev(
        &format!("result:{j}"),
        6,
        EventBody::ResultPublished {
            job: job(j),
            result_event: EventId::new(format!("res-{j}")).expect("event id"),
        },
    )
}

pub fn failed(j: &str) -> LedgerEvent {
    ev(
        &format!("fail:{j}"),
        6,
        EventBody::ProcessingFailed {
            job: job(j),
            attempt: 1,
            retryable: false,
            reason: "boom".into(),
        },
    )
}

/// Received, quoted, paid (Lightning), queued, started: a job being processed.
pub fn running_job(j: &str) -> Vec<LedgerEvent> {
    vec![received(j), quote(j), pay(j), queued(j), started(j)]
}

/// A job that ran and succeeded (ended: it leaves an open-work store's memory).
pub fn paid_job(j: &str) -> Vec<LedgerEvent> {
    let mut events = running_job(j);
    events.push(published(j));
    events
}

/// A job that ran and failed, its money owed back under refund `<j>:r` in `asset`.
pub fn failed_job(j: &str, asset: Option<Asset>) -> Vec<LedgerEvent> {
    let mut events = running_job(j);
    events.push(failed(j));
    events.push(refund_due(j, asset));
    events
}

pub fn refund_of(j: &str) -> String {
    format!("{j}:r")
}

pub fn refund_due(j: &str, asset: Option<Asset>) -> LedgerEvent {
    ev(
        &format!("refund-due:{j}:{}", asset_name(asset.as_ref())),
        7,
        EventBody::RefundDue {
            job: job(j),
            refund: rid(&refund_of(j)),
            asset,
        },
    )
}

fn asset_name(asset: Option<&Asset>) -> &'static str {
    match asset {
        None => "unnamed",
        Some(Asset::Lightning) => "lightning",
        Some(Asset::Mint { .. }) => "mint",
    }
}

pub fn refund_started(r: &str, attempt: u32) -> LedgerEvent {
    ev(
        &format!("refund-start:{r}:{attempt}"),
        8,
        EventBody::RefundStarted {
            refund: rid(r),
            attempt,
            route: RefundRoute {
                asset: Asset::Lightning,
                destination: format!("dest-{r}"),
                lookup: format!("lookup-{r}-{attempt}"),
                fee_reserve: Msat::ZERO,
                zap: None,
            },
        },
    )
}

pub fn refund_unknown(r: &str) -> LedgerEvent {
    ev(
        &format!("refund-unknown:{r}"),
        9,
        EventBody::RefundOutcomeUnknown {
            refund: rid(r),
            reason: "timeout".into(),
        },
    )
}

pub fn refund_settled(r: &str) -> LedgerEvent {
    ev(
        &format!("refund-settled:{r}"),
        10,
        EventBody::RefundSettled {
            refund: rid(r),
            fee: Msat::ZERO,
            fee_paid_by: FeePayer::Operator,
            evidence: None,
            cause: None,
        },
    )
}

/// A failed job whose refund was paid: the job and the refund ended.
pub fn refunded_job(j: &str) -> Vec<LedgerEvent> {
    let mut events = failed_job(j, Some(Asset::Lightning));
    events.push(refund_started(&refund_of(j), 1));
    events.push(refund_settled(&refund_of(j)));
    events
}

pub fn effect_requested(e: &str, j: Option<&str>) -> LedgerEvent {
    ev(
        &format!("effect:{e}"),
        11,
        EventBody::EffectRequested {
            effect: eid(e),
            job: j.map(job),
            subscription: None,
            action: crate::effect::EffectAction::Publish,
            payload: format!("payload-{e}"),
        },
    )
}

/// A job-less notice `e` about subscription `s` (a receipt, a period's quote).
pub fn subscription_notice(e: &str, s: &str) -> LedgerEvent {
    ev(
        &format!("effect:{e}"),
        11,
        EventBody::EffectRequested {
            effect: eid(e),
            job: None,
            subscription: Some(SubscriptionId::new(s).expect("test subscription id")),
            action: crate::effect::EffectAction::Publish,
            payload: format!("payload-{e}"),
        },
    )
}

pub fn effect_done(e: &str) -> LedgerEvent {
    ev(
        &format!("effect-done:{e}"),
        12,
        EventBody::EffectDone {
            effect: eid(e),
            outcome: EffectOutcome::Delivered {
                detail: "ok".into(),
            },
        },
    )
}

/// A history with every kind of record, some ended and some open: two succeeded jobs, one
/// refunded, one whose refund outcome is unknown, one still running, one only quoted, an effect
/// done and one pending.
pub fn mixed_history() -> Vec<Vec<LedgerEvent>> {
    let mut unknown = failed_job("d", Some(Asset::Lightning));
    unknown.push(refund_started(&refund_of("d"), 1));
    unknown.push(refund_unknown(&refund_of("d")));
    vec![
        paid_job("a"),
        paid_job("b"),
        refunded_job("c"),
        unknown,
        running_job("e"),
        vec![received("f"), quote("f")],
        vec![effect_requested("x", Some("a")), effect_done("x")],
        vec![effect_requested("y", Some("e"))],
    ]
}
