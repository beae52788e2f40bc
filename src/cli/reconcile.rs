//! `paydvm reconcile --config <paydvm.toml>`: the ledger's asset accounts against the backends'
//! own figures. Read-only everywhere: the ledger is opened read-only, the Lightning backend is
//! only asked for its balance and invoice lookups (NWC) or its payment list (LNbits, with the
//! invoice key), the cdk wallet store and the pending-NutZap store are only read. Nothing found
//! here is booked: the node does that.

/// The LNbits wallet's balance and payment list.
mod lnbits;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::ledger_handle::LedgerHandle;
use anyhow::Context;
use nostr_sdk::prelude::{Event, JsonUtil};
use paydvm_ledger::LedgerStore;
use paydvm_ledger::{
    Account, Asset, InvoiceFor, JobId, LedgerState, Msat, PaymentRef, QuotedInvoice, RefundState,
    SubscriptionId,
};
use paydvm_mints::verify::msat_per_unit;
use paydvm_mints::{normalise_mint_url, PendingRows, PendingState};
use tokio::task::JoinSet;

use super::{ledger_file, output, EXIT_OK, EXIT_RECONCILE_MISMATCH};
use crate::config::{BackendSecrets, Config};
use crate::lightning::lnbits::LnbitsLightning;
use crate::lightning::nwc::NwcLightning;
use crate::lightning::{InvoiceStatus, LightningBackend};
use crate::node::ecash_store::EcashStore;
use crate::node::nutzaps::nutzap_mint;
use crate::reconcile::{reconcile, AssetInput, BackendView, Item, Report, Status};

/// Invoice lookups in flight at once.
const LOOKUPS_AT_ONCE: usize = 8;

pub fn run(config_path: &Path, json: bool) -> anyhow::Result<u8> {
    let config = Config::load(config_path)?;
    let store = ledger_file::open_existing(&config.node.ledger)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let inputs = runtime.block_on(gather(&config, &store))?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    let report = reconcile(inputs);
    if json {
        output::print_json(&report)?;
    } else {
        output::print(&render(&report))?;
    }
    Ok(if report.ok {
        EXIT_OK
    } else {
        EXIT_RECONCILE_MISMATCH
    })
}

async fn gather(config: &Config, store: &LedgerHandle) -> anyhow::Result<Vec<AssetInput>> {
    let mut inputs = Vec::new();
    if let Some(lightning) = lightning_input(config, store).await? {
        inputs.push(lightning);
    }
    inputs.extend(mint_inputs(config, store.state()).await?);
    Ok(inputs)
}

fn ledger_balance(state: &LedgerState, asset: &Asset) -> i128 {
    state.balance(&Account::Asset(asset.clone())).signed(true)
}

/// Refunds paid from `asset` whose outcome the ledger has not booked yet.
fn refunds_in_flight(state: &LedgerState, asset: &Asset) -> Vec<Item> {
    state
        .refunds()
        .filter(|r| matches!(r.state, RefundState::InFlight | RefundState::Unknown))
        .filter(|r| r.route.as_ref().is_some_and(|route| &route.asset == asset))
        .map(|r| Item {
            job: r.job.as_ref().map(ToString::to_string),
            ..Item::new(r.refund.to_string(), r.amount.as_msat())
        })
        .collect()
}

async fn lightning_input(
    config: &Config,
    store: &LedgerHandle,
) -> anyhow::Result<Option<AssetInput>> {
    let asset = Asset::Lightning;
    let state = store.state();
    let ledger = ledger_balance(state, &asset);
    let booked_any = state
        .balances()
        .any(|(a, _)| a == &Account::Asset(Asset::Lightning));
    let mut input = AssetInput::new(asset.clone(), ledger, BackendView::Reported(Msat::ZERO));
    input.outgoing_in_flight = refunds_in_flight(state, &asset);
    let Some(lightning) = &config.lightning else {
        if !booked_any {
            return Ok(None);
        }
        input.backend = BackendView::Unavailable("the config has no [lightning] backend".into());
        return Ok(Some(input));
    };
    let backend = match &lightning.backend {
        BackendSecrets::Fake => {
            input.backend = BackendView::NotCheckable(
                "the \"fake\" backend lives inside the node process; there is no wallet to ask"
                    .into(),
            );
            return Ok(Some(input));
        }
        BackendSecrets::Lnbits {
            url, invoice_key, ..
        } => {
            // The invoice key reads the balance and the list; the admin key is never needed.
            let lnbits = LnbitsLightning::new(
                url,
                invoice_key,
                None,
                Duration::from_secs(lightning.invoice_timeout_secs),
            )
            .context("lightning.lnbits_url")?;
            lnbits::gather(&lnbits, store, &mut input).await?;
            return Ok(Some(input));
        }
        BackendSecrets::Nwc { uri } => Arc::new(
            NwcLightning::new(uri, Duration::from_secs(lightning.invoice_timeout_secs))
                .context("lightning.nwc_uri")?,
        ),
    };
    input.backend = match backend.balance().await {
        Ok(balance) => BackendView::Reported(balance),
        Err(e) => BackendView::Unavailable(e.to_string()),
    };
    if matches!(input.backend, BackendView::Reported(_)) {
        let (settled, not_looked_up) = unbooked_settlements(&backend, store).await?;
        input.unbooked_settlements = settled;
        if not_looked_up > 0 {
            input.notes.push(format!(
                "{not_looked_up} unpaid invoice(s) could not be looked up; run again"
            ));
        }
    }
    if let Ok(backend) = Arc::try_unwrap(backend) {
        backend.shutdown().await;
    }
    Ok(Some(input))
}

