//! The demo's subscriber (NIP-88 proposal): finds the node's tier (kind 37001), subscribes
//! (7001), pays the quoted invoice, gets the node's own receipt (7003), runs jobs on the quota
//! until it is used up and the next job is priced with the reason, renews by zapping the
//! subscribe request (the money waits for the next period), then cancels (7002): the tier keeps
//! the paid period, and what was paid for the next one is refunded to the subscriber's lightning
//! address.

use std::time::Duration;

use anyhow::{bail, Context};
use nostr_sdk::prelude::{
    Client, Event, EventBuilder, Filter, Keys, Kind, Metadata, PublicKey, RelayPoolNotification,
    RelayUrl, Tag, Timestamp,
};
use paydvm::lightning::fake::FakeLightning;
use paydvm::lightning::Invoice;
use paydvm::node::NodeHandle;
use paydvm_ledger::store::Store;
use paydvm_ledger::{JobState, Msat, RefundState};
use paydvm_testkit::zapper::customer::{request_zap_invoice, ZapOrder};
use paydvm_testkit::zapper::{Zapper, ZapperOptions};

use super::{invoice_of, say, tag, wait_event, wait_reply, wait_state, WAIT};

/// The tier the demo node sells (appended to its policy).
pub const TIER: &str = "\n[[subscriptions.tier]]\nid = \"demo\"\nname = \"Demo monthly\"\n\
                        price_msat = 20000\nperiod_secs = 2592000\nquota = 2\nkinds = [5050]\n";
const PRICE_MSAT: u64 = 20_000;

/// What the subscriber needs of the demo's world.
pub struct World<'a> {
    pub node: &'a NodeHandle,
    pub relay: &'a RelayUrl,
    pub lightning: &'a FakeLightning,
    /// The node's own LNURL-pay zapper (its lud16).
    pub zapper: &'a Zapper,
}

/// Runs the subscriber; returns a label and the subscription id for the audit section.
pub async fn run(world: &World<'_>) -> anyhow::Result<(&'static str, String)> {
    say("\n> subscriber: tier, subscribe, pay, receipt, jobs on the quota, renew, cancel")?;
    let keys = Keys::generate();
    let client = paydvm::node::transport::client(keys.clone());
    client.add_relay(world.relay.clone()).await?;
    client.try_connect(Duration::from_secs(5)).await;
    let tier = find_tier(&client, &world.node.pubkey()).await?;
    let mut replies = client.notifications();
    let since = Timestamp::now() - 60;
    let to_us = Filter::new()
        .kinds([Kind::Custom(6050), Kind::Custom(7000)])
        .pubkey(keys.public_key())
        .since(since);
    // Receipts name the subscriber in `P`, not `p`.
    let receipts = Filter::new()
        .kind(Kind::Custom(7003))
        .author(world.node.pubkey())
        .since(since);
    client.subscribe(to_us, None).await?;
    client.subscribe(receipts, None).await?;
    // The subscriber's own wallet (refunds go to its lightning address, named in the profile).
    let wallet = Zapper::start(ZapperOptions::new("subscriber", keys.public_key())).await?;
    let profile = Metadata::new().lud16(wallet.lud16().to_string());
    client
        .send_event_builder(EventBuilder::metadata(&profile))
        .await?;
    say(&format!("  subscriber's wallet: {}", wallet.lud16()))?;
    let outcome = subscribe_and_use(world, &client, (&keys, &tier), &mut replies).await;
    client.shutdown().await;
    wallet.shutdown().await;
    Ok(("subscription (NIP-88 proposal)", outcome?))
}

async fn subscribe_and_use(
    world: &World<'_>,
    client: &Client,
    (keys, tier): (&Keys, &Event),
    replies: &mut tokio::sync::broadcast::Receiver<RelayPoolNotification>,
) -> anyhow::Result<String> {
    let us = world.node.pubkey();
    say(&format!(
        "  subscriber found tier {:?} (kind 37001 {}): {}",
        tag(tier, "title").unwrap_or_default(),
        tier.id.to_hex(),
        tier.content
    ))?;
    let request = subscribe_request(keys, &us, tier)?;
    client.send_event(&request).await?;
    say(&format!("  subscriber sent 7001 {}", request.id.to_hex()))?;
    let quote = wait_reply(replies, &request, "payment-required").await?;
    let bolt11 = invoice_of(&quote).context("the subscription quote carried no invoice")?;
    let invoice = Invoice::parse(&bolt11)?;
    world.lightning.settle(&invoice.payment_hash())?;
    say("  subscriber pays the period's invoice")?;
    let is_receipt = |e: &Event| e.kind == Kind::Custom(7003);
    let receipt = wait_event(replies, &request, "receipt (7003)", is_receipt).await?;
    say(&format!(
        "  the receipt is signed by the node ({}), tier {:?}",
        receipt.pubkey == us,
        tag(&receipt, "tier").unwrap_or_default()
    ))?;
    jobs_on_the_quota(world, client, keys, replies).await?;
    renew_by_zap(world, keys, &request, replies).await?;
    cancel(world, client, keys, &request, replies).await?;
    Ok(request.id.to_hex())
}

