//! The SQLite store against the store contract (`paydvm_ledger::conformance`), file-backed and
//! in memory, each in both retentions.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use paydvm_ledger::conformance::{Harness, SnapshotDamage};
use paydvm_ledger::snapshot::{self, Snapshot};
use paydvm_ledger::store::Store;
use paydvm_ledger::{LedgerError, LedgerStore, StoreOptions};
use rusqlite::{params, Connection};

/// Sabotage through a second connection to the same database, as another process would.
fn sabotage(conn: &Connection, what: Sabotage) {
    match what {
        Sabotage::Event(seq) => {
            let n = conn
                .execute(
                    "UPDATE events SET body = body || ' ' WHERE seq = ?1",
                    [seq as i64],
                )
                .unwrap();
            assert_eq!(n, 1, "no event {seq} to tamper with");
        }
        Sabotage::BreakWrites => conn
            .execute_batch(
                "CREATE TRIGGER conformance_fail BEFORE INSERT ON events \
                 BEGIN SELECT RAISE(ABORT, 'injected write failure'); END;",
            )
            .unwrap(),
        Sabotage::HealWrites => conn.execute_batch("DROP TRIGGER conformance_fail").unwrap(),
        Sabotage::Snapshot(damage) => damage_snapshot(conn, damage),
    }
}

#[derive(Clone, Copy)]
enum Sabotage {
    Event(u64),
    BreakWrites,
    HealWrites,
    Snapshot(SnapshotDamage),
}

fn damage_snapshot(conn: &Connection, damage: SnapshotDamage) {
    if damage == SnapshotDamage::Projections {
        conn.execute("UPDATE balances SET credits = credits + 1", [])
            .unwrap();
        return;
    }
    let (seq, hash, format, digest, mut body): (i64, Vec<u8>, u32, Vec<u8>, Vec<u8>) = conn
        .query_row(
            "SELECT seq, hash, format, digest, body FROM snapshots ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .expect("a snapshot is stored");
    let written = match damage {
        SnapshotDamage::Body => {
            let last = body.len() - 1;
            body[last / 2] ^= 0x01;
            Snapshot {
                seq: seq as u64,
                hash: hash.try_into().unwrap(),
                format,
                digest: digest.try_into().unwrap(),
                body,
            }
        }
        SnapshotDamage::Projections => unreachable!("handled above"),
        SnapshotDamage::OffChain => {
            let stored = Snapshot {
                seq: seq as u64,
                hash: hash.try_into().unwrap(),
                format,
                digest: digest.try_into().unwrap(),
                body,
            };
            let state = snapshot::decode(&stored).expect("the stored snapshot is sound");
            snapshot::encode(&state, stored.seq, [9u8; 32]).unwrap()
        }
    };
    conn.execute(
        "UPDATE snapshots SET hash = ?2, digest = ?3, body = ?4 WHERE seq = ?1",
        params![seq, &written.hash[..], &written.digest[..], &written.body],
    )
    .unwrap();
}

/// A ledger file in a temporary directory.
struct SqliteFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SqliteFile {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        SqliteFile { _dir: dir, path }
    }

    fn sabotage(&self, what: Sabotage) {
        sabotage(&Connection::open(&self.path).unwrap(), what);
    }
}

impl Harness for SqliteFile {
    type Store = Store;
    fn open(&mut self, options: &StoreOptions) -> Result<Store, LedgerError> {
        <Store as LedgerStore>::open(&self.path, options)
    }
    fn tamper_event(&mut self, seq: u64) {
        self.sabotage(Sabotage::Event(seq));
    }
    fn break_writes(&mut self) {
        self.sabotage(Sabotage::BreakWrites);
    }
    fn heal_writes(&mut self) {
        self.sabotage(Sabotage::HealWrites);
    }
    fn damage_snapshot(&mut self, damage: SnapshotDamage) {
        self.sabotage(Sabotage::Snapshot(damage));
    }
}

/// A named in-memory database (shared cache), kept alive between a store's close and the next
/// open by a connection of its own.
struct SqliteMemory {
    uri: String,
    keeper: Connection,
}

impl SqliteMemory {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let uri = format!(
            "file:paydvm-conformance-{}-{n}?mode=memory&cache=shared",
            std::process::id()
        );
        let keeper = Connection::open(&uri).unwrap();
        SqliteMemory { uri, keeper }
    }
}

impl Harness for SqliteMemory {
    type Store = Store;
    fn open(&mut self, options: &StoreOptions) -> Result<Store, LedgerError> {
        <Store as LedgerStore>::open(Path::new(&self.uri), options)
    }
    fn tamper_event(&mut self, seq: u64) {
        sabotage(&self.keeper, Sabotage::Event(seq));
    }
    fn break_writes(&mut self) {
        sabotage(&self.keeper, Sabotage::BreakWrites);
    }
    fn heal_writes(&mut self) {
        sabotage(&self.keeper, Sabotage::HealWrites);
    }
    fn damage_snapshot(&mut self, damage: SnapshotDamage) {
        sabotage(&self.keeper, Sabotage::Snapshot(damage));
    }
}

mod sqlite_file {
    use super::*;
    paydvm_ledger::ledger_store_conformance!(SqliteFile::new());
}

mod sqlite_memory {
    use super::*;
    paydvm_ledger::ledger_store_conformance!(SqliteMemory::new());
}
