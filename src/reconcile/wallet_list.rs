//! A wallet that lists its payments (LNbits) lets reconcile say more than "the figures differ":
//! each listed payment is matched with what the ledger knows, and those it cannot link are
//! named. Pure: the caller reads the list and the ledger.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use paydvm_ledger::InvoiceFor;

use super::Item;

/// One payment as the wallet lists it (only rows the wallet counts in its balance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPayment {
    /// Lower-case hex.
    pub payment_hash: String,
    /// Positive: received (an invoice of this wallet); negative: paid out.
    pub amount_msat: i64,
    /// What paying it cost on top (outgoing only).
    pub fee_msat: u64,
    /// Settled; otherwise pending (an open invoice, a payment on its way).
    pub settled: bool,
}

/// What the ledger can link a listed payment to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerLinks {
    /// Invoices our quotes offered: payment hash → the job or subscription quoted.
    pub quoted: BTreeMap<String, InvoiceFor>,
    /// Payment hashes the ledger booked a payment under.
    pub booked: BTreeSet<String>,
    /// Payment hashes of our Lightning refunds: hash → (refund id, job).
    pub refunds: BTreeMap<String, (String, Option<String>)>,
}

/// Listed payments the ledger cannot account for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Findings {
    /// Settled invoices of our quotes with no payment booked.
    pub unbooked_settlements: Vec<Item>,
    /// Settled incoming payments that are no invoice of ours and no booked payment (money sent
    /// to the wallet directly; an operator top-up booked with `paydvm float add` shows here too,
    /// as the ledger does not know its payment hash).
    pub received_outside: Vec<Item>,
    /// Outgoing payments (settled or on their way) that are none of our refunds.
    pub paid_outside: Vec<Item>,
    /// The list's own total as the wallet counts its balance (received settled, minus paid out
    /// with fees, settled or pending).
    pub list_total_msat: i128,
}

/// Sorts every listed payment into what the ledger knows and what it does not.
pub fn classify(listed: &[ListedPayment], links: &LedgerLinks) -> Findings {
    let mut found = Findings::default();
    for payment in listed {
        let hash = payment.payment_hash.to_ascii_lowercase();
        let received = payment.amount_msat > 0;
        if received && !payment.settled {
            continue; // an open invoice: in neither figure
        }
        let moved = payment.amount_msat.unsigned_abs();
        if received {
            found.list_total_msat += i128::from(moved);
            if links.booked.contains(&hash) {
                continue;
            }
            match links.quoted.get(&hash) {
                Some(quoted_for) => found
                    .unbooked_settlements
                    .push(Item::quoted(hash, moved, quoted_for)),
                None => found.received_outside.push(Item::new(hash, moved)),
            }
        } else {
            let left = moved.saturating_add(payment.fee_msat);
            found.list_total_msat -= i128::from(left);
            if !links.refunds.contains_key(&hash) {
                found.paid_outside.push(Item::new(hash, left));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(hash: &str, amount_msat: i64, fee_msat: u64, settled: bool) -> ListedPayment {
        ListedPayment {
            payment_hash: hash.into(),
            amount_msat,
            fee_msat,
            settled,
        }
    }

    fn job(j: &str) -> InvoiceFor {
        InvoiceFor::Job(paydvm_ledger::JobId::new(j).unwrap())
    }

    fn subscription(s: &str) -> InvoiceFor {
        InvoiceFor::Subscription(paydvm_ledger::SubscriptionId::new(s).unwrap())
    }

    #[test]
    fn every_listed_payment_is_linked_or_named() {
        let links = LedgerLinks {
            quoted: [
                ("aa", job("job-a")),
                ("bb", job("job-b")),
                ("cc", job("job-c")),
                ("ss", subscription("sub-s")),
            ]
            .map(|(h, quoted_for)| (h.to_owned(), quoted_for))
            .into(),
            booked: ["aa".to_owned(), "zz".to_owned()].into(),
            refunds: [("rr".to_owned(), ("refund-1".to_owned(), None))].into(),
        };
        let found = classify(
            &[
                listed("AA", 5_000, 0, true),   // quoted and booked
                listed("bb", 5_000, 0, true),   // quoted, settled, not booked
                listed("cc", 5_000, 0, false),  // quoted, still open
                listed("ss", 9_000, 0, true),   // a subscription's period, not booked
                listed("zz", 2_000, 0, true),   // booked (a zap invoice)
                listed("ee", 7_000, 0, true),   // nobody's
                listed("rr", -3_000, 10, true), // our refund
                listed("oo", -2_000, 5, false), // paid outside, on its way
            ],
            &links,
        );
        assert_eq!(
            found.unbooked_settlements,
            [
                Item::quoted("bb", 5_000, &job("job-b")),
                Item::quoted("ss", 9_000, &subscription("sub-s"))
            ]
        );
        assert_eq!(found.unbooked_settlements[1].job, None);
        assert_eq!(
            found.unbooked_settlements[1].subscription.as_deref(),
            Some("sub-s")
        );
        assert_eq!(found.received_outside, [Item::new("ee", 7_000)]);
        assert_eq!(found.paid_outside, [Item::new("oo", 2_005)]);
        assert_eq!(
            found.list_total_msat,
            5_000 + 5_000 + 9_000 + 2_000 + 7_000 - 3_010 - 2_005
        );
    }
}
