//! One INFO line per step of a job (and of the money around it), logged by the shell once the
//! ledger events that make the step are on disk, so the log never tells a story the ledger
//! does not hold. Taken from the ledger events themselves, not from the decision code: whatever
//! decided them, a written `job_received` is a request received.
//!
//! Lines carry ids, kinds, rails and msat amounts; never a token, preimage or key. Job ids are
//! whole (they are what `paydvm audit` takes); customers are shortened.

use paydvm_ledger::{
    EventBody, JobPayment, LedgerEvent, PaymentOption, PaymentTarget, QueueReason,
};
use tracing::{debug, info, warn};

/// The log lines of a group, prepared at staging and said after the write.
#[derive(Debug)]
pub(super) struct Step {
    level: Level,
    job: Option<String>,
    text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Info,
    Warn,
}

impl Step {
    /// Says it (target `paydvm::job`, so `PAYDVM_LOG=paydvm::job=info` shows only the story).
    pub(super) fn log(&self) {
        let job = self.job.as_deref().unwrap_or("-");
        match self.level {
            Level::Info => info!(target: "paydvm::job", job, "{}", self.text),
            Level::Warn => warn!(target: "paydvm::job", job, "{}", self.text),
        }
    }
}

/// The steps `events` make, in order.
pub(super) fn steps(events: &[LedgerEvent]) -> Vec<Step> {
    events.iter().filter_map(|e| step(&e.body)).collect()
}

fn info(job: impl ToString, text: String) -> Option<Step> {
    Some(Step {
        level: Level::Info,
        job: Some(job.to_string()),
        text,
    })
}

fn warn_(job: Option<String>, text: String) -> Option<Step> {
    Some(Step {
        level: Level::Warn,
        job,
        text,
    })
}

fn step(body: &EventBody) -> Option<Step> {
    match body {
        EventBody::JobReceived {
            job,
            kind,
            customer,
            ..
        } => info(
            job,
            format!(
                "request received: kind {kind} from customer {}",
                short(customer.as_str())
            ),
        ),
        EventBody::JobRejected { job, reason } => info(job, format!("rejected: {reason}")),
        EventBody::QuoteIssued {
            job,
            amount,
            options,
            ..
        } => info(
            job,
            format!(
                "quoted {} msat, payable by {}",
                amount.as_msat(),
                rails(options)
            ),
        ),
        EventBody::PaymentReceived(p) => payment(p),
        EventBody::QuoteExpired { job, .. } => info(job, "quote expired unpaid".into()),
        EventBody::JobCancelled { job, .. } => info(job, "cancelled by the customer".into()),
        EventBody::JobQueued { job, reason } => info(job, format!("queued ({})", queued(reason))),
        EventBody::ProcessingStarted { job, attempt } => {
            info(job, format!("processing (attempt {attempt})"))
        }
        EventBody::ProcessingFailed {
            job,
            attempt,
            retryable,
            reason,
        } => warn_(
            Some(job.to_string()),
            format!(
                "attempt {attempt} failed{}: {reason}",
                if *retryable { " (will retry)" } else { "" }
            ),
        ),
        EventBody::JobClosed { job, reason } => info(job, format!("closed: {reason}")),
        EventBody::ResultPublished { job, result_event } => {
            info(job, format!("result published (event {result_event})"))
        }
        EventBody::CreditGranted { job } => info(
            job,
            "failed; what it held became the customer's credit".into(),
        ),
        other => refund_step(other),
    }
}

