//! Discovery: NIP-89 handler announcements (kind 31990, one per offered kind), the node's kind 0
//! profile, and the kind 11998 heartbeat.
//!
//! Announcements go through the effect outbox like every other publication (ledgered, re-sent
//! after a crash). They are handed to the core once per run, when a configured relay is first
//! connected (so a node started offline does not pile up pending announcements), and published
//! only when they differ (kind, `d` tag, content, tags) from the last one stored for the same
//! address, so restarting does not spam relays. An offer removed from the config (or a tier no
//! longer sold) has its stored announcement withdrawn with a NIP-09 deletion, once
//! ([`published`]).
//!
//! The heartbeat is published directly, not ledgered: it moves no money and is worthless once
//! stale, so a lost heartbeat is simply replaced by the next one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nostr_sdk::prelude::{
    Client, EventBuilder, Keys, Kind, PublicKey, RelayStatus, RelayUrl, Tag, TagKind, Timestamp,
};
use paydvm_policies::{PriceMode, Pricing};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

mod published;

pub use self::published::{same_as_last, stored_announcements, withdrawals};
use super::core::Command;
use crate::config::{Builtin, Executor, Node, Offer};
use crate::executor::builtin::TEXT_GENERATION;

/// NIP-89 handler information.
pub const HANDLER_INFO_KIND: u16 = 31990;
/// DVM heartbeat (nostrdvm; a replaceable kind).
pub const HEARTBEAT_KIND: u16 = 11998;
/// How often the heartbeat is published while intake is healthy.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(60);
/// How soon the heartbeat looks again after a tick with no relay connected.
const RECHECK_WHILE_DOWN: Duration = Duration::from_secs(1);
/// How long the heartbeat waits for its first connection before its first tick.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest NIP-40 lifetime given to a heartbeat (expiration has second precision).
const MIN_HEARTBEAT_TTL: Duration = Duration::from_secs(10);

/// The stable `d` tag of the 31990 announcing `kind`.
pub fn d_tag(kind: u16) -> String {
    format!("paydvm-{kind}")
}

/// Where and how to send this node NutZaps (NIP-61 kind 10019), when the Cashu rail is on.
#[derive(Debug, Clone)]
pub struct NutZapInfo {
    /// Relays senders must publish NutZaps to (ours).
    pub relays: Vec<String>,
    pub mints: Vec<paydvm_mints::TrustedMint>,
    /// Our P2PK receiving key, x-only hex.
    pub p2pk_xonly: String,
}

/// What the announcements say about the subscription tiers sold: the tiers and our key (their
/// addresses are `37001:<key>:<id>`).
pub struct TierAnnouncement<'a> {
    pub tiers: &'a [paydvm_policies::Tier],
    pub us: PublicKey,
}

/// The unsigned announcements for this node: one 31990 per offer (naming the tiers that cover
/// its kind), then the kind 0 profile, then the kind 10019 NutZap info when NutZaps are
/// accepted, then one 37001 per tier.
pub fn announcements(
    node: &Node,
    offers: &[Offer],
    pricing: &Pricing,
    nutzaps: Option<&NutZapInfo>,
    tiers: &TierAnnouncement<'_>,
) -> Vec<EventBuilder> {
    let nutzaps = nutzaps.filter(|n| !n.mints.is_empty());
    let mut out: Vec<EventBuilder> = offers
        .iter()
        .map(|offer| {
            let covering = tier_addresses(tiers, offer.kind);
            handler_info(node, offer, pricing, nutzaps.is_some(), &covering)
        })
        .collect();
    out.push(profile(node));
    if let Some(info) = nutzaps {
        out.push(nutzap_info(info));
    }
    out.extend(
        tiers
            .tiers
            .iter()
            .map(|tier| crate::protocol::nip88::tier_event(tier, &tiers.us)),
    );
    out
}

/// The addresses (`37001:<key>:<id>`) of the tiers covering `kind`.
fn tier_addresses(tiers: &TierAnnouncement<'_>, kind: u16) -> Vec<String> {
    let us = tiers.us.to_hex();
    tiers
        .tiers
        .iter()
        .filter(|t| t.covers(kind))
        .map(|t| format!("{}:{us}:{}", crate::protocol::nip88::TIER_KIND, t.id))
        .collect()
}

fn nutzap_info(info: &NutZapInfo) -> EventBuilder {
    let tags = paydvm_mints::events::nutzap_info_tags(&info.relays, &info.mints, &info.p2pk_xonly)
        .into_iter()
        .filter_map(|t| Tag::parse(t).ok());
    EventBuilder::new(Kind::from(paydvm_mints::NUTZAP_INFO_KIND), "").tags(tags)
}

