//! Ecash the node verified but has not yet credited (NutZaps, request tokens), in the ledger's
//! database when the ledger is on PostgreSQL: the rows `paydvm_mints::PendingSwaps` keeps in a
//! file beside a file ledger, so a standby on another machine retries what the node that died
//! left half done. Rows as text here; the node reads them as `paydvm_mints::PendingSwap`
//! (`src/node/ecash_store.rs`).
//!
//! Beside them (`cashu_deferred_events`), the events the rail put off because it could not
//! check them yet (their mint's keysets could not be fetched, their job was not recorded yet),
//! as received, so a restart (or a standby) decides them without the relays offering them again.
//!
//! Written with `synchronous_commit = on` (`Durability::Full`): a row is the only record of a
//! NutZap between its verification and its credit.

use paydvm_ledger::Durability;

use crate::client::{create_serialised, get, get_u64, int, Db, Param, PgError};
use crate::location::PgLocation;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS cashu_pending_swaps (
    event_id TEXT PRIMARY KEY,
    nutzap TEXT NOT NULL,
    received BIGINT,
    fee BIGINT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_ms BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS cashu_deferred_events (
    event_id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    tries INTEGER NOT NULL,
    next_try_ms BIGINT NOT NULL,
    first_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS cashu_given_up_requests (
    event_id TEXT PRIMARY KEY,
    given_up_ms BIGINT NOT NULL
)";

/// The advisory lock creating the table: "paydvm" in ASCII and 3 (the node lock is 1, the work
/// table's 2).
const CREATE_LOCK_KEY: i64 = 0x7061_7964_766d_0003;

const COLUMNS: &str = "event_id, nutzap, received, fee, attempts, next_try_ms";

/// One row as stored: the NutZap as the node serialised it, and where its swap stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    pub event_id: String,
    pub nutzap: String,
    /// Set once the mint swapped it (with `fee`): only the ledger credit is left.
    pub received: Option<u64>,
    pub fee: Option<u64>,
    pub attempts: u32,
    pub next_try_ms: u64,
}

/// A put-off event as stored: the signed event as JSON, how often it was tried, when it is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredEventRow {
    pub event_id: String,
    pub event: String,
    pub tries: u32,
    pub next_try_ms: u64,
    /// When it was first put off (unix ms).
    pub first_ms: u64,
}

/// Which rows [`PgPendingSwaps::rows`] reads.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    One(&'a str),
    DueAt(u64),
    All,
}

pub struct PgPendingSwaps {
    db: Db,
    /// Whether `cashu_deferred_events` exists: a database whose tables an older node made, read
    /// without creating anything ([`PgPendingSwaps::open_existing`]), may lack it.
    deferred_table: bool,
    /// Whether `cashu_given_up_requests` exists (the same, for tables made before it was).
    given_up_table: bool,
}

impl PgPendingSwaps {
    /// Connects and creates the table if it is missing.
    pub fn open(location: &PgLocation) -> Result<PgPendingSwaps, PgError> {
        let db = Db::connect(location, Durability::Full)?;
        db.run(|pool| async move { create_serialised(&pool, CREATE_LOCK_KEY, CREATE).await })?;
        Ok(PgPendingSwaps {
            db,
            deferred_table: true,
            given_up_table: true,
        })
    }

    /// Connects if the table was ever made; `None` if not (read-only commands, such as
    /// `paydvm reconcile`, create nothing).
    pub fn open_existing(location: &PgLocation) -> Result<Option<PgPendingSwaps>, PgError> {
        let db = Db::connect(location, Durability::Full)?;
        let found = db.query_opt(
            "SELECT to_regclass('cashu_pending_swaps') IS NOT NULL,
                    to_regclass('cashu_deferred_events') IS NOT NULL,
                    to_regclass('cashu_given_up_requests') IS NOT NULL",
            Vec::new(),
        )?;
        let exists = |i| found.as_ref().map_or(Ok(false), |row| get::<bool>(row, i));
        let store = PgPendingSwaps {
            deferred_table: exists(1)?,
            given_up_table: exists(2)?,
            db,
        };
        Ok(exists(0)?.then_some(store))
    }