fn refund_step(body: &EventBody) -> Option<Step> {
    let refund = |r: &paydvm_ledger::RefundId, text: String| {
        Some(Step {
            level: Level::Info,
            job: None,
            text: format!("refund {r}: {text}"),
        })
    };
    match body {
        EventBody::RefundDue { job, refund: r, .. } => info(job, format!("failed; refund {r} due")),
        EventBody::RefundStarted {
            refund: r,
            attempt,
            route,
        } => refund(
            r,
            format!("paying over {} (attempt {attempt})", route.asset),
        ),
        EventBody::RefundSettled { refund: r, fee, .. } => {
            refund(r, format!("refunded (fee {} msat)", fee.as_msat()))
        }
        EventBody::RefundOutcomeUnknown { refund: r, reason } => warn_(
            None,
            format!("refund {r}: outcome unknown, will look it up: {reason}"),
        ),
        EventBody::RefundFailed {
            refund: r, reason, ..
        } => warn_(None, format!("refund {r}: payment failed: {reason}")),
        EventBody::RefundWrittenOff { refund: r, to, .. } => {
            refund(r, format!("written off to {to:?}"))
        }
        EventBody::RefundDeferred { refund: r, reason } => {
            // The desks say this once per refund (rate-limited); the ledger's copy is detail.
            debug!(refund = %r, "refund deferred: {reason}");
            None
        }
        _ => None,
    }
}

fn payment(p: &paydvm_ledger::Payment) -> Option<Step> {
    let (rail, msat) = (p.rail.as_str(), p.amount.as_msat());
    match &p.target {
        PaymentTarget::Job { job, booking } => {
            let how = match booking {
                JobPayment::Apply { .. } => "",
                JobPayment::Whole(_) => " (not applied to the job: refunded or credited)",
            };
            info(job, format!("payment verified: {msat} msat by {rail}{how}"))
        }
        PaymentTarget::Credit { pubkey } => info(
            "-",
            format!(
                "payment verified: {msat} msat by {rail} as credit for {}",
                short(pubkey.as_str())
            ),
        ),
        PaymentTarget::Subscription { subscription } => info(
            "-",
            format!("payment verified: {msat} msat by {rail} for subscription {subscription}"),
        ),
        PaymentTarget::Unmatched { reason } => warn_(
            None,
            format!("payment verified but matches nothing: {msat} msat by {rail}: {reason}"),
        ),
    }
}

fn rails(options: &[PaymentOption]) -> String {
    if options.is_empty() {
        return "nothing offered".into();
    }
    let names: Vec<&str> = options
        .iter()
        .map(|o| match o {
            PaymentOption::Invoice { .. } => "invoice",
            PaymentOption::Zap { .. } => "zap",
            PaymentOption::NutZap => "nutzap",
            PaymentOption::CashuToken => "cashu token",
        })
        .collect();
    names.join(", ")
}

fn queued(reason: &QueueReason) -> String {
    match reason {
        QueueReason::Free => "free".into(),
        QueueReason::Paid => "paid".into(),
        QueueReason::CreditDebit { amount } => format!("{} msat from credit", amount.as_msat()),
        QueueReason::Entitlement { subscription } => format!("subscription {subscription}"),
        QueueReason::Retry => "retry".into(),
    }
}

/// The first 12 hex digits of a public key: enough to tell customers apart in a log.
fn short(hex: &str) -> String {
    hex.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use paydvm_ledger::{EventId, IdemKey, JobId, Msat, Pubkey, UnixMs};

    use super::*;

    fn ev(body: EventBody) -> LedgerEvent {
        LedgerEvent::new(IdemKey::new("k").unwrap(), UnixMs(1), body)
    }

    #[test]
    fn a_job_reads_as_received_quoted_and_done_without_the_request_text() {
        let job = JobId::new("ab".repeat(32)).unwrap();
        let events = [
            ev(EventBody::JobReceived {
                job: job.clone(),
                request_event: EventId::new("ab".repeat(32)).unwrap(),
                customer: Pubkey::new("cd".repeat(32)).unwrap(),
                kind: 5050,
                request: Some("{\"secret\":\"do not log\"}".into()),
            }),
            ev(EventBody::QuoteIssued {
                job: job.clone(),
                amount: Msat::from_msat(10_000),
                expires_at: UnixMs(2),
                options: vec![PaymentOption::Invoice {
                    payment_hash: "h".into(),
                    bolt11: "lnbc1".into(),
                }],
            }),
        ];
        let steps = steps(&events);
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].job.as_deref(), Some(job.as_str()));
        assert_eq!(
            steps[0].text,
            "request received: kind 5050 from customer cdcdcdcdcdcd"
        );
        assert!(!steps[0].text.contains("do not log"));
        assert_eq!(steps[1].text, "quoted 10000 msat, payable by invoice");
    }
}
