//! Executor attempts: started once a job is queued, and what their outcome means — the result
//! (revenue recognised), another attempt, or the end of the job with its money refunded or
//! credited.

use paydvm_ledger::{
    Account, Disposition, EventBody, EventId, JobId, JobState, LedgerEvent, QueueReason, UnixMs,
};
use paydvm_policies::FailureDecision;

use super::memory::Memory;
use super::{keys, Action, Ctx, DecideError, Decided, Decision, ExecFailure, Group, ReplyKind};

/// Adds the next attempt of a queued job (`attempts` so far) to `group`: `processing_started`
/// and the action that runs it. A job whose request is not in memory waits until it is seen
/// again; one already running that attempt (or a later one) here is left alone.
pub(super) fn start(
    ctx: &Ctx,
    m: &mut Memory,
    job: &JobId,
    attempts: u32,
    mut group: Group,
) -> Result<Group, DecideError> {
    let Some(request) = m.requests.get(job) else {
        return Ok(group);
    };
    let attempt = attempts.saturating_add(1);
    if m.running.get(job).is_some_and(|&runs| runs >= attempt) {
        return Ok(group);
    }
    group.events.push(LedgerEvent::new(
        keys::started(job, attempt)?,
        ctx.now,
        EventBody::ProcessingStarted {
            job: job.clone(),
            attempt,
        },
    ));
    let work = request.work.clone();
    m.running.insert(job.clone(), attempt);
    Ok(group.then(Action::RunExecutor { work, attempt }))
}

/// The attempt a job was running when the node stopped, run again as that same attempt (its
/// kind is shared: another node may still be running it, and its outcome counts when it comes).
pub(super) fn resume(m: &mut Memory, job: &JobId, attempt: u32) -> Vec<Action> {
    let Some(request) = m.requests.get(job) else {
        return Vec::new();
    };
    let work = request.work.clone();
    m.running.insert(job.clone(), attempt);
    vec![Action::RunExecutor { work, attempt }]
}

pub(super) fn finished(
    ctx: &Ctx,
    m: &mut Memory,
    job: &JobId,
    attempt: u32,
    outcome: Result<String, ExecFailure>,
) -> Decided {
    m.ran(job, attempt);
    let current = ctx
        .ledger
        .job(job)
        .is_some_and(|r| r.state == JobState::Processing && r.attempts == attempt);
    if !current {
        return Ok(Decision::default());
    }
    match outcome {
        Ok(content) => succeed(ctx, m, job, content),
        Err(failure) => fail(ctx, m, job, attempt, failure),
    }
}

/// The result reply and `result_published` (revenue recognised) in one group. The result's
/// event id is the rendered reply's: the shell fills it in.
fn succeed(ctx: &Ctx, m: &mut Memory, job: &JobId, content: String) -> Decided {
    let expires_at = ctx.policy.result_expires_at(ctx.now.0)?.map(UnixMs);
    let expires_at = expires_at.map(|at| at.max(super::subscription::paid_until(ctx, job)));
    let published = LedgerEvent::new(
        keys::result(job)?,
        ctx.now,
        EventBody::ResultPublished {
            job: job.clone(),
            result_event: EventId::new(job.as_str())?,
        },
    );
    m.drop_request(job);
    let group = Group::new(vec![published])
        .reply(
            job,
            ReplyKind::Result {
                content,
                expires_at,
            },
        )
        .then(Action::Forget(job.clone()));
    Ok(Decision::group(group))
}

/// A failed attempt (or one interrupted by a restart): recorded, then the policy — another
/// attempt, or the end of the job with what it holds refunded or credited.
pub(super) fn fail(
    ctx: &Ctx,
    m: &mut Memory,
    job: &JobId,
    attempt: u32,
    failure: ExecFailure,
) -> Decided {
    let mut events = vec![LedgerEvent::new(
        keys::failed(job, attempt)?,
        ctx.now,
        EventBody::ProcessingFailed {
            job: job.clone(),
            attempt,
            retryable: failure.retryable,
            reason: failure.reason.clone(),
        },
    )];
    let decision = ctx.policy.on_failure(attempt, failure.retryable);
    if decision == FailureDecision::Retry {
        events.push(LedgerEvent::new(
            keys::queued(job, attempt)?,
            ctx.now,
            EventBody::JobQueued {
                job: job.clone(),
                reason: QueueReason::Retry,
            },
        ));
        return Ok(Decision::group(start(
            ctx,
            m,
            job,
            attempt,
            Group::new(events),
        )?));
    }
    let wanted = match decision {
        FailureDecision::Credit => paydvm_policies::Disposition::Credit,
        _ => paydvm_policies::Disposition::Refund,
    };
    events.push(end_of_job(ctx, job, wanted, &failure.reason)?);
    events.extend(super::subscription::unit_back(ctx, job)?);
    m.drop_request(job);
    let group = Group::new(events)
        .reply(
            job,
            ReplyKind::Error {
                reason: failure.reason,
            },
        )
        .then(Action::Forget(job.clone()));
    Ok(Decision::group(group))
}

/// The event that ends a failed job: closed if it holds nothing, else what it holds refunded
/// or credited.
fn end_of_job(
    ctx: &Ctx,
    job: &JobId,
    wanted: paydvm_policies::Disposition,
    reason: &str,
) -> Result<LedgerEvent, DecideError> {
    let held = ctx.ledger.held(&Account::Job(job.clone()));
    if held.is_zero() {
        return Ok(LedgerEvent::new(
            keys::closed(job)?,
            ctx.now,
            EventBody::JobClosed {
                job: job.clone(),
                reason: reason.to_owned(),
            },
        ));
    }
    let wanted = ctx.policy.refund_or_credit(held, wanted);
    Ok(match held_disposition(ctx, job, wanted, "fail")? {
        Disposition::Refund { refund, asset } => LedgerEvent::new(
            keys::refund_due(job)?,
            ctx.now,
            EventBody::RefundDue {
                job: job.clone(),
                refund,
                asset,
            },
        ),
        Disposition::Credit => LedgerEvent::new(
            keys::credited(job)?,
            ctx.now,
            EventBody::CreditGranted { job: job.clone() },
        ),
    })
}

/// Where everything `job` holds goes when the policy wants `wanted`: money that came from
/// prepaid credit always goes back as credit (there is no payment to return it over); a refund
/// (id `<job>:<why>`) is paid from the asset the ledger's rule names.
pub(super) fn held_disposition(
    ctx: &Ctx,
    job: &JobId,
    wanted: paydvm_policies::Disposition,
    why: &str,
) -> Result<Disposition, DecideError> {
    let record = ctx
        .ledger
        .job(job)
        .ok_or_else(|| paydvm_ledger::TransitionError::UnknownJob(job.clone()))?;
    if wanted == paydvm_policies::Disposition::Credit || !record.held_credit.is_zero() {
        return Ok(Disposition::Credit);
    }
    Ok(Disposition::Refund {
        refund: keys::job_refund(job, why)?,
        asset: Some(record.refund_asset()?),
    })
}
