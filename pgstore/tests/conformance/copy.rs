//! `copy_log` between the two stores: SQLite → PostgreSQL → SQLite gives the same chain, the
//! same state, and both ends verify; a non-empty destination is refused.

use paydvm_ledger::conformance::{mixed_history, received};
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
