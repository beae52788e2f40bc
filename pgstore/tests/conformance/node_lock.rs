//! The node lock (`NodeLock`): one holder per database, a standby takes it once the holder
//! lets go, and a holder whose session the server ends learns that it lost it.

use std::time::Duration;

use paydvm_ledger_pg::throwaway::ThrowawayCluster as Cluster;
use paydvm_ledger_pg::{NodeLock, NodeLockError, PgLocation, CONNECT_TIMEOUT, NODE_LOCK_KEY};

fn location(db: &str) -> PgLocation {
    PgLocation::parse(&Cluster::shared().url(db)).unwrap()
}

#[test]
fn a_second_holder_is_refused_until_the_first_lets_go() {
    let db = Cluster::shared().fresh_database().unwrap();
    let first = NodeLock::acquire(&location(&db)).unwrap();
    let refused = NodeLock::acquire(&location(&db)).err().expect("held");
    assert!(matches!(refused, NodeLockError::Held(_)), "{refused}");
    assert!(refused.to_string().contains("--standby"), "{refused}");
    drop(first);
    NodeLock::acquire(&location(&db)).expect("free once the first dropped it");
}

/// The server ends the holder's session (as when it restarts or an operator terminates the
/// backend): the probe notices, `lost()` resolves, and another node can take the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_whose_session_the_server_ended_is_reported_lost() {
    let db = tokio::task::spawn_blocking(|| Cluster::shared().fresh_database().unwrap())
        .await
        .unwrap();
    let lock = NodeLock::acquire(&location(&db)).unwrap();
    let lost = lock.lost();
    let still = tokio::time::timeout(Duration::from_secs(3), lock.lost()).await;
    assert!(still.is_err(), "a held lock is not reported lost");
    assert!(lock.held());
    let terminate = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
         AND ((classid::bigint << 32) | objid::bigint) = {NODE_LOCK_KEY}"
    );
    let db2 = db.clone();
    let ended = tokio::task::spawn_blocking(move || Cluster::shared().admin(&db2, &terminate))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.len(), 1, "the holder's session was found");
    tokio::time::timeout(Duration::from_secs(15), lost)
        .await
        .expect("the loss is noticed");
    assert!(!lock.held());
    let db3 = db.clone();
    tokio::task::spawn_blocking(move || NodeLock::acquire(&location(&db3)))
        .await
        .unwrap()
        .expect("another node takes the lock");
}

/// A server that takes the connection and never answers (or a host that drops packets) does not
/// hold the lock attempt: it gives up after `CONNECT_TIMEOUT` with an error a standby waits out.
#[test]
fn a_server_that_never_answers_times_out_as_unreachable() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/paydvm",
        silent.local_addr().unwrap().port()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(NodeLock::acquire(&PgLocation::parse(&url).unwrap()).err());
    });
    let failed = rx
        .recv_timeout(CONNECT_TIMEOUT * 4)
        .expect("the attempt gave up")
        .expect("no lock from a silent server");
    assert!(matches!(failed, NodeLockError::Timeout { .. }), "{failed}");
    assert!(failed.unreachable(), "{failed}");
    drop(silent);
}
