//! Verified payments → the ledger. A rail (invoice settlement, zap receipt, NutZap, token) checks
//! its evidence cryptographically, then hands the core a [`VerifiedPayment`]; this module books it
//! under the payment policy (partial, over, late, duplicate) in ONE group with the reply it
//! causes, and starts the job once it is paid.

use paydvm_ledger::{
    Asset, Disposition, EffectId, EventBody, EventId, JobId, JobPayment, JobRecord, JobState,
    LedgerEvent, Msat, Payment, PaymentRef, PaymentTarget, Pubkey, QueueReason, Rail,
};
use paydvm_policies::{PaymentDecision, PaymentFacts, UnappliedReason};

use super::memory::Memory;
use super::subscription;
use super::{exec, keys, Ctx, DecideError, Decided, Decision, Group, Notice, ReplyKind};

/// One incoming payment whose evidence a rail has verified end to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPayment {
    /// Idempotency key from the outside world (`invoice:<hash>`, `zap:<receipt id>`, …): the same
    /// evidence seen twice is a no-op.
    pub idem: String,
    pub rail: Rail,
    pub asset: Asset,
    /// What must never be credited twice (payment hash, proof set id).
    pub reference: String,
    /// Further references the payment consumes (Cashu proof Ys).
    pub linked: Vec<String>,
    pub amount: Msat,
    /// What taking it cost us (Cashu mint input fees; ZERO on Lightning), booked to
    /// `expense:fees`. `amount` stays the face value the customer sent.
    pub fee: Msat,
    /// The Nostr event (hex id) that carried the evidence, if any.
    pub evidence: Option<String>,
    /// The payer's pubkey (hex), if known.
    pub payer: Option<String>,
    /// The event the payment names: a job request id or one of our feedback event ids. `None`
    /// makes it prepaid credit for `payer`.
    pub names: Option<String>,
}

/// Where a payment's money goes, and what the customer is told.
struct Booking {
    target: PaymentTarget,
    /// For a subscription: the period it completes (granted in the same group), and the notice.
    subscription: Option<(Vec<LedgerEvent>, Notice)>,
    /// The job it names, and whether it is now fully paid.
    job: Option<(JobId, bool)>,
    /// The reply for the job (`None` when the job cannot be told anything new).
    reply: Option<ReplyKind>,
}

/// The job an event names: the job itself (request id) or the job one of our published events
/// (a reply) belongs to.
fn job_for_event(ctx: &Ctx, event: &str) -> Option<JobId> {
    let id = JobId::new(event).ok()?;
    if ctx.ledger.job(&id).is_some() {
        return Some(id);
    }
    let effect = EffectId::new(event).ok()?;
    ctx.ledger.effect(&effect)?.job.clone()
}

pub(super) fn verified(ctx: &Ctx, m: &mut Memory, payment: &VerifiedPayment) -> Decided {
    // Evidence seen again (another relay, a restart): booked once, answered once.
    let reference = PaymentRef::new(payment.reference.clone())?;
    if ctx.ledger.payment_ref_seq(&reference).is_some() {
        return Ok(Decision::default());
    }
    let booking = book(ctx, payment)?;
    let received = LedgerEvent::new(
        paydvm_ledger::IdemKey::new(payment.idem.clone())?,
        ctx.now,
        EventBody::PaymentReceived(Payment {
            rail: payment.rail,
            asset: payment.asset.clone(),
            reference: PaymentRef::new(payment.reference.clone())?,
            linked: payment
                .linked
                .iter()
                .map(|r| PaymentRef::new(r.clone()))
                .collect::<Result<_, _>>()?,
            amount: payment.amount,
            fee: payment.fee,
            evidence: payment.evidence.clone().map(EventId::new).transpose()?,
            payer: payment.payer.clone().map(Pubkey::new).transpose()?,
            target: booking.target,
        }),
    );
    let mut group = Group::new(vec![received]);
    if let Some((events, notice)) = booking.subscription {
        group.events.extend(events);
        group.notices.push(notice);
    }
    let Some((job, paid)) = booking.job else {
        return Ok(Decision::group(group));
    };
    if let Some(reply) = booking.reply.filter(|_| m.requests.contains_key(&job)) {
        group = group.reply(&job, reply);
    }
    if paid {
        group.events.push(LedgerEvent::new(
            keys::queued(&job, 0)?,
            ctx.now,
            EventBody::JobQueued {
                job: job.clone(),
                reason: QueueReason::Paid,
            },
        ));
        let attempts = ctx.ledger.job(&job).map_or(0, |r| r.attempts);
        group = exec::start(ctx, m, &job, attempts, group)?;
    }
    Ok(Decision::group(group))
}

