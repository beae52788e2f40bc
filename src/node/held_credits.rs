//! Request tokens the Cashu rail swapped before their job was quoted, and whose attempt gave up
//! waiting for the quote ([`super::ecash_attempts`]): each row waits here, by job, until the
//! core tells the rail the job is quoted (`Command::WhenQuoted`), then it is credited. The row
//! stays in the pending store as swapped all along, so nothing here needs to survive a restart.
//!
//! A tell can be dropped (the core's waiting list or the rail's channel full): a row held longer
//! than [`RECHECK_AFTER_MS`] is let go, and the rail's retry timer attempts it again (which asks
//! again). More than [`MAX_HELD`] rows are not held at all: the retry timer takes them.

use std::collections::HashMap;

use paydvm_ledger::JobId;
use paydvm_mints::PendingSwap;

/// At most this many rows held; more wait on the rail's retry timer.
const MAX_HELD: usize = 4096;
/// A row held this long (ms) is attempted again on the retry timer, in case its tell was lost.
const RECHECK_AFTER_MS: u64 = 5_000;

struct Held {
    job: JobId,
    row: PendingSwap,
    since_ms: u64,
}

/// Swapped request tokens waiting for their job's quote, by pending row id. A job has a row per
/// token its request carried (usually one), and few are held at once: a tell scans them all.
#[derive(Default)]
pub(super) struct HeldCredits {
    rows: HashMap<String, Held>,
}

impl HeldCredits {
    /// Holds `row` until `job` is quoted; false when full (the row is left to the retry timer).
    pub(super) fn hold(&mut self, job: JobId, row: PendingSwap, now_ms: u64) -> bool {
        let id = row.nutzap.event_id.clone();
        if self.rows.len() >= MAX_HELD && !self.rows.contains_key(&id) {
            return false;
        }
        let held = Held {
            job,
            row,
            since_ms: now_ms,
        };
        self.rows.insert(id, held);
        true
    }

    /// The rows waiting for `job`'s quote, no longer held.
    pub(super) fn take(&mut self, job: &JobId) -> Vec<PendingSwap> {
        let ids: Vec<String> = self
            .rows
            .iter()
            .filter(|(_, h)| &h.job == job)
            .map(|(id, _)| id.clone())
            .collect();
        ids.iter()
            .filter_map(|id| self.rows.remove(id))
            .map(|h| h.row)
            .collect()
    }

    /// Whether the pending row `id` is held (the retry timer leaves it to its tell).
    pub(super) fn holds(&self, id: &str) -> bool {
        self.rows.contains_key(id)
    }

    /// Lets go of rows held since before `now_ms - RECHECK_AFTER_MS`; the retry timer attempts
    /// them again.
    pub(super) fn let_go_stale(&mut self, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(RECHECK_AFTER_MS);
        self.rows.retain(|_, h| h.since_ms > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paydvm_ledger::Msat;
    use paydvm_mints::{Origin, PendingState, VerifiedNutZap};

    fn row(id: &str) -> PendingSwap {
        PendingSwap {
            nutzap: VerifiedNutZap {
                event_id: id.to_owned(),
                sender: String::new(),
                mint: "http://127.0.0.1:1".to_owned(),
                unit: "sat".to_owned(),
                proofs: Vec::new(),
                ys: Vec::new(),
                units: 5,
                amount: Msat::from_msat(5_000),
                target: None,
                origin: Origin::RequestToken,
            },
            state: PendingState::Swapped {
                received: 5,
                fee: 0,
            },
            attempts: 0,
            next_try_ms: 0,
        }
    }

    fn job(c: char) -> JobId {
        JobId::new(c.to_string().repeat(64)).unwrap()
    }

    #[test]
    fn a_tell_takes_its_jobs_rows_only_once() {
        let mut held = HeldCredits::default();
        assert!(held.hold(job('a'), row("t1"), 0));
        assert!(held.hold(job('a'), row("t2"), 0));
        assert!(held.hold(job('b'), row("t3"), 0));
        assert!(held.holds("t1") && held.holds("t3"));
        let mut taken: Vec<String> = held
            .take(&job('a'))
            .into_iter()
            .map(|r| r.nutzap.event_id)
            .collect();
        taken.sort();
        assert_eq!(taken, ["t1", "t2"]);
        assert!(held.take(&job('a')).is_empty());
        assert!(!held.holds("t1") && held.holds("t3"));
    }

    #[test]
    fn a_row_held_too_long_is_let_go_for_the_retry_timer() {
        let mut held = HeldCredits::default();
        held.hold(job('a'), row("old"), 1_000);
        held.hold(job('a'), row("new"), 1_000 + RECHECK_AFTER_MS);
        held.let_go_stale(1_000 + RECHECK_AFTER_MS);
        assert!(!held.holds("old"));
        assert!(held.holds("new"));
    }

    #[test]
    fn no_more_than_max_held_are_held_but_a_held_row_can_be_held_again() {
        let mut held = HeldCredits::default();
        for i in 0..MAX_HELD {
            assert!(held.hold(job('a'), row(&format!("t{i}")), 0));
        }
        assert!(!held.hold(job('b'), row("one more"), 0));
        assert!(
            held.hold(job('b'), row("t0"), 5),
            "the same row, held again"
        );
        assert_eq!(held.take(&job('b')).len(), 1);
    }
}