/// Two jobs run on the quota; the third is priced, and the feedback says why.
async fn jobs_on_the_quota(
    world: &World<'_>,
    client: &Client,
    keys: &Keys,
    replies: &mut tokio::sync::broadcast::Receiver<RelayPoolNotification>,
) -> anyhow::Result<()> {
    for (text, want) in [
        ("first on the quota", JobState::Succeeded),
        ("second on the quota", JobState::Succeeded),
        ("quota used up", JobState::Quoted),
    ] {
        let job = EventBuilder::new(Kind::Custom(5050), "")
            .tags([
                Tag::parse(["i", text, "text"])?,
                Tag::parse(["param", "mode", "upper"])?,
            ])
            .sign_with_keys(keys)?;
        client.send_event(&job).await?;
        wait_state(world.node, &job.id.to_hex(), want).await?;
        let reply = match want {
            JobState::Quoted => wait_reply(replies, &job, "payment-required").await?,
            _ => wait_event(replies, &job, "result", |e| e.kind == Kind::Custom(6050)).await?,
        };
        if want == JobState::Quoted {
            say(&format!(
                "  the third job is priced: {:?}",
                tag(&reply, "status").unwrap_or_default()
            ))?;
        }
    }
    Ok(())
}

/// The subscriber zaps the 7001 for the next period: held until this one ends.
async fn renew_by_zap(
    world: &World<'_>,
    keys: &Keys,
    request: &Event,
    replies: &mut tokio::sync::broadcast::Receiver<RelayPoolNotification>,
) -> anyhow::Result<()> {
    let paid = request_zap_invoice(
        keys,
        &ZapOrder {
            lud16: &world.zapper.lud16(),
            http_loopback: true,
            recipient: world.node.pubkey(),
            target: request.id,
            amount: Msat::from_msat(PRICE_MSAT),
            relays: std::slice::from_ref(world.relay),
        },
    )
    .await?;
    world.zapper.settle(&paid.bolt11).await?;
    say("  subscriber renews: zaps the 7001 for the next period")?;
    wait_reply(replies, request, "success").await?;
    Ok(())
}

/// A 7002: the period runs on (the tier keeps it), the next period's money is refunded.
async fn cancel(
    world: &World<'_>,
    client: &Client,
    keys: &Keys,
    request: &Event,
    replies: &mut tokio::sync::broadcast::Receiver<RelayPoolNotification>,
) -> anyhow::Result<()> {
    let stop = EventBuilder::new(Kind::Custom(7002), "")
        .tags([Tag::public_key(world.node.pubkey()), Tag::event(request.id)])
        .sign_with_keys(keys)?;
    client.send_event(&stop).await?;
    say("  subscriber cancels (7002)")?;
    wait_reply(replies, request, "success").await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let _ = world.node.job("0").await;
        let store = Store::open_read_only(world.node.ledger_path())?;
        let settled = store.state().refunds().find(|r| {
            r.refund
                .as_str()
                .starts_with(&format!("sub:{}:", request.id))
                && r.state == RefundState::Settled
        });
        if let Some(r) = settled {
            say(&format!(
                "  node refunded the prepaid next period ({}) to the subscriber's wallet",
                r.amount
            ))?;
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the subscription refund was not paid in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn find_tier(client: &Client, us: &PublicKey) -> anyhow::Result<Event> {
    let filter = Filter::new()
        .kind(Kind::Custom(37001))
        .author(*us)
        .identifier("demo");
    for _ in 0..50 {
        let found = client.fetch_events(filter.clone(), WAIT).await?;
        if let Some(tier) = found.into_iter().next() {
            return Ok(tier);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the node never published its tier")
}

/// A 7001 as NDK writes it: the tier by id and by address, with its amount.
fn subscribe_request(keys: &Keys, us: &PublicKey, tier: &Event) -> anyhow::Result<Event> {
    let node = us.to_hex();
    let tags = [
        Tag::parse(["p", node.as_str()])?,
        Tag::parse(["e", tier.id.to_hex().as_str()])?,
        Tag::parse(["a", format!("37001:{node}:demo").as_str()])?,
        Tag::parse(["amount", "20000", "msats", "monthly"])?,
    ];
    Ok(EventBuilder::new(Kind::Custom(7001), "")
        .tags(tags)
        .sign_with_keys(keys)?)
}
