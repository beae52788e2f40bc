//! The job state machine: one table of allowed transitions, everything else rejected.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::is_zero_msat;
use crate::held::AssetAmount;
use crate::ids::{EventId, JobId, Pubkey, RefundId, UnixMs};
use crate::money::Msat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Received,
    Rejected,
    Quoted,
    PartiallyPaid,
    Paid,
    Expired,
    Cancelled,
    Queued,
    Processing,
    Failed,
    FailedFinal,
    Succeeded,
    RefundDue,
    Refunding,
    RefundPending,
    RefundFailed,
    Refunded,
    Credited,
    WrittenOff,
}

impl JobState {
    pub const ALL: [JobState; 19] = [
        JobState::Received,
        JobState::Rejected,
        JobState::Quoted,
        JobState::PartiallyPaid,
        JobState::Paid,
        JobState::Expired,
        JobState::Cancelled,
        JobState::Queued,
        JobState::Processing,
        JobState::Failed,
        JobState::FailedFinal,
        JobState::Succeeded,
        JobState::RefundDue,
        JobState::Refunding,
        JobState::RefundPending,
        JobState::RefundFailed,
        JobState::Refunded,
        JobState::Credited,
        JobState::WrittenOff,
    ];

    /// No transition leaves a terminal state except a late payment reviving an expired quote.
    /// A job in a terminal state must hold zero.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Rejected
                | JobState::Expired
                | JobState::Cancelled
                | JobState::FailedFinal
                | JobState::Succeeded
                | JobState::Refunded
                | JobState::Credited
                | JobState::WrittenOff
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Received => "received",
            JobState::Rejected => "rejected",
            JobState::Quoted => "quoted",
            JobState::PartiallyPaid => "partially_paid",
            JobState::Paid => "paid",
            JobState::Expired => "expired",
            JobState::Cancelled => "cancelled",
            JobState::Queued => "queued",
            JobState::Processing => "processing",
            JobState::Failed => "failed",
            JobState::FailedFinal => "failed_final",
            JobState::Succeeded => "succeeded",
            JobState::RefundDue => "refund_due",
            JobState::Refunding => "refunding",
            JobState::RefundPending => "refund_pending",
            JobState::RefundFailed => "refund_failed",
            JobState::Refunded => "refunded",
            JobState::Credited => "credited",
            JobState::WrittenOff => "written_off",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an event asks of a job, after the core has classified it (e.g. a payment that completes
/// the price versus one that does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobInput {
    Reject,
    Quote,
    PayPartial,
    PayComplete,
    Expire,
    ExpireRefund,
    ExpireCredit,
    Cancel,
    CancelRefund,
    CancelCredit,
    QueueFree,
    QueueCredit,
    QueueEntitlement,
    QueuePaid,
    QueueRetry,
    Start,
    Fail,
    Close,
    Publish,
    RefundDue,
    Credit,
    RefundStart,
    RefundSettle,
    RefundUnknown,
    RefundFail,
    WriteOffCredit,
    WriteOffIncome,
}

impl JobInput {
    pub fn as_str(self) -> &'static str {
        match self {
            JobInput::Reject => "reject",
            JobInput::Quote => "quote",
            JobInput::PayPartial => "pay_partial",
            JobInput::PayComplete => "pay_complete",
            JobInput::Expire => "expire",
            JobInput::ExpireRefund => "expire_refund",
            JobInput::ExpireCredit => "expire_credit",
            JobInput::Cancel => "cancel",
            JobInput::CancelRefund => "cancel_refund",
            JobInput::CancelCredit => "cancel_credit",
            JobInput::QueueFree => "queue_free",
            JobInput::QueueCredit => "queue_credit",
            JobInput::QueueEntitlement => "queue_entitlement",
            JobInput::QueuePaid => "queue_paid",
            JobInput::QueueRetry => "queue_retry",
            JobInput::Start => "start",
            JobInput::Fail => "fail",
            JobInput::Close => "close",
            JobInput::Publish => "publish",
            JobInput::RefundDue => "refund_due",
            JobInput::Credit => "credit",
            JobInput::RefundStart => "refund_start",
            JobInput::RefundSettle => "refund_settle",
            JobInput::RefundUnknown => "refund_unknown",
            JobInput::RefundFail => "refund_fail",
            JobInput::WriteOffCredit => "write_off_credit",
            JobInput::WriteOffIncome => "write_off_income",
        }
    }
}

use JobInput as I;
use JobState as S;

