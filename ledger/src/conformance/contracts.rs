//! The contracts every store meets in both retentions: appends, idempotency, groups, staging,
//! the chain, reads, queries, audit, export, verify and the ledger's money rules.

use super::builders::*;
use super::{options, Harness};
use crate::account::Account;
use crate::chain::GENESIS;
use crate::engine::AppendOutcome;
use crate::error::{LedgerError, TransitionError};
use crate::event::{Asset, JobPayment, LedgerEvent};
use crate::ids::IdemKey;
use crate::job::JobState;
use crate::ledger_store::{InvoiceFor, LedgerStore, Recall, Retention};
use crate::refund::RefundState;
use crate::store::VerifyFailure;

/// Builds a fresh harness (a new, empty location).
pub type Make<'a, H> = &'a dyn Fn() -> H;

pub fn open<H: Harness>(h: &mut H, retention: Retention) -> H::Store {
    h.open(&options(retention)).expect("the store opens")
}

/// Close and open again.
pub fn reopen<H: Harness>(h: &mut H, store: H::Store, retention: Retention) -> H::Store {
    store.close().expect("the store closes");
    open(h, retention)
}

pub fn append_all<S: LedgerStore>(store: &mut S, groups: &[Vec<LedgerEvent>]) {
    for group in groups {
        let outcomes = store
            .append_group(group)
            .unwrap_or_else(|e| panic!("group starting {} refused: {e}", group[0].key));
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, AppendOutcome::Appended { .. })),
            "group starting {} had duplicates: {outcomes:?}",
            group[0].key
        );
    }
}

/// The same event under another idempotency key.
pub fn rekey(mut event: LedgerEvent, key: &str) -> LedgerEvent {
    event.key = IdemKey::new(key).expect("test key");
    event
}

/// `event` must be refused by the rules; returns why.
pub fn refusal<S: LedgerStore>(store: &mut S, event: &LedgerEvent) -> TransitionError {
    let before = store.state().clone();
    let head = store.head();
    match store.append(event) {
        Err(LedgerError::Refused { source, .. }) => {
            assert_eq!(store.state(), &before, "a refused event changed the state");
            assert_eq!(store.head(), head, "a refused event moved the head");
            source
        }
        other => panic!("expected {} to be refused, got {other:?}", event.key),
    }
}

pub fn appends_get_consecutive_seqs_and_the_head_follows<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    assert_eq!(store.head(), (0, GENESIS));
    assert_eq!(
        store.append(&received("a")).unwrap(),
        AppendOutcome::Appended { seq: 1 }
    );
    let outcomes = store.append_group(&[quote("a"), pay("a")]).unwrap();
    assert_eq!(
        outcomes,
        vec![
            AppendOutcome::Appended { seq: 2 },
            AppendOutcome::Appended { seq: 3 }
        ]
    );
    let (seq, hash) = store.head();
    assert_eq!(seq, 3);
    assert_eq!(store.event(3).unwrap().unwrap().hash, hash);
    let store = reopen(&mut h, store, r);
    assert_eq!(store.head(), (seq, hash));
}

pub fn the_hash_chain_links_every_event<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    let mut prev = GENESIS;
    let mut seen = std::collections::HashSet::new();
    for seq in 1..=store.head().0 {
        let e = store
            .event(seq)
            .unwrap()
            .expect("every seq up to the head is stored");
        assert_eq!(e.seq, seq);
        assert_eq!(
            e.prev_hash, prev,
            "event {seq} does not link to the one before"
        );
        assert!(seen.insert(e.hash), "event {seq} repeats a hash");
        prev = e.hash;
    }
    assert_eq!(store.head().1, prev);
}

