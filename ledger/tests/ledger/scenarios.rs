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
/// A paid job j1 that failed for good and owes its payment back over Lightning (`j1:fail`).
fn owing_a_lightning_refund() -> (Vec<LedgerEvent>, RefundId) {
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
    (events, refund)
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
    let (mut events, refund) = owing_a_lightning_refund();
    let route = RefundRoute {
        asset: Asset::Lightning,
        destination: "lnbcrt-refund".into(),
        lookup: "refund-hash".into(),
        fee_reserve: Msat::ZERO,
        zap: None,
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

// ---------------------------------------------------------------------------------------------
// Refund assets, reservations and operator resolutions (issue 10 items 5, 6, 7 and 9).

const MINT: &str = "http://127.0.0.1:3338";

fn mint() -> Asset {
    Asset::Mint { url: MINT.into() }
}
fn msat(n: u64) -> Msat {
    Msat::from_msat(n)
}
fn rid(s: &str) -> RefundId {
    RefundId::new(s).unwrap()
}
fn operator(note: &str) -> Cause {
    Cause::Operator { note: note.into() }
}

/// A payment for job `j` in `asset`, booked per `booking`, that cost us `fee` to take.
fn payment(
    reference: &str,
    j: &str,
    (amount, fee): (u64, u64),
    asset: Asset,
    booking: JobPayment,
) -> LedgerEvent {
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
            reference: PaymentRef::new(reference).unwrap(),
            linked: vec![],
            amount: msat(amount),
            fee: msat(fee),
            evidence: None,
            payer: None,
            target: PaymentTarget::Job {
                job: job(j),
                booking,
            },
        }),
    )
}

/// A paid job runs once and fails.
fn run_and_fail(j: &str) -> Vec<LedgerEvent> {
    vec![
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
            &format!("fail:{j}:1"),
            6,
            EventBody::ProcessingFailed {
                job: job(j),
                attempt: 1,
                retryable: false,
                reason: "boom".into(),
            },
        ),
    ]
}

fn refund_due(j: &str, refund: &str, asset: Option<Asset>) -> LedgerEvent {
    ev(
        &format!("refund-due:{j}:{refund}"),
        7,
        EventBody::RefundDue {
            job: job(j),
            refund: rid(refund),
            asset,
        },
    )
}

fn start(refund: &str, attempt: u32, asset: Asset, fee_reserve: u64) -> LedgerEvent {
    ev(
        &format!("refund-start:{refund}:{attempt}:{asset}:{fee_reserve}"),
        8,
        EventBody::RefundStarted {
            refund: rid(refund),
            attempt,
            route: RefundRoute {
                asset,
                destination: format!("dest-{refund}"),
                lookup: format!("lookup-{refund}-{attempt}"),
                fee_reserve: msat(fee_reserve),
                zap: None,
            },
        },
    )
}

fn settled(refund: &str, fee: u64, fee_paid_by: FeePayer, evidence: Option<&str>) -> LedgerEvent {
    ev(
        &format!("refund-settled:{refund}:{fee}:{fee_paid_by:?}"),
        9,
        EventBody::RefundSettled {
            refund: rid(refund),
            fee: msat(fee),
            fee_paid_by,
            evidence: evidence.map(str::to_string),
            cause: None,
        },
    )
}

fn failed(refund: &str, attempt: u32, cause: Option<Cause>) -> LedgerEvent {
    ev(
        &format!("refund-failed:{refund}:{attempt}"),
        9,
        EventBody::RefundFailed {
            refund: rid(refund),
            reason: "no route".into(),
            cause,
        },
    )
}

fn float(k: &str, asset: Asset, amount: u64) -> LedgerEvent {
    ev(
        k,
        9,
        EventBody::FloatAdded {
            asset,
            amount: msat(amount),
            cause: operator("my own sats"),
        },
    )
}

/// `event` must be refused; nothing may change. Returns why.
fn refused(store: &mut Store, event: &LedgerEvent) -> TransitionError {
    let before = store.state().clone();
    let head = store.head();
    match store.append(event) {
        Err(LedgerError::Refused { source, .. }) => {
            assert_eq!(store.state(), &before, "a refused event changed the state");
            assert_eq!(store.head(), head);
            source
        }
        other => panic!("expected a refusal of {}, got {other:?}", event.key),
    }
}

fn append_all(store: &mut Store, events: &[LedgerEvent]) {
    for e in events {
        match store.append(e) {
            Ok(AppendOutcome::Appended { .. }) => {}
            other => panic!("{}: {other:?}", e.key),
        }
    }
}

fn owned(store: &Store, asset: &Asset) -> i128 {
    store
        .state()
        .balance(&Account::Asset(asset.clone()))
        .signed(true)
}

/// Issue 5: a 10-sat NutZap leaves 9 sat in the wallet (the operator bears the mint's 1-sat input
/// fee) while the job holds 10 sat. The node can see before promising that the mint cannot pay a
/// 10-sat refund; starting it is refused. Float from the operator makes it payable.
#[test]
fn issue_5_a_refund_the_mint_cannot_cover_is_refused_at_start_until_float_is_added() {
    let mut store = Store::open_in_memory().unwrap();
    let mut events = vec![
        received("j1"),
        quote("j1", 10_000),
        payment("nz1", "j1", (10_000, 1_000), mint(), apply()),
    ];
    events.extend(run_and_fail("j1"));
    append_all(&mut store, &events);
    let s = store.state();
    assert_eq!(owned(&store, &mint()), 9_000);
    assert_eq!(s.balance(&Account::Fees).signed(true), 1_000);
    assert_eq!(s.held(&Account::Job(job("j1"))), msat(10_000));
    assert_eq!(s.refund_asset_for(&job("j1")), Ok(mint()));
    assert_eq!(s.available(&mint()), msat(9_000));

    append_all(&mut store, &[refund_due("j1", "j1:fail", Some(mint()))]);
    assert_eq!(
        store.state().refund(&rid("j1:fail")).unwrap().asset,
        Some(mint())
    );
    for reserve in [0, 1_000] {
        match refused(&mut store, &start("j1:fail", 1, mint(), reserve)) {
            TransitionError::AssetShort {
                account,
                has,
                needs,
            } => {
                assert_eq!(account, format!("asset:mint:{MINT}"));
                assert_eq!((has, needs), (msat(9_000), msat(10_000 + reserve)));
            }
            other => panic!("expected AssetShort, got {other}"),
        }
    }

    append_all(&mut store, &[float("float:1", mint(), 2_000)]);
    assert_eq!(store.state().available(&mint()), msat(11_000));
    append_all(&mut store, &[start("j1:fail", 1, mint(), 1_000)]);
    assert_eq!(store.state().reserved(&mint()), msat(11_000));
    assert_eq!(store.state().available(&mint()), Msat::ZERO);
    append_all(
        &mut store,
        &[settled("j1:fail", 1_000, FeePayer::Operator, None)],
    );
    let s = store.state();
    assert_eq!(s.job(&job("j1")).unwrap().state, JobState::Refunded);
    assert_eq!(owned(&store, &mint()), 0);
    assert_eq!(s.reserved(&mint()), Msat::ZERO);
    assert_eq!(s.balance(&Account::Fees).signed(true), 2_000);
    assert_eq!(s.balance(&Account::Float).signed(false), 2_000);
    assert_eq!(s.refund(&rid("j1:fail")).unwrap().fee, msat(1_000));
    store.verify().unwrap();
}

