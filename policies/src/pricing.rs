//! The rate card: which job kinds are offered and what an input of a given size costs.
//!
//! # Rounding rule
//!
//! A per-unit price is `base_msat + per_unit_msat × units`. It is computed **exactly** (the
//! `rust_decimal` rate is taken apart into its integer digits and scale and multiplied in
//! 128-bit integers, so there is no intermediate rounding), then rounded **up** (ceiling) to a
//! whole msat, so a quote is never below the published rate. `max_msat` then caps it and
//! `min_msat` raises it. A price above `Msat::MAX_SUPPLY` (which includes any u64 overflow) is
//! an error, never a wrap; with `max_msat` set such a price is simply capped.

use std::collections::BTreeMap;

use paydvm_ledger::Msat;
use rust_decimal::Decimal;

use crate::check::Check;
use crate::error::{DecisionError, PolicyError};
use crate::raw::{RawKindPrice, RawPricing};

/// NIP-90 job request kinds.
pub const REQUEST_KINDS: std::ops::RangeInclusive<u16> = 5000..=5999;

/// Most decimal places a per-unit rate may have. It keeps the exact product within u128:
/// a product that overflows u128 is then certainly above `Msat::MAX_SUPPLY`.
pub const MAX_RATE_DECIMALS: u32 = 18;

/// What the per-unit price counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Byte,
    Char,
    Word,
    Input,
}

/// The size of a job request's input, measured by the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputMeasure {
    pub bytes: u64,
    pub chars: u64,
    pub words: u64,
    /// Number of `i` tags on the request.
    pub inputs: u64,
}

impl InputMeasure {
    pub fn count(&self, unit: Unit) -> u64 {
        match unit {
            Unit::Byte => self.bytes,
            Unit::Char => self.chars,
            Unit::Word => self.words,
            Unit::Input => self.inputs,
        }
    }
}

/// A per-unit rate; see the module docs for the rounding rule.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PerUnitPrice {
    pub base: Msat,
    /// Non-negative, at most `MAX_RATE_DECIMALS` decimal places, at most `Msat::MAX_SUPPLY`.
    pub per_unit_msat: Decimal,
    pub unit: Unit,
    pub min: Option<Msat>,
    pub max: Option<Msat>,
}

impl PerUnitPrice {
    /// `ceil(base + rate × units)` before `min`/`max`, or `None` when above `Msat::MAX_SUPPLY`.
    pub fn uncapped_charge(&self, units: u64) -> Option<Msat> {
        let max_supply = u128::from(Msat::MAX_SUPPLY.as_msat());
        let digits = u128::try_from(self.per_unit_msat.mantissa()).ok()?;
        let denominator = 10u128.checked_pow(self.per_unit_msat.scale())?;
        let product = digits.checked_mul(u128::from(units))?;
        let whole = product / denominator;
        let round_up = u128::from(product % denominator != 0);
        let total = whole
            .checked_add(round_up)?
            .checked_add(u128::from(self.base.as_msat()))?;
        if total > max_supply {
            return None;
        }
        u64::try_from(total).ok().map(Msat::from_msat)
    }

    /// The charge after rounding, `max_msat` and `min_msat`; `None` when too large to charge.
    pub fn charge(&self, units: u64) -> Option<Msat> {
        let capped = match (self.uncapped_charge(units), self.max) {
            (Some(charge), Some(max)) => charge.min(max),
            (Some(charge), None) => charge,
            (None, Some(max)) => max,
            (None, None) => return None,
        };
        Some(match self.min {
            Some(min) => capped.max(min),
            None => capped,
        })
    }
}

/// How one job kind is priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceMode {
    Free,
    Fixed(Msat),
    PerUnit(PerUnitPrice),
}

/// The outcome of pricing one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceDecision {
    /// The kind is not on the rate card.
    NotOffered,
    /// No payment needed: a free kind, or a per-unit price that came to 0 msat.
    Free,
    Charge(Msat),
}

/// The validated `[[pricing.kind]]` entries, keyed by job kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pricing {
    kinds: BTreeMap<u16, PriceMode>,
}

impl Pricing {
    pub fn mode(&self, kind: u16) -> Option<&PriceMode> {
        self.kinds.get(&kind)
    }

    pub fn is_offered(&self, kind: u16) -> bool {
        self.kinds.contains_key(&kind)
    }

