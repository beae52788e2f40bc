//! End-to-end ledger scenarios through the SQLite store.

use paydvm_ledger::store::{Durability, Store, VerifyFailure};
use paydvm_ledger::*;

fn key(s: &str) -> IdemKey {
    IdemKey::new(s).unwrap()
}
fn job(s: &str) -> JobId {
    JobId::new(s).unwrap()
}
fn pk(s: &str) -> Pubkey {
    Pubkey::new(s).unwrap()
}
fn ev(k: &str, at: u64, body: EventBody) -> LedgerEvent {
    LedgerEvent::new(key(k), UnixMs(at), body)
}
fn received(j: &str) -> LedgerEvent {
    ev(
        &format!("recv:{j}"),
        1,
        EventBody::JobReceived {
            job: job(j),
            request_event: EventId::new(j).unwrap(),
            customer: pk("alice"),
            kind: 5050,
            request: None,
        },
    )
}
fn quote(j: &str, amount: u64) -> LedgerEvent {
    ev(
        &format!("quote:{j}"),
        2,
        EventBody::QuoteIssued {
            job: job(j),
            amount: Msat::from_msat(amount),
            expires_at: UnixMs(1_000),
            options: vec![PaymentOption::Invoice {
                payment_hash: format!("hash-{j}"),
                bolt11: format!("lnbcrt-{j}"),
            }],
        },
    )
}
fn pay(reference: &str, j: &str, amount: u64, booking: JobPayment) -> LedgerEvent {
    ev(
        &format!("pay:{reference}"),
        3,
        EventBody::PaymentReceived(Payment {
            rail: Rail::Invoice,
            asset: Asset::Lightning,
            reference: PaymentRef::new(reference).unwrap(),
            linked: vec![],
            amount: Msat::from_msat(amount),
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
fn apply() -> JobPayment {
    JobPayment::Apply { excess: None }
}

fn paid_job_events(j: &str) -> Vec<LedgerEvent> {
    vec![
        received(j),
        quote(j, 10_000),
        pay(&format!("hash-{j}"), j, 10_000, apply()),
        ev(
            &format!("queue:{j}"),
            4,
            EventBody::JobQueued {
                job: job(j),
                reason: QueueReason::Paid,
            },
        ),
        ev(
            &format!("start:{j}:1"),
            5,
            EventBody::ProcessingStarted {
                job: job(j),
                attempt: 1,
            },
        ),
        ev(
            &format!("result:{j}"),
            6,
            EventBody::ResultPublished {
                job: job(j),
                result_event: EventId::new(format!("res-{j}")).unwrap(),
            },
        ),
    ]
}

#[test]
fn paid_job_recognises_revenue_once_and_audits_by_any_reference() {
    let mut store = Store::open_in_memory().unwrap();
    for e in paid_job_events("j1") {
        assert!(matches!(
            store.append(&e).unwrap(),
            AppendOutcome::Appended { .. }
        ));
    }
    let s = store.state();
    assert_eq!(s.job(&job("j1")).unwrap().state, JobState::Succeeded);
    assert_eq!(s.held(&Account::Job(job("j1"))), Msat::ZERO);
    assert_eq!(
        s.balance(&Account::Revenue).credits,
        Msat::from_msat(10_000)
    );
    for reference in ["j1", "hash-j1", "res-j1", "lnbcrt-j1"] {
        let trail = store.audit(reference).unwrap().expect(reference);
        assert_eq!(trail.events.len(), 6, "{reference}");
        assert_eq!(trail.job.as_ref().unwrap().state, JobState::Succeeded);
    }
    assert!(store.audit("nothing-like-this").unwrap().is_none());
    store.verify().unwrap();
}

#[test]
fn duplicates_are_no_ops_returning_the_first_outcome() {
    let mut store = Store::open_in_memory().unwrap();
    let events = paid_job_events("j1");
    for e in &events {
        store.append(e).unwrap();
    }
    let first = store.append(&events[2]).unwrap();
    assert_eq!(first, AppendOutcome::Duplicate { seq: 3 });
    assert_eq!(store.same_as_first(&events[2]).unwrap(), Some(true));
    // The same payment reference under a new key credits nothing.
    let mut replay = pay("hash-j1", "j1", 10_000, apply());
    replay.key = key("pay:other-relay");
    let err = store.append(&replay).unwrap_err();
    assert!(matches!(
        err,
        LedgerError::Refused {
            source: TransitionError::DuplicatePaymentRef(_),
            ..
        }
    ));
    assert_eq!(store.head().0, 6);
    store.verify().unwrap();
}

#[test]
fn refused_group_changes_nothing() {
    let mut store = Store::open_in_memory().unwrap();
    store.append(&received("j1")).unwrap();
    // Processing an unpaid job is refused; the quote before it in the group is undone too.
    let group = [
        quote("j1", 5_000),
        ev(
            "start",
            3,
            EventBody::ProcessingStarted {
                job: job("j1"),
                attempt: 1,
            },
        ),
    ];
    let err = store.append_group(&group).unwrap_err();
    assert!(
        matches!(err, LedgerError::Refused { index: 1, .. }),
        "{err}"
    );
    assert_eq!(
        store.state().job(&job("j1")).unwrap().state,
        JobState::Received
    );
    assert_eq!(store.head().0, 1);
    store.verify().unwrap();
}

#[test]
fn overpayment_needs_a_disposition_and_refund_never_exceeds_payment() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .append_group(&[received("j1"), quote("j1", 1_000)])
        .unwrap();
    let err = store.append(&pay("h1", "j1", 1_500, apply())).unwrap_err();
    assert!(err.to_string().contains("excess"), "{err}");
    let refund = RefundId::new("j1:excess").unwrap();
    store
        .append(&pay(
            "h1",
            "j1",
            1_500,
            JobPayment::Apply {
                excess: Some(Disposition::Refund {
                    refund: refund.clone(),
                    asset: None,
                }),
            },
        ))
        .unwrap();
    let s = store.state();
    assert_eq!(s.job(&job("j1")).unwrap().state, JobState::Paid);
    assert_eq!(s.refund(&refund).unwrap().amount, Msat::from_msat(500));
    assert_eq!(s.held(&Account::Job(job("j1"))), Msat::from_msat(1_000));
    store.verify().unwrap();
}

#[test]
fn unknown_refund_outcome_is_never_paid_again() {
    let mut store = Store::open_in_memory().unwrap();
    let mut events = paid_job_events("j1");
    events.truncate(5);
    events.push(ev(
        "fail:j1:1",
        6,
        EventBody::ProcessingFailed {
            job: job("j1"),
            attempt: 1,
            retryable: false,
            reason: "boom".into(),
        },
    ));
    let refund = RefundId::new("j1:fail").unwrap();
    events.push(ev(
        "refund-due:j1",
        7,
        EventBody::RefundDue {
            job: job("j1"),
            refund: refund.clone(),
            asset: Some(Asset::Lightning),
        },
    ));
    let route = RefundRoute {
        asset: Asset::Lightning,
        destination: "lnbcrt-refund".into(),
        lookup: "refund-hash".into(),
        fee_reserve: Msat::ZERO,
    };
    events.push(ev(
        "refund-start:1",
        8,
        EventBody::RefundStarted {
            refund: refund.clone(),
            attempt: 1,
            route: route.clone(),
        },
    ));
    events.push(ev(
        "refund-unknown:1",
        9,
        EventBody::RefundOutcomeUnknown {
            refund: refund.clone(),
            reason: "timeout".into(),
        },
    ));
    store.append_group(&events).unwrap();
    assert_eq!(
        store.state().job(&job("j1")).unwrap().state,
        JobState::RefundPending
    );
    let again = ev(
        "refund-start:2",
        10,
        EventBody::RefundStarted {
            refund: refund.clone(),
            attempt: 2,
            route,
        },
    );
    assert!(store.append(&again).is_err());
    let settled = ev(
        "refund-settled",
        11,
        EventBody::RefundSettled {
            refund: refund.clone(),
            fee: Msat::from_msat(3),
            fee_paid_by: FeePayer::Operator,
            evidence: None,
            cause: None,
        },
    );
    // The wallet holds exactly the job's payment: the 3 msat fee would drive it below zero. The
    // settlement is refused and the refund stays unknown (still reserved, never paid again).
    match store.append(&settled) {
        Err(LedgerError::Refused {
            source: TransitionError::AssetShort { has, needs, .. },
            ..
        }) => assert_eq!((has, needs), (Msat::ZERO, Msat::from_msat(3))),
        other => panic!("expected AssetShort, got {other:?}"),
    }
    assert_eq!(
        store.state().refund(&refund).unwrap().state,
        RefundState::Unknown
    );
    store
        .append(&ev(
            "float:1",
            11,
            EventBody::FloatAdded {
                asset: Asset::Lightning,
                amount: Msat::from_msat(1_000),
                cause: Cause::Operator {
                    note: "routing fees".into(),
                },
            },
        ))
        .unwrap();
    store.append(&settled).unwrap();
    let s = store.state();
    assert_eq!(s.job(&job("j1")).unwrap().state, JobState::Refunded);
    assert_eq!(s.balance(&Account::Fees).debits, Msat::from_msat(3));
    let trail = store.audit("refund-hash").unwrap().unwrap();
    assert_eq!(trail.refunds.len(), 1);
    store.verify().unwrap();
}

fn file_store(dir: &tempfile::TempDir) -> (std::path::PathBuf, Store) {
    let path = dir.path().join("ledger.db");
    let mut store = Store::open(&path, Durability::Normal).unwrap();
    for j in ["a", "b", "c"] {
        store.append_group(&paid_job_events(j)).unwrap();
    }
    (path, store)
}

#[test]
fn reopen_replays_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = file_store(&dir);
    let before = store.state().clone();
    store.close().unwrap();
    let store = Store::open(&path, Durability::Normal).unwrap();
    assert_eq!(store.state(), &before);
    assert_eq!(store.head().0, 18);
}

#[test]
fn verify_names_the_first_tampered_event() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = file_store(&dir);
    store.close().unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE events SET body = replace(body, '10000', '1') WHERE seq = 9",
        [],
    )
    .unwrap();
    drop(conn);
    match paydvm_ledger::store::verify_file(&path) {
        Err(VerifyFailure::Event { seq: 9, .. }) => {}
        other => panic!("expected event 9 to be flagged, got {other:?}"),
    }
}

