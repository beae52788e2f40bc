//! The PostgreSQL store against a real server: the store contract (`paydvm_ledger::conformance`)
//! in both retentions and the snapshot contracts, the ledger's model-based property tests
//! (`model`), plus what only this store has (a blocking
//! store used from inside a tokio runtime, two writers on one database). One test binary; the
//! server is the process's throwaway cluster (`paydvm_ledger_pg::throwaway`).

use paydvm_ledger::conformance::{Harness, SnapshotDamage};
use paydvm_ledger::snapshot::{self, Snapshot};
use paydvm_ledger::{LedgerError, LedgerStore, StoreOptions};
use paydvm_ledger_pg::PgStore;

use paydvm_ledger_pg::throwaway::ThrowawayCluster as Cluster;

/// One fresh database, sabotaged through a superuser connection as another process would.
struct PgDatabase {
    name: String,
}

impl PgDatabase {
    fn new() -> Self {
        PgDatabase {
            name: Cluster::shared().fresh_database().expect("create database"),
        }
    }

    fn url(&self) -> String {
        Cluster::shared().url(&self.name)
    }

    fn sql(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        Cluster::shared().admin(&self.name, sql).expect("admin sql")
    }
}

impl Harness for PgDatabase {
    type Store = PgStore;
    fn open(&mut self, options: &StoreOptions) -> Result<PgStore, LedgerError> {
        <PgStore as LedgerStore>::open(&self.url(), options)
    }
    fn tamper_event(&mut self, seq: u64) {
        self.sql(&format!(
            "UPDATE events SET body = body || ' ' WHERE seq = {seq}"
        ));
        let n = self.sql(&format!(
            "SELECT body FROM events WHERE seq = {seq} AND body LIKE '% '"
        ));
        assert_eq!(n.len(), 1, "no event {seq} to tamper with");
    }
    fn break_writes(&mut self) {
        self.sql(
            "CREATE FUNCTION conformance_fail() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected write failure'; END $$; \
             CREATE TRIGGER conformance_fail BEFORE INSERT ON events \
             FOR EACH STATEMENT EXECUTE FUNCTION conformance_fail();",
        );
    }
    fn heal_writes(&mut self) {
        self.sql("DROP TRIGGER conformance_fail ON events; DROP FUNCTION conformance_fail();");
    }
    fn damage_snapshot(&mut self, damage: SnapshotDamage) {
        if damage == SnapshotDamage::Projections {
            self.sql("UPDATE balances SET credits = credits + 1");
            return;
        }
        let rows = self
            .sql("SELECT seq, hash, format, digest, body FROM snapshots ORDER BY seq DESC LIMIT 1");
        let r = rows.first().expect("a snapshot is stored");
        let mut stored = Snapshot {
            seq: r.get::<_, i64>(0) as u64,
            hash: r.get::<_, Vec<u8>>(1).try_into().unwrap(),
            format: r.get::<_, i32>(2) as u32,
            digest: r.get::<_, Vec<u8>>(3).try_into().unwrap(),
            body: r.get(4),
        };
        let written = match damage {
            SnapshotDamage::Body => {
                let middle = (stored.body.len() - 1) / 2;
                stored.body[middle] ^= 0x01;
                stored
            }
            SnapshotDamage::Projections => unreachable!("handled above"),
            SnapshotDamage::OffChain => {
                let state = snapshot::decode(&stored).expect("the stored snapshot is sound");
                snapshot::encode(&state, stored.seq, [9u8; 32]).unwrap()
            }
        };
        self.sql(&format!(
            "UPDATE snapshots SET hash = '\\x{}', digest = '\\x{}', body = '\\x{}' WHERE seq = {}",
            hex::encode(written.hash),
            hex::encode(written.digest),
            hex::encode(&written.body),
            written.seq
        ));
    }
}

mod postgres {
    use super::*;
    paydvm_ledger::ledger_store_conformance!(PgDatabase::new());
}

mod blocking;
mod copy;
mod lost_answers;
mod model;
mod node_lock;
mod work_queue;

/// The store's sessions plan every statement for its own parameters: left to itself the server
/// switches a statement to a generic plan after five runs, and a key lookup prepared while
/// `events` was nearly empty kept a sequential scan as the table grew (the node on PostgreSQL ran
/// 64 free jobs/s, `benchmarks.md`). They also commit as durably as the options ask, and let the
/// server end a transaction that lost its client.
#[test]
fn the_stores_sessions_plan_for_their_parameters_and_commit_as_asked() {
    use paydvm_ledger::Durability;
    let db = PgDatabase::new();
    for (durability, sync) in [(Durability::Full, "on"), (Durability::Normal, "off")] {
        let store = PgStore::open(&db.url(), &StoreOptions::bounded(durability)).unwrap();
        let setting = |name: &str| store.session_setting(name).unwrap();
        assert_eq!(setting("plan_cache_mode"), "force_custom_plan");
        assert_eq!(setting("synchronous_commit"), sync);
        // Twice the default deadline (30 s): see `lost_answers.rs`.
        assert_eq!(setting("idle_in_transaction_session_timeout"), "1min");
    }
    let store = PgStore::open(&db.url(), &StoreOptions::bounded(Durability::Full)).unwrap();
    assert!(store.session_setting("x; DROP TABLE events").is_err());
}
