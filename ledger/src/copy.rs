//! Copying a ledger from one store to another (SQLite file ↔ PostgreSQL): every event in order,
//! appended to an empty store, which recomputes the same chain. Both ends are then verified by
//! the caller; equal heads prove the copy is the same history.

use crate::engine::AppendOutcome;
use crate::error::LedgerError;
use crate::ledger_store::LedgerStore;

/// Events read per call and appended per transaction.
const BATCH: u64 = 1_000;

/// Why a copy stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the destination is not empty (it has {0} events)")]
    NotEmpty(u64),
    #[error("the source has no event {0} below its head (run verify)")]
    Missing(u64),
    #[error("event {seq} was stored as {got:?} in the destination")]
    Diverged { seq: u64, got: AppendOutcome },
    #[error("the copy's head {copy} differs from the source's {source_head}")]
    HeadDiffers { source_head: String, copy: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Appends every event of `from` to the empty store `to`, `BATCH` events per transaction (each
/// event its own group: a group's events are accepted one after the other anyway, and the
/// chain does not depend on how events were grouped). Returns the number of events copied.
pub fn copy_log<S: LedgerStore, D: LedgerStore>(from: &S, to: &mut D) -> Result<u64, CopyError> {
    if to.head().0 != 0 {
        return Err(CopyError::NotEmpty(to.head().0));
    }
    let (last, _) = from.head();
    let mut next = 1;
    while next <= last {
        let end = last.min(next + BATCH - 1);
        let events = read_chunk(from, next, end)?;
        let groups: Vec<&[crate::LedgerEvent]> = events.iter().map(std::slice::from_ref).collect();
        for (i, result) in to.append_batch(&groups)?.into_iter().enumerate() {
            let seq = next + i as u64;
            let got = result?[0];
            if got != (AppendOutcome::Appended { seq }) {
                return Err(CopyError::Diverged { seq, got });
            }
        }
        next = end + 1;
    }
    if to.head() != from.head() {
        return Err(CopyError::HeadDiffers {
            source_head: hex::encode(from.head().1),
            copy: hex::encode(to.head().1),
        });
    }
    Ok(last)
}

/// The events `next..=end` of `from`, read with one `events_after` call; a seq the source does
/// not return (a gap in its log) stops the copy.
fn read_chunk<S: LedgerStore>(
    from: &S,
    next: u64,
    end: u64,
) -> Result<Vec<crate::LedgerEvent>, CopyError> {
    let want = end - next + 1;
    let limit = usize::try_from(want).expect("a chunk is BATCH events at most");
    let mut stored = from.events_after(next - 1, limit)?.into_iter();
    let mut events = Vec::with_capacity(limit);
    for seq in next..=end {
        match stored.next() {
            Some(e) if e.seq == seq => events.push(e.event),
            _ => return Err(CopyError::Missing(seq)),
        }
    }
    Ok(events)
}
