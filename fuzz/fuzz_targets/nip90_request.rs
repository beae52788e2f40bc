//! NIP-90 job requests (kinds 5000-5999), clear and encrypted, through `parse_request`.
//!
//! Input: byte 0 picks the mode.
//! - `0`: the rest is an event's JSON as a relay would hand it over (any tags, any content).
//! - otherwise a structured request: a kind, up to 12 clear tags and up to 12 inner tags built
//!   from pools of meaningful values (input types, event ids, bids at the edges, relay URLs, our
//!   key and others, refund addresses, Cashu tokens, limits ± 1) and fuzzer text; the inner tags
//!   are encrypted to us with NIP-04 or NIP-44 (or to someone else, or replaced by fuzzer text,
//!   or by a real ciphertext with one character changed), so the decoders and the tag model
//!   behind them are both reached.
//!
//! Asserts: no panic; a parsed request keeps every bound (`Limit`s, at most 8 relays, all
//! websocket and distinct, bid within the supply, tokens `cashuA`/`cashuB`), says encrypted only
//! for an `encrypted` tag and public tokens only when clear, is addressed to us exactly when a
//! `p` names our key; its `request_json` is the event and re-parses to the same request; a
//! refund address round-trips through `Display`; a token found only inside the encryption never
//! shows in the request's `Debug`; an encrypted request parses like the clear request with the
//! same tags (outer then inner) whenever its ciphertext can only hold the inner tags; an error's
//! customer message stays short.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use nostr_sdk::prelude::{Event, EventId, JsonUtil, Keys, Kind, Signature, Tag, Tags, Timestamp};
use paydvm::lightning::refund::RefundAddress;
use paydvm::protocol::nip90::{parse_request, Encryption, Limit, ParsedRequest, Visibility};
use paydvm_fuzz::input::Input;
use paydvm_ledger::Msat;

struct Parties {
    us: Keys,
    customer: Keys,
    other: Keys,
    us_hex: String,
    other_hex: String,
}

static PARTIES: LazyLock<Parties> = LazyLock::new(|| {
    let key = |hex: &str| Keys::parse(hex).expect("fixed test key");
    let us = key("52fb010ec0cd9ef20db34466eea27168b47d4a0bc5fcf2ed05cf62f416701e49");
    let customer = key("c81afe81c0098e21ebc7404080e88de1c72e2d97ad5d3e83106f093694273dbd");
    let other = key("217d1740cd453e7c6e327a911286302863aac986a012bd2527a56a18df2e04f5");
    Parties {
        us_hex: us.public_key().to_hex(),
        other_hex: other.public_key().to_hex(),
        us,
        customer,
        other,
    }
});

/// A signature is not checked by `parse_request` (the relay pool did it); any 64 bytes do.
static SIG: LazyLock<Signature> =
    LazyLock::new(|| Signature::from_slice(&[1u8; 64]).expect("64 bytes"));

const EVENT_ID: &str = "1637f5ce042acbe867f248c707180c1b040e1b138d48551f701eb44eaff7c341";
const TOKEN_A: &str = "cashuAeyJ0b2tlbiI6W119";
const TOKEN_B: &str = "cashuBo2F0gaJhaUgA_9SLj17PgGFwgaNhYQFhc3hAOWE2ZGJiODQ3YmQyMzJiYTc2";

const NAMES: &[&str] = &[
    "i",
    "i",
    "i",
    "param",
    "param",
    "output",
    "bid",
    "relays",
    "p",
    "p",
    "encrypted",
    "refund",
    "cashu",
    "cashu",
    "e",
    "t",
    "",
    "I",
    "expiration",
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode == 0 {
        if let Ok(event) = Event::from_json(String::from_utf8_lossy(rest).as_ref()) {
            check(&event, None);
        }
        return;
    }
    let mut input = Input::new(rest);
    let kind = input.pick(&[5050, 5050, 5050, 5000, 5999, 4999, 6000, 7000, 1, 65535]);
    let outer = tags(&mut input);
    if mode % 2 == 1 {
        check(&event(kind, outer, String::new()), None);
        return;
    }
    let inner = tags(&mut input);
    let (content, outer, carries_inner) = encrypted(&mut input, mode, &inner, outer);
    let sent = event(kind, outer, content);
    check(&sent, carries_inner.then_some(&inner[..]));
});

