//! Tags and content of the NIP-60/61 events the node signs: our kind 10019 (where and how to
//! send us NutZaps) and the kind 7376 redemption marker.

use crate::registry::TrustedMint;

/// Kind 10019 tags: our relays, each trusted mint with its units, and our P2PK key (x-only).
pub fn nutzap_info_tags(
    relays: &[String],
    mints: &[TrustedMint],
    p2pk_xonly: &str,
) -> Vec<Vec<String>> {
    let mut tags: Vec<Vec<String>> = relays
        .iter()
        .map(|r| vec!["relay".to_owned(), r.clone()])
        .collect();
    for mint in mints {
        let mut tag = vec!["mint".to_owned(), mint.url.clone()];
        tag.extend(mint.units.iter().cloned());
        tags.push(tag);
    }
    tags.push(vec!["pubkey".to_owned(), p2pk_xonly.to_owned()]);
    tags
}

/// Kind 7376 public tags: the redeemed NutZap (NIP-61: left public so the sender sees it was
/// claimed) and its sender.
pub fn redemption_tags(nutzap_event: &str, relay_hint: &str, sender: &str) -> Vec<Vec<String>> {
    vec![
        vec![
            "e".to_owned(),
            nutzap_event.to_owned(),
            relay_hint.to_owned(),
            "redeemed".to_owned(),
        ],
        vec!["p".to_owned(), sender.to_owned()],
    ]
}

/// Kind 7376 content before NIP-44 encryption to ourselves: direction, amount and unit.
pub fn redemption_content(amount: u64, unit: &str) -> String {
    serde_json::json!([
        ["direction", "in"],
        ["amount", amount.to_string()],
        ["unit", unit],
    ])
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_tags_follow_nip61() {
        let tags = nutzap_info_tags(
            &["wss://relay.example".into()],
            &[TrustedMint::new("https://mint.example/", ["sat", "usd"])],
            &"eb".repeat(32),
        );
        assert_eq!(
            tags,
            vec![
                vec!["relay".to_owned(), "wss://relay.example".into()],
                vec![
                    "mint".into(),
                    "https://mint.example".into(),
                    "sat".into(),
                    "usd".into()
                ],
                vec!["pubkey".into(), "eb".repeat(32)],
            ]
        );
    }
}
