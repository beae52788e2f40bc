//! Human rendering of an audit trail: the job summary, its refunds, then one line per event
//! with what it said and the postings it made.

use std::fmt::Write;

use paydvm_ledger::store::AuditTrail;
use paydvm_ledger::{
    CreditDirection, Disposition, EffectOutcome, EventBody, JobPayment, PaymentOption,
    PaymentTarget, QueueReason, SubscriptionFunds,
};

/// Render `trail` as a multi-line timeline.
pub fn render_trail(trail: &AuditTrail) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_trail(&mut out, trail);
    out
}

fn write_trail(out: &mut String, trail: &AuditTrail) -> std::fmt::Result {
    match &trail.job {
        Some(j) => {
            writeln!(
                out,
                "job {}  kind {}  customer {}  state {}",
                j.job, j.kind, j.customer, j.state
            )?;
            let price = j.price.map_or("none".to_string(), |p| p.to_string());
            writeln!(
                out,
                "  price {price} · funded {} · refunded {} · revenue {} · attempts {}",
                j.funded_total, j.refunded_total, j.revenue, j.attempts
            )?;
            if let Some(r) = &j.result_event {
                writeln!(out, "  result event {r}")?;
            }
        }
        None => writeln!(out, "reference {} (no job)", trail.query)?,
    }
    for r in &trail.refunds {
        write!(
            out,
            "refund {}: {} {} (attempts {}, fee {})",
            r.refund,
            r.amount,
            r.state.as_str(),
            r.attempts,
            r.fee
        )?;
        match &r.route {
            Some(route) => writeln!(out, " lookup {}", route.lookup)?,
            None => writeln!(out)?,
        }
        if let Some(zap) = r.route.as_ref().and_then(|route| route.zap.as_ref()) {
            // A missing receipt is only noted: our payment's outcome settles the refund.
            let receipt = r.zap_receipt.as_ref().map_or_else(
                || "no zap receipt seen yet".to_owned(),
                |id| format!("zap receipt {id}"),
            );
            writeln!(
                out,
                "  sent as a zap: zap request {}; {receipt}",
                zap.request
            )?;
        }
    }
    writeln!(out, "timeline ({} events):", trail.events.len())?;
    for e in &trail.events {
        writeln!(
            out,
            "  #{:<8} {}  {:<22} {}",
            e.seq,
            format_ms(e.at),
            e.event.type_name(),
            detail(&e.event)
        )?;
        writeln!(out, "  {:9} key {}", "", e.key)?;
        for p in &e.postings {
            writeln!(
                out,
                "  {:9} {:>16} msat  Dr {}  Cr {}",
                "", p.amount_msat, p.debit, p.credit
            )?;
        }
    }
    Ok(())
}

