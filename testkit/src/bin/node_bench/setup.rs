//! The bench node's directory and, for `--entitled`, the customers' subscriptions booked before
//! it starts.

use std::path::Path;

use nostr_sdk::prelude::*;
use paydvm_ledger::store::Store;
use paydvm_testkit::fixture::{NodeDir, Offer};

/// The bench node's one offer.
pub struct BenchOffer {
    /// 5001 (word count) or 5050 (text generation, its `sleep` mode), on the text executor.
    pub kind: u16,
    pub max_concurrency: usize,
    /// Priced (5001 only) and covered by a tier, instead of free.
    pub entitled: bool,
    /// Run on any node on the database (`execute_on = "any_node"`).
    pub shared: bool,
    /// `results.processing_feedback_after_secs` (0: the feedback goes with the start).
    pub processing_feedback_after_secs: u64,
}

/// The bench node: one offer, `max_concurrency` jobs at once; free, or priced and covered by a
/// tier.
pub fn bench_node(offer: &BenchOffer) -> NodeDir {
    let kind = offer.kind;
    let pricing = match offer.entitled {
        false => format!("[[pricing.kind]]\nkind = {kind}\nmode = \"free\"\n"),
        true => format!(
            "[[pricing.kind]]\nkind = {kind}\nmode = \"fixed\"\namount_msat = 1000\n\n\
             [[subscriptions.tier]]\nid = \"{TIER}\"\nname = \"Bench\"\nprice_msat = 1000\n\
             period_secs = {PERIOD_SECS}\nquota = 4294967295\nkinds = [{kind}]\n"
        ),
    };
    let mut text = Offer::text(kind)
        .timeout_secs(5)
        .max_concurrency(offer.max_concurrency);
    if offer.shared {
        text = text.line("execute_on = \"any_node\"");
    }
    NodeDir::new("bench node")
        .policy(&format!(
            "{pricing}\n[failures]\nmax_attempts = 2\nthen = \"refund\"\n\n[results]\n\
             processing_feedback_after_secs = {}\n",
            offer.processing_feedback_after_secs
        ))
        .offer(text)
}

const TIER: &str = "bench";
const PERIOD_SECS: u64 = 30 * 86_400;

/// A running subscription for `customer`, booked as the node books one (quote, payment,
/// period), before the node starts.
pub fn subscribe(ledger: &Path, customer: &Keys, n: usize) -> anyhow::Result<()> {
    use paydvm_ledger::*;
    let subscription = SubscriptionId::new(format!("bench-sub-{n}"))?;
    let subscriber = Pubkey::new(customer.public_key().to_hex())?;
    let now = paydvm::node::now_ms();
    let price = Msat::from_msat(1_000);
    let key = |what: &str| IdemKey::new(format!("bench-{what}-{n}"));
    let events = [
        LedgerEvent::new(
            key("quote")?,
            UnixMs(now),
            EventBody::SubscriptionQuoted {
                subscription: subscription.clone(),
                subscriber: subscriber.clone(),
                tier: TIER.into(),
                price,
                period_ms: PERIOD_SECS * 1000,
                quota: u32::MAX,
                options: vec![],
                expires_at: UnixMs(now + 60_000),
            },
        ),
        LedgerEvent::new(
            key("pay")?,
            UnixMs(now),
            EventBody::PaymentReceived(Payment {
                rail: Rail::Zap,
                asset: Asset::Lightning,
                reference: PaymentRef::new(format!("bench-payment-{n}"))?,
                linked: vec![],
                amount: price,
                fee: Msat::ZERO,
                evidence: None,
                payer: Some(subscriber.clone()),
                target: PaymentTarget::Subscription {
                    subscription: subscription.clone(),
                },
            }),
        ),
        LedgerEvent::new(
            key("grant")?,
            UnixMs(now),
            EventBody::EntitlementGranted {
                subscription,
                subscriber,
                tier: TIER.into(),
                period_start: UnixMs(now),
                period_end: UnixMs(now + PERIOD_SECS * 1000),
                quota: u32::MAX,
                price,
            },
        ),
    ];
    let mut store = Store::open(ledger, paydvm_ledger::store::Durability::Normal)?;
    for event in &events {
        store.append(event)?;
    }
    store.close()?;
    Ok(())
}
