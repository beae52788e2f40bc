//! Reconciliation: each asset account of the ledger (`asset:lightning`, `asset:mint:<url>`)
//! against what the backend holding that money reports. Pure: the caller gathers the figures
//! (`paydvm reconcile`), this decides what they mean.
//!
//! The ledger and a wallet may differ for a moment without anything being wrong: a refund the
//! ledger records as started may already have left the wallet (it is booked out only when the
//! backend confirms it), and a NutZap swapped at the mint sits in the wallet until the ledger
//! credits it. Such in-flight items explain a difference; anything beyond them does not.

use paydvm_ledger::{Account, Asset, InvoiceFor, Msat};
use serde::Serialize;

/// Listed wallet payments matched with the ledger (backends that list them: LNbits).
pub mod wallet_list;

/// What the backend says it holds for one asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendView {
    /// The backend's own figure.
    Reported(Msat),
    /// No external wallet to ask (the fake backend lives inside the node process).
    NotCheckable(String),
    /// The backend was asked and did not answer usably.
    Unavailable(String),
}

/// One item that explains part of a difference, or one the operator should look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// A refund id, a NutZap event id or a payment hash.
    pub id: String,
    pub amount_msat: u64,
    /// The job it belongs to, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The subscription it belongs to (a period's invoice, a subscription's refund), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
}

impl Item {
    /// An item that belongs to no job or subscription (or to one not known).
    pub fn new(id: impl Into<String>, amount_msat: u64) -> Item {
        Item {
            id: id.into(),
            amount_msat,
            job: None,
            subscription: None,
        }
    }

    /// The item of an invoice our quotes offered: it belongs to what was quoted.
    pub fn quoted(id: impl Into<String>, amount_msat: u64, quoted_for: &InvoiceFor) -> Item {
        let mut item = Item::new(id, amount_msat);
        match quoted_for {
            InvoiceFor::Job(job) => item.job = Some(job.to_string()),
            InvoiceFor::Subscription(s) => item.subscription = Some(s.to_string()),
        }
        item
    }
}

/// Everything known about one asset before comparing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetInput {
    pub asset: Asset,
    /// The ledger's balance of the asset account (debits − credits).
    pub ledger: i128,
    pub backend: BackendView,
    /// Refunds started but not settled (`in_flight`, `unknown`): may have left the wallet.
    pub outgoing_in_flight: Vec<Item>,
    /// In the wallet, not yet in the ledger, and the node will book it (swapped NutZaps).
    pub incoming_in_flight: Vec<Item>,
    /// Invoices the ledger issued, settled at the backend, with no payment in the ledger.
    pub unbooked_settlements: Vec<Item>,
    /// Settled payments into the wallet the ledger cannot link (only from a listing backend).
    pub received_outside: Vec<Item>,
    /// Payments out of the wallet that are none of our refunds (only from a listing backend).
    pub paid_outside: Vec<Item>,
    /// Anything else the gatherer wants the operator to read.
    pub notes: Vec<String>,
}

impl AssetInput {
    /// An asset with nothing in flight and no notes.
    pub fn new(asset: Asset, ledger: i128, backend: BackendView) -> Self {
        AssetInput {
            asset,
            ledger,
            backend,
            outgoing_in_flight: Vec::new(),
            incoming_in_flight: Vec::new(),
            unbooked_settlements: Vec::new(),
            received_outside: Vec::new(),
            paid_outside: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// The verdict for one asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Ledger and backend agree to the msat.
    Match,
    /// They differ by no more than what is in flight; the node settles it by itself.
    InFlight,
    /// The backend holds money the ledger does not know: funds from outside, or settlements
    /// the node has not booked (listed).
    BackendHasMore,
    /// The ledger claims money the backend does not hold: lost, spent outside the node, or a
    /// bug. Always look at it.
    LedgerHasMore,
    /// Nothing to compare with (the fake backend).
    NotCheckable,
    /// The backend could not be asked.
    Unavailable,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Match => "match",
            Status::InFlight => "in_flight",
            Status::BackendHasMore => "backend_has_more",
            Status::LedgerHasMore => "ledger_has_more",
            Status::NotCheckable => "not_checkable",
            Status::Unavailable => "unavailable",
        }
    }

    /// Whether this status lets `paydvm reconcile` exit 0. A check that could not be made
    /// because there is nothing outside to ask is not a mismatch; one whose backend failed is.
    pub fn is_ok(self) -> bool {
        matches!(
            self,
            Status::Match | Status::InFlight | Status::NotCheckable
        )
    }
}