pub fn an_event_reads_back_by_seq_as_appended<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    let groups = mixed_history();
    append_all(&mut store, &groups);
    let events: Vec<&LedgerEvent> = groups.iter().flatten().collect();
    for (i, event) in events.iter().enumerate() {
        let stored = store.event(i as u64 + 1).unwrap().unwrap();
        assert_eq!(&&stored.event, event);
    }
    assert!(store.event(0).unwrap().is_none());
    assert!(store.event(events.len() as u64 + 1).unwrap().is_none());
}

pub fn a_repeated_key_is_a_no_op_returning_the_first_seq<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &[paid_job("a")]);
    let before = store.state().clone();
    assert_eq!(
        store.append(&pay("a")).unwrap(),
        AppendOutcome::Duplicate { seq: 3 }
    );
    assert_eq!(store.head().0, 6);
    assert_eq!(store.state(), &before);
    // After a restart the key is still known, although the job ended long ago.
    let mut store = reopen(&mut h, store, r);
    let outcomes = store.append_group(&[pay("a"), received("b")]).unwrap();
    assert_eq!(
        outcomes,
        vec![
            AppendOutcome::Duplicate { seq: 3 },
            AppendOutcome::Appended { seq: 7 }
        ]
    );
    assert_eq!(store.seq_of_key(&pay("a").key).unwrap(), Some(3));
    assert_eq!(store.same_as_first(&pay("a")).unwrap(), Some(true));
    assert_eq!(store.same_as_first(&received("zz")).unwrap(), None);
}

pub fn a_repeated_key_with_another_body_is_told_apart<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &[paid_job("a")]);
    let impostor = rekey(received("b"), "recv:a");
    assert_eq!(
        store.append(&impostor).unwrap(),
        AppendOutcome::Duplicate { seq: 1 }
    );
    assert_eq!(store.same_as_first(&impostor).unwrap(), Some(false));
    assert!(store.job(&job("b")).unwrap().is_none());
}

pub fn a_key_repeated_inside_a_group_is_refused<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    let group = [received("a"), rekey(received("b"), "recv:a")];
    match store.append_group(&group) {
        Err(LedgerError::KeyRepeatedInGroup(k)) => assert_eq!(k.as_str(), "recv:a"),
        other => panic!("expected KeyRepeatedInGroup, got {other:?}"),
    }
    assert_eq!(store.head().0, 0);
    assert!(store.job(&job("a")).unwrap().is_none());
}

pub fn a_payment_reference_credits_once<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(
        &mut store,
        &[running_job("a"), vec![received("b"), quote("b")]],
    );
    let replay = pay_in(
        "hash-a",
        "b",
        Asset::Lightning,
        JobPayment::Apply { excess: None },
    );
    let replay = rekey(replay, "pay:other-relay");
    assert!(matches!(
        refusal(&mut store, &replay),
        TransitionError::DuplicatePaymentRef(_)
    ));
    assert_eq!(store.payment_ref_seq(&pref("hash-a")).unwrap(), Some(3));
    assert_eq!(store.payment_ref_seq(&pref("hash-b")).unwrap(), None);
}

pub fn a_payment_reference_of_an_ended_job_credits_once_after_reopen<H: Harness>(
    make: Make<H>,
    r: Retention,
) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(
        &mut store,
        &[paid_job("a"), vec![received("b"), quote("b")]],
    );
    let mut store = reopen(&mut h, store, r);
    let replay = rekey(
        pay_in(
            "hash-a",
            "b",
            Asset::Lightning,
            JobPayment::Apply { excess: None },
        ),
        "pay:later",
    );
    assert!(matches!(
        refusal(&mut store, &replay),
        TransitionError::DuplicatePaymentRef(_)
    ));
    assert_eq!(store.payment_ref_seq(&pref("hash-a")).unwrap(), Some(3));
    assert_eq!(
        store.job(&job("b")).unwrap().unwrap().state,
        JobState::Quoted
    );
}