/// Parses `event`; `inner` is what was encrypted into it (if the target built it).
fn check(event: &Event, inner: Option<&[Vec<String>]>) {
    let p = &*PARTIES;
    match parse_request(event, &p.us.public_key(), &p.us) {
        Ok(parsed) => {
            check_parsed(event, &parsed);
            if let Some(inner) = inner {
                check_like_clear(event, inner, &parsed);
            }
        }
        Err(e) => {
            let message = e.customer_message();
            assert!(message.len() <= 512, "a long customer message: {message}");
        }
    }
}

fn check_parsed(event: &Event, parsed: &ParsedRequest) {
    let p = &*PARTIES;
    let job = &parsed.job;
    assert!((5000..=5999).contains(&job.kind));
    assert_eq!(job.id, event.id.to_hex());
    assert_eq!(job.customer, event.pubkey.to_hex());
    assert!(job.inputs.len() <= Limit::Inputs.max());
    assert!(job.params.len() <= Limit::Params.max());
    assert!(job.input_bytes() <= Limit::TotalInputBytes.max() as u64);
    assert!(job.inputs.iter().all(|i| !i.data.is_empty()));
    assert!(job
        .params
        .iter()
        .all(|p| !p.key.is_empty() && !p.values.is_empty()));
    assert!(parsed.bid.is_none_or(|b| b <= Msat::MAX_SUPPLY));
    assert!(parsed.relays.len() <= 8);
    for (i, url) in parsed.relays.iter().enumerate() {
        let lower = url.to_ascii_lowercase();
        assert!(
            lower.starts_with("ws://") || lower.starts_with("wss://"),
            "{url}"
        );
        assert!(!parsed.relays[..i].contains(url), "relay twice: {url}");
    }
    assert!(parsed.payment_tokens.len() <= Limit::PaymentTokens.max());
    for t in &parsed.payment_tokens {
        assert!(t.token.starts_with("cashuA") || t.token.starts_with("cashuB"));
        assert!(t.token.len() <= Limit::PaymentTokenBytes.max());
    }

    let encrypted_tag = event
        .tags
        .iter()
        .any(|t| t.as_slice().first().is_some_and(|n| n == "encrypted"));
    assert_eq!(parsed.encryption.is_some(), encrypted_tag);
    if parsed.encryption.is_none() {
        assert!(parsed
            .payment_tokens
            .iter()
            .all(|t| t.visibility == Visibility::Public));
    }
    match parsed.addressed_to_us() {
        None => assert!(parsed.providers.is_empty()),
        Some(to_us) => assert_eq!(to_us, parsed.providers.contains(&p.us.public_key())),
    }

    let again = Event::from_json(&parsed.request_json).expect("request_json is the event");
    assert_eq!(&again, event);
    let reparsed = parse_request(&again, &p.us.public_key(), &p.us);
    assert_eq!(reparsed.as_ref(), Ok(parsed), "re-parse differs");

    if let Some(refund) = &parsed.refund_to {
        let shown: RefundAddress = refund.to_string().parse().expect("Display round-trips");
        assert_eq!(&shown, refund);
    }
    check_hidden_tokens(event, parsed);
}

/// A token that travelled only inside the encryption must not show in `Debug` (it is a bearer
/// secret; the request may be logged).
fn check_hidden_tokens(event: &Event, parsed: &ParsedRequest) {
    let shown = format!("{parsed:?}");
    for t in &parsed.payment_tokens {
        let body = &t.token[6..];
        if t.visibility != Visibility::Encrypted || body.len() < 8 {
            continue;
        }
        let elsewhere = event.content.contains(body)
            || event
                .tags
                .iter()
                .flat_map(|t| t.as_slice())
                .any(|v| v.contains(body))
            || parsed.job.inputs.iter().any(|i| {
                i.data.contains(body)
                    || i.relay.as_deref().is_some_and(|r| r.contains(body))
                    || i.marker.as_deref().is_some_and(|m| m.contains(body))
            })
            || parsed
                .job
                .params
                .iter()
                .any(|p| p.key.contains(body) || p.values.iter().any(|v| v.contains(body)))
            || parsed
                .job
                .output
                .as_deref()
                .is_some_and(|o| o.contains(body))
            || parsed.relays.iter().any(|r| r.contains(body))
            || parsed
                .refund_to
                .as_ref()
                .is_some_and(|r| r.to_string().contains(body));
        assert!(
            elsewhere || !shown.contains(body),
            "an encrypted token shows in Debug"
        );
    }
}

