use nostr_sdk::prelude::*;
use paydvm_ledger::{Msat, Pubkey, SubscriptionId, UnixMs};
use paydvm_policies::Policy;

use super::*;

const TIERS: &str = r#"
[[pricing.kind]]
kind = 5050
mode = "fixed"
amount_msat = 10000
[[subscriptions.tier]]
id = "gold"
name = "Gold"
price_msat = 21000000
period_secs = 86400
quota = 100
kinds = [5050]
"#;

fn tier() -> Tier {
    let policy = Policy::from_toml_str(TIERS, "test").unwrap();
    policy.tier("gold").unwrap().clone()
}

fn tag_values(event: &Event, name: &str) -> Vec<Vec<String>> {
    event
        .tags
        .iter()
        .filter(|t| t.as_slice()[0] == name)
        .map(|t| t.as_slice()[1..].to_vec())
        .collect()
}

fn subscribe_event(customer: &Keys, tags: Vec<Tag>) -> Event {
    EventBuilder::new(Kind::Custom(SUBSCRIBE_KIND), "")
        .tags(tags)
        .sign_with_keys(customer)
        .unwrap()
}

fn raw(values: &[&str]) -> Tag {
    Tag::parse(values.iter().copied()).unwrap()
}

#[test]
fn a_tier_is_announced_with_its_price_cadence_kinds_and_us_as_verifier() {
    let us = Keys::generate();
    let event = tier_event(&tier(), &us.public_key())
        .sign_with_keys(&us)
        .unwrap();
    assert_eq!(event.kind.as_u16(), TIER_KIND);
    assert_eq!(event.tags.identifier(), Some("gold"));
    assert_eq!(
        tag_values(&event, "amount"),
        [["21000000", "msats", "daily"]]
    );
    assert_eq!(tag_values(&event, "k"), [["5050"]]);
    assert_eq!(tag_values(&event, "p"), [[us.public_key().to_hex()]]);
    assert_eq!(tag_values(&event, "title"), [["Gold"]]);
    assert_eq!(tier_of(&event, &us.public_key()).as_deref(), Some("gold"));
    assert_eq!(tier_of(&event, &Keys::generate().public_key()), None);
}

/// The cadence word of a tier of `period_secs`, as its 37001 announces it.
fn cadence_of(period_secs: u64) -> String {
    let policy = TIERS.replace(
        "period_secs = 86400",
        &format!("period_secs = {period_secs}"),
    );
    let tier = Policy::from_toml_str(&policy, "test")
        .unwrap()
        .tier("gold")
        .unwrap()
        .clone();
    let us = Keys::generate();
    let event = tier_event(&tier, &us.public_key())
        .sign_with_keys(&us)
        .unwrap();
    tag_values(&event, "amount")[0][2].clone()
}

/// Every cadence NDK understands, with NDK's length for it (`calculateTermDurationInSeconds`
/// in @nostr-dev-kit/ndk 2.18.1); other periods are written in seconds (which NDK ignores).
#[test]
fn cadences_are_the_words_ndk_reads_with_ndk_lengths() {
    let ndk = [
        (86_400, "daily"),
        (604_800, "weekly"),
        (2_592_000, "monthly"),
        (7_776_000, "quarterly"),
        (31_536_000, "yearly"),
    ];
    for (secs, word) in ndk {
        assert_eq!(cadence_of(secs), word, "{secs} s");
    }
    assert_eq!(cadence_of(3600), "3600s");
    assert_eq!(
        cadence_of(31_622_400),
        "31622400s",
        "a leap year is no `yearly`"
    );
}

