//! The bench node's directory and, for `--entitled`, the customers' subscriptions booked before
//! it starts.

use std::path::Path;

use nostr_sdk::prelude::*;
use paydvm_ledger::store::Store;
use paydvm_testkit::fixture::{NodeDir, Offer};

/// The bench node: kind 5001 on the text executor, `max_concurrency` jobs at once; free, or
/// priced and covered by a tier.
pub fn bench_node(max_concurrency: usize, entitled: bool) -> NodeDir {
    let pricing = match entitled {
        false => "[[pricing.kind]]\nkind = 5001\nmode = \"free\"\n".to_owned(),
        true => format!(
            "[[pricing.kind]]\nkind = 5001\nmode = \"fixed\"\namount_msat = 1000\n\n\
             [[subscriptions.tier]]\nid = \"{TIER}\"\nname = \"Bench\"\nprice_msat = 1000\n\
             period_secs = {PERIOD_SECS}\nquota = 4294967295\nkinds = [5001]\n"
        ),
    };
    NodeDir::new("bench node")
        .policy(&format!(
            "{pricing}\n[failures]\nmax_attempts = 2\nthen = \"refund\"\n"
        ))
        .offer(
            Offer::text(5001)
                .timeout_secs(5)
                .max_concurrency(max_concurrency),
        )
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