/// Issue 6: the job's Lightning payment came late and was returned in full under its own refund;
/// the job ran on ecash and failed. Its refund is paid from the mint: naming Lightning, or
/// starting the payout over Lightning, is refused, so Lightning never goes below zero.
#[test]
fn issue_6_a_refund_is_paid_from_the_asset_still_held_not_from_one_already_returned() {
    let mut store = Store::open_in_memory().unwrap();
    append_all(
        &mut store,
        &[
            received("j1"),
            quote("j1", 10_000),
            payment("nz1", "j1", (10_000, 0), mint(), apply()),
        ],
    );
    let returned = |asset| {
        JobPayment::Whole(Disposition::Refund {
            refund: rid("j1:return:h1"),
            asset,
        })
    };
    // A whole payment's refund is paid from that payment's asset, whatever the event says.
    let wrong = payment(
        "h1",
        "j1",
        (10_000, 0),
        Asset::Lightning,
        returned(Some(mint())),
    );
    assert!(matches!(
        refused(&mut store, &wrong),
        TransitionError::RefundAssetMismatch { .. }
    ));
    append_all(
        &mut store,
        &[
            payment("h1", "j1", (10_000, 0), Asset::Lightning, returned(None)),
            start("j1:return:h1", 1, Asset::Lightning, 0),
            settled("j1:return:h1", 0, FeePayer::Operator, None),
        ],
    );
    let r = store.state().refund(&rid("j1:return:h1")).unwrap();
    assert_eq!(r.asset, Some(Asset::Lightning));
    assert_eq!(owned(&store, &Asset::Lightning), 0);
    append_all(&mut store, &run_and_fail("j1"));

    let s = store.state();
    assert_eq!(s.refund_asset_for(&job("j1")), Ok(mint()));
    match refused(
        &mut store,
        &refund_due("j1", "j1:fail", Some(Asset::Lightning)),
    ) {
        TransitionError::RefundAssetMismatch { expected, got, .. } => {
            assert_eq!((expected, got), (mint(), Asset::Lightning))
        }
        other => panic!("expected RefundAssetMismatch, got {other}"),
    }
    append_all(&mut store, &[refund_due("j1", "j1:fail", Some(mint()))]);
    assert!(matches!(
        refused(&mut store, &start("j1:fail", 1, Asset::Lightning, 0)),
        TransitionError::RefundAssetMismatch { .. }
    ));
    append_all(
        &mut store,
        &[
            start("j1:fail", 1, mint(), 0),
            settled("j1:fail", 0, FeePayer::Operator, None),
        ],
    );
    assert_eq!(
        store.state().job(&job("j1")).unwrap().state,
        JobState::Refunded
    );
    assert_eq!(owned(&store, &Asset::Lightning), 0);
    assert_eq!(owned(&store, &mint()), 0);
    store.verify().unwrap();
}

/// Issue 6 with an event from an older node (no asset named): the refund's asset stays open, and
/// the wallet check still refuses a payout over a Lightning wallet that holds nothing.
#[test]
fn a_legacy_refund_without_an_asset_still_cannot_overdraw_a_wallet() {
    let mut store = Store::open_in_memory().unwrap();
    let mut events = vec![
        received("j1"),
        quote("j1", 10_000),
        payment("nz1", "j1", (10_000, 0), mint(), apply()),
    ];
    events.extend(run_and_fail("j1"));
    events.push(refund_due("j1", "j1:fail", None));
    append_all(&mut store, &events);
    assert_eq!(store.state().refund(&rid("j1:fail")).unwrap().asset, None);
    match refused(&mut store, &start("j1:fail", 1, Asset::Lightning, 0)) {
        TransitionError::AssetShort { has, needs, .. } => {
            assert_eq!((has, needs), (Msat::ZERO, msat(10_000)))
        }
        other => panic!("expected AssetShort, got {other}"),
    }
    store.verify().unwrap();
}

/// An ecash refund token worth amount − fee: the customer bore the fee. Nothing is booked to
/// `expense:fees`, the refund records the fee and what proves the hand-over, and the proof finds
/// the job's trail.
#[test]
fn a_customer_paid_fee_comes_out_of_the_refund_and_is_not_our_expense() {
    let mut store = Store::open_in_memory().unwrap();
    let mut events = vec![
        received("j1"),
        quote("j1", 10_000),
        payment("nz1", "j1", (10_000, 0), mint(), apply()),
    ];
    events.extend(run_and_fail("j1"));
    events.push(refund_due("j1", "j1:fail", Some(mint())));
    events.push(start("j1:fail", 1, mint(), 0));
    append_all(&mut store, &events);
    match refused(
        &mut store,
        &settled("j1:fail", 10_001, FeePayer::Customer, None),
    ) {
        TransitionError::FeeExceedsRefund { fee, amount } => {
            assert_eq!((fee, amount), (msat(10_001), msat(10_000)))
        }
        other => panic!("expected FeeExceedsRefund, got {other}"),
    }
    let handover = "a".repeat(64);
    append_all(
        &mut store,
        &[settled(
            "j1:fail",
            1_000,
            FeePayer::Customer,
            Some(&handover),
        )],
    );
    let s = store.state();
    let r = s.refund(&rid("j1:fail")).unwrap();
    assert_eq!(r.state, RefundState::Settled);
    assert_eq!((r.fee, r.fee_paid_by), (msat(1_000), FeePayer::Customer));
    assert_eq!(r.evidence.as_deref(), Some(handover.as_str()));
    assert_eq!(owned(&store, &mint()), 0);
    assert_eq!(s.balance(&Account::Fees).signed(true), 0);
    let trail = store
        .audit(&handover)
        .unwrap()
        .expect("found by the evidence");
    assert_eq!(trail.job.unwrap().job, job("j1"));
    store.verify().unwrap();
}