    /// Offered kinds in ascending order (for NIP-89 announcements).
    pub fn offered_kinds(&self) -> impl Iterator<Item = u16> + '_ {
        self.kinds.keys().copied()
    }

    pub fn price(&self, kind: u16, input: &InputMeasure) -> Result<PriceDecision, DecisionError> {
        match self.kinds.get(&kind) {
            None => Ok(PriceDecision::NotOffered),
            Some(PriceMode::Free) => Ok(PriceDecision::Free),
            Some(PriceMode::Fixed(amount)) => Ok(PriceDecision::Charge(*amount)),
            Some(PriceMode::PerUnit(rate)) => match rate.charge(input.count(rate.unit)) {
                None => Err(DecisionError::PriceTooLarge { kind }),
                Some(charge) if charge.is_zero() => Ok(PriceDecision::Free),
                Some(charge) => Ok(PriceDecision::Charge(charge)),
            },
        }
    }

    pub(crate) fn from_raw(raw: RawPricing, check: Check<'_>) -> Result<Self, PolicyError> {
        let mut kinds = BTreeMap::new();
        let mut first_index = BTreeMap::new();
        for (i, entry) in raw.kind.into_iter().enumerate() {
            let path = format!("pricing.kind[{i}]");
            let kind = request_kind(check, &format!("{path}.kind"), entry.kind)?;
            if let Some(first) = first_index.insert(kind, i) {
                return Err(check.invalid(
                    &format!("{path}.kind"),
                    format!("job kind {kind} is listed twice (also at pricing.kind[{first}])"),
                ));
            }
            kinds.insert(kind, price_mode(check, &path, entry)?);
        }
        Ok(Pricing { kinds })
    }
}

/// A NIP-90 request kind (5000-5999).
pub(crate) fn request_kind(check: Check<'_>, field: &str, value: i64) -> Result<u16, PolicyError> {
    match u16::try_from(value) {
        Ok(kind) if REQUEST_KINDS.contains(&kind) => Ok(kind),
        _ => Err(check.invalid(
            field,
            format!("job kind {value} is not a NIP-90 request kind (5000-5999)"),
        )),
    }
}

fn price_mode(check: Check<'_>, path: &str, entry: RawKindPrice) -> Result<PriceMode, PolicyError> {
    let only_with = |field: &str, mode: &str| {
        check.invalid(
            &format!("{path}.{field}"),
            format!(
                "only allowed with mode = \"{mode}\" (this entry is mode = {:?})",
                entry.mode
            ),
        )
    };
    let per_unit_fields = [
        ("base_msat", entry.base_msat.is_some()),
        ("per_unit_msat", entry.per_unit_msat.is_some()),
        ("unit", entry.unit.is_some()),
        ("max_msat", entry.max_msat.is_some()),
        ("min_msat", entry.min_msat.is_some()),
    ];
    match entry.mode.as_str() {
        "free" | "fixed" => {
            if let Some((field, _)) = per_unit_fields.iter().find(|(_, present)| *present) {
                return Err(only_with(field, "per_unit"));
            }
            if entry.mode == "free" {
                if entry.amount_msat.is_some() {
                    return Err(only_with("amount_msat", "fixed"));
                }
                return Ok(PriceMode::Free);
            }
            let field = format!("{path}.amount_msat");
            let amount = entry
                .amount_msat
                .ok_or_else(|| check.invalid(&field, "required with mode = \"fixed\""))?;
            Ok(PriceMode::Fixed(check.positive_msat(&field, amount)?))
        }
        "per_unit" => {
            if entry.amount_msat.is_some() {
                return Err(only_with("amount_msat", "fixed"));
            }
            per_unit_price(check, path, entry).map(PriceMode::PerUnit)
        }
        other => Err(check.invalid(
            &format!("{path}.mode"),
            format!("unknown mode {other:?}; expected \"free\", \"fixed\" or \"per_unit\""),
        )),
    }
}