    /// Records a NutZap before its first swap attempt; false if it is there already.
    pub fn insert(&self, event_id: &str, nutzap: &str, now_ms: u64) -> Result<bool, PgError> {
        let params: Vec<Param> = vec![
            Box::new(event_id.to_owned()),
            Box::new(nutzap.to_owned()),
            Box::new(int(now_ms, "next_try_ms")?),
        ];
        let inserted = self.db.query(
            "INSERT INTO cashu_pending_swaps (event_id, nutzap, next_try_ms) VALUES ($1, $2, $3)
             ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            params,
        )?;
        Ok(!inserted.is_empty())
    }

    pub fn mark_swapped(&self, event_id: &str, received: u64, fee: u64) -> Result<(), PgError> {
        let params: Vec<Param> = vec![
            Box::new(event_id.to_owned()),
            Box::new(int(received, "received")?),
            Box::new(int(fee, "fee")?),
        ];
        self.db.query(
            "UPDATE cashu_pending_swaps SET received = $2, fee = $3 WHERE event_id = $1",
            params,
        )?;
        Ok(())
    }

    /// How many attempts failed so far (0 for a row that is not there).
    pub fn attempts(&self, event_id: &str) -> Result<u32, PgError> {
        let row = self.db.query_opt(
            "SELECT attempts FROM cashu_pending_swaps WHERE event_id = $1",
            vec![Box::new(event_id.to_owned())],
        )?;
        match row {
            Some(row) => attempts(get::<i32>(&row, 0)?),
            None => Ok(0),
        }
    }

    /// One more failed attempt; the next is due at `next_try_ms`.
    pub fn failed_attempt(&self, event_id: &str, next_try_ms: u64) -> Result<(), PgError> {
        let params: Vec<Param> = vec![
            Box::new(event_id.to_owned()),
            Box::new(int(next_try_ms, "next_try_ms")?),
        ];
        self.db.query(
            "UPDATE cashu_pending_swaps SET attempts = attempts + 1, next_try_ms = $2
             WHERE event_id = $1",
            params,
        )?;
        Ok(())
    }

    pub fn remove(&self, event_id: &str) -> Result<(), PgError> {
        self.db.query(
            "DELETE FROM cashu_pending_swaps WHERE event_id = $1",
            vec![Box::new(event_id.to_owned())],
        )?;
        Ok(())
    }

    /// The rows asked for, the earliest due first.
    pub fn rows(&self, which: Rows<'_>) -> Result<Vec<PendingRow>, PgError> {
        let (filter, params): (&str, Vec<Param>) = match which {
            Rows::One(id) => ("WHERE event_id = $1", vec![Box::new(id.to_owned())]),
            Rows::DueAt(ms) => (
                "WHERE next_try_ms <= $1",
                vec![Box::new(int(ms, "next_try_ms")?)],
            ),
            Rows::All => ("", Vec::new()),
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM cashu_pending_swaps {filter} ORDER BY next_try_ms, event_id"
        );
        self.db.query(sql, params)?.iter().map(row).collect()
    }
}

impl PgPendingSwaps {
    /// Keeps a put-off event, or updates its tries and due time.
    pub fn keep_deferred(&self, row: &DeferredEventRow) -> Result<(), PgError> {
        let params: Vec<Param> = vec![
            Box::new(row.event_id.clone()),
            Box::new(row.event.clone()),
            Box::new(tries(row.tries)?),
            Box::new(int(row.next_try_ms, "next_try_ms")?),
            Box::new(int(row.first_ms, "first_ms")?),
        ];
        self.db.query(
            "INSERT INTO cashu_deferred_events (event_id, event, tries, next_try_ms, first_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (event_id) DO UPDATE SET tries = $3, next_try_ms = $4",
            params,
        )?;
        Ok(())
    }

    pub fn forget_deferred(&self, event_id: &str) -> Result<(), PgError> {
        self.db.query(
            "DELETE FROM cashu_deferred_events WHERE event_id = $1",
            vec![Box::new(event_id.to_owned())],
        )?;
        Ok(())
    }