/// Issue 7: a job paid from prepaid credit fails. Its money cannot be refunded over a rail; it
/// goes back as credit. A refund recorded by an older node (no asset) is resolved by the
/// operator writing it off to credit.
#[test]
fn issue_7_credit_funded_money_goes_back_as_credit_not_as_a_refund() {
    let mut store = Store::open_in_memory().unwrap();
    let top_up = ev(
        "top-up",
        1,
        EventBody::PaymentReceived(Payment {
            rail: Rail::Invoice,
            asset: Asset::Lightning,
            reference: PaymentRef::new("top1").unwrap(),
            linked: vec![],
            amount: msat(20_000),
            fee: Msat::ZERO,
            evidence: None,
            payer: None,
            target: PaymentTarget::Credit {
                pubkey: pk("alice"),
            },
        }),
    );
    let mut events = vec![top_up];
    for j in ["j1", "j2"] {
        events.push(received(j));
        events.push(ev(
            &format!("queue-credit:{j}"),
            2,
            EventBody::JobQueued {
                job: job(j),
                reason: QueueReason::CreditDebit {
                    amount: msat(10_000),
                },
            },
        ));
        events.extend(run_and_fail(j).into_iter().skip(1));
    }
    append_all(&mut store, &events);
    let credit = Account::Credit(pk("alice"));
    assert_eq!(store.state().held(&credit), Msat::ZERO);
    assert_eq!(
        store.state().refund_asset_for(&job("j1")),
        Err(TransitionError::CreditFundedRefund { job: job("j1") })
    );
    assert!(matches!(
        refused(
            &mut store,
            &refund_due("j1", "j1:fail", Some(Asset::Lightning))
        ),
        TransitionError::CreditFundedRefund { .. }
    ));
    append_all(
        &mut store,
        &[ev(
            "credit:j1",
            7,
            EventBody::CreditGranted { job: job("j1") },
        )],
    );
    assert_eq!(
        store.state().job(&job("j1")).unwrap().state,
        JobState::Credited
    );
    assert_eq!(store.state().held(&credit), msat(10_000));

    // An older node wrote a refund with no asset for j2; it can never be paid over a rail.
    append_all(&mut store, &[refund_due("j2", "j2:fail", None)]);
    let write_off = ev(
        "write-off:j2",
        8,
        EventBody::RefundWrittenOff {
            refund: rid("j2:fail"),
            to: WriteOffTo::Credit,
            cause: Cause::Node {
                note: "credit-funded refund from an older version".into(),
            },
        },
    );
    append_all(&mut store, &[write_off]);
    let s = store.state();
    let r = s.refund(&rid("j2:fail")).unwrap();
    assert_eq!(r.state, RefundState::WrittenOff);
    assert_eq!(r.written_off_to, Some(WriteOffTo::Credit));
    assert_eq!(s.job(&job("j2")).unwrap().state, JobState::Credited);
    assert_eq!(s.held(&credit), msat(20_000));
    assert_eq!(s.held(&Account::Refund(rid("j2:fail"))), Msat::ZERO);
    store.verify().unwrap();
}

/// A job paid over Lightning fails; the customer has no Lightning address. The operator re-routes
/// the refund to the mint (and funds it there); it is paid from the mint. A refund cannot be
/// re-routed while a payout is in flight.
#[test]
fn a_rerouted_refund_is_paid_from_the_new_asset_and_only_while_it_waits() {
    let mut store = Store::open_in_memory().unwrap();
    let mut events = vec![
        received("j1"),
        quote("j1", 10_000),
        payment("h1", "j1", (10_000, 0), Asset::Lightning, apply()),
    ];
    events.extend(run_and_fail("j1"));
    events.push(refund_due("j1", "j1:fail", Some(Asset::Lightning)));
    events.push(ev(
        "deferred",
        8,
        EventBody::RefundDeferred {
            refund: rid("j1:fail"),
            reason: "no lightning address".into(),
        },
    ));
    append_all(&mut store, &events);
    let reroute = |k: &str| {
        ev(
            k,
            9,
            EventBody::RefundRerouted {
                refund: rid("j1:fail"),
                asset: mint(),
                cause: operator("customer asked for ecash"),
            },
        )
    };
    append_all(&mut store, &[reroute("reroute:1")]);
    let r = store.state().refund(&rid("j1:fail")).unwrap();
    assert_eq!((r.asset.clone(), r.deferred.clone()), (Some(mint()), None));
    assert!(matches!(
        refused(&mut store, &start("j1:fail", 1, Asset::Lightning, 0)),
        TransitionError::RefundAssetMismatch { .. }
    ));
    assert!(matches!(
        refused(&mut store, &start("j1:fail", 1, mint(), 0)),
        TransitionError::AssetShort { .. }
    ));
    append_all(
        &mut store,
        &[
            float("float:mint", mint(), 10_000),
            start("j1:fail", 1, mint(), 0),
        ],
    );
    assert!(matches!(
        refused(&mut store, &reroute("reroute:2")),
        TransitionError::InvalidRefundTransition { .. }
    ));
    append_all(
        &mut store,
        &[settled("j1:fail", 0, FeePayer::Operator, None)],
    );
    assert_eq!(owned(&store, &mint()), 0);
    assert_eq!(owned(&store, &Asset::Lightning), 10_000);
    let trail = store.audit("j1:fail").unwrap().unwrap();
    assert!(trail
        .events
        .iter()
        .any(|e| e.event.type_name() == "refund_rerouted"));
    store.verify().unwrap();
}