fn per_unit_price(
    check: Check<'_>,
    path: &str,
    entry: RawKindPrice,
) -> Result<PerUnitPrice, PolicyError> {
    let field = |name: &str| format!("{path}.{name}");
    let optional_msat =
        |name: &str, value: Option<i64>| value.map(|v| check.msat(&field(name), v)).transpose();
    let base = optional_msat("base_msat", entry.base_msat)?.unwrap_or(Msat::ZERO);
    let rate_value = entry.per_unit_msat.ok_or_else(|| {
        check.invalid(&field("per_unit_msat"), "required with mode = \"per_unit\"")
    })?;
    let per_unit_msat = rate(check, &field("per_unit_msat"), &rate_value)?;
    let unit_name = entry
        .unit
        .ok_or_else(|| check.invalid(&field("unit"), "required with mode = \"per_unit\""))?;
    let unit = match unit_name.as_str() {
        "byte" => Unit::Byte,
        "char" => Unit::Char,
        "word" => Unit::Word,
        "input" => Unit::Input,
        other => {
            return Err(check.invalid(
                &field("unit"),
                format!(
                    "unknown unit {other:?}; expected \"byte\", \"char\", \"word\" or \"input\""
                ),
            ))
        }
    };
    let min = optional_msat("min_msat", entry.min_msat)?;
    let max = optional_msat("max_msat", entry.max_msat)?;
    if let Some(max) = max {
        if max.is_zero() {
            return Err(check.invalid(&field("max_msat"), "must be greater than 0"));
        }
        if max < base {
            return Err(check.invalid(
                &field("max_msat"),
                format!("cap {max} is below base_msat {base}"),
            ));
        }
        if let Some(min) = min.filter(|min| *min > max) {
            return Err(check.invalid(
                &field("min_msat"),
                format!("minimum {min} is above max_msat {max}"),
            ));
        }
    }
    Ok(PerUnitPrice {
        base,
        per_unit_msat,
        unit,
        min,
        max,
    })
}

