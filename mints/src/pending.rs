//! Ecash (NutZaps, request tokens) verified but not yet credited, kept in a small SQLite file so a swap that the mint
//! could not finish (mint down, ambiguous answer) or a crash between swap and credit loses
//! nothing: on start and on a timer, each row is tried again until it is credited or refused.
//!
//! Row states: `verified` (swap not known to have happened) → `swapped` (the mint swapped it;
//! only the ledger credit is left). A row is deleted once the ledger holds the payment or the
//! NutZap was refused for good.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use crate::verify::VerifiedNutZap;

/// First retry delay; doubles per failed attempt up to [`MAX_BACKOFF_MS`].
pub const FIRST_BACKOFF_MS: u64 = 1_000;
pub const MAX_BACKOFF_MS: u64 = 5 * 60 * 1000;

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
/// stands (swapped ones with what the mint gave). A row's failed attempts are not carried over;
/// the copy tries it again at once. Returns how many rows were copied, after reading both back.
pub fn copy_rows(from: &dyn PendingRows, to: &dyn PendingRows) -> Result<usize, PendingError> {
    let existing = to.all()?.len();
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
    // Compared as stored (the body holds the proofs: never printed).
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
    if stored(to.all()?)? != stored(from.all()?)? {
        return Err(PendingError::CopyDiffers);
    }
    Ok(rows.len())
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
        assert_eq!(copy_rows(&from, &to).unwrap(), 2);
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
            Err(PendingError::NotEmpty(2))
        ));
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
