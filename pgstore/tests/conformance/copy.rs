//! `copy_log` between the two stores: SQLite → PostgreSQL → SQLite gives the same chain, the
//! same state, and both ends verify; a non-empty destination is refused.

use paydvm_ledger::conformance::{mixed_history, paid_job, received};
use paydvm_ledger::copy::{copy_log, CopyError};
use paydvm_ledger::store::Store;
use paydvm_ledger::{Durability, LedgerStore, StoreOptions};
use paydvm_ledger_pg::PgStore;

use super::PgDatabase;

#[test]
fn sqlite_to_postgres_and_back_is_the_same_history() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::everything(Durability::Normal);
    let mut sqlite = Store::open_with(dir.path().join("a.db"), &options).unwrap();
    for group in mixed_history() {
        sqlite.append_group(&group).unwrap();
    }
    let db = PgDatabase::new();
    let mut pg = PgStore::open(&db.url(), &options).unwrap();
    assert_eq!(copy_log(&sqlite, &mut pg).unwrap(), sqlite.head().0);
    assert_eq!(pg.head(), sqlite.head());
    assert_eq!(pg.state(), sqlite.state());
    assert_eq!(
        pg.verify().unwrap().head_hash,
        sqlite.verify().unwrap().head_hash
    );
    let mut back = Store::open_with(dir.path().join("b.db"), &options).unwrap();
    copy_log(&pg, &mut back).unwrap();
    assert_eq!(back.head(), sqlite.head());
    assert_eq!(back.state(), sqlite.state());
    back.verify().unwrap();
    // Into a store that already has a history: refused, nothing written.
    let head = pg.head();
    let mut other = Store::open_with(dir.path().join("c.db"), &options).unwrap();
    other.append(&received("zz")).unwrap();
    assert!(matches!(
        copy_log(&other, &mut pg),
        Err(CopyError::NotEmpty(_))
    ));
    assert_eq!(pg.head(), head);
}

/// A PostgreSQL ledger of `jobs` paid jobs (6 events each), written in batches.
fn pg_with_jobs(db: &PgDatabase, jobs: usize) -> PgStore {
    let mut pg = PgStore::open(&db.url(), &StoreOptions::bounded(Durability::Normal)).unwrap();
    let groups: Vec<Vec<_>> = (0..jobs).map(|i| paid_job(&format!("j{i}"))).collect();
    for chunk in groups.chunks(200) {
        let refs: Vec<&[_]> = chunk.iter().map(|g| g.as_slice()).collect();
        for result in pg.append_batch(&refs).unwrap() {
            result.unwrap();
        }
    }
    pg
}

#[test]
fn copying_from_postgres_reads_chunks_in_order() {
    let db = PgDatabase::new();
    let pg = pg_with_jobs(&db, 600);
    let (last, _) = pg.head();
    assert!(last > 2_000, "more than two chunks of 1 000: {last} events");
    // The store's chunks: in seq order, contiguous, each at most `limit` long.
    let mut after = 0;
    let mut chunks = 0;
    loop {
        let chunk = pg.events_after(after, 1_000).unwrap();
        if chunk.is_empty() {
            break;
        }
        assert!(chunk.len() <= 1_000);
        for (i, e) in chunk.iter().enumerate() {
            assert_eq!(e.seq, after + 1 + i as u64, "chunk after {after}");
            assert_eq!(e, &pg.event(e.seq).unwrap().unwrap());
        }
        after = chunk.last().unwrap().seq;
        chunks += 1;
    }
    assert_eq!((after, chunks), (last, last.div_ceil(1_000)));
    // The copy reads them: the same chain on the other side.
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::everything(Durability::Normal);
    let mut back = Store::open_with(dir.path().join("b.db"), &options).unwrap();
    assert_eq!(copy_log(&pg, &mut back).unwrap(), last);
    assert_eq!(back.head(), pg.head());
    back.verify().unwrap();
}

#[test]
fn a_gap_in_the_source_stops_the_copy() {
    let db = PgDatabase::new();
    let pg = pg_with_jobs(&db, 400);
    assert!(pg.head().0 > 1_500);
    // Event 1 500 vanishes (in the second chunk), as a damaged database would lose it.
    db.sql(
        "DELETE FROM refs WHERE seq = 1500; DELETE FROM postings WHERE seq = 1500; \
            DELETE FROM payments WHERE seq = 1500; DELETE FROM events WHERE seq = 1500",
    );
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::everything(Durability::Normal);
    let mut back = Store::open_with(dir.path().join("b.db"), &options).unwrap();
    let err = copy_log(&pg, &mut back).unwrap_err();
    assert!(matches!(err, CopyError::Missing(1_500)), "{err}");
    assert!(err.to_string().contains("1500"), "{err}");
    // Nothing past the gap was copied.
    assert_eq!(back.head().0, 1_000);
}