pub fn a_refused_group_changes_nothing<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    store.append(&received("a")).unwrap();
    let before = store.state().clone();
    // Publishing a result for an unpaid job is refused; the quote before it is undone too.
    match store.append_group(&[quote("a"), published("a")]) {
        Err(LedgerError::Refused { index: 1, .. }) => {}
        other => panic!("expected the second event refused, got {other:?}"),
    }
    assert_eq!(store.state(), &before);
    assert_eq!(store.head().0, 1);
    assert!(store.event(2).unwrap().is_none());
    assert!(store.seq_of_key(&quote("a").key).unwrap().is_none());
    let store = reopen(&mut h, store, r);
    assert_eq!(
        store.job(&job("a")).unwrap().unwrap().state,
        JobState::Received
    );
}

pub fn batch_groups_are_accepted_or_refused_on_their_own<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    let a = paid_job("a");
    let bad = vec![received("b"), published("b")];
    let c = paid_job("c");
    let results = store.append_batch(&[&a, &bad, &c]).unwrap();
    assert!(results[0].is_ok());
    assert!(matches!(
        results[1],
        Err(LedgerError::Refused { index: 1, .. })
    ));
    assert_eq!(
        results[2].as_ref().unwrap()[0],
        AppendOutcome::Appended { seq: 7 }
    );
    assert_eq!(store.head().0, 12);
    let store = reopen(&mut h, store, r);
    assert!(store.job(&job("b")).unwrap().is_none());
    assert_eq!(
        store.job(&job("c")).unwrap().unwrap().state,
        JobState::Succeeded
    );
}

pub fn staged_groups_are_seen_at_once_and_written_by_flush<H: Harness>(
    make: Make<H>,
    r: Retention,
) {
    let mut h = make();
    let mut store = open(&mut h, r);
    store.append(&received("a")).unwrap();
    store.stage(&[quote("a")]).unwrap();
    assert_eq!(
        store.state().job(&job("a")).unwrap().state,
        JobState::Quoted
    );
    // The next decision sees the staged quote.
    store.stage(&[pay("a")]).unwrap();
    assert_eq!(store.state().job(&job("a")).unwrap().state, JobState::Paid);
    assert_eq!(store.staged_groups(), 2);
    assert_eq!(store.head().0, 1);
    assert!(store.event(2).unwrap().is_none());
    assert_eq!(store.flush().unwrap(), 2);
    assert_eq!(store.staged_groups(), 0);
    assert_eq!(store.head().0, 3);
    assert_eq!(store.event(3).unwrap().unwrap().event, pay("a"));
    let store = reopen(&mut h, store, r);
    assert_eq!(store.job(&job("a")).unwrap().unwrap().state, JobState::Paid);
}

pub fn an_append_after_staging_writes_the_staged_groups_first<H: Harness>(
    make: Make<H>,
    r: Retention,
) {
    let mut h = make();
    let mut store = open(&mut h, r);
    store.stage(&[received("a")]).unwrap();
    assert_eq!(
        store.append(&quote("a")).unwrap(),
        AppendOutcome::Appended { seq: 2 }
    );
    assert_eq!(store.staged_groups(), 0);
    assert_eq!(store.event(1).unwrap().unwrap().event, received("a"));
    assert_eq!(store.head().0, 2);
}

pub fn a_failed_flush_undoes_every_staged_group<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(
        &mut store,
        &[paid_job("z"), vec![received("a"), received("b")]],
    );
    let before = store.state().clone();
    let head = store.head();
    store.stage(&[quote("a")]).unwrap();
    store.stage(&[quote("b")]).unwrap();
    h.break_writes();
    assert!(store.flush().is_err(), "the flush must report the failure");
    assert_eq!(store.state(), &before, "a failed flush left staged changes");
    assert_eq!(store.staged_groups(), 0);
    assert_eq!(store.head(), head);
    h.heal_writes();
    // The keys of the undone groups are free again.
    assert_eq!(
        store.append(&quote("b")).unwrap(),
        AppendOutcome::Appended { seq: head.0 + 1 }
    );
    let store = reopen(&mut h, store, r);
    assert_eq!(
        store.job(&job("a")).unwrap().unwrap().state,
        JobState::Received
    );
    assert_eq!(
        store.job(&job("b")).unwrap().unwrap().state,
        JobState::Quoted
    );
}

