//! What the core's shell tells [`Telemetry`] about the groups it writes: jobs received and the
//! states they reach, payments and settled refunds by rail, revenue, and the quote-to-payment,
//! payment-to-result and request-to-result latencies. Observed when a group is staged, told
//! only once its batch is on disk (a failed write tells nothing but the failure), so the
//! figures count what the ledger holds. Reads the ledger state; decides nothing.

use std::collections::HashMap;
use std::time::Duration;

use paydvm_ledger::footprint::footprint;
use paydvm_ledger::{Asset, EventBody, JobId, JobState, LedgerEvent, LedgerState, PaymentTarget};

use crate::node::telemetry::Telemetry;

/// One thing a staged group did.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Received { kind: u16 },
    Reached { kind: u16, state: JobState },
    Payment { rail: &'static str, msat: u64 },
    Refund { rail: &'static str, msat: u64 },
    Revenue { msat: u64 },
    QuoteToPayment(Duration),
    PaymentToResult(Duration),
    RequestToResult(Duration),
}

/// A touched job before its group: (state, revenue), `None` when it did not exist.
pub(super) type Before = Vec<(JobId, Option<(JobState, u64)>)>;

pub(super) struct Observer {
    telemetry: Telemetry,
    /// When each open quote of this run was issued (unix ms); gone when the job ends.
    quoted_at: HashMap<JobId, u64>,
    /// When each job of this run was last paid (unix ms); gone when the job ends.
    paid_at: HashMap<JobId, u64>,
    /// What the staged, unwritten groups did.
    pending: Vec<Seen>,
}

impl Observer {
    pub(super) fn new(telemetry: Telemetry) -> Observer {
        Observer {
            telemetry,
            quoted_at: HashMap::new(),
            paid_at: HashMap::new(),
            pending: Vec::new(),
        }
    }

    pub(super) fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The jobs `events` touch, as they are before the group is staged.
    pub(super) fn before(state: &LedgerState, events: &[LedgerEvent]) -> Before {
        let mut jobs: Vec<JobId> = Vec::new();
        for event in events {
            let f = footprint(&event.body);
            let direct = f.jobs.iter().map(|(job, _)| (*job).clone());
            let via_refund = f
                .refunds
                .iter()
                .filter_map(|(refund, _)| state.refund(refund).and_then(|r| r.job.clone()));
            for job in direct.chain(via_refund) {
                if !jobs.contains(&job) {
                    jobs.push(job);
                }
            }
        }
        jobs.into_iter()
            .map(|job| {
                let now = state.job(&job).map(|j| (j.state, j.revenue.as_msat()));
                (job, now)
            })
            .collect()
    }

    /// `events` (the new ones of a group) were staged: note what they did.
    pub(super) fn staged(&mut self, state: &LedgerState, events: &[&LedgerEvent], before: Before) {
        for event in events {
            self.event(state, event);
        }
        for (job, was) in before {
            let Some(now) = state.job(&job) else { continue };
            if was.is_none() {
                self.pending.push(Seen::Received { kind: now.kind });
            }
            let (was_state, was_revenue) = match was {
                Some((s, r)) => (Some(s), r),
                None => (None, 0),
            };
            if was_state != Some(now.state) {
                self.pending.push(Seen::Reached {
                    kind: now.kind,
                    state: now.state,
                });
            }
            let gained = now.revenue.as_msat().saturating_sub(was_revenue);
            if gained > 0 {
                self.pending.push(Seen::Revenue { msat: gained });
            }
            if now.state.is_terminal() {
                self.quoted_at.remove(&job);
                self.paid_at.remove(&job);
            }
        }
    }

    fn event(&mut self, state: &LedgerState, event: &LedgerEvent) {
        let at = event.at.0;
        match &event.body {
            EventBody::QuoteIssued { job, .. } => {
                self.quoted_at.insert(job.clone(), at);
            }
            EventBody::PaymentReceived(p) => {
                self.pending.push(Seen::Payment {
                    rail: p.rail.as_str(),
                    msat: p.amount.as_msat(),
                });
                if let PaymentTarget::Job { job, .. } = &p.target {
                    if let Some(quoted) = self.quoted_at.get(job) {
                        self.pending.push(Seen::QuoteToPayment(since(*quoted, at)));
                    }
                    self.paid_at.insert(job.clone(), at);
                }
            }
            EventBody::ResultPublished { job, .. } => {
                if let Some(paid) = self.paid_at.get(job) {
                    self.pending.push(Seen::PaymentToResult(since(*paid, at)));
                }
                if let Some(j) = state.job(job) {
                    let took = since(j.received_at.0, at);
                    self.pending.push(Seen::RequestToResult(took));
                }
            }
            EventBody::RefundSettled { refund, .. } => {
                if let Some(r) = state.refund(refund) {
                    let rail = match r.route.as_ref().map(|route| &route.asset) {
                        Some(Asset::Mint { .. }) => "ecash",
                        _ => "lightning",
                    };
                    self.pending.push(Seen::Refund {
                        rail,
                        msat: r.amount.as_msat(),
                    });
                }
            }
            _ => {}
        }
    }

    /// The batch was written in `took`: tell what its groups did.
    pub(super) fn written(&mut self, took: Duration) {
        let t = &self.telemetry;
        t.ledger_commit(took, true);
        for seen in self.pending.drain(..) {
            match seen {
                Seen::Received { kind } => t.job_received(kind),
                Seen::Reached { kind, state } => {
                    t.job_reached(kind, state.as_str(), state.is_terminal())
                }
                Seen::Payment { rail, msat } => t.payment(rail, msat),
                Seen::Refund { rail, msat } => t.refund(rail, msat),
                Seen::Revenue { msat } => t.revenue(msat),
                Seen::QuoteToPayment(d) => t.quote_to_payment(d),
                Seen::PaymentToResult(d) => t.payment_to_result(d),
                Seen::RequestToResult(d) => t.request_to_result(d),
            }
        }
    }

    /// The batch could not be written: nothing it did happened.
    pub(super) fn write_failed(&mut self, took: Duration) {
        self.telemetry.ledger_commit(took, false);
        self.pending.clear();
    }
}

fn since(from_ms: u64, to_ms: u64) -> Duration {
    Duration::from_millis(to_ms.saturating_sub(from_ms))
}
