//! What time and the customer's withdrawal do to a job: quotes that run out, cancellations,
//! effects delivered or given up on, and requests no longer needed.

use paydvm_ledger::{
    Account, EffectId, EffectOutcome, EventBody, EventId, JobId, JobState, LedgerEvent, Msat,
    Pubkey,
};

use super::memory::Memory;
use super::subscription;
use super::{exec, keys, refunds, Action, Ctx, DecideError, Decided, Decision, Group, ReplyKind};

/// A withdrawal (NIP-09) by the jobs' own customer cancels each job the ledger lets go: one
/// group per job, what it holds refunded or credited by the policy. A running job is left alone.
pub(super) fn cancelled(
    ctx: &Ctx,
    m: &mut Memory,
    deletion: &str,
    author: &Pubkey,
    targets: Vec<JobId>,
) -> Decided {
    let cancellable = |j: &JobId| {
        ctx.ledger.job(j).is_some_and(|r| {
            r.customer == *author
                && matches!(
                    r.state,
                    JobState::Received
                        | JobState::Quoted
                        | JobState::PartiallyPaid
                        | JobState::Paid
                        | JobState::Queued
                )
        })
    };
    let ours: Vec<JobId> = targets.into_iter().filter(|j| cancellable(j)).collect();
    let several = ours.len() > 1;
    let mut decision = Decision::default();
    for job in ours {
        if m.is_running(&job) {
            continue;
        }
        let held = ctx.ledger.held(&Account::Job(job.clone()));
        let disposition = ctx
            .policy
            .on_cancel(held)
            .map(|wanted| exec::held_disposition(ctx, &job, wanted, "cancel"))
            .transpose()?;
        let event = LedgerEvent::new(
            keys::cancelled(deletion, &job, several)?,
            ctx.now,
            EventBody::JobCancelled {
                job: job.clone(),
                deletion_event: EventId::new(deletion)?,
                held: disposition,
            },
        );
        m.drop_request(&job);
        decision.push(Group::new(vec![event]).then(Action::Forget(job)));
    }
    Ok(decision)
}

/// Time passed: quotes past their expiry expire, effects the outbox gave up on long enough ago
/// are handed to it again, refunds whose wait is over are routed, and requests past any use are
/// let go.
pub(super) fn ticked(ctx: &Ctx, m: &mut Memory) -> Decided {
    let mut decision = expire_quotes(ctx)?;
    decision.extend(processing_feedback_due(ctx, m));
    decision.extend(subscription::ticked(ctx, m)?);
    decision.actions.extend(resend_stale(ctx, m));
    decision.extend(refunds::drive(ctx, m)?);
    decision.actions.extend(forget_past_grace(ctx, m));
    Ok(decision)
}

/// The `processing` feedback of each job whose wait for it is over and that is still queued or
/// running (one group each, in job order); a job that ended sooner is dropped without one.
fn processing_feedback_due(ctx: &Ctx, m: &mut Memory) -> Decision {
    let due: Vec<JobId> = m
        .processing_feedback_due
        .iter()
        .filter(|(_, at)| **at <= ctx.now)
        .map(|(job, _)| job.clone())
        .collect();
    let mut decision = Decision::default();
    for job in due {
        m.processing_feedback_due.remove(&job);
        let open = ctx
            .ledger
            .job(&job)
            .is_some_and(|r| matches!(r.state, JobState::Queued | JobState::Processing));
        if open {
            decision.push(Group::new(Vec::new()).reply(&job, ReplyKind::Processing));
        }
    }
    decision
}