pub fn a_failed_append_changes_neither_memory_nor_disk<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &[paid_job("a"), vec![received("b")]]);
    let before = store.state().clone();
    let head = store.head();
    h.break_writes();
    match store.append_group(&paid_job("c")) {
        Err(LedgerError::Refused { .. }) | Ok(_) => panic!("the write must fail"),
        Err(_) => {}
    }
    assert_eq!(store.state(), &before);
    assert_eq!(store.head(), head);
    h.heal_writes();
    let store = reopen(&mut h, store, r);
    assert_eq!(store.head(), head);
    assert_eq!(store.state(), &before);
}

pub fn close_drops_staged_groups<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    store.append(&received("a")).unwrap();
    store.stage(&[quote("a")]).unwrap();
    let store = reopen(&mut h, store, r);
    assert_eq!(store.head().0, 1);
    assert_eq!(
        store.job(&job("a")).unwrap().unwrap().state,
        JobState::Received
    );
}

pub fn reopen_after_close_gives_the_same_state_and_head<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    let state = store.state().clone();
    let head = store.head();
    let store = reopen(&mut h, store, r);
    assert_eq!(store.head(), head);
    assert_eq!(store.state(), &state);
    // And once more, from what the first reopen left behind.
    let store = reopen(&mut h, store, r);
    assert_eq!(store.state(), &state);
}

pub fn ended_records_are_still_answered<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    for pass in 0..2 {
        let a = store
            .job(&job("a"))
            .unwrap()
            .expect("an ended job is answered");
        assert_eq!(a.state, JobState::Succeeded, "pass {pass}");
        let c = store.refund(&rid("c:r")).unwrap().expect("a closed refund");
        assert_eq!(c.state, RefundState::Settled);
        let x = store.effect(&eid("x")).unwrap().expect("a done effect");
        assert!(x.outcome.is_some());
        assert_eq!(store.payment_ref_seq(&pref("hash-a")).unwrap(), Some(3));
        assert!(store.job(&job("nobody")).unwrap().is_none());
        assert!(store.refund(&rid("nothing")).unwrap().is_none());
        assert!(store.effect(&eid("nothing")).unwrap().is_none());
        store = reopen(&mut h, store, r);
    }
}

/// A caller about to decide on records that may have ended recalls them: `state()` then holds
/// them as a full history would (a refund with its job, a credited payment reference), and they
/// leave memory again with the next write.
pub fn recalled_records_are_in_state_until_the_next_write<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    let names = Recall {
        jobs: vec![job("a"), job("nobody")],
        refunds: vec![rid("c:r")],
        effects: vec![eid("x")],
        refs: vec![pref("hash-a"), pref("never-paid")],
    };
    store.recall(&names).unwrap();
    let state = store.state();
    assert_eq!(
        state.job(&job("a")),
        store.job(&job("a")).unwrap().as_ref(),
        "the ended job is back as stored"
    );
    assert!(state.job(&job("nobody")).is_none());
    assert_eq!(
        state.refund(&rid("c:r")).unwrap().state,
        RefundState::Settled
    );
    assert!(
        state.job(&job("c")).is_some(),
        "a recalled refund brings its job"
    );
    assert!(state.effect(&eid("x")).unwrap().outcome.is_some());
    assert_eq!(state.payment_ref_seq(&pref("hash-a")), Some(3));
    assert_eq!(state.payment_ref_seq(&pref("never-paid")), None);
    append_all(&mut store, &[vec![received("g")]]);
    if r == Retention::OpenWork {
        assert!(
            store.state().holds_only_open_work(),
            "recalled records left again"
        );
    }
    assert!(store.state().job(&job("g")).is_some());
}

