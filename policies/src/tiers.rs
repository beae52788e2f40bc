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
        tiers.push(Tier {
            id: entry.id,
            name: entry.name,
            price,
            period_ms,
            quota,
            kinds,
        });
    }
    Ok(tiers)
}