/// After failed attempts the node parks a refund; the operator's retry records the attempt count
/// the node counts from again. Not while a payout is in flight.
#[test]
fn a_retry_records_the_attempts_so_far_and_clears_the_deferral() {
    let mut store = Store::open_in_memory().unwrap();
    let mut events = vec![
        received("j1"),
        quote("j1", 10_000),
        payment("h1", "j1", (10_000, 0), Asset::Lightning, apply()),
    ];
    events.extend(run_and_fail("j1"));
    events.push(refund_due("j1", "j1:fail", Some(Asset::Lightning)));
    for attempt in 1..=2 {
        events.push(start("j1:fail", attempt, Asset::Lightning, 0));
        events.push(failed("j1:fail", attempt, None));
    }
    events.push(ev(
        "parked",
        9,
        EventBody::RefundDeferred {
            refund: rid("j1:fail"),
            reason: "2 payment attempts failed; waiting for the operator".into(),
        },
    ));
    append_all(&mut store, &events);
    let retry = |k: &str| {
        ev(
            k,
            10,
            EventBody::RefundRetried {
                refund: rid("j1:fail"),
                cause: operator("the customer's wallet is back"),
            },
        )
    };
    append_all(&mut store, &[retry("retry:1")]);
    let r = store.state().refund(&rid("j1:fail")).unwrap();
    assert_eq!((r.attempts, r.retry_base), (2, 2));
    assert_eq!(r.deferred, None);
    assert_eq!(store.state().available(&Asset::Lightning), msat(10_000));
    append_all(&mut store, &[start("j1:fail", 3, Asset::Lightning, 0)]);
    assert!(matches!(
        refused(&mut store, &retry("retry:2")),
        TransitionError::InvalidRefundTransition { .. }
    ));
    store.verify().unwrap();
}

/// An unknown outcome is never written off (the money may have left). The operator checks the
/// wallet and records the failure with a cause; then writes the refund off to income: the job
/// ends `written_off`, holding nothing.
#[test]
fn a_write_off_to_income_ends_the_job_and_is_refused_while_the_outcome_is_unknown() {
    let mut store = Store::open_in_memory().unwrap();
    let mut events = vec![
        received("j1"),
        quote("j1", 10_000),
        payment("h1", "j1", (10_000, 0), Asset::Lightning, apply()),
    ];
    events.extend(run_and_fail("j1"));
    events.push(refund_due("j1", "j1:fail", Some(Asset::Lightning)));
    events.push(start("j1:fail", 1, Asset::Lightning, 0));
    events.push(ev(
        "unknown",
        9,
        EventBody::RefundOutcomeUnknown {
            refund: rid("j1:fail"),
            reason: "timeout".into(),
        },
    ));
    append_all(&mut store, &events);
    let write_off = ev(
        "write-off",
        11,
        EventBody::RefundWrittenOff {
            refund: rid("j1:fail"),
            to: WriteOffTo::Income,
            cause: operator("customer unreachable for 90 days"),
        },
    );
    match refused(&mut store, &write_off) {
        TransitionError::InvalidRefundTransition { state, .. } => {
            assert_eq!(state, RefundState::Unknown)
        }
        other => panic!("expected InvalidRefundTransition, got {other}"),
    }
    assert_eq!(store.state().reserved(&Asset::Lightning), msat(10_000));
    append_all(
        &mut store,
        &[failed(
            "j1:fail",
            1,
            Some(operator("the wallet shows the payment failed")),
        )],
    );
    assert_eq!(store.state().reserved(&Asset::Lightning), Msat::ZERO);
    append_all(&mut store, &[write_off]);
    let s = store.state();
    assert_eq!(s.job(&job("j1")).unwrap().state, JobState::WrittenOff);
    assert_eq!(
        s.refund(&rid("j1:fail")).unwrap().state,
        RefundState::WrittenOff
    );
    assert_eq!(s.balance(&Account::WrittenOff).signed(false), 10_000);
    assert_eq!(s.held(&Account::Refund(rid("j1:fail"))), Msat::ZERO);
    assert_eq!(owned(&store, &Asset::Lightning), 10_000);
    assert_eq!(
        store.jobs_by_state(JobState::WrittenOff).unwrap().len(),
        1,
        "the projection row follows"
    );
    store.verify().unwrap();
}

/// The operator looked the payment up by hand and saw it paid: the settlement carries the cause
/// and the preimage; the fee goes beyond the reserve, which is fine while the wallet covers it.
#[test]
fn an_operator_settles_an_unknown_refund_with_a_cause() {
    let mut store = Store::open_in_memory().unwrap();
    let mut events = vec![
        received("j1"),
        quote("j1", 10_000),
        payment("h1", "j1", (12_000, 0), Asset::Lightning, {
            JobPayment::Apply {
                excess: Some(Disposition::Credit),
            }
        }),
    ];
    events.extend(run_and_fail("j1"));
    events.push(refund_due("j1", "j1:fail", Some(Asset::Lightning)));
    events.push(start("j1:fail", 1, Asset::Lightning, 100));
    events.push(ev(
        "unknown",
        9,
        EventBody::RefundOutcomeUnknown {
            refund: rid("j1:fail"),
            reason: "timeout".into(),
        },
    ));
    append_all(&mut store, &events);
    let settle = ev(
        "settled-by-hand",
        12,
        EventBody::RefundSettled {
            refund: rid("j1:fail"),
            fee: msat(500),
            fee_paid_by: FeePayer::Operator,
            evidence: Some("b".repeat(64)),
            cause: Some(operator("wallet shows it paid")),
        },
    );
    append_all(&mut store, &[settle]);
    let s = store.state();
    assert_eq!(s.job(&job("j1")).unwrap().state, JobState::Refunded);
    assert_eq!(owned(&store, &Asset::Lightning), 1_500);
    assert_eq!(s.balance(&Account::Fees).signed(true), 500);
    store.verify().unwrap();
}

