//! The project's test vectors, read once: the BOLT 11 spec examples, the synthetic NIP-57 zap
//! vectors and the synthetic NutZap vectors (fixed keys, so the targets can sign their own
//! variations and get past the signature checks).

use std::sync::LazyLock;

use serde_json::Value;

const BOLT11: &str = include_str!("../../tests/vectors/bolt11.vectors.json");
const ZAP: &str = include_str!("../../tests/vectors/synthetic-zap.vectors.json");
const NUTZAP: &str = include_str!("../../mints/vectors/synthetic-nutzap.vectors.json");

static BOLT11_JSON: LazyLock<Value> = LazyLock::new(|| parse(BOLT11));
static ZAP_JSON: LazyLock<Value> = LazyLock::new(|| parse(ZAP));
static NUTZAP_JSON: LazyLock<Value> = LazyLock::new(|| parse(NUTZAP));

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("vector files are JSON")
}

/// The BOLT 11 vector file (`valid` and `invalid` cases).
pub fn bolt11() -> &'static Value {
    &BOLT11_JSON
}

/// Every invoice string in the BOLT 11 vectors, valid ones first.
pub fn bolt11_invoices() -> Vec<&'static str> {
    ["valid", "invalid"]
        .iter()
        .flat_map(|k| bolt11()[*k].as_array().expect("a list"))
        .filter_map(|case| case["invoice"].as_str())
        .collect()
}

/// The synthetic zap vectors (`keys`, `receipts`, `invoice`, …).
pub fn zap() -> &'static Value {
    &ZAP_JSON
}

/// The synthetic NutZap vectors (`keys`, `mint` with its private keys, `nutzaps`, …).
pub fn nutzap() -> &'static Value {
    &NUTZAP_JSON
}

/// The string at `path` (object keys) in `v`.
pub fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_str()
        .unwrap_or_else(|| panic!("no string at {path:?}"))
}