/// Every invoice a quote offered (a job's, a subscription period's) that has no payment in the ledger, looked up at the backend:
/// the settled ones, and how many lookups gave no answer.
async fn unbooked_settlements(
    backend: &Arc<NwcLightning>,
    store: &LedgerHandle,
) -> anyhow::Result<(Vec<Item>, usize)> {
    let unpaid: Vec<QuotedInvoice> = store
        .quoted_invoices()?
        .into_iter()
        .filter(|quoted| {
            PaymentRef::new(quoted.payment_hash.clone())
                .ok()
                .is_none_or(|r| store.state().payment_ref_seq(&r).is_none())
        })
        .collect();
    let mut settled = Vec::new();
    let mut not_looked_up = 0;
    for chunk in unpaid.chunks(LOOKUPS_AT_ONCE) {
        let mut lookups = JoinSet::new();
        for quoted in chunk.iter().cloned() {
            let backend = Arc::clone(backend);
            lookups.spawn(async move {
                let status = backend.lookup_invoice(&quoted.payment_hash).await;
                (quoted, status)
            });
        }
        while let Some(done) = lookups.join_next().await {
            let (quoted, status) = done.context("an invoice lookup panicked")?;
            match status {
                InvoiceStatus::Settled { amount, .. } => settled.push(Item::quoted(
                    quoted.payment_hash,
                    amount.as_msat(),
                    &quoted.quoted_for,
                )),
                InvoiceStatus::Unknown(_) => not_looked_up += 1,
                InvoiceStatus::Open | InvoiceStatus::Expired => {}
            }
        }
    }
    settled.sort_by(|a, b| a.id.cmp(&b.id));
    Ok((settled, not_looked_up))
}

/// One input per mint the ledger, the wallet store or the config knows.
async fn mint_inputs(config: &Config, state: &LedgerState) -> anyhow::Result<Vec<AssetInput>> {
    let mut mints: BTreeMap<String, AssetInput> = BTreeMap::new();
    let mut entry = |url: &str| {
        let key = normalise_mint_url(url);
        mints.entry(key).or_insert_with(|| {
            AssetInput::new(
                Asset::Mint {
                    url: url.to_owned(),
                },
                0,
                BackendView::Reported(Msat::ZERO),
            )
        });
    };
    let ledger_mints: Vec<Asset> = state
        .balances()
        .filter_map(|(a, _)| match a {
            Account::Asset(asset @ Asset::Mint { .. }) => Some(asset.clone()),
            _ => None,
        })
        .collect();
    for asset in &ledger_mints {
        if let Asset::Mint { url } = asset {
            entry(url);
        }
    }
    for mint in config.policy.trusted_mints() {
        entry(&mint.url);
    }
    let ecash = EcashStore::of(&config.node)?;
    let holdings = ecash
        .holdings()
        .await
        .with_context(|| format!("reading the cashu wallet store {}", ecash.shown()))?;
    for h in &holdings {
        entry(&h.mint);
    }
    for input in mints.values_mut() {
        input.ledger = ledger_balance(state, &input.asset);
        input.outgoing_in_flight = refunds_in_flight(state, &input.asset);
    }
    let mut backend: BTreeMap<String, u64> = BTreeMap::new();
    for h in holdings {
        let input = mints.get_mut(&h.mint).expect("every holding has an entry");
        match msat_per_unit(&h.unit).and_then(|per| h.amount.checked_mul(per)) {
            Some(msat) => {
                let sum = backend.entry(h.mint.clone()).or_default();
                *sum = sum.checked_add(msat).context("wallet total overflows")?;
            }
            None => input.notes.push(format!(
                "{} {} in the wallet not counted: no msat value for the unit",
                h.amount, h.unit
            )),
        }
    }
    for (key, input) in mints.iter_mut() {
        input.backend =
            BackendView::Reported(Msat::from_msat(backend.get(key).copied().unwrap_or(0)));
    }
    add_pending_swaps(&ecash, state, &mut mints)?;
    Ok(mints.into_values().collect())
}

