//! Ecash (NutZaps, request tokens) verified but not yet credited, kept in a small SQLite file so a swap that the mint
//! could not finish (mint down, ambiguous answer) or a crash between swap and credit loses
//! nothing: on start and on a timer, each row is tried again until it is credited or refused.
//!
//! Row states: `verified` (swap not known to have happened) → `swapped` (the mint swapped it;
//! only the ledger credit is left). A row is deleted once the ledger holds the payment or the
//! NutZap was refused for good.
//!
//! Beside them, the ecash the rail could not check yet ([`DeferredRow`]: a NutZap or a request
//! whose mint's keysets could not be fetched, or whose job was not recorded yet), kept as the
//! signed event it came in, so a restart does not depend on the relays still offering it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use crate::verify::VerifiedNutZap;

/// First retry delay; doubles per failed attempt up to [`MAX_BACKOFF_MS`].
pub const FIRST_BACKOFF_MS: u64 = 1_000;
pub const MAX_BACKOFF_MS: u64 = 5 * 60 * 1000;

/// How long a given-up request is remembered ([`PendingRows::give_up_deferred`]): a week, the
/// longest `token_wait_secs`. A request can come back only through a catch-up, which reaches 10
/// minutes before the newest ledger event, and the give-up's own reply is one.
pub const GIVEN_UP_FOR_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Given-up requests remembered at most (the newest), as many as may wait deferred at once.
pub const GIVEN_UP_KEPT: u32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    #[error("pending swaps store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("pending swaps store: bad row {event}: {reason}")]
    Row { event: String, reason: String },
    #[error("pending swaps store: cannot make it private (mode 0600): {0}")]
    Private(std::io::Error),
    /// A store other than the file (the ledger's PostgreSQL database).
    #[error("pending swaps store: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("pending swaps store: the destination of a copy already holds {0} rows")]
    NotEmpty(usize),
    #[error("pending swaps store: the copy's rows differ from the source's")]
    CopyDiffers,
}

/// Where a pending NutZap stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingState {
    Verified,
    Swapped { received: u64, fee: u64 },
}

#[derive(Debug, Clone)]
pub struct PendingSwap {
    pub nutzap: VerifiedNutZap,
    pub state: PendingState,
    pub attempts: u32,
    pub next_try_ms: u64,
}

/// An event the rail put off (see the module's note), as received, with how often it was tried
/// and when it is due again (unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredRow {
    pub event_id: String,
    /// The signed event as JSON (a request's tokens inside it, maybe encrypted to us): bearer
    /// money once redeemed, never logged.
    pub event: String,
    pub tries: u32,
    pub next_try_ms: u64,
    /// When it was first put off (unix ms): a request's tokens are given up after a while.
    pub first_ms: u64,
}

/// Where the pending rows are kept: [`PendingSwaps`] (a file beside a file ledger) or the
/// ledger's PostgreSQL database (the node's `ecash_store`). Blocking calls: the node runs them on
/// tokio's blocking pool.
pub trait PendingRows: Send + Sync {
    /// Records a verified NutZap before its first swap attempt. False if it is already there.
    fn insert(&self, nutzap: &VerifiedNutZap, now_ms: u64) -> Result<bool, PendingError>;
    fn mark_swapped(&self, event_id: &str, received: u64, fee: u64) -> Result<(), PendingError>;
    /// A failed attempt: the next one waits twice as long (bounded, [`back_off_delay`]); when
    /// it is due.
    fn back_off(&self, event_id: &str, now_ms: u64) -> Result<u64, PendingError>;
    fn remove(&self, event_id: &str) -> Result<(), PendingError>;
    fn get(&self, event_id: &str) -> Result<Option<PendingSwap>, PendingError>;
    /// Rows whose next attempt is due at `now_ms`.
    fn due(&self, now_ms: u64) -> Result<Vec<PendingSwap>, PendingError>;
    fn all(&self) -> Result<Vec<PendingSwap>, PendingError>;
    /// Keeps a put-off event (or updates its tries and due time).
    fn keep_deferred(&self, row: &DeferredRow) -> Result<(), PendingError>;
    /// The event was decided (or given up): it is no longer kept.
    fn forget_deferred(&self, event_id: &str) -> Result<(), PendingError>;
    /// Every put-off event, the earliest due first.
    fn deferred(&self) -> Result<Vec<DeferredRow>, PendingError>;
    /// A request's tokens were given up (its customer told they stay theirs): it is no longer
    /// kept, and it is remembered as given up, so the same request offered again (a catch-up
    /// after a restart) is not redeemed after all. Forgets marks older than [`GIVEN_UP_FOR_MS`]
    /// and all but the newest [`GIVEN_UP_KEPT`].
    fn give_up_deferred(&self, event_id: &str, now_ms: u64) -> Result<(), PendingError>;
    /// Whether the request `event_id` was given up (and is still remembered).
    fn given_up(&self, event_id: &str) -> Result<bool, PendingError>;
    /// Every remembered given-up request with when it was given up (unix ms), oldest first.
    fn given_up_marks(&self) -> Result<Vec<(String, u64)>, PendingError>;
}