/// The comparison of one asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssetReport {
    /// The ledger account, e.g. `asset:lightning`.
    pub account: String,
    pub status: Status,
    pub ledger_msat: i128,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_msat: Option<u64>,
    /// backend − ledger.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub difference_msat: Option<i128>,
    /// The part of the difference that in-flight items do not explain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unexplained_msat: Option<i128>,
    pub explanation: String,
    pub outgoing_in_flight: Vec<Item>,
    pub incoming_in_flight: Vec<Item>,
    pub unbooked_settlements: Vec<Item>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub received_outside: Vec<Item>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paid_outside: Vec<Item>,
    pub notes: Vec<String>,
}

/// All assets compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// True when every asset is `match`, `in_flight` or `not_checkable`.
    pub ok: bool,
    pub assets: Vec<AssetReport>,
}

/// Compares every asset; the report keeps the input order.
pub fn reconcile(inputs: Vec<AssetInput>) -> Report {
    let assets: Vec<AssetReport> = inputs.into_iter().map(compare).collect();
    Report {
        ok: assets.iter().all(|a| a.status.is_ok()),
        assets,
    }
}

fn total(items: &[Item]) -> i128 {
    items.iter().map(|i| i128::from(i.amount_msat)).sum()
}

/// Compares one asset.
pub fn compare(input: AssetInput) -> AssetReport {
    let account = Account::Asset(input.asset.clone()).to_string();
    let mut report = AssetReport {
        account,
        status: Status::Match,
        ledger_msat: input.ledger,
        backend_msat: None,
        difference_msat: None,
        unexplained_msat: None,
        explanation: String::new(),
        outgoing_in_flight: input.outgoing_in_flight,
        incoming_in_flight: input.incoming_in_flight,
        unbooked_settlements: input.unbooked_settlements,
        received_outside: input.received_outside,
        paid_outside: input.paid_outside,
        notes: input.notes,
    };
    let backend = match input.backend {
        BackendView::Reported(backend) => backend,
        BackendView::NotCheckable(why) => {
            report.status = Status::NotCheckable;
            report.explanation = format!("not checkable: {why}");
            return report;
        }
        BackendView::Unavailable(why) => {
            report.status = Status::Unavailable;
            report.explanation = format!("the backend could not be asked: {why}");
            return report;
        }
    };
    let difference = i128::from(backend.as_msat()) - input.ledger;
    report.backend_msat = Some(backend.as_msat());
    report.difference_msat = Some(difference);
    // The backend may be short of the ledger by what left in refunds, and ahead of it by what
    // is waiting to be credited.
    let incoming = total(&report.incoming_in_flight);
    let outgoing = total(&report.outgoing_in_flight);
    let (low, high) = (incoming - outgoing, incoming);
    let (status, unexplained, explanation) = if difference == 0 {
        (Status::Match, 0, "ledger and backend agree".to_owned())
    } else if (low..=high).contains(&difference) {
        (
            Status::InFlight,
            0,
            format!(
                "the difference is within what is in flight ({incoming} msat incoming, \
                 {outgoing} msat in outgoing refunds); run again once they are booked"
            ),
        )
    } else if difference > high {
        let extra = difference - high;
        (
            Status::BackendHasMore,
            extra,
            format!(
                "the backend holds {extra} msat the ledger does not know; {}",
                why_backend_has_more(&report)
            ),
        )
    } else {
        let missing = low - difference;
        (
            Status::LedgerHasMore,
            -missing,
            format!(
                "THE LEDGER CLAIMS {missing} MSAT THE BACKEND DOES NOT HOLD: money spent \
                 outside the node, lost, or a bug; stop paying out from this asset and \
                 investigate{}",
                listed(
                    "payment(s) out of the wallet are none of our refunds",
                    &report.paid_outside
                )
            ),
        )
    };
    report.status = status;
    report.unexplained_msat = Some(unexplained);
    report.explanation = explanation;
    report
}

/// What the items listed with the report say about money the ledger does not know.
fn why_backend_has_more(report: &AssetReport) -> String {
    let unbooked = total(&report.unbooked_settlements);
    let mut why = if unbooked > 0 {
        format!(
            "{} settled invoice(s) worth {unbooked} msat are not booked in the ledger \
             (the node books them when it sees the settlement: is it running?)",
            report.unbooked_settlements.len()
        )
    } else {
        "no settlement of ours explains it: funds from outside the node?".to_owned()
    };
    why.push_str(&listed(
        "payment(s) into the wallet are no invoice of ours",
        &report.received_outside,
    ));
    why.push_str(&listed(
        "payment(s) out of the wallet are none of our refunds",
        &report.paid_outside,
    ));
    why
}

