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
}
