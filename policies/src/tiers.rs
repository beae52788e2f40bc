//! Subscription tiers: a price per period buys a quota of jobs of the listed kinds.

use std::collections::BTreeSet;

use paydvm_ledger::Msat;

use crate::check::Check;
use crate::error::PolicyError;
use crate::pricing::{request_kind, Pricing};
use crate::raw::RawTier;

pub const MIN_PERIOD_SECS: i64 = 3_600;

/// A validated `[[subscriptions.tier]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tier {
    /// `[a-z0-9-]+`, unique.
    pub id: String,
    pub name: String,
    pub price: Msat,
    pub period_ms: u64,
    /// Jobs per period.
    pub quota: u32,
    /// Offered job kinds the tier covers; never empty.
    pub kinds: BTreeSet<u16>,
    /// What a subscriber who cancels (kind 7002) gets back of the running period.
    pub on_cancel: OnCancel,
    /// What happens to money paid while a period runs, before its renewal window opens.
    pub paid_ahead: PaidAhead,
    /// The next period is quoted this long before the running one ends (less than a period).
    pub renew_before_ms: u64,
    /// A payment this long after a period ended still continues the subscription back to back;
    /// later, a new period starts when it is paid.
    pub grace_ms: u64,
}

/// Renewal quotes go out a tenth of a period before its end, at most a day before.
fn default_window_ms(period_ms: u64) -> u64 {
    (period_ms / 10).min(86_400_000)
}

/// `on_cancel` of a tier: announced in the tier event, applied when a subscriber cancels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnCancel {
    /// The running period continues to its end; nothing is refunded of it.
    #[default]
    Keep,
    /// The unused rest of the running period is refunded pro rata and the period ends.
    RefundUnused,
}

impl OnCancel {
    /// The name used in the policy file and in the tier event.
    pub fn as_str(self) -> &'static str {
        match self {
            OnCancel::Keep => "keep",
            OnCancel::RefundUnused => "refund_unused",
        }
    }
}

/// `paid_ahead` of a tier: money paid while a period runs and before the next one is quoted (a
/// second payment for a period already paid). Announced in the tier event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PaidAhead {
    /// Held for the next period, up to its price; anything beyond is refunded.
    #[default]
    NextPeriod,
    /// Refunded whole. Payments once the renewal window is open still pay the next period.
    Refund,
}

impl PaidAhead {
    /// The name used in the policy file and in the tier event.
    pub fn as_str(self) -> &'static str {
        match self {
            PaidAhead::NextPeriod => "next_period",
            PaidAhead::Refund => "refund",
        }
    }
}

impl Tier {
    pub fn covers(&self, kind: u16) -> bool {
        self.kinds.contains(&kind)
    }
}

pub(crate) fn tiers_from_raw(
    raw: Vec<RawTier>,
    pricing: &Pricing,
    check: Check<'_>,
) -> Result<Vec<Tier>, PolicyError> {
    let mut tiers: Vec<Tier> = Vec::with_capacity(raw.len());
    for (i, entry) in raw.into_iter().enumerate() {
        let path = format!("subscriptions.tier[{i}]");
        let field = |name: &str| format!("{path}.{name}");
        let id_ok = !entry.id.is_empty()
            && entry
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err(check.invalid(
                &field("id"),
                format!(
                    "{:?} must be non-empty and use only a-z, 0-9 and -",
                    entry.id
                ),
            ));
        }
        if let Some(first) = tiers.iter().position(|t| t.id == entry.id) {
            return Err(check.invalid(
                &field("id"),
                format!(
                    "tier id {:?} is used twice (also at subscriptions.tier[{first}])",
                    entry.id
                ),
            ));
        }
        if entry.name.trim().is_empty() {
            return Err(check.invalid(&field("name"), "must not be empty"));
        }
        let price = check.positive_msat(&field("price_msat"), entry.price_msat)?;
        let period_ms = check.secs_as_ms(
            &field("period_secs"),
            entry.period_secs,
            MIN_PERIOD_SECS,
            i64::MAX,
        )?;
        let quota = check.int_in(&field("quota"), entry.quota, 1, u32::MAX.into())?;
        let quota = u32::try_from(quota).unwrap_or(u32::MAX);
        if entry.kinds.is_empty() {
            return Err(check.invalid(&field("kinds"), "must list at least one job kind"));
        }
        let mut kinds = BTreeSet::new();
        for (j, kind) in entry.kinds.into_iter().enumerate() {
            let kind_field = format!("{path}.kinds[{j}]");
            let kind = request_kind(check, &kind_field, kind)?;
            if !pricing.is_offered(kind) {
                return Err(check.invalid(
                    &kind_field,
                    format!("job kind {kind} is not offered (add it to [[pricing.kind]])"),
                ));
            }
            if !kinds.insert(kind) {
                return Err(check.invalid(&kind_field, format!("job kind {kind} is listed twice")));
            }
        }
        let on_cancel = match entry.on_cancel.as_deref() {
            None | Some("keep") => OnCancel::Keep,
            Some("refund_unused") => OnCancel::RefundUnused,
            Some(other) => {
                return Err(check.invalid(
                    &field("on_cancel"),
                    format!("{other:?} is not one of \"keep\", \"refund_unused\""),
                ))
            }
        };
        let paid_ahead = match entry.paid_ahead.as_deref() {
            None | Some("next_period") => PaidAhead::NextPeriod,
            Some("refund") => PaidAhead::Refund,
            Some(other) => {
                return Err(check.invalid(
                    &field("paid_ahead"),
                    format!("{other:?} is not one of \"next_period\", \"refund\""),
                ))
            }
        };
        let period_secs = entry.period_secs;
        let window = |name: &str, value: Option<i64>| match value {
            None => Ok(default_window_ms(period_ms)),
            Some(secs) => check.secs_as_ms(&field(name), secs, 0, period_secs - 1),
        };
        let renew_before_ms = window("renew_before_secs", entry.renew_before_secs)?;
        let grace_ms = window("grace_secs", entry.grace_secs)?;
        tiers.push(Tier {
            id: entry.id,
            name: entry.name,
            price,
            period_ms,
            quota,
            kinds,
            on_cancel,
            paid_ahead,
            renew_before_ms,
            grace_ms,
        });
    }
    Ok(tiers)
}
