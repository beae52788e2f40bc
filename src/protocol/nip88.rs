//! Subscriptions as the NIP-88 proposal (nips PR #866) writes them: the tiers we sell (kind
//! 37001), subscribe requests (kind 7001) read into what the decision core understands, and the
//! core's subscription notices rendered as events: payment requests and other news as kind 7000
//! feedback e-tagging the 7001, period receipts as kind 7003 signed by us (the tier names us as
//! its payment verifier). See `shared/protocol/nip88-subscriptions.md`.
//!
//! Clients differ in how a 7001 points at its tier: `["a","37001:<pubkey>:<d>"]` (an older text
//! of the proposal) or `["e",<tier event id>]` (its current head; NDK writes both); extra markers
//! after the value are ignored. A receipt from anyone else never grants anything here: the core
//! grants periods only from payments it booked.

use nostr_sdk::prelude::{Event, EventBuilder, Kind, PublicKey, Tag, TagKind, Timestamp};
use paydvm_ledger::{Pubkey, SubscriptionId};
use paydvm_policies::{OnCancel, PaidAhead, Tier};

use crate::node::decide::{Notice, NoticeKind, SubscribeRequest, UnsubscribeRequest};

pub const TIER_KIND: u16 = 37001;
pub const SUBSCRIBE_KIND: u16 = 7001;
pub const UNSUBSCRIBE_KIND: u16 = 7002;
pub const RECEIPT_KIND: u16 = 7003;
const FEEDBACK_KIND: u16 = 7000;

/// Cadence words of the proposal, for periods that are exactly one of them. The lengths are
/// NDK's (`calculateTermDurationInSeconds`): a client that reads the word computes the same
/// period. `quarterly` is in the proposal's tier example and in NDK; without it a 90-day tier
/// went out as `7776000s`, an amount NDK drops (and then it deems the whole tier invalid).
const CADENCES: [(u64, &str); 5] = [
    (86_400, "daily"),
    (7 * 86_400, "weekly"),
    (30 * 86_400, "monthly"),
    (90 * 86_400, "quarterly"),
    (365 * 86_400, "yearly"),
];

/// The unsigned 37001 for `tier`: title, description, price per period in msats with its
/// cadence, the kinds it covers, the quota, and us as its payment verifier (`p`).
pub fn tier_event(tier: &Tier, us: &PublicKey) -> EventBuilder {
    let period_secs = tier.period_ms / 1000;
    let cadence = CADENCES
        .iter()
        .find(|(secs, _)| *secs == period_secs)
        .map_or_else(|| format!("{period_secs}s"), |(_, word)| (*word).to_owned());
    let kinds: Vec<String> = tier.kinds.iter().map(u16::to_string).collect();
    let on_cancel = match tier.on_cancel {
        OnCancel::Keep => "cancelling keeps the paid period to its end, without refund",
        OnCancel::RefundUnused => "cancelling refunds the unused rest of the paid period",
    };
    let paid_ahead = match tier.paid_ahead {
        PaidAhead::NextPeriod => "paying again before the renewal quote pays the next period",
        PaidAhead::Refund => "paying again before the renewal quote is refunded",
    };
    let content = format!(
        "{} jobs per period ({} s) of kind {}, paid per period by invoice, zap or NutZap; {}; {}",
        tier.quota,
        period_secs,
        kinds.join(", "),
        on_cancel,
        paid_ahead
    );
    let mut tags = vec![
        Tag::identifier(tier.id.clone()),
        custom("title", [tier.name.clone()]),
        custom(
            "amount",
            [tier.price.as_msat().to_string(), "msats".into(), cadence],
        ),
        custom("period", [period_secs.to_string()]),
        custom("quota", [tier.quota.to_string()]),
        // What a subscriber who unsubscribes (7002) gets back of the running period.
        custom("cancel", [tier.on_cancel.as_str().to_owned()]),
        // What a payment for a period already paid (before the renewal quote) becomes.
        custom("paid_ahead", [tier.paid_ahead.as_str().to_owned()]),
        Tag::public_key(*us),
    ];
    tags.extend(kinds.into_iter().map(|k| custom("k", [k])));
    EventBuilder::new(Kind::Custom(TIER_KIND), content)
        .tags(tags)
        .allow_self_tagging()
}

/// What a 7001 means to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscribe {
    /// Not for us (no `p` naming us, or it points at another author's tier).
    Ignore,
    Request(SubscribeRequest),
}