#[test]
fn every_form_of_tier_pointer_is_read_and_markers_are_ignored() {
    let us = Keys::generate();
    let customer = Keys::generate();
    let ours = us.public_key().to_hex();
    let tier_id = EventId::all_zeros().to_hex();
    let lookup = |id: &str| (id == tier_id).then(|| "gold".to_owned());
    let forms = [
        vec![
            raw(&["p", &ours]),
            raw(&["a", &format!("37001:{ours}:gold")]),
        ],
        vec![raw(&["p", &ours]), raw(&["e", &tier_id])],
        vec![
            raw(&["p", &ours]),
            raw(&["e", &tier_id, "", "subscription"]),
        ],
        vec![
            raw(&["p", &ours]),
            raw(&["e", &tier_id]),
            raw(&["a", &format!("37001:{ours}:gold"), "wss://relay"]),
        ],
    ];
    for tags in forms {
        let event = subscribe_event(&customer, tags.clone());
        let Subscribe::Request(request) = read_subscribe(&event, &us.public_key(), lookup) else {
            panic!("not read: {tags:?}")
        };
        assert_eq!(request.tier, "gold");
        assert_eq!(
            request.subscription,
            SubscriptionId::new(event.id.to_hex()).unwrap()
        );
        assert_eq!(
            request.subscriber,
            Pubkey::new(customer.public_key().to_hex()).unwrap()
        );
    }
}

#[test]
fn a_subscribe_request_for_someone_else_is_ignored() {
    let us = Keys::generate();
    let other = Keys::generate().public_key().to_hex();
    let customer = Keys::generate();
    let ours = us.public_key().to_hex();
    let none = |_: &str| None;
    for tags in [
        // Addressed to another provider.
        vec![
            raw(&["p", &other]),
            raw(&["a", &format!("37001:{ours}:gold")]),
        ],
        // Addressed to us, but the tier is another author's.
        vec![
            raw(&["p", &ours]),
            raw(&["a", &format!("37001:{other}:gold")]),
        ],
        // An `e` that is none of our tiers.
        vec![
            raw(&["p", &ours]),
            raw(&["e", &EventId::all_zeros().to_hex()]),
        ],
    ] {
        let event = subscribe_event(&customer, tags);
        assert_eq!(
            read_subscribe(&event, &us.public_key(), none),
            Subscribe::Ignore
        );
    }
}

#[test]
fn a_receipt_names_us_the_subscriber_the_request_the_period_and_the_payment() {
    let us = Keys::generate();
    let customer = Keys::generate();
    let subscription = SubscriptionId::new(EventId::all_zeros().to_hex()).unwrap();
    let notice = Notice {
        subscription: subscription.clone(),
        subscriber: Pubkey::new(customer.public_key().to_hex()).unwrap(),
        kind: NoticeKind::Receipt {
            tier: "gold".into(),
            period_start: UnixMs(1_700_000_000_000),
            period_end: UnixMs(1_700_086_400_000),
            payment: "hash".into(),
        },
    };
    let event = notice_event(&notice, &us.public_key())
        .unwrap()
        .sign_with_keys(&us)
        .unwrap();
    assert_eq!(event.kind.as_u16(), RECEIPT_KIND);
    assert_eq!(tag_values(&event, "p"), [[us.public_key().to_hex()]]);
    assert_eq!(tag_values(&event, "P"), [[customer.public_key().to_hex()]]);
    assert_eq!(tag_values(&event, "e"), [[subscription.to_string()]]);
    assert_eq!(tag_values(&event, "valid"), [["1700000000", "1700086400"]]);
    assert_eq!(tag_values(&event, "tier"), [["gold"]]);
    assert_eq!(tag_values(&event, "payment"), [["hash"]]);
}

#[test]
fn a_payment_request_is_feedback_on_the_subscribe_request() {
    let us = Keys::generate();
    let customer = Keys::generate();
    let notice = Notice {
        subscription: SubscriptionId::new(EventId::all_zeros().to_hex()).unwrap(),
        subscriber: Pubkey::new(customer.public_key().to_hex()).unwrap(),
        kind: NoticeKind::PaymentRequired {
            amount: Msat::from_msat(21_000),
            bolt11: Some("lnbcrt210n1x".into()),
            expires_at: Some(UnixMs(1_700_000_600_000)),
            note: None,
        },
    };
    let event = notice_event(&notice, &us.public_key())
        .unwrap()
        .sign_with_keys(&us)
        .unwrap();
    assert_eq!(event.kind.as_u16(), 7000);
    assert_eq!(tag_values(&event, "status"), [["payment-required"]]);
    assert_eq!(tag_values(&event, "amount"), [["21000", "lnbcrt210n1x"]]);
    assert_eq!(tag_values(&event, "p"), [[customer.public_key().to_hex()]]);
    assert_eq!(tag_values(&event, "expiration"), [["1700000600"]]);
}