/// Two refunds on one wallet cannot promise the same money; a payout that fails frees its
/// reservation; a refused group leaves reservations as they were.
#[test]
fn reservations_keep_two_refunds_from_promising_the_same_money() {
    let mut store = Store::open_in_memory().unwrap();
    for j in ["j1", "j2"] {
        let mut events = vec![
            received(j),
            quote(j, 10_000),
            payment(&format!("h-{j}"), j, (10_000, 0), Asset::Lightning, apply()),
        ];
        events.extend(run_and_fail(j));
        events.push(refund_due(j, &format!("{j}:fail"), Some(Asset::Lightning)));
        append_all(&mut store, &events);
    }
    append_all(&mut store, &[start("j1:fail", 1, Asset::Lightning, 1_000)]);
    assert_eq!(store.state().available(&Asset::Lightning), msat(9_000));
    match refused(&mut store, &start("j2:fail", 1, Asset::Lightning, 1_000)) {
        TransitionError::AssetShort { has, needs, .. } => {
            assert_eq!((has, needs), (msat(9_000), msat(11_000)))
        }
        other => panic!("expected AssetShort, got {other}"),
    }
    append_all(&mut store, &[failed("j1:fail", 1, None)]);
    assert_eq!(store.state().available(&Asset::Lightning), msat(20_000));
    // A group whose last event is refused: the reservation its first event made is undone.
    let group = [
        start("j2:fail", 1, Asset::Lightning, 1_000),
        float("float:zero", Asset::Lightning, 0),
    ];
    let err = store.append_group(&group).unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::Refused {
                index: 1,
                source: TransitionError::ZeroAmount,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(store.state().reserved(&Asset::Lightning), Msat::ZERO);
    assert_eq!(store.state().available(&Asset::Lightning), msat(20_000));
    append_all(&mut store, &group[..1]);
    assert_eq!(store.state().available(&Asset::Lightning), msat(9_000));
    store.verify().unwrap();
}

/// The hash chain covers the stored JSON: events without the new fields must serialize exactly
/// as the previous version wrote them (these strings are that version's output).
#[test]
fn events_without_the_new_fields_serialize_byte_for_byte_as_before() {
    let written_before = [
        r#"{"type":"refund_due","job":"j1","refund":"j1:fail"}"#,
        r#"{"type":"refund_started","refund":"j1:fail","attempt":1,"route":{"asset":{"asset":"mint","url":"http://127.0.0.1:3338"},"destination":"npub1x","lookup":"tag-1"}}"#,
        r#"{"type":"refund_settled","refund":"j1:fail","fee":3}"#,
        r#"{"type":"refund_failed","refund":"j1:fail","reason":"no route"}"#,
        r#"{"type":"quote_expired","job":"j1","held":{"disposition":"refund","refund":"j1:fail"}}"#,
        r#"{"type":"payment_received","rail":"nut_zap","asset":{"asset":"mint","url":"http://127.0.0.1:3338"},"reference":"nz1","linked":[],"amount":12000,"fee":1000,"evidence":null,"payer":null,"target":{"target":"job","job":"j1","booking":{"apply":"apply","excess":{"disposition":"refund","refund":"j1:excess:nz1"}}}}"#,
    ];
    for json in written_before {
        let body: EventBody = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&body).unwrap(), json);
    }
}

/// Replay derives what a job holds per source and a payment refund's asset from the old events,
/// so rows an older version stored lack them. `verify` accepts such rows (counted as stale) but
/// nothing else that differs; opening the file for writing brings them up to date.
#[test]
fn a_ledger_written_before_refund_assets_opens_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let mut store = Store::open(&path, Durability::Normal).unwrap();
    append_all(
        &mut store,
        &[
            received("j1"),
            quote("j1", 10_000),
            payment(
                "nz1",
                "j1",
                (12_000, 1_000),
                mint(),
                JobPayment::Apply {
                    excess: Some(Disposition::Refund {
                        refund: rid("j1:excess:nz1"),
                        asset: None,
                    }),
                },
            ),
        ],
    );
    let live = store.state().clone();
    store.close().unwrap();
    // What the previous version stored: the same records without the derived fields.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE jobs SET record = json_remove(record, '$.held_assets')",
        [],
    )
    .unwrap();
    conn.execute(
        "UPDATE refunds SET record = json_remove(record, '$.asset')",
        [],
    )
    .unwrap();
    let old_job: String = conn
        .query_row("SELECT record FROM jobs", [], |r| r.get(0))
        .unwrap();
    assert!(!old_job.contains("held_assets"), "{old_job}");
    drop(conn);
    let report = paydvm_ledger::store::verify_file(&path).unwrap();
    assert_eq!(report.stale_rows, 2);
    // A stale row is accepted only as exactly what the older version wrote.
    let copy = dir.path().join("edited.db");
    std::fs::copy(&path, &copy).unwrap();
    let conn = rusqlite::Connection::open(&copy).unwrap();
    conn.execute(
        "UPDATE jobs SET record = replace(record, '\"applied\":10000', '\"applied\":1')",
        [],
    )
    .unwrap();
    let edited: String = conn
        .query_row("SELECT record FROM jobs", [], |r| r.get(0))
        .unwrap();
    assert!(edited.contains("\"applied\":1,"), "{edited}");
    drop(conn);
    assert!(matches!(
        paydvm_ledger::store::verify_file(&copy),
        Err(VerifyFailure::Projection { .. })
    ));
    let store = Store::open(&path, Durability::Normal).unwrap();
    assert_eq!(store.state(), &live);
    assert_eq!(store.verify().unwrap().stale_rows, 0);
    store.close().unwrap();
    let rows: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT record FROM jobs", [], |r| r.get(0))
        .unwrap();
    assert!(rows.contains("held_assets"), "{rows}");
}

/// Fuzz finding 6 (`ledger_tamper`): a version-2 file whose `schema_version` was edited to 1
/// verified clean, read as a version-1 ledger. Its tables say otherwise.
#[test]
fn verify_refuses_a_schema_version_edited_down() {
    let (_dir, path) = file_with_job_a("v2.db");
    edit_file(
        &path,
        "UPDATE meta SET value = '1' WHERE key = 'schema_version';",
    );
    let err = paydvm_ledger::store::verify_file(&path).unwrap_err();
    assert!(err.to_string().contains("snapshots table"), "{err}");
}

/// CI's fuzz finding (`ledger_tamper`, stop 32): a version-4 file labelled version 2 verified
/// clean, and a writable open would have run migrations 3 and 4 again on tables that have them.
/// Each later version's mark (rowid `jobs`, the digest columns) is checked as well, by `verify`
/// and before migrating.
#[test]
fn verify_and_open_refuse_a_schema_version_that_is_not_the_files() {
    for (label, mark) in [("2", "rowid"), ("3", "digest columns")] {
        let (_dir, path) = file_with_job_a("v4.db");
        edit_file(
            &path,
            &format!("UPDATE meta SET value = '{label}' WHERE key = 'schema_version';"),
        );
        let err = paydvm_ledger::store::verify_file(&path).unwrap_err();
        assert!(err.to_string().contains(mark), "{label}: {err}");
        let err = Store::open(&path, Durability::Normal)
            .err()
            .expect("opened");
        assert!(err.to_string().contains(mark), "{label}: {err}");
    }
}

