//! The shared work queue (`WorkQueue`): two claimers never get one attempt, a lease that passed
//! lets another node claim it, and only the newest claim may renew or finish it.

use std::time::Duration;

use paydvm_ledger_pg::throwaway::ThrowawayCluster as Cluster;
use paydvm_ledger_pg::{PgLocation, Submission, WorkChannel, WorkQueue};

async fn queue() -> WorkQueue {
    queue_and_database().await.0
}

/// A queue on a fresh database, and the database's name.
async fn queue_and_database() -> (WorkQueue, String) {
    let db = tokio::task::spawn_blocking(|| Cluster::shared().fresh_database().unwrap())
        .await
        .unwrap();
    let location = PgLocation::parse(&Cluster::shared().url(&db)).unwrap();
    (WorkQueue::open(&location).await.unwrap(), db)
}

/// The server pids of the sessions of `db` whose last statement was a `LISTEN`.
async fn listening_sessions(db: &str) -> Vec<i32> {
    let sql =
        format!("SELECT pid FROM pg_stat_activity WHERE datname = '{db}' AND query LIKE 'LISTEN%'");
    let db = db.to_owned();
    tokio::task::spawn_blocking(move || Cluster::shared().admin(&db, &sql).unwrap())
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn attempt(job: &str, attempt: u32, kind: u16) -> Submission {
    Submission {
        job: job.into(),
        attempt,
        kind,
        task: format!("task of {job}"),
    }
}

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_claimers_get_different_attempts_of_the_kinds_they_ask_for() {
    let q = queue().await;
    for job in ["a", "b", "c"] {
        q.submit(&attempt(job, 1, 5050)).await.unwrap();
    }
    q.submit(&attempt("other-kind", 1, 5001)).await.unwrap();
    let (x, y) = tokio::join!(
        q.claim("node-x", &[5050], LONG),
        q.claim("node-y", &[5050], LONG)
    );
    let (x, y) = (x.unwrap().unwrap(), y.unwrap().unwrap());
    assert_ne!(x.job, y.job, "one attempt claimed twice");
    let third = q.claim("node-x", &[5050], LONG).await.unwrap().unwrap();
    assert!(![&x.job, &y.job].contains(&&third.job));
    assert_eq!(third.task, format!("task of {}", third.job));
    assert!(q.claim("node-y", &[5050], LONG).await.unwrap().is_none());
    let other = q
        .claim("node-y", &[5001, 5050], LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((other.job.as_str(), other.kind), ("other-kind", 5001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_passed_moves_the_attempt_and_fences_the_first_claimer() {
    let q = queue().await;
    q.submit(&attempt("job", 1, 5050)).await.unwrap();
    let short = Duration::from_millis(300);
    let first = q.claim("slow", &[5050], short).await.unwrap().unwrap();
    assert!(
        q.claim("other", &[5050], LONG).await.unwrap().is_none(),
        "leased"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = q.claim("other", &[5050], LONG).await.unwrap().unwrap();
    assert_eq!(
        (second.job.as_str(), second.claim),
        ("job", first.claim + 1)
    );
    // The first claimer was slow, not dead: it can neither keep nor finish the attempt.
    assert!(!q.renew(&first, LONG).await.unwrap());
    assert!(!q.finish(&first, "slow", "late").await.unwrap());
    assert!(q.renew(&second, LONG).await.unwrap());
    assert!(q.finish(&second, "other", "done").await.unwrap());
    assert!(
        !q.finish(&second, "other", "twice").await.unwrap(),
        "one outcome"
    );
    let finished = q.finished(&["job".into()]).await.unwrap();
    assert_eq!(finished.len(), 1);
    assert_eq!(
        (
            finished[0].outcome.as_str(),
            finished[0].finished_by.as_str()
        ),
        ("done", "other")
    );
    assert_eq!(q.remove_stale(LONG).await.unwrap(), 0, "stored just now");
    q.remove("job", 1).await.unwrap();
    assert_eq!(q.attempts().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_lease_holds_and_a_resubmitted_attempt_keeps_its_claim() {
    let q = queue().await;
    q.submit(&attempt("job", 1, 5050)).await.unwrap();
    let short = Duration::from_millis(400);
    let claim = q.claim("runner", &[5050], short).await.unwrap().unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(q.renew(&claim, short).await.unwrap());
        assert!(q.claim("thief", &[5050], LONG).await.unwrap().is_none());
    }
    // The serving node restarted and queues the same attempt again: the claim stands.
    q.submit(&attempt("job", 1, 5050)).await.unwrap();
    assert!(q.finish(&claim, "runner", "done").await.unwrap());
    // The next attempt replaces the ended one.
    q.submit(&attempt("job", 2, 5050)).await.unwrap();
    assert_eq!(q.attempts().await.unwrap(), 1);
    assert!(q.finished(&["job".into()]).await.unwrap().is_empty());
    assert_eq!(q.remove_stale(Duration::ZERO).await.unwrap(), 0);
}

/// A stopping node gives its claim up: the attempt is claimed again at once, long before its
/// lease would pass, and the claim given up can neither renew nor finish it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_claim_is_claimed_again_at_once_and_fenced() {
    let q = queue().await;
    q.submit(&attempt("job", 1, 5050)).await.unwrap();
    let first = q.claim("stopping", &[5050], LONG).await.unwrap().unwrap();
    let queued = q.wakeups(WorkChannel::Queued);
    let never = Duration::from_secs(3600);
    tokio::time::timeout(Duration::from_secs(20), queued.next(never))
        .await
        .expect("listening");
    assert!(q.release(&first).await.unwrap());
    tokio::time::timeout(Duration::from_secs(20), queued.next(never))
        .await
        .expect("the other nodes are woken when a claim is given up");
    assert!(!q.release(&first).await.unwrap(), "given up once");
    let second = q.claim("other", &[5050], LONG).await.unwrap().unwrap();
    assert_eq!(second.claim, first.claim + 1);
    assert!(!q.renew(&first, LONG).await.unwrap());
    assert!(!q.finish(&first, "stopping", "late").await.unwrap());
    assert!(!q.release(&first).await.unwrap());
    assert!(q.finish(&second, "other", "done").await.unwrap());
    assert!(
        !q.release(&second).await.unwrap(),
        "nothing to give up once finished"
    );
}

/// Nodes starting together all find (or make) the table: creating it is serialised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_opened_at_once_on_a_fresh_database_all_open() {
    for _ in 0..5 {
        let db = tokio::task::spawn_blocking(|| Cluster::shared().fresh_database().unwrap())
            .await
            .unwrap();
        let location = PgLocation::parse(&Cluster::shared().url(&db)).unwrap();
        let opened =
            futures_util::future::join_all((0..8).map(|_| WorkQueue::open(&location))).await;
        for queue in opened {
            queue.expect("opened");
        }
    }
}

/// Queuing an attempt and storing an outcome wake the listeners at once, not at their fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_hear_queued_attempts_and_stored_outcomes() {
    let q = queue().await;
    let (queued, stored) = (
        q.wakeups(WorkChannel::Queued),
        q.wakeups(WorkChannel::Finished),
    );
    // Each listener wakes once when it starts listening (nothing heard before counts).
    let never = Duration::from_secs(3600);
    for w in [&queued, &stored] {
        tokio::time::timeout(Duration::from_secs(20), w.next(never))
            .await
            .expect("listening");
    }
    q.submit(&attempt("job", 1, 5050)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), queued.next(never))
        .await
        .expect("a queued attempt is heard");
    let claim = q.claim("runner", &[5050], LONG).await.unwrap().unwrap();
    assert!(q.finish(&claim, "runner", "done").await.unwrap());
    tokio::time::timeout(Duration::from_secs(20), stored.next(never))
        .await
        .expect("a stored outcome is heard");
}

/// A listener whose connection the server ends (a restart, an operator's
/// `pg_terminate_backend`) listens again on a new one and hears what is queued after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_whose_connection_is_ended_listens_again() {
    let (q, db) = queue_and_database().await;
    let queued = q.wakeups(WorkChannel::Queued);
    let never = Duration::from_secs(3600);
    tokio::time::timeout(Duration::from_secs(20), queued.next(never))
        .await
        .expect("listening");
    let first = listening_sessions(&db).await;
    assert_eq!(first.len(), 1, "{first:?}");
    let end = format!("SELECT pg_terminate_backend({})", first[0]);
    let admin_db = db.clone();
    tokio::task::spawn_blocking(move || Cluster::shared().admin(&admin_db, &end).unwrap())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = listening_sessions(&db).await;
        if now.len() == 1 && now[0] != first[0] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never listened again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The wake-ups the reconnection gave (it cannot know what it missed) are spent first.
    while tokio::time::timeout(Duration::from_millis(300), queued.next(never))
        .await
        .is_ok()
    {}
    q.submit(&attempt("job", 1, 5050)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), queued.next(never))
        .await
        .expect("a queued attempt is heard on the new connection");
}