fn handler_info(
    node: &Node,
    offer: &Offer,
    pricing: &Pricing,
    nutzaps: bool,
    tiers: &[String],
) -> EventBuilder {
    let mut content = Map::new();
    let name = offer.name.clone().unwrap_or_else(|| node.name.clone());
    content.insert("name".into(), json!(name));
    if let Some(about) = offer.about.as_ref().or(node.about.as_ref()) {
        content.insert("about".into(), json!(about));
    }
    if let Some(picture) = &node.picture {
        content.insert("picture".into(), json!(picture.as_str()));
    }
    if let Some(amount) = pricing.mode(offer.kind).map(amount) {
        content.insert("amount".into(), json!(amount));
    }
    // Encrypted (NIP-90 §5) requests are accepted. Both spellings: newer clients read
    // `supportsEncryption`, the noogle client still reads `encryptionSupported`.
    content.insert("supportsEncryption".into(), json!(true));
    content.insert("encryptionSupported".into(), json!(true));
    // NutZaps (NIP-61) to the mints in our 10019, when any is trusted (new and old spelling).
    content.insert("acceptsNutZaps".into(), json!(nutzaps));
    content.insert("cashuAccepted".into(), json!(nutzaps));
    // Zaps are accepted through this lightning address (NIP-57; `docs/zaps.md`).
    if let Some(lud16) = &node.lud16 {
        content.insert("lud16".into(), json!(lud16.to_string()));
    }
    let params = nip90_params(offer);
    if !params.is_empty() {
        content.insert("nip90Params".into(), Value::Object(params));
    }
    // Subscription tiers covering this kind (NIP-88 proposal): nostrdvm's flag, and each tier's
    // address in the content and as an `a` tag.
    content.insert("subscription".into(), json!(!tiers.is_empty()));
    if !tiers.is_empty() {
        content.insert("subscriptionTiers".into(), json!(tiers));
    }
    let mut tags = vec![
        Tag::identifier(d_tag(offer.kind)),
        Tag::custom(TagKind::custom("k"), [offer.kind.to_string()]),
    ];
    tags.extend(tiers.iter().map(|a| Tag::custom(TagKind::a(), [a.clone()])));
    EventBuilder::new(
        Kind::Custom(HANDLER_INFO_KIND),
        Value::Object(content).to_string(),
    )
    .tags(tags)
}

/// The `amount` field: `"free"`, `"flexible"` (per-unit prices), or the fixed price in sats.
fn amount(mode: &PriceMode) -> String {
    match mode {
        PriceMode::Free => "free".into(),
        PriceMode::PerUnit(_) => "flexible".into(),
        PriceMode::Fixed(msat) => {
            let msat = msat.as_msat();
            let (sats, rest) = (msat / 1000, msat % 1000);
            if rest == 0 {
                sats.to_string()
            } else {
                format!("{sats}.{rest:03}").trim_end_matches('0').to_owned()
            }
        }
    }
}

/// The parameters an offer's executor understands (`["param", key, value]` in requests).
fn nip90_params(offer: &Offer) -> Map<String, Value> {
    let mut params = Map::new();
    if offer.executor == Executor::Builtin(Builtin::Text) && offer.kind == TEXT_GENERATION {
        params.insert(
            "mode".into(),
            json!({
                "required": false,
                "values": ["reverse", "upper"],
                "description": "reverse (default) or upper-case the input text",
            }),
        );
    }
    params
}

fn profile(node: &Node) -> EventBuilder {
    let mut content = Map::new();
    content.insert("name".into(), json!(node.name));
    if let Some(about) = &node.about {
        content.insert("about".into(), json!(about));
    }
    if let Some(picture) = &node.picture {
        content.insert("picture".into(), json!(picture.as_str()));
    }
    if let Some(lud16) = &node.lud16 {
        content.insert("lud16".into(), json!(lud16.to_string()));
    }
    EventBuilder::new(Kind::Metadata, Value::Object(content).to_string())
}

/// What the heartbeat task did, for operators and tests.
#[derive(Debug, Default)]
pub struct HeartbeatStats {
    attempted: AtomicU64,
    published: AtomicU64,
    skipped: AtomicU64,
}

impl HeartbeatStats {
    /// Heartbeats signed and sent (whether or not a relay accepted them).
    pub fn attempted(&self) -> u64 {
        self.attempted.load(Ordering::SeqCst)
    }

    /// Heartbeats at least one relay accepted.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::SeqCst)
    }

    /// Ticks skipped because no configured relay was connected.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::SeqCst)
    }
}