pub fn a_job_id_is_never_reused<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &[paid_job("a")]);
    let mut store = reopen(&mut h, store, r);
    assert!(matches!(
        refusal(&mut store, &rekey(received("a"), "recv:again")),
        TransitionError::JobExists(_)
    ));
}

pub fn an_effect_ends_once_and_its_id_is_never_reused<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(
        &mut store,
        &[vec![effect_requested("x", None), effect_done("x")]],
    );
    let mut store = reopen(&mut h, store, r);
    assert!(matches!(
        refusal(&mut store, &rekey(effect_done("x"), "effect-done:again")),
        TransitionError::EffectAlreadyDone(_)
    ));
    assert!(matches!(
        refusal(
            &mut store,
            &rekey(effect_requested("x", None), "effect:again")
        ),
        TransitionError::EffectExists(_)
    ));
    assert!(matches!(
        refusal(&mut store, &effect_done("never-requested")),
        TransitionError::UnknownEffect(_)
    ));
}

pub fn a_late_payment_for_an_ended_job_is_booked_against_it<H: Harness>(
    make: Make<H>,
    r: Retention,
) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &[paid_job("a")]);
    let mut store = reopen(&mut h, store, r);
    let apply = pay_in(
        "late-a",
        "a",
        Asset::Lightning,
        JobPayment::Apply { excess: None },
    );
    refusal(&mut store, &apply);
    store.append(&late_payment_refunded("a")).unwrap();
    let refund = store.refund(&rid("a:late")).unwrap().unwrap();
    assert_eq!(
        (refund.state, refund.amount.as_msat()),
        (RefundState::Due, PRICE)
    );
    let a = store.job(&job("a")).unwrap().unwrap();
    assert_eq!(a.state, JobState::Succeeded);
    assert_eq!(a.funded_total.as_msat(), 2 * PRICE);
    store.verify().unwrap();
    let store = reopen(&mut h, store, r);
    assert_eq!(store.job(&job("a")).unwrap().unwrap(), a);
}

pub fn history_queries_cover_every_written_job<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    store.stage(&[received("staged")]).unwrap();
    let counts = store.job_counts().unwrap();
    let count = |s: JobState| counts.iter().find(|(x, _)| *x == s).map_or(0, |(_, n)| *n);
    assert_eq!(count(JobState::Succeeded), 2);
    assert_eq!(count(JobState::Refunded), 1);
    assert_eq!(count(JobState::RefundPending), 1);
    assert_eq!(count(JobState::Processing), 1);
    assert_eq!(count(JobState::Quoted), 1);
    assert_eq!(
        count(JobState::Received),
        0,
        "staged groups are not counted"
    );
    assert!(counts.iter().all(|(_, n)| *n > 0));
    let succeeded = store.jobs_by_state(JobState::Succeeded).unwrap();
    let ids: Vec<&str> = succeeded.iter().map(|j| j.job.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    let refunds = store.refund_counts().unwrap();
    assert!(refunds.contains(&(RefundState::Settled, 1)));
    assert!(refunds.contains(&(RefundState::Unknown, 1)));
}

pub fn stored_request_and_quoted_invoices_come_from_written_groups<H: Harness>(
    make: Make<H>,
    r: Retention,
) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    assert_eq!(
        store.stored_request(&job("a")).unwrap(),
        Some(request_of("a"))
    );
    assert_eq!(store.stored_request(&job("nobody")).unwrap(), None);
    store.stage(&[received("g")]).unwrap();
    assert_eq!(store.stored_request(&job("g")).unwrap(), None);
    store.flush().unwrap();
    assert_eq!(
        store.stored_request(&job("g")).unwrap(),
        Some(request_of("g"))
    );
    store.append_group(&[subscription_quote("s")]).unwrap();
    let quoted = store.quoted_invoices().unwrap();
    let quoted: Vec<(String, &str)> = quoted
        .iter()
        .map(|q| {
            let owner = match &q.quoted_for {
                InvoiceFor::Job(j) => format!("job {j}"),
                InvoiceFor::Subscription(s) => format!("subscription {s}"),
            };
            (owner, q.payment_hash.as_str())
        })
        .collect();
    let expected: Vec<(String, &str)> = [
        ("job a", "hash-a"),
        ("job b", "hash-b"),
        ("job c", "hash-c"),
        ("job d", "hash-d"),
        ("job e", "hash-e"),
        ("job f", "hash-f"),
        ("subscription s", "hash-sub-s"),
    ]
    .into_iter()
    .map(|(owner, hash)| (owner.to_owned(), hash))
    .collect();
    assert_eq!(quoted, expected);
}

