//! Two stores open on one location, each writing in turn: after [`LedgerStore::follow`] a store
//! holds what the other wrote as if it had written it itself (several nodes on one database).

use super::builders::*;
use super::contracts::{append_all, open, reopen, Make};
use super::Harness;
use crate::engine::AppendOutcome;
use crate::error::LedgerError;
use crate::job::JobState;
use crate::ledger_store::{LedgerStore, Retention};
use crate::refund::RefundState;
use crate::store::replay::Followed;

/// The two stores agree: the same head, the same open work, the same answer for `jobs`.
fn agree<S: LedgerStore>(a: &S, b: &S, jobs: &[&str]) {
    assert_eq!(a.head(), b.head());
    assert_eq!(a.state().open_work(), b.state().open_work());
    for j in jobs {
        assert_eq!(a.job(&job(j)).unwrap(), b.job(&job(j)).unwrap(), "job {j}");
    }
}

pub fn a_store_follows_what_another_store_on_its_location_wrote<H: Harness>(
    make: Make<H>,
    r: Retention,
) {
    let mut h = make();
    let mut a = open(&mut h, r);
    let mut b = open(&mut h, r);
    assert_eq!(b.follow().unwrap(), Followed::Applied { events: 0 });

    // `a` takes a request; `b` follows, then carries the same job on.
    append_all(&mut a, &[vec![received("x"), quote("x")]]);
    assert_eq!(b.follow().unwrap().events(), 2);
    agree(&a, &b, &["x"]);
    append_all(&mut b, &[vec![pay("x"), queued("x"), started("x")]]);
    assert_eq!(a.follow().unwrap(), Followed::Applied { events: 3 });
    assert_eq!(
        a.job(&job("x")).unwrap().unwrap().state,
        JobState::Processing
    );

    // `a` runs a whole job and ends `x`; `b` follows both.
    append_all(&mut a, &[paid_job("y"), vec![published("x")]]);
    assert_eq!(b.follow().unwrap().events(), 7);
    agree(&a, &b, &["x", "y"]);
    assert_eq!(
        b.state().open_work(),
        b.projected_state().unwrap().open_work()
    );
    // What `a` wrote is known to `b`: its keys repeat as no-ops, its payments credit nothing.
    let outcome = b.append(&pay("y")).unwrap();
    assert!(
        matches!(outcome, AppendOutcome::Duplicate { .. }),
        "{outcome:?}"
    );
    append_all(&mut b, &[vec![received("z")]]);
    assert_eq!(a.follow().unwrap().events(), 1);
    agree(&a, &b, &["x", "y", "z"]);
    b.verify().unwrap();

    let head = a.head();
    b.close().unwrap();
    let b = reopen(&mut h, a, r);
    assert_eq!(b.head(), head);
}

/// In open work a store no longer holds an ended job; the other store's late payment for it
/// changes it, so the follower cannot replay that payment on its own copy and loads its state
/// afresh. A store holding everything replays it.
pub fn following_a_change_to_a_record_that_left_memory_loads_afresh<H: Harness>(
    make: Make<H>,
    r: Retention,
) {
    let mut h = make();
    let mut a = open(&mut h, r);
    append_all(&mut a, &[paid_job("a")]);
    let mut b = open(&mut h, r);
    append_all(&mut a, &[vec![late_payment_refunded("a")]]);
    let followed = b.follow().unwrap();
    match r {
        Retention::OpenWork => assert!(
            matches!(&followed, Followed::Reloaded { events: 1, reason } if reason.contains("job a")),
            "{followed:?}"
        ),
        Retention::Everything => assert_eq!(followed, Followed::Applied { events: 1 }),
    }
    agree(&a, &b, &["a"]);
    let refund = b.refund(&rid("a:late")).unwrap().unwrap();
    assert_eq!(
        (refund.state, refund.amount.as_msat()),
        (RefundState::Due, PRICE)
    );
    assert_eq!(
        b.job(&job("a")).unwrap().unwrap().funded_total.as_msat(),
        2 * PRICE
    );
    // The reloaded store writes on from the new head.
    append_all(&mut b, &[vec![received("after")]]);
    b.verify().unwrap();
}

/// A store whose flush failed because the other wrote first holds nothing of its own group:
/// it follows, and the same group then goes in on top (or is known already).
pub fn a_store_that_lost_the_race_follows_and_writes_again<H: Harness>(
    make: Make<H>,
    r: Retention,
) {
    let mut h = make();
    let mut a = open(&mut h, r);
    let mut b = open(&mut h, r);
    append_all(&mut a, &[vec![received("x")]]);
    b.stage(&[received("w")]).unwrap();
    assert!(matches!(b.follow(), Err(LedgerError::Staged(1))));
    assert!(b.flush().is_err(), "the head moved under b");
    assert!(b.state().job(&job("w")).is_none(), "undone in memory");
    assert_eq!(b.follow().unwrap().events(), 1);
    append_all(&mut b, &[vec![received("w")]]);
    let outcome = b.append(&received("x")).unwrap();
    assert!(
        matches!(outcome, AppendOutcome::Duplicate { seq: 1 }),
        "{outcome:?}"
    );
    assert_eq!(a.follow().unwrap().events(), 1);
    agree(&a, &b, &["w", "x"]);
    a.verify().unwrap();
}