/// A ledger written before snapshots (schema 1) still opens: read-only and `verify` as it is, a
/// bounded store after migrating it, replaying the whole log once and then from snapshots; a tail
/// that changed a record which ended before the snapshot makes the store replay everything.
#[test]
fn a_schema_1_ledger_migrates_and_opens_keeping_open_work() {
    use paydvm_ledger::{SnapshotUse, StoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    let mut store = Store::open(&path, Durability::Normal).unwrap();
    store.append_group(&paid_job_events("a")).unwrap();
    store.append_group(&paid_job_events("b")).unwrap();
    store.append_group(&paid_job_events("c")[..5]).unwrap();
    store.close().unwrap();
    edit_file(&path, LOG_AS_SCHEMA_3);
    edit_file(&path, PROJECTIONS_AS_SCHEMA_2);
    edit_file(
        &path,
        "DROP INDEX refunds_by_state; DROP INDEX effects_open; \
         ALTER TABLE jobs DROP COLUMN changed; ALTER TABLE refunds DROP COLUMN changed; \
         DROP TABLE snapshots; DELETE FROM meta WHERE key = 'changed_since';",
    );
    label_as(&path, 1);
    paydvm_ledger::store::verify_file(&path).unwrap();
    assert_eq!(Store::open_read_only(&path).unwrap().head().0, 17);

    let options = StoreOptions::bounded(Durability::Normal);
    let store = Store::open_with(&path, &options).unwrap();
    assert_eq!(store.opened().snapshot, SnapshotUse::Absent);
    assert_eq!(store.opened().replayed, 17);
    let resident: Vec<&str> = store.state().jobs().map(|j| j.job.as_str()).collect();
    assert_eq!(resident, ["c"]);
    store.close().unwrap();
    let mut store = Store::open_with(&path, &options).unwrap();
    assert_eq!(store.opened().snapshot, SnapshotUse::Loaded { seq: 17 });
    // A tail naming a job that ended before the migration, then a crash (no snapshot at close).
    let late = pay(
        "late-a",
        "a",
        10_000,
        JobPayment::Whole(Disposition::Credit),
    );
    store.append(&late).unwrap();
    store.append(&paid_job_events("c")[5]).unwrap();
    let state = store.state().clone();
    drop(store);
    let store = Store::open_with(&path, &options).unwrap();
    // The late payment changed job a's row after the snapshot: the row no longer says what a was
    // at the snapshot, so the snapshot is not used and the whole log is replayed (never a guess).
    match &store.opened().snapshot {
        SnapshotUse::Rejected { seq: 17, reason } => {
            assert!(reason.contains("event 18 reads job a"), "{reason}")
        }
        other => panic!("expected the snapshot rejected, got {other:?}"),
    }
    assert_eq!(store.opened().replayed, 19);
    assert_eq!(store.state(), &state);
    store.verify().unwrap();
    store.close().unwrap();
    let full = Store::open(&path, Durability::Normal).unwrap();
    assert_eq!(full.state().open_work(), state);
    assert_eq!(
        full.state().job(&job("a")).unwrap().funded_total,
        Msat::from_msat(20_000)
    );
}

/// Issue 13, problem 10: a new ledger file (and the WAL files SQLite gives the same mode) is
/// readable by its owner only, like the keys.
#[test]
fn a_new_ledger_file_is_created_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paydvm.db");
    let mut store = Store::open(&path, Durability::Full).unwrap();
    append_all(&mut store, &[received("j1")]);
    for name in ["paydvm.db", "paydvm.db-wal", "paydvm.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    store.close().unwrap();
}

fn adjusted(k: &str, who: &str, direction: CreditDirection, amount: u64) -> LedgerEvent {
    ev(
        k,
        5,
        EventBody::CreditAdjusted {
            customer: pk(who),
            direction,
            amount: Msat::from_msat(amount),
            cause: Cause::Operator {
                note: "goodwill".into(),
            },
        },
    )
}

/// Issue 13, problem 9: the operator's credit changes move `equity:float` and a customer's
/// credit; a decrease beyond what the customer holds is refused and changes nothing.
#[test]
fn operator_credit_adjustments_never_take_credit_below_zero() {
    let mut store = Store::open_in_memory().unwrap();
    append_all(
        &mut store,
        &[adjusted("c1", "alice", CreditDirection::Increase, 3_000)],
    );
    let refused = store.append(&adjusted("c2", "alice", CreditDirection::Decrease, 3_001));
    assert!(refused.is_err(), "{refused:?}");
    let refused = store.append(&adjusted("c3", "bob", CreditDirection::Decrease, 1));
    assert!(refused.is_err(), "{refused:?}");
    append_all(
        &mut store,
        &[adjusted("c4", "alice", CreditDirection::Decrease, 1_000)],
    );
    let s = store.state();
    assert_eq!(
        s.held(&Account::Credit(pk("alice"))),
        Msat::from_msat(2_000)
    );
    assert_eq!(s.held(&Account::Credit(pk("bob"))), Msat::ZERO);
    assert_eq!(s.balance(&Account::Float).signed(false), -2_000);
    store.verify().unwrap();
}

/// A refund sent as a zap (zapback): its receipt is linked once, moves no money, is found by
/// the zap request and the receipt ids, and only a refund recorded as a zap can have one.
#[test]
fn a_zapback_receipt_is_linked_once_to_a_zap_refund_and_moves_no_money() {
    let mut store = Store::open_in_memory().unwrap();
    let (events, refund) = owing_a_lightning_refund();
    store.append_group(&events).unwrap();
    let receipt = |k: &str, id: char| {
        ev(
            k,
            20,
            EventBody::RefundZapReceipt {
                refund: refund.clone(),
                receipt: EventId::new(id.to_string().repeat(64)).unwrap(),
            },
        )
    };
    // Owed but not yet sent: nothing to link.
    assert!(store.append(&receipt("zap-receipt:early", 'a')).is_err());
    let request = EventId::new("c".repeat(64)).unwrap();
    let route = RefundRoute {
        asset: Asset::Lightning,
        destination: "lnbcrt-refund".into(),
        lookup: "refund-hash".into(),
        fee_reserve: Msat::ZERO,
        zap: Some(RefundZap {
            request: request.clone(),
            signer: Pubkey::new("d".repeat(64)).unwrap(),
        }),
    };
    store
        .append(&ev(
            "refund-start:1",
            8,
            EventBody::RefundStarted {
                refund: refund.clone(),
                attempt: 1,
                route,
            },
        ))
        .unwrap();
    let before = store.state().asset_balance(&Asset::Lightning);
    store.append(&receipt("zap-receipt:1", 'a')).unwrap();
    let after = store.state();
    assert_eq!(
        after.refund(&refund).unwrap().zap_receipt,
        Some(EventId::new("a".repeat(64)).unwrap())
    );
    // No money moved, the refund is still in flight: only the payment's outcome settles it.
    assert_eq!(after.refund(&refund).unwrap().state, RefundState::InFlight);
    assert_eq!(after.asset_balance(&Asset::Lightning), before);
    // A second receipt is refused.
    assert!(store.append(&receipt("zap-receipt:2", 'b')).is_err());
    // The trail is found by the zap request and by the receipt.
    for reference in [request.as_str().to_owned(), "a".repeat(64)] {
        let trail = store.audit(&reference).unwrap().expect("found");
        assert!(trail
            .events
            .iter()
            .any(|e| e.event.type_name() == "refund_zap_receipt"));
    }
    store.verify().unwrap();
}

#[test]
fn a_plain_refund_cannot_have_a_zap_receipt() {
    let mut store = Store::open_in_memory().unwrap();
    let (mut events, refund) = owing_a_lightning_refund();
    events.push(ev(
        "refund-start:1",
        8,
        EventBody::RefundStarted {
            refund: refund.clone(),
            attempt: 1,
            route: RefundRoute {
                asset: Asset::Lightning,
                destination: "lnbcrt-refund".into(),
                lookup: "refund-hash".into(),
                fee_reserve: Msat::ZERO,
                zap: None,
            },
        },
    ));
    store.append_group(&events).unwrap();
    let link = ev(
        "zap-receipt:1",
        9,
        EventBody::RefundZapReceipt {
            refund,
            receipt: EventId::new("a".repeat(64)).unwrap(),
        },
    );
    assert!(matches!(
        store.append(&link),
        Err(LedgerError::Refused {
            source: TransitionError::InvalidRefundTransition { .. },
            ..
        })
    ));
}

/// A closed ledger file holding paid job `a`, in a temporary directory.
fn file_with_job_a(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    let mut store = Store::open(&path, Durability::Normal).unwrap();
    store.append_group(&paid_job_events("a")).unwrap();
    store.close().unwrap();
    (dir, path)
}

/// The log as schema 3 had it: `events` with a UNIQUE index on the text key and one on the job,
/// `refs` keyed by (seq, reference) WITHOUT ROWID with an index on the reference.
const LOG_AS_SCHEMA_3: &str =
    "CREATE TABLE e3 (seq INTEGER PRIMARY KEY, idem_key TEXT NOT NULL UNIQUE, \
         at INTEGER NOT NULL, type TEXT NOT NULL, job TEXT, body TEXT NOT NULL, \
         prev_hash BLOB NOT NULL, hash BLOB NOT NULL); \
     INSERT INTO e3 SELECT seq, idem_key, at, type, job, body, prev_hash, hash FROM events; \
     DROP TABLE events; ALTER TABLE e3 RENAME TO events; \
     CREATE INDEX events_by_job ON events(job, seq) WHERE job IS NOT NULL; \
     CREATE TABLE r3 (seq INTEGER NOT NULL, reference TEXT NOT NULL, job TEXT, \
         PRIMARY KEY (seq, reference)) WITHOUT ROWID; \
     INSERT INTO r3 SELECT seq, reference, job FROM refs; \
     DROP TABLE refs; ALTER TABLE r3 RENAME TO refs; \
     CREATE INDEX refs_by_reference ON refs(reference);";

/// The per-job projections as schema 2 had them: keyed by their ids, WITHOUT ROWID.
const PROJECTIONS_AS_SCHEMA_2: &str =
    "CREATE TABLE j2 (job TEXT PRIMARY KEY, state TEXT NOT NULL, record TEXT NOT NULL, \
         changed INTEGER) WITHOUT ROWID; INSERT INTO j2 SELECT * FROM jobs; \
     DROP TABLE jobs; ALTER TABLE j2 RENAME TO jobs; CREATE INDEX jobs_by_state ON jobs(state); \
     CREATE TABLE r2 (refund TEXT PRIMARY KEY, job TEXT, state TEXT NOT NULL, \
         record TEXT NOT NULL, changed INTEGER) WITHOUT ROWID; \
     INSERT INTO r2 SELECT * FROM refunds; DROP TABLE refunds; ALTER TABLE r2 RENAME TO refunds; \
     CREATE INDEX refunds_by_job ON refunds(job) WHERE job IS NOT NULL; \
     CREATE INDEX refunds_by_state ON refunds(state); \
     CREATE TABLE e2 (effect TEXT PRIMARY KEY, done INTEGER NOT NULL, record TEXT NOT NULL) \
         WITHOUT ROWID; INSERT INTO e2 SELECT * FROM effects; DROP TABLE effects; \
     ALTER TABLE e2 RENAME TO effects; CREATE INDEX effects_open ON effects(effect) WHERE done = 0;";

/// Relabels a closed ledger file as schema `version`.
fn label_as(path: &std::path::Path, version: u32) {
    edit_file(
        path,
        &format!("UPDATE meta SET value = '{version}' WHERE key = 'schema_version';"),
    );
}

/// Runs `sql` on a closed ledger file directly: what an older version left, or a tamperer.
fn edit_file(path: &std::path::Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

/// The per-job projection tables of a version-2 file (keyed by their ids, WITHOUT ROWID) become
/// rowid tables on a writable open (version 3), every row kept: `verify` compares each row with
/// the replayed record, so a row lost or changed in the copy fails it.
#[test]
fn a_schema_2_ledger_migrates_its_projections_to_rowid_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.db");
    let mut store = Store::open(&path, Durability::Normal).unwrap();
    let (events, _refund) = owing_a_lightning_refund();
    store.append_group(&events).unwrap();
    store.append_group(&paid_job_events("b")).unwrap();
    store
        .append(&ev(
            "effect:b",
            9,
            EventBody::EffectRequested {
                effect: EffectId::new("e-b").unwrap(),
                job: Some(job("b")),
                subscription: None,
                action: EffectAction::Publish,
                payload: "{}".into(),
            },
        ))
        .unwrap();
    let state = store.state().clone();
    store.close().unwrap();
    edit_file(&path, LOG_AS_SCHEMA_3);
    edit_file(&path, PROJECTIONS_AS_SCHEMA_2);
    label_as(&path, 2);
    let without_rowid = |path: &std::path::Path| -> Vec<String> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND sql LIKE '%WITHOUT ROWID%' ORDER BY name",
            )
            .unwrap();
        let names = stmt.query_map([], |r| r.get(0)).unwrap();
        names.map(Result::unwrap).collect()
    };
    let old = [
        "balances",
        "effects",
        "jobs",
        "payments",
        "postings",
        "refs",
        "refunds",
        "subscriptions",
    ];
    assert_eq!(without_rowid(&path), old);
    paydvm_ledger::store::verify_file(&path).unwrap();

    let store = Store::open(&path, Durability::Normal).unwrap();
    assert_eq!(store.state(), &state);
    store.close().unwrap();
    let kept = ["balances", "payments", "postings", "subscriptions"];
    assert_eq!(without_rowid(&path), kept);
    paydvm_ledger::store::verify_file(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let rows = |t: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!((rows("jobs"), rows("refunds"), rows("effects")), (2, 1, 1));
    let version: String = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, paydvm_ledger::store::SCHEMA_VERSION.to_string());
}

