//! The LNbits wallet's side of `paydvm reconcile`: its balance, and its payment list matched
//! with the ledger (`crate::reconcile::wallet_list`). Read with the invoice key only.

use crate::ledger_handle::LedgerHandle;
use paydvm_ledger::LedgerStore;
use paydvm_ledger::{Asset, PaymentRef};

use crate::lightning::lnbits::answers::{PaymentRow, PENDING, SUCCESS};
use crate::lightning::lnbits::LnbitsLightning;
use crate::lightning::LightningBackend;
use crate::reconcile::wallet_list::{classify, LedgerLinks, ListedPayment};
use crate::reconcile::{AssetInput, BackendView};

/// Fills `input` (the `asset:lightning` row) from the wallet.
pub(super) async fn gather(
    backend: &LnbitsLightning,
    store: &LedgerHandle,
    input: &mut AssetInput,
) -> anyhow::Result<()> {
    let balance = match backend.balance().await {
        Ok(balance) => balance,
        Err(e) => {
            input.backend = BackendView::Unavailable(e.to_string());
            return Ok(());
        }
    };
    let rows = match backend.payments().await {
        Ok(rows) => rows,
        Err(e) => {
            input.backend = BackendView::Unavailable(format!("listing its payments: {e}"));
            return Ok(());
        }
    };
    input.backend = BackendView::Reported(balance);
    let listed: Vec<ListedPayment> = rows.iter().filter_map(listed).collect();
    let found = classify(&listed, &links(store, &listed)?);
    input.unbooked_settlements = found.unbooked_settlements;
    input.received_outside = found.received_outside;
    input.paid_outside = found.paid_outside;
    if found.list_total_msat != i128::from(balance.as_msat()) {
        input.notes.push(format!(
            "the wallet's payment list adds up to {} msat but its balance is {} msat: it \
             changed while being read, or LNbits lists rows it does not count; run again",
            found.list_total_msat,
            balance.as_msat()
        ));
    }
    Ok(())
}

/// A row as reconcile reads it; rows LNbits does not count (failed, zero) are left out.
fn listed(row: &PaymentRow) -> Option<ListedPayment> {
    let settled = match row.status.as_str() {
        SUCCESS => true,
        PENDING => false,
        _ => return None,
    };
    (row.amount != 0).then(|| ListedPayment {
        payment_hash: row.payment_hash.to_ascii_lowercase(),
        amount_msat: row.amount,
        fee_msat: row.fee.unsigned_abs(),
        settled,
    })
}

/// What the ledger can link the listed payments to.
fn links(store: &LedgerHandle, listed: &[ListedPayment]) -> anyhow::Result<LedgerLinks> {
    let state = store.state();
    let mut links = LedgerLinks::default();
    for quoted in store.quoted_invoices()? {
        links
            .quoted
            .insert(quoted.payment_hash.to_ascii_lowercase(), quoted.quoted_for);
    }
    for payment in listed {
        let booked = PaymentRef::new(payment.payment_hash.clone())
            .is_ok_and(|r| state.payment_ref_seq(&r).is_some());
        if booked {
            links.booked.insert(payment.payment_hash.clone());
        }
    }
    for refund in state.refunds() {
        if let Some(route) = refund
            .route
            .as_ref()
            .filter(|route| route.asset == Asset::Lightning)
        {
            links.refunds.insert(
                route.lookup.to_ascii_lowercase(),
                (
                    refund.refund.to_string(),
                    refund.job.as_ref().map(ToString::to_string),
                ),
            );
        }
    }
    Ok(links)
}
