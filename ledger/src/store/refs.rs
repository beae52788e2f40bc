//! The outside references an event mentions, indexed so any of them finds the job's audit trail.

use crate::event::{EventBody, PaymentOption};
use crate::ids::EventId;

pub fn event_refs(body: &EventBody) -> Vec<&str> {
    let mut refs = Vec::new();
    match body {
        EventBody::JobReceived {
            job, request_event, ..
        } => {
            refs.push(job.as_str());
            refs.push(request_event.as_str());
        }
        EventBody::QuoteIssued { options, .. } => option_refs(options, &mut refs),
        EventBody::SubscriptionRenewalQuoted {
            subscription,
            options,
            ..
        }
        | EventBody::SubscriptionQuoted {
            subscription,
            options,
            ..
        } => {
            refs.push(subscription.as_str());
            option_refs(options, &mut refs);
        }
        EventBody::PaymentReceived(p) => {
            refs.push(p.reference.as_str());
            refs.extend(p.linked.iter().map(|r| r.as_str()));
            if let Some(e) = &p.evidence {
                refs.push(e.as_str());
            }
            // A subscription's trail shows what paid for it.
            if let crate::event::PaymentTarget::Subscription { subscription } = &p.target {
                refs.push(subscription.as_str());
            }
        }
        EventBody::JobCancelled { deletion_event, .. } => refs.push(deletion_event.as_str()),
        EventBody::ResultPublished { result_event, .. } => refs.push(result_event.as_str()),
        EventBody::RefundDue { refund, .. }
        | EventBody::RefundDeferred { refund, .. }
        | EventBody::RefundOutcomeUnknown { refund, .. }
        | EventBody::RefundFailed { refund, .. }
        | EventBody::RefundRerouted { refund, .. }
        | EventBody::RefundRetried { refund, .. }
        | EventBody::RefundWrittenOff { refund, .. } => refs.push(refund.as_str()),
        EventBody::RefundSettled {
            refund, evidence, ..
        } => {
            refs.push(refund.as_str());
            // Evidence that looks like an id (a hand-over event id, a preimage) finds the trail;
            // a free-text note does not go into the index.
            if let Some(e) = evidence.as_deref().filter(|e| EventId::new(*e).is_ok()) {
                refs.push(e);
            }
        }
        EventBody::RefundZapReceipt { refund, receipt } => {
            refs.push(refund.as_str());
            refs.push(receipt.as_str());
        }
        EventBody::RefundStarted { refund, route, .. } => {
            refs.push(refund.as_str());
            refs.push(route.lookup.as_str());
            // A zapback's receipt finds its refund by the zap request it answers.
            if let Some(zap) = &route.zap {
                refs.push(zap.request.as_str());
            }
        }
        EventBody::EntitlementGranted { subscription, .. }
        | EventBody::EntitlementExpired { subscription }
        | EventBody::EntitlementUnitReturned { subscription, .. } => {
            refs.push(subscription.as_str())
        }
        EventBody::SubscriptionCancelled {
            subscription,
            request,
        } => {
            refs.push(subscription.as_str());
            refs.push(request.as_str());
        }
        EventBody::SubscriptionRefundDue {
            subscription,
            refund,
            ..
        } => {
            refs.push(subscription.as_str());
            refs.push(refund.as_str());
        }
        EventBody::EffectRequested {
            effect,
            subscription,
            ..
        } => {
            refs.push(effect.as_str());
            refs.extend(subscription.as_ref().map(|s| s.as_str()));
        }
        EventBody::EffectDone { effect, .. } => refs.push(effect.as_str()),
        // A subscription's trail lists the jobs run on its quota.
        EventBody::JobQueued {
            reason: crate::event::QueueReason::Entitlement { subscription },
            ..
        } => refs.push(subscription.as_str()),
        EventBody::JobRejected { .. }
        | EventBody::QuoteExpired { .. }
        | EventBody::JobQueued { .. }
        | EventBody::ProcessingStarted { .. }
        | EventBody::ProcessingFailed { .. }
        | EventBody::JobClosed { .. }
        | EventBody::CreditGranted { .. }
        | EventBody::FloatAdded { .. }
        | EventBody::CreditAdjusted { .. } => {}
    }
    // Disposition refund ids live inside payments and expiries; index them too.
    if let Some(r) = disposition_refund(body) {
        refs.push(r);
    }
    refs
}

fn option_refs<'a>(options: &'a [PaymentOption], refs: &mut Vec<&'a str>) {
    for o in options {
        match o {
            PaymentOption::Invoice {
                payment_hash,
                bolt11,
            } => {
                refs.push(payment_hash.as_str());
                refs.push(bolt11.as_str());
            }
            PaymentOption::Zap { target_event } => refs.push(target_event.as_str()),
            PaymentOption::NutZap | PaymentOption::CashuToken => {}
        }
    }
}

fn disposition_refund(body: &EventBody) -> Option<&str> {
    use crate::event::{Disposition, JobPayment, PaymentTarget};
    let d = match body {
        EventBody::QuoteExpired { held, .. } | EventBody::JobCancelled { held, .. } => {
            held.as_ref()
        }
        EventBody::PaymentReceived(p) => match &p.target {
            PaymentTarget::Job { booking, .. } => match booking {
                JobPayment::Whole(d) => Some(d),
                JobPayment::Apply { excess } => excess.as_ref(),
            },
            _ => None,
        },
        _ => None,
    };
    match d {
        Some(Disposition::Refund { refund, .. }) => Some(refund.as_str()),
        _ => None,
    }
}
