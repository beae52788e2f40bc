//! What the decision core remembers between inputs. Never money (that is the ledger's), only
//! work in progress in this run: requests of jobs that may still run, attempts and invoices in
//! flight, what each open refund waits for, effects the outbox gave up on. All of it is rebuilt
//! from the ledger at start-up ([`super::Input::Restarted`]); none of it outlives its job.

use std::collections::{BTreeMap, HashMap, HashSet};

use paydvm_ledger::{Asset, EffectId, JobId, RefundId, SubscriptionId, UnixMs};

use super::{Action, JobRequest, RefundRouteOrder, SubscribeRequest};
use crate::lightning::refund::RefundAddress;

/// What the core is doing about one open refund. After a restart every open refund is looked at
/// afresh (in flight or unknown → look up; due or failed → route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundTask {
    /// A desk is finding a route; `tries` deferrals so far, for the back-off.
    Routing { tries: u32 },
    /// `refund_started` is staged or written; the desk pays once it is on disk.
    Paying,
    /// A desk is looking the payment up (or running the ecash attempt again).
    LookingUp,
    /// Route again at this time.
    RetryAt { at: UnixMs, tries: u32 },
    /// Look the payment up again at this time (its outcome could not be booked).
    LookUpAt { at: UnixMs, tries: u32 },
    /// Waits for the operator (too many failed attempts, no rail for the asset).
    Parked,
}

#[derive(Debug, Clone, Default)]
pub struct Memory {
    pub(super) requests: HashMap<JobId, JobRequest>,
    /// Jobs whose executor runs here, with the attempt it runs (which may have become stale:
    /// another node on the database counted it interrupted and started the next).
    pub(super) running: HashMap<JobId, u32>,
    pub(super) awaiting_invoice: HashSet<JobId>,
    /// What the quote of a job awaiting its invoice will say besides (a subscription that does
    /// not cover it).
    pub(super) quote_notes: HashMap<JobId, String>,
    pub(super) refund_tasks: HashMap<RefundId, RefundTask>,
    pub(super) gave_up: HashMap<EffectId, UnixMs>,
    /// Where a job's Lightning refund goes, kept while the job may owe one.
    pub(super) refund_to: HashMap<JobId, RefundAddress>,
    /// For refunds written by older nodes (no asset recorded): the asset the job's payments
    /// came in on, worked out by the shell at start-up; `None`: paid from prepaid credit.
    pub(super) legacy_sources: HashMap<RefundId, Option<Asset>>,
    /// Subscribe requests whose first invoice the backend is making (nothing is recorded
    /// before the quote; a restart loses them and the request is quoted when seen again).
    pub(super) awaiting_subscription_invoice: HashMap<SubscriptionId, SubscribeRequest>,
    /// Jobs whose `processing` feedback waits (`results.processing_feedback_after_secs`), and
    /// when it is due; sent at the first tick after if the job is still queued or running, and
    /// removed then either way (so at most the jobs queued within one wait). A restart forgets
    /// them: those jobs get their result (or error) without it.
    pub(super) processing_feedback_due: BTreeMap<JobId, UnixMs>,
}

impl Memory {
    /// Requests held (jobs that may still run or be answered).
    pub fn requests(&self) -> usize {
        self.requests.len()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Whether the request of `job` is held (its reply context is still needed).
    pub fn holds(&self, job: &JobId) -> bool {
        self.requests.contains_key(job)
    }

    pub fn is_running(&self, job: &JobId) -> bool {
        self.running.contains_key(job)
    }

    /// Whether this node runs `attempt` of `job`.
    pub(super) fn runs(&self, job: &JobId, attempt: u32) -> bool {
        self.running.get(job) == Some(&attempt)
    }

    /// The executor of `attempt` is done (or will not run): forgotten unless a later attempt
    /// of the job runs here since.
    pub(super) fn ran(&mut self, job: &JobId, attempt: u32) {
        if self.runs(job, attempt) {
            self.running.remove(job);
        }
    }

    /// Remembers `request` (the first one seen wins: relays may differ only in the hint).
    pub(super) fn keep(&mut self, request: JobRequest) {
        if let Some(to) = &request.refund_to {
            self.refund_to.insert(request.job.clone(), to.clone());
        }
        self.requests.entry(request.job.clone()).or_insert(request);
    }

    /// The job is over for the executor and the customer: its request goes.
    pub(super) fn drop_request(&mut self, job: &JobId) {
        self.requests.remove(job);
        self.quote_notes.remove(job);
    }

    /// Undoes what was remembered for actions that will not happen.
    pub(super) fn forget(&mut self, actions: &[Action]) {
        for action in actions {
            match action {
                Action::RunExecutor { work, attempt } => {
                    if let Ok(job) = JobId::new(work.id.clone()) {
                        self.ran(&job, *attempt);
                    }
                }
                Action::RequestInvoice { job, .. } => {
                    self.awaiting_invoice.remove(job);
                    self.quote_notes.remove(job);
                }
                Action::RouteRefund(RefundRouteOrder::Lightning { refund, .. })
                | Action::RouteRefund(RefundRouteOrder::Ecash { refund, .. })
                | Action::PayRefund { refund, .. }
                | Action::LookUpRefund { refund, .. } => {
                    self.refund_tasks.remove(refund);
                }
                Action::RequestSubscriptionInvoice { subscription, .. } => {
                    self.awaiting_subscription_invoice.remove(subscription);
                }
                Action::WatchInvoice { .. }
                | Action::WatchSubscriptionInvoice { .. }
                | Action::AbandonRoute { .. }
                | Action::Resend(_)
                | Action::Forget(_) => {}
            }
        }
    }
}