/// `"; N <what> (M msat)"`, or nothing for no items.
fn listed(what: &str, items: &[Item]) -> String {
    if items.is_empty() {
        return String::new();
    }
    format!("; {} {what} ({} msat)", items.len(), total(items))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, msat: u64) -> Item {
        Item::new(id, msat)
    }

    fn lightning(ledger: i128, backend: u64) -> AssetInput {
        AssetInput::new(
            Asset::Lightning,
            ledger,
            BackendView::Reported(Msat::from_msat(backend)),
        )
    }

    #[test]
    fn equal_figures_match() {
        let r = compare(lightning(10_000, 10_000));
        assert_eq!(r.status, Status::Match);
        assert_eq!(r.account, "asset:lightning");
        assert_eq!((r.difference_msat, r.unexplained_msat), (Some(0), Some(0)));
    }

    #[test]
    fn backend_ahead_without_explanation_is_backend_has_more() {
        let r = compare(lightning(10_000, 17_000));
        assert_eq!(r.status, Status::BackendHasMore);
        assert_eq!(
            (r.difference_msat, r.unexplained_msat),
            (Some(7_000), Some(7_000))
        );
        assert!(r.explanation.contains("from outside"), "{}", r.explanation);
        assert!(!r.status.is_ok());
    }

    #[test]
    fn unbooked_settlements_are_named_but_still_a_mismatch() {
        let mut input = lightning(5_000, 10_000);
        input.unbooked_settlements.push(item("ab", 5_000));
        let r = compare(input);
        assert_eq!(r.status, Status::BackendHasMore);
        assert_eq!(r.unexplained_msat, Some(5_000));
        assert!(r
            .explanation
            .contains("1 settled invoice(s) worth 5000 msat"));
        assert_eq!(r.unbooked_settlements, [item("ab", 5_000)]);
    }

    #[test]
    fn backend_short_is_ledger_has_more_and_loud() {
        let r = compare(lightning(10_000, 4_000));
        assert_eq!(r.status, Status::LedgerHasMore);
        assert_eq!(
            (r.difference_msat, r.unexplained_msat),
            (Some(-6_000), Some(-6_000))
        );
        assert!(r.explanation.starts_with("THE LEDGER CLAIMS 6000 MSAT"));
    }

    #[test]
    fn a_refund_in_flight_explains_a_short_backend_up_to_its_amount() {
        let mut input = lightning(10_000, 7_000);
        input.outgoing_in_flight.push(item("refund-1", 3_000));
        assert_eq!(compare(input.clone()).status, Status::InFlight);
        // Not yet left the wallet: also fine.
        input.backend = BackendView::Reported(Msat::from_msat(10_000));
        assert_eq!(compare(input.clone()).status, Status::Match);
        // One msat more missing than the refund can explain.
        input.backend = BackendView::Reported(Msat::from_msat(6_999));
        let r = compare(input);
        assert_eq!(r.status, Status::LedgerHasMore);
        assert_eq!(r.unexplained_msat, Some(-1));
    }

    #[test]
    fn a_swapped_nutzap_explains_a_richer_wallet_up_to_its_amount() {
        let mint = Asset::Mint {
            url: "http://127.0.0.1:3338".into(),
        };
        let mut input = AssetInput::new(
            mint.clone(),
            5_000,
            BackendView::Reported(Msat::from_msat(8_000)),
        );
        input.incoming_in_flight.push(item("nutzap", 3_000));
        let r = compare(input.clone());
        assert_eq!(r.status, Status::InFlight);
        assert_eq!(r.account, "asset:mint:http://127.0.0.1:3338");
        input.backend = BackendView::Reported(Msat::from_msat(8_001));
        let r = compare(input.clone());
        assert_eq!(
            (r.status, r.unexplained_msat),
            (Status::BackendHasMore, Some(1))
        );
        // The credit is not booked yet, so the wallet cannot be short of the ledger.
        input.backend = BackendView::Reported(Msat::from_msat(4_000));
        assert_eq!(compare(input).status, Status::LedgerHasMore);
    }

    #[test]
    fn fake_and_failing_backends_never_pretend() {
        let input = AssetInput::new(
            Asset::Lightning,
            5_000,
            BackendView::NotCheckable("fake backend".into()),
        );
        let r = compare(input);
        assert_eq!(r.status, Status::NotCheckable);
        assert_eq!((r.backend_msat, r.difference_msat), (None, None));
        assert!(r.status.is_ok());
        let r = compare(AssetInput::new(
            Asset::Lightning,
            5_000,
            BackendView::Unavailable("timeout".into()),
        ));
        assert_eq!(r.status, Status::Unavailable);
        assert!(!r.status.is_ok());
    }

    #[test]
    fn one_bad_asset_makes_the_report_fail() {
        let mint = Asset::Mint {
            url: "http://127.0.0.1:1".into(),
        };
        let good = AssetInput::new(mint, 0, BackendView::Reported(Msat::ZERO));
        assert!(reconcile(vec![good.clone(), lightning(1, 1)]).ok);
        let report = reconcile(vec![good, lightning(1, 2)]);
        assert!(!report.ok);
        assert_eq!(report.assets[1].status, Status::BackendHasMore);
    }
}
