//! What the node has announced, read back from the job-less publications in the ledger: the
//! latest announcement per address (kind and `d` tag), and which addresses a NIP-09 deletion
//! withdrew after it. From these: whether a new announcement changes anything
//! ([`same_as_last`]), what a relay should hold ([`stored_announcements`]) and which stored
//! announcements the node's current set no longer has ([`withdrawals`]).

use std::collections::{BTreeMap, BTreeSet};

use nostr_sdk::prelude::{
    Event, EventBuilder, JsonUtil, Kind, PublicKey, Tag, TagKind, Tags, UnsignedEvent,
};
use paydvm_ledger::effect::EffectRecord;
use paydvm_ledger::EffectAction;
use serde_json::Value;

use super::HANDLER_INFO_KIND;
use crate::protocol::nip88::TIER_KIND;

/// A replaceable event's address: its kind and `d` tag (empty for a plain replaceable kind).
type Address = (u16, String);

/// The kinds the node announces and a relay should hold the latest of: the profile (0), the
/// NutZap info (10019), the handler information of each offer (31990) and each tier (37001).
const ANNOUNCED_KINDS: [u16; 4] = [
    0,
    paydvm_mints::NUTZAP_INFO_KIND,
    HANDLER_INFO_KIND,
    TIER_KIND,
];

/// The kinds whose stored announcements are withdrawn when the node's current set has no event
/// at their address: an offer removed from the config, a tier no longer sold.
const WITHDRAWN_WHEN_GONE: [u16; 2] = [HANDLER_INFO_KIND, TIER_KIND];

/// Whether the last stored announcement with `candidate`'s author and address, if not withdrawn
/// since, has the same content (compared as JSON) and tags. Never for a kind outside
/// [`ANNOUNCED_KINDS`] (a NutZap marker, a deletion): none is kept per address, so the stored
/// publications are not read for it (a marker is staged after every NutZap credited).
pub fn same_as_last<'a>(
    effects: impl Iterator<Item = &'a EffectRecord>,
    candidate: &UnsignedEvent,
) -> bool {
    if !ANNOUNCED_KINDS.contains(&candidate.kind.as_u16()) {
        return false;
    }
    let tags = tag_lists(&candidate.tags);
    let published = Published::read(effects, &candidate.pubkey);
    published
        .live()
        .get(&address(candidate.kind.as_u16(), &tags))
        .is_some_and(|last| {
            tag_lists(&last.tags) == tags && json_eq(&last.content, &candidate.content)
        })
}

/// What a relay should hold of ours: of the publications stored with no job and authored by
/// `author`, the latest (by ledger order) per address of the announced kinds, leaving out those
/// withdrawn since; and the stored deletion of each address still withdrawn, so a relay that
/// missed it (down, or not in the config, when it was sent) drops the withdrawn announcement too.
/// NutZap markers and other one-off events are not among them.
pub fn stored_announcements<'a>(
    effects: impl Iterator<Item = &'a EffectRecord>,
    author: &PublicKey,
) -> Vec<Event> {
    let published = Published::read(effects, author);
    let mut events: Vec<Event> = published.live().into_values().cloned().collect();
    events.extend(published.standing_deletions().into_iter().cloned());
    events
}

/// NIP-09 deletions (kind 5) withdrawing the stored handler informations and tiers whose
/// address `current` (the node's whole set of announcements for this run) no longer has: each
/// names the address (`a`), the stored event (`e`) and its kind (`k`). None for an address
/// withdrawn already, so restarting does not send them again.
pub fn withdrawals<'a>(
    effects: impl Iterator<Item = &'a EffectRecord>,
    author: &PublicKey,
    current: &[UnsignedEvent],
) -> Vec<EventBuilder> {
    let kept: BTreeSet<Address> = current
        .iter()
        .map(|e| address(e.kind.as_u16(), &tag_lists(&e.tags)))
        .collect();
    let author_hex = author.to_hex();
    Published::read(effects, author)
        .live()
        .into_iter()
        .filter(|(at, _)| WITHDRAWN_WHEN_GONE.contains(&at.0) && !kept.contains(at))
        .map(|((kind, d), event)| {
            let tags = [
                Tag::custom(TagKind::a(), [format!("{kind}:{author_hex}:{d}")]),
                Tag::event(event.id),
                Tag::custom(TagKind::custom("k"), [kind.to_string()]),
            ];
            EventBuilder::new(Kind::EventDeletion, "no longer offered").tags(tags)
        })
        .collect()
}

/// The node's own publications, read once.
struct Published {
    /// The latest announcement per address, with the seq that requested it.
    latest: BTreeMap<Address, (u64, Event)>,
    /// The latest deletion naming each address, with its seq.
    withdrawn: BTreeMap<Address, (u64, Event)>,
}

