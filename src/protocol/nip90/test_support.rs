//! Signed events and keys for the NIP-90 tests.

use nostr_sdk::prelude::*;

pub fn tag(values: &[&str]) -> Tag {
    Tag::parse(values.iter().copied()).expect("test tags are non-empty")
}

pub fn signed(keys: &Keys, kind: u16, content: &str, tags: Vec<Tag>) -> Event {
    EventBuilder::new(Kind::Custom(kind), content)
        .tags(tags)
        .allow_self_tagging()
        .sign_with_keys(keys)
        .expect("signing with a generated key")
}

pub fn request(customer: &Keys, tags: &[&[&str]]) -> Event {
    signed(customer, 5050, "", tags.iter().map(|t| tag(t)).collect())
}

/// A tag list as the JSON array-of-arrays that encrypted requests carry.
pub fn tags_json(tags: &[&[&str]]) -> String {
    serde_json::to_string(tags).expect("strings serialize")
}

pub fn values(event: &Event) -> Vec<Vec<String>> {
    event.tags.iter().map(|t| t.as_slice().to_vec()).collect()
}