/// Reads a 7001 addressed to `us`. `our_tier` answers which of our tiers (its `d`) an event id
/// names, if it is one of the 37001 we published. A 7001 for us whose tier cannot be found is
/// still a request: the core answers it with an error naming the tier.
pub fn read_subscribe(
    event: &Event,
    us: &PublicKey,
    our_tier: impl Fn(&str) -> Option<String>,
) -> Subscribe {
    let values = |name: &str| -> Vec<String> {
        event
            .tags
            .iter()
            .filter_map(|t| match t.as_slice() {
                [n, value, ..] if n == name => Some(value.clone()),
                _ => None,
            })
            .collect()
    };
    let ours = us.to_hex();
    if event.kind.as_u16() != SUBSCRIBE_KIND || !values("p").contains(&ours) {
        return Subscribe::Ignore;
    }
    let prefix = format!("{TIER_KIND}:{ours}:");
    let by_address = values("a")
        .into_iter()
        .find_map(|a| a.strip_prefix(&prefix).map(str::to_owned));
    let by_id = || values("e").iter().find_map(|e| our_tier(e));
    let Some(tier) = by_address.or_else(by_id) else {
        return Subscribe::Ignore;
    };
    let (Ok(subscription), Ok(subscriber)) = (
        SubscriptionId::new(event.id.to_hex()),
        Pubkey::new(event.pubkey.to_hex()),
    ) else {
        return Subscribe::Ignore;
    };
    Subscribe::Request(SubscribeRequest {
        subscription,
        subscriber,
        tier,
    })
}

/// Reads a 7002 addressed to `us`: the subscription is its `e` (the 7001's id); the core
/// checks that the author is the subscriber.
pub fn read_unsubscribe(event: &Event, us: &PublicKey) -> Option<UnsubscribeRequest> {
    let first = |name: &str| {
        event.tags.iter().find_map(|t| match t.as_slice() {
            [n, value, ..] if n == name => Some(value.clone()),
            _ => None,
        })
    };
    let addressed = event
        .tags
        .iter()
        .any(|t| matches!(t.as_slice(), [n, value, ..] if n == "p" && *value == us.to_hex()));
    if event.kind.as_u16() != UNSUBSCRIBE_KIND || !addressed {
        return None;
    }
    Some(UnsubscribeRequest {
        subscription: SubscriptionId::new(first("e")?).ok()?,
        author: Pubkey::new(event.pubkey.to_hex()).ok()?,
        request: paydvm_ledger::EventId::new(event.id.to_hex()).ok()?,
    })
}

/// The `d` of `event` if it is a 37001 by `us` (one of our stored announcements).
pub fn tier_of(event: &Event, us: &PublicKey) -> Option<String> {
    if event.kind.as_u16() != TIER_KIND || event.pubkey != *us {
        return None;
    }
    event.tags.identifier().map(str::to_owned)
}

/// The unsigned event for `notice`: a 7003 receipt for a granted period, kind 7000 feedback
/// e-tagging the 7001 for the rest. `us` is the node (the tier's recipient and verifier).
pub fn notice_event(notice: &Notice, us: &PublicKey) -> Result<EventBuilder, String> {
    let subscriber = PublicKey::from_hex(notice.subscriber.as_str()).map_err(|e| e.to_string())?;
    let e = Tag::custom(TagKind::e(), [notice.subscription.to_string()]);
    let builder = match &notice.kind {
        NoticeKind::Receipt {
            tier,
            period_start,
            period_end,
            payment,
        } => EventBuilder::new(Kind::Custom(RECEIPT_KIND), "").tags([
            Tag::public_key(*us),
            custom("P", [subscriber.to_hex()]),
            e,
            custom(
                "valid",
                [
                    (period_start.0 / 1000).to_string(),
                    (period_end.0 / 1000).to_string(),
                ],
            ),
            custom("tier", [tier.clone()]),
            custom("payment", [payment.clone()]),
            custom("alt", ["Subscription payment receipt".to_owned()]),
        ]),
        NoticeKind::PaymentRequired {
            amount,
            bolt11,
            expires_at,
            note,
        } => {
            let mut status = vec!["payment-required".to_owned()];
            status.extend(note.clone());
            let mut amount_tag = vec![amount.as_msat().to_string()];
            amount_tag.extend(bolt11.clone());
            let mut tags = vec![custom("status", status), custom("amount", amount_tag)];
            tags.extend(expires_at.map(|at| Tag::expiration(Timestamp::from_secs(at.0 / 1000))));
            feedback(tags, e, subscriber)
        }
        NoticeKind::Credited { note } => feedback(
            vec![custom("status", ["success".to_owned(), note.clone()])],
            e,
            subscriber,
        ),
        NoticeKind::Cancelled { note } => feedback(
            vec![custom("status", ["success".to_owned(), note.clone()])],
            e,
            subscriber,
        ),
        NoticeKind::Error { reason } => feedback(
            vec![custom("status", ["error".to_owned(), reason.clone()])],
            e,
            subscriber,
        ),
    };
    Ok(builder.allow_self_tagging())
}

fn feedback(mut tags: Vec<Tag>, e: Tag, subscriber: PublicKey) -> EventBuilder {
    tags.push(e);
    tags.push(Tag::public_key(subscriber));
    EventBuilder::new(Kind::Custom(FEEDBACK_KIND), "").tags(tags)
}

fn custom(name: &str, values: impl IntoIterator<Item = String>) -> Tag {
    Tag::custom(TagKind::custom(name), values)
}

#[cfg(test)]
mod tests;