impl Published {
    fn read<'a>(effects: impl Iterator<Item = &'a EffectRecord>, author: &PublicKey) -> Published {
        let mut published = Published {
            latest: BTreeMap::new(),
            withdrawn: BTreeMap::new(),
        };
        let ours = effects.filter(|e| e.job.is_none() && e.action == EffectAction::Publish);
        for record in ours {
            let Some(event) = stored_event(record).filter(|e| e.pubkey == *author) else {
                continue;
            };
            let seq = record.requested_seq;
            let kind = event.kind.as_u16();
            if event.kind == Kind::EventDeletion {
                for at in withdrawn_addresses(&event, author) {
                    let deletion = (seq, event.clone());
                    keep_latest(&mut published.withdrawn, at, deletion, |(s, _)| *s);
                }
            } else if ANNOUNCED_KINDS.contains(&kind) {
                let at = address(kind, &tag_lists(&event.tags));
                keep_latest(&mut published.latest, at, (seq, event), |(s, _)| *s);
            }
        }
        published
    }

    /// The latest announcement of each address no deletion came after.
    fn live(&self) -> BTreeMap<&Address, &Event> {
        self.latest
            .iter()
            .filter(|(at, (seq, _))| self.withdrawn.get(*at).is_none_or(|(w, _)| w < seq))
            .map(|(at, (_, event))| (at, event))
            .collect()
    }

    /// The latest deletion of each address not announced again since, each event once (one
    /// deletion may name several addresses).
    fn standing_deletions(&self) -> Vec<&Event> {
        let mut seen = BTreeSet::new();
        self.withdrawn
            .iter()
            .filter(|(at, (w, _))| self.latest.get(*at).is_none_or(|(seq, _)| seq < w))
            .map(|(_, (_, deletion))| deletion)
            .filter(|deletion| seen.insert(deletion.id))
            .collect()
    }
}

/// Puts `value` at `at` unless a later one (by `seq_of`) is there.
fn keep_latest<V>(
    map: &mut BTreeMap<Address, V>,
    at: Address,
    value: V,
    seq_of: impl Fn(&V) -> u64,
) {
    let newer = map.get(&at).is_none_or(|old| seq_of(old) < seq_of(&value));
    if newer {
        map.insert(at, value);
    }
}

/// The event an effect's payload (`{"event": …, "relays": […]}`) publishes.
fn stored_event(record: &EffectRecord) -> Option<Event> {
    let payload = serde_json::from_str::<Value>(&record.payload).ok()?;
    Event::from_json(payload["event"].to_string()).ok()
}

/// The addresses of `author`'s events a deletion's `a` tags name (`kind:pubkey:d`).
fn withdrawn_addresses(deletion: &Event, author: &PublicKey) -> Vec<Address> {
    let author_hex = author.to_hex();
    deletion
        .tags
        .iter()
        .filter_map(|t| match t.as_slice() {
            [name, coordinate, ..] if name == "a" => {
                let mut parts = coordinate.splitn(3, ':');
                let kind = parts.next()?.parse().ok()?;
                (parts.next()? == author_hex).then_some(())?;
                Some((kind, parts.next()?.to_owned()))
            }
            _ => None,
        })
        .collect()
}

/// The address of a (parameterised) replaceable event: kind and `d` tag.
fn address(kind: u16, tags: &[Vec<String>]) -> Address {
    let d = tags
        .iter()
        .find_map(|t| match t.as_slice() {
            [name, value, ..] if name == "d" => Some(value.clone()),
            _ => None,
        })
        .unwrap_or_default();
    (kind, d)
}

fn tag_lists(tags: &Tags) -> Vec<Vec<String>> {
    tags.iter().map(|t| t.as_slice().to_vec()).collect()
}