/// Every quoted or partly paid job past its expiry: `quote_expired`, with the policy's
/// disposition for what a partial payment left. One group per job.
fn expire_quotes(ctx: &Ctx) -> Decided {
    // From the expiry index (no scan of the jobs); sorted by job, so the same state and time
    // give the same decision.
    let mut due: Vec<(JobId, Msat)> = ctx
        .ledger
        .quotes_due(ctx.now)
        .map(|j| (j.job.clone(), j.funded_total))
        .collect();
    due.sort();
    let mut decision = Decision::default();
    for (job, funded) in due {
        let held = ctx.ledger.held(&Account::Job(job.clone()));
        let why = expiry_refund_name(ctx, &job, funded)?;
        let disposition = ctx
            .policy
            .on_expiry(held)
            .map(|wanted| exec::held_disposition(ctx, &job, wanted, &why))
            .transpose()?;
        decision.push(Group::new(vec![LedgerEvent::new(
            keys::expired(&job, funded)?,
            ctx.now,
            EventBody::QuoteExpired {
                job,
                held: disposition,
            },
        )]));
    }
    Ok(decision)
}

/// The name of the refund an expiry makes: `expiry`, or, when a late payment reopened a job
/// whose first expiry already made one, `expiry-<funded msat>`.
fn expiry_refund_name(ctx: &Ctx, job: &JobId, funded: Msat) -> Result<String, DecideError> {
    let first = keys::job_refund(job, "expiry")?;
    Ok(match ctx.ledger.refund(&first) {
        None => "expiry".to_owned(),
        Some(_) => format!("expiry-{}", funded.as_msat()),
    })
}

/// Effects the outbox gave up on at least `resend_after` ago, still undelivered: again.
fn resend_stale(ctx: &Ctx, m: &mut Memory) -> Vec<Action> {
    let after = ctx.rails.resend_after_ms;
    let mut stale: Vec<EffectId> = m
        .gave_up
        .iter()
        .filter(|(_, at)| ctx.now.0.saturating_sub(at.0) >= after)
        .map(|(effect, _)| effect.clone())
        .collect();
    stale.sort();
    let mut actions = Vec::new();
    for effect in stale {
        m.gave_up.remove(&effect);
        if ctx
            .ledger
            .effect(&effect)
            .is_some_and(|e| e.outcome.is_none())
        {
            actions.push(Action::Resend(effect));
        }
    }
    actions
}

/// A late payment within the grace window still runs its job, so an expired job's request stays
/// until the window closes; any other job's stays while it may still run.
fn forget_past_grace(ctx: &Ctx, m: &mut Memory) -> Vec<Action> {
    let grace = ctx.policy.payments().late_grace_ms;
    let needed = |job: &JobId| match ctx.ledger.job(job) {
        None => false,
        Some(r) if r.state == JobState::Expired => r
            .expires_at
            .is_some_and(|e| e.0.saturating_add(grace) > ctx.now.0),
        Some(r) => may_still_run(r.state),
    };
    let mut gone: Vec<JobId> = m.requests.keys().filter(|j| !needed(j)).cloned().collect();
    gone.sort();
    gone.into_iter()
        .map(|job| {
            m.drop_request(&job);
            Action::Forget(job)
        })
        .collect()
}

/// States from which a job can still reach an executor (its request is still needed).
pub(super) fn may_still_run(state: JobState) -> bool {
    matches!(
        state,
        JobState::Received
            | JobState::Quoted
            | JobState::PartiallyPaid
            | JobState::Paid
            | JobState::Queued
            | JobState::Processing
            | JobState::Failed
    )
}

/// The outbox delivered an effect: recorded once.
pub(super) fn delivered(ctx: &Ctx, m: &mut Memory, effect: &EffectId, detail: String) -> Decided {
    m.gave_up.remove(effect);
    let waiting = ctx.ledger.effect(effect).map(|e| e.outcome.is_none());
    if waiting != Some(true) {
        return Ok(Decision::default());
    }
    Ok(Decision::group(Group::new(vec![LedgerEvent::new(
        keys::delivered(effect)?,
        ctx.now,
        EventBody::EffectDone {
            effect: effect.clone(),
            outcome: EffectOutcome::Delivered { detail },
        },
    )])))
}