/// An encrypted request must read like the clear request carrying its clear tags then the
/// decrypted ones (without `encrypted` tags), apart from the scheme and the tokens' visibility.
fn check_like_clear(event: &Event, inner: &[Vec<String>], parsed: &ParsedRequest) {
    let Some(scheme) = parsed.encryption else {
        return;
    };
    let not_encrypted = |t: &Vec<String>| t.first().is_some_and(|n| n != "encrypted");
    let mut tags: Vec<Vec<String>> = event
        .tags
        .iter()
        .map(|t| t.as_slice().to_vec())
        .filter(not_encrypted)
        .collect();
    tags.extend(inner.iter().filter(|t| not_encrypted(t)).cloned());
    let clear = self::event(event.kind.as_u16(), tags, String::new());
    let p = &*PARTIES;
    let read = parse_request(&clear, &p.us.public_key(), &p.us)
        .unwrap_or_else(|e| panic!("{scheme} request parsed, the clear one did not: {e}"));
    assert_eq!(read.job.inputs, parsed.job.inputs);
    assert_eq!(read.job.params, parsed.job.params);
    assert_eq!(read.job.output, parsed.job.output);
    assert_eq!(read.bid, parsed.bid);
    assert_eq!(read.relays, parsed.relays);
    assert_eq!(read.providers, parsed.providers);
    assert_eq!(read.refund_to, parsed.refund_to);
    assert_eq!(read.addressed_to_us(), parsed.addressed_to_us());
    let tokens = |r: &ParsedRequest| -> Vec<String> {
        r.payment_tokens.iter().map(|t| t.token.clone()).collect()
    };
    assert_eq!(tokens(&read), tokens(parsed));
}

/// Content and clear tags for an encrypted request; `mode` (even) picks how. The flag says
/// whether a content that decrypts can only hold `inner`: not for fuzzer text inside, nor for a
/// NIP-04 ciphertext with a character changed (NIP-04 has no MAC: a changed IV or block
/// decrypts to other plaintext, which may still be valid tags).
fn encrypted(
    input: &mut Input,
    mode: u8,
    inner: &[Vec<String>],
    mut outer: Vec<Vec<String>>,
) -> (String, Vec<Vec<String>>, bool) {
    let p = &*PARTIES;
    let scheme = if mode & 2 == 0 {
        Encryption::Nip44
    } else {
        Encryption::Nip04
    };
    if !outer
        .iter()
        .any(|t| t.first().is_some_and(|n| n == "encrypted"))
    {
        outer.push(vec!["encrypted".into()]);
    }
    let json = serde_json::to_string(inner).expect("strings serialise");
    let to = if mode & 4 == 0 { &p.us } else { &p.other };
    let how = (mode >> 3) % 4;
    let content = match how {
        // Fuzzer text as the ciphertext: the decoders' own input checks.
        0 => input.text(512),
        1 => {
            let mut c = scheme
                .encrypt(&p.customer, &to.public_key(), &json)
                .unwrap_or_default();
            flip_one(input, &mut c);
            c
        }
        // Valid JSON chosen by the fuzzer (objects, numbers, nested arrays) inside.
        2 => scheme
            .encrypt(&p.customer, &to.public_key(), &input.text(256))
            .unwrap_or_default(),
        _ => scheme
            .encrypt(&p.customer, &to.public_key(), &json)
            .unwrap_or_default(),
    };
    let carries_inner = how == 3 || (how == 1 && scheme == Encryption::Nip44);
    (content, outer, carries_inner)
}

fn flip_one(input: &mut Input, text: &mut String) {
    if text.is_empty() {
        return;
    }
    let mut bytes = std::mem::take(text).into_bytes();
    let at = input.below(bytes.len());
    bytes[at] = input.pick(b"AZaz09+/=?iv");
    *text = String::from_utf8_lossy(&bytes).into_owned();
}