#[test]
fn verify_detects_a_deleted_tail_and_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = file_store(&dir);
    store.close().unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("DELETE FROM events WHERE seq = 18", [])
        .unwrap();
    drop(conn);
    assert!(paydvm_ledger::store::verify_file(&path).is_err());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("DELETE FROM events WHERE seq = 4", [])
        .unwrap();
    drop(conn);
    match paydvm_ledger::store::verify_file(&path) {
        Err(VerifyFailure::Event { seq: 4, .. }) => {}
        other => panic!("expected the gap at 4, got {other:?}"),
    }
}

#[test]
fn verify_detects_edited_projections_and_postings() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = file_store(&dir);
    store.close().unwrap();
    let edits = [
        "UPDATE balances SET credits = credits + 1 WHERE account = 'income:revenue'",
        "UPDATE postings SET amount = 1 WHERE seq = 3",
        "UPDATE jobs SET record = replace(record, 'succeeded', 'paid') WHERE job = 'a'",
        "DELETE FROM payments WHERE reference = 'hash-b'",
        // Found by the ledger_tamper fuzz target: the searchable columns must agree too.
        "UPDATE jobs SET state = 'refund_due' WHERE job = 'a'",
    ];
    for sql in edits {
        let copy = dir.path().join("copy.db");
        std::fs::copy(&path, &copy).unwrap();
        let conn = rusqlite::Connection::open(&copy).unwrap();
        assert_eq!(conn.execute(sql, []).unwrap(), 1, "{sql}");
        drop(conn);
        assert!(
            paydvm_ledger::store::verify_file(&copy).is_err(),
            "not detected: {sql}"
        );
        std::fs::remove_file(&copy).unwrap();
    }
    paydvm_ledger::store::verify_file(&path).unwrap();
}