/// How long after its `attempts`-th failure (counted from 0) a row is tried again.
pub fn back_off_delay(attempts: u32) -> u64 {
    FIRST_BACKOFF_MS
        .saturating_mul(1u64 << attempts.min(20))
        .min(MAX_BACKOFF_MS)
}

/// The NutZap of a stored row, as [`PendingRows::insert`] wrote it.
pub fn nutzap_body(nutzap: &VerifiedNutZap) -> Result<String, PendingError> {
    serde_json::to_string(nutzap).map_err(|e| PendingError::Row {
        event: nutzap.event_id.clone(),
        reason: e.to_string(),
    })
}

/// A stored row read back: `received` set means swapped (with `fee`).
pub fn decode_row(
    event: String,
    body: &str,
    received: Option<u64>,
    fee: Option<u64>,
    attempts: u32,
    next_try_ms: u64,
) -> Result<PendingSwap, PendingError> {
    let nutzap: VerifiedNutZap = serde_json::from_str(body).map_err(|e| PendingError::Row {
        event: event.clone(),
        reason: e.to_string(),
    })?;
    let state = match received {
        Some(received) => PendingState::Swapped {
            received,
            fee: fee.unwrap_or(0),
        },
        None => PendingState::Verified,
    };
    Ok(PendingSwap {
        nutzap,
        state,
        attempts,
        next_try_ms,
    })
}

/// Copies every row of `from` into `to`, which must hold none: each NutZap with where its swap
/// stands (swapped ones with what the mint gave), and each put-off event. A row's failed
/// attempts are not carried over; the copy tries it again at once. Returns how many rows were
/// copied, after reading both back.
pub fn copy_rows(from: &dyn PendingRows, to: &dyn PendingRows) -> Result<CopiedRows, PendingError> {
    let existing = rows_held(to)?;
    if existing > 0 {
        return Err(PendingError::NotEmpty(existing));
    }
    let rows = from.all()?;
    for row in &rows {
        to.insert(&row.nutzap, 0)?;
        if let PendingState::Swapped { received, fee } = row.state {
            to.mark_swapped(&row.nutzap.event_id, received, fee)?;
        }
    }
    let deferred = from.deferred()?;
    for row in &deferred {
        to.keep_deferred(&DeferredRow {
            tries: 0,
            next_try_ms: 0,
            ..row.clone()
        })?;
    }
    // Compared as stored (the bodies hold the proofs: never printed).
    let stored = |rows: Vec<PendingSwap>| -> Result<BTreeMap<String, _>, PendingError> {
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.nutzap.event_id.clone(),
                    (r.state, nutzap_body(&r.nutzap)?),
                ))
            })
            .collect()
    };
    let events = |rows: Vec<DeferredRow>| -> BTreeMap<String, String> {
        rows.into_iter().map(|r| (r.event_id, r.event)).collect()
    };
    // Oldest first, each at its own time: the copy forgets nothing the source remembers.
    let marks = from.given_up_marks()?;
    for (event_id, at) in &marks {
        to.give_up_deferred(event_id, *at)?;
    }
    if stored(to.all()?)? != stored(from.all()?)?
        || events(to.deferred()?) != events(from.deferred()?)
        || to.given_up_marks()? != marks
    {
        return Err(PendingError::CopyDiffers);
    }
    Ok(CopiedRows {
        swaps: rows.len(),
        deferred: deferred.len(),
        given_up: marks.len(),
    })
}

/// How many rows `store` holds, pending swaps, put-off events and given-up requests: a copy's
/// destination must hold none.
pub fn rows_held(store: &dyn PendingRows) -> Result<usize, PendingError> {
    Ok(store.all()?.len() + store.deferred()?.len() + store.given_up_marks()?.len())
}

/// What [`copy_rows`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopiedRows {
    pub swaps: usize,
    pub deferred: usize,
    pub given_up: usize,
}