fn json_eq(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use nostr_sdk::prelude::{EventId, Keys};
    use serde_json::json;

    use super::*;

    fn record_of(event: &Event, seq: u64) -> EffectRecord {
        EffectRecord {
            effect: paydvm_ledger::EffectId::new(event.id.to_hex()).unwrap(),
            job: None,
            action: EffectAction::Publish,
            payload: json!({ "event": event, "relays": [] }).to_string(),
            requested_seq: seq,
            outcome: None,
        }
    }

    fn handler(d: &str, content: &str) -> EventBuilder {
        EventBuilder::new(Kind::Custom(HANDLER_INFO_KIND), content).tags([Tag::identifier(d)])
    }

    #[test]
    fn a_relay_is_given_back_the_latest_tier_of_each_address_too() {
        let keys = Keys::generate();
        let tier = |content: &str| {
            EventBuilder::new(Kind::Custom(TIER_KIND), content)
                .tags([Tag::identifier("gold")])
                .sign_with_keys(&keys)
                .unwrap()
        };
        let (old, new) = (tier("old price"), tier("new price"));
        let records = [record_of(&old, 1), record_of(&new, 2)];
        let back = stored_announcements(records.iter(), &keys.public_key());
        assert_eq!(back.iter().map(|e| e.id).collect::<Vec<_>>(), [new.id]);
    }

    #[test]
    fn only_a_changed_announcement_for_the_same_address_is_new() {
        let keys = Keys::generate();
        let stored = handler("paydvm-5050", r#"{"a":1,"b":2}"#)
            .sign_with_keys(&keys)
            .unwrap();
        let record = record_of(&stored, 1);
        let candidate = |content: &str, d: &str| handler(d, content).build(keys.public_key());
        let same = |c: &UnsignedEvent| same_as_last(std::iter::once(&record), c);
        // Key order does not matter; content, `d` and author do.
        assert!(same(&candidate(r#"{"b":2,"a":1}"#, "paydvm-5050")));
        assert!(!same(&candidate(r#"{"a":1,"b":3}"#, "paydvm-5050")));
        assert!(!same(&candidate(r#"{"a":1,"b":2}"#, "paydvm-5001")));
        let other = handler("paydvm-5050", r#"{"a":1,"b":2}"#).build(Keys::generate().public_key());
        assert!(!same(&other));
    }

    #[test]
    fn an_announcement_gone_from_the_set_is_withdrawn_once_and_can_come_back() {
        let keys = Keys::generate();
        let us = keys.public_key();
        let kept = handler("paydvm-5050", "{}").sign_with_keys(&keys).unwrap();
        let gone = handler("paydvm-5001", "{}").sign_with_keys(&keys).unwrap();
        let profile = EventBuilder::new(Kind::Metadata, "{}")
            .sign_with_keys(&keys)
            .unwrap();
        let mut records = vec![
            record_of(&kept, 1),
            record_of(&gone, 2),
            record_of(&profile, 3),
        ];
        // The current set: 5050 only (and no profile: kind 0 is never withdrawn).
        let current = [handler("paydvm-5050", "{}").build(us)];

        let out = withdrawals(records.iter(), &us, &current);
        assert_eq!(out.len(), 1);
        let deletion = out[0].clone().sign_with_keys(&keys).unwrap();
        assert_eq!(deletion.kind, Kind::EventDeletion);
        let tags = tag_lists(&deletion.tags);
        assert_eq!(
            tags[0],
            ["a", &format!("31990:{}:paydvm-5001", us.to_hex())]
        );
        assert_eq!(tags[1], ["e", &gone.id.to_hex()]);
        assert_eq!(tags[2], ["k", "31990"]);

        // Stored: withdrawn, so not sent again, not given back to a relay, and the same
        // announcement offered again is new.
        records.push(record_of(&deletion, 4));
        assert!(withdrawals(records.iter(), &us, &current).is_empty());
        // A relay is given the deletion instead, in case it missed it.
        let back = stored_announcements(records.iter(), &us);
        assert!(!back.iter().any(|e| e.id == gone.id), "{back:?}");
        let mut ids: Vec<EventId> = back.iter().map(|e| e.id).collect();
        ids.sort();
        let mut expected = vec![kept.id, profile.id, deletion.id];
        expected.sort();
        assert_eq!(ids, expected);
        let again = handler("paydvm-5001", "{}").build(us);
        assert!(!same_as_last(records.iter(), &again));

        // Announced again after the deletion: live, and withdrawn again if it goes again.
        let back_again = again.sign_with_keys(&keys).unwrap();
        records.push(record_of(&back_again, 5));
        let back = stored_announcements(records.iter(), &us);
        assert!(back.iter().any(|e| e.id == back_again.id), "{back:?}");
        assert!(!back.iter().any(|e| e.id == deletion.id), "{back:?}");
        assert!(same_as_last(
            records.iter(),
            &handler("paydvm-5001", "{}").build(us)
        ));
        let out = withdrawals(records.iter(), &us, &current);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_one_off_publication_is_never_the_same_as_a_stored_one() {
        let keys = Keys::generate();
        let marker =
            || EventBuilder::new(Kind::Custom(7376), "redeemed").tags([Tag::identifier("")]);
        let stored = marker().sign_with_keys(&keys).unwrap();
        let record = record_of(&stored, 1);
        let candidate = marker().build(keys.public_key());
        assert!(!same_as_last(std::iter::once(&record), &candidate));
    }

    #[test]
    fn a_deletion_naming_another_author_withdraws_nothing_of_ours() {
        let keys = Keys::generate();
        let us = keys.public_key();
        let ours = handler("paydvm-5001", "{}").sign_with_keys(&keys).unwrap();
        let other = Keys::generate().public_key().to_hex();
        let deletion = EventBuilder::new(Kind::EventDeletion, "")
            .tags([Tag::custom(
                TagKind::a(),
                [format!("31990:{other}:paydvm-5001")],
            )])
            .sign_with_keys(&keys)
            .unwrap();
        let records = [record_of(&ours, 1), record_of(&deletion, 2)];
        assert_eq!(stored_announcements(records.iter(), &us).len(), 1);
    }
}