/// Found by the ledger_replay fuzz target: values the store cannot hold are refused by the core,
/// not reported as corruption by the store.
#[test]
fn out_of_range_amounts_and_times_are_refused_as_input_errors() {
    let mut store = Store::open_in_memory().unwrap();
    let top_up = |k: &str, amount: u64, at: u64| {
        ev(
            k,
            at,
            EventBody::PaymentReceived(Payment {
                rail: Rail::Manual,
                asset: Asset::Lightning,
                reference: PaymentRef::new(k).unwrap(),
                linked: vec![],
                amount: Msat::from_msat(amount),
                fee: Msat::ZERO,
                evidence: None,
                payer: None,
                target: PaymentTarget::Credit {
                    pubkey: pk("alice"),
                },
            }),
        )
    };
    for (k, amount, at) in [("huge", 1u64 << 63, 1), ("late", 1, u64::MAX)] {
        match store.append(&top_up(k, amount, at)) {
            Err(LedgerError::Refused { .. }) => {}
            other => panic!("{k}: expected a refusal, got {other:?}"),
        }
    }
    // Totals are bounded too: max-supply payments accumulate until the next would not fit.
    let max = Msat::MAX_SUPPLY.as_msat();
    let mut accepted = 0;
    for n in 0..10 {
        match store.append(&top_up(&format!("max{n}"), max, 1)) {
            Ok(_) => accepted += 1,
            Err(LedgerError::Refused {
                source: TransitionError::TotalTooLarge { .. },
                ..
            }) => break,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(accepted, (i64::MAX as u64 / max) as usize);
    store.verify().unwrap();
}

fn ecash_pay(reference: &str, j: &str, amount: u64, fee: u64) -> LedgerEvent {
    ev(
        &format!("pay:{reference}"),
        3,
        EventBody::PaymentReceived(Payment {
            rail: Rail::NutZap,
            asset: Asset::Mint {
                url: "http://127.0.0.1:3338".into(),
            },
            reference: PaymentRef::new(reference).unwrap(),
            linked: vec![],
            amount: Msat::from_msat(amount),
            fee: Msat::from_msat(fee),
            evidence: None,
            payer: None,
            target: PaymentTarget::Job {
                job: job(j),
                booking: apply(),
            },
        }),
    )
}

#[test]
fn mint_input_fee_is_our_expense_and_the_job_gets_the_face_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fees.sqlite");
    let mut store = Store::open(&path, Durability::Full).unwrap();
    for e in [
        received("j1"),
        quote("j1", 5_000),
        ecash_pay("p1", "j1", 5_000, 1_000),
    ] {
        assert!(matches!(
            store.append(&e).unwrap(),
            AppendOutcome::Appended { .. }
        ));
    }
    let mint = Account::Asset(Asset::Mint {
        url: "http://127.0.0.1:3338".into(),
    });
    let s = store.state();
    assert_eq!(s.job(&job("j1")).unwrap().state, JobState::Paid);
    assert_eq!(s.held(&Account::Job(job("j1"))), Msat::from_msat(5_000));
    assert_eq!(s.balance(&mint).signed(true), 4_000);
    assert_eq!(s.balance(&Account::Fees).signed(true), 1_000);
    store.verify().unwrap();
    store.close().unwrap();
    // Replaying the file from scratch computes the same postings.
    paydvm_ledger::store::verify_file(&path).unwrap();
    let reopened = Store::open(&path, Durability::Full).unwrap();
    assert_eq!(reopened.state().balance(&mint).signed(true), 4_000);
    assert_eq!(reopened.state().balance(&Account::Fees).signed(true), 1_000);
}

#[test]
fn a_payment_without_a_fee_is_stored_as_before() {
    let e = pay("h1", "j1", 5_000, apply());
    let json = serde_json::to_string(&e.body).unwrap();
    assert!(!json.contains("fee"), "{json}");
    let with_fee = ecash_pay("p1", "j1", 5_000, 1);
    let json = serde_json::to_string(&with_fee.body).unwrap();
    assert!(json.contains("\"fee\":1"), "{json}");
}

#[test]
fn a_fee_above_the_payment_is_refused() {
    let mut store = Store::open_in_memory().unwrap();
    store.append(&received("j1")).unwrap();
    store.append(&quote("j1", 5_000)).unwrap();
    let err = store
        .append(&ecash_pay("p1", "j1", 5_000, 5_001))
        .unwrap_err();
    assert!(err.to_string().contains("fee"), "{err}");
    let s = store.state();
    assert_eq!(s.job(&job("j1")).unwrap().state, JobState::Quoted);
    assert_eq!(s.balance(&Account::Fees).signed(true), 0);
    store.verify().unwrap();
}