/// A rail refused a payment offered for `job` (its reason is safe to show): the customer is
/// told, and the reply is recorded under the job.
pub(super) fn refused(ctx: &Ctx, job: &JobId, reason: String) -> Decided {
    if ctx.ledger.job(job).is_none() {
        return Ok(Decision::default());
    }
    Ok(Decision::group(
        Group::default().reply(job, ReplyKind::Error { reason }),
    ))
}

fn book(ctx: &Ctx, payment: &VerifiedPayment) -> Result<Booking, DecideError> {
    let unmatched = |reason: &str| Booking {
        target: PaymentTarget::Unmatched {
            reason: reason.to_owned(),
        },
        subscription: None,
        job: None,
        reply: None,
    };
    let Some(named) = &payment.names else {
        return Ok(match &payment.payer {
            Some(payer) => Booking {
                target: PaymentTarget::Credit {
                    pubkey: Pubkey::new(payer.clone())?,
                },
                subscription: None,
                job: None,
                reply: None,
            },
            None => unmatched("names no job and no payer"),
        });
    };
    if let Some(record) = paydvm_ledger::SubscriptionId::new(named.as_str())
        .ok()
        .and_then(|s| ctx.ledger.subscription(&s))
    {
        let paid = subscription::PaidIn {
            amount: payment.amount,
            asset: &payment.asset,
            reference: &payment.reference,
        };
        let booked = subscription::book(ctx, record, paid)?;
        let notice = Notice {
            subscription: record.subscription.clone(),
            subscriber: record.subscriber.clone(),
            kind: booked.notice,
        };
        return Ok(Booking {
            target: booked.target,
            subscription: Some((booked.events, notice)),
            job: None,
            reply: None,
        });
    }
    let Some(job) = job_for_event(ctx, named) else {
        return Ok(unmatched("names an event that is not one of our jobs"));
    };
    let record = ctx
        .ledger
        .job(&job)
        .cloned()
        .ok_or_else(|| paydvm_ledger::TransitionError::UnknownJob(job.clone()))?;
    book_for_job(ctx, job, &record, payment)
}

fn book_for_job(
    ctx: &Ctx,
    job: JobId,
    record: &JobRecord,
    payment: &VerifiedPayment,
) -> Result<Booking, DecideError> {
    let accepts = matches!(
        record.state,
        JobState::Quoted | JobState::PartiallyPaid | JobState::Expired
    );
    let decision = ctx.policy.on_payment(&PaymentFacts {
        price: record.price.unwrap_or(Msat::ZERO),
        applied_before: record.applied,
        amount: payment.amount,
        quote_expires_at_ms: record.expires_at.map_or(u64::MAX, |e| e.0),
        now_ms: ctx.now.0,
        job_accepts_payment: accepts && record.price.is_some(),
    });
    let disposition = |d, why: &str| -> Result<Disposition, DecideError> {
        Ok(match d {
            paydvm_policies::Disposition::Refund => Disposition::Refund {
                refund: keys::payment_refund(&job, why, &payment.reference)?,
                // The ledger names the payment's own asset.
                asset: None,
            },
            paydvm_policies::Disposition::Credit => Disposition::Credit,
        })
    };
    Ok(match decision {
        PaymentDecision::Apply {
            excess, remaining, ..
        } => {
            let paid = remaining.is_zero();
            let reply = if paid {
                ReplyKind::Processing
            } else {
                ReplyKind::PaymentRequired {
                    amount: remaining,
                    bolt11: None,
                    expires_at: None,
                    note: Some(format!(
                        "received {} msat; {} msat still owed",
                        payment.amount.as_msat(),
                        remaining.as_msat()
                    )),
                }
            };
            Booking {
                target: PaymentTarget::Job {
                    job: job.clone(),
                    booking: JobPayment::Apply {
                        excess: excess.map(|(_, d)| disposition(d, "excess")).transpose()?,
                    },
                },
                subscription: None,
                job: Some((job, paid)),
                reply: Some(reply),
            }
        }
        PaymentDecision::Return {
            disposition: d,
            reason,
            ..
        } => {
            let why = match reason {
                UnappliedReason::JobNotAcceptingPayment => "this job does not take a payment now",
                UnappliedReason::LateBeyondGrace => "the quote expired",
            };
            let returned = match d {
                paydvm_policies::Disposition::Refund => "it will be refunded",
                paydvm_policies::Disposition::Credit => "it was added to your credit",
            };
            Booking {
                target: PaymentTarget::Job {
                    job: job.clone(),
                    booking: JobPayment::Whole(disposition(d, "return")?),
                },
                subscription: None,
                job: Some((job, false)),
                reply: Some(ReplyKind::Error {
                    reason: format!("payment not applied: {why}; {returned}"),
                }),
            }
        }
    })
}
