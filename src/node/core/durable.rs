//! Releasing a written batch only once it is on disk: the pipelined group commit.
//!
//! A ledger file syncs its WAL on a thread of its own, behind the commits
//! (`paydvm_ledger::store::wal_sync`): the core commits batch N, goes on deciding batch N+1
//! while N is synced, and holds back everything N releases (its publications, its actions, its
//! log lines, the rails waiting for quotes) until the sync thread reports N's ticket. Batches
//! are released in the order they were written. At most [`MAX_HELD`] batches wait: then the core
//! syncs on its own thread before it takes another command. A PostgreSQL ledger (and a file
//! without the sync thread) syncs inside the commit: its batches are released at once.
//!
//! Some answers promise what is on disk (an operator's request, the credited references, a job
//! read back, shutdown): [`Core::flush_durable`] syncs on the core's thread and releases
//! everything held before it returns. A failed sync stops the node (see `ledger_fault`'s
//! `StopOrder`): nothing held is released, and the next start reads the ledger afresh, as after
//! a crash right after those commits.

use std::collections::VecDeque;

use paydvm_ledger::LedgerError;
use tracing::error;

use super::{Batch, Core};
use crate::node::ledger_watch::LedgerFault;

/// Batches held at most: past this the core syncs on its own thread before it takes another
/// command, so a disk that stalls holds up intake (bounded queues) instead of piling decided
/// work up in memory. The sync thread normally keeps up within a batch or two.
pub(super) const MAX_HELD: usize = 16;

/// Written batches waiting for their sync, oldest first.
#[derive(Default)]
pub(super) struct Held {
    batches: VecDeque<(u64, Batch)>,
}

impl Held {
    /// The ticket a batch that wrote nothing waits for: the newest held one's, so that it is
    /// released after them (its loose actions were decided on their state).
    fn last_ticket(&self) -> Option<u64> {
        self.batches.back().map(|(ticket, _)| *ticket)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

impl Core {
    /// A written batch: released now when its commit is on disk already, else held until the
    /// sync thread reports it.
    pub(super) fn hold_until_synced(&mut self, batch: Batch) {
        let ticket = match batch.wrote {
            true => self.store.request_sync(),
            false => self.held.last_ticket(),
        };
        match ticket {
            Some(ticket) => self.held.batches.push_back((ticket, batch)),
            None => self.release(batch),
        }
    }

    /// Releases the held batches the sync thread has put on disk; a failed sync stops the node.
    pub(super) fn release_synced(&mut self) {
        if self.held.is_empty() {
            return;
        }
        match self.store.synced() {
            Some(Ok(through)) => self.release_through(through),
            Some(Err(e)) => self.sync_failed(&e),
            // The store was reopened without a sync thread: its commits are synced.
            None => self.release_through(u64::MAX),
        }
    }

    /// With [`MAX_HELD`] batches waiting, syncs them now (blocking) instead of deciding more.
    pub(super) fn bound_held(&mut self) {
        if self.held.batches.len() >= MAX_HELD {
            self.settle();
        }
    }

    /// Flushes, then syncs on this thread and releases everything held: what the caller does
    /// next may rely on every decision so far being on disk. False when the write or the sync
    /// failed.
    pub(super) fn flush_durable(&mut self) -> bool {
        self.flush() && self.settle()
    }

    /// Syncs what is held now (not waiting for the sync thread) and releases it.
    pub(super) fn settle(&mut self) -> bool {
        if self.held.is_empty() {
            return true;
        }
        match self.store.sync_now() {
            Ok(()) => {
                self.release_through(u64::MAX);
                true
            }
            Err(e) => {
                self.sync_failed(&e);
                false
            }
        }
    }

    fn release_through(&mut self, through: u64) {
        while self
            .held
            .batches
            .front()
            .is_some_and(|(t, _)| *t <= through)
        {
            let (_, batch) = self.held.batches.pop_front().expect("a front batch");
            self.release(batch);
        }
    }

    /// Nothing held may go out: stop the node (the commits are in the file; a start reads it
    /// afresh and re-sends, resumes and refunds from there, as after a crash).
    fn sync_failed(&mut self, e: &LedgerError) {
        let held = self.held.batches.len();
        self.held.batches.clear();
        error!(
            held,
            "{e}: stopping; nothing of the unsynced batches was sent or started"
        );
        self.order_stop(format!("{e} (a start reads the ledger afresh)"));
        self.guard.enter(LedgerFault::WriteFailed(e.to_string()));
    }
}