pub fn audit_finds_a_trail_by_every_kind_of_reference<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    let references = [
        "c",            // job id
        "req-c",        // request event
        "hash-c",       // payment hash (quote) and payment reference
        "lnbcrt-c",     // bolt11
        "c:r",          // refund id
        "lookup-c:r-1", // refund lookup handle
    ];
    for reference in references {
        let trail = store.audit(reference).unwrap().expect(reference);
        assert_eq!(trail.job.as_ref().unwrap().job.as_str(), "c", "{reference}");
        assert_eq!(trail.events.len(), 9, "{reference}");
        assert_eq!(trail.refunds.len(), 1, "{reference}");
    }
    let a = store.audit("res-a").unwrap().expect("result event");
    assert_eq!(a.job.unwrap().state, JobState::Succeeded);
    assert!(store.audit("nothing-like-this").unwrap().is_none());
}

/// What the node told a subscriber (receipts, period quotes, notices) is on the subscription's
/// trail with each notice's outcome; a notice about a 7001 we refused (no subscription record)
/// is found by the 7001's id; a notice about something else is on neither.
pub fn a_subscriptions_audit_lists_the_notices_sent_about_it<H: Harness>(
    make: Make<H>,
    r: Retention,
) {
    let mut h = make();
    let mut store = open(&mut h, r);
    store.append_group(&[subscription_quote("s")]).unwrap();
    store
        .append_group(&[subscription_notice("receipt-1", "s")])
        .unwrap();
    store
        .append_group(&[effect_requested("unrelated", None)])
        .unwrap();
    store
        .append_group(&[subscription_notice("refusal", "refused-7001")])
        .unwrap();
    store.append_group(&[effect_done("receipt-1")]).unwrap();
    let trail = store.audit("s").unwrap().expect("subscription trail");
    let types: Vec<&str> = trail.events.iter().map(|e| e.event.type_name()).collect();
    assert_eq!(
        types,
        ["subscription_quoted", "effect_requested", "effect_done"],
        "the receipt and its delivery are on the subscription's trail, nothing else"
    );
    let refused = store.audit("refused-7001").unwrap().expect("refusal trail");
    assert_eq!(refused.events.len(), 1);
    assert!(refused.job.is_none());
}

pub fn export_round_trips_to_the_same_chain<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    let mut out = Vec::new();
    assert_eq!(store.export(&mut out).unwrap(), store.head().0);
    let mut copy_h = make();
    let mut copy = open(&mut copy_h, r);
    for (i, line) in String::from_utf8(out).unwrap().lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let seq = v["seq"].as_u64().unwrap();
        assert_eq!(seq, i as u64 + 1);
        let stored = store.event(seq).unwrap().unwrap();
        assert_eq!(v["hash"].as_str().unwrap(), hex::encode(stored.hash));
        let event = LedgerEvent {
            key: IdemKey::new(v["key"].as_str().unwrap()).unwrap(),
            at: crate::ids::UnixMs(v["at"].as_u64().unwrap()),
            body: serde_json::from_value(v["body"].clone()).unwrap(),
        };
        assert_eq!(event, stored.event);
        copy.append(&event).unwrap();
    }
    assert_eq!(copy.head(), store.head());
    assert_eq!(copy.state(), store.state());
}