/// NutZaps swapped into the wallet but not credited yet; verified-only ones are in neither.
fn add_pending_swaps(
    ecash: &EcashStore,
    state: &LedgerState,
    mints: &mut BTreeMap<String, AssetInput>,
) -> anyhow::Result<()> {
    let Some(pending) = ecash
        .pending_if_any()
        .with_context(|| format!("reading pending NutZaps beside {}", ecash.shown()))?
    else {
        return Ok(());
    };
    for row in pending.all()? {
        let Some(input) = mints.get_mut(&normalise_mint_url(&row.nutzap.mint)) else {
            continue;
        };
        match row.state {
            PendingState::Swapped { received, .. } => {
                let msat = msat_per_unit(&row.nutzap.unit)
                    .and_then(|per| received.checked_mul(per))
                    .unwrap_or(0);
                let id = row.nutzap.event_id.clone();
                let item = match nutzap_target(state, row.nutzap.target.as_deref()) {
                    Some(quoted_for) => Item::quoted(id, msat, &quoted_for),
                    None => Item {
                        job: row.nutzap.target.clone(),
                        ..Item::new(id, msat)
                    },
                };
                input.incoming_in_flight.push(item);
            }
            PendingState::Verified => input.notes.push(format!(
                "NutZap {} is verified but not swapped yet (in neither figure)",
                row.nutzap.event_id
            )),
        }
    }
    add_deferred_nutzaps(pending.as_ref(), mints)
}

/// NutZaps put off because their mint could not be asked: locked to our key, redeemed once the
/// mint answers, in neither figure until then. (A request's tokens stay the customer's until
/// swapped, so they are not listed.)
fn add_deferred_nutzaps(
    pending: &dyn PendingRows,
    mints: &mut BTreeMap<String, AssetInput>,
) -> anyhow::Result<()> {
    for row in pending.deferred()? {
        let mint = Event::from_json(&row.event)
            .ok()
            .and_then(|event| nutzap_mint(&event));
        let Some(input) = mint.and_then(|m| mints.get_mut(&normalise_mint_url(&m))) else {
            continue;
        };
        input.notes.push(format!(
            "NutZap {} waits for this mint (put off {} times; not checked or swapped yet, in \
             neither figure)",
            row.event_id, row.tries
        ));
    }
    Ok(())
}

/// What a NutZap's target names: a subscription the ledger knows, or else a job.
fn nutzap_target(state: &LedgerState, target: Option<&str>) -> Option<InvoiceFor> {
    let target = target?;
    if let Ok(s) = SubscriptionId::new(target) {
        if state.subscription(&s).is_some() {
            return Some(InvoiceFor::Subscription(s));
        }
    }
    JobId::new(target).ok().map(InvoiceFor::Job)
}

fn render(report: &Report) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_report(&mut out, report);
    out
}

fn write_report(out: &mut String, report: &Report) -> std::fmt::Result {
    if report.assets.is_empty() {
        writeln!(out, "no asset accounts and no backends to reconcile")?;
    }
    for a in &report.assets {
        let loud = if a.status == Status::LedgerHasMore {
            "!!! "
        } else {
            ""
        };
        writeln!(out, "{loud}{}  {}", a.account, a.status.as_str())?;
        writeln!(out, "  ledger     {:>20} msat", a.ledger_msat)?;
        if let (Some(backend), Some(diff)) = (a.backend_msat, a.difference_msat) {
            writeln!(out, "  backend    {backend:>20} msat")?;
            writeln!(out, "  difference {diff:>+20} msat")?;
        }
        writeln!(out, "  {}", a.explanation)?;
        for (label, items) in [
            ("unbooked settlement", &a.unbooked_settlements),
            ("received outside the node", &a.received_outside),
            ("paid outside the node", &a.paid_outside),
            ("incoming, not yet credited", &a.incoming_in_flight),
            ("refund in flight", &a.outgoing_in_flight),
        ] {
            for i in items {
                let owner = match (&i.job, &i.subscription) {
                    (Some(job), _) => format!(" job {job}"),
                    (None, Some(s)) => format!(" subscription {s}"),
                    (None, None) => String::new(),
                };
                writeln!(out, "  - {label}: {} {} msat{owner}", i.id, i.amount_msat)?;
            }
        }
        for note in &a.notes {
            writeln!(out, "  note: {note}")?;
        }
    }
    writeln!(
        out,
        "{}",
        if report.ok {
            "reconcile: OK"
        } else {
            "reconcile: MISMATCH (exit 1)"
        }
    )
}