/// A non-negative decimal rate written as a string ("0.5") or an integer.
fn rate(check: Check<'_>, field: &str, value: &toml::Value) -> Result<Decimal, PolicyError> {
    let parsed = match value {
        toml::Value::String(text) => Decimal::from_str_exact(text)
            .map_err(|e| check.invalid(field, format!("{text:?} is not a decimal number ({e})")))?,
        toml::Value::Integer(n) => Decimal::from(*n),
        toml::Value::Float(f) => {
            return Err(check.invalid(
                field,
                format!("write decimal prices as a string so they are exact, e.g. \"{f}\""),
            ))
        }
        other => {
            return Err(check.invalid(
                field,
                format!(
                    "expected a decimal string such as \"0.5\", got a {}",
                    other.type_str()
                ),
            ))
        }
    };
    let rate = parsed.normalize();
    if rate.is_sign_negative() && !rate.is_zero() {
        return Err(check.invalid(field, format!("must not be negative, got {rate}")));
    }
    if rate.scale() > MAX_RATE_DECIMALS {
        return Err(check.invalid(
            field,
            format!("at most {MAX_RATE_DECIMALS} decimal places are supported, got {rate}"),
        ));
    }
    if rate > Decimal::from(Msat::MAX_SUPPLY.as_msat()) {
        return Err(check.invalid(
            field,
            format!("{rate} msat per unit is more than the total bitcoin supply"),
        ));
    }
    // "-0" parses as negative zero; store plain zero.
    Ok(rate.abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn per_unit(rate: &str, base: u64, min: Option<u64>, max: Option<u64>) -> PerUnitPrice {
        PerUnitPrice {
            base: Msat::from_msat(base),
            per_unit_msat: Decimal::from_str(rate).unwrap().normalize(),
            unit: Unit::Word,
            min: min.map(Msat::from_msat),
            max: max.map(Msat::from_msat),
        }
    }

    fn msat(v: u64) -> Option<Msat> {
        Some(Msat::from_msat(v))
    }

    #[test]
    fn fractional_prices_round_up() {
        assert_eq!(per_unit("0.5", 0, None, None).charge(3), msat(2));
        assert_eq!(per_unit("0.001", 0, None, None).charge(1), msat(1));
        assert_eq!(per_unit("0.333", 10, None, None).charge(3), msat(11));
    }

    #[test]
    fn exact_prices_do_not_round() {
        assert_eq!(per_unit("0.5", 0, None, None).charge(4), msat(2));
        assert_eq!(per_unit("2.25", 7, None, None).charge(4), msat(16));
        assert_eq!(per_unit("0", 5, None, None).charge(1_000), msat(5));
        assert_eq!(per_unit("0.5", 0, None, None).charge(0), msat(0));
    }

    #[test]
    fn max_caps_and_min_raises() {
        assert_eq!(per_unit("10", 0, None, Some(25)).charge(3), msat(25));
        assert_eq!(per_unit("10", 0, Some(100), None).charge(3), msat(100));
        assert_eq!(per_unit("10", 0, Some(5), Some(50)).charge(2), msat(20));
    }

    #[test]
    fn too_large_is_none_unless_capped() {
        let huge = per_unit("1000000000000000000", 0, None, None);
        assert_eq!(huge.charge(u64::MAX), None);
        assert_eq!(huge.charge(3), None, "3e18 msat is above the supply");
        assert_eq!(huge.charge(2), msat(2_000_000_000_000_000_000));
        let capped = per_unit("1000000000000000000", 0, None, Some(9));
        assert_eq!(capped.charge(u64::MAX), msat(9));
        let tiny_rate = per_unit("0.000000000000000001", 0, None, None);
        assert_eq!(tiny_rate.charge(u64::MAX), msat(19));
    }

    #[test]
    fn price_decisions() {
        let mut kinds = BTreeMap::new();
        kinds.insert(5001, PriceMode::Free);
        kinds.insert(5050, PriceMode::Fixed(Msat::from_msat(1_000)));
        kinds.insert(5002, PriceMode::PerUnit(per_unit("0.5", 0, None, None)));
        kinds.insert(
            5003,
            PriceMode::PerUnit(per_unit("1000000000000000000", 0, None, None)),
        );
        let pricing = Pricing { kinds };
        let words = |words| InputMeasure {
            words,
            ..InputMeasure::default()
        };
        assert_eq!(
            pricing.price(5000, &words(1)),
            Ok(PriceDecision::NotOffered)
        );
        assert_eq!(pricing.price(5001, &words(9)), Ok(PriceDecision::Free));
        assert_eq!(
            pricing.price(5050, &words(9)),
            Ok(PriceDecision::Charge(Msat::from_msat(1_000)))
        );
        assert_eq!(
            pricing.price(5002, &words(3)),
            Ok(PriceDecision::Charge(Msat::from_msat(2)))
        );
        assert_eq!(pricing.price(5002, &words(0)), Ok(PriceDecision::Free));
        assert_eq!(
            pricing.price(5003, &words(3)),
            Err(DecisionError::PriceTooLarge { kind: 5003 })
        );
    }

    fn rate_strategy() -> impl Strategy<Value = Decimal> {
        let digits = prop_oneof![0u64..1_000, 0u64..1_000_000_000_000, any::<u64>()];
        (digits, 0u32..=MAX_RATE_DECIMALS)
            .prop_map(|(digits, scale)| Decimal::from_i128_with_scale(i128::from(digits), scale))
    }

    fn units_strategy() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..1_000, 0u64..1_000_000_000, any::<u64>()]
    }

    proptest! {
        #[test]
        fn charge_is_ceiling_of_exact_value(
            rate in rate_strategy(),
            base in prop_oneof![0u64..1_000, 0u64..=Msat::MAX_SUPPLY.as_msat()],
            units in units_strategy(),
        ) {
            let price = PerUnitPrice {
                base: Msat::from_msat(base),
                per_unit_msat: rate,
                unit: Unit::Byte,
                min: None,
                max: None,
            };
            let charge = price.charge(units);
            // Reference value in rust_decimal, used only when rust_decimal kept every digit
            // (it rescales, i.e. rounds, when a product outgrows 96 bits).
            let exact = Decimal::from(units)
                .checked_mul(rate)
                .and_then(|p| p.checked_add(Decimal::from(base)))
                .filter(|e| e.scale() == rate.scale());
            if let Some(exact) = exact {
                let fits = exact.ceil() <= Decimal::from(Msat::MAX_SUPPLY.as_msat());
                prop_assert_eq!(charge.is_some(), fits);
                if let Some(charge) = charge {
                    let charged = Decimal::from(charge.as_msat());
                    prop_assert!(charged >= exact, "{} < {}", charged, exact);
                    prop_assert!(charged < exact + Decimal::ONE, "{} >= {} + 1", charged, exact);
                }
            }
        }

        #[test]
        fn caps_always_hold(
            rate in rate_strategy(),
            units in units_strategy(),
            min in 0u64..1_000,
            extra in 1u64..1_000_000,
        ) {
            let max = min + extra;
            let price = PerUnitPrice {
                base: Msat::ZERO,
                per_unit_msat: rate,
                unit: Unit::Char,
                min: Some(Msat::from_msat(min)),
                max: Some(Msat::from_msat(max)),
            };
            let charge = price.charge(units).expect("a capped price always fits");
            prop_assert!(charge.as_msat() >= min && charge.as_msat() <= max);
        }
    }
}
