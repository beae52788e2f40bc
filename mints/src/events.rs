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

/// Kind 9321 tags of a NutZap we send (an ecash refund): each proof, the mint, the unit, the
/// recipient's Nostr key and the job it refunds.
pub fn nutzap_tags(
    proofs: &[String],
    mint: &str,
    unit: &str,
    recipient: &str,
    job: &str,
) -> Vec<Vec<String>> {
    let mut tags: Vec<Vec<String>> = proofs
        .iter()
        .map(|p| vec!["proof".to_owned(), p.clone()])
        .collect();
    tags.push(vec!["u".to_owned(), crate::normalise_mint_url(mint)]);
    tags.push(vec!["unit".to_owned(), unit.to_owned()]);
    tags.push(vec!["p".to_owned(), recipient.to_owned()]);
    tags.push(vec!["e".to_owned(), job.to_owned()]);
    tags
}

/// A recipient's kind 10019, as far as sending them a NutZap needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NutZapInfo {
    /// The P2PK key to lock to (hex as published).
    pub pubkey: String,
    /// Normalised mint URLs.
    pub mints: Vec<String>,
    pub relays: Vec<String>,
}

/// Most relays taken from one 10019.
pub const MAX_INFO_RELAYS: usize = 4;

/// Reads a kind 10019's tags; `None` without a usable `pubkey` tag.
pub fn parse_nutzap_info(tags: &[Vec<String>]) -> Option<NutZapInfo> {
    let mut info = NutZapInfo {
        pubkey: String::new(),
        mints: Vec::new(),
        relays: Vec::new(),
    };
    for tag in tags {
        match (tag.first().map(String::as_str), tag.get(1)) {
            (Some("pubkey"), Some(key))
                if info.pubkey.is_empty()
                    && matches!(key.len(), 64 | 66)
                    && key.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                info.pubkey = key.to_ascii_lowercase();
            }
            (Some("mint"), Some(url)) if url.len() <= 512 => {
                info.mints.push(crate::normalise_mint_url(url))
            }
            (Some("relay"), Some(url))
                if info.relays.len() < MAX_INFO_RELAYS
                    && url.len() <= 256
                    && (url.starts_with("wss://") || url.starts_with("ws://")) =>
            {
                info.relays.push(url.clone())
            }
            _ => {}
        }
    }
    (!info.pubkey.is_empty()).then_some(info)
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

    #[test]
    fn a_recipients_info_needs_a_hex_pubkey_and_bounds_what_it_keeps() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let key = "ab".repeat(32);
        let mut tags = vec![
            t(&["relay", "wss://r.example"]),
            t(&["relay", "https://not-a-relay.example"]),
            t(&["mint", "https://Mint.example/"]),
            t(&["pubkey", &key]),
        ];
        let info = parse_nutzap_info(&tags).unwrap();
        assert_eq!(info.pubkey, key);
        assert_eq!(info.mints, ["https://mint.example"]);
        assert_eq!(info.relays, ["wss://r.example"]);
        tags.pop();
        assert_eq!(parse_nutzap_info(&tags), None);
        tags.push(t(&["pubkey", "not hex"]));
        assert_eq!(parse_nutzap_info(&tags), None);
        for i in 0..10 {
            tags.push(t(&["relay", &format!("wss://r{i}.example")]));
        }
        tags.push(t(&["pubkey", &key]));
        assert_eq!(
            parse_nutzap_info(&tags).unwrap().relays.len(),
            MAX_INFO_RELAYS
        );
    }

    #[test]
    fn refund_nutzaps_carry_every_proof_the_mint_the_recipient_and_the_job() {
        let tags = nutzap_tags(
            &["{}".into(), "{1}".into()],
            "https://m.example/",
            "sat",
            "pk",
            "job",
        );
        assert_eq!(tags.len(), 6);
        assert_eq!(tags[1], ["proof", "{1}"]);
        assert_eq!(tags[2], ["u", "https://m.example"]);
        assert_eq!(tags[4], ["p", "pk"]);
        assert_eq!(tags[5], ["e", "job"]);
    }
}