/// A request event from `customer` (id computed, signature not meaningful).
fn event(kind: u16, tags: Vec<Vec<String>>, content: String) -> Event {
    let p = &*PARTIES;
    let tags: Vec<Tag> = tags
        .into_iter()
        .filter_map(|t| Tag::parse(t).ok())
        .collect();
    let created_at = Timestamp::from_secs(1_750_000_000);
    let kind = Kind::Custom(kind);
    let pubkey = p.customer.public_key();
    let list = Tags::from_list(tags.clone());
    let id = EventId::new(&pubkey, &created_at, &kind, &list, &content);
    Event::new(id, pubkey, created_at, kind, tags, content, *SIG)
}

fn tags(input: &mut Input) -> Vec<Vec<String>> {
    let n = input.below(13);
    (0..n).map(|_| tag(input)).collect()
}

fn tag(input: &mut Input) -> Vec<String> {
    let name = if input.byte() < 240 {
        input.pick(NAMES).to_owned()
    } else {
        input.text(8)
    };
    let n = match input.byte() % 8 {
        0 => 0,
        1..=3 => 1,
        4 | 5 => 2,
        6 => 3,
        _ => 4 + input.below(Limit::TagValues.max() - 1),
    };
    let mut values = vec![name.clone()];
    for position in 1..=n {
        values.push(value(input, &name, position));
    }
    values
}

fn value(input: &mut Input, name: &str, position: usize) -> String {
    if input.byte() < 24 {
        return match input.byte() % 8 {
            0 => "x".repeat(Limit::TagValueBytes.max()),
            1 => "x".repeat(Limit::TagValueBytes.max() + 1),
            2 => format!("cashuB{}", "x".repeat(Limit::PaymentTokenBytes.max() - 6)),
            3 => format!("cashuA{}", "x".repeat(Limit::PaymentTokenBytes.max() - 5)),
            4 => "x".repeat(Limit::TotalInputBytes.max() / 2),
            _ => input.text(64),
        };
    }
    let p = &*PARTIES;
    let pool: Vec<String> = match (name, position) {
        ("i", 1) => vec![
            "what is 2+2?".into(),
            EVENT_ID.into(),
            EVENT_ID.to_uppercase(),
            "https://example.com/a.txt".into(),
            String::new(),
        ],
        ("i", 2) => ["text", "url", "event", "job", "Text", "video", ""]
            .map(String::from)
            .to_vec(),
        ("i", 3) | ("e", 2) => ["wss://relay.example", "", "ws://127.0.0.1:7777"]
            .map(String::from)
            .to_vec(),
        ("bid", _) => [
            "0",
            "21000",
            "2100000000000000000",
            "2100000000000000001",
            "18446744073709551615",
            "18446744073709551616",
            "-5",
            "+5",
            " 5",
            "5.0",
            "",
            "٣",
        ]
        .map(String::from)
        .to_vec(),
        ("relays", _) => [
            "wss://relay.example",
            "WSS://Relay.Example",
            "ws://127.0.0.1:7777",
            "wss://r1.example",
            "wss://r2.example/path?x=1",
            "https://not.example",
            "wss://",
            "wss://[::1]:7777",
            "wss://a b",
        ]
        .map(String::from)
        .to_vec(),
        ("p", 1) => vec![
            p.us_hex.clone(),
            p.us_hex.to_uppercase(),
            p.other_hex.clone(),
            "npub-nonsense".into(),
            p.us_hex[..63].to_owned(),
        ],
        ("refund", 1) => [
            "alice@wallet.example",
            "Alice@",
            "a@127.0.0.1:9000",
            paydvm_fuzz::vectors::bolt11_invoices()[1],
            "lightning:lnbc1junk",
            "@",
        ]
        .map(String::from)
        .to_vec(),
        ("cashu", 1) => [TOKEN_A, TOKEN_B, "cashuC123", "cashu", "lnbc1", "cashuBxx"]
            .map(String::from)
            .to_vec(),
        ("param", 1) => ["model", "range", ""].map(String::from).to_vec(),
        _ => ["text/plain", "300", "value", "", "encrypted"]
            .map(String::from)
            .to_vec(),
    };
    if input.byte() < 200 {
        input.pick(&pool)
    } else {
        input.text(48)
    }
}