/// What one event said, in a few words (also the status page's trail lines).
pub(crate) fn detail(body: &EventBody) -> String {
    match body {
        EventBody::JobReceived {
            request_event,
            customer,
            kind,
            ..
        } => format!("request {request_event} from {customer}, kind {kind}"),
        EventBody::JobRejected { reason, .. } => format!("reason: {reason}"),
        EventBody::QuoteIssued {
            amount,
            expires_at,
            options,
            ..
        } => {
            let opts: Vec<String> = options.iter().map(option).collect();
            format!(
                "{amount}, expires {}, pay by {}",
                format_ms(expires_at.0),
                if opts.is_empty() {
                    "-".to_string()
                } else {
                    opts.join(", ")
                }
            )
        }
        EventBody::PaymentReceived(p) => {
            let mut s = format!("{} via {}, ref {}", p.amount, p.rail.as_str(), p.reference);
            if !p.linked.is_empty() {
                let _ = write!(s, " (+{} linked)", p.linked.len());
            }
            let _ = write!(s, ", {}", target(&p.target));
            s
        }
        EventBody::QuoteExpired { held, .. } => format!("held: {}", held_text(held.as_ref())),
        EventBody::JobCancelled {
            deletion_event,
            held,
            ..
        } => format!(
            "deletion {deletion_event}, held: {}",
            held_text(held.as_ref())
        ),
        EventBody::JobQueued { reason, .. } => match reason {
            QueueReason::Free => "free".into(),
            QueueReason::Paid => "paid".into(),
            QueueReason::CreditDebit { amount } => format!("paid from credit, {amount}"),
            QueueReason::Entitlement { subscription } => {
                format!("subscription {subscription}")
            }
            QueueReason::Retry => "retry".into(),
        },
        EventBody::ProcessingStarted { attempt, .. } => format!("attempt {attempt}"),
        EventBody::ProcessingFailed {
            attempt,
            retryable,
            reason,
            ..
        } => format!(
            "attempt {attempt}, {}: {reason}",
            if *retryable { "retryable" } else { "final" }
        ),
        EventBody::JobClosed { reason, .. } => format!("reason: {reason}"),
        EventBody::ResultPublished { result_event, .. } => format!("result {result_event}"),
        EventBody::RefundDue { refund, .. } => format!("refund {refund}"),
        EventBody::CreditGranted { .. } => "held money became prepaid credit".into(),
        EventBody::RefundStarted {
            refund,
            attempt,
            route,
        } => match &route.zap {
            Some(zap) => format!(
                "refund {refund}, attempt {attempt}, lookup {}, zap request {}",
                route.lookup, zap.request
            ),
            None => format!(
                "refund {refund}, attempt {attempt}, lookup {}",
                route.lookup
            ),
        },
        EventBody::RefundSettled { refund, fee, .. } => format!("refund {refund}, fee {fee}"),
        EventBody::RefundOutcomeUnknown { refund, reason } => {
            format!("refund {refund}: {reason}")
        }
        EventBody::RefundFailed { refund, reason, .. }
        | EventBody::RefundDeferred { refund, reason } => format!("refund {refund}: {reason}"),
        EventBody::RefundRerouted {
            refund,
            asset,
            cause,
        } => format!("refund {refund} to be paid from {asset}: {}", cause.note()),
        EventBody::RefundRetried { refund, cause } => {
            format!("refund {refund} tried again: {}", cause.note())
        }
        EventBody::RefundWrittenOff { refund, to, cause } => {
            format!("refund {refund} written off to {to:?}: {}", cause.note())
        }
        EventBody::FloatAdded {
            asset,
            amount,
            cause,
        } => format!("float {amount} into {asset}: {}", cause.note()),
        EventBody::CreditAdjusted {
            customer,
            direction,
            amount,
            cause,
        } => format!(
            "credit of {customer} {} by {amount}: {}",
            match direction {
                CreditDirection::Increase => "raised",
                CreditDirection::Decrease => "lowered",
            },
            cause.note()
        ),
        EventBody::EntitlementGranted {
            subscription,
            tier,
            quota,
            price,
            ..
        } => format!("subscription {subscription}, tier {tier}, quota {quota}, {price}"),
        EventBody::EntitlementExpired { subscription } => format!("subscription {subscription}"),
        EventBody::SubscriptionQuoted {
            subscription,
            tier,
            price,
            period_ms,
            quota,
            ..
        } => format!(
            "subscription {subscription}, tier {tier}: {price} per {} s, quota {quota}",
            period_ms / 1000
        ),
        EventBody::EffectRequested {
            effect,
            action,
            payload,
            ..
        } => match published_kind(payload) {
            Some(kind) => format!("effect {effect}: {action} kind {kind}"),
            None => format!("effect {effect}: {action}"),
        },
        EventBody::EffectDone { effect, outcome } => match outcome {
            EffectOutcome::Delivered { detail } => format!("effect {effect} delivered: {detail}"),
            EffectOutcome::Abandoned { reason } => format!("effect {effect} abandoned: {reason}"),
        },
        EventBody::RefundZapReceipt { refund, receipt } => {
            format!("refund {refund}: zap receipt {receipt}")
        }
        EventBody::SubscriptionCancelled {
            subscription,
            request,
        } => format!("subscription {subscription} cancelled by {request}"),
        EventBody::SubscriptionRefundDue {
            subscription,
            refund,
            amount,
            asset,
            from,
        } => format!(
            "subscription {subscription}: {amount} owed back as refund {refund} from {asset} ({})",
            match from {
                SubscriptionFunds::Held => "money it could not use",
                SubscriptionFunds::Unused => "the unused rest of the period",
            }
        ),
        EventBody::SubscriptionRenewalQuoted {
            subscription,
            after,
            price,
            options,
            ..
        } => format!(
            "subscription {subscription}: the period after {} ms quoted at {price} ({})",
            after.0,
            options.iter().map(option).collect::<Vec<_>>().join(", ")
        ),
        EventBody::EntitlementUnitReturned { subscription, job } => {
            format!("subscription {subscription}: job {job} failed, its quota unit given back")
        }
    }
}

fn option(o: &PaymentOption) -> String {
    match o {
        PaymentOption::Invoice { payment_hash, .. } => format!("invoice {payment_hash}"),
        PaymentOption::Zap { target_event } => format!("zap on {target_event}"),
        PaymentOption::NutZap => "nutzap".into(),
        PaymentOption::CashuToken => "cashu token".into(),
    }
}

fn target(t: &PaymentTarget) -> String {
    match t {
        PaymentTarget::Job { job, booking } => match booking {
            JobPayment::Apply { excess: None } => format!("for job {job}"),
            JobPayment::Apply { excess: Some(d) } => {
                format!("for job {job}, excess {}", disposition(d))
            }
            JobPayment::Whole(d) => format!("job {job} cannot take it: {}", disposition(d)),
        },
        PaymentTarget::Credit { pubkey } => format!("credit top-up for {pubkey}"),
        PaymentTarget::Subscription { subscription } => format!("subscription {subscription}"),
        PaymentTarget::Unmatched { reason } => format!("unmatched: {reason}"),
    }
}

fn disposition(d: &Disposition) -> String {
    match d {
        Disposition::Refund { refund, .. } => format!("refunded as {refund}"),
        Disposition::Credit => "credited".into(),
    }
}

fn held_text(d: Option<&Disposition>) -> String {
    d.map_or("nothing".to_string(), disposition)
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS.mmmZ` (UTC).
pub fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// The Nostr kind of the event an effect publishes (`{"event": {"kind": …}}`), so a trail says
/// "kind 7003" rather than leaving the reader to decode the payload.
fn published_kind(payload: &str) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    value.get("event")?.get("kind")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::{format_ms, published_kind};

    #[test]
    fn formats_unix_ms_as_utc() {
        assert_eq!(format_ms(0), "1970-01-01 00:00:00.000Z");
        assert_eq!(format_ms(951_782_400_123), "2000-02-29 00:00:00.123Z");
        assert_eq!(format_ms(1_700_000_000_000), "2023-11-14 22:13:20.000Z");
    }

    #[test]
    fn an_effect_line_names_the_kind_it_publishes() {
        let payload = r#"{"event":{"kind":7003,"content":""},"relays":[]}"#;
        assert_eq!(published_kind(payload), Some(7003));
        assert_eq!(published_kind("not json"), None);
        assert_eq!(published_kind(r#"{"relays":[]}"#), None);
    }
}