    /// A request's tokens were given up: no longer kept, remembered as given up; marks given
    /// up before `forget_before_ms`, and all but the newest `keep`, are forgotten. One
    /// statement, so all of it or none.
    pub fn give_up_deferred(
        &self,
        event_id: &str,
        now_ms: u64,
        (forget_before_ms, keep): (u64, u32),
    ) -> Result<(), PgError> {
        let params: Vec<Param> = vec![
            Box::new(event_id.to_owned()),
            Box::new(int(now_ms, "now_ms")?),
            Box::new(int(forget_before_ms, "forget_before_ms")?),
            Box::new(i64::from(keep)),
        ];
        // Every part of the statement reads the table as it was before it: the outer DELETE
        // does not see the new mark, so it keeps the newest `keep - 1` earlier ones beside it.
        self.db.query(
            "WITH gone AS (DELETE FROM cashu_deferred_events WHERE event_id = $1),
                  marked AS (INSERT INTO cashu_given_up_requests (event_id, given_up_ms)
                             VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING)
             DELETE FROM cashu_given_up_requests WHERE given_up_ms < $3 OR event_id IN
                 (SELECT event_id FROM cashu_given_up_requests
                  ORDER BY given_up_ms DESC, event_id OFFSET $4::bigint - 1)",
            params,
        )?;
        Ok(())
    }

    /// Whether the request `event_id` was given up (and is still remembered).
    pub fn given_up(&self, event_id: &str) -> Result<bool, PgError> {
        if !self.given_up_table {
            return Ok(false);
        }
        let row = self.db.query_opt(
            "SELECT EXISTS (SELECT 1 FROM cashu_given_up_requests WHERE event_id = $1)",
            vec![Box::new(event_id.to_owned())],
        )?;
        match row {
            Some(row) => get::<bool>(&row, 0),
            None => Ok(false),
        }
    }

    /// Every remembered given-up request and when it was given up, oldest first (none in a
    /// database whose tables an older node made and nothing created since).
    pub fn given_up_marks(&self) -> Result<Vec<(String, u64)>, PgError> {
        if !self.given_up_table {
            return Ok(Vec::new());
        }
        let rows = self.db.query(
            "SELECT event_id, given_up_ms FROM cashu_given_up_requests
             ORDER BY given_up_ms, event_id",
            Vec::new(),
        )?;
        rows.iter()
            .map(|r| Ok((get(r, 0)?, get_u64(r, 1, "given_up_ms")?)))
            .collect()
    }

    /// Every put-off event, the earliest due first (none without the table).
    pub fn deferred(&self) -> Result<Vec<DeferredEventRow>, PgError> {
        if !self.deferred_table {
            return Ok(Vec::new());
        }
        let rows = self.db.query(
            "SELECT event_id, event, tries, next_try_ms, first_ms FROM cashu_deferred_events
             ORDER BY next_try_ms, event_id",
            Vec::new(),
        )?;
        rows.iter()
            .map(|r| {
                Ok(DeferredEventRow {
                    event_id: get(r, 0)?,
                    event: get(r, 1)?,
                    tries: attempts(get::<i32>(r, 2)?)?,
                    next_try_ms: get_u64(r, 3, "next_try_ms")?,
                    first_ms: get_u64(r, 4, "first_ms")?,
                })
            })
            .collect()
    }
}

fn tries(n: u32) -> Result<i32, PgError> {
    i32::try_from(n).map_err(|_| {
        paydvm_ledger::LedgerError::Corrupt(format!("deferred event tries {n} do not fit")).into()
    })
}

fn row(r: &tokio_postgres::Row) -> Result<PendingRow, PgError> {
    let optional = |i: usize, what: &str| -> Result<Option<u64>, PgError> {
        match get::<Option<i64>>(r, i)? {
            Some(_) => get_u64(r, i, what).map(Some),
            None => Ok(None),
        }
    };
    Ok(PendingRow {
        event_id: get(r, 0)?,
        nutzap: get(r, 1)?,
        received: optional(2, "received")?,
        fee: optional(3, "fee")?,
        attempts: attempts(get::<i32>(r, 4)?)?,
        next_try_ms: get_u64(r, 5, "next_try_ms")?,
    })
}