pub fn verify_passes_a_clean_history<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    let empty = store.verify().unwrap();
    assert_eq!(empty.events, 0);
    append_all(&mut store, &mixed_history());
    let report = store.verify().unwrap();
    assert_eq!(report.events, store.head().0);
    assert_eq!(report.jobs, 6);
    assert_eq!(report.head_hash, hex::encode(store.head().1));
}

pub fn verify_names_a_tampered_event<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    store.verify().unwrap();
    h.tamper_event(3);
    match store.verify() {
        Err(VerifyFailure::Event { seq: 3, .. }) => {}
        other => panic!("expected event 3 to be flagged, got {other:?}"),
    }
}

pub fn resident_balances_agree_with_the_stored_ones<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    let stored = store.account_balances().unwrap();
    for (account, balance) in store.state().balances() {
        let on_disk = stored.iter().find(|(a, _)| a == account);
        assert_eq!(on_disk.map(|(_, b)| b), Some(balance), "{account}");
    }
    // Double entry: every debit has its credit.
    let debits: u128 = stored.iter().map(|(_, b)| b.debits.as_msat() as u128).sum();
    let credits: u128 = stored
        .iter()
        .map(|(_, b)| b.credits.as_msat() as u128)
        .sum();
    assert_eq!(debits, credits);
    let revenue = stored.iter().find(|(a, _)| *a == Account::Revenue).unwrap();
    assert_eq!(revenue.1.credits.as_msat(), 2 * PRICE);
}

pub fn state_is_the_projection_of_the_written_history<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    let projected = store.projected_state().unwrap();
    assert_eq!(projected.jobs().count(), 6);
    assert_eq!(store.state().open_work(), projected.open_work());
    if r == Retention::Everything {
        assert_eq!(store.state().jobs().count(), 6);
    }
}

pub fn a_refund_is_paid_from_the_asset_the_rules_name<H: Harness>(make: Make<H>, r: Retention) {
    let mut h = make();
    let mut store = open(&mut h, r);
    let ecash = pay_in("token-m", "m", mint(), JobPayment::Apply { excess: None });
    append_all(
        &mut store,
        &[vec![
            received("m"),
            quote("m"),
            ecash,
            queued("m"),
            started("m"),
            failed("m"),
        ]],
    );
    let mut store = reopen(&mut h, store, r);
    assert!(matches!(
        refusal(&mut store, &refund_due("m", Some(Asset::Lightning))),
        TransitionError::RefundAssetMismatch { .. }
    ));
    store.append(&refund_due("m", Some(mint()))).unwrap();
    let refund = store.refund(&rid("m:r")).unwrap().unwrap();
    assert_eq!(
        (refund.state, refund.amount.as_msat()),
        (RefundState::Due, PRICE)
    );
    assert_eq!(
        store.job(&job("m")).unwrap().unwrap().state,
        JobState::RefundDue
    );
}

pub fn a_refund_whose_outcome_is_unknown_is_never_started_again<H: Harness>(
    make: Make<H>,
    r: Retention,
) {
    let mut h = make();
    let mut store = open(&mut h, r);
    append_all(&mut store, &mixed_history());
    let mut store = reopen(&mut h, store, r);
    refusal(&mut store, &refund_started("d:r", 2));
    let d = store.refund(&rid("d:r")).unwrap().unwrap();
    assert_eq!(d.state, RefundState::Unknown);
    assert_eq!(
        store.job(&job("d")).unwrap().unwrap().state,
        JobState::RefundPending
    );
    // Only a look-up answer moves it on.
    store.append(&refund_settled("d:r")).unwrap();
    let store = reopen(&mut h, store, r);
    assert_eq!(
        store.job(&job("d")).unwrap().unwrap().state,
        JobState::Refunded
    );
}
