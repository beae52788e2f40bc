//! A request arrives: admitted (free, from credit, or quoted with an invoice), rejected with a
//! reason, or — when the job exists already — resumed where it stood.

use paydvm_ledger::{
    Account, EventBody, EventId, JobId, JobRecord, JobState, LedgerEvent, Msat, PaymentOption,
    Pubkey, QueueReason, UnixMs,
};
use paydvm_policies::{Admission, AdmissionFacts, InputMeasure, PriceDecision};

use super::memory::Memory;
use super::subscription::{self, Entitled};
use super::{
    exec, keys, Action, Ctx, Decided, Decision, ExecFailure, Group, JobRequest, ReplyKind,
};
use crate::job::Job;
use crate::lightning::IssuedInvoice;

pub(super) fn arrived(ctx: &Ctx, m: &mut Memory, request: JobRequest) -> Decided {
    if !ctx.rails.offered.contains(&request.work.kind) {
        return Ok(Decision::default());
    }
    match ctx.ledger.job(&request.job).cloned() {
        Some(record) => seen_again(ctx, m, record, request),
        None => admit(ctx, m, request),
    }
}

/// A request whose job exists (second relay, restart, catch-up): nothing new is recorded, but a
/// job left queued or processing by a previous run is resumed.
pub(super) fn seen_again(
    ctx: &Ctx,
    m: &mut Memory,
    record: JobRecord,
    request: JobRequest,
) -> Decided {
    let job = record.job.clone();
    // Running the current attempt here: left alone. An attempt this node still runs that is
    // not the current one (another node counted it interrupted) does not hold the job.
    if record.state == JobState::Processing && m.runs(&job, record.attempts) {
        return Ok(Decision::default());
    }
    match record.state {
        JobState::Queued => {
            m.keep(request);
            let group = exec::start(ctx, m, &job, record.attempts, Group::default())?;
            Ok(Decision::group(group))
        }
        JobState::Processing if ctx.rails.shared.contains(&record.kind) => {
            m.keep(request);
            Ok(Decision::actions(exec::resume(m, &job, record.attempts)))
        }
        JobState::Processing => {
            m.keep(request);
            let interrupted = ExecFailure {
                reason: "interrupted by restart".into(),
                retryable: true,
            };
            exec::fail(ctx, m, &job, record.attempts, interrupted)
        }
        JobState::Received => {
            m.keep(request);
            requote(ctx, m, &job)
        }
        JobState::Quoted | JobState::PartiallyPaid | JobState::Paid | JobState::Expired => {
            m.keep(request);
            Ok(Decision::default())
        }
        _ => Ok(Decision::default()),
    }
}

fn admit(ctx: &Ctx, m: &mut Memory, request: JobRequest) -> Decided {
    let kind = request.work.kind;
    let admission = ctx.policy.admit(&AdmissionFacts {
        customer_pubkey: request.customer.as_str(),
        kind,
        input_bytes: request.work.input_bytes(),
        pending_quotes: pending_quotes(ctx, &request.customer),
    });
    let price = match admission {
        Admission::Reject(reason) => return reject(ctx, request, reason.to_string()),
        Admission::FreeListed => PriceDecision::Free,
        Admission::Priced => match ctx.policy.price(kind, &measure(&request.work)) {
            Ok(p) => p,
            Err(e) => return reject(ctx, request, e.to_string()),
        },
    };
    match price {
        PriceDecision::NotOffered => {
            let reason = format!("job kind {kind} is not offered by this service");
            reject(ctx, request, reason)
        }
        PriceDecision::Free => queue(ctx, m, request, QueueReason::Free),
        PriceDecision::Charge(amount) => {
            // A subscriber's job of a covered kind runs on the subscription's quota.
            let note = match subscription::entitled(ctx, &request.customer, kind) {
                Entitled::Yes(subscription) => {
                    return queue(ctx, m, request, QueueReason::Entitlement { subscription })
                }
                Entitled::No(why) => Some(why),
                Entitled::NoSubscription => None,
            };
            if request.bid.is_some_and(|bid| bid < amount) {
                let reason = format!("bid below price: {} msat", amount.as_msat());
                return reject(ctx, request, reason);
            }
            let credit = ctx.ledger.held(&Account::Credit(request.customer.clone()));
            if credit >= amount {
                queue(ctx, m, request, QueueReason::CreditDebit { amount })
            } else {
                quote(ctx, m, request, amount, note)
            }
        }
    }
}

