//! `paydvm.toml` and the policy it names, parsed from text alone: `ConfigFile::parse`,
//! `Policy::from_toml_str` and `ConfigFile::check_policy` (the checks between the two that need
//! neither the disk nor a key; `Config::load` makes the same ones).
//!
//! Input: the config TOML, then a NUL byte and the policy TOML; without a NUL, the policy is
//! `policies/examples/default.toml`. Seeds: the `paydvm init` template and the example policies
//! (`fuzz/seeds/config/`); `fuzz/config.dict` holds the field names.
//!
//! Asserts: no panic; a parsed config keeps every documented bound (1 to 64 offers with distinct
//! kinds in 5000-5999, timeouts, output caps and concurrency in range, a builtin only for its
//! kinds, 1 to 16 relays, a publish cap of 1 to 64, at most 256 allow-listed customer relays, a
//! non-blank name) and parses again to an equal value; `check_policy` accepts exactly when every
//! offered kind is priced and a policy trusting mints has a `[cashu]` section; the secrets an
//! operator writes into the file (`http` executor URLs, `env` values) show neither in the parsed
//! config's `Debug` nor in an error message; a valid policy prices every kind without panicking
//! for any input size (a charge is never 0 and never above the supply) and computes expiries for any
//! clock.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use paydvm::config::{
    Builtin, ConfigFile, CustomerRelays, Executor, MAX_ALLOWLIST, MAX_MAX_CONCURRENCY,
    MAX_MAX_OUTPUT_BYTES, MAX_OFFERS, MAX_PUBLISH_CAP, MAX_RELAYS, MAX_TIMEOUT_SECS,
};
use paydvm_ledger::Msat;
use paydvm_policies::{InputMeasure, Policy, PriceDecision};

const DEFAULT_POLICY: &str = include_str!("../../policies/examples/default.toml");

fuzz_target!(|data: &[u8]| {
    let (config, policy) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, DEFAULT_POLICY.as_bytes()),
    };
    let config = String::from_utf8_lossy(config);
    let policy = String::from_utf8_lossy(policy);
    let base = Path::new("/etc/paydvm");
    let secrets = secrets_in(&config);

    let file = ConfigFile::parse(&config, "paydvm.toml", base);
    let file = match file {
        Ok(file) => file,
        Err(e) => {
            assert_hidden(&secrets, &e.to_string(), &config);
            return;
        }
    };
    check_bounds(&file);
    let again = ConfigFile::parse(&config, "paydvm.toml", base).expect("parses again");
    assert_eq!(again, file);
    assert_hidden(&secrets, &format!("{file:?}"), &config);

    let Ok(policy) = Policy::from_toml_str(&policy, "policy.toml") else {
        return;
    };
    check_policy_decisions(&policy);
    let priced = file
        .offers
        .iter()
        .all(|o| policy.pricing().is_offered(o.kind));
    let cashu_ok = file.cashu.is_some() || policy.trusted_mints().is_empty();
    let checked = file.check_policy(&policy, "paydvm.toml", base);
    assert_eq!(checked.is_ok(), priced && cashu_ok, "{checked:?}");
    if let Err(e) = checked {
        assert_hidden(&secrets, &e.to_string(), &config);
    }
});

fn check_bounds(file: &ConfigFile) {
    assert!(!file.node.name.trim().is_empty());
    assert!((1..=MAX_OFFERS).contains(&file.offers.len()));
    for (i, offer) in file.offers.iter().enumerate() {
        assert!((5000..=5999).contains(&offer.kind));
        assert!(file.offers[..i].iter().all(|o| o.kind != offer.kind));
        assert!((1..=MAX_TIMEOUT_SECS).contains(&offer.timeout.as_secs()));
        assert_eq!(offer.timeout.subsec_nanos(), 0);
        assert!((1..=MAX_MAX_OUTPUT_BYTES).contains(&offer.max_output_bytes));
        assert!((1..=MAX_MAX_CONCURRENCY).contains(&offer.max_concurrency));
        if let Executor::Builtin(b @ Builtin::Text) = offer.executor {
            assert!(b.kinds().contains(&offer.kind));
        }
    }
    assert!((1..=MAX_RELAYS).contains(&file.relays.urls.len()));
    assert!((1..=MAX_PUBLISH_CAP).contains(&file.relays.publish_cap));
    if let CustomerRelays::Only(list) = &file.relays.customer {
        assert!(list.len() <= MAX_ALLOWLIST);
    }
}

/// A valid policy answers for any input size and any clock without panicking.
fn check_policy_decisions(policy: &Policy) {
    let kinds: Vec<u16> = policy.pricing().offered_kinds().collect();
    for n in [0, 1, 1_000, u64::MAX / 2, u64::MAX] {
        let measure = InputMeasure {
            bytes: n,
            chars: n,
            words: n,
            inputs: n,
        };
        for kind in kinds.iter().copied().chain([5000, 5999]) {
            if let Ok(PriceDecision::Charge(c)) = policy.price(kind, &measure) {
                assert!(c <= Msat::MAX_SUPPLY && !c.is_zero(), "kind {kind}: {c:?}");
            }
        }
        let _ = policy.quote_expires_at(n);
        let _ = policy.result_expires_at(n);
    }
}

/// The values of `http` executors and of executor `env` tables, as written.
fn secrets_in(config: &str) -> Vec<String> {
    let Ok(toml::Value::Table(root)) = config.parse::<toml::Value>() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let offers = root.get("offer").and_then(toml::Value::as_array);
    for offer in offers.into_iter().flatten() {
        let Some(executor) = offer.get("executor") else {
            continue;
        };
        if let Some(url) = executor.get("http").and_then(toml::Value::as_str) {
            found.push(url.to_owned());
        }
        if let Some(env) = executor.get("env").and_then(toml::Value::as_table) {
            found.extend(
                env.values()
                    .filter_map(toml::Value::as_str)
                    .map(str::to_owned),
            );
        }
    }
    found
}

/// A secret value must not show in `shown`, unless the operator also wrote it somewhere that is
/// not secret (then it may show for that reason): every other string or key of the file.
fn assert_hidden(secrets: &[String], shown: &str, config: &str) {
    let public = public_strings(config);
    for secret in secrets {
        if secret.len() < 6 || public.iter().any(|p| p.contains(secret.as_str())) {
            continue;
        }
        assert!(!shown.contains(secret.as_str()), "a secret shows: {shown}");
    }
}

/// Every key, and every string value other than the secrets, in the file.
fn public_strings(config: &str) -> Vec<String> {
    fn walk(v: &toml::Value, secret_slot: bool, out: &mut Vec<String>) {
        match v {
            toml::Value::String(s) if !secret_slot => out.push(s.clone()),
            toml::Value::Array(items) => items.iter().for_each(|i| walk(i, false, out)),
            toml::Value::Table(t) => {
                for (k, v) in t {
                    out.push(k.clone());
                    walk(v, secret_slot || k == "http" || k == "env", out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = config.parse::<toml::Value>() {
        walk(&v, false, &mut out);
    }
    out
}
