//! Checks on an invoice we are about to pay as a refund (fetched from the customer's LNURL-pay
//! endpoint or given in their request): it must be for exactly what is owed and still payable.
//! The refund runner records the invoice (`refund_started`) only after these checks pass.

use std::fmt;
use std::str::FromStr;

use paydvm_ledger::Msat;

use super::bolt11::{Bolt11Error, Invoice};
use crate::payments::lnurl::Lud16;

/// Where a customer wants Lightning refunds paid, from the request's `["refund", …]` tag: a
/// lightning address (we fetch an invoice for exactly what is owed) or a BOLT 11 invoice (used
/// only if it is for exactly what is owed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundAddress {
    LightningAddress(Lud16),
    Invoice(String),
}

/// Why a refund tag is not a refund address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refund tag is neither a lightning address (name@domain) nor a BOLT 11 invoice")]
pub struct BadRefundAddress;

impl FromStr for RefundAddress {
    type Err = BadRefundAddress;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains('@') {
            return s
                .parse::<Lud16>()
                .map(RefundAddress::LightningAddress)
                .map_err(|_| BadRefundAddress);
        }
        let invoice = Invoice::parse(s).map_err(|_| BadRefundAddress)?;
        Ok(RefundAddress::Invoice(invoice.as_str().to_owned()))
    }
}

impl fmt::Display for RefundAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefundAddress::LightningAddress(a) => a.fmt(f),
            RefundAddress::Invoice(i) => f.write_str(i),
        }
    }
}

/// Why a refund invoice is refused. The refund stays pending with this as its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundInvoiceError {
    #[error(transparent)]
    Invoice(#[from] Bolt11Error),
    #[error("invoice is for {invoice} but {owed} are owed")]
    WrongAmount { invoice: Msat, owed: Msat },
    #[error("invoice expires within {margin_secs} s; too late to pay safely")]
    ExpiresTooSoon { margin_secs: u64 },
}

/// Least time an invoice must stay payable for us to start paying it.
pub const MIN_EXPIRY_MARGIN_SECS: u64 = 30;

/// Parses `bolt11` and accepts it only if its amount is exactly `owed`, it has one, and it
/// stays payable for at least [`MIN_EXPIRY_MARGIN_SECS`] after `now_secs`.
pub fn check_refund_invoice(
    bolt11: &str,
    owed: Msat,
    now_secs: u64,
) -> Result<Invoice, RefundInvoiceError> {
    let (invoice, amount) = Invoice::parse_payable(bolt11, now_secs)?;
    if amount != owed {
        return Err(RefundInvoiceError::WrongAmount {
            invoice: amount,
            owed,
        });
    }
    if invoice.is_expired_at(now_secs.saturating_add(MIN_EXPIRY_MARGIN_SECS)) {
        return Err(RefundInvoiceError::ExpiresTooSoon {
            margin_secs: MIN_EXPIRY_MARGIN_SECS,
        });
    }
    Ok(invoice)
}

/// What to do with a recorded refund payment that, the wallet confirmed, was never sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeverSent {
    /// Send the same recorded invoice again: it still has at least [`MIN_EXPIRY_MARGIN_SECS`]
    /// of life.
    PayAgain,
    /// It can no longer be paid safely (expired, about to, or unreadable): the attempt has
    /// failed, and a new one with a fresh invoice follows. The reason, for the ledger.
    GiveUp(String),
}

/// Decides about the recorded `bolt11` of a refund whose payment the wallet has no record of,
/// with the same margin as a fresh invoice ([`check_refund_invoice`]).
pub fn never_sent(bolt11: &str, now_secs: u64) -> NeverSent {
    match Invoice::parse(bolt11) {
        Ok(invoice) if !invoice.is_expired_at(now_secs.saturating_add(MIN_EXPIRY_MARGIN_SECS)) => {
            NeverSent::PayAgain
        }
        Ok(invoice) => NeverSent::GiveUp(format!(
            "never sent: the wallet has no record of the payment and the invoice expires at \
             {} (less than {MIN_EXPIRY_MARGIN_SECS} s left)",
            invoice.expires_at()
        )),
        Err(e) => NeverSent::GiveUp(format!(
            "never sent: the wallet has no record of the payment and the recorded invoice is \
             unusable ({e})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lightning::fake::FakeLightning;
    use crate::lightning::{InvoiceDescription, LightningBackend};

    #[tokio::test]
    async fn only_an_unexpired_invoice_for_exactly_the_amount_owed_is_accepted() {
        let customer = FakeLightning::new();
        let owed = Msat::from_msat(4_000);
        let make = |msat: u64, expiry: u64| {
            let customer = customer.clone();
            async move {
                customer
                    .create_invoice(
                        Msat::from_msat(msat),
                        InvoiceDescription::Text("refund".into()),
                        expiry,
                    )
                    .await
                    .unwrap()
                    .bolt11
            }
        };
        let now = crate::node::now_ms() / 1000;
        let good = make(4_000, 600).await;
        let inv = check_refund_invoice(&good, owed, now).unwrap();
        assert_eq!(inv.amount(), Some(owed));

        let more = make(4_001, 600).await;
        assert_eq!(
            check_refund_invoice(&more, owed, now).unwrap_err(),
            RefundInvoiceError::WrongAmount {
                invoice: Msat::from_msat(4_001),
                owed
            }
        );
        let less = make(3_999, 600).await;
        assert!(matches!(
            check_refund_invoice(&less, owed, now),
            Err(RefundInvoiceError::WrongAmount { .. })
        ));
        let short = make(4_000, 10).await;
        assert!(matches!(
            check_refund_invoice(&short, owed, now),
            Err(RefundInvoiceError::ExpiresTooSoon { .. })
        ));
        assert!(matches!(
            check_refund_invoice(&good, owed, now + 601),
            Err(RefundInvoiceError::Invoice(Bolt11Error::Expired { .. }))
        ));
        assert!(matches!(
            check_refund_invoice("lnbcrt1garbage", owed, now),
            Err(RefundInvoiceError::Invoice(Bolt11Error::Invalid(_)))
        ));
    }

    #[tokio::test]
    async fn a_never_sent_invoice_is_paid_again_only_with_the_margin_left() {
        let customer = FakeLightning::new();
        let bolt11 = customer
            .create_invoice(
                Msat::from_msat(4_000),
                InvoiceDescription::Text("refund".into()),
                600,
            )
            .await
            .unwrap()
            .bolt11;
        let invoice = Invoice::parse(&bolt11).unwrap();
        let last_safe = invoice.expires_at() - MIN_EXPIRY_MARGIN_SECS - 1;
        assert_eq!(
            never_sent(&bolt11, invoice.timestamp()),
            NeverSent::PayAgain
        );
        assert_eq!(never_sent(&bolt11, last_safe), NeverSent::PayAgain);
        for too_late in [
            last_safe + 1,
            invoice.expires_at(),
            invoice.expires_at() + 600,
        ] {
            assert!(
                matches!(never_sent(&bolt11, too_late), NeverSent::GiveUp(reason)
                    if reason.contains("expires at")),
                "{too_late}"
            );
        }
        assert!(matches!(
            never_sent("lnbcrt1garbage", last_safe),
            NeverSent::GiveUp(reason) if reason.contains("unusable")
        ));
    }
}
