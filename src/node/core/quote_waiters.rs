//! Rails waiting for a job to leave `received`: a Cashu token reaches the Cashu rail with its
//! request, usually before the job's quote is written (its invoice is still being made); it is
//! swapped at once but can only be credited to a quoted job. Rather than polling, the rail asks
//! the core to tell it the moment the quote is written ([`super::Command::WhenQuoted`]); its
//! retry timer stays as the fallback (a full waiting list or a full channel here drops the tell,
//! never the payment: a dropped tell is never taken for "quoted").

use paydvm_ledger::{JobId, JobState, LedgerState};
use tokio::sync::mpsc;
use tracing::debug;

/// At most this many waiting at once; more wait on the rail's timer alone.
pub(super) const MAX_WAITING: usize = 1024;

/// Who is told when which job leaves `received`.
#[derive(Default)]
pub(super) struct QuoteWaiters {
    waiting: Vec<(JobId, mpsc::Sender<JobId>)>,
}

impl QuoteWaiters {
    /// `tell` hears `job`'s id once the job is past `received` in `state`: at once if it is
    /// already (quoted, refused, ended, or not held in memory: the rail reads the record
    /// itself), else after the write that moves it.
    pub(super) fn add(&mut self, job: JobId, tell: mpsc::Sender<JobId>, state: &LedgerState) {
        if !is_received(state, &job) {
            let _ = tell.try_send(job);
        } else if self.waiting.len() < MAX_WAITING {
            self.waiting.push((job, tell));
        } else {
            debug!(%job, "too many waiting for quotes; this one waits on its rail's timer");
        }
    }

    /// After a write: tells those whose job left `received`, and forgets waiters gone away.
    pub(super) fn written(&mut self, state: &LedgerState) {
        if self.waiting.is_empty() {
            return;
        }
        self.waiting.retain(|(job, tell)| {
            if tell.is_closed() {
                return false;
            }
            if is_received(state, job) {
                return true;
            }
            // A full channel drops the tell: the rail's retry timer takes the held row later.
            let _ = tell.try_send(job.clone());
            false
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.len()
    }
}

fn is_received(state: &LedgerState, job: &JobId) -> bool {
    state
        .job(job)
        .is_some_and(|record| record.state == JobState::Received)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lightning::IssuedInvoice;
    use crate::node::decide::harness::{job_id, rails, request, Harness};
    use crate::node::decide::{Action, Input};

    /// A job `seed` that arrived and waits for its invoice (the Lightning rail is on).
    fn waiting(h: &mut Harness, seed: &str) -> Input {
        let out = h.input(Input::RequestArrived(Box::new(request(
            seed, "alice", 5050,
        ))));
        let Some(Action::RequestInvoice {
            amount, expires_at, ..
        }) = out.actions.first().cloned()
        else {
            panic!("no invoice asked for: {out:?}");
        };
        Input::InvoiceIssued {
            job: job_id(seed),
            amount,
            expires_at,
            invoice: Ok(IssuedInvoice {
                bolt11: "lnbcrt100n1test".into(),
                payment_hash: crate::node::decide::harness::hex(seed),
            }),
        }
    }

    fn harness() -> Harness {
        let mut r = rails();
        r.invoices = true;
        Harness::new(r)
    }

    #[test]
    fn a_waiter_hears_its_job_once_after_the_write_that_quotes_it() {
        let mut h = harness();
        let issued = waiting(&mut h, "a");
        waiting(&mut h, "b");
        let (tell, mut heard) = mpsc::channel(8);
        let mut w = QuoteWaiters::default();
        w.add(job_id("a"), tell.clone(), h.state());
        w.add(job_id("b"), tell, h.state());
        w.written(h.state());
        assert!(heard.try_recv().is_err(), "nothing quoted yet");

        h.input(issued);
        w.written(h.state());
        assert_eq!(heard.try_recv().ok(), Some(job_id("a")));
        assert!(heard.try_recv().is_err(), "b is still waiting");
        assert_eq!(w.len(), 1);
        w.written(h.state());
        assert!(heard.try_recv().is_err(), "told once");
    }

    #[test]
    fn a_job_already_past_received_or_not_held_is_told_at_once() {
        let mut h = harness();
        let issued = waiting(&mut h, "a");
        h.input(issued);
        let (tell, mut heard) = mpsc::channel(8);
        let mut w = QuoteWaiters::default();
        w.add(job_id("a"), tell.clone(), h.state());
        w.add(job_id("unknown"), tell, h.state());
        assert_eq!(heard.try_recv().ok(), Some(job_id("a")));
        assert_eq!(heard.try_recv().ok(), Some(job_id("unknown")));
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn waiters_are_bounded_and_a_closed_one_is_forgotten() {
        let mut h = harness();
        waiting(&mut h, "a");
        let mut w = QuoteWaiters::default();
        let (tell, heard) = mpsc::channel(1);
        for _ in 0..MAX_WAITING + 5 {
            w.add(job_id("a"), tell.clone(), h.state());
        }
        assert_eq!(w.len(), MAX_WAITING);
        drop(heard);
        w.written(h.state());
        assert_eq!(w.len(), 0);
    }
}