/// Quotes the customer has open (or in the making: a job waiting for its invoice counts, so a
/// burst of requests cannot have the wallet make invoices past the limit).
fn pending_quotes(ctx: &Ctx, customer: &Pubkey) -> u32 {
    let open = |j: &&JobRecord| j.expires_at.is_none_or(|e| e > ctx.now);
    // From the per-customer index: received or quoted jobs of this customer only.
    ctx.ledger.pending_quotes_of(customer).filter(open).count() as u32
}

/// `job_received`; `keep` stores the request with it, for a job that may still run.
fn received(
    request: &JobRequest,
    at: UnixMs,
    keep: bool,
) -> Result<LedgerEvent, super::DecideError> {
    let stored = request
        .stored
        .as_ref()
        .filter(|s| keep && s.len() <= paydvm_ledger::MAX_PAYLOAD_LEN)
        .cloned();
    Ok(LedgerEvent::new(
        keys::received(&request.job)?,
        at,
        EventBody::JobReceived {
            job: request.job.clone(),
            request_event: EventId::new(request.job.as_str())?,
            customer: request.customer.clone(),
            kind: request.work.kind,
            request: stored,
        },
    ))
}

fn reject(ctx: &Ctx, request: JobRequest, reason: String) -> Decided {
    let received = received(&request, ctx.now, false)?;
    rejected(ctx, request.job, received, reason)
}

/// `job_received` and `job_rejected` with the error reply, in one group; the request goes.
fn rejected(ctx: &Ctx, job: JobId, received: LedgerEvent, reason: String) -> Decided {
    let rejected = LedgerEvent::new(
        keys::rejected(&job)?,
        ctx.now,
        EventBody::JobRejected {
            job: job.clone(),
            reason: reason.clone(),
        },
    );
    let group = Group::new(vec![received, rejected])
        .reply(&job, ReplyKind::Error { reason })
        .then(Action::Forget(job));
    Ok(Decision::group(group))
}

/// A request of an offered kind that does not parse: recorded as received and rejected, with an
/// error reply (the adapter builds it from the raw event).
pub(super) fn unparsable(
    ctx: &Ctx,
    job: JobId,
    customer: Pubkey,
    kind: u16,
    reason: String,
) -> Decided {
    if !ctx.rails.offered.contains(&kind) || ctx.ledger.job(&job).is_some() {
        return Ok(Decision::default());
    }
    let received = LedgerEvent::new(
        keys::received(&job)?,
        ctx.now,
        EventBody::JobReceived {
            job: job.clone(),
            request_event: EventId::new(job.as_str())?,
            customer,
            kind,
            request: None,
        },
    );
    rejected(ctx, job, received, reason)
}

fn queue(ctx: &Ctx, m: &mut Memory, request: JobRequest, reason: QueueReason) -> Decided {
    let job = request.job.clone();
    let queued = LedgerEvent::new(
        keys::queued(&job, 0)?,
        ctx.now,
        EventBody::JobQueued {
            job: job.clone(),
            reason,
        },
    );
    let group = Group::new(vec![received(&request, ctx.now, true)?, queued]);
    let group = match ctx.policy.processing_feedback_after_ms() {
        0 => group.reply(&job, ReplyKind::Processing),
        after => {
            let due = UnixMs(ctx.now.0.saturating_add(after));
            m.processing_feedback_due.insert(job.clone(), due);
            group
        }
    };
    m.keep(request);
    Ok(Decision::group(exec::start(ctx, m, &job, 0, group)?))
}

/// A priced job is quoted; `note` (why a subscription does not cover it) goes into the quote.
fn quote(
    ctx: &Ctx,
    m: &mut Memory,
    request: JobRequest,
    amount: Msat,
    note: Option<String>,
) -> Decided {
    let expires_at = UnixMs(ctx.policy.quote_expires_at(ctx.now.0)?);
    let job = request.job.clone();
    let received = received(&request, ctx.now, true)?;
    m.keep(request);
    if ctx.rails.invoices {
        // The job waits in `received` while the backend makes its invoice (off the core's
        // thread); the quote follows in its own group.
        m.awaiting_invoice.insert(job.clone());
        if let Some(note) = note {
            m.quote_notes.insert(job.clone(), note);
        }
        let group = Group::new(vec![received]).then(Action::RequestInvoice {
            job,
            amount,
            expires_at,
        });
        return Ok(Decision::group(group));
    }
    issue_quote(ctx, &job, amount, expires_at, None, note, Some(received))
}