/// What to do the first time a relay is connected: hand the announcements to the core.
pub struct FirstConnect {
    pub commands: mpsc::Sender<Command>,
    pub announcements: Vec<EventBuilder>,
}

/// The running heartbeat task.
pub struct Heartbeat {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    stats: Arc<HeartbeatStats>,
}

impl Heartbeat {
    /// Publishes a kind 11998 heartbeat every `every` while intake (`intake`, its client) has at
    /// least one relay connected: the heartbeat says we are taking requests, so intake's own
    /// connections decide. It publishes with a client of its own. Not ledgered: a heartbeat
    /// moves no money.
    /// On the first healthy tick it also sends `first_connect`'s announcements to the core.
    /// While no relay is connected it looks again every [`RECHECK_WHILE_DOWN`] (at most
    /// `every`), so a relay that comes up gets the heartbeat and the announcements within
    /// about a second, not a period later.
    pub fn start(
        keys: Keys,
        relays: Vec<RelayUrl>,
        kinds: Vec<u16>,
        every: Duration,
        first_connect: FirstConnect,
        intake: Client,
    ) -> Self {
        let stats = Arc::new(HeartbeatStats::default());
        let (stop, mut stopped) = oneshot::channel();
        let counters = Arc::clone(&stats);
        let task = tokio::spawn(async move {
            let client = super::transport::client(keys.clone());
            for relay in &relays {
                if let Err(e) = client.add_write_relay(relay.clone()).await {
                    warn!(%relay, "heartbeat: cannot add relay: {e}");
                }
            }
            // Connects in the background and keeps reconnecting; the first tick (at once) waits
            // briefly for it rather than skip a whole period.
            client.connect().await;
            tokio::select! {
                _ = &mut stopped => {
                    client.shutdown().await;
                    return;
                }
                _ = client.wait_for_connection(CONNECT_TIMEOUT) => {}
            }
            let mut first_connect = Some(first_connect);
            let mut pause = Duration::ZERO;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(pause) => {
                        if !healthy(&intake).await || !healthy(&client).await {
                            counters.skipped.fetch_add(1, Ordering::SeqCst);
                            debug!("heartbeat skipped: no relay connected");
                            // Looked at again soon, not a whole period later: the first connect
                            // also hands the announcements over.
                            pause = every.min(RECHECK_WHILE_DOWN);
                            continue;
                        }
                        if let Some(first) = first_connect.take() {
                            let _ = first
                                .commands
                                .send(Command::AnnounceAll(first.announcements))
                                .await;
                        }
                        beat(&client, &keys, &kinds, every, &counters).await;
                        pause = every;
                    }
                }
            }
            client.shutdown().await;
        });
        Heartbeat { stop, task, stats }
    }

    pub fn stats(&self) -> Arc<HeartbeatStats> {
        Arc::clone(&self.stats)
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// Healthy: at least one configured relay is connected.
async fn healthy(client: &Client) -> bool {
    client
        .relays()
        .await
        .values()
        .any(|r| r.status() == RelayStatus::Connected)
}

async fn beat(
    client: &Client,
    keys: &Keys,
    kinds: &[u16],
    every: Duration,
    stats: &HeartbeatStats,
) {
    let ttl = (every * 2).max(MIN_HEARTBEAT_TTL);
    let expiration = Timestamp::now() + ttl.as_secs().max(1);
    let mut tags = vec![Tag::expiration(expiration)];
    tags.extend(
        kinds
            .iter()
            .map(|k| Tag::custom(TagKind::custom("k"), [k.to_string()])),
    );
    let event = match EventBuilder::new(Kind::Custom(HEARTBEAT_KIND), "online")
        .tags(tags)
        .sign_with_keys(keys)
    {
        Ok(e) => e,
        Err(e) => {
            warn!("heartbeat: cannot sign: {e}");
            return;
        }
    };
    stats.attempted.fetch_add(1, Ordering::SeqCst);
    match client.send_event(&event).await {
        Ok(out) if !out.success.is_empty() => {
            stats.published.fetch_add(1, Ordering::SeqCst);
        }
        Ok(out) => debug!(failed = ?out.failed, "heartbeat refused"),
        Err(e) => debug!("heartbeat not sent: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use paydvm_ledger::Msat;

    use super::*;

    #[test]
    fn fixed_prices_are_announced_in_sats() {
        let fixed = |msat| amount(&PriceMode::Fixed(Msat::from_msat(msat)));
        assert_eq!(fixed(5000), "5");
        assert_eq!(fixed(1500), "1.5");
        assert_eq!(fixed(1), "0.001");
        assert_eq!(amount(&PriceMode::Free), "free");
    }
}