/// The events and references of a version-3 file (searched by a UNIQUE index on the text key,
/// one on the job and one on the reference) get their digests on a writable open (version 4):
/// the old file verifies and audits as it is, the migrated one too, a key written before the
/// migration is still found (a duplicate, not a second event), and a job's trail is found by its
/// id and by its payment's reference through the digests.
#[test]
fn a_schema_3_ledger_migrates_its_events_to_digest_indexes() {
    use paydvm_ledger::StoreOptions;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.db");
    let mut store = Store::open(&path, Durability::Normal).unwrap();
    store.append_group(&paid_job_events("a")).unwrap();
    store.append_group(&paid_job_events("b")[..5]).unwrap();
    let trail_of_a = store.audit("a").unwrap().unwrap().events.len();
    assert!(trail_of_a >= 5, "{trail_of_a}");
    store.close().unwrap();
    edit_file(&path, LOG_AS_SCHEMA_3);
    label_as(&path, 3);
    paydvm_ledger::store::verify_file(&path).unwrap();
    let old = Store::open_read_only(&path).unwrap();
    assert_eq!(old.audit("a").unwrap().unwrap().events.len(), trail_of_a);
    assert_eq!(
        old.audit("hash-a").unwrap().unwrap().events.len(),
        trail_of_a
    );
    assert!(old.stored_request(&job("b")).is_ok());
    drop(old);

    let mut store = Store::open_with(&path, &StoreOptions::bounded(Durability::Normal)).unwrap();
    assert_eq!(store.audit("a").unwrap().unwrap().events.len(), trail_of_a);
    assert_eq!(
        store.audit("hash-a").unwrap().unwrap().events.len(),
        trail_of_a
    );
    let again = store.append_group(&paid_job_events("a")).unwrap();
    assert!(
        again
            .iter()
            .all(|o| matches!(o, AppendOutcome::Duplicate { .. })),
        "{again:?}"
    );
    store.append(&paid_job_events("b")[5]).unwrap();
    store.close().unwrap();
    paydvm_ledger::store::verify_file(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE tbl_name = 'events' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(indexes, ["events", "events_by_job", "events_by_key"]);
    let refs: i64 = conn
        .query_row(
            "SELECT count(*) FROM refs WHERE ref_digest IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(refs > 0);
    let counts: (i64, i64, i64, i64) = conn
        .query_row(
            "SELECT count(*), count(key_digest), count(job), count(job_digest) FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert!(
        counts.0 == counts.1 && counts.2 == counts.3 && counts.2 > 0,
        "{counts:?}"
    );
}

/// A digest that is not its key's hides the event from the idempotency look-up (the same key
/// could then be written twice), or from the audit's look-up by reference: `verify` refuses both.
#[test]
fn verify_refuses_an_event_whose_key_digest_was_changed() {
    let (_dir, path) = file_with_job_a("d.db");
    paydvm_ledger::store::verify_file(&path).unwrap();
    edit_file(
        &path,
        "UPDATE events SET key_digest = key_digest + 1 WHERE seq = 3;",
    );
    match paydvm_ledger::store::verify_file(&path) {
        Err(VerifyFailure::Event { seq: 3, reason }) => {
            assert!(reason.contains("key_digest"), "{reason}")
        }
        other => panic!("expected event 3 refused, got {other:?}"),
    }
    edit_file(
        &path,
        "UPDATE events SET key_digest = key_digest - 1 WHERE seq = 3; \
         UPDATE refs SET ref_digest = ref_digest + 1 WHERE reference = 'hash-a';",
    );
    let failure = paydvm_ledger::store::verify_file(&path)
        .unwrap_err()
        .to_string();
    assert!(
        failure.contains("ref_digest is not the digest of hash-a"),
        "{failure}"
    );
}

/// A migration that fails half-way leaves the file as it was (each migration is one
/// transaction): here the copy of the log into the digest table stops at a key stored as a blob.
#[test]
fn a_migration_that_fails_half_way_leaves_the_old_version() {
    let (_dir, path) = file_with_job_a("v3.db");
    edit_file(&path, LOG_AS_SCHEMA_3);
    edit_file(
        &path,
        "UPDATE events SET idem_key = CAST(idem_key AS BLOB) WHERE seq = 4;",
    );
    label_as(&path, 3);
    assert!(Store::open(&path, Durability::Normal).is_err());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: String = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, "3");
    let left: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE name LIKE '%v4' \
             OR (name = 'events' AND sql LIKE '%key_digest%')",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let events: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(events as usize, paid_job_events("a").len());
}
