//! Verified payments → the ledger. A rail (invoice settlement, zap receipt, NutZap, token) checks
//! its evidence cryptographically, then hands the core a [`VerifiedPayment`]; this module books it
//! under the payment policy (partial, over, late, duplicate) in ONE group with the feedback it
//! causes, and dispatches the job once it is paid.

use anyhow::anyhow;
use paydvm_ledger::{
    Asset, Disposition, EffectId, EventBody, JobId, JobPayment, JobRecord, JobState, LedgerEvent,
    Msat, Payment, PaymentRef, PaymentTarget, Pubkey, QueueReason, Rail, RefundId, UnixMs,
};
use paydvm_policies::{PaymentDecision, PaymentFacts, UnappliedReason};
use tracing::{info, warn};

use super::{key, Core};
use crate::protocol::nip90::{Amount, Feedback, Status};

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
    /// The job it names, and whether it is now fully paid.
    job: Option<(JobId, bool)>,
    /// Feedback to publish for the job (`None` when the job cannot be told anything new).
    feedback: Option<Feedback>,
}

impl Core {
    /// The job an event names: the job itself (request id) or the job one of our published
    /// events (feedback) belongs to.
    pub(super) fn job_for_event(&self, event: &str) -> Option<JobId> {
        let id = JobId::new(event).ok()?;
        if self.store.state().job(&id).is_some() {
            return Some(id);
        }
        let effect = EffectId::new(event).ok()?;
        self.store.state().effect(&effect)?.job.clone()
    }

    pub(super) fn on_payment(&mut self, payment: VerifiedPayment) -> anyhow::Result<()> {
        let at = self.now();
        let booking = self.book(&payment, at)?;
        let mut events = vec![LedgerEvent::new(
            key(payment.idem.clone())?,
            at,
            EventBody::PaymentReceived(Payment {
                rail: payment.rail,
                asset: payment.asset.clone(),
                reference: PaymentRef::new(payment.reference.clone())
                    .map_err(|e| anyhow!("{e}"))?,
                linked: payment
                    .linked
                    .iter()
                    .map(|r| PaymentRef::new(r.clone()).map_err(|e| anyhow!("{e}")))
                    .collect::<anyhow::Result<_>>()?,
                amount: payment.amount,
                fee: payment.fee,
                evidence: payment
                    .evidence
                    .clone()
                    .map(paydvm_ledger::EventId::new)
                    .transpose()
                    .map_err(|e| anyhow!("{e}"))?,
                payer: payment
                    .payer
                    .clone()
                    .map(Pubkey::new)
                    .transpose()
                    .map_err(|e| anyhow!("{e}"))?,
                target: booking.target,
            }),
        )];
        let mut pubs = Vec::new();
        let mut dispatch = None;
        if let Some((job, paid)) = &booking.job {
            if *paid {
                events.push(LedgerEvent::new(
                    key(format!("queue:{job}:0"))?,
                    at,
                    EventBody::JobQueued {
                        job: job.clone(),
                        reason: QueueReason::Paid,
                    },
                ));
                dispatch = Some(job.clone());
            }
            if let (Some(feedback), Some(pending)) =
                (booking.feedback, self.requests.get(job.as_str()))
            {
                let (effect, p) = self.feedback(job, pending, feedback, at)?;
                events.push(effect);
                pubs.push(p);
            }
        }
        match self.commit(events, pubs) {
            Ok(true) => {
                info!(idem = %payment.idem, rail = payment.rail.as_str(),
                      amount_msat = payment.amount.as_msat(), "payment booked");
                if let Some(job) = dispatch {
                    self.dispatch(&job)?;
                }
            }
            Ok(false) => info!(idem = %payment.idem, "payment seen before; nothing changed"),
            // A reused reference (the same payment hash or proof under new evidence) is refused
            // by the ledger: nothing is credited, and the node goes on.
            Err(e) => warn!(idem = %payment.idem, "payment not booked: {e:#}"),
        }
        Ok(())
    }

    fn book(&self, payment: &VerifiedPayment, at: UnixMs) -> anyhow::Result<Booking> {
        let unmatched = |reason: &str| Booking {
            target: PaymentTarget::Unmatched {
                reason: reason.to_owned(),
            },
            job: None,
            feedback: None,
        };
        let Some(named) = &payment.names else {
            return Ok(match &payment.payer {
                Some(payer) => Booking {
                    target: PaymentTarget::Credit {
                        pubkey: Pubkey::new(payer.clone()).map_err(|e| anyhow!("{e}"))?,
                    },
                    job: None,
                    feedback: None,
                },
                None => unmatched("names no job and no payer"),
            });
        };
        let Some(job) = self.job_for_event(named) else {
            return Ok(unmatched("names an event that is not one of our jobs"));
        };
        let record = self
            .store
            .state()
            .job(&job)
            .cloned()
            .ok_or_else(|| anyhow!("job {job} vanished"))?;
        self.book_for_job(job, &record, payment, at)
    }

    fn book_for_job(
        &self,
        job: JobId,
        record: &JobRecord,
        payment: &VerifiedPayment,
        at: UnixMs,
    ) -> anyhow::Result<Booking> {
        let accepts = matches!(
            record.state,
            JobState::Quoted | JobState::PartiallyPaid | JobState::Expired
        );
        let decision = self.policy.on_payment(&PaymentFacts {
            price: record.price.unwrap_or(Msat::ZERO),
            applied_before: record.applied,
            amount: payment.amount,
            quote_expires_at_ms: record.expires_at.map_or(u64::MAX, |e| e.0),
            now_ms: at.0,
            job_accepts_payment: accepts && record.price.is_some(),
        });
        let refund_id = |why: &str| {
            RefundId::new(format!("{job}:{why}:{}", payment.reference)).map_err(|e| anyhow!("{e}"))
        };
        let disposition = |d, why: &str| -> anyhow::Result<Disposition> {
            Ok(match d {
                paydvm_policies::Disposition::Refund => Disposition::Refund {
                    refund: refund_id(why)?,
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
                let feedback = if paid {
                    Feedback::new(Status::Processing)
                } else {
                    Feedback::new(Status::PaymentRequired)
                        .with_info(format!(
                            "received {} msat; {} msat still owed",
                            payment.amount.as_msat(),
                            remaining.as_msat()
                        ))
                        .with_amount(Amount {
                            msat: remaining,
                            bolt11: None,
                        })
                };
                Booking {
                    target: PaymentTarget::Job {
                        job: job.clone(),
                        booking: JobPayment::Apply {
                            excess: excess.map(|(_, d)| disposition(d, "excess")).transpose()?,
                        },
                    },
                    job: Some((job, paid)),
                    feedback: Some(feedback),
                }
            }
            PaymentDecision::Return {
                disposition: d,
                reason,
                ..
            } => {
                let why = match reason {
                    UnappliedReason::JobNotAcceptingPayment => {
                        "this job does not take a payment now"
                    }
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
                    job: Some((job, false)),
                    feedback: Some(
                        Feedback::new(Status::Error)
                            .with_info(format!("payment not applied: {why}; {returned}")),
                    ),
                }
            }
        })
    }
}