/// Every allowed transition. Anything not listed is rejected with a typed error.
pub const TRANSITIONS: &[(JobState, JobInput, JobState)] = &[
    (S::Received, I::Reject, S::Rejected),
    (S::Received, I::Quote, S::Quoted),
    (S::Received, I::QueueFree, S::Queued),
    (S::Received, I::QueueCredit, S::Queued),
    (S::Received, I::QueueEntitlement, S::Queued),
    (S::Received, I::Cancel, S::Cancelled),
    (S::Quoted, I::PayPartial, S::PartiallyPaid),
    (S::Quoted, I::PayComplete, S::Paid),
    (S::Quoted, I::Expire, S::Expired),
    (S::Quoted, I::Cancel, S::Cancelled),
    (S::PartiallyPaid, I::PayPartial, S::PartiallyPaid),
    (S::PartiallyPaid, I::PayComplete, S::Paid),
    (S::PartiallyPaid, I::ExpireRefund, S::RefundDue),
    (S::PartiallyPaid, I::ExpireCredit, S::Credited),
    (S::PartiallyPaid, I::CancelRefund, S::RefundDue),
    (S::PartiallyPaid, I::CancelCredit, S::Credited),
    (S::Expired, I::PayPartial, S::PartiallyPaid),
    (S::Expired, I::PayComplete, S::Paid),
    (S::Paid, I::QueuePaid, S::Queued),
    (S::Paid, I::CancelRefund, S::RefundDue),
    (S::Paid, I::CancelCredit, S::Credited),
    (S::Queued, I::Start, S::Processing),
    (S::Queued, I::Cancel, S::Cancelled),
    (S::Queued, I::CancelRefund, S::RefundDue),
    (S::Queued, I::CancelCredit, S::Credited),
    (S::Processing, I::Fail, S::Failed),
    (S::Processing, I::Publish, S::Succeeded),
    (S::Failed, I::QueueRetry, S::Queued),
    (S::Failed, I::RefundDue, S::RefundDue),
    (S::Failed, I::Credit, S::Credited),
    (S::Failed, I::Close, S::FailedFinal),
    (S::RefundDue, I::RefundStart, S::Refunding),
    (S::Refunding, I::RefundSettle, S::Refunded),
    (S::Refunding, I::RefundUnknown, S::RefundPending),
    (S::Refunding, I::RefundFail, S::RefundFailed),
    (S::RefundPending, I::RefundSettle, S::Refunded),
    (S::RefundPending, I::RefundFail, S::RefundFailed),
    (S::RefundFailed, I::RefundStart, S::Refunding),
    (S::RefundDue, I::WriteOffCredit, S::Credited),
    (S::RefundDue, I::WriteOffIncome, S::WrittenOff),
    (S::RefundFailed, I::WriteOffCredit, S::Credited),
    (S::RefundFailed, I::WriteOffIncome, S::WrittenOff),
];

/// The state `input` leads to from `from`, or `None` when the table does not allow it.
pub fn next_state(from: JobState, input: JobInput) -> Option<JobState> {
    TRANSITIONS
        .iter()
        .find(|(f, i, _)| *f == from && *i == input)
        .map(|(_, _, to)| *to)
}

/// Everything the ledger knows about one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job: JobId,
    pub request_event: EventId,
    pub customer: Pubkey,
    pub kind: u16,
    pub received_at: UnixMs,
    pub state: JobState,
    pub price: Option<Msat>,
    pub expires_at: Option<UnixMs>,
    /// Paid toward the current quote.
    pub applied: Msat,
    /// Every payment that named this job, and credit debited into it, whatever became of it.
    pub funded_total: Msat,
    /// Every refund obligation created from this job's money.
    pub refunded_total: Msat,
    /// Revenue recognised from this job.
    pub revenue: Msat,
    pub attempts: u32,
    /// The refund whose progress the job's own state follows.
    pub refund: Option<RefundId>,
    pub result_event: Option<EventId>,
    /// What the job holds now that came from payments, per asset (amounts applied to the
    /// price; an excess or a whole payment is never held). Sorted by asset. Emptied when the
    /// held money is released (refund, credit, revenue).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_assets: Vec<AssetAmount>,
    /// What the job holds now that came from the customer's prepaid credit.
    #[serde(default, skip_serializing_if = "is_zero_msat")]
    pub held_credit: Msat,
    /// The subscription whose quota the job used (until a failure gives the unit back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement: Option<crate::ids::SubscriptionId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snake(name: &str) -> String {
        let mut out = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    #[test]
    fn state_machine_doc_matches_the_table() {
        let doc = include_str!("../../docs/state-machine.md");
        let rows: Vec<&str> = doc
            .lines()
            .skip_while(|l| !l.starts_with("| from | input | to |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .collect();
        let expected: Vec<String> = TRANSITIONS
            .iter()
            .map(|(f, i, t)| format!("| {} | {} | {} |", f.as_str(), i.as_str(), t.as_str()))
            .collect();
        assert_eq!(rows, expected, "docs/state-machine.md is out of date");
        for (f, i, _) in TRANSITIONS {
            assert_eq!(snake(&format!("{f:?}")), f.as_str());
            assert_eq!(snake(&format!("{i:?}")), i.as_str());
        }
    }

    #[test]
    fn table_is_a_function_and_terminal_states_are_left_only_by_a_revival() {
        for (n, (f, i, _)) in TRANSITIONS.iter().enumerate() {
            assert!(
                !TRANSITIONS[n + 1..]
                    .iter()
                    .any(|(f2, i2, _)| f2 == f && i2 == i),
                "({f}, {}) listed twice",
                i.as_str()
            );
            if f.is_terminal() {
                assert_eq!(*f, JobState::Expired, "{f} is terminal but has a way out");
                assert!(matches!(i, JobInput::PayPartial | JobInput::PayComplete));
            }
        }
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
    }
}