/// The connection sits behind a mutex so the store can be held across `.await` by a task.
pub struct PendingSwaps {
    db: Mutex<Connection>,
}

impl PendingSwaps {
    /// Opens (or creates, mode 0600: the proofs are bearer money once our key signs) the store.
    pub fn open(path: &Path) -> Result<Self, PendingError> {
        crate::private_file::make_private(path).map_err(PendingError::Private)?;
        let db = Connection::open(path)?;
        db.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS pending_swaps (
                 event_id TEXT PRIMARY KEY,
                 nutzap TEXT NOT NULL,
                 received INTEGER,
                 fee INTEGER,
                 attempts INTEGER NOT NULL DEFAULT 0,
                 next_try_ms INTEGER NOT NULL DEFAULT 0
             );
             CREATE TABLE IF NOT EXISTS deferred_events (
                 event_id TEXT PRIMARY KEY,
                 event TEXT NOT NULL,
                 tries INTEGER NOT NULL,
                 next_try_ms INTEGER NOT NULL,
                 first_ms INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS given_up_requests (
                 event_id TEXT PRIMARY KEY,
                 given_up_ms INTEGER NOT NULL
             );",
        )?;
        Ok(PendingSwaps { db: Mutex::new(db) })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding it cannot leave a half-applied statement: SQLite rolls back.
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rows(
        &self,
        filter: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<PendingSwap>, PendingError> {
        let sql = format!(
            "SELECT event_id, nutzap, received, fee, attempts, next_try_ms FROM pending_swaps {filter} ORDER BY next_try_ms"
        );
        let db = self.db();
        let mut stmt = db.prepare(&sql)?;
        let raw = stmt
            .query_map(args, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, u32>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter()
            .map(|(event, body, received, fee, attempts, next)| {
                decode_row(
                    event,
                    &body,
                    received.map(|r| r as u64),
                    fee.map(|f| f as u64),
                    attempts,
                    next as u64,
                )
            })
            .collect()
    }

    /// [`PendingRows::give_up_deferred`], remembering at most `keep` given-up requests.
    fn give_up_keeping(&self, event_id: &str, now_ms: u64, keep: u32) -> Result<(), PendingError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "DELETE FROM deferred_events WHERE event_id = ?1",
            params![event_id],
        )?;
        tx.execute(
            "INSERT INTO given_up_requests (event_id, given_up_ms) VALUES (?1, ?2)
             ON CONFLICT (event_id) DO NOTHING",
            params![event_id, now_ms as i64],
        )?;
        tx.execute(
            "DELETE FROM given_up_requests WHERE given_up_ms < ?1 OR event_id IN
                 (SELECT event_id FROM given_up_requests
                  ORDER BY given_up_ms DESC, event_id LIMIT -1 OFFSET ?2)",
            params![now_ms.saturating_sub(GIVEN_UP_FOR_MS) as i64, keep],
        )?;
        tx.commit()?;
        Ok(())
    }
}

impl PendingRows for PendingSwaps {
    fn insert(&self, nutzap: &VerifiedNutZap, now_ms: u64) -> Result<bool, PendingError> {
        let body = nutzap_body(nutzap)?;
        let n = self.db().execute(
            "INSERT OR IGNORE INTO pending_swaps (event_id, nutzap, next_try_ms) VALUES (?1, ?2, ?3)",
            params![nutzap.event_id, body, now_ms as i64],
        )?;
        Ok(n == 1)
    }

    fn mark_swapped(&self, event_id: &str, received: u64, fee: u64) -> Result<(), PendingError> {
        self.db().execute(
            "UPDATE pending_swaps SET received = ?2, fee = ?3 WHERE event_id = ?1",
            params![event_id, received as i64, fee as i64],
        )?;
        Ok(())
    }