/// `quote_issued` (with the invoice as a payment option, if any) and the payment-required reply
/// in one group; then the invoice is watched. The reply's note says why a subscription does not
/// cover the job and why there is no invoice, when there is something to say (a backend is
/// configured and made none).
fn issue_quote(
    ctx: &Ctx,
    job: &JobId,
    amount: Msat,
    expires_at: UnixMs,
    invoice: Option<IssuedInvoice>,
    note: Option<String>,
    received: Option<LedgerEvent>,
) -> Decided {
    let quoted = LedgerEvent::new(
        keys::quoted(job)?,
        ctx.now,
        EventBody::QuoteIssued {
            job: job.clone(),
            amount,
            expires_at,
            options: invoice_options(invoice.as_ref()),
        },
    );
    let reply = ReplyKind::PaymentRequired {
        amount,
        bolt11: invoice.as_ref().map(|i| i.bolt11.clone()),
        expires_at: Some(expires_at),
        note,
    };
    let mut group = Group::new(received.into_iter().chain([quoted]).collect()).reply(job, reply);
    if let Some(invoice) = invoice {
        group = group.then(Action::WatchInvoice {
            job: job.clone(),
            invoice,
            expires_at,
        });
    }
    Ok(Decision::group(group))
}

/// A quote's payment options: its invoice, if it has one (zaps, NutZaps and tokens need none).
pub(super) fn invoice_options(invoice: Option<&IssuedInvoice>) -> Vec<PaymentOption> {
    invoice
        .map(|i| PaymentOption::Invoice {
            payment_hash: i.payment_hash.clone(),
            bolt11: i.bolt11.clone(),
        })
        .into_iter()
        .collect()
}

/// The invoice for a job that waited in `received` (already checked by the shell), or none.
pub(super) fn invoice_issued(
    ctx: &Ctx,
    m: &mut Memory,
    job: JobId,
    amount: Msat,
    expires_at: UnixMs,
    invoice: Result<IssuedInvoice, String>,
) -> Decided {
    m.awaiting_invoice.remove(&job);
    let note = m.quote_notes.remove(&job);
    let waiting = ctx.ledger.job(&job).map(|r| r.state) == Some(JobState::Received);
    if !waiting || !m.requests.contains_key(&job) {
        // Quoted already, or its request is not in memory: quoted when seen again.
        return Ok(Decision::default());
    }
    let (invoice, note) = match (invoice, note) {
        (Ok(invoice), note) => (Some(invoice), note),
        (Err(why), None) => (None, Some(why)),
        (Err(why), Some(note)) => (None, Some(format!("{note}; {why}"))),
    };
    issue_quote(ctx, &job, amount, expires_at, invoice, note, None)
}

/// A priced job left in `received` by a restart (its invoice was being made): priced again, and
/// the invoice asked for (or a quote without one).
fn requote(ctx: &Ctx, m: &mut Memory, job: &JobId) -> Decided {
    let Some(request) = m.requests.get(job) else {
        return Ok(Decision::default());
    };
    let price = ctx
        .policy
        .price(request.work.kind, &measure(&request.work))?;
    let PriceDecision::Charge(amount) = price else {
        return Ok(Decision::default());
    };
    let expires_at = UnixMs(ctx.policy.quote_expires_at(ctx.now.0)?);
    if ctx.rails.invoices {
        if m.awaiting_invoice.insert(job.clone()) {
            return Ok(Decision::actions(vec![Action::RequestInvoice {
                job: job.clone(),
                amount,
                expires_at,
            }]));
        }
        return Ok(Decision::default());
    }
    issue_quote(ctx, job, amount, expires_at, None, None, None)
}

/// Sizes of a request's inputs, for per-unit prices.
pub(super) fn measure(work: &Job) -> InputMeasure {
    let inputs = &work.inputs;
    InputMeasure {
        bytes: inputs.iter().map(|i| i.data.len() as u64).sum(),
        chars: inputs.iter().map(|i| i.data.chars().count() as u64).sum(),
        words: inputs
            .iter()
            .map(|i| i.data.split_whitespace().count() as u64)
            .sum(),
        inputs: inputs.len() as u64,
    }
}
