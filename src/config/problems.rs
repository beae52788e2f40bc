//! What keeps a loaded config from taking money, found without I/O: an offer that is priced but
//! payable by no rail, and a price the Lightning backend cannot invoice (LNbits makes invoices
//! in whole sats only). `paydvm check-config` adds the reachability probes
//! (`crate::cli::check_config`); `paydvm run` makes the same checks at start and refuses or warns
//! as `[node] config_problems` says.

use std::fmt;

use paydvm_policies::PriceMode;

use super::{BackendSecrets, Config};

/// One problem, naming the config field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field path, as in `ConfigError::Invalid` (`offer[0]`, `lightning.lnbits_url`, ...).
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The problems of `config` that need neither the network nor the disk, in offer order.
pub fn payment_problems(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let whole_sats_only = config
        .lightning
        .as_ref()
        .is_some_and(|l| matches!(l.backend, BackendSecrets::Lnbits { .. }));
    for (i, offer) in config.offers.iter().enumerate() {
        let Some(mode) = config.policy.pricing().mode(offer.kind) else {
            continue; // Config::load already refused an unpriced offer.
        };
        let field = format!("offer[{i}]");
        if let Some(price) = charged(mode) {
            if !has_rail(config) {
                out.push(Problem::new(
                    &field,
                    format!(
                        "kind {} costs {price} but nothing can pay for it: no [lightning] \
                         backend, no node.lud16 for zaps and no trusted mint in {}; set one \
                         (docs/configuration.md), or price the kind with mode = \"free\"",
                        offer.kind,
                        config.node.policy.display()
                    ),
                ));
            }
        }
        if whole_sats_only && !whole_sats(mode) {
            out.push(Problem::new(
                field,
                format!(
                    "kind {} can cost an amount that is not whole sats, and LNbits makes \
                     invoices in whole sats only, so such a quote would carry no invoice; price \
                     it in multiples of 1000 msat (base, rate, min and max)",
                    offer.kind
                ),
            ));
        }
    }
    out
}

/// How a priced kind's price reads in a message; `None` for a free kind.
fn charged(mode: &PriceMode) -> Option<String> {
    match mode {
        PriceMode::Free => None,
        PriceMode::Fixed(amount) if amount.is_zero() => None,
        PriceMode::Fixed(amount) => Some(format!("{} msat", amount.as_msat())),
        PriceMode::PerUnit(_) => Some("a per-unit price".to_owned()),
    }
}

/// Some rail can take a payment: a Lightning backend (invoices), a lightning address (zaps) or
/// a trusted mint (NutZaps and tokens; `Config::load` already requires `[cashu]` with it).
fn has_rail(config: &Config) -> bool {
    config.lightning.is_some()
        || config.node.lud16.is_some()
        || !config.policy.trusted_mints().is_empty()
}

/// Every price this mode can come to is a whole number of sats.
fn whole_sats(mode: &PriceMode) -> bool {
    let sat = |msat: u64| msat.is_multiple_of(1_000);
    match mode {
        PriceMode::Free => true,
        PriceMode::Fixed(amount) => sat(amount.as_msat()),
        PriceMode::PerUnit(p) => {
            // The rate times any unit count is whole sats only if the rate is a whole multiple
            // of 1000 msat: mantissa / 10^scale ≡ 0 (mod 1000).
            let rate_whole = 10i128
                .checked_pow(p.per_unit_msat.scale())
                .and_then(|d| d.checked_mul(1_000))
                .is_some_and(|d| p.per_unit_msat.mantissa() % d == 0);
            rate_whole
                && sat(p.base.as_msat())
                && p.min.is_none_or(|m| sat(m.as_msat()))
                && p.max.is_none_or(|m| sat(m.as_msat()))
        }
    }
}