fn attempts(n: i32) -> Result<u32, PgError> {
    u32::try_from(n).map_err(|_| {
        paydvm_ledger::LedgerError::Corrupt(format!("pending swap attempts {n} is negative")).into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::throwaway::ThrowawayCluster;

    fn store() -> PgPendingSwaps {
        let cluster = ThrowawayCluster::shared();
        let db = cluster.fresh_database().expect("database");
        PgPendingSwaps::open(&PgLocation::parse(&cluster.url(&db)).expect("url")).expect("open")
    }

    #[test]
    fn rows_are_kept_once_backed_off_swapped_and_removed() {
        let s = store();
        assert!(s.insert("a", "{\"n\":1}", 1_000).unwrap());
        assert!(
            !s.insert("a", "{\"n\":2}", 5).unwrap(),
            "a second insert is refused"
        );
        assert!(s.insert("b", "{}", 3_000).unwrap());
        assert_eq!(s.attempts("a").unwrap(), 0);
        s.failed_attempt("a", 9_000).unwrap();
        assert_eq!(s.attempts("a").unwrap(), 1);
        let due: Vec<_> = s.rows(Rows::DueAt(3_000)).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].event_id, "b");
        s.mark_swapped("a", 21, 1).unwrap();
        let a = s.rows(Rows::One("a")).unwrap().pop().unwrap();
        assert_eq!(
            a,
            PendingRow {
                event_id: "a".into(),
                nutzap: "{\"n\":1}".into(),
                received: Some(21),
                fee: Some(1),
                attempts: 1,
                next_try_ms: 9_000,
            }
        );
        s.remove("b").unwrap();
        let all = s.rows(Rows::All).unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(s.attempts("gone").unwrap(), 0);
    }

    #[test]
    fn put_off_events_are_kept_once_updated_in_place_and_forgotten() {
        let s = store();
        let row = |id: &str, tries: u32| DeferredEventRow {
            event_id: id.into(),
            event: format!("{{\"id\":\"{id}\"}}"),
            tries,
            next_try_ms: 1_000 * u64::from(tries),
            first_ms: 7,
        };
        s.keep_deferred(&row("b", 5)).unwrap();
        s.keep_deferred(&row("a", 1)).unwrap();
        s.keep_deferred(&row("a", 2)).unwrap();
        assert_eq!(s.deferred().unwrap(), [row("a", 2), row("b", 5)]);
        s.forget_deferred("a").unwrap();
        s.forget_deferred("never-kept").unwrap();
        assert_eq!(s.deferred().unwrap(), [row("b", 5)]);
        assert!(s.rows(Rows::All).unwrap().is_empty(), "not a pending swap");
    }

    #[test]
    fn a_given_up_request_is_no_longer_kept_and_is_remembered_for_a_while() {
        let s = store();
        let row = |id: &str| DeferredEventRow {
            event_id: id.into(),
            event: "{}".into(),
            tries: 1,
            next_try_ms: 1_000,
            first_ms: 7,
        };
        s.keep_deferred(&row("a")).unwrap();
        s.keep_deferred(&row("b")).unwrap();
        s.give_up_deferred("a", 1_000, (0, 10)).unwrap();
        s.give_up_deferred("a", 2_000, (0, 10)).unwrap();
        assert_eq!(s.deferred().unwrap(), [row("b")]);
        assert!(s.given_up("a").unwrap());
        assert!(!s.given_up("b").unwrap(), "still waiting, not given up");
        // Marks given up before the cut-off are forgotten, the new one kept.
        s.give_up_deferred("b", 5_000, (1_001, 10)).unwrap();
        assert!(!s.given_up("a").unwrap());
        assert!(s.given_up("b").unwrap());
        // At most `keep`, the newest, the one being given up counted.
        for (i, id) in ["c", "d", "e"].into_iter().enumerate() {
            s.give_up_deferred(id, 10_000 + i as u64, (0, 2)).unwrap();
        }
        let kept: Vec<bool> = ["b", "c", "d", "e"]
            .iter()
            .map(|id| s.given_up(id).unwrap())
            .collect();
        assert_eq!(
            kept,
            [false, false, true, true],
            "d and e are the newest two"
        );
        assert_eq!(
            s.given_up_marks().unwrap(),
            [("d".to_owned(), 10_001), ("e".to_owned(), 10_002)]
        );
    }
}