    fn back_off(&self, event_id: &str, now_ms: u64) -> Result<u64, PendingError> {
        let attempts: u32 = self
            .db()
            .query_row(
                "SELECT attempts FROM pending_swaps WHERE event_id = ?1",
                params![event_id],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let next = now_ms.saturating_add(back_off_delay(attempts));
        self.db().execute(
            "UPDATE pending_swaps SET attempts = attempts + 1, next_try_ms = ?2 WHERE event_id = ?1",
            params![event_id, next as i64],
        )?;
        Ok(next)
    }

    fn remove(&self, event_id: &str) -> Result<(), PendingError> {
        self.db().execute(
            "DELETE FROM pending_swaps WHERE event_id = ?1",
            params![event_id],
        )?;
        Ok(())
    }

    fn get(&self, event_id: &str) -> Result<Option<PendingSwap>, PendingError> {
        Ok(self.rows("WHERE event_id = ?1", params![event_id])?.pop())
    }

    fn due(&self, now_ms: u64) -> Result<Vec<PendingSwap>, PendingError> {
        self.rows("WHERE next_try_ms <= ?1", params![now_ms as i64])
    }

    fn all(&self) -> Result<Vec<PendingSwap>, PendingError> {
        self.rows("", params![])
    }

    fn keep_deferred(&self, row: &DeferredRow) -> Result<(), PendingError> {
        self.db().execute(
            "INSERT INTO deferred_events (event_id, event, tries, next_try_ms, first_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (event_id) DO UPDATE SET tries = ?3, next_try_ms = ?4",
            params![
                row.event_id,
                row.event,
                row.tries,
                row.next_try_ms as i64,
                row.first_ms as i64
            ],
        )?;
        Ok(())
    }

    fn forget_deferred(&self, event_id: &str) -> Result<(), PendingError> {
        self.db().execute(
            "DELETE FROM deferred_events WHERE event_id = ?1",
            params![event_id],
        )?;
        Ok(())
    }

    fn give_up_deferred(&self, event_id: &str, now_ms: u64) -> Result<(), PendingError> {
        self.give_up_keeping(event_id, now_ms, GIVEN_UP_KEPT)
    }

    fn given_up(&self, event_id: &str) -> Result<bool, PendingError> {
        let n: i64 = self.db().query_row(
            "SELECT count(*) FROM given_up_requests WHERE event_id = ?1",
            params![event_id],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    fn given_up_marks(&self) -> Result<Vec<(String, u64)>, PendingError> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT event_id, given_up_ms FROM given_up_requests ORDER BY given_up_ms, event_id",
        )?;
        let marks = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(marks)
    }

    fn deferred(&self) -> Result<Vec<DeferredRow>, PendingError> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT event_id, event, tries, next_try_ms, first_ms FROM deferred_events
             ORDER BY next_try_ms, event_id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(DeferredRow {
                    event_id: r.get(0)?,
                    event: r.get(1)?,
                    tries: r.get(2)?,
                    next_try_ms: r.get::<_, i64>(3)? as u64,
                    first_ms: r.get::<_, i64>(4)? as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str) -> VerifiedNutZap {
        VerifiedNutZap {
            event_id: id.into(),
            sender: "aa".repeat(32),
            mint: "http://127.0.0.1:1".into(),
            unit: "sat".into(),
            proofs: Vec::new(),
            ys: vec!["02".to_owned() + &"11".repeat(32)],
            units: 5,
            amount: paydvm_ledger::Msat::from_msat(5000),
            target: None,
            origin: crate::verify::Origin::NutZap,
        }
    }

    #[test]
    fn a_copy_carries_every_row_and_where_its_swap_stands_onto_an_empty_store_only() {
        let dir = tempfile::tempdir().unwrap();
        let from = PendingSwaps::open(&dir.path().join("from")).unwrap();
        let to = PendingSwaps::open(&dir.path().join("to")).unwrap();
        from.insert(&sample("a"), 100).unwrap();
        from.insert(&sample("b"), 100).unwrap();
        from.back_off("a", 100).unwrap();
        from.mark_swapped("b", 5, 1).unwrap();
        from.keep_deferred(&deferred_row("c", 3)).unwrap();
        from.give_up_deferred("g2", 2_000).unwrap();
        from.give_up_deferred("g1", 1_000).unwrap();
        assert_eq!(
            copy_rows(&from, &to).unwrap(),
            CopiedRows {
                swaps: 2,
                deferred: 1,
                given_up: 2
            }
        );
        assert_eq!(
            to.given_up_marks().unwrap(),
            [("g1".to_owned(), 1_000), ("g2".to_owned(), 2_000)],
            "given-up requests are remembered at the destination, each at its own time"
        );
        assert_eq!(
            to.deferred().unwrap(),
            [DeferredRow {
                tries: 0,
                next_try_ms: 0,
                ..deferred_row("c", 3)
            }],
            "a put-off event is carried over, due at once"
        );
        let b = to.get("b").unwrap().unwrap();
        assert_eq!(
            b.state,
            PendingState::Swapped {
                received: 5,
                fee: 1
            }
        );
        let a = to.get("a").unwrap().unwrap();
        assert_eq!(
            (a.state, a.next_try_ms),
            (PendingState::Verified, 0),
            "due at once"
        );
        assert!(matches!(
            copy_rows(&from, &to),
            Err(PendingError::NotEmpty(5))
        ));
        let only_deferred = PendingSwaps::open(&dir.path().join("only-deferred")).unwrap();
        only_deferred.keep_deferred(&deferred_row("d", 0)).unwrap();
        assert!(
            matches!(
                copy_rows(&from, &only_deferred),
                Err(PendingError::NotEmpty(1))
            ),
            "a store holding only a put-off event is not empty"
        );
    }

    fn deferred_row(id: &str, tries: u32) -> DeferredRow {
        DeferredRow {
            event_id: id.into(),
            event: format!("{{\"id\":\"{id}\"}}"),
            tries,
            next_try_ms: 1_000 * u64::from(tries),
            first_ms: 7,
        }
    }

    #[test]
    fn put_off_events_survive_reopen_are_updated_in_place_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pending.db");
        let store = PendingSwaps::open(&path).unwrap();
        store.keep_deferred(&deferred_row("b", 5)).unwrap();
        store.keep_deferred(&deferred_row("a", 1)).unwrap();
        store.keep_deferred(&deferred_row("a", 2)).unwrap();
        drop(store);
        let store = PendingSwaps::open(&path).unwrap();
        assert_eq!(
            store.deferred().unwrap(),
            [deferred_row("a", 2), deferred_row("b", 5)],
            "one row per event, its latest tries, the earliest due first"
        );
        store.forget_deferred("a").unwrap();
        store.forget_deferred("never-kept").unwrap();
        assert_eq!(store.deferred().unwrap(), [deferred_row("b", 5)]);
        assert!(store.all().unwrap().is_empty(), "not a pending swap");
    }

    #[test]
    fn a_given_up_request_is_no_longer_kept_and_is_remembered_for_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pending.db");
        let store = PendingSwaps::open(&path).unwrap();
        store.keep_deferred(&deferred_row("a", 1)).unwrap();
        store.keep_deferred(&deferred_row("b", 1)).unwrap();
        store.give_up_deferred("a", 1_000).unwrap();
        store.give_up_deferred("a", 2_000).unwrap();
        drop(store);
        let store = PendingSwaps::open(&path).unwrap();
        assert_eq!(store.deferred().unwrap(), [deferred_row("b", 1)]);
        assert!(store.given_up("a").unwrap(), "remembered across a reopen");
        assert!(!store.given_up("b").unwrap(), "still waiting, not given up");
        // A week after the first give-up, the next one forgets it.
        store
            .give_up_deferred("b", 1_000 + GIVEN_UP_FOR_MS + 1)
            .unwrap();
        assert!(!store.given_up("a").unwrap());
        assert!(store.given_up("b").unwrap());
        // At most `keep`: the newest stay.
        for (i, id) in ["c", "d", "e"].into_iter().enumerate() {
            store.give_up_keeping(id, 10_000 + i as u64, 2).unwrap();
        }
        let kept: Vec<bool> = ["b", "c", "d", "e"]
            .iter()
            .map(|id| store.given_up(id).unwrap())
            .collect();
        assert_eq!(
            kept,
            [true, false, false, true],
            "b and e are the newest two"
        );
    }

    #[test]
    fn rows_survive_reopen_back_off_and_move_to_swapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pending.db");
        let store = PendingSwaps::open(&path).unwrap();
        assert!(store.insert(&sample("a"), 100).unwrap());
        assert!(
            !store.insert(&sample("a"), 100).unwrap(),
            "second insert is a no-op"
        );
        assert_eq!(store.back_off("a", 100).unwrap(), 100 + FIRST_BACKOFF_MS);
        assert_eq!(
            store.back_off("a", 100).unwrap(),
            100 + 2 * FIRST_BACKOFF_MS
        );
        assert!(store.due(101).unwrap().is_empty());
        drop(store);
        let store = PendingSwaps::open(&path).unwrap();
        let row = store.get("a").unwrap().unwrap();
        assert_eq!(
            (row.attempts, row.state.clone()),
            (2, PendingState::Verified)
        );
        assert_eq!(row.nutzap.ys, sample("a").ys);
        store.mark_swapped("a", 5, 0).unwrap();
        let due = store.due(u64::MAX / 2).unwrap();
        assert_eq!(
            due[0].state,
            PendingState::Swapped {
                received: 5,
                fee: 0
            }
        );
        store.remove("a").unwrap();
        assert!(store.all().unwrap().is_empty());
    }
}
